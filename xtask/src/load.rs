//! The load table of `cargo xtask bench`: N simulated devices over real WebSockets against the
//! built coordinator in `wrangler dev` (workerd), one swarm per row, one prime-count job.
//!
//! A simulated device is the owner's own (it joins with the owner key, so its results are not
//! replicated) and lends [`Model::cores`] cores that each count [`Model::numbers_per_ms`]
//! numbers per millisecond (4 and 200 unless `--cores` and `--rate` say otherwise): it
//! computes every lease's answer for real with the kernels (`client_compute`), then holds it
//! until that rate says it would have finished, and reports that time as its
//! `compute_ms`. It runs at most as many leases at once as its `share` says, answers the
//! known-answer benchmark the same way, and heartbeats as a browser does. Nothing is taken on
//! trust: the coordinator checks every answer as it checks a browser's.
//!
//! The answers are computed by a pool of [`KERNEL_THREADS`] threads ([`Kernel`]) when their
//! simulated time is up, in that order, and a result goes back as soon as it is computed. A
//! thousand devices each computing on its own thread would crowd workerd out (the kernel's
//! scheduler shares the CPU between runnable threads, and the object's is one of them): the row
//! would measure the devices, not the coordinator. With the pool, the devices together compute
//! at most two runnable threads' worth, and when they ask for more their answers come late, as
//! a slower swarm's would; the coordinator measures speeds from what arrives, so it sizes their
//! chunks accordingly. Computing an answer only when it is due also means that a lease taken
//! back before then costs nothing.
//!
//! Devices start [`STARTS_PER_SECOND`] a second, and a row ends at once, saying why, when every
//! device has gone before the warm-up.
//!
//! What a row measures, over a window after every device is connected and warmed up:
//! completions/s (the job's accepted chunks), workerd's CPU time per completion (from
//! `/proc`, the whole workerd process), bytes and messages pushed per completion, storage
//! writes per completion and per device-hour and alarms per minute (from the object's own
//! counters), the calls the object took for messages per completion (its own sockets' messages
//! and the gateways' batched calls) and the gateways holding sockets, workerd's peak resident memory (the process, an upper bound for the object),
//! the time until all N were welcomed, devices that never got a job lease, results the object
//! took no use of and leases it took back at their deadline (its `results_unused` and
//! `leases_expired` counters, in the window and over the whole row), and the close codes
//! devices saw.

use std::collections::{BTreeMap, VecDeque};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use runtime_tests::Wrangler;
use shared_protocol::{
    encode, AgentClass, Capabilities, ChunkAnswer, Hello, HelloRole, JobSpec, JobView, JoinProof,
    OwnerCommand, OwnerReply, SwarmStats, ToClient, ToCoordinator, Work, HEARTBEAT,
    PROTOCOL_VERSION,
};
use swarm_core::BENCH_JOB_ID;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// The simulated device, and how long a row warms up.
#[derive(Debug, Clone, Copy)]
pub struct Model {
    /// Cores each device lends (`--cores`, else 4).
    pub cores: u16,
    /// What one simulated core counts per millisecond (`--rate`, else 200): a ten-thousandth
    /// of the reference core (2 × 10^6), so that computing every answer for real stays a small
    /// part of this machine's two cores at a thousand devices. The benchmark lease (2^22
    /// numbers) then takes 21 s. Past a thousand devices, devices of 4 such cores together ask
    /// for more than the two cores compute (10,000 ask for 8 × 10^9 numbers a second): fewer
    /// cores and a lower rate keep what they ask within the machine.
    pub numbers_per_ms: u64,
    /// The warm-up of a row of a thousand devices or fewer (`--warm-up S`, else
    /// [`WARM_UP`]); a larger row gets [`WARM_UP_PER_THOUSAND`] more per thousand past the
    /// first. It must cover the benchmark lease (2^22 numbers on one core: 105 s at 40
    /// numbers/ms) and the first chunks. A device slower than the coordinator's floor
    /// ([`swarm_core::kinds::MIN_SPEED`], 30.5 numbers/ms) has its first chunks sized as if it
    /// were that fast and settles only after several missed deadlines, each as long as a chunk
    /// takes under the object's results budget.
    pub warm_up: Duration,
}

impl Default for Model {
    fn default() -> Self {
        Self {
            cores: 4,
            numbers_per_ms: 200,
            warm_up: WARM_UP,
        }
    }
}

