//! Cheating devices against verification over the real runtime: for each saboteur model
//! (`runtime_tests::cheat`), a fresh swarm of three honest `ostrich-agent` processes (joined by
//! invite, so nobody is trusted at first) and the cheat (two, colluding, for that model)
//! computes π(10⁹), a SHA-256 nonce search and a Mandelbrot image. Every final answer must be
//! exact, and a cheat that lied must end quarantined and disconnected (4005).
//!
//! `OSTRICH_CHEAT_ROUNDS` repeats every model that many times (default 1).
//!
//! A measurement instead of the cases: `OSTRICH_OVERHEAD_JOBS=N` runs N jobs π(10⁹) on three
//! honest agents and prints, for each, the work computed ÷ the job's work (`1 +
//! verify_units ÷ total_units`); `OSTRICH_TRUST_AFTER` sets the coordinator's `TRUST_AFTER` for
//! that run, to reach the trusted state in a few jobs.

// ureq's error type is large; in test code that costs nothing worth boxing for.
#![allow(clippy::result_large_err)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use runtime_tests::agents::{build_agent, AgentProcess};
use runtime_tests::cheat::{self, Model, Report, MODELS};
use runtime_tests::{
    await_job, get_bytes, http_agent, repo_root, run_case, short_timeouts, Wrangler, WsClient,
};
use shared_protocol::{
    close_code, Hello, HelloRole, JobResult, JobState, SwarmSnapshot, ToClient, ToCoordinator,
    PROTOCOL_VERSION,
};

const SECOND: Duration = Duration::from_secs(1);
const JOB_TIMEOUT: Duration = Duration::from_secs(300);

struct Swarm {
    id: String,
    owner_key: String,
    token: String,
}

fn owner(w: &Wrangler, swarm: &Swarm, body: serde_json::Value) -> Result<serde_json::Value> {
    let resp = http_agent()
        .post(&format!("{}/api/swarms/{}/owner", w.base, swarm.id))
        .set("authorization", &format!("Bearer {}", swarm.owner_key))
        .send_string(&body.to_string())
        .with_context(|| format!("owner command {body}"))?;
    Ok(resp.into_json()?)
}

fn new_swarm(w: &Wrangler, name: &str) -> Result<Swarm> {
    let created = w.create_swarm(name)?;
    let mut swarm = Swarm {
        id: created.swarm_id,
        owner_key: created.owner_key,
        token: String::new(),
    };
    let invite = owner(
        w,
        &swarm,
        serde_json::json!({"command": "create_invite", "ttl_ms": 3_600_000, "max_uses": null}),
    )?;
    swarm.token = invite["token"]
        .as_str()
        .context("no token in the invite")?
        .to_owned();
    Ok(swarm)
}

fn snapshot(w: &Wrangler, swarm: &Swarm) -> Result<SwarmSnapshot> {
    let mut dash = WsClient::connect(&w.ws_url(&swarm.id))?;
    dash.send(&ToCoordinator::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        role: HelloRole::Dashboard {
            owner_key: Some(swarm.owner_key.clone()),
        },
    }))?;
    let snap = dash.recv_until(6 * SECOND, |m| match m {
        ToClient::Snapshot(s) => Some(s.clone()),
        _ => None,
    })?;
    dash.close();
    Ok(snap)
}

/// Submits a job and waits for it; returns its final result.
fn compute(w: &Wrangler, swarm: &Swarm, job: serde_json::Value) -> Result<(String, JobResult)> {
    let submitted = owner(
        w,
        swarm,
        serde_json::json!({"command": "submit_job", "job": job}),
    )?;
    let job_id = submitted["job_id"]
        .as_str()
        .with_context(|| format!("no job id in {submitted}"))?
        .to_owned();
    let view = await_job(&w.base, &swarm.id, &job_id, JOB_TIMEOUT)?;
    if view.state != JobState::Done {
        let snap = snapshot(w, swarm)?;
        let devices: Vec<String> = snap
            .devices
            .iter()
            .map(|d| {
                format!(
                    "{} {:?} enabled {} quarantined {} in flight {} trusted {} {}/{} disputed {}",
                    d.name,
                    d.status,
                    d.enabled,
                    d.quarantined,
                    d.in_flight,
                    d.trusted,
                    d.confirmed,
                    d.replicated,
                    d.disputed
                )
            })
            .collect();
        let log: Vec<&str> = snap.log.iter().map(|l| l.text.as_str()).collect();
        anyhow::bail!(
            "not done in {JOB_TIMEOUT:?}: {view:?}\ndevices: {devices:#?}\nlog: {log:#?}"
        );
    }
    ensure!(view.unverified_units == 0, "{view:?}");
    Ok((job_id, view.result))
}

