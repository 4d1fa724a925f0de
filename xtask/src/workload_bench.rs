//! The workload table of `cargo xtask bench workload`: the example `pi` (100,000 samples per
//! item) over a range of items, run directly on the native runner and on the swarm by real
//! `ostrich-agent` processes (release builds) or by a browser device (headless Chromium, through
//! `xtask/browser-device.mjs`) against the built coordinator in `wrangler dev`.
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
    for devices in [
        Devices::Agents(1),
        Devices::Agents(2),
        Devices::Chromium(1),
        Devices::Chromium(2),
    ] {
        eprintln!("xtask: workload on {}", devices.what());
        match swarm_row(&wrangler, &agent_bin, &pi, devices, &persist) {
            Ok(row) => rows.push(row),
            Err(err) => eprintln!("the row of {} failed: {err:#}", devices.what()),
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

/// Who computes a swarm row: agents of one core each, or one Chromium device of this many
/// cores (as `navigator.hardwareConcurrency` says).
#[derive(Clone, Copy)]
enum Devices {
    Agents(usize),
    Chromium(u16),
}

impl Devices {
    fn what(self) -> String {
        match self {
            Devices::Agents(n) => format!("{n} agent(s) × 1 core"),
            Devices::Chromium(cores) => format!("1 Chromium device × {cores} core(s)"),
        }
    }
}

/// A browser device held open by `xtask/browser-device.mjs`; closed when dropped.
struct BrowserDevice {
    child: std::process::Child,
}

impl BrowserDevice {
    fn start(base: &str, swarm_id: &str, owner_key: &str, cores: u16) -> Result<Self> {
        use std::io::BufRead;
        let mut child = std::process::Command::new("node")
            .arg(crate::root().join("xtask/browser-device.mjs"))
            .args([base, swarm_id, owner_key, &cores.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("starting node xtask/browser-device.mjs")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let device = Self { child };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(line) if line == "device ready" => return Ok(device),
                Ok(_) => {}
                Err(err) => bail!("the browser device never got ready: {err}"),
            }
        }
    }
}

impl Drop for BrowserDevice {
    /// Closing its standard input closes the browser; it is killed if it has not exited
    /// within 10 s.
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn swarm_row(
    w: &Wrangler,
    agent_bin: &std::path::Path,
    pi: &[u8],
    devices: Devices,
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
    // The owner's own devices: their results are not replicated, so the row measures the
    // work once (an untrusted swarm computes some of it twice until devices earn trust).
    let link = format!("{}/s/{}", w.base, created.swarm_id);
    let mut running = Vec::new();
    let mut browser = None;
    let agents = match devices {
        Devices::Agents(n) => n,
        Devices::Chromium(cores) => {
            browser = Some(BrowserDevice::start(
                &w.base,
                &created.swarm_id,
                &key,
                cores,
            )?);
            0
        }
    };
    for i in 0..agents {
        let state = dir.join(format!("agent-{}-{i}.json", created.swarm_id));
        let args = [
            link.clone(),
            "--owner-key".into(),
            key.clone(),
            "--cores".into(),
            "1".into(),
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
    drop(browser);
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
        what: format!("{} on the swarm", devices.what()),
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
