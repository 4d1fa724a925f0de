//! Runtime tests of the native agent: real `ostrich-agent` processes against the built
//! coordinator in workerd (wrangler dev), joined through a real invite link.
//!
//! The agent is built first with `cargo build -p agent`; the coordinator must already be built
//! (the harness says so if it is not). The cases run in order on one swarm: two agents compute
//! π(10^8); an agent killed while it holds a lease of π(2·10^9) loses nothing; the agents render
//! a Mandelbrot image and search SHA-256 nonces; the first agent is restarted from its state
//! file with a useless invite and resumes its device, and once the owner removes that device
//! the agent stops with exit code 2. The agents then run own workloads (the example modules
//! `cargo xtask examples` builds): 10,000 items of the Rust example beside a device that names
//! made-up outputs, and the broken module's 16 items. A last case joins with the owner key.

// ureq's error type is large; in test code that costs nothing worth boxing for.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use runtime_tests::agents::{build_agent, AgentProcess};
use runtime_tests::results::{all_results, expected_line, results, ResultsOf};
use runtime_tests::{
    get_bytes, http_agent, repo_root, run_case, short_timeouts, Wrangler, WsClient,
};
use shared_protocol::{
    Hello, HelloRole, JobResult, JobState, JobView, SwarmSnapshot, SwarmStats, ToClient,
    ToCoordinator, PROTOCOL_VERSION,
};

const SECOND: Duration = Duration::from_secs(1);

/// `SOCKETS_PER_GATEWAY` of this world.
const GATEWAY_SOCKETS: usize = 2;

/// The device id in a "welcomed … device <id> …" line.
fn device_id_of(line: &str) -> Result<String> {
    let mut words = line.split_whitespace();
    while let Some(word) = words.next() {
        if word == "device" {
            if let Some(id) = words.next() {
                let id = id.trim_matches(|c: char| !c.is_ascii_hexdigit());
                if id.len() == 32 {
                    return Ok(id.to_owned());
                }
            }
        }
    }
    bail!("no device id in '{line}'")
}

/// What the cases share: the runtime, the agent binary, the swarm and the agents alive.
struct World {
    wrangler: Wrangler,
    bin: PathBuf,
    dir: PathBuf,
    swarm_id: String,
    owner_key: String,
    token: String,
    /// The surviving agent of the job case and its state file and device id.
    survivor: Option<(AgentProcess, PathBuf, String)>,
    /// The restarted survivor, for the removal case.
    resumed: Option<(AgentProcess, String)>,
    /// Other agents to kill at the end.
    others: Vec<AgentProcess>,
}

impl World {
    /// Where this swarm's results are read.
    fn results(&self) -> ResultsOf {
        ResultsOf {
            base: self.wrangler.base.clone(),
            swarm_id: self.swarm_id.clone(),
            owner_key: self.owner_key.clone(),
        }
    }

    fn invite_link(&self) -> String {
        format!(
            "{}/join/{}#t={}",
            self.wrangler.base, self.swarm_id, self.token
        )
    }

    fn spawn_agent(&self, label: &str, link: &str, state: &Path) -> Result<AgentProcess> {
        let args = [
            link.to_owned(),
            "--cores".into(),
            "2".into(),
            "--name".into(),
            format!("test agent {label}"),
            "--state".into(),
            state.display().to_string(),
        ];
        AgentProcess::spawn(&self.bin, label, &args)
    }

    fn owner(&self, body: serde_json::Value) -> Result<serde_json::Value> {
        let resp = http_agent()
            .post(&format!(
                "{}/api/swarms/{}/owner",
                self.wrangler.base, self.swarm_id
            ))
            .set("authorization", &format!("Bearer {}", self.owner_key))
            .send_string(&body.to_string())
            .with_context(|| format!("owner command {body}"))?;
        Ok(resp.into_json()?)
    }

    /// The token of a new invite to the world's swarm, valid for an hour and any number of uses.
    fn unlimited_invite(&self) -> Result<String> {
        let invite = self.owner(serde_json::json!({
            "command": "create_invite", "ttl_ms": 3_600_000, "max_uses": null
        }))?;
        Ok(invite["token"]
            .as_str()
            .context("no token in the invite")?
            .to_owned())
    }

    /// The object's counters and where its sockets are.
    fn stats(&self) -> Result<SwarmStats> {
        Ok(http_agent()
            .get(&format!(
                "{}/api/swarms/{}/stats",
                self.wrangler.base, self.swarm_id
            ))
            .set("authorization", &format!("Bearer {}", self.owner_key))
            .call()?
            .into_json()?)
    }

    /// Leases answered so far by the agents not killed on purpose (labelled "doomed…").
    fn answered_by_living(&self) -> usize {
        self.survivor
            .iter()
            .map(|(agent, _, _)| agent)
            .chain(&self.others)
            .filter(|agent| !agent.label.starts_with("doomed"))
            .map(|agent| agent.lines().iter().filter(|l| is_chunk(l)).count())
            .sum()
    }