/// Three honest agents (one core each) joined by the swarm's invite, once benchmarked.
fn honest_agents(
    w: &Wrangler,
    swarm: &Swarm,
    bin: &Path,
    dir: &Path,
    tag: &str,
) -> Result<Vec<AgentProcess>> {
    let link = format!("{}/join/{}#t={}", w.base, swarm.id, swarm.token);
    let mut honest = Vec::new();
    for i in 0..3 {
        let args = [
            link.clone(),
            "--cores".into(),
            "1".into(),
            "--name".into(),
            format!("honest {i}"),
            "--state".into(),
            dir.join(format!("{tag}-{i}.json")).display().to_string(),
        ];
        honest.push(AgentProcess::spawn(bin, &format!("honest {i}"), &args)?);
    }
    for agent in &mut honest {
        agent.wait_for_line(30 * SECOND, |l| l.starts_with("benchmark done"))?;
    }
    Ok(honest)
}

/// One model, one round: three honest agents and the cheat(s) on three jobs.
fn model_case(w: &Wrangler, bin: &Path, dir: &Path, model: Model, round: u64) -> Result<()> {
    let swarm = new_swarm(w, &format!("{model:?} {round}"))?;
    let _honest = honest_agents(w, &swarm, bin, dir, &format!("{model:?}-{round}"))?;
    let stop = AtomicBool::new(false);
    let url = w.ws_url(&swarm.id);
    let cheats = if model == Model::Colluding { 2 } else { 1 };
    let (results, reports) = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..cheats)
            .map(|i| {
                let (url, token, stop) = (&url, &swarm.token, &stop);
                scope.spawn(move || {
                    cheat::run(
                        url,
                        token,
                        &format!("cheat {i}"),
                        model,
                        round * 7 + i,
                        stop,
                    )
                })
            })
            .collect();
        // Let the cheats benchmark before the first job.
        std::thread::sleep(2 * SECOND);
        let results = (|| -> Result<Vec<(String, JobResult)>> {
            Ok(vec![
                compute(
                    w,
                    &swarm,
                    serde_json::json!({"kind": "prime_count", "lo": 0, "hi": 1_000_000_000u64}),
                )?,
                compute(
                    w,
                    &swarm,
                    serde_json::json!({
                        "kind": "sha256_search", "prefix": "cheat", "difficulty_bits": 16,
                        "lo": 0, "hi": 1u64 << 32, "want": 4
                    }),
                )?,
                compute(
                    w,
                    &swarm,
                    serde_json::json!({
                        "kind": "mandelbrot", "center_re": -0.75, "center_im": 0.1, "scale": 2.5,
                        "width": 320, "height": 240, "max_iter": 300
                    }),
                )?,
            ])
        })();
        stop.store(true, Ordering::Relaxed);
        let reports: Vec<Result<Report>> = threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("cheat panicked")))
            })
            .collect();
        (results, reports)
    });
    let results = results?;
    ensure!(
        results[0].1 == JobResult::PrimeCount { count: 50_847_534 },
        "π(10⁹): {:?}",
        results[0].1
    );
    let nonces = kernels::sha256::search(b"cheat", 16, 0, 1 << 32, 4);
    ensure!(
        results[1].1 == JobResult::Sha256Search { nonces },
        "nonces: {:?}",
        results[1].1
    );
    let png = get_bytes(&format!(
        "{}/api/swarms/{}/jobs/{}/image.png",
        w.base, swarm.id, results[2].0
    ))?;
    let native = kernels::mandelbrot::render_png(&kernels::mandelbrot::View {
        center_re: -0.75,
        center_im: 0.1,
        scale: 2.5,
        width: 320,
        height: 240,
        max_iter: 300,
    });
    ensure!(png == native, "the PNG differs from the native render");
    let snap = snapshot(w, &swarm)?;
    let mut lied = 0;
    for (i, report) in reports.into_iter().enumerate() {
        let report = report?;
        println!("    cheat {i} ({model:?}): {report:?}");
        lied += report.lies.saturating_sub(report.void);
        if report.lies > report.void {
            ensure!(
                report.closed == Some(close_code::BAD_RESULT),
                "a cheat that lied was not disconnected: {report:?}"
            );
            let row = snap
                .devices
                .iter()
                .find(|d| d.name == format!("cheat {i}"))
                .context("the cheat's row")?;
            ensure!(row.quarantined, "{row:?}");
        }
    }
    let honest_rows: Vec<_> = snap
        .devices
        .iter()
        .filter(|d| d.name.starts_with("honest"))
        .collect();
    ensure!(
        honest_rows.len() == 3 && honest_rows.iter().all(|d| !d.quarantined),
        "{honest_rows:?}"
    );
    ensure!(
        lied > 0 || model == Model::Random10,
        "the {model:?} cheat never lied"
    );
    Ok(())
}

