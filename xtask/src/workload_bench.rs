//! The workload table of `cargo xtask bench workload`: the example `pi` (100,000 samples per
//! item) over a range of items, run directly on the native runner and on the swarm by real
//! `ostrich-agent` processes (release builds) against the built coordinator in `wrangler dev`.
//!
//! A swarm row measures, from the submit to the job's end: items per second, workerd's CPU
//! time per item (from `/proc`, the whole workerd process), the object's messages in and out
//! and its storage writes per item (its own counters), and the bytes the results stream sends
//! per item. The direct row is one thread of
//! `workload::native::Runner`: what the swarm's overhead is measured against.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use runtime_tests::agents::AgentProcess;
use runtime_tests::{http_agent, Wrangler};
use sha2::{Digest, Sha256};
use shared_protocol::{JobState, JobView, SwarmStats};

/// Items per row.
const ITEMS: u64 = 10_000;

/// One row of the table.
struct Row {
    what: String,
    items_per_s: f64,
    cpu_ms: Option<f64>,
    messages: Option<f64>,
    writes: Option<f64>,
    streamed_bytes: Option<f64>,
}

pub fn table() -> Result<()> {
    crate::build::all(&crate::tools::setup(false)?)?;
    crate::examples::build()?;
    let root = runtime_tests::repo_root();
    let status = crate::cargo()
        .args(["build", "--release", "-p", "agent"])
        .status()?;
    ensure!(status.success(), "cargo build --release -p agent: {status}");
    let agent_bin = root.join("target/release/ostrich-agent");
    let pi = std::fs::read(root.join("target/examples/pi.wasm"))?;

    let mut rows = vec![direct(&pi)?];
    let persist = root
        .join("target/tmp")
        .join(format!("workload-bench-{}", std::process::id()));
    let mut wrangler = Wrangler::start_anywhere(&persist, Vec::new())?;
    for (agents, cores) in [(1, 1), (2, 1)] {
        eprintln!("xtask: workload over {agents} agent(s) of {cores} core(s)");
        match swarm_row(&wrangler, &agent_bin, &pi, agents, cores, &persist) {
            Ok(row) => rows.push(row),
            Err(err) => eprintln!("the row of {agents} agents failed: {err:#}"),
        }
    }
    wrangler.stop();
    let _ = std::fs::remove_dir_all(persist);

    println!(
        "\nOwn workloads: examples/pi (100,000 samples per item), {ITEMS} items, on this machine"
    );
    println!("| run | items/s | workerd CPU ms / item | object messages / item | storage writes / item | results streamed, bytes / item |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let cell =
        |v: Option<f64>, digits: usize| v.map_or("–".to_owned(), |v| format!("{v:.digits$}"));
    for row in rows {
        println!(
            "| {} | {:.0} | {} | {} | {} | {} |",
            row.what,
            row.items_per_s,
            cell(row.cpu_ms, 3),
            cell(row.messages, 3),
            cell(row.writes, 4),
            cell(row.streamed_bytes, 1),
        );
    }
    Ok(())
}

/// One thread of the native runner, no swarm.
fn direct(pi: &[u8]) -> Result<Row> {
    let runner = workload::native::Runner::new().map_err(anyhow::Error::msg)?;
    let compiled = runner.compile(pi)?;
    let started = Instant::now();
    for seed in 0..ITEMS {
        runner.run(&compiled, &seed.to_le_bytes(), Duration::from_secs(10));
    }
    Ok(Row {
        what: "native runner, 1 thread, no swarm".into(),
        items_per_s: ITEMS as f64 / started.elapsed().as_secs_f64(),
        cpu_ms: None,
        messages: None,
        writes: None,
        streamed_bytes: None,
    })
}

fn swarm_row(
    w: &Wrangler,
    agent_bin: &std::path::Path,
    pi: &[u8],
    agents: usize,
    cores: u16,
    dir: &std::path::Path,
) -> Result<Row> {
    let created = w.create_swarm("workload bench")?;
    let base = format!("{}/api/swarms/{}", w.base, created.swarm_id);
    let key = created.owner_key;
    let owner = |body: serde_json::Value| -> Result<serde_json::Value> {
        Ok(http_agent()
            .post(&format!("{base}/owner"))
            .set("authorization", &format!("Bearer {key}"))
            .send_string(&body.to_string())?
            .into_json()?)
    };
    let sha = workload::module::hex(&Sha256::digest(pi).into());
    http_agent()
        .put(&format!("{base}/modules/{sha}"))
        .set("authorization", &format!("Bearer {key}"))
        .send_bytes(pi)?;
    // The owner's own agents: their results are not replicated, so the row measures the
    // work once (an untrusted swarm computes some of it twice until devices earn trust).
    let link = format!("{}/s/{}", w.base, created.swarm_id);
    let mut running = Vec::new();
    for i in 0..agents {
        let state = dir.join(format!("agent-{}-{i}.json", created.swarm_id));
        let args = [
            link.clone(),
            "--owner-key".into(),
            key.clone(),
            "--cores".into(),
            cores.to_string(),
            "--state".into(),
            state.display().to_string(),
        ];
        let mut agent = AgentProcess::spawn(agent_bin, &format!("bench-{i}"), &args)?;
        agent.wait_for_line(Duration::from_secs(60), |l| l.starts_with("benchmark done"))?;
        running.push(agent);
    }
    let before = (
        crate::load::stats(&base, &key)?,
        crate::load::workerd_usage(w.pid())?.0,
    );
    let started = Instant::now();
    let submitted = owner(serde_json::json!({"command": "submit_job", "job": {
        "kind": "workload", "module": sha, "start": 0, "step": 1, "items": ITEMS,
        "time_limit_ms": 10_000}}))?;
    let job_id = submitted["job_id"]
        .as_str()
        .context("no job id")?
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let job: JobView = http_agent()
            .get(&format!("{base}/jobs/{job_id}"))
            .call()?
            .into_json()?;
        if job.state == JobState::Done {
            break;
        }
        if Instant::now() > deadline {
            bail!("not done after 600 s: {job:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = (
        crate::load::stats(&base, &key)?,
        crate::load::workerd_usage(w.pid())?.0,
    );
    drop(running);
    let (streamed, lines) = stream(&base, &key, &job_id)?;
    ensure!(lines == ITEMS, "{lines} result lines");
    let per_item = |v: u64| Some(v as f64 / ITEMS as f64);
    let counters = |s: &SwarmStats| {
        (
            s.counters.messages_in + s.counters.messages_out,
            s.counters.storage_writes,
        )
    };
    let (m0, w0) = counters(&before.0);
    let (m1, w1) = counters(&after.0);
    Ok(Row {
        what: format!("{agents} agent(s) × {cores} core(s) on the swarm"),
        items_per_s: ITEMS as f64 / seconds,
        cpu_ms: per_item(after.1.saturating_sub(before.1)),
        messages: per_item(m1.saturating_sub(m0)),
        writes: per_item(w1.saturating_sub(w0)),
        streamed_bytes: per_item(streamed),
    })
}

/// Reads the whole results stream: its bytes and item lines.
fn stream(base: &str, key: &str, job_id: &str) -> Result<(u64, u64)> {
    let (mut bytes, mut lines, mut from) = (0u64, 0u64, 0u64);
    loop {
        let body = http_agent()
            .get(&format!("{base}/jobs/{job_id}/results?from={from}"))
            .set("authorization", &format!("Bearer {key}"))
            .call()?
            .into_string()?;
        bytes += body.len() as u64;
        let mut closing = None;
        for line in body.lines() {
            let value: serde_json::Value = serde_json::from_str(line)?;
            if value.get("item").is_some() {
                lines += 1;
            } else {
                closing = Some(value);
            }
        }
        let closing = closing.context("an answer without its closing line")?;
        from = closing["next"].as_u64().context("next")?;
        if from >= ITEMS {
            return Ok((bytes, lines));
        }
    }
}
