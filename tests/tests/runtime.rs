//! Integration tests against the real runtime: the built coordinator in workerd (wrangler dev)
//! on a free loopback port, real HTTP and real WebSockets.
//!
//! One workerd is shared by most cases (each creates its own swarm); the restart case starts
//! its own. Timeouts are shortened with `--var` (heartbeat 1 s, OFFLINE after 4 s); the
//! broadcast interval stays the product's 2 s.

// ureq's error type is large; in test code that costs nothing worth boxing for.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use runtime_tests::{
    await_job, get_bytes, http_agent, run_case, short_timeouts, Received, Wrangler, WsClient,
};
use shared_protocol::{
    close_code, AgentClass, Capabilities, ChunkAnswer, Counters, DeviceCredential, DeviceStatus,
    ErrorCode, Hello, HelloRole, HttpError, JobResult, JobSpec, JobState, JobView, JoinProof,
    OwnerCommand, OwnerReply, SwarmInfo, SwarmSnapshot, SwarmStats, ToClient, ToCoordinator,
    WelcomeRole, Work, WorkResult, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
};

const SECOND: Duration = Duration::from_secs(1);

type Case = (&'static str, fn(&Wrangler) -> Result<()>);

fn main() {
    let cases: &[Case] = &[
        ("health and swarm creation over HTTP", http_api),
        (
            "devices register and appear in dashboard snapshots",
            devices_register,
        ),
        (
            "snapshots arrive every 2 s, driven by the alarm",
            snapshot_cadence,
        ),
        (
            "a protocol 3 dashboard gets deltas that rebuild what a protocol 2 dashboard is sent",
            deltas_rebuild_the_snapshot,
        ),
        (
            "a silent device goes OFFLINE and is closed",
            offline_detection,
        ),
        (
            "heartbeats cause no storage writes",
            heartbeats_do_not_write,
        ),
        (
            "malformed and unknown messages are refused and change nothing",
            bad_messages,
        ),
        (
            "an oversized message closes the socket with 1009",
            oversized_message,
        ),
        (
            "the alarm stops when the last socket leaves",
            no_alarm_when_idle,
        ),
        (
            "connected idle devices with no dashboard and no job arm no alarm for a minute",
            idle_devices_let_the_object_sleep,
        ),
        ("a socket from a foreign origin is refused", origin_check),
        ("an unknown swarm refuses the upgrade", unknown_swarm),
        (
            "the 6th invite in a window is refused, and allowed after it",
            invites_are_rate_limited,
        ),
        (
            "expired, revoked and used-up invites are refused",
            invites_expire_are_revoked_and_run_out,
        ),
        (
            "devices join by link token, by short code and with the owner key",
            devices_join_by_link_and_by_code,
        ),
        (
            "a removed device cannot reconnect",
            removed_device_cannot_reconnect,
        ),
        (
            "every owner action needs the owner key",
            owner_actions_need_the_owner_key,
        ),
        (
            "devices compute π(10^8) through leases, and a device leaving mid-job loses nothing",
            prime_job,
        ),
        (
            "a Mandelbrot job through workerd serves the native render as PNG",
            mandelbrot_job,
        ),
        (
            "leases: quota, foreign and repeated results, adaptive chunks, run state, throttle, expiry",
            lease_rules,
        ),
        (
            "a wrong benchmark answer is refused and disconnects",
            benchmark_is_checked,
        ),
        (
            "guessing short codes is rate limited",
            code_guessing_is_rate_limited,
        ),
        (
            "workload modules: only the owner stores them, checked, once, in R2, and gets back what devices run",
            workload_modules,
        ),
        (
            "the ostrich CLI checks a module, uploads it once, and says why the swarm refuses",
            cli_uploads_a_module,
        ),
        (
            "a lease's ticket opens its module and the upload of its outputs, and nothing else",
            lease_tickets_for_workloads,
        ),
        (
            "an input set is stored in pages by the owner, and a lease's ticket reads its items",
            input_sets_for_workloads,
        ),
    ];
    let root = runtime_tests::repo_root();
    let persist = root
        .join("target/tmp")
        .join(format!("runtime-{}", std::process::id()));
    let mut wrangler = match Wrangler::start_anywhere(&persist, short_timeouts()) {
        Ok(w) => w,
        Err(err) => {
            eprintln!("could not start the runtime: {err:#}");
            println!("0 passed, 1 failed");
            std::process::exit(1);
        }
    };
    let (mut passed, mut failed) = (0, 0);
    let mut run = |name: &str, f: &dyn Fn() -> Result<()>| {
        if run_case(name, f) {
            passed += 1;
        } else {
            failed += 1;
        }
    };
    // `OSTRICH_CASE=text` runs only the cases whose name holds the text (while working on one).
    let only = std::env::var("OSTRICH_CASE").ok();
    let chosen = |name: &str| only.as_deref().is_none_or(|text| name.contains(text));
    for (name, case) in cases {
        if chosen(name) {
            run(name, &|| case(&wrangler));
        }
    }
    let restart = "the registry survives a restart of the runtime";
    if chosen(restart) {
        run(restart, &registry_survives_restart);
    }
    if failed > 0 {
        eprintln!("--- wrangler output ---\n{}", wrangler.log());
    }
    wrangler.stop();
    let _ = std::fs::remove_dir_all(persist);
    println!("\n{passed} passed, {failed} failed");
    std::process::exit(i32::from(failed > 0));
}

// ---------- helpers ----------

/// A swarm created over HTTP, with an unlimited invite for its devices.
struct TestSwarm {
    swarm_id: String,
    owner_key: String,
    token: String,
}

fn new_swarm(w: &Wrangler, name: &str) -> Result<TestSwarm> {
    let created = w.create_swarm(name)?;
    let mut swarm = TestSwarm {
        swarm_id: created.swarm_id,
        owner_key: created.owner_key,
        token: String::new(),
    };
    let command = OwnerCommand::CreateInvite {
        ttl_ms: Some(3_600_000),
        max_uses: None,
    };
    match owner_http(w, &swarm, &swarm.owner_key.clone(), &command)? {
        OwnerReply::InviteCreated { token, .. } => swarm.token = token,
        other => bail!("expected an invite, got {other:?}"),
    }
    Ok(swarm)
}

/// An owner command over HTTP with `key` as the bearer token.
fn owner_http_raw(
    w: &Wrangler,
    swarm: &TestSwarm,
    key: &str,
    command: &OwnerCommand,
) -> Result<ureq::Response, ureq::Error> {
    http_agent()
        .post(&format!("{}/api/swarms/{}/owner", w.base, swarm.swarm_id))
        .set("authorization", &format!("Bearer {key}"))
        .send_string(&shared_protocol::encode(command))
}

fn owner_http(
    w: &Wrangler,
    swarm: &TestSwarm,
    key: &str,
    command: &OwnerCommand,
) -> Result<OwnerReply> {
    Ok(owner_http_raw(w, swarm, key, command)?.into_json()?)
}

fn new_device_hello(name: &str, proof: JoinProof) -> ToCoordinator {
    ToCoordinator::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        role: HelloRole::Device {
            name: name.into(),
            capabilities: caps(),
            credential: None,
            invite: Some(proof),
        },
    })
}

fn caps() -> Capabilities {
    Capabilities {
        cores: 8,
        memory_mb: Some(16_384),
        gpu: false,
        agent: AgentClass::Native,
        workloads: true,
    }
}

fn device_hello(name: &str, credential: Option<DeviceCredential>) -> ToCoordinator {
    ToCoordinator::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        role: HelloRole::Device {
            name: name.into(),
            capabilities: caps(),
            credential,
            invite: None,
        },
    })
}

fn dashboard_hello(owner_key: Option<&str>) -> ToCoordinator {
    ToCoordinator::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        role: HelloRole::Dashboard {
            owner_key: owner_key.map(str::to_owned),
        },
    })
}

/// Connects and registers a new device; returns the socket and its credential.
/// Joins a device and answers its benchmark, as every real device does first.
fn join_device(
    w: &Wrangler,
    swarm: &TestSwarm,
    name: &str,
) -> Result<(WsClient, DeviceCredential)> {
    let (mut ws, credential) = join_unbenchmarked(w, swarm, name)?;
    let (lease_id, work) = next_benchmark(&mut ws)?;
    let result = client_compute::compute(&work).map_err(anyhow::Error::msg)?;
    ws.send(&ToCoordinator::ChunkResult {
        lease_id,
        result,
        compute_ms: 17,
        ticket: None,
    })?;
    Ok((ws, credential))
}

/// Joins one of the owner's own devices (with the owner key: its results are not replicated)
/// and answers its benchmark.
fn join_owned_device(w: &Wrangler, swarm: &TestSwarm, name: &str) -> Result<WsClient> {
    join_owned_device_with_id(w, swarm, name).map(|(ws, _)| ws)
}

/// [`join_owned_device`], with the device's id.
fn join_owned_device_with_id(
    w: &Wrangler,
    swarm: &TestSwarm,
    name: &str,
) -> Result<(WsClient, String)> {
    let mut ws = WsClient::connect(&w.ws_url(&swarm.swarm_id))?;
    ws.send(&new_device_hello(
        name,
        JoinProof::OwnerKey {
            owner_key: swarm.owner_key.clone(),
        },
    ))?;
    let device_id = match ws.recv_message(5 * SECOND)? {
        ToClient::Welcome {
            role: WelcomeRole::Device { device_id, .. },
            ..
        } => device_id,
        other => bail!("{name} was not welcomed: {other:?}"),
    };
    let (lease_id, work) = next_benchmark(&mut ws)?;
    let result = client_compute::compute(&work).map_err(anyhow::Error::msg)?;
    ws.send(&ToCoordinator::ChunkResult {
        lease_id,
        result,
        compute_ms: 17,
        ticket: None,
    })?;
    Ok((ws, device_id))
}

/// The benchmark lease a device gets after its welcome.
fn next_benchmark(ws: &mut WsClient) -> Result<(u64, Work)> {
    ws.recv_until(5 * SECOND, |m| match m {
        ToClient::Lease {
            lease_id,
            job_id,
            work,
            ..
        } if job_id == "benchmark" => Some((*lease_id, work.clone())),
        _ => None,
    })
}

/// Joins a device and leaves its benchmark unanswered.
fn join_unbenchmarked(
    w: &Wrangler,
    swarm: &TestSwarm,
    name: &str,
) -> Result<(WsClient, DeviceCredential)> {
    let mut ws = WsClient::connect(&w.ws_url(&swarm.swarm_id))?;
    ws.send(&new_device_hello(
        name,
        JoinProof::Token {
            token: swarm.token.clone(),
        },
    ))?;
    match ws.recv_message(5 * SECOND)? {
        ToClient::Welcome {
            role:
                WelcomeRole::Device {
                    credential: Some(c),
                    ..
                },
            ..
        } => Ok((ws, c)),
        other => bail!("expected a welcome with a credential, got {other:?}"),
    }
}