impl Model {
    /// `[--cores C] [--rate R] [--warm-up S] [N …]`: the model and the device counts.
    pub fn parse(args: &[String]) -> Result<(Model, Vec<usize>)> {
        let mut model = Model::default();
        let mut rest = args;
        while let [flag, value, tail @ ..] = rest {
            let whole = || {
                value
                    .parse::<u64>()
                    .ok()
                    .filter(|v| *v > 0)
                    .with_context(|| format!("{flag} takes a whole number above 0"))
            };
            match flag.as_str() {
                "--cores" => {
                    model.cores = u16::try_from(whole()?).context("--cores is too large")?
                }
                "--rate" => model.numbers_per_ms = whole()?,
                "--warm-up" => model.warm_up = Duration::from_secs(whole()?),
                _ => break,
            }
            rest = tail;
        }
        let counts = rest
            .iter()
            .map(|n| n.parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .context("device counts are whole numbers")?;
        Ok((model, counts))
    }

    /// The warm-up of a row of `n` devices.
    fn warm_up_for(&self, n: usize) -> Duration {
        self.warm_up + WARM_UP_PER_THOUSAND * (n.saturating_sub(1) / 1_000) as u32
    }
}

/// After every device is welcomed, for the default model: time for the benchmark (21 s) and
/// for the rates to settle from it. (Before 9654fb2 the coordinator counted these devices at
/// its floor speed, 39 times their own, so their first chunks missed their deadlines and this
/// was mostly time for those to pass.) A larger swarm gets [`WARM_UP_PER_THOUSAND`] more per
/// thousand devices past the first, as its chunks are longer (the object keeps to its results
/// budget).
const WARM_UP: Duration = Duration::from_secs(100);
const WARM_UP_PER_THOUSAND: Duration = Duration::from_secs(50);

/// Devices start at this rate rather than all in the same instant (a swarm's devices join
/// over time; thousands of handshakes at once would only measure the listening socket).
const STARTS_PER_SECOND: u64 = 500;

/// Threads that compute the devices' answers, at the lowest priority ([`lowest_priority`]):
/// they take what workerd leaves of this machine's two cores.
const KERNEL_THREADS: usize = 2;

/// The measured window.
const WINDOW: Duration = Duration::from_secs(30);

/// The device counts measured by default (`cargo xtask bench load 10 100 …` picks others).
pub const DEFAULT_COUNTS: &[usize] = &[10, 100, 1_000];

/// What the devices of one row saw, shared between their threads.
#[derive(Default)]
struct Seen {
    welcomed: AtomicU64,
    /// Results the devices sent.
    results_sent: AtomicU64,
    /// Milliseconds from each device's start to its welcome.
    welcome_ms: Mutex<Vec<u64>>,
    bytes_in: AtomicU64,
    messages_in: AtomicU64,
    /// Devices that got at least one job lease.
    worked: AtomicU64,
    closes: Mutex<BTreeMap<String, u64>>,
    stop: AtomicBool,
}

/// One row of the table.
struct Row {
    devices: usize,
    connect_s: Option<f64>,
    /// Devices welcomed, and the median and largest time from a device's start to its welcome.
    welcomed: u64,
    welcome_p50_s: f64,
    welcome_max_s: f64,
    completions_per_s: f64,
    cpu_ms: f64,
    bytes: f64,
    messages: f64,
    /// Calls the object took for messages, per completion: the messages of its own sockets
    /// and the gateways' batched calls.
    calls: f64,
    /// Gateways holding sockets at the end of the window, and the sockets they held.
    gateways: (usize, u32),
    writes: f64,
    writes_per_device_hour: f64,
    alarms_per_min: f64,
    peak_mb: f64,
    idle: u64,
    /// Results the object counted as changing nothing, in the window and over the whole row.
    discarded: (u64, u64),
    /// Leases the object took back at their deadline, in the window and over the whole row.
    expired: (u64, u64),
    closes: String,
    restarted: bool,
}

/// The load table for `counts` devices of `model`.
pub fn table(counts: &[usize], model: Model) -> Result<()> {
    // What ships: a build left by `cargo xtask dev` (no LTO, no wasm-opt) is rebuilt first.
    crate::build::all(&crate::tools::setup(false)?)?;
    let root = runtime_tests::repo_root();
    let persist = root
        .join("target/tmp")
        .join(format!("load-{}", std::process::id()));
    // `SOCKETS_PER_GATEWAY=0 cargo xtask bench load …` compares a swarm without gateways.
    let vars = std::env::var("SOCKETS_PER_GATEWAY")
        .map(|n| vec![("SOCKETS_PER_GATEWAY".to_owned(), n)])
        .unwrap_or_default();
    if !vars.is_empty() {
        eprintln!("xtask: load with {vars:?}");
    }
    let mut wrangler = Wrangler::start_anywhere(&persist, vars)?;
    print_header(&model);
    // Lines of wrangler's log that earlier rows saved.
    let mut saved_lines = 0;
    for &n in counts {
        eprintln!("xtask: load with {n} devices");
        let trouble = match row(&wrangler, n, model) {
            Ok(row) => {
                print_row(&row);
                row.restarted
            }
            Err(err) => {
                println!("| {n} | the row failed: {err:#} |");
                true
            }
        };
        // What wrangler and workerd printed during this row, for whoever wants to know why a
        // device was closed (the objects log what failed between them).
        let whole = wrangler.log();
        let log: String = whole
            .lines()
            .skip(saved_lines)
            .flat_map(|line| [line, "\n"])
            .collect();
        saved_lines = whole.lines().count();
        let saved = root
            .join("target/bench-load")
            .join(format!("{n}-devices.log"));
        let written = std::fs::create_dir_all(root.join("target/bench-load"))
            .and_then(|()| std::fs::write(&saved, &log));
        match written {
            Ok(()) => eprintln!(
                "xtask: workerd's log ({} lines, {} mentioning an error) is in {}",
                log.lines().count(),
                log.lines()
                    .filter(|l| l.to_ascii_lowercase().contains("error"))
                    .count(),
                saved.display()
            ),
            Err(err) => eprintln!("xtask: could not save workerd's log: {err}"),
        }
        if trouble {
            // What workerd printed last (object errors, resets, limits), so that a failed
            // row, or one whose object restarted, says why, not only that.
            let log = wrangler.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!("--- the last {} lines workerd printed ---", tail.len());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
    wrangler.stop();
    let _ = std::fs::remove_dir_all(persist);
    Ok(())
}

fn print_header(model: &Model) {
    println!(
        "\nLoad over workerd: devices lending {} cores of {} numbers/ms each, started \
         {STARTS_PER_SECOND} a second, one prime-count job, {} s measured after {} s of warm-up \
         (and {} s more per thousand devices past the first):\n",
        model.cores,
        model.numbers_per_ms,
        WINDOW.as_secs(),
        model.warm_up.as_secs(),
        WARM_UP_PER_THOUSAND.as_secs()
    );
    println!(
        "| devices | all connected (s) | welcomed | time to welcome, median / largest (s) | completions/s | workerd CPU ms / completion | bytes pushed / completion | messages pushed / completion | calls taken / completion | gateways, their sockets | writes / completion | writes / device-hour | alarms / min | workerd peak RSS (MB) | devices without work | results not accepted, window / whole row | leases expired, window / whole row | closes seen |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
}

fn print_row(r: &Row) {
    println!(
        "| {} | {} | {} | {:.1} / {:.1} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} | {} / {} | {:.3} | {:.0} | {:.1} | {:.0} | {} | {} / {} | {} / {} | {}{} |",
        r.devices,
        r.connect_s.map_or("not all".into(), |s| format!("{s:.1}")),
        r.welcomed,
        r.welcome_p50_s,
        r.welcome_max_s,
        r.completions_per_s,
        r.cpu_ms,
        r.bytes,
        r.messages,
        r.calls,
        r.gateways.0,
        r.gateways.1,
        r.writes,
        r.writes_per_device_hour,
        r.alarms_per_min,
        r.peak_mb,
        r.idle,
        r.discarded.0,
        r.discarded.1,
        r.expired.0,
        r.expired.1,
        if r.closes.is_empty() { "none" } else { &r.closes },
        if r.restarted { " (object restarted: counters partial)" } else { "" },
    );
}

fn row(wrangler: &Wrangler, n: usize, model: Model) -> Result<Row> {
    let swarm = wrangler.create_swarm(&format!("load {n}"))?;
    // Devices and samples talk to the worker's own workerd, as devices would to the platform's
    // edge: through wrangler's dev proxy (a second workerd that relays every frame, and a node
    // process that logs every request) 5,000 handshakes mostly went unanswered for 30 s while
    // the object's workerd used a fifth of a core.
    let origin = match worker_port(wrangler.pid()) {
        Some(port) => {
            eprintln!("xtask: devices connect to the worker's own workerd (port {port})");
            format!("http://127.0.0.1:{port}")
        }
        None => {
            eprintln!("xtask: the worker's own workerd not found: devices go through the proxy");
            wrangler.base.clone()
        }
    };
    let base = format!("{origin}/api/swarms/{}", swarm.swarm_id);
    // More work than the devices do in twice the row's time (its warm-up, 10 minutes for the
    // joins, the benchmark and the window); cancelled at the end. A job that ran out during a
    // row would measure its end, not the load.
    // At most the protocol's largest end: a model too large for it gets the largest job.
    let row_s = model.warm_up_for(n).as_secs() + 600;
    let hi = [
        u64::from(model.cores),
        model.numbers_per_ms,
        1_000,
        2,
        row_s,
    ]
    .into_iter()
    .fold(n as u64, u64::saturating_mul)
    .saturating_add(2)
    .min(shared_protocol::MAX_PRIME_END);
    let job_id = match owner(
        &base,
        &swarm.owner_key,
        &OwnerCommand::SubmitJob {
            job: JobSpec::PrimeCount { lo: 2, hi },
        },
    )? {
        OwnerReply::JobSubmitted { job_id } => job_id,
        other => bail!("expected a job id, got {other:?}"),
    };
    let seen = Arc::new(Seen::default());
    let url = format!("{}/ws", base.replacen("http://", "ws://", 1));
    let kernel = Kernel::start(&seen)?;
    let started = Instant::now();
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (url, key, seen) = (url.clone(), swarm.owner_key.clone(), Arc::clone(&seen));
            let asks = kernel.asks.clone();
            if i > 0 && (i as u64).is_multiple_of(STARTS_PER_SECOND / 10) {
                std::thread::sleep(Duration::from_millis(100));
            }
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || device(i, &url, &key, model, &seen, asks))
        })
        .collect::<std::io::Result<_>>()?;
    let connect_deadline = started + Duration::from_secs(120);
    while seen.welcomed.load(Ordering::Relaxed) < n as u64 && Instant::now() < connect_deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let connect_s = (seen.welcomed.load(Ordering::Relaxed) == n as u64)
        .then(|| started.elapsed().as_secs_f64());
    let closes_so_far = || seen.closes.lock().map(|c| c.clone()).unwrap_or_default();
    eprintln!(
        "xtask: {} of {n} devices welcomed after {:.1} s; closes so far: {:?}",
        seen.welcomed.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        closes_so_far()
    );
    if threads.iter().all(|t| t.is_finished()) {
        bail!("every device has gone; closes seen: {:?}", closes_so_far());
    }
    let mut times = seen
        .welcome_ms
        .lock()
        .map(|t| t.clone())
        .unwrap_or_default();
    times.sort_unstable();
    let welcome_p50_s = times.get(times.len() / 2).copied().unwrap_or(0) as f64 / 1000.0;
    let welcome_max_s = times.last().copied().unwrap_or(0) as f64 / 1000.0;
    let measured = (|| -> Result<(Sample, Sample)> {
        // What the warm-up looks like, every 30 s: whether the object answers, and whether
        // results flow.
        let warm_end = Instant::now() + model.warm_up_for(n);
        while Instant::now() < warm_end {
            std::thread::sleep(Duration::from_secs(30).min(warm_end - Instant::now()));
            let asked = Instant::now();
            let stats = stats(&base, &swarm.owner_key);
            eprintln!(
                "xtask: warm-up, {:.0} s after start: results sent {}, stats {} in {:.1} s",
                started.elapsed().as_secs_f64(),
                seen.results_sent.load(Ordering::Relaxed),
                match &stats {
                    Ok(s) => format!("ok ({} messages in)", s.counters.messages_in),
                    Err(err) => format!("failed ({err})"),
                },
                asked.elapsed().as_secs_f64()
            );
        }
        let before = Sample::take(&base, &swarm.owner_key, &job_id, wrangler, &seen)?;
        std::thread::sleep(WINDOW);
        let after = Sample::take(&base, &swarm.owner_key, &job_id, wrangler, &seen)?;
        Ok((before, after))
    })();
    // Devices stop sending (also when the object did not answer); what is in flight lands;
    // then the totals are compared.
    seen.stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    kernel.stop();
    let (before, after) = measured.with_context(|| {
        format!(
            "{} of {n} devices welcomed; closes seen: {:?}",
            seen.welcomed.load(Ordering::Relaxed),
            seen.closes.lock().map(|c| c.clone()).unwrap_or_default()
        )
    })?;
    std::thread::sleep(Duration::from_secs(3));
    let totals = stats(&base, &swarm.owner_key)?.counters;
    let _ = owner(&base, &swarm.owner_key, &OwnerCommand::CancelJob { job_id });
    let completions = after.chunks.saturating_sub(before.chunks).max(1) as f64;
    let secs = WINDOW.as_secs_f64();
    let counter =
        |f: fn(&SwarmStats) -> u64| f(&after.stats).saturating_sub(f(&before.stats)) as f64;
    let closes = seen
        .closes
        .lock()
        .map(|c| {
            c.iter()
                .map(|(code, count)| format!("{code}×{count}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    Ok(Row {
        devices: n,
        connect_s,
        welcomed: times.len() as u64,
        welcome_p50_s,
        welcome_max_s,
        completions_per_s: (after.chunks.saturating_sub(before.chunks)) as f64 / secs,
        cpu_ms: after.cpu_ms.saturating_sub(before.cpu_ms) as f64 / completions,
        bytes: after.bytes_in.saturating_sub(before.bytes_in) as f64 / completions,
        messages: counter(|s| s.counters.messages_out) / completions,
        calls: (counter(|s| s.counters.messages_in) - counter(|s| s.counters.gateway_messages)
            + counter(|s| s.counters.gateway_calls))
            / completions,
        gateways: (
            after.stats.gateways.iter().filter(|n| **n > 0).count(),
            after.stats.gateways.iter().sum(),
        ),
        writes: counter(|s| s.counters.storage_writes) / completions,
        writes_per_device_hour: counter(|s| s.counters.storage_writes) * 3_600.0
            / (secs * n as f64),
        alarms_per_min: counter(|s| s.counters.alarms) * 60.0 / secs,
        peak_mb: after.peak_kb as f64 / 1024.0,
        idle: (n as u64).saturating_sub(seen.worked.load(Ordering::Relaxed)),
        discarded: (
            counter(|s| s.counters.results_unused) as u64,
            totals.results_unused,
        ),
        expired: (
            counter(|s| s.counters.leases_expired) as u64,
            totals.leases_expired,
        ),
        closes,
        restarted: after.stats.started_ms != before.stats.started_ms,
    })
}

/// HTTP to an object under load may wait long; a minute is where the row gives up.
fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build()
}

/// The counters at one instant of a row.
struct Sample {
    stats: SwarmStats,
    chunks: u64,
    cpu_ms: u64,
    peak_kb: u64,
    bytes_in: u64,
}

impl Sample {
    fn take(base: &str, key: &str, job_id: &str, w: &Wrangler, seen: &Seen) -> Result<Self> {
        let stats = stats(base, key)?;
        let (cpu_ms, peak_kb) = workerd_usage(w.pid())?;
        Ok(Self {
            stats,
            chunks: job(base, key, job_id)?.chunks_done,
            cpu_ms,
            peak_kb,
            bytes_in: seen.bytes_in.load(Ordering::Relaxed),
        })
    }
}

pub(crate) fn stats(base: &str, key: &str) -> Result<SwarmStats> {
    Ok(agent()
        .get(&format!("{base}/stats"))
        .set("authorization", &format!("Bearer {key}"))
        .call()?
        .into_json()?)
}

fn job(base: &str, key: &str, job_id: &str) -> Result<JobView> {
    Ok(agent()
        .get(&format!("{base}/jobs/{job_id}"))
        .set("authorization", &format!("Bearer {key}"))
        .call()?
        .into_json()?)
}

fn owner(base: &str, key: &str, command: &OwnerCommand) -> Result<OwnerReply> {
    let resp = agent()
        .post(&format!("{base}/owner"))
        .set("authorization", &format!("Bearer {key}"))
        .send_string(&encode(command))?;
    Ok(resp.into_json()?)
}

/// CPU time (user + system, ms) and peak resident memory (KiB) of the workerd processes in
/// wrangler's process group.
pub(crate) fn workerd_usage(group: u32) -> Result<(u64, u64)> {
    let ticks_per_s = 100; // USER_HZ on Linux
    let (mut cpu, mut peak) = (0, 0);
    for process in workerds(group) {
        // After the name: state(0) ppid(1) pgrp(2) … utime(11) stime(12).
        let field = |i: usize| {
            process
                .stat
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        cpu += (field(11) + field(12)) * 1_000 / ticks_per_s;
        let status = std::fs::read_to_string(process.path.join("status")).unwrap_or_default();
        peak += status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    if cpu == 0 {
        bail!("no workerd process found in process group {group}");
    }
    Ok((cpu, peak))
}

/// A workerd process: its `/proc` folder and the fields of its `stat` after the name.
struct Workerd {
    path: std::path::PathBuf,
    stat: Vec<String>,
}

/// The workerd processes of process group `group` (wrangler's: the worker's own workerd and
/// the dev proxy's).
fn workerds(group: u32) -> Vec<Workerd> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            // The command name is in parentheses and may hold spaces; fields follow it.
            let (name, rest) = stat.split_once(") ")?;
            let stat: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
            let in_group = stat.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(group);
            (name.ends_with("(workerd") && in_group).then_some(Workerd { path, stat })
        })
        .collect()
}

/// The port on which the workerd that runs the worker itself (not wrangler's dev proxy in
/// front of it) takes requests, if it can be found: the listening sockets of the workerd of
/// process group `group` that has an inspector, probed for the worker's `/api/health`.
fn worker_port(group: u32) -> Option<u16> {
    let worker = workerds(group).into_iter().find_map(|process| {
        let cmdline = std::fs::read_to_string(process.path.join("cmdline")).ok()?;
        cmdline.contains("--inspector-addr").then_some(process.path)
    })?;
    let sockets: Vec<String> = std::fs::read_dir(worker.join("fd"))
        .ok()?
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(2))
        .build();
    table.lines().skip(1).find_map(|line| {
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
        if *state != "0A" || !sockets.iter().any(|s| s == inode) {
            return None;
        }
        let port = u16::from_str_radix(local.split_once(':')?.1, 16).ok()?;
        let health = agent
            .get(&format!("http://127.0.0.1:{port}/api/health"))
            .call()
            .ok()?
            .into_string()
            .ok()?;
        health.contains("\"protocol\"").then_some(port)
    })
}

