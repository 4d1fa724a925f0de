//! `cargo xtask bench`: benchmark tables, measured side by side in one run. Nothing here
//! asserts on time; the figures go into docs/BENCHMARKS.md and issue notes.

use std::time::Instant;

use swarm_core::sched::{Completion, SchedConfig, Scheduler};
use swarm_core::simulator::{run, scenarios, Baseline, Policy};

const LIMIT_MS: u64 = 6 * 3_600_000;

pub fn all() -> anyhow::Result<()> {
    simulator_table();
    scheduler_throughput();
    sabotage_table()?;
    dashboard_table()?;
    fuzz_rate()?;
    crate::kernels_bench::table()
}

/// Jobs per 20 % row of the saboteur table (six rows: over 10,000 jobs at 20 %).
const SABOTAGE_JOBS: &str = "1700";

/// Verification against saboteurs (`swarm-core/tests/sabotage.rs`), release build.
fn sabotage_table() -> anyhow::Result<()> {
    core_test_in_release(
        &[
            "sabotage",
            "sabotage_table",
            "--",
            "--ignored",
            "--nocapture",
        ],
        Some(("OSTRICH_SABOTAGE_JOBS", SABOTAGE_JOBS)),
    )
}

/// What a dashboard is sent per tick (`swarm-core/tests/core.rs`), release build.
fn dashboard_table() -> anyhow::Result<()> {
    core_test_in_release(
        &[
            "core",
            "dashboard_bytes_per_tick_table",
            "--",
            "--ignored",
            "--nocapture",
        ],
        None,
    )
}

/// Inputs the benchmark's fuzz run hands the core (the test command runs 50,000).
const FUZZ_INPUTS: &str = "500000";

/// The core fuzzer (`swarm-core/tests/fuzz.rs`) on a larger budget, release build: it prints
/// the inputs it executed and the rate.
fn fuzz_rate() -> anyhow::Result<()> {
    println!("\nCore fuzzer, release build, {FUZZ_INPUTS} inputs or more:\n");
    core_test_in_release(
        &["fuzz", "--", "--nocapture"],
        Some(("OSTRICH_FUZZ_INPUTS", FUZZ_INPUTS)),
    )
}

/// Runs one of `swarm-core`'s test binaries in release (`args` name it, then its own
/// arguments), with at most one setting from the environment.
fn core_test_in_release(args: &[&str], setting: Option<(&str, &str)>) -> anyhow::Result<()> {
    let mut command = crate::cargo();
    command
        .args(["test", "--release", "--quiet", "-p", "swarm-core", "--test"])
        .args(args);
    if let Some((key, value)) = setting {
        command.env(key, value);
    }
    crate::run(&mut command)
}

fn secs(ms: Option<u64>) -> String {
    ms.map_or("did not finish".into(), |ms| {
        format!("{:.1}", ms as f64 / 1000.0)
    })
}

fn ratio(r: Option<f64>) -> String {
    r.map_or("—".into(), |r| format!("{r:.3}"))
}

fn simulator_table() {
    println!("\nScheduling simulator: makespan ÷ ideal (1.000 = ideal; goal ≤ 1.10)");
    println!("ideal = total work ÷ the capacity present over time; latency 20 ms; benchmark error ±30 %\n");
    println!(
        "| {:<32} | {:>7} | {:>8} | {:>8} | {:>10} | {:>8} | {:>13} | {:>10} |",
        "scenario",
        "devices",
        "ideal s",
        "ours s",
        "ours/ideal",
        "wasted %",
        "predecessor s",
        "pred/ideal"
    );
    println!(
        "|{:-<34}|{:->9}|{:->10}|{:->10}|{:->12}|{:->10}|{:->15}|{:->12}|",
        "", "", "", "", "", "", "", ""
    );
    for scenario in scenarios() {
        let ours = run(&scenario, Policy::Ours, LIMIT_MS);
        let pred = run(&scenario, Policy::Predecessor(Baseline::HEADLINE), LIMIT_MS);
        println!(
            "| {:<32} | {:>7} | {:>8.1} | {:>8} | {:>10} | {:>8.1} | {:>13} | {:>10} |",
            scenario.name,
            scenario.devices.len(),
            ours.ideal_ms as f64 / 1000.0,
            secs(ours.makespan_ms),
            ratio(ours.ratio()),
            ours.wasted_units as f64 * 100.0 / scenario.total_units as f64,
            secs(pred.makespan_ms),
            ratio(pred.ratio()),
        );
    }
    baseline_sensitivity();
}