fn join_dashboard(w: &Wrangler, swarm: &TestSwarm) -> Result<WsClient> {
    let mut ws = WsClient::connect(&w.ws_url(&swarm.swarm_id))?;
    ws.send(&dashboard_hello(Some(&swarm.owner_key)))?;
    match ws.recv_message(5 * SECOND)? {
        ToClient::Welcome {
            role: WelcomeRole::Dashboard { owner: true },
            ..
        } => Ok(ws),
        other => bail!("expected an owner welcome, got {other:?}"),
    }
}

fn next_snapshot(ws: &mut WsClient, timeout: Duration) -> Result<SwarmSnapshot> {
    ws.recv_until(timeout, |m| match m {
        ToClient::Snapshot(s) => Some(s.clone()),
        _ => None,
    })
}

/// Waits for a snapshot satisfying `ok`, through several broadcast intervals.
fn snapshot_where(
    ws: &mut WsClient,
    timeout: Duration,
    ok: impl Fn(&SwarmSnapshot) -> bool,
) -> Result<SwarmSnapshot> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(
            !left.is_zero(),
            "no snapshot satisfied the condition within {timeout:?}"
        );
        let snap = next_snapshot(ws, left)?;
        if ok(&snap) {
            return Ok(snap);
        }
    }
}

fn status(snap: &SwarmSnapshot, device_id: &str) -> Option<DeviceStatus> {
    snap.devices
        .iter()
        .find(|d| d.id == device_id)
        .map(|d| d.status)
}

fn stats(w: &Wrangler, swarm: &TestSwarm) -> Result<SwarmStats> {
    let resp = http_agent()
        .get(&format!("{}/api/swarms/{}/stats", w.base, swarm.swarm_id))
        .set("authorization", &format!("Bearer {}", swarm.owner_key))
        .call()?;
    Ok(resp.into_json()?)
}

fn expect_error(ws: &mut WsClient, code: ErrorCode) -> Result<()> {
    match ws.recv_message(5 * SECOND)? {
        ToClient::Error { code: got, .. } if got == code => Ok(()),
        other => bail!("expected error {code:?}, got {other:?}"),
    }
}

/// An HTTP error answer's status and code.
fn http_error(result: Result<ureq::Response, ureq::Error>) -> Result<(u16, ErrorCode)> {
    match result {
        Err(ureq::Error::Status(status, resp)) => Ok((status, resp.into_json::<HttpError>()?.code)),
        Ok(resp) => bail!("expected an error, got {}", resp.status()),
        Err(err) => Err(err.into()),
    }
}

// ---------- cases ----------