/// The overhead measurement (see the module docs).
fn overhead(w: &Wrangler, bin: &Path, dir: &Path, jobs: u64) -> Result<()> {
    let swarm = new_swarm(w, "overhead")?;
    let _honest = honest_agents(w, &swarm, bin, dir, "overhead")?;
    let (mut computed, mut total) = (0u64, 0u64);
    for job in 0..jobs {
        let (job_id, result) = compute(
            w,
            &swarm,
            serde_json::json!({"kind": "prime_count", "lo": 0, "hi": 1_000_000_000u64}),
        )?;
        ensure!(result == JobResult::PrimeCount { count: 50_847_534 });
        let view = await_job(&w.base, &swarm.id, &job_id, Duration::ZERO)?;
        computed += view.total_units + view.verify_units;
        total += view.total_units;
        println!(
            "overhead: job {job}: {:.3} (work computed ÷ job work)",
            (view.total_units + view.verify_units) as f64 / view.total_units as f64
        );
    }
    println!(
        "overhead: {jobs} jobs: {:.3} in all",
        computed as f64 / total as f64
    );
    Ok(())
}

fn main() {
    let started = Instant::now();
    let root = repo_root();
    let bin = match build_agent(&root) {
        Ok(bin) => bin,
        Err(err) => {
            eprintln!("could not build the agent: {err:#}");
            println!("0 passed, 1 failed");
            std::process::exit(1);
        }
    };
    let dir = root
        .join("target/tmp")
        .join(format!("cheats-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let overhead_jobs: Option<u64> = std::env::var("OSTRICH_OVERHEAD_JOBS")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut vars = short_timeouts();
    if let (Some(_), Ok(trust_after)) = (overhead_jobs, std::env::var("OSTRICH_TRUST_AFTER")) {
        vars.push(("TRUST_AFTER".into(), trust_after));
    }
    let mut wrangler = match Wrangler::start_anywhere(&dir.join("persist"), vars) {
        Ok(w) => w,
        Err(err) => {
            eprintln!("could not start the runtime: {err:#}");
            println!("0 passed, 1 failed");
            std::process::exit(1);
        }
    };
    if let Some(jobs) = overhead_jobs {
        let outcome = overhead(&wrangler, &bin, &dir, jobs);
        wrangler.stop();
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(err) = outcome {
            println!("overhead measurement failed: {err:#}");
            std::process::exit(1);
        }
        return;
    }
    let rounds: u64 = std::env::var("OSTRICH_CHEAT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let (mut passed, mut failed) = (0, 0);
    for round in 0..rounds {
        for model in MODELS {
            let name =
                format!("a {model:?} cheat among honest agents, round {round}: every answer exact");
            if run_case(&name, || model_case(&wrangler, &bin, &dir, model, round)) {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    }
    if failed > 0 {
        eprintln!("--- wrangler output ---\n{}", wrangler.log());
    }
    wrangler.stop();
    let _ = std::fs::remove_dir_all(&dir);
    println!("\ncheat tests took {:.1?}", started.elapsed());
    println!("{passed} passed, {failed} failed");
    std::process::exit(i32::from(failed > 0));
}