/// The predecessor's makespan under other readings of what its spec leaves open: the chunk
/// size, and the score devices report (as specified most devices reach the weight's cap).
fn baseline_sensitivity() {
    let baselines = [
        (600, None),
        (6_000, None),
        (600, Some(100)),
        (6_000, Some(100)),
        (600, Some(50)),
        (6_000, Some(50)),
    ];
    println!("
The predecessor's makespan ÷ ideal under other modelling choices (the headline above: 1/600 chunks, scores as specified)
");
    print!("| {:<32} |", "scenario");
    for (chunks, score) in baselines {
        let score = score.map_or("as spec".to_owned(), |p| format!("fastest at {p} % of cap"));
        print!(" {:>30} |", format!("1/{chunks}, {score}"));
    }
    println!();
    print!("|{:-<34}|", "");
    for _ in baselines {
        print!("{:-<31}:|", "");
    }
    println!();
    for scenario in scenarios() {
        print!("| {:<32} |", scenario.name);
        for (chunks, score_cap_percent) in baselines {
            let baseline = Baseline {
                chunks,
                score_cap_percent,
            };
            let outcome = run(&scenario, Policy::Predecessor(baseline), LIMIT_MS);
            print!(" {:>30} |", ratio(outcome.ratio()));
        }
        println!();
    }
}

/// Lease + complete operations per second of the pure scheduler on one thread: in the steady
/// state of an endless job, and over the whole of a finite job with speculation, whose tail
/// (nothing queued, idle workers copying the slowest leases) is where a scheduler's cost can
/// grow with devices × leases.
pub fn scheduler_throughput() {
    println!(
        "\nScheduler core throughput (one thread; goal ≥ 100,000 lease+complete per second)\n"
    );
    println!(
        "| {:>7} | {:<33} | {:>10} | {:>14} | {:>16} | {:>21} |",
        "devices",
        "job",
        "operations",
        "ops per second",
        "µs per operation",
        "µs per op in the tail"
    );
    println!(
        "|{:->9}|{:-<35}|{:->12}|{:->16}|{:->18}|{:->23}|",
        "", "", "", "", "", ""
    );
    for devices in [10usize, 100, 1_000] {
        for finite in [false, true] {
            let run = drive(devices, finite);
            let tail = if run.tail_ops == 0 {
                "—".to_owned()
            } else {
                format!("{:.2}", run.tail_secs * 1e6 / run.tail_ops as f64)
            };
            println!(
                "| {:>7} | {:<33} | {:>10} | {:>14.0} | {:>16.2} | {:>21} |",
                devices,
                if finite {
                    "40 chunks per worker, speculating"
                } else {
                    "endless, not speculating"
                },
                run.ops,
                run.ops as f64 / run.secs,
                run.secs * 1e6 / run.ops as f64,
                tail
            );
        }
    }
}

struct Drive {
    /// `complete` calls (each after the `poll_leases` that follows the previous one).
    ops: u64,
    secs: f64,
    /// The same, from the first poll that found nothing queued.
    tail_ops: u64,
    tail_secs: f64,
}

/// Devices of four workers at speeds 1–16 units/ms; each worker computes its leases one after
/// the other, and a lease completes when its worker is done. An endless job stops after
/// 200,000 accepted results; a finite one (about 40 two-second chunks per worker) when done.
fn drive(devices: usize, finite: bool) -> Drive {
    let mut sched = Scheduler::new(SchedConfig {
        speculate: finite,
        ..SchedConfig::default()
    });
    let speed = |d: usize| 1.0 + (d % 16) as f64;
    let mut capacity = 0.0;
    for d in 0..devices {
        sched.set_device(&format!("d{d}"), 4, speed(d));
        capacity += 4.0 * speed(d);
    }
    sched.add_work(if finite {
        (capacity * 2_000.0 * 40.0) as u64
    } else {
        u64::MAX / 4
    });
    let mut now = 0;
    let mut run = Drive {
        ops: 0,
        secs: 0.0,
        tail_ops: 0,
        tail_secs: 0.0,
    };
    let mut accepted = 0u64;
    let mut free_at = vec![[0u64; 4]; devices];
    let mut due = std::collections::BinaryHeap::new();
    let mut tail_from: Option<Instant> = None;
    let started = Instant::now();
    while finite || accepted < 200_000 {
        for lease in sched.poll_leases(now) {
            let d: usize = lease.device[1..].parse().expect("bench device name");
            let took = (lease.units() as f64 / speed(d)).ceil() as u64;
            let worker = free_at[d].iter_mut().min().expect("four workers");
            *worker = (*worker).max(now) + took;
            due.push(std::cmp::Reverse((*worker, lease.id, lease.device)));
        }
        if tail_from.is_none() && finite && sched.queued_units() == 0 {
            tail_from = Some(Instant::now());
        }
        let Some(std::cmp::Reverse((at, id, device))) = due.pop() else {
            break;
        };
        now = at;
        run.ops += 1;
        if tail_from.is_some() {
            run.tail_ops += 1;
        }
        if matches!(
            sched.complete(now, &device, id),
            Completion::Accepted { .. }
        ) {
            accepted += 1;
        }
        if finite && sched.is_finished() {
            break;
        }
    }
    run.secs = started.elapsed().as_secs_f64();
    run.tail_secs = tail_from.map_or(0.0, |t| t.elapsed().as_secs_f64());
    run
}