fn http_api(w: &Wrangler) -> Result<()> {
    let health: serde_json::Value = http_agent()
        .get(&format!("{}/api/health", w.base))
        .call()?
        .into_json()?;
    ensure!(
        health == serde_json::json!({ "ok": true, "protocol": PROTOCOL_VERSION }),
        "{health}"
    );

    let swarm = new_swarm(w, "lab")?;
    ensure!(shared_protocol::is_id(&swarm.swarm_id, &()).is_ok());
    ensure!(shared_protocol::is_secret(&swarm.owner_key, &()).is_ok());
    let other = new_swarm(w, "lab")?;
    ensure!(other.swarm_id != swarm.swarm_id && other.owner_key != swarm.owner_key);

    let info: SwarmInfo = http_agent()
        .get(&format!("{}/api/swarms/{}", w.base, swarm.swarm_id))
        .call()?
        .into_json()?;
    ensure!(
        info.swarm_id == swarm.swarm_id && info.swarm_name == "lab",
        "{info:?}"
    );

    let post = |body: &str| {
        http_agent()
            .post(&format!("{}/api/swarms", w.base))
            .send_string(body)
    };
    ensure!(http_error(post(r#"{"name":""}"#))? == (400, ErrorCode::Invalid));
    ensure!(http_error(post("nonsense"))? == (400, ErrorCode::Malformed));
    ensure!(
        http_error(post(&format!(r#"{{"name":"{}"}}"#, "x".repeat(20_000))))?
            == (413, ErrorCode::TooLarge)
    );

    let get = |path: &str| http_agent().get(&format!("{}{path}", w.base)).call();
    ensure!(
        http_error(get(&format!("/api/swarms/{}", "0".repeat(32))))?
            == (404, ErrorCode::SwarmNotFound)
    );
    ensure!(http_error(get("/api/swarms/NOT-AN-ID"))? == (404, ErrorCode::SwarmNotFound));
    ensure!(http_error(get("/api/nothing"))? == (404, ErrorCode::NotFound));
    let stats_as_stranger = http_agent()
        .get(&format!("{}/api/swarms/{}/stats", w.base, swarm.swarm_id))
        .set("authorization", &format!("Bearer {}", other.owner_key))
        .call();
    ensure!(
        http_error(stats_as_stranger)? == (401, ErrorCode::BadOwnerKey),
        "another swarm's key is not this one's"
    );

    // The static client is served on the same origin, with client routes falling back to it.
    let page = get(&format!("/s/{}", swarm.swarm_id))?.into_string()?;
    ensure!(
        page.contains("client_dashboard") && page.contains("client_device"),
        "the SPA fallback serves index.html, which picks the page's bundle"
    );
    for bundle in ["client_dashboard", "client_device", "client_compute"] {
        let wasm = get(&format!("/pkg/{bundle}_bg.wasm"))?;
        ensure!(
            wasm.content_type() == "application/wasm",
            "{bundle} is served as wasm, not {}",
            wasm.content_type()
        );
    }
    Ok(())
}

fn devices_register(w: &Wrangler) -> Result<()> {
    let swarm = new_swarm(w, "registry")?;
    let mut dash = join_dashboard(w, &swarm)?;
    let mut devices = Vec::new();
    for i in 0..3 {
        devices.push(join_device(w, &swarm, &format!("device {i}"))?);
    }
    let snap = snapshot_where(&mut dash, 6 * SECOND, |s| s.online == 3)?;
    ensure!(
        snap.device_total == 3 && snap.swarm_name == "registry",
        "{snap:?}"
    );
    for (i, (_, cred)) in devices.iter().enumerate() {
        let row = snap
            .devices
            .iter()
            .find(|d| d.id == cred.device_id)
            .context("device listed")?;
        ensure!(row.name == format!("device {i}") && row.status == DeviceStatus::Online);
        ensure!(row.capabilities == caps());
    }
    ensure!(
        snap.log
            .iter()
            .filter(|e| e.text.contains("registered"))
            .count()
            == 3
    );

    // A device in another swarm is not listed here: swarms are isolated.
    let elsewhere = new_swarm(w, "elsewhere")?;
    let _other = join_device(w, &elsewhere, "stranger")?;
    let snap = next_snapshot(&mut dash, 3 * SECOND)?;
    ensure!(snap.device_total == 3, "{snap:?}");

    // Devices get no dashboard snapshots: over more than one broadcast interval a heartbeating
    // device receives only its acknowledgements.
    let (ws, _) = &mut devices[0];
    let until = Instant::now() + 5 * SECOND;
    while Instant::now() < until {
        ws.send(&ToCoordinator::Heartbeat { seen: None })?;
        let msg = ws.recv_message(2 * SECOND)?;
        ensure!(
            matches!(msg, ToClient::HeartbeatAck { .. }),
            "a device received {msg:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

fn snapshot_cadence(w: &Wrangler) -> Result<()> {
    let swarm = new_swarm(w, "cadence")?;
    let mut dash = join_dashboard(w, &swarm)?;
    let mut snaps = Vec::new();
    let mut arrivals = Vec::new();
    for _ in 0..5 {
        snaps.push(next_snapshot(&mut dash, 4 * SECOND)?);
        arrivals.push(Instant::now());
    }
    for pair in snaps.windows(2) {
        let gap = pair[1].now_ms - pair[0].now_ms;
        ensure!(
            (1_800..=2_400).contains(&gap),
            "snapshots {gap} ms apart on the coordinator's clock"
        );
        ensure!(pair[1].seq == pair[0].seq + 1, "seq increases by one");
    }
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        ensure!(
            gap > Duration::from_millis(1_500) && gap < Duration::from_millis(2_600),
            "arrived {gap:?} apart"
        );
    }
    Ok(())
}

fn deltas_rebuild_the_snapshot(w: &Wrangler) -> Result<()> {
    let swarm = new_swarm(w, "deltas")?;
    let mut devices = Vec::new();
    for name in ["one", "two", "three"] {
        devices.push(join_device(w, &swarm, name)?.0);
    }
    let mut v3 = join_dashboard(w, &swarm)?;
    let mut v2 = WsClient::connect(&w.ws_url(&swarm.swarm_id))?;
    v2.send(&ToCoordinator::Hello(Hello {
        protocol: OLDEST_PROTOCOL_VERSION,
        role: HelloRole::Dashboard { owner_key: None },
    }))?;
    ensure!(
        matches!(
            v2.recv_message(5 * SECOND)?,
            ToClient::Welcome { protocol: 2, .. }
        ),
        "a protocol 2 dashboard is welcomed in protocol 2"
    );
    let mut held = BTreeMap::new();
    let mut full = BTreeMap::new();
    for round in 0..6 {
        // Something changes between ticks: a device leaves, another heartbeats.
        if round == 3 {
            devices.pop().context("a device")?.close();
        }
        devices[0].send(&ToCoordinator::Heartbeat { seen: None })?;
        let snap = next_snapshot(&mut v3, 4 * SECOND)?;
        v3.send(&ToCoordinator::Heartbeat {
            seen: Some(snap.seq),
        })?;
        held.insert(snap.seq, snap);
        let snap = next_snapshot(&mut v2, 4 * SECOND)?;
        v2.send(&ToCoordinator::Heartbeat {
            seen: Some(snap.seq),
        })?;
        full.insert(snap.seq, snap);
    }
    ensure!(
        v3.deltas >= 4 && v2.deltas == 0,
        "deltas: {} to the protocol 3 dashboard, {} to the protocol 2 one",
        v3.deltas,
        v2.deltas
    );
    let mut compared = 0;
    for (seq, mine) in &held {
        let Some(exact) = full.get(seq) else { continue };
        compared += 1;
        for row in &exact.devices {
            let kept = mine
                .devices
                .iter()
                .find(|d| d.id == row.id)
                .with_context(|| format!("seq {seq}: row {} missing", row.id))?;
            let lag = row.last_seen_ms.saturating_sub(kept.last_seen_ms);
            ensure!(lag <= 25_000, "seq {seq}: last seen {lag} ms behind");
            let mut same = kept.clone();
            same.last_seen_ms = row.last_seen_ms;
            ensure!(&same == row, "seq {seq}: {same:?} != {row:?}");
        }
        let mut same = mine.clone();
        same.devices = exact.devices.clone();
        ensure!(&same == exact, "seq {seq}: {same:?} != {exact:?}");
    }
    ensure!(compared >= 4, "only {compared} snapshots in common");
    println!(
        "    {} deltas, {} bytes each on average",
        v3.deltas,
        v3.delta_bytes / v3.deltas.max(1)
    );
    Ok(())
}

fn offline_detection(w: &Wrangler) -> Result<()> {
    let swarm = new_swarm(w, "offline")?;
    let mut dash = join_dashboard(w, &swarm)?;
    let (mut silent, silent_cred) = join_device(w, &swarm, "silent")?;
    let (mut talker, talker_cred) = join_device(w, &swarm, "talker")?;
    let started = Instant::now();
    // The talker heartbeats every second; the silent one says nothing after its hello.
    let mut closed_after = None;
    while started.elapsed() < 9 * SECOND {
        talker.send(&ToCoordinator::Heartbeat { seen: None })?;
        ensure!(matches!(
            talker.recv_message(2 * SECOND)?,
            ToClient::HeartbeatAck { .. }
        ));
        if closed_after.is_none() {
            if let Ok(Received::Closed(code)) = silent.recv(Duration::from_millis(700)) {
                ensure!(
                    code == Some(close_code::HEARTBEAT_TIMEOUT),
                    "closed with {code:?}"
                );
                closed_after = Some(started.elapsed());
            }
        } else {
            std::thread::sleep(Duration::from_millis(700));
        }
    }
    let closed_after = closed_after.context("the silent device was never closed")?;
    // OFFLINE after 4 s without a heartbeat, noticed by the next 2 s alarm.
    ensure!(
        closed_after >= Duration::from_millis(3_500)
            && closed_after <= Duration::from_millis(7_000),
        "{closed_after:?}"
    );
    let snap = snapshot_where(&mut dash, 3 * SECOND, |s| s.seq > 1 && s.online == 1)?;
    ensure!(
        status(&snap, &silent_cred.device_id) == Some(DeviceStatus::Offline),
        "{snap:?}"
    );
    ensure!(
        status(&snap, &talker_cred.device_id) == Some(DeviceStatus::Online),
        "{snap:?}"
    );
    ensure!(snap
        .log
        .iter()
        .any(|e| e.text.contains("'silent' is OFFLINE")));
    Ok(())
}

fn heartbeats_do_not_write(w: &Wrangler) -> Result<()> {
    let swarm = new_swarm(w, "writes")?;
    let (mut device, _) = join_device(w, &swarm, "beater")?;
    let before = stats(w, &swarm)?.counters;
    for _ in 0..20 {
        device.send(&ToCoordinator::Heartbeat { seen: None })?;
        ensure!(matches!(
            device.recv_message(2 * SECOND)?,
            ToClient::HeartbeatAck { .. }
        ));
    }
    let after = stats(w, &swarm)?.counters;
    // The platform answers a device's plain heartbeat itself: the object never sees it.
    ensure!(
        after.messages_in == before.messages_in,
        "heartbeats reached the object: {before:?} → {after:?}"
    );
    // Rows: an alarm the swarm had armed before may fire meanwhile and re-arm (a write of its
    // own, counted in `alarm_writes`); the core tests show a heartbeat never arms it.
    let rows = |c: &Counters| c.storage_writes - c.alarm_writes;
    ensure!(
        rows(&after) == rows(&before),
        "heartbeats wrote: {before:?} → {after:?}"
    );
    Ok(())
}

/// Replays the shared corpus of bad messages (tests/corpus/bad_messages.json): each gets its
/// documented error, and the swarm is unchanged afterwards.
fn bad_messages(w: &Wrangler) -> Result<()> {
    let swarm = new_swarm(w, "hostile")?;
    let mut dash = join_dashboard(w, &swarm)?;
    let (mut device, cred) = join_device(w, &swarm, "victim")?;
    let before = snapshot_where(&mut dash, 5 * SECOND, |s| s.online == 1)?;
    // Rows written: the dashboard's ticks re-arm the alarm meanwhile (`alarm_writes`).
    let rows = |c: Counters| c.storage_writes - c.alarm_writes;
    let writes = rows(stats(w, &swarm)?.counters);
    let corpus: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        runtime_tests::repo_root().join("tests/corpus/bad_messages.json"),
    )?)?;
    let code_of = |case: &serde_json::Value| -> Result<ErrorCode> {
        Ok(serde_json::from_value(case["code"].clone())?)
    };
    let mut sent = 0;
    for case in corpus["after_hello"]
        .as_array()
        .context("after_hello cases")?
    {
        device.send_text(case["text"].as_str().context("text")?)?;
        expect_error(&mut device, code_of(case)?)
            .with_context(|| format!("case {}", case["name"]))?;
        sent += 1;
    }
    // The device is still connected and served.
    device.send(&ToCoordinator::Heartbeat { seen: None })?;
    ensure!(matches!(
        device.recv_message(2 * SECOND)?,
        ToClient::HeartbeatAck { .. }
    ));
    for case in corpus["as_hello"].as_array().context("as_hello cases")? {
        let mut socket = WsClient::connect(&w.ws_url(&swarm.swarm_id))?;
        socket.send_text(case["text"].as_str().context("text")?)?;
        expect_error(&mut socket, code_of(case)?)
            .with_context(|| format!("case {}", case["name"]))?;
        ensure!(
            socket.recv_close(3 * SECOND)? == Some(close_code::POLICY),
            "case {} was not closed",
            case["name"]
        );
        sent += 1;
    }
    let mut forger = WsClient::connect(&w.ws_url(&swarm.swarm_id))?;
    forger.send(&device_hello(
        "forger",
        Some(DeviceCredential {
            device_id: cred.device_id.clone(),
            secret: "f".repeat(43),
        }),
    ))?;
    expect_error(&mut forger, ErrorCode::BadCredential)?;
    sent += 1;

    let after = snapshot_where(&mut dash, 3 * SECOND, |s| s.seq > before.seq)?;
    // Everything but the heartbeat time is as before.
    let shape = |s: &SwarmSnapshot| {
        s.devices
            .iter()
            .map(|d| {
                (
                    d.id.clone(),
                    d.name.clone(),
                    d.status,
                    d.enabled,
                    d.registered_ms,
                )
            })
            .collect::<Vec<_>>()
    };
    ensure!(
        shape(&after) == shape(&before),
        "state changed: {:?} → {:?}",
        before.devices,
        after.devices
    );
    ensure!(
        after.device_total == 1
            && after.run_state == before.run_state
            && after.throttle_percent == before.throttle_percent
    );
    ensure!(
        after.counters.rejected >= before.counters.rejected + sent,
        "{:?}",
        after.counters
    );
    // The one write: the corpus's wrong short code is stored, so the guessing limit holds
    // across a restart.
    let guessed_codes = corpus["as_hello"]
        .as_array()
        .context("as_hello cases")?
        .iter()
        .filter(|case| case["name"] == "guessed code")
        .count() as u64;
    ensure!(
        rows(stats(w, &swarm)?.counters) == writes + guessed_codes,
        "a refused message wrote to storage"
    );
    let OwnerReply::Audit { entries } =
        owner_http(w, &swarm, &swarm.owner_key, &OwnerCommand::AuditLog {})?
    else {
        bail!("expected the audit log")
    };
    // The audit log keeps the newest events of each kind and counts the others in one line.
    let counted: u64 = entries
        .iter()
        .map(|e| match e.text.split_once(" more event(s) of kind") {
            Some((n, _)) => n.parse::<u64>().unwrap_or(0),
            None => 1,
        })
        .sum();
    ensure!(
        counted >= sent,
        "security events in the audit log: {counted} of {sent}"
    );
    ensure!(
        !entries
            .iter()
            .any(|e| e.text.contains(&"f".repeat(43)) || e.text.contains(&swarm.token)),
        "a secret reached the log"
    );
    Ok(())
}

fn oversized_message(w: &Wrangler) -> Result<()> {
    let swarm = new_swarm(w, "big")?;
    let (mut device, _) = join_device(w, &swarm, "big mouth")?;
    device.send_text(&format!(
        r#"{{"type":"heartbeat","pad":"{}"}}"#,
        "x".repeat(20_000)
    ))?;
    expect_error(&mut device, ErrorCode::TooLarge)?;
    ensure!(device.recv_close(3 * SECOND)? == Some(close_code::TOO_BIG));
    Ok(())
}

fn no_alarm_when_idle(w: &Wrangler) -> Result<()> {
    let swarm = new_swarm(w, "idle")?;
    ensure!(
        stats(w, &swarm)?.alarm_at_ms.is_none(),
        "an alarm before anyone connected"
    );
    let dash = join_dashboard(w, &swarm)?;
    let (device, _) = join_device(w, &swarm, "leaver")?;
    let live = stats(w, &swarm)?;
    ensure!(
        live.connections == 2 && live.alarm_at_ms.is_some(),
        "{live:?}"
    );
    dash.close();
    device.close();
    let deadline = Instant::now() + 5 * SECOND;
    let idle = loop {
        let s = stats(w, &swarm)?;
        if s.connections == 0 || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    ensure!(
        idle.connections == 0 && idle.alarm_at_ms.is_none(),
        "still armed after everyone left: {idle:?}"
    );
    let alarms = idle.counters.alarms;
    std::thread::sleep(5 * SECOND);
    let later = stats(w, &swarm)?;
    ensure!(later.alarm_at_ms.is_none(), "{later:?}");
    ensure!(
        later.counters.alarms <= alarms,
        "alarms fired while idle: {alarms} → {}",
        later.counters.alarms
    );
    Ok(())
}

/// Three devices stay connected and heartbeat (answered by the platform) for a minute, with no
/// dashboard and no job: nobody waits on the swarm, so the object arms no alarm and the runtime
/// evicts it while its sockets hibernate; woken by a request, it has written nothing, and the
/// devices are still connected.
fn idle_devices_let_the_object_sleep(w: &Wrangler) -> Result<()> {
    let swarm = new_swarm(w, "sleeper")?;
    let mut devices = Vec::new();
    for name in ["idle phone", "idle laptop", "idle tablet"] {
        devices.push(join_device(w, &swarm, name)?.0);
    }
    // The hello deadlines (4 s here) armed the alarm; it fires once and is not re-armed.
    let deadline = Instant::now() + 10 * SECOND;
    let before = loop {
        let s = stats(w, &swarm)?;
        if s.alarm_at_ms.is_none() || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    ensure!(before.alarm_at_ms.is_none(), "still armed: {before:?}");
    let start = Instant::now();
    while start.elapsed() < 61 * SECOND {
        for device in &mut devices {
            device.send_text(shared_protocol::HEARTBEAT)?;
            device.recv_until(2 * SECOND, |m| {
                matches!(m, ToClient::HeartbeatAck { .. }).then_some(())
            })?;
        }
        std::thread::sleep(SECOND);
    }
    let after = stats(w, &swarm)?;
    ensure!(after.alarm_at_ms.is_none(), "armed: {after:?}");
    ensure!(after.connections == 3, "devices were closed: {after:?}");
    // With nothing to do, the runtime evicts the object (its sockets hibernate); this request
    // woke it, so its counters count from that restart.
    ensure!(
        after.started_ms > before.started_ms,
        "the object never slept: started at {} both times",
        after.started_ms
    );
    ensure!(
        (
            after.counters.alarms,
            after.counters.storage_writes,
            after.counters.messages_in
        ) == (0, 0, 0),
        "the woken object armed, wrote or was sent something: {:?}",
        after.counters
    );
    Ok(())
}

fn origin_check(w: &Wrangler) -> Result<()> {
    let swarm = new_swarm(w, "origins")?;
    let url = w.ws_url(&swarm.swarm_id);
    let refused = WsClient::connect_with_origin(&url, Some("https://evil.example"));
    match refused {
        Err(err) => ensure!(err.to_string().contains("403"), "{err:#}"),
        Ok(_) => bail!("a foreign origin was let in"),
    }
    let mut own = WsClient::connect_with_origin(&url, Some(&w.base))?;
    own.send(&dashboard_hello(None))?;
    ensure!(matches!(
        own.recv_message(5 * SECOND)?,
        ToClient::Welcome {
            role: WelcomeRole::Dashboard { owner: false },
            ..
        }
    ));
    Ok(())
}

fn unknown_swarm(w: &Wrangler) -> Result<()> {
    match WsClient::connect(&w.ws_url(&"0".repeat(32))) {
        Err(err) => ensure!(err.to_string().contains("404"), "{err:#}"),
        Ok(_) => bail!("an upgrade to a swarm that does not exist succeeded"),
    }
    Ok(())
}

fn invite(
    w: &Wrangler,
    swarm: &TestSwarm,
    ttl_ms: Option<u64>,
    max_uses: Option<u32>,
) -> Result<(String, String, String)> {
    match owner_http(
        w,
        swarm,
        &swarm.owner_key,
        &OwnerCommand::CreateInvite { ttl_ms, max_uses },
    )? {
        OwnerReply::InviteCreated {
            invite,
            token,
            code,
        } => Ok((invite.invite_id, token, code)),
        other => bail!("expected an invite, got {other:?}"),
    }
}

/// A new device's hello with this proof: the credential, or the refusal's code.
fn try_join(
    w: &Wrangler,
    swarm: &TestSwarm,
    proof: JoinProof,
) -> Result<std::result::Result<DeviceCredential, ErrorCode>> {
    let mut ws = WsClient::connect(&w.ws_url(&swarm.swarm_id))?;
    ws.send(&new_device_hello("joiner", proof))?;
    match ws.recv_message(5 * SECOND)? {
        ToClient::Welcome {
            role:
                WelcomeRole::Device {
                    credential: Some(c),
                    ..
                },
            ..
        } => Ok(Ok(c)),
        ToClient::Error { code, .. } => {
            ensure!(
                ws.recv_close(3 * SECOND)? == Some(close_code::POLICY),
                "a refused join is closed"
            );
            Ok(Err(code))
        }
        other => bail!("unexpected {other:?}"),
    }
}

fn invites_are_rate_limited(w: &Wrangler) -> Result<()> {
    let swarm = new_swarm(w, "popular")?; // its first invite
    for _ in 0..4 {
        invite(w, &swarm, None, None)?;
    }
    let command = OwnerCommand::CreateInvite {
        ttl_ms: None,
        max_uses: None,
    };
    match owner_http_raw(w, &swarm, &swarm.owner_key, &command) {
        Err(ureq::Error::Status(429, resp)) => {
            let retry: u64 = resp
                .header("retry-after")
                .context("Retry-After header")?
                .parse()?;
            ensure!((1..=6).contains(&retry), "Retry-After {retry}");
            let body: HttpError = resp.into_json()?;
            ensure!(
                body.code == ErrorCode::RateLimited && body.retry_after_ms.is_some(),
                "{body:?}"
            );
        }
        other => bail!(
            "the 6th invite in the window was not refused: {:?}",
            other.map(|r| r.status())
        ),
    }
    let OwnerReply::Invites { invites } =
        owner_http(w, &swarm, &swarm.owner_key, &OwnerCommand::ListInvites {})?
    else {
        bail!("expected invites")
    };
    ensure!(
        invites.len() == 5,
        "the refused invite was not created: {}",
        invites.len()
    );
    // The test runtime's window is 6 s instead of a minute.
    std::thread::sleep(6 * SECOND);
    invite(w, &swarm, None, None).context("an invite after the window")?;
    Ok(())
}

fn invites_expire_are_revoked_and_run_out(w: &Wrangler) -> Result<()> {
    let swarm = new_swarm(w, "guarded")?;
    let (_, short_lived, _) = invite(w, &swarm, None, None)?; // the test runtime's default TTL: 5 s
    let (_, once, _) = invite(w, &swarm, None, Some(1))?;
    let (revoked_id, revoked, _) = invite(w, &swarm, None, None)?;
    owner_http(
        w,
        &swarm,
        &swarm.owner_key,
        &OwnerCommand::RevokeInvite {
            invite_id: revoked_id,
        },
    )?;

    ensure!(try_join(
        w,
        &swarm,
        JoinProof::Token {
            token: once.clone()
        }
    )?
    .is_ok());
    ensure!(
        try_join(w, &swarm, JoinProof::Token { token: once })? == Err(ErrorCode::InviteExhausted)
    );
    ensure!(
        try_join(w, &swarm, JoinProof::Token { token: revoked })? == Err(ErrorCode::InviteRevoked)
    );
    std::thread::sleep(Duration::from_millis(5_200));
    ensure!(
        try_join(w, &swarm, JoinProof::Token { token: short_lived })?
            == Err(ErrorCode::InviteExpired)
    );
    let info = stats(w, &swarm)?;
    ensure!(info.connections == 0, "{info:?}");
    Ok(())
}

fn devices_join_by_link_and_by_code(w: &Wrangler) -> Result<()> {
    let swarm = new_swarm(w, "doors")?;
    let (_, token, code) = invite(w, &swarm, None, None)?;
    ensure!(try_join(w, &swarm, JoinProof::Token { token })?.is_ok());
    // The code is typed loosely; the directory routes it to the right swarm (not to an object
    // named after the code or the token).
    let typed = code.to_lowercase().replace('-', " ");
    let found: serde_json::Value = http_agent()
        .post(&format!("{}/api/join", w.base))
        .send_json(serde_json::json!({ "code": typed }))?
        .into_json()?;
    ensure!(found["swarm_id"] == swarm.swarm_id.as_str(), "{found}");
    ensure!(try_join(w, &swarm, JoinProof::Code { code: typed })?.is_ok());
    // A code of another swarm does not open this one.
    let other = new_swarm(w, "next door")?;
    let (_, _, other_code) = invite(w, &other, None, None)?;
    ensure!(
        try_join(w, &swarm, JoinProof::Code { code: other_code })? == Err(ErrorCode::InviteInvalid)
    );
    ensure!(try_join(
        w,
        &swarm,
        JoinProof::OwnerKey {
            owner_key: swarm.owner_key.clone()
        }
    )?
    .is_ok());
    let mut dash = join_dashboard(w, &swarm)?;
    let snap = next_snapshot(&mut dash, 4 * SECOND)?;
    ensure!(snap.device_total == 3, "{snap:?}");
    Ok(())
}

fn removed_device_cannot_reconnect(w: &Wrangler) -> Result<()> {
    let swarm = new_swarm(w, "strict")?;
    let (mut device, cred) = join_device(w, &swarm, "lost phone")?;
    owner_http(
        w,
        &swarm,
        &swarm.owner_key,
        &OwnerCommand::RemoveDevice {
            device_id: cred.device_id.clone(),
        },
    )?;
    ensure!(device.recv_close(3 * SECOND)? == Some(close_code::REMOVED));
    let mut again = WsClient::connect(&w.ws_url(&swarm.swarm_id))?;
    again.send(&device_hello("lost phone", Some(cred)))?;
    expect_error(&mut again, ErrorCode::BadCredential)?;
    ensure!(again.recv_close(3 * SECOND)? == Some(close_code::POLICY));
    Ok(())
}

fn owner_actions_need_the_owner_key(w: &Wrangler) -> Result<()> {
    let swarm = new_swarm(w, "mine")?;
    let (mut device, cred) = join_device(w, &swarm, "ambitious")?;
    let mut viewer = WsClient::connect(&w.ws_url(&swarm.swarm_id))?;
    viewer.send(&dashboard_hello(None))?;
    viewer.recv_message(5 * SECOND)?;
    let commands = [
        OwnerCommand::CreateInvite {
            ttl_ms: None,
            max_uses: None,
        },
        OwnerCommand::ListInvites {},
        OwnerCommand::RevokeInvite {
            invite_id: "0".repeat(32),
        },
        OwnerCommand::SetDeviceEnabled {
            device_id: cred.device_id.clone(),
            enabled: false,
        },
        OwnerCommand::RemoveDevice {
            device_id: cred.device_id.clone(),
        },
        OwnerCommand::SetRunState {
            state: shared_protocol::RunState::Stopped,
        },
        OwnerCommand::SetThrottle { percent: 0 },
        OwnerCommand::AuditLog {},
    ];
    for (request, command) in commands.iter().enumerate() {
        let request = request as u32;
        for socket in [&mut device, &mut viewer] {
            socket.send(&ToCoordinator::Owner {
                request,
                command: command.clone(),
            })?;
            match socket.recv_message(3 * SECOND)? {
                ToClient::Error {
                    code: ErrorCode::Forbidden,
                    request: Some(r),
                    ..
                } if r == request => {}
                other => bail!("{command:?} over a socket was not refused: {other:?}"),
            }
        }
        // Over HTTP the device's own secret is no owner key.
        ensure!(
            http_error(owner_http_raw(w, &swarm, &cred.secret, command))?
                == (401, ErrorCode::BadOwnerKey)
        );
        ensure!(
            http_error(owner_http_raw(w, &swarm, "", command))? == (401, ErrorCode::BadOwnerKey)
        );
    }
    let mut dash = join_dashboard(w, &swarm)?;
    let snap = next_snapshot(&mut dash, 4 * SECOND)?;
    ensure!(
        snap.device_total == 1 && snap.devices[0].enabled,
        "{snap:?}"
    );
    ensure!(
        snap.run_state == shared_protocol::RunState::Running && snap.throttle_percent == 100,
        "{snap:?}"
    );
    Ok(())
}

/// A device that computes every lease it gets (its benchmark first) with the real kernels,
/// heartbeating every second, until `stop` is set; with `quit_after_first_lease` it vanishes
/// holding its first job leases.
fn compute_device(
    ws_url: &str,
    token: &str,
    name: &str,
    stop: &std::sync::atomic::AtomicBool,
    quit_after_first_lease: bool,
) -> Result<Answered> {
    use std::sync::atomic::Ordering;
    let mut ws = WsClient::connect(ws_url)?;
    ws.send(&new_device_hello(
        name,
        JoinProof::Token {
            token: token.to_owned(),
        },
    ))?;
    ensure!(
        matches!(ws.recv_message(5 * SECOND)?, ToClient::Welcome { .. }),
        "{name} was not welcomed"
    );
    let mut beat = Instant::now();
    let mut answered = Answered::default();
    // Results computed since the last send: they go together once nothing more is waiting,
    // in one frame when there are several (protocol 5), as the agent sends them.
    let mut ready: Vec<ChunkAnswer> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if beat.elapsed() >= SECOND {
            ws.send(&ToCoordinator::Heartbeat { seen: None })?;
            beat = Instant::now();
        }
        let msg = match ws.recv(Duration::from_millis(200)) {
            Ok(Received::Message(msg)) => msg,
            Ok(Received::Closed(code)) => bail!("{name} was closed: {code:?}"),
            Err(_) => {
                // Nothing more arrived: send what is ready.
                for frame in client::link::frames(std::mem::take(&mut ready)) {
                    if let ToCoordinator::ChunkResults { results } = &frame {
                        answered.frames += 1;
                        answered.in_frames += results.len() as u64;
                    }
                    ws.send(&frame)?;
                }
                continue;
            }
        };
        if let ToClient::Lease {
            lease_id,
            job_id,
            work,
            ..
        } = msg
        {
            if quit_after_first_lease && job_id != "benchmark" {
                ws.close();
                return Ok(Answered::default());
            }
            let started = Instant::now();
            let result = client_compute::compute(&work).map_err(anyhow::Error::msg)?;
            let compute_ms = started.elapsed().as_millis() as u64;
            ready.push(ChunkAnswer {
                lease_id,
                result,
                compute_ms,
                ticket: None,
            });
            answered.results += 1;
        }
    }
    answered.lease_frames = ws.lease_frames;
    Ok(answered)
}

/// What a [`compute_device`] did: results sent, how many of them in frames of several and in
/// how many frames, and the frames of several leases it received.
#[derive(Debug, Default)]
struct Answered {
    results: u64,
    frames: u64,
    in_frames: u64,
    lease_frames: u64,
}

fn prime_job(w: &Wrangler) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let swarm = new_swarm(w, "sieve")?;
    let stop = AtomicBool::new(false);
    let url = w.ws_url(&swarm.swarm_id);
    let job_id = std::thread::scope(|scope| -> Result<String> {
        // Devices that joined by invite are not trusted: each result is computed again by
        // another device before it counts, so a third one is there when "flaky" leaves.
        let steady = scope.spawn(|| compute_device(&url, &swarm.token, "steady", &stop, false));
        let other = scope.spawn(|| compute_device(&url, &swarm.token, "other", &stop, false));
        let flaky = scope.spawn(|| compute_device(&url, &swarm.token, "flaky", &stop, true));
        std::thread::sleep(Duration::from_millis(500));
        let submit = OwnerCommand::SubmitJob {
            job: JobSpec::PrimeCount {
                lo: 0,
                hi: 100_000_000,
            },
        };
        let OwnerReply::JobSubmitted { job_id } = owner_http(w, &swarm, &swarm.owner_key, &submit)?
        else {
            bail!("expected a job id")
        };
        let outcome = await_job(&w.base, &swarm.swarm_id, &job_id, Duration::from_secs(180))?;
        stop.store(true, Ordering::Relaxed);
        let answered = steady.join().expect("device thread")?;
        let answered_other = other.join().expect("device thread")?;
        flaky.join().expect("device thread")?;
        ensure!(
            outcome.state == JobState::Done,
            "not done in time: {outcome:?}"
        );
        ensure!(
            outcome.result == JobResult::PrimeCount { count: 5_761_455 },
            "π(10^8): {outcome:?}"
        );
        ensure!(outcome.done_units == 100_000_000 && answered.results + answered_other.results > 0);
        // Protocol 5 over the runtime: leases came several to a frame, and results went
        // several to a frame and counted.
        ensure!(
            answered.lease_frames + answered_other.lease_frames > 0
                && answered.frames + answered_other.frames > 0,
            "frames: {answered:?}, {answered_other:?}"
        );
        ensure!(
            outcome.verify_units >= outcome.total_units && outcome.unverified_units == 0,
            "every result was confirmed by a second device: {outcome:?}"
        );
        Ok(job_id)
    })?;
    // The result is stored: it is in the snapshot and at the endpoint.
    let mut dash = join_dashboard(w, &swarm)?;
    let snap = next_snapshot(&mut dash, 4 * SECOND)?;
    ensure!(snap
        .jobs
        .iter()
        .any(|j| j.job_id == job_id && j.state == JobState::Done));
    ensure!(
        snap.log.iter().any(|e| e.text.contains("5761455 primes")),
        "{:?}",
        snap.log
    );
    Ok(())
}

/// A Mandelbrot job computed by two devices through workerd: the PNG served while it runs
/// has grey rows still to come, and once done it is byte for byte the native render.
fn mandelbrot_job(w: &Wrangler) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let swarm = new_swarm(w, "fractal")?;
    let (width, height, max_iter) = (320u32, 240u32, 400u32);
    let spec = JobSpec::Mandelbrot {
        center_re: -0.743,
        center_im: 0.131,
        scale: 0.02,
        width,
        height,
        max_iter,
    };
    let stop = AtomicBool::new(false);
    let url = w.ws_url(&swarm.swarm_id);
    let job = std::thread::scope(|scope| -> Result<JobView> {
        let devices = [
            scope.spawn(|| compute_device(&url, &swarm.token, "m1", &stop, false)),
            scope.spawn(|| compute_device(&url, &swarm.token, "m2", &stop, false)),
        ];
        std::thread::sleep(Duration::from_millis(500));
        let submit = OwnerCommand::SubmitJob { job: spec.clone() };
        let OwnerReply::JobSubmitted { job_id } = owner_http(w, &swarm, &swarm.owner_key, &submit)?
        else {
            bail!("expected a job id")
        };
        let job = await_job(&w.base, &swarm.swarm_id, &job_id, Duration::from_secs(120));
        stop.store(true, Ordering::Relaxed);
        for device in devices {
            device.join().expect("device thread")?;
        }
        job
    })?;
    ensure!(job.state == JobState::Done, "not done: {job:?}");
    let png_url = format!(
        "{}/api/swarms/{}/jobs/{}/image.png",
        w.base, swarm.swarm_id, job.job_id
    );
    let response = http_agent().get(&png_url).call()?;
    ensure!(response.content_type() == "image/png");
    let short: String = job.job_id.chars().take(8).collect();
    ensure!(
        response.header("content-disposition")
            == Some(format!("inline; filename=\"mandelbrot-{short}.png\"").as_str()),
        "the PNG is saved under a name: {:?}",
        response.header("content-disposition")
    );
    let served = get_bytes(&png_url)?;
    let view = kernels::mandelbrot::View {
        center_re: -0.743,
        center_im: 0.131,
        scale: 0.02,
        width,
        height,
        max_iter,
    };
    let reference = kernels::mandelbrot::render_png(&view);
    ensure!(
        served == reference,
        "the served PNG ({} bytes) differs from the native render ({} bytes)",
        served.len(),
        reference.len()
    );
    let whole = kernels::mandelbrot::Tile {
        x: 0,
        y: 0,
        width,
        height,
    };
    let counts = kernels::mandelbrot::render_tile(&view, &whole);
    let inside = counts.iter().filter(|&&c| c == max_iter).count() as u64;
    ensure!(
        job.result
            == JobResult::Mandelbrot {
                inside_pixels: inside
            },
        "{job:?}"
    );
    // The bands endpoint hands out every stored band once, in order, then nothing new.
    let bands_url = |after: &str| {
        format!(
            "{}/api/swarms/{}/jobs/{}/bands?after={after}",
            w.base, swarm.swarm_id, job.job_id
        )
    };
    let mut after = 0u64;
    let mut rows = std::collections::BTreeSet::new();
    loop {
        let answer: shared_protocol::ImageBands =
            serde_json::from_slice(&get_bytes(&bands_url(&after.to_string()))?)?;
        for band in &answer.bands {
            ensure!(band.png.is_some(), "no band was taken back here: {band:?}");
            ensure!(
                rows.insert(band.first_row),
                "band {} came twice",
                band.first_row
            );
        }
        ensure!(answer.next >= after);
        after = answer.next;
        if !answer.more {
            break;
        }
    }
    ensure!(
        rows.first() == Some(&0) && rows.len() > 1,
        "bands from the top: {rows:?}"
    );
    let rest: shared_protocol::ImageBands =
        serde_json::from_slice(&get_bytes(&bands_url(&after.to_string()))?)?;
    ensure!(
        rest.bands.is_empty() && rest.next == after && !rest.more,
        "{rest:?}"
    );
    let (status, code) = http_error(http_agent().get(&bands_url("soon")).call())?;
    ensure!(status == 400 && code == ErrorCode::Invalid);
    // A job of another kind has no image.
    let (status, code) = http_error(
        http_agent()
            .get(&format!(
                "{}/api/swarms/{}/jobs/{}/image.png",
                w.base,
                swarm.swarm_id,
                "0".repeat(32)
            ))
            .call(),
    )?;
    ensure!(status == 404 && code == ErrorCode::NotFound);
    Ok(())
}

/// Every message each socket receives within `window`, while all of them keep heartbeating.
fn gather_all(sockets: &mut [&mut WsClient], window: Duration) -> Result<Vec<Vec<ToClient>>> {
    let end = Instant::now() + window;
    let mut got = vec![Vec::new(); sockets.len()];
    let mut beat: Option<Instant> = None;
    loop {
        if beat.is_none_or(|at| at.elapsed() >= Duration::from_millis(800)) {
            for ws in sockets.iter_mut() {
                ws.send(&ToCoordinator::Heartbeat { seen: None })?;
            }
            beat = Some(Instant::now());
        }
        for (ws, got) in sockets.iter_mut().zip(&mut got) {
            match ws.recv(Duration::from_millis(50)) {
                Ok(Received::Message(msg)) => got.push(msg),
                Ok(Received::Closed(code)) => bail!("closed: {code:?}"),
                Err(_) => {}
            }
        }
        if Instant::now() >= end {
            return Ok(got);
        }
    }
}

/// The job leases among messages: `(lease id, lo, hi)`.
fn job_leases(messages: &[ToClient]) -> Vec<(u64, u64, u64)> {
    messages
        .iter()
        .filter_map(|m| match m {
            ToClient::Lease {
                lease_id,
                job_id,
                work: Work::PrimeCount { lo, hi },
                ..
            } if job_id != "benchmark" => Some((*lease_id, *lo, *hi)),
            _ => None,
        })
        .collect()
}

fn cancelled(messages: &[ToClient]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| match m {
            ToClient::CancelLease { lease_id } => Some(*lease_id),
            _ => None,
        })
        .collect()
}

/// The lease rules through workerd with two scripted devices: quota, foreign and duplicate
/// results, chunks that shrink for a device slower than its benchmark, pause, stop and
/// throttle, and expiry of leases a silent device holds.
fn lease_rules(w: &Wrangler) -> Result<()> {
    let swarm = new_swarm(w, "rules")?;
    let set = |command: OwnerCommand| owner_http(w, &swarm, &swarm.owner_key, &command);
    let run_state = |state| set(OwnerCommand::SetRunState { state });
    let answer = |ws: &mut WsClient, lease_id: u64, compute_ms: u64| {
        ws.send(&ToCoordinator::ChunkResult {
            lease_id,
            result: WorkResult::PrimeCount { count: 0 },
            compute_ms,
            ticket: None,
        })
    };
    // The owner's own devices: the lease rules without replicas in between.
    let mut a = join_owned_device(w, &swarm, "a")?;
    let OwnerReply::JobSubmitted { job_id } = set(OwnerCommand::SubmitJob {
        job: JobSpec::PrimeCount { lo: 0, hi: 1 << 44 },
    })?
    else {
        bail!("expected a job id")
    };
    // Quota: 8 lent cores + 1 prefetched, and no more while none is answered.
    let quota = usize::from(caps().cores) + 1;
    let mut b = join_owned_device(w, &swarm, "b")?;
    let mut both = [&mut a, &mut b];
    let [to_a, to_b] = <[_; 2]>::try_from(gather_all(&mut both, 2 * SECOND)?).expect("two");
    let (held, b_held) = (job_leases(&to_a), job_leases(&to_b));
    ensure!(
        held.len() == quota && b_held.len() == quota,
        "quota: {held:?} {b_held:?}"
    );

    // A result for another device's lease is refused.
    answer(&mut b, held[0].0, 10)?;
    expect_error(&mut b, ErrorCode::Forbidden)?;

    // A's first result is accepted once; whatever time it claims (1 ms), its rate is what the
    // coordinator measured and may grow by at most 1.3× per result, so its next chunk is at
    // most 1.3× larger. The repeat changes nothing.
    let (lease_id, lo, hi) = held[0];
    answer(&mut a, lease_id, 1)?;
    let got = gather_all(&mut [&mut a, &mut b], SECOND)?;
    let refill = job_leases(&got[0]);
    ensure!(refill.len() == 1, "one lease refills the quota: {refill:?}");
    ensure!(
        (refill[0].2 - refill[0].1) as f64 <= (hi - lo) as f64 * swarm_core::sched::MAX_RATE_GROWTH,
        "a claimed 1 ms does not buy a large chunk: {refill:?} after [{lo}, {hi})"
    );
    answer(&mut a, lease_id, 16_000)?;
    let got = gather_all(&mut [&mut a, &mut b], SECOND)?;
    ensure!(job_leases(&got[0]).is_empty(), "a repeat refills nothing");
    let job: JobView = http_agent()
        .get(&format!(
            "{}/api/swarms/{}/jobs/{job_id}",
            w.base, swarm.swarm_id
        ))
        .call()?
        .into_json()?;
    ensure!(job.done_units == hi - lo, "counted once: {job:?}");

    // Paused: an answer brings no new lease, until the swarm runs again.
    run_state(shared_protocol::RunState::Paused)?;
    answer(&mut a, held[1].0, 2_000)?;
    let got = gather_all(&mut [&mut a, &mut b], SECOND)?;
    ensure!(job_leases(&got[0]).is_empty(), "paused");
    run_state(shared_protocol::RunState::Running)?;
    let got = gather_all(&mut [&mut a, &mut b], SECOND)?;
    ensure!(job_leases(&got[0]).len() == 1, "running again");

    // Stopped: every lease is withdrawn; throttled to 25 %, an 8-core device holds 2 + 1.
    run_state(shared_protocol::RunState::Stopped)?;
    let got = gather_all(&mut [&mut a, &mut b], SECOND)?;
    ensure!(
        cancelled(&got[0]).len() == quota && cancelled(&got[1]).len() == quota,
        "every lease withdrawn: {got:?}"
    );
    set(OwnerCommand::SetThrottle { percent: 25 })?;
    run_state(shared_protocol::RunState::Running)?;
    let got = gather_all(&mut [&mut a, &mut b], SECOND)?;
    let (a_now, b_now) = (job_leases(&got[0]), job_leases(&got[1]));
    ensure!(
        a_now.len() == 3 && b_now.len() == 3,
        "throttled: {a_now:?} {b_now:?}"
    );

    // B stays silent: its leases miss their deadline and it is told to drop them, while A
    // keeps answering.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut dropped = Vec::new();
    let mut to_answer: Vec<u64> = a_now.iter().map(|l| l.0).collect();
    while !b_now.iter().all(|(id, _, _)| dropped.contains(id)) && Instant::now() < deadline {
        for lease_id in to_answer.drain(..) {
            answer(&mut a, lease_id, 2_000)?;
        }
        let got = gather_all(&mut [&mut a, &mut b], SECOND)?;
        to_answer = job_leases(&got[0]).iter().map(|l| l.0).collect();
        dropped.extend(cancelled(&got[1]));
    }
    ensure!(
        b_now.iter().all(|(id, _, _)| dropped.contains(id)),
        "b's silent leases expired: {b_now:?}, cancelled {dropped:?}"
    );
    let mut dash = join_dashboard(w, &swarm)?;
    let snap = next_snapshot(&mut dash, 4 * SECOND)?;
    ensure!(
        snap.log
            .iter()
            .any(|e| e.text.contains("missed their deadline")),
        "{:?}",
        snap.log
    );
    Ok(())
}

/// A device must answer its known-answer benchmark correctly before it gets work; a wrong
/// answer is refused and closes the socket with 4005.
fn benchmark_is_checked(w: &Wrangler) -> Result<()> {
    let swarm = new_swarm(w, "bench")?;
    let (mut ws, _) = join_unbenchmarked(w, &swarm, "liar")?;
    let (lease_id, work) = next_benchmark(&mut ws)?;
    let Work::PrimeCount { lo, hi } = work else {
        bail!("the benchmark counts primes")
    };
    ws.send(&ToCoordinator::ChunkResult {
        lease_id,
        result: WorkResult::PrimeCount {
            count: kernels::primes::count_primes(lo, hi) + 7,
        },
        compute_ms: 1,
        ticket: None,
    })?;
    expect_error(&mut ws, ErrorCode::BadResult)?;
    ensure!(ws.recv_close(5 * SECOND)? == Some(close_code::BAD_RESULT));
    let mut dash = join_dashboard(w, &swarm)?;
    let snap = next_snapshot(&mut dash, 4 * SECOND)?;
    ensure!(
        snap.log
            .iter()
            .any(|e| e.text.contains("benchmark answer") && e.text.contains("wrong")),
        "{:?}",
        snap.log
    );
    let liar = snap
        .devices
        .iter()
        .find(|d| d.name == "liar")
        .context("the liar is listed")?;
    ensure!(liar.quarantined && !liar.enabled, "quarantined: {liar:?}");
    Ok(())
}

/// Runs last: it uses up the (minute-long) wrong-code allowance of this test client.
fn code_guessing_is_rate_limited(w: &Wrangler) -> Result<()> {
    let guess = |code: &str| {
        http_agent()
            .post(&format!("{}/api/join", w.base))
            .send_json(serde_json::json!({ "code": code }))
    };
    // Limits are kept per directory shard (by the code hash's first hex digit): aim every
    // guess at one shard, as an attacker maximising refusals would not, but a test must.
    let shard_of = |code: &str| {
        swarm_core::hash_secret(&shared_protocol::normalize_code(code).unwrap_or_default())[..1]
            .to_owned()
    };
    let target = shard_of("ZZZZZ-ZZZ00");
    let guesses: Vec<String> = (0..1000)
        .map(|i| format!("ZZZZZ-Z{i:04}"))
        .filter(|c| shard_of(c) == target)
        .take(12)
        .collect();
    ensure!(guesses.len() == 12);
    let mut refused_at = None;
    for (i, code) in guesses.iter().enumerate() {
        match http_error(guess(code))? {
            (404, ErrorCode::InviteInvalid) => {}
            (429, ErrorCode::RateLimited) => {
                refused_at = Some(i);
                break;
            }
            other => bail!("unexpected {other:?}"),
        }
    }
    ensure!(
        refused_at == Some(10),
        "guesses were refused from attempt {refused_at:?}, expected from the 11th"
    );
    ensure!(http_error(guess("not a code"))? == (400, ErrorCode::Invalid));
    Ok(())
}

/// Stops workerd, starts it again on the same persisted state: devices and their credentials
/// are still there.
fn registry_survives_restart() -> Result<()> {
    let root = runtime_tests::repo_root();
    let persist = root
        .join("target/tmp")
        .join(format!("restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&persist);
    let (swarm, cred) = {
        let w = Wrangler::start_anywhere(&persist, short_timeouts())?;
        let swarm = new_swarm(&w, "durable")?;
        let (device, cred) = join_device(&w, &swarm, "survivor")?;
        device.close();
        (swarm, cred)
    }; // dropped: workerd stopped
    let w = Wrangler::start_anywhere(&persist, short_timeouts())?;
    let mut dash = join_dashboard(&w, &swarm)?;
    let snap = next_snapshot(&mut dash, 4 * SECOND)?;
    ensure!(
        snap.device_total == 1 && status(&snap, &cred.device_id) == Some(DeviceStatus::Offline),
        "{snap:?}"
    );
    let mut device = WsClient::connect(&w.ws_url(&swarm.swarm_id))?;
    device.send(&device_hello("survivor", Some(cred.clone())))?;
    match device.recv_message(5 * SECOND)? {
        ToClient::Welcome {
            role:
                WelcomeRole::Device {
                    device_id,
                    credential: None,
                },
            ..
        } => {
            ensure!(device_id == cred.device_id)
        }
        other => bail!("expected a welcome back, got {other:?}"),
    }
    let snap = snapshot_where(&mut dash, 5 * SECOND, |s| s.online == 1)?;
    ensure!(
        snap.device_total == 1,
        "re-registered instead of resumed: {snap:?}"
    );
    drop(w);
    let _ = std::fs::remove_dir_all(persist);
    Ok(())
}

/// `PUT`, `HEAD` and `GET /api/swarms/{id}/modules/{sha256}` against R2 in workerd.
fn workload_modules(w: &Wrangler) -> Result<()> {
    use sha2::{Digest, Sha256};
    let swarm = new_swarm(w, "modules")?;
    let other = new_swarm(w, "other")?;
    let examples = runtime_tests::repo_root().join("examples");
    let broken = wat::parse_file(examples.join("broken.wat"))?;
    let collatz = wat::parse_file(examples.join("collatz.wat"))?;
    let name = |bytes: &[u8]| workload::module::hex(&Sha256::digest(bytes).into());
    let url = |swarm: &TestSwarm, sha: &str| {
        format!("{}/api/swarms/{}/modules/{sha}", w.base, swarm.swarm_id)
    };
    let put = |swarm: &TestSwarm, key: &str, sha: &str, body: &[u8]| {
        http_agent()
            .put(&url(swarm, sha))
            .set("authorization", &format!("Bearer {key}"))
            .send_bytes(body)
    };
    // A HEAD answer has no body to carry an error code: its status is all there is.
    let head = |swarm: &TestSwarm, key: &str, sha: &str| -> Result<u16> {
        match http_agent()
            .head(&url(swarm, sha))
            .set("authorization", &format!("Bearer {key}"))
            .call()
        {
            Ok(resp) => Ok(resp.status()),
            Err(ureq::Error::Status(status, _)) => Ok(status),
            Err(err) => Err(err.into()),
        }
    };
    let (broken_sha, collatz_sha) = (name(&broken), name(&collatz));

    // Refusals, each with its code, and none of them stores anything.
    let refused = |result, status, code: ErrorCode| -> Result<()> {
        let got = http_error(result)?;
        ensure!(
            got == (status, code),
            "expected {status} {code:?}, got {got:?}"
        );
        Ok(())
    };
    refused(
        put(&swarm, "wrong key", &broken_sha, &broken),
        401,
        ErrorCode::BadOwnerKey,
    )?;
    refused(
        put(&swarm, &other.owner_key, &broken_sha, &broken),
        401,
        ErrorCode::BadOwnerKey,
    )?;
    refused(
        put(&swarm, &swarm.owner_key, &collatz_sha, &broken),
        400,
        ErrorCode::Invalid,
    )?;
    refused(
        put(&swarm, &swarm.owner_key, "not-a-sha", &broken),
        404,
        ErrorCode::NotFound,
    )?;
    let importing = wat::parse_str(
        r#"(module (import "wasi" "clock" (func)) (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) i32.const 0)
            (func (export "run") (param i32 i32) (result i64) i64.const 0))"#,
    )?;
    match put(&swarm, &swarm.owner_key, &name(&importing), &importing) {
        Err(ureq::Error::Status(400, resp)) => {
            let error: HttpError = resp.into_json()?;
            ensure!(
                error.message.contains("imports `wasi.clock`"),
                "{}",
                error.message
            );
        }
        other => bail!("an importing module was not refused: {other:?}"),
    }
    let too_large = vec![0u8; workload::module::MAX_MODULE_BYTES + 1];
    refused(
        put(&swarm, &swarm.owner_key, &name(&too_large), &too_large),
        413,
        ErrorCode::TooLarge,
    )?;
    ensure!(head(&swarm, &swarm.owner_key, &broken_sha)? == 404);

    // Stored once: 201, then 200 with the same description.
    let first = put(&swarm, &swarm.owner_key, &broken_sha, &broken)?;
    ensure!(first.status() == 201, "first upload: {}", first.status());
    let info: shared_protocol::ModuleInfo = first.into_json()?;
    ensure!(
        info == shared_protocol::ModuleInfo {
            sha256: broken_sha.clone(),
            bytes: broken.len() as u64,
            prepared_bytes: info.prepared_bytes,
            memory_pages: [5, workload::module::MAX_MEMORY_PAGES],
        },
        "{info:?}"
    );
    let again = put(&swarm, &swarm.owner_key, &broken_sha, &broken)?;
    ensure!(again.status() == 200, "second upload: {}", again.status());
    ensure!(again.into_json::<shared_protocol::ModuleInfo>()? == info);

    // What comes back is what devices run: the module with the ABI's memory maximum.
    ensure!(head(&swarm, &swarm.owner_key, &broken_sha)? == 200);
    let resp = http_agent()
        .get(&url(&swarm, &broken_sha))
        .set("authorization", &format!("Bearer {}", swarm.owner_key))
        .call()?;
    ensure!(resp.header("content-type") == Some("application/wasm"));
    let mut served = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut served)?;
    let prepared = workload::module::check(&broken)?.bytes;
    ensure!(
        served == prepared,
        "served {} bytes, not the prepared {}",
        served.len(),
        prepared.len()
    );
    ensure!(info.prepared_bytes == prepared.len() as u64);

    // A module that declares a maximum within the ABI's runs as uploaded.
    let collatz_info: shared_protocol::ModuleInfo =
        put(&swarm, &swarm.owner_key, &collatz_sha, &collatz)?.into_json()?;
    ensure!(collatz_info.memory_pages == [2, 2], "{collatz_info:?}");
    ensure!(collatz_info.prepared_bytes == collatz.len() as u64);

    // Only the owner reads it, and only in its own swarm.
    ensure!(head(&swarm, "wrong key", &broken_sha)? == 401);
    ensure!(head(&other, &other.owner_key, &broken_sha)? == 404);
    Ok(())
}

/// `ostrich upload` (the `cli` crate's binary) against the module routes.
fn cli_uploads_a_module(w: &Wrangler) -> Result<()> {
    let root = runtime_tests::repo_root();
    let ostrich = runtime_tests::agents::build_binary(&root, "ostrich-cli", "ostrich")?;
    let swarm = new_swarm(w, "cli")?;
    let dir = root
        .join("target/tmp")
        .join(format!("cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let collatz = dir.join("collatz.wasm");
    std::fs::write(
        &collatz,
        wat::parse_file(root.join("examples/collatz.wat"))?,
    )?;
    let importing = dir.join("importing.wasm");
    std::fs::write(
        &importing,
        wat::parse_str(r#"(module (import "env" "now" (func)) (memory (export "memory") 1))"#)?,
    )?;
    let upload = |key: &str, file: &std::path::Path| -> Result<(bool, String, String)> {
        let out = std::process::Command::new(&ostrich)
            .arg("--swarm")
            .arg(format!("{}/s/{}", w.base, swarm.swarm_id))
            .arg("upload")
            .arg(file)
            .env("OSTRICH_OWNER_KEY", key)
            .output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let sha = workload::module::hex(&workload::module::check(&std::fs::read(&collatz)?)?.digest);

    let (ok, out, err) = upload(&swarm.owner_key, &collatz)?;
    ensure!(
        ok && out.starts_with(&format!("{sha}  stored ")),
        "{out}{err}"
    );
    let (ok, out, err) = upload(&swarm.owner_key, &collatz)?;
    ensure!(
        ok && out.starts_with(&format!("{sha}  already stored ")),
        "{out}{err}"
    );
    let (ok, _, err) = upload("wrong key", &collatz)?;
    ensure!(!ok && err.contains("bad_owner_key"), "{err}");
    // Refused before anything is sent: the swarm never sees it.
    let (ok, _, err) = upload(&swarm.owner_key, &importing)?;
    ensure!(!ok && err.contains("imports `env.now`"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// A device of a workload job holds a lease with a ticket. That ticket, with its device's id,
/// reads the job's module and uploads the lease's outputs file; every other use, and every
/// file that is not the lease's outputs, is refused with its code and stores nothing. The
/// result naming the file is then served by the results stream.
/// A module's or file's name: its SHA-256 in lowercase hex.
fn sha_name(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    workload::module::hex(&Sha256::digest(bytes).into())
}

/// Fails unless the request was refused with this status and code.
fn refused_with(
    result: std::result::Result<ureq::Response, ureq::Error>,
    want: (u16, ErrorCode),
) -> Result<()> {
    let got = http_error(result)?;
    ensure!(got == want, "expected {want:?}, got {got:?}");
    Ok(())
}

/// Stores `examples/collatz.wat` as a module of the swarm; its name.
fn store_collatz(w: &Wrangler, swarm: &TestSwarm) -> Result<String> {
    let collatz = wat::parse_file(runtime_tests::repo_root().join("examples/collatz.wat"))?;
    let module = sha_name(&collatz);
    http_agent()
        .put(&format!(
            "{}/api/swarms/{}/modules/{module}",
            w.base, swarm.swarm_id
        ))
        .set("authorization", &format!("Bearer {}", swarm.owner_key))
        .send_bytes(&collatz)?;
    Ok(module)
}

/// Submits a workload job and returns the first lease the owner's own device (whose results
/// are taken without a replica) gets for it: the device, its id, the job's id, and the
/// lease's id, work and ticket.
#[allow(clippy::type_complexity)]
fn workload_lease(
    w: &Wrangler,
    swarm: &TestSwarm,
    job: JobSpec,
) -> Result<(WsClient, String, String, (u64, Work, String))> {
    let (mut device, device_id) = join_owned_device_with_id(w, swarm, "runner")?;
    let submitted = owner_http(w, swarm, &swarm.owner_key, &OwnerCommand::SubmitJob { job })?;
    let OwnerReply::JobSubmitted { job_id } = submitted else {
        bail!("{submitted:?}")
    };
    let lease = next_workload_lease(&mut device)?;
    Ok((device, device_id, job_id, lease))
}

/// The next workload lease (with its ticket) a device receives.
fn next_workload_lease(device: &mut WsClient) -> Result<(u64, Work, String)> {
    device.recv_until(10 * SECOND, |m| match m {
        ToClient::Lease {
            lease_id,
            work: work @ Work::Workload { .. },
            ticket: Some(ticket),
            ..
        } => Some((*lease_id, work.clone(), ticket.clone())),
        _ => None,
    })
}

fn lease_tickets_for_workloads(w: &Wrangler) -> Result<()> {
    use base64::Engine as _;
    use workload::{Failure, FailureKind, Outcome};
    let swarm = new_swarm(w, "tickets")?;
    let api = format!("{}/api/swarms/{}", w.base, swarm.swarm_id);
    let module = store_collatz(w, &swarm)?;
    let job = JobSpec::Workload {
        module: module.clone(),
        start: 5,
        step: 1,
        items: 3,
        time_limit_ms: 1_000,
        inputs: None,
    };
    let (mut device, device_id, job_id, (lease_id, work, ticket)) = workload_lease(w, &swarm, job)?;
    let name = sha_name;
    ensure!(
        matches!(
            work,
            Work::Workload {
                first_item: 0,
                items: 3,
                ..
            }
        ),
        "{work:?}"
    );
    let pass = format!("Lease {} {ticket}", device_id);
    let outcomes = vec![
        Outcome::Output(b"7".to_vec()),
        Outcome::Output(b"8".to_vec()),
        Outcome::Failed(Failure::new(FailureKind::ModuleError, "no")),
    ];
    let file = workload::outputs::encode(&outcomes);
    let sha = name(&file);
    let put = |auth: &str, sha: &str, body: &[u8]| {
        http_agent()
            .put(&format!("{api}/outputs/{sha}"))
            .set("authorization", auth)
            .send_bytes(body)
    };
    let refused = refused_with;
    let forbidden = (403, ErrorCode::Forbidden);
    refused(put("", &sha, &file), forbidden)?;
    refused(
        put(&format!("Bearer {}", swarm.owner_key), &sha, &file),
        forbidden,
    )?;
    refused(
        put(&format!("Lease {} {ticket}", "0".repeat(32)), &sha, &file),
        forbidden,
    )?;
    refused(
        put(
            &format!("Lease {} {}", device_id, "A".repeat(43)),
            &sha,
            &file,
        ),
        forbidden,
    )?;
    refused(
        put(&pass, &name(b"other"), &file),
        (400, ErrorCode::Invalid),
    )?;
    let short = workload::outputs::encode(&outcomes[..2]);
    refused(put(&pass, &name(&short), &short), (400, ErrorCode::Invalid))?;
    let bad_tag = [&[9u8, 1, 0, 0, 0, 0][..], &file].concat();
    refused(
        put(&pass, &name(&bad_tag), &bad_tag),
        (400, ErrorCode::Invalid),
    )?;
    refused(put(&pass, "not-a-sha", &file), (404, ErrorCode::NotFound))?;
    let stored = put(&pass, &sha, &file)?;
    ensure!(stored.status() == 201, "stored");
    let stored: serde_json::Value = stored.into_json()?;
    let receipt = stored["receipt"].as_str().context("a receipt")?.to_owned();
    ensure!(receipt.len() == 43, "{stored}");
    let again: serde_json::Value = put(&pass, &sha, &file)?.into_json()?;
    ensure!(again == stored, "stored once, the same receipt: {again}");

    // The module with the ticket: the job's, prepared; no other.
    let served = http_agent()
        .get(&format!("{api}/modules/{module}"))
        .set("authorization", &pass)
        .call()?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut served.into_reader(), &mut bytes)?;
    ensure!(
        bytes
            == workload::module::check(&wat::parse_file(
                runtime_tests::repo_root().join("examples/collatz.wat")
            )?)?
            .bytes,
        "the prepared module"
    );
    let other = name(b"another module");
    refused(
        http_agent()
            .get(&format!("{api}/modules/{other}"))
            .set("authorization", &pass)
            .call(),
        forbidden,
    )?;

    // The result names the file; the owner reads it in item order.
    device.send(&ToCoordinator::ChunkResult {
        lease_id,
        result: WorkResult::Workload {
            outputs: sha.clone(),
            failed: 1,
            unsettled: 0,
            receipt,
        },
        compute_ms: 5,
        ticket: Some(ticket.clone()),
    })?;
    let url = format!("{api}/jobs/{job_id}/results?from=1");
    refused(http_agent().get(&url).call(), (401, ErrorCode::BadOwnerKey))?;
    let body = http_agent()
        .get(&url)
        .set("authorization", &format!("Bearer {}", swarm.owner_key))
        .call()?
        .into_string()?;
    let lines: Vec<serde_json::Value> = body
        .lines()
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()?;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let want = vec![
        serde_json::json!({"item": 1, "input": 6, "output": b64(b"8"), "json": 8}),
        serde_json::json!({"item": 2, "input": 7, "error": {"kind": "module_error", "message": "no"}}),
        serde_json::json!({"next": 3, "items": 3, "state": "done"}),
    ];
    ensure!(lines == want, "{lines:?}");
    // With the job ended, the ticket opens nothing.
    refused(put(&pass, &sha, &file), forbidden)?;
    Ok(())
}

fn input_sets_for_workloads(w: &Wrangler) -> Result<()> {
    use base64::Engine as _;
    use workload::Outcome;
    let swarm = new_swarm(w, "input sets")?;
    let name = sha_name;
    let api = format!("{}/api/swarms/{}", w.base, swarm.swarm_id);
    let owner = format!("Bearer {}", swarm.owner_key);
    let put = |auth: &str, sha: &str, body: &[u8]| {
        http_agent()
            .put(&format!("{api}/inputs/{sha}"))
            .set("authorization", auth)
            .send_bytes(body)
    };
    let refused = refused_with;
    let invalid = (400, ErrorCode::Invalid);
    let items: [&[u8]; 5] = [b"{\"a\": 1}", b"x", b"", b"yz", b"w"];
    let (first, second) = (
        workload::inputs::encode(items[..3].iter().copied()),
        workload::inputs::encode(items[3..].iter().copied()),
    );
    // Only the owner stores pages, only whole records within the limits, under their name.
    refused(
        put("", &name(&first), &first),
        (401, ErrorCode::BadOwnerKey),
    )?;
    refused(put(&owner, &name(b"other"), &first), invalid)?;
    let cut = &first[..first.len() - 1];
    refused(put(&owner, &name(cut), cut), invalid)?;
    refused(put(&owner, &name(b""), b""), invalid)?;
    let big = workload::inputs::encode([vec![0u8; 65_537].as_slice()]);
    refused(put(&owner, &name(&big), &big), invalid)?;
    refused(put(&owner, "not-a-sha", &first), (404, ErrorCode::NotFound))?;
    let mut pages = Vec::new();
    for page in [&first, &second] {
        let stored = put(&owner, &name(page), page)?;
        ensure!(stored.status() == 201, "stored: {}", stored.status());
        let stored: shared_protocol::InputPage = stored.into_json()?;
        let again = put(&owner, &name(page), page)?;
        ensure!(again.status() == 200, "stored once");
        ensure!(again.into_json::<shared_protocol::InputPage>()? == stored);
        pages.push(stored);
    }
    ensure!(pages[0].items == 3 && pages[1].items == 2, "{pages:?}");

    let job = JobSpec::Workload {
        module: store_collatz(w, &swarm)?,
        start: 0,
        step: 0,
        items: 5,
        time_limit_ms: 1_000,
        inputs: Some(pages),
    };
    // The device holds every lease of the job at once (up to its 8 workers and a prefetched
    // one). How many there are depends on the speed its benchmark showed; each reads exactly
    // its own items, from whichever pages they are in.
    let (mut device, device_id, job_id, first) = workload_lease(w, &swarm, job)?;
    let mut leases = vec![first];
    let mut tickets = Vec::new();
    let covered = |leases: &[(u64, Work, String)]| {
        leases
            .iter()
            .map(|(_, work, _)| match work {
                Work::Workload { items, .. } => *items,
                _ => 0,
            })
            .sum::<u64>()
    };
    while covered(&leases) < 5 {
        leases.push(next_workload_lease(&mut device)?);
    }
    ensure!(covered(&leases) == 5, "{leases:?}");
    for (lease_id, work, ticket) in leases {
        let Work::Workload {
            first_item,
            items: count,
            inputs: true,
            ..
        } = work
        else {
            bail!("a lease over the input set: {work:?}");
        };
        let mine = &items[first_item as usize..(first_item + count) as usize];
        // The lease's inputs, with its ticket only.
        let pass = format!("Lease {device_id} {ticket}");
        let fetch = |auth: &str| {
            http_agent()
                .get(&format!("{api}/inputs"))
                .set("authorization", auth)
                .call()
        };
        refused(fetch(""), (403, ErrorCode::Forbidden))?;
        refused(fetch(&owner), (403, ErrorCode::Forbidden))?;
        let mut records = Vec::new();
        std::io::Read::read_to_end(&mut fetch(&pass)?.into_reader(), &mut records)?;
        ensure!(
            workload::inputs::split(&records, count).map_err(anyhow::Error::msg)? == mine,
            "the records of items {first_item}..{}",
            first_item + count
        );
        // Echoed back (as a module would): the results have no integer inputs.
        let outcomes: Vec<Outcome> = mine.iter().map(|i| Outcome::Output(i.to_vec())).collect();
        let file = workload::outputs::encode(&outcomes);
        let sha = name(&file);
        let stored: serde_json::Value = http_agent()
            .put(&format!("{api}/outputs/{sha}"))
            .set("authorization", &pass)
            .send_bytes(&file)?
            .into_json()?;
        device.send(&ToCoordinator::ChunkResult {
            lease_id,
            result: WorkResult::Workload {
                outputs: sha,
                failed: 0,
                unsettled: 0,
                receipt: stored["receipt"].as_str().context("a receipt")?.to_owned(),
            },
            compute_ms: 5,
            ticket: Some(ticket.clone()),
        })?;
        tickets.push(pass);
    }
    await_job(&w.base, &swarm.swarm_id, &job_id, 30 * SECOND)?;
    let body = http_agent()
        .get(&format!("{api}/jobs/{job_id}/results?from=0"))
        .set("authorization", &owner)
        .call()?
        .into_string()?;
    let lines: Vec<serde_json::Value> = body
        .lines()
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()?;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    ensure!(
        lines.first()
            == Some(&serde_json::json!({"item": 0, "output": b64(items[0]), "json": {"a": 1}})),
        "{lines:?}"
    );
    ensure!(
        lines.get(4) == Some(&serde_json::json!({"item": 4, "output": b64(b"w")})),
        "{lines:?}"
    );
    ensure!(
        lines.last() == Some(&serde_json::json!({"next": 5, "items": 5, "state": "done"})),
        "{lines:?}"
    );
    // With the job ended, no ticket reads anything.
    for pass in tickets {
        let read = http_agent()
            .get(&format!("{api}/inputs"))
            .set("authorization", &pass)
            .call();
        refused(read, (403, ErrorCode::Forbidden))?;
    }
    Ok(())
}