/// A lease whose answer a device asks of the kernel threads; the answer (none if the work
/// cannot be computed) goes back on `reply`.
struct Ask {
    lease_id: u64,
    work: Work,
    reply: Sender<(u64, Option<shared_protocol::WorkResult>)>,
}

/// The [`KERNEL_THREADS`] threads that compute every simulated device's answers, in the order
/// asked.
struct Kernel {
    asks: Sender<Ask>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Kernel {
    fn start(seen: &Arc<Seen>) -> Result<Self> {
        let (asks, queue) = mpsc::channel::<Ask>();
        let queue = Arc::new(Mutex::new(queue));
        let threads = (0..KERNEL_THREADS)
            .map(|i| {
                let (queue, seen) = (Arc::clone(&queue), Arc::clone(seen));
                std::thread::Builder::new()
                    .name(format!("load kernel {i}"))
                    .spawn(move || {
                        if i == 0 {
                            lowest_priority_note(lowest_priority());
                        } else {
                            let _ = lowest_priority();
                        }
                        loop {
                            let Ok(ask) = queue
                                .lock()
                                .map_err(drop)
                                .and_then(|q| q.recv().map_err(drop))
                            else {
                                return;
                            };
                            // What is still asked once the row ends is not wanted.
                            if seen.stop.load(Ordering::Relaxed) {
                                continue;
                            }
                            let result = client_compute::compute(&ask.work).ok();
                            // A device that has gone no longer listens.
                            let _ = ask.reply.send((ask.lease_id, result));
                        }
                    })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Self { asks, threads })
    }

    fn stop(self) {
        drop(self.asks);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Gives the calling thread the lowest CPU priority (nice 19; on Linux a thread's nice value
/// is its own), so that the devices' computing takes only what workerd leaves. The simulated
/// devices stand for machines of their own: at the same priority, the two kernel threads and
/// the devices' threads got so much of this machine's two cores that workerd ran on about a
/// third of one while 10,000 devices joined, and their handshakes timed out.
fn lowest_priority() -> Result<()> {
    let thread = std::fs::read_link("/proc/thread-self").context("no /proc/thread-self")?;
    let tid = thread
        .file_name()
        .and_then(|name| name.to_str())
        .context("no thread id")?
        .to_owned();
    let status = std::process::Command::new("renice")
        .args(["-n", "19", "-p", &tid])
        .stdout(std::process::Stdio::null())
        .status()
        .context("renice")?;
    anyhow::ensure!(status.success(), "renice: {status}");
    Ok(())
}

fn lowest_priority_note(outcome: Result<()>) {
    match outcome {
        Ok(()) => eprintln!("xtask: the kernel threads run at the lowest priority (nice 19)"),
        Err(err) => eprintln!(
            "xtask: the kernel threads run at normal priority ({err:#}): they compete with \
             workerd for the CPU"
        ),
    }
}

/// A lease being "computed": once its simulated time is up, the kernel threads compute its
/// real answer, which goes back as soon as it comes.
struct Running {
    lease_id: u64,
    /// The lease's ticket, sent back with the result as the product's devices do.
    ticket: Option<String>,
    /// The work, until it is handed to the kernel threads at `ready_at`.
    work: Option<Work>,
    /// The answer, once the kernel threads have computed it.
    result: Option<shared_protocol::WorkResult>,
    compute_ms: u64,
    /// When the simulated cores would have finished.
    ready_at: Instant,
}

/// One simulated device, until `seen.stop`.
fn device(i: usize, url: &str, owner_key: &str, model: Model, seen: &Seen, kernel: Sender<Ask>) {
    let started = Instant::now();
    let close = |why: String| {
        if let Ok(mut closes) = seen.closes.lock() {
            *closes.entry(why).or_default() += 1;
        }
    };
    let mut ws = match connect(url) {
        Ok(ws) => ws,
        Err(err) => return close(format!("connect failed ({err})")),
    };
    let hello = ToCoordinator::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        role: HelloRole::Device {
            name: format!("load {i}"),
            capabilities: Capabilities {
                cores: model.cores,
                memory_mb: None,
                gpu: false,
                agent: AgentClass::Native,
                workloads: false,
            },
            credential: None,
            invite: Some(JoinProof::OwnerKey {
                owner_key: owner_key.to_owned(),
            }),
        },
    });
    if ws.send(Message::text(encode(&hello))).is_err() {
        return close("send failed".into());
    }
    let mut workers = usize::from(model.cores);
    let mut queue: VecDeque<(u64, Work, Option<String>)> = VecDeque::new();
    let mut running: Vec<Running> = Vec::new();
    let (reply, answers): (Sender<_>, Receiver<_>) = mpsc::channel();
    let mut worked = false;
    let mut next_heartbeat = Instant::now() + Duration::from_secs(10);
    while !seen.stop.load(Ordering::Relaxed) {
        match ws.read() {
            Ok(Message::Text(text)) => {
                seen.bytes_in
                    .fetch_add(text.len() as u64, Ordering::Relaxed);
                seen.messages_in.fetch_add(1, Ordering::Relaxed);
                let messages = match serde_json::from_str::<shared_protocol::ToDevice>(&text) {
                    Ok(ToClient::Leases { leases }) => {
                        leases.into_iter().map(|l| Ok(l.into_lease())).collect()
                    }
                    other => vec![other],
                };
                for message in messages {
                    match message {
                        Ok(ToClient::Welcome { .. }) => {
                            seen.welcomed.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut times) = seen.welcome_ms.lock() {
                                times.push(started.elapsed().as_millis() as u64);
                            }
                        }
                        Ok(ToClient::Share(share)) => workers = usize::from(share.workers).max(1),
                        Ok(ToClient::Lease {
                            lease_id,
                            job_id,
                            work,
                            ticket,
                            ..
                        }) => {
                            if job_id == BENCH_JOB_ID {
                                queue.push_front((lease_id, work, ticket));
                            } else {
                                if !worked {
                                    worked = true;
                                    seen.worked.fetch_add(1, Ordering::Relaxed);
                                }
                                queue.push_back((lease_id, work, ticket));
                            }
                        }
                        Ok(ToClient::CancelLease { lease_id }) => {
                            queue.retain(|(id, ..)| *id != lease_id);
                            running.retain(|r| r.lease_id != lease_id);
                        }
                        _ => {}
                    }
                }
            }
            Ok(Message::Close(frame)) => {
                let code = frame.map_or("closed".into(), |f| u16::from(f.code).to_string());
                return close(code);
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(err))
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(err) => return close(format!("socket error ({err})")),
        }
        while let Ok((lease_id, result)) = answers.try_recv() {
            match result {
                Some(result) => {
                    if let Some(r) = running.iter_mut().find(|r| r.lease_id == lease_id) {
                        r.result = Some(result);
                    }
                }
                // Work the kernels cannot compute is dropped, as a device that fails it would.
                None => running.retain(|r| r.lease_id != lease_id),
            }
        }
        let now = Instant::now();
        while running.len() < workers {
            let Some((lease_id, work, ticket)) = queue.pop_front() else {
                break;
            };
            let compute_ms = (units(&work) / model.numbers_per_ms).max(1);
            running.push(Running {
                lease_id,
                ticket,
                work: Some(work),
                result: None,
                compute_ms,
                ready_at: now + Duration::from_millis(compute_ms),
            });
        }
        for r in running.iter_mut().filter(|r| r.ready_at <= now) {
            if let Some(work) = r.work.take() {
                let ask = Ask {
                    lease_id: r.lease_id,
                    work,
                    reply: reply.clone(),
                };
                if kernel.send(ask).is_err() {
                    return close("kernel thread gone".into());
                }
            }
        }
        let (ready, busy): (Vec<Running>, Vec<Running>) =
            running.drain(..).partition(|r| r.result.is_some());
        running = busy;
        // Results ready together go in one frame, as the product's devices send them.
        let mut ready: Vec<ChunkAnswer> = ready
            .into_iter()
            .filter_map(|r| {
                Some(ChunkAnswer {
                    lease_id: r.lease_id,
                    result: r.result?,
                    compute_ms: r.compute_ms,
                    ticket: r.ticket,
                })
            })
            .collect();
        let frame = match ready.len() {
            0 => None,
            1 => ready.pop().map(ToCoordinator::from),
            _ => Some(ToCoordinator::ChunkResults { results: ready }),
        };
        if let Some(frame) = frame {
            let count = match &frame {
                ToCoordinator::ChunkResults { results } => results.len() as u64,
                _ => 1,
            };
            seen.results_sent.fetch_add(count, Ordering::Relaxed);
            if ws.send(Message::text(encode(&frame))).is_err() {
                return close("send failed".into());
            }
        }
        if now >= next_heartbeat {
            next_heartbeat = now + Duration::from_secs(10);
            if ws.send(Message::text(HEARTBEAT)).is_err() {
                return close("send failed".into());
            }
        }
        // Sleep in the read until a message comes or the next result or heartbeat is due (at
        // most a second, to notice the stop): thousands of devices waking every few
        // milliseconds would take the cores the coordinator is measured on. While the kernel
        // threads compute an answer, the device looks for it after half the time it has waited
        // so far (50 ms to 1 s): when thousands of answers queue, thousands of devices polling
        // every few milliseconds would crowd workerd out as computing on their own threads did.
        let due = running
            .iter()
            .map(|r| match r.work {
                Some(_) => r.ready_at,
                None => {
                    now + (now.saturating_duration_since(r.ready_at) / 2)
                        .clamp(Duration::from_millis(50), Duration::from_secs(1))
                }
            })
            .chain([next_heartbeat, now + Duration::from_secs(1)])
            .min()
            .unwrap_or(now);
        let wait = due
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        if let MaybeTlsStream::Plain(stream) = ws.get_ref() {
            let _ = stream.set_read_timeout(Some(wait));
        }
    }
    let _ = ws.close(None);
    let _ = ws.flush();
}

fn units(work: &Work) -> u64 {
    match work {
        Work::PrimeCount { lo, hi } => hi.saturating_sub(*lo),
        _ => 1,
    }
}

/// Opens the socket, giving up after 30 s (a saturated runtime may never answer).
fn connect(url: &str) -> Result<WebSocket<MaybeTlsStream<TcpStream>>> {
    let address = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .context("a ws:// URL")?
        .parse()?;
    let limit = Duration::from_secs(30);
    let stream = TcpStream::connect_timeout(&address, limit)?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    let (ws, _) = tungstenite::client(url, MaybeTlsStream::Plain(stream))
        .map_err(|err| anyhow::anyhow!("handshake: {err}"))?;
    if let MaybeTlsStream::Plain(stream) = ws.get_ref() {
        stream.set_read_timeout(Some(Duration::from_millis(20)))?;
    }
    Ok(ws)
}