    /// Submits a job (its spec as JSON) over HTTP; returns its id.
    fn submit(&self, job: serde_json::Value) -> Result<String> {
        let submitted = self.owner(serde_json::json!({"command": "submit_job", "job": job}))?;
        Ok(submitted["job_id"]
            .as_str()
            .with_context(|| format!("no job id in {submitted}"))?
            .to_owned())
    }

    /// Polls the job until it is done or `timeout` passes; returns its last view.
    fn await_job(&self, job_id: &str, timeout: Duration) -> Result<JobView> {
        runtime_tests::await_job(&self.wrangler.base, &self.swarm_id, job_id, timeout)
    }

    /// One snapshot as the owner's dashboard sees it.
    fn snapshot(&self) -> Result<SwarmSnapshot> {
        let mut dash = WsClient::connect(&self.wrangler.ws_url(&self.swarm_id))?;
        dash.send(&ToCoordinator::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            role: HelloRole::Dashboard {
                owner_key: Some(self.owner_key.clone()),
            },
        }))?;
        let snap = dash.recv_until(6 * SECOND, |m| match m {
            ToClient::Snapshot(s) => Some(s.clone()),
            _ => None,
        })?;
        dash.close();
        Ok(snap)
    }

    /// The device named `name` as the owner sees it, once `ready` holds for it (within 10 s).
    fn wait_for_device(
        &self,
        name: &str,
        ready: impl Fn(&shared_protocol::DeviceView) -> bool,
    ) -> Result<shared_protocol::DeviceView> {
        let deadline = Instant::now() + 10 * SECOND;
        loop {
            let device = self
                .snapshot()?
                .devices
                .into_iter()
                .find(|d| d.name == name);
            match device {
                Some(device) if ready(&device) => return Ok(device),
                _ if Instant::now() > deadline => {
                    bail!("device {name:?} is not as awaited after 10 s: {device:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
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
    println!("agent built in {:.1?}", started.elapsed());
    let dir = root
        .join("target/tmp")
        .join(format!("agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Two sockets on the swarm's object and two on each gateway: from the third socket on,
    // every case runs through gateway objects.
    let mut vars = short_timeouts();
    vars.push(("SOCKETS_PER_GATEWAY".into(), GATEWAY_SOCKETS.to_string()));
    let world = Wrangler::start_anywhere(&dir.join("persist"), vars).and_then(|wrangler| {
        std::fs::create_dir_all(&dir)?;
        let created = wrangler.create_swarm("agents")?;
        let mut world = World {
            wrangler,
            bin,
            dir: dir.clone(),
            swarm_id: created.swarm_id,
            owner_key: created.owner_key,
            token: String::new(),
            survivor: None,
            resumed: None,
            others: Vec::new(),
        };
        world.token = world.unlimited_invite()?;
        Ok(world)
    });
    let mut world = match world {
        Ok(world) => world,
        Err(err) => {
            eprintln!("could not start the runtime: {err:#}");
            println!("0 passed, 1 failed");
            std::process::exit(1);
        }
    };
    println!("runtime up after {:.1?}", started.elapsed());
    type Case = (&'static str, fn(&mut World) -> Result<()>);
    let cases: &[Case] = &[
        ("two agents compute π(10^8)", two_agents_count_primes),
        (
            "an agent killed while computing a lease loses nothing",
            agent_killed_while_computing,
        ),
        (
            "agents render a Mandelbrot PNG identical to a native render, and find SHA-256 nonces",
            image_and_nonces,
        ),
        (
            "a restarted agent resumes its device from the state file, without an invite",
            restart_resumes_the_device,
        ),
        (
            "an agent whose device was removed stops with exit code 2",
            removed_device_stops_the_agent,
        ),
        (
            "agents run a workload over 10,000 items, streamed in order and identical to a \
             native run, and catch a device naming made-up outputs",
            workload_on_agents,
        ),
        (
            "the broken workload's items fail with their named kinds and the job completes",
            broken_workload,
        ),
        (
            "the ostrich CLI submits a job, writes its results in order across lost \
             connections, and shows and cancels jobs",
            cli_submits_and_follows,
        ),
        (
            "the ostrich CLI runs a module over input files, JSON lines and length-prefixed",
            cli_runs_input_files,
        ),
        (
            "a swarm spread over gateway objects computes π(10^9) exactly, with devices on \
             every gateway",
            pi_over_gateways,
        ),
        ("an agent joins with the owner key", owner_key_join),
        (
            "an agent joins over wss:// and refuses a certificate it cannot verify",
            tls_join,
        ),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, case) in cases {
        if run_case(name, || case(&mut world)) {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    // Every agent first, then workerd.
    world.survivor = None;
    world.resumed = None;
    world.others.clear();
    if failed > 0 {
        eprintln!("--- wrangler output ---\n{}", world.wrangler.log());
    }
    world.wrangler.stop();
    let _ = std::fs::remove_dir_all(&dir);
    println!("\nagent tests took {:.1?}", started.elapsed());
    println!("{passed} passed, {failed} failed");
    std::process::exit(i32::from(failed > 0));
}

fn is_welcome(line: &str) -> bool {
    line.starts_with("welcomed")
}

fn is_chunk(line: &str) -> bool {
    line.starts_with("chunk done")
}

fn two_agents_count_primes(world: &mut World) -> Result<()> {
    let link = world.invite_link();
    let steady_state = world.dir.join("steady.json");
    let other_state = world.dir.join("other.json");
    let mut steady = world.spawn_agent("steady", &link, &steady_state)?;
    let mut other = world.spawn_agent("other", &link, &other_state)?;
    let welcome = steady.wait_for_line(20 * SECOND, is_welcome)?;
    let steady_id = device_id_of(&welcome)?;
    ensure!(welcome.contains("new device"), "{welcome}");
    other.wait_for_line(20 * SECOND, is_welcome)?;
    ensure!(
        steady_state.exists() && other_state.exists(),
        "the credentials were not saved"
    );

    let job_id = world.submit(serde_json::json!({
        "kind": "prime_count", "lo": 0, "hi": 100_000_000u64
    }))?;
    let submitted_at = Instant::now();
    let job = world.await_job(&job_id, Duration::from_secs(180))?;
    println!(
        "    job finished {:.1?} after the submit",
        submitted_at.elapsed()
    );
    ensure!(
        job.state == JobState::Done,
        "not done in 180 s: {job:?}\n{}",
        steady.output()
    );
    ensure!(
        job.result == JobResult::PrimeCount { count: 5_761_455 },
        "π(10^8): {job:?}"
    );
    ensure!(job.done_units == 100_000_000, "{job:?}");
    // Under a second of work may well be a single lease, to either agent.
    let answered = steady.lines().iter().filter(|l| is_chunk(l)).count();
    let answered_too = other.lines().iter().filter(|l| is_chunk(l)).count();
    ensure!(
        answered + answered_too > 0,
        "the agents printed no answered lease\n{}\n{}",
        steady.output(),
        other.output()
    );
    println!("    the agents answered {answered} and {answered_too} leases");
    world.others.push(other);
    world.survivor = Some((steady, steady_state, steady_id));
    Ok(())
}

/// π(10^8) is well under a second of work, often a single lease, so killing an agent during
/// it proves little. Here an agent holds a lease it will never answer, on a job big enough to
/// run for seconds, and is then killed: the job can only finish if the coordinator hands that
/// lease to another. The agent is stopped (SIGSTOP) before the job is submitted, so it cannot
/// answer its leases however small they are or however late the kill comes.
fn agent_killed_while_computing(world: &mut World) -> Result<()> {
    ensure!(
        world.survivor.is_some(),
        "no surviving agent from the job case"
    );
    let before = world.answered_by_living();
    let mut doomed = world.spawn_agent(
        "doomed-2",
        &world.invite_link(),
        &world.dir.join("doomed-2.json"),
    )?;
    doomed.wait_for_line(20 * SECOND, is_welcome)?;
    doomed.wait_for_line(20 * SECOND, |l| l.starts_with("benchmark done"))?;
    const DOOMED: &str = "test agent doomed-2";
    // The agent prints its benchmark before it sends it: wait until the coordinator has it,
    // or the stopped agent would be given no work.
    world.wait_for_device(DOOMED, |d| d.score.is_some())?;
    // The other agents are disabled while the job starts, so the first leases must go to the
    // doomed one; they are enabled again once it is killed.
    let others: Vec<String> = world
        .snapshot()?
        .devices
        .into_iter()
        .filter(|d| d.status == shared_protocol::DeviceStatus::Online && d.name != DOOMED)
        .map(|d| d.id)
        .collect();
    let enable = |world: &World, enabled: bool| -> Result<()> {
        for device_id in &others {
            world.owner(serde_json::json!({
                "command": "set_device_enabled", "device_id": device_id, "enabled": enabled
            }))?;
        }
        Ok(())
    };
    enable(world, false)?;
    doomed.pause()?;
    let submitted_at = Instant::now();
    let job_id = world
        .submit(serde_json::json!({"kind": "prime_count", "lo": 0, "hi": 2_000_000_000u64}))?;
    let held = world.wait_for_device(DOOMED, |d| d.in_flight > 0);
    doomed.kill();
    enable(world, true)?;
    let printed = doomed.lines();
    world.others.push(doomed);
    let held = held?;
    let answered = printed.iter().filter(|l| is_chunk(l)).count();
    println!(
        "    killed agent 'doomed-2' {:.1?} after the submit, holding {} leases; it had answered {answered}",
        submitted_at.elapsed(),
        held.in_flight
    );
    ensure!(
        answered == 0,
        "the stopped agent answered a lease\n{}",
        printed.join("\n")
    );
    let job = world.await_job(&job_id, Duration::from_secs(180))?;
    println!(
        "    job finished {:.1?} after the submit",
        submitted_at.elapsed()
    );
    ensure!(job.state == JobState::Done, "not done in 180 s: {job:?}");
    ensure!(
        job.result == JobResult::PrimeCount { count: 98_222_287 },
        "π(2·10^9): {job:?}"
    );
    ensure!(
        world.answered_by_living() > before,
        "the other agents computed nothing"
    );
    Ok(())
}

/// The agents still running (the survivor of the first case and any other) compute a
/// Mandelbrot job and a nonce search submitted over HTTP.
fn image_and_nonces(world: &mut World) -> Result<()> {
    let mut helper = world.spawn_agent(
        "helper",
        &world.invite_link(),
        &world.dir.join("helper.json"),
    )?;
    helper.wait_for_line(20 * SECOND, |l| l.starts_with("benchmark done"))?;
    world.others.push(helper);
    let image = serde_json::json!({
        "kind": "mandelbrot", "center_re": -0.1011, "center_im": 0.9563, "scale": 0.01,
        "width": 400, "height": 300, "max_iter": 2000
    });
    let job_id = world.submit(image)?;
    let job = world.await_job(&job_id, Duration::from_secs(120))?;
    ensure!(job.state == JobState::Done, "not done: {job:?}");
    let served = get_bytes(&format!(
        "{}/api/swarms/{}/jobs/{job_id}/image.png",
        world.wrangler.base, world.swarm_id
    ))?;
    let reference = kernels::mandelbrot::render_png(&kernels::mandelbrot::View {
        center_re: -0.1011,
        center_im: 0.9563,
        scale: 0.01,
        width: 400,
        height: 300,
        max_iter: 2000,
    });
    ensure!(
        served == reference,
        "the PNG differs from the native render"
    );

    let search = serde_json::json!({
        "kind": "sha256_search", "prefix": "ostrich legs", "difficulty_bits": 18,
        "lo": 0, "hi": 1u64 << 40, "want": 4
    });
    let job_id = world.submit(search)?;
    let job = world.await_job(&job_id, Duration::from_secs(120))?;
    ensure!(job.state == JobState::Done, "not done: {job:?}");
    let JobResult::Sha256Search { nonces } = &job.result else {
        bail!("{job:?}")
    };
    ensure!(nonces.len() == 4, "{nonces:?}");
    ensure!(
        nonces
            .iter()
            .all(|&n| kernels::sha256::meets_target(b"ostrich legs", n, 18)),
        "{nonces:?}"
    );
    println!(
        "    found nonces {nonces:?} after {} of the range",
        job.done_units
    );
    Ok(())
}

fn restart_resumes_the_device(world: &mut World) -> Result<()> {
    let (mut survivor, state, device_id) = world
        .survivor
        .take()
        .context("no surviving agent from the job case")?;
    survivor.kill();
    let devices_before = world.snapshot()?.device_total;
    // A link whose token is no invite at all: only the state file can get this agent in.
    let link = format!("{}/join/{}#t=bogus", world.wrangler.base, world.swarm_id);
    let mut agent = world.spawn_agent("resumed", &link, &state)?;
    let welcome = agent.wait_for_line(20 * SECOND, is_welcome)?;
    ensure!(
        welcome.contains("welcomed back") && welcome.contains("(resumed)"),
        "{welcome}"
    );
    ensure!(
        device_id_of(&welcome)? == device_id,
        "resumed as another device: {welcome}"
    );
    let deadline = Instant::now() + 10 * SECOND;
    let snap = loop {
        let snap = world.snapshot()?;
        let online = snap
            .devices
            .iter()
            .any(|d| d.id == device_id && d.status == shared_protocol::DeviceStatus::Online);
        if online || Instant::now() > deadline {
            break snap;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    ensure!(
        snap.device_total == devices_before,
        "registered anew instead of resuming: {} devices before, {} after",
        devices_before,
        snap.device_total
    );
    ensure!(
        snap.devices
            .iter()
            .any(|d| d.id == device_id && d.status == shared_protocol::DeviceStatus::Online),
        "the resumed device is not online: {:?}",
        snap.devices
    );
    world.resumed = Some((agent, device_id));
    Ok(())
}

fn removed_device_stops_the_agent(world: &mut World) -> Result<()> {
    let (mut agent, device_id) = world
        .resumed
        .take()
        .context("no resumed agent from the restart case")?;
    let reply = world.owner(serde_json::json!({
        "command": "remove_device", "device_id": device_id
    }))?;
    ensure!(reply["reply"] == "done", "{reply}");
    let status = agent.wait_exit(20 * SECOND)?;
    ensure!(
        status.code() == Some(2),
        "exit status {status}\n{}",
        agent.output()
    );
    let output = agent.output();
    ensure!(
        output.contains("refused by the coordinator: BadCredential"),
        "{output}"
    );
    world.others.push(agent);
    Ok(())
}

/// The coordinator behind a TLS front with a throwaway certificate authority: trusting that
/// CA (`--ca-file`), the agent joins over wss:// and computes its benchmark; without it, the
/// agent refuses the certificate and keeps retrying.
fn tls_join(world: &mut World) -> Result<()> {
    let front = runtime_tests::TlsFront::start(world.wrangler.port)?;
    let ca = world.dir.join("ca.pem");
    std::fs::write(&ca, &front.ca_pem)?;
    let coordinator = format!("https://localhost:{}", front.port);
    let spawn = |label: &str, extra: &[String]| {
        let mut args = vec![
            world.invite_link(),
            "--coordinator".into(),
            coordinator.clone(),
            "--cores".into(),
            "1".into(),
            "--state".into(),
            world
                .dir
                .join(format!("{label}.json"))
                .display()
                .to_string(),
        ];
        args.extend_from_slice(extra);
        AgentProcess::spawn(&world.bin, label, &args)
    };
    let mut trusting = spawn("tls", &["--ca-file".into(), ca.display().to_string()])?;
    let mut doubting = spawn("untrusting", &[])?;
    let connected = trusting.wait_for_line(20 * SECOND, |l| l.starts_with("connected to wss://"));
    let benchmarked = trusting.wait_for_line(20 * SECOND, |l| l.starts_with("benchmark done"));
    let refused = doubting.wait_for_line(20 * SECOND, |l| {
        l.starts_with("could not connect") && l.contains("certificate")
    });
    let (trusting_out, doubting_out) = (trusting.output(), doubting.output());
    world.others.push(trusting);
    world.others.push(doubting);
    connected.with_context(|| trusting_out.clone())?;
    benchmarked.with_context(|| trusting_out.clone())?;
    let refused = refused.with_context(|| doubting_out.clone())?;
    println!("    without the CA: {refused}");
    ensure!(
        !doubting_out.contains("welcomed"),
        "joined despite an unverifiable certificate\n{doubting_out}"
    );
    Ok(())
}

/// In this world the swarm's object holds two sockets and each gateway two more. On a swarm
/// of its own, six agents join one after another: the first two are placed on the swarm's
/// object, the next two on gateway 0 and the last two on gateway 1. Left idle, the swarm's
/// object is evicted; woken, it must know all six sockets again (four of them only from the
/// gateways). Then π(10^9) must come out exact with every agent answering leases and none
/// disconnected, so the results of four of them went through the gateways' batched calls.
fn pi_over_gateways(world: &mut World) -> Result<()> {
    let created = world.wrangler.create_swarm("gateways")?;
    let swarm_id = std::mem::replace(&mut world.swarm_id, created.swarm_id);
    let owner_key = std::mem::replace(&mut world.owner_key, created.owner_key);
    let token = std::mem::take(&mut world.token);
    let outcome = pi_on_six_agents(world);
    world.swarm_id = swarm_id;
    world.owner_key = owner_key;
    world.token = token;
    outcome
}

fn pi_on_six_agents(world: &mut World) -> Result<()> {
    world.token = world.unlimited_invite()?;
    let link = world.invite_link();
    let mut joined: Vec<AgentProcess> = Vec::new();
    for n in 0..6 {
        let state = world.dir.join(format!("gateway-{n}.json"));
        let mut agent = world.spawn_agent(&format!("gateway-{n}"), &link, &state)?;
        agent.wait_for_line(20 * SECOND, is_welcome)?;
        joined.push(agent);
    }
    let joined_stats = world.stats()?;
    ensure!(
        joined_stats.connections == 6 && joined_stats.gateways == [2, 2],
        "six sockets, two on the object and two on each gateway: {joined_stats:?}"
    );
    // The hello deadlines armed the alarm; once it has fired, nothing keeps the object awake.
    let deadline = Instant::now() + 15 * SECOND;
    while world.stats()?.alarm_at_ms.is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(20 * SECOND);
    let before = world.stats()?;
    ensure!(
        before.started_ms > joined_stats.started_ms,
        "the swarm's object never slept: {before:?}"
    );
    ensure!(
        before.connections == 6 && before.gateways == [2, 2],
        "the woken object lost sockets: {before:?}"
    );
    let job_id = world.submit(serde_json::json!({
        "kind": "prime_count", "lo": 0, "hi": 1_000_000_000u64
    }))?;
    let job = world.await_job(&job_id, Duration::from_secs(300));
    let answered: Vec<usize> = joined
        .iter()
        .map(|agent| agent.lines().iter().filter(|l| is_chunk(l)).count())
        .collect();
    let after = world.stats()?;
    world.others.extend(joined);
    let job = job?;
    ensure!(
        job.result == JobResult::PrimeCount { count: 50_847_534 },
        "π(10^9): {job:?}"
    );
    ensure!(
        after.started_ms == before.started_ms && after.gateways == [2, 2],
        "the object restarted or a socket moved during the job: {after:?}"
    );
    ensure!(
        answered.iter().all(|n| *n > 0),
        "leases answered by the six agents: {answered:?}"
    );
    let dropped: Vec<usize> = world.others[world.others.len() - 6..]
        .iter()
        .map(|agent| {
            agent
                .lines()
                .iter()
                .filter(|l| l.starts_with("disconnected"))
                .count()
        })
        .collect();
    ensure!(
        dropped.iter().all(|n| *n == 0),
        "disconnections of the six agents: {dropped:?}"
    );
    let calls = after
        .counters
        .gateway_calls
        .saturating_sub(before.counters.gateway_calls);
    let messages = after
        .counters
        .messages_in
        .saturating_sub(before.counters.messages_in);
    println!(
        "    leases answered by the agents on the object, gateway 0 and gateway 1: \
         {answered:?}; the object took {messages} device messages, those of gateway sockets in \
         {calls} batched calls"
    );
    Ok(())
}

fn owner_key_join(world: &mut World) -> Result<()> {
    let link = format!("{}/s/{}", world.wrangler.base, world.swarm_id);
    let args = [
        link,
        "--owner-key".into(),
        world.owner_key.clone(),
        "--cores".into(),
        "1".into(),
        "--state".into(),
        world.dir.join("owner.json").display().to_string(),
    ];
    let mut agent = AgentProcess::spawn(&world.bin, "owner", &args)?;
    let welcome = agent.wait_for_line(20 * SECOND, is_welcome);
    world.others.push(agent);
    let welcome = welcome?;
    ensure!(welcome.contains("new device"), "{welcome}");
    // The default name is used, since none was given.
    let id = device_id_of(&welcome)?;
    let snap = world.snapshot()?;
    let device = snap
        .devices
        .iter()
        .find(|d| d.id == id)
        .with_context(|| format!("device {id} not in the snapshot"))?;
    ensure!(device.name.starts_with("agent on "), "{}", device.name);
    ensure!(device.capabilities.cores == 1, "{:?}", device.capabilities);
    ensure!(
        device.capabilities.agent == shared_protocol::AgentClass::Native,
        "{:?}",
        device.capabilities
    );
    Ok(())
}

/// Uploads an example module (built by `cargo xtask examples`) for the swarm; its SHA-256.
fn upload_example(world: &World, name: &str) -> Result<(String, Vec<u8>)> {
    use sha2::{Digest, Sha256};
    let path = repo_root()
        .join("target/examples")
        .join(format!("{name}.wasm"));
    let bytes = std::fs::read(&path)
        .with_context(|| format!("{} (built by cargo xtask examples)", path.display()))?;
    let sha = workload::module::hex(&Sha256::digest(&bytes).into());
    http_agent()
        .put(&format!(
            "{}/api/swarms/{}/modules/{sha}",
            world.wrangler.base, world.swarm_id
        ))
        .set("authorization", &format!("Bearer {}", world.owner_key))
        .send_bytes(&bytes)
        .context("uploading the module")?;
    Ok((sha, bytes))
}

/// The Rust example over 10,000 seeds on the agents alive, with a device that names made-up
/// outputs files joined beside them. The results are read while the job runs, the stream is
/// dropped part way and resumed from the next item, and every line equals the native run.
fn workload_on_agents(world: &mut World) -> Result<()> {
    let result = run_workload_on_agents(world);
    if result.is_err() {
        // What the agents did with their leases (module fetches and uploads say why they
        // failed here).
        for agent in world
            .survivor
            .iter()
            .map(|(a, _, _)| a)
            .chain(&world.others)
        {
            let lines = agent.lines();
            let tail = lines
                .get(lines.len().saturating_sub(30)..)
                .unwrap_or_default();
            eprintln!(
                "--- the last lines of agent {} ---\n{}",
                agent.label,
                tail.join("\n")
            );
        }
    }
    result
}

fn run_workload_on_agents(world: &mut World) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (sha, bytes) = upload_example(world, "pi")?;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let liar = {
        let (ws_url, token, stop) = (
            world.wrangler.ws_url(&world.swarm_id),
            world.token.clone(),
            std::sync::Arc::clone(&stop),
        );
        std::thread::spawn(move || {
            runtime_tests::cheat::run(
                &ws_url,
                &token,
                "fast liar",
                runtime_tests::cheat::Model::FastLiar,
                7,
                &stop,
            )
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    const ITEMS: u64 = 10_000;
    let job_id = world.submit(serde_json::json!({
        "kind": "workload", "module": sha, "start": 1_000, "step": 3, "items": ITEMS,
        "time_limit_ms": 10_000
    }))?;
    let runner = workload::native::Runner::new().map_err(anyhow::Error::msg)?;
    let compiled = runner.compile(&bytes)?;
    let limit = Duration::from_secs(10);
    let check = |line: &str, item: u64| -> Result<()> {
        let got: serde_json::Value = serde_json::from_str(line)?;
        let want = expected_line(&runner, &compiled, item, 1_000 + 3 * item, limit);
        ensure!(got == want, "item {item}: got {got}, want {want}");
        Ok(())
    };
    // The first 100 items, and whether the job was still running when they arrived.
    let mut lines = results(&world.results(), &job_id, 0)?;
    let mut running_at_first = None;
    for item in 0..100 {
        let line = lines
            .next()
            .with_context(|| format!("the stream ended before item {item}"))?;
        if running_at_first.is_none() {
            running_at_first =
                Some(world.await_job(&job_id, Duration::ZERO)?.state == JobState::Running);
        }
        check(&line, item)?;
    }
    drop(lines);
    // Resumed from the next item, to the end.
    let (rest, answers) = all_results(&world.results(), &job_id, 100)?;
    ensure!(rest.len() as u64 == ITEMS - 100, "{} items", rest.len());
    for (item, line) in (100..).zip(&rest) {
        check(line, item)?;
    }
    ensure!(
        running_at_first == Some(true),
        "the first results arrived only after the job ended"
    );
    let job = world.await_job(&job_id, Duration::from_secs(60))?;
    ensure!(job.state == JobState::Done, "{job:?}");
    ensure!(job.result == JobResult::Workload { failed: 0 }, "{job:?}");
    stop.store(true, Ordering::Relaxed);
    let report = liar
        .join()
        .map_err(|_| anyhow::anyhow!("the liar's thread panicked"))??;
    ensure!(
        report.lies > 0 && report.closed == Some(shared_protocol::close_code::BAD_RESULT),
        "the liar was not caught: {report:?}"
    );
    println!(
        "    10,000 items match the native run (read in {} answers); the liar told {} lies and was closed",
        answers + 1,
        report.lies
    );
    Ok(())
}

/// Each way of breaking of `examples/broken.wat` (chosen by the input's first byte) fails its
/// item with the kind the native runner names, and the job completes.
fn broken_workload(world: &mut World) -> Result<()> {
    let (sha, bytes) = upload_example(world, "broken")?;
    let job_id = world.submit(serde_json::json!({
        "kind": "workload", "module": sha, "start": 0, "step": 1, "items": 16,
        "time_limit_ms": 300
    }))?;
    let job = world.await_job(&job_id, Duration::from_secs(60))?;
    ensure!(job.state == JobState::Done, "{job:?}");
    let runner = workload::native::Runner::new().map_err(anyhow::Error::msg)?;
    let compiled = runner.compile(&bytes)?;
    let mut failed = 0;
    let mut kinds = Vec::new();
    let (lines, _) = all_results(&world.results(), &job_id, 0)?;
    ensure!(lines.len() == 16, "{} items", lines.len());
    for (item, line) in (0u64..).zip(lines) {
        let got: serde_json::Value = serde_json::from_str(&line)?;
        let want = expected_line(&runner, &compiled, item, item, Duration::from_millis(300));
        ensure!(got == want, "item {item}: got {got}, want {want}");
        if let Some(kind) = got["error"]["kind"].as_str() {
            failed += 1;
            kinds.push(kind.to_owned());
        }
    }
    ensure!(kinds.len() == 14, "{kinds:?}");
    ensure!(job.result == JobResult::Workload { failed }, "{job:?}");
    println!("    items failed as {}", kinds.join(", "));
    Ok(())
}

/// `ostrich submit` through a proxy that cuts its first two long answers mid-line: the
/// results file still holds every item once, in order, equal to the native run. `status`
/// and `cancel` act on a second job, and `results` of the cancelled job says so.
fn cli_submits_and_follows(world: &mut World) -> Result<()> {
    let ostrich = runtime_tests::agents::build_binary(&repo_root(), "ostrich-cli", "ostrich")?;
    let proxy = runtime_tests::CuttingProxy::start(world.wrangler.port, 40_000, 2)?;
    let swarm_url = format!("http://127.0.0.1:{}/s/{}", proxy.port, world.swarm_id);
    let modules = repo_root().join("target/examples");
    let run = |args: &[&str]| -> Result<std::process::Output> {
        Ok(std::process::Command::new(&ostrich)
            .arg("--swarm")
            .arg(&swarm_url)
            .args(args)
            .env("OSTRICH_OWNER_KEY", &world.owner_key)
            .output()?)
    };
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let out = world.dir.join("collatz.ndjson");
    let collatz = modules.join("collatz.wasm");
    let submitted = run(&[
        "submit",
        "--module",
        &collatz.display().to_string(),
        "--range",
        "1..6001",
        "--time-limit-ms",
        "5000",
        "--out",
        &out.display().to_string(),
    ])?;
    let stderr = text(&submitted.stderr);
    ensure!(submitted.status.success(), "submit failed: {stderr}");
    ensure!(
        proxy.cut() == 2,
        "{} connections cut\n{stderr}",
        proxy.cut()
    );
    ensure!(stderr.contains("resuming from item"), "{stderr}");
    let runner = workload::native::Runner::new().map_err(anyhow::Error::msg)?;
    let compiled = runner.compile(&std::fs::read(&collatz)?)?;
    let written = std::fs::read_to_string(&out)?;
    let lines: Vec<&str> = written.lines().collect();
    ensure!(lines.len() == 6_000, "{} lines", lines.len());
    for (item, line) in (0u64..).zip(&lines) {
        let got: serde_json::Value = serde_json::from_str(line)?;
        let want = expected_line(&runner, &compiled, item, item + 1, 5 * SECOND);
        ensure!(got == want, "item {item}: got {got}, want {want}");
    }
    let job_id = stderr
        .split_whitespace()
        .skip_while(|w| *w != "job")
        .nth(1)
        .context("no job id on stderr")?
        .to_owned();
    let status = run(&["status", &job_id])?;
    ensure!(
        text(&status.stdout).starts_with("done: 6000 of 6000 items"),
        "{}",
        text(&status.stdout)
    );

    // A long job, submitted without waiting, then cancelled.
    let pi = modules.join("pi.wasm");
    let long = run(&[
        "submit",
        "--module",
        &pi.display().to_string(),
        "--range",
        "0..1000000",
        "--no-wait",
    ])?;
    ensure!(long.status.success(), "{}", text(&long.stderr));
    let long_id = text(&long.stdout).trim().to_owned();
    ensure!(run(&["cancel", &long_id])?.status.success());
    let status = text(&run(&["status", &long_id])?.stdout);
    ensure!(status.starts_with("cancelled: "), "{status}");
    let results = run(&["results", &long_id])?;
    ensure!(
        !results.status.success(),
        "results of a cancelled job end in an error"
    );
    ensure!(
        text(&results.stderr).contains("the job was cancelled"),
        "{}",
        text(&results.stderr)
    );
    println!("    6,000 items written in order across 2 cut connections; status and cancel work");
    Ok(())
}

/// Jobs over input sets from the CLI, computed by the agents: 3,000 JSON lines echoed by the
/// broken module (any input it does not break on comes back), and 2,000 length-prefixed
/// integers through collatz, each result equal to the native run of its input.
fn cli_runs_input_files(world: &mut World) -> Result<()> {
    use base64::Engine as _;
    let ostrich = runtime_tests::agents::build_binary(&repo_root(), "ostrich-cli", "ostrich")?;
    let swarm_url = format!("{}/s/{}", world.wrangler.base, world.swarm_id);
    let modules = repo_root().join("target/examples");
    let submit = |module: &str, inputs: &std::path::Path, out: &std::path::Path| {
        let done = std::process::Command::new(&ostrich)
            .args(["--swarm", &swarm_url, "submit", "--module"])
            .arg(modules.join(module))
            .arg("--inputs")
            .arg(inputs)
            .args(["--time-limit-ms", "5000", "--out"])
            .arg(out)
            .env("OSTRICH_OWNER_KEY", &world.owner_key)
            .output()?;
        let stderr = String::from_utf8_lossy(&done.stderr).into_owned();
        ensure!(done.status.success(), "submit failed: {stderr}");
        ensure!(stderr.contains("input pages stored"), "{stderr}");
        let written = std::fs::read_to_string(out)?;
        written
            .lines()
            .map(|line| Ok(serde_json::from_str::<serde_json::Value>(line)?))
            .collect::<Result<Vec<_>>>()
    };
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);

    let lines: Vec<String> = (0..3_000)
        .map(|i| format!("{{\"n\": {i}, \"name\": \"item {i}\"}}"))
        .collect();
    let ndjson = world.dir.join("items.ndjson");
    std::fs::write(&ndjson, lines.join("\n") + "\n\n")?;
    let got = submit("broken.wasm", &ndjson, &world.dir.join("echo.ndjson"))?;
    ensure!(got.len() == 3_000, "{} lines", got.len());
    for (item, (got, line)) in got.iter().zip(&lines).enumerate() {
        let json: serde_json::Value = serde_json::from_str(line)?;
        let want = serde_json::json!({"item": item, "output": b64(line.as_bytes()), "json": json});
        ensure!(*got == want, "item {item}: got {got}, want {want}");
    }

    let numbers: Vec<[u8; 8]> = (1..=2_000u64).map(u64::to_le_bytes).collect();
    let binary = world.dir.join("numbers.bin");
    std::fs::write(
        &binary,
        workload::inputs::encode(numbers.iter().map(|n| n.as_slice())),
    )?;
    let got = submit(
        "collatz.wasm",
        &binary,
        &world.dir.join("collatz-set.ndjson"),
    )?;
    ensure!(got.len() == 2_000, "{} lines", got.len());
    let runner = workload::native::Runner::new().map_err(anyhow::Error::msg)?;
    let compiled = runner.compile(&std::fs::read(modules.join("collatz.wasm"))?)?;
    for (item, got) in (0u64..).zip(&got) {
        let mut want = expected_line(&runner, &compiled, item, item + 1, 5 * SECOND);
        if let Some(fields) = want.as_object_mut() {
            fields.remove("input");
        }
        ensure!(*got == want, "item {item}: got {got}, want {want}");
    }
    Ok(())
}
