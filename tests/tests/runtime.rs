//! Integration tests against the real runtime: the built coordinator in workerd (wrangler dev)
//! on a free loopback port, real HTTP and real WebSockets.
//!
//! One workerd is shared by most cases (each creates its own swarm); the restart case starts
//! its own. Timeouts are shortened with `--var` (heartbeat 1 s, OFFLINE after 4 s); the
//! broadcast interval stays the product's 2 s.

// ureq's error type is large; in test code that costs nothing worth boxing for.
#![allow(clippy::result_large_err)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use runtime_tests::{
    free_port, http_agent, short_timeouts, Received, Wrangler, WranglerCommand, WsClient,
};
use shared_protocol::{
    close_code, AgentClass, Capabilities, CreateSwarmResponse, DeviceCredential, DeviceStatus,
    ErrorCode, Hello, HelloRole, HttpError, SwarmInfo, SwarmSnapshot, SwarmStats, ToClient,
    ToCoordinator, WelcomeRole, PROTOCOL_VERSION,
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
        ("a socket from a foreign origin is refused", origin_check),
        ("an unknown swarm refuses the upgrade", unknown_swarm),
    ];
    let root = runtime_tests::repo_root();
    let persist = root
        .join("target/tmp")
        .join(format!("runtime-{}", std::process::id()));
    let spec = WranglerCommand {
        port: free_port().expect("a free port"),
        persist_dir: persist.clone(),
        vars: short_timeouts(),
    };
    let mut wrangler = match Wrangler::start(&spec) {
        Ok(w) => w,
        Err(err) => {
            eprintln!("could not start the runtime: {err:#}");
            println!("0 passed, 1 failed");
            std::process::exit(1);
        }
    };
    let (mut passed, mut failed) = (0, 0);
    let mut run = |name: &str, f: &dyn Fn() -> Result<()>| {
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(f));
        match outcome {
            Ok(Ok(())) => {
                passed += 1;
                println!("test {name} ... ok ({:.1?})", started.elapsed());
            }
            Ok(Err(err)) => {
                failed += 1;
                println!("test {name} ... FAILED: {err:#}");
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED (panicked)");
            }
        }
    };
    for (name, case) in cases {
        run(name, &|| case(&wrangler));
    }
    run(
        "the registry survives a restart of the runtime",
        &registry_survives_restart,
    );
    if failed > 0 {
        eprintln!("--- wrangler output ---\n{}", wrangler.log());
    }
    wrangler.stop();
    let _ = std::fs::remove_dir_all(persist);
    println!("\n{passed} passed, {failed} failed");
    std::process::exit(i32::from(failed > 0));
}

// ---------- helpers ----------

fn caps() -> Capabilities {
    Capabilities {
        cores: 8,
        memory_mb: Some(16_384),
        gpu: false,
        agent: AgentClass::Native,
    }
}

fn device_hello(name: &str, credential: Option<DeviceCredential>) -> ToCoordinator {
    ToCoordinator::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        role: HelloRole::Device {
            name: name.into(),
            capabilities: caps(),
            credential,
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
fn join_device(w: &Wrangler, swarm: &str, name: &str) -> Result<(WsClient, DeviceCredential)> {
    let mut ws = WsClient::connect(&w.ws_url(swarm))?;
    ws.send(&device_hello(name, None))?;
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

fn join_dashboard(w: &Wrangler, swarm: &CreateSwarmResponse) -> Result<WsClient> {
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

fn stats(w: &Wrangler, swarm: &CreateSwarmResponse) -> Result<SwarmStats> {
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

    let swarm = w.create_swarm("lab")?;
    ensure!(shared_protocol::is_id(&swarm.swarm_id, &()).is_ok());
    ensure!(shared_protocol::is_secret(&swarm.owner_key, &()).is_ok());
    let other = w.create_swarm("lab")?;
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
        page.contains("/pkg/client.js"),
        "the SPA fallback serves index.html"
    );
    Ok(())
}

fn devices_register(w: &Wrangler) -> Result<()> {
    let swarm = w.create_swarm("registry")?;
    let mut dash = join_dashboard(w, &swarm)?;
    let mut devices = Vec::new();
    for i in 0..3 {
        devices.push(join_device(w, &swarm.swarm_id, &format!("device {i}"))?);
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
    let elsewhere = w.create_swarm("elsewhere")?;
    let _other = join_device(w, &elsewhere.swarm_id, "stranger")?;
    let snap = next_snapshot(&mut dash, 3 * SECOND)?;
    ensure!(snap.device_total == 3, "{snap:?}");

    // Devices get no dashboard snapshots: over more than one broadcast interval a heartbeating
    // device receives only its acknowledgements.
    let (ws, _) = &mut devices[0];
    let until = Instant::now() + 5 * SECOND;
    while Instant::now() < until {
        ws.send(&ToCoordinator::Heartbeat {})?;
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
    let swarm = w.create_swarm("cadence")?;
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

fn offline_detection(w: &Wrangler) -> Result<()> {
    let swarm = w.create_swarm("offline")?;
    let mut dash = join_dashboard(w, &swarm)?;
    let (mut silent, silent_cred) = join_device(w, &swarm.swarm_id, "silent")?;
    let (mut talker, talker_cred) = join_device(w, &swarm.swarm_id, "talker")?;
    let started = Instant::now();
    // The talker heartbeats every second; the silent one says nothing after its hello.
    let mut closed_after = None;
    while started.elapsed() < 9 * SECOND {
        talker.send(&ToCoordinator::Heartbeat {})?;
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
    let swarm = w.create_swarm("writes")?;
    let (mut device, _) = join_device(w, &swarm.swarm_id, "beater")?;
    let before = stats(w, &swarm)?.counters;
    for _ in 0..20 {
        device.send(&ToCoordinator::Heartbeat {})?;
        ensure!(matches!(
            device.recv_message(2 * SECOND)?,
            ToClient::HeartbeatAck { .. }
        ));
    }
    let after = stats(w, &swarm)?.counters;
    ensure!(
        after.messages_in == before.messages_in + 20,
        "{before:?} → {after:?}"
    );
    ensure!(
        after.storage_writes == before.storage_writes,
        "heartbeats wrote: {before:?} → {after:?}"
    );
    Ok(())
}

fn bad_messages(w: &Wrangler) -> Result<()> {
    let swarm = w.create_swarm("hostile")?;
    let mut dash = join_dashboard(w, &swarm)?;
    let (mut device, cred) = join_device(w, &swarm.swarm_id, "victim")?;
    let before = snapshot_where(&mut dash, 5 * SECOND, |s| s.online == 1)?;
    let writes = stats(w, &swarm)?.counters.storage_writes;

    let cases: &[(&str, ErrorCode)] = &[
        ("{not json", ErrorCode::Malformed),
        (r#"{"type":"format_disk"}"#, ErrorCode::UnknownType),
        (
            r#"{"type":"heartbeat","sneaky":true}"#,
            ErrorCode::Malformed,
        ),
        (
            r#"{"type":"hello","protocol":1,"role":{"kind":"dashboard","owner_key":null}}"#,
            ErrorCode::AlreadyIntroduced,
        ),
    ];
    for (text, code) in cases {
        device.send_text(text)?;
        expect_error(&mut device, *code).with_context(|| format!("sending {text}"))?;
    }
    device.send_binary(vec![0xff, 0x00, 0x13])?;
    expect_error(&mut device, ErrorCode::Malformed)?;
    // The device is still connected and served.
    device.send(&ToCoordinator::Heartbeat {})?;
    ensure!(matches!(
        device.recv_message(2 * SECOND)?,
        ToClient::HeartbeatAck { .. }
    ));

    // A bad hello on a new socket: refused and closed, nothing registered.
    let mut stranger = WsClient::connect(&w.ws_url(&swarm.swarm_id))?;
    stranger.send_text(r#"{"type":"hello","protocol":1,"role":{"kind":"device","name":"","capabilities":{"cores":0,"memory_mb":null,"gpu":false,"agent":"native"},"credential":null}}"#)?;
    expect_error(&mut stranger, ErrorCode::Invalid)?;
    ensure!(stranger.recv_close(3 * SECOND)? == Some(close_code::POLICY));
    let mut future = WsClient::connect(&w.ws_url(&swarm.swarm_id))?;
    let mut hello = device_hello("future", None);
    if let ToCoordinator::Hello(h) = &mut hello {
        h.protocol = 99;
    }
    future.send(&hello)?;
    expect_error(&mut future, ErrorCode::ProtocolMismatch)?;
    let mut forger = WsClient::connect(&w.ws_url(&swarm.swarm_id))?;
    forger.send(&device_hello(
        "forger",
        Some(DeviceCredential {
            device_id: cred.device_id.clone(),
            secret: "f".repeat(43),
        }),
    ))?;
    expect_error(&mut forger, ErrorCode::BadCredential)?;

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
                    d.capabilities.clone(),
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
    ensure!(after.device_total == 1);
    ensure!(
        after.counters.rejected >= before.counters.rejected + 8,
        "{:?}",
        after.counters
    );
    ensure!(
        stats(w, &swarm)?.counters.storage_writes == writes,
        "a refused message wrote to storage"
    );
    let security = after
        .log
        .iter()
        .filter(|e| e.text.starts_with("refused"))
        .count();
    ensure!(security >= 8, "security events logged: {security}");
    ensure!(
        !after.log.iter().any(|e| e.text.contains(&"f".repeat(43))),
        "a secret reached the log"
    );
    Ok(())
}

fn oversized_message(w: &Wrangler) -> Result<()> {
    let swarm = w.create_swarm("big")?;
    let (mut device, _) = join_device(w, &swarm.swarm_id, "big mouth")?;
    device.send_text(&format!(
        r#"{{"type":"heartbeat","pad":"{}"}}"#,
        "x".repeat(20_000)
    ))?;
    expect_error(&mut device, ErrorCode::TooLarge)?;
    ensure!(device.recv_close(3 * SECOND)? == Some(close_code::TOO_BIG));
    Ok(())
}

fn no_alarm_when_idle(w: &Wrangler) -> Result<()> {
    let swarm = w.create_swarm("idle")?;
    ensure!(
        stats(w, &swarm)?.alarm_at_ms.is_none(),
        "an alarm before anyone connected"
    );
    let dash = join_dashboard(w, &swarm)?;
    let (device, _) = join_device(w, &swarm.swarm_id, "leaver")?;
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

fn origin_check(w: &Wrangler) -> Result<()> {
    let swarm = w.create_swarm("origins")?;
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

/// Stops workerd, starts it again on the same persisted state: devices and their credentials
/// are still there.
fn registry_survives_restart() -> Result<()> {
    let root = runtime_tests::repo_root();
    let persist = root
        .join("target/tmp")
        .join(format!("restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&persist);
    let spec = WranglerCommand {
        port: free_port()?,
        persist_dir: persist.clone(),
        vars: short_timeouts(),
    };
    let (swarm, cred) = {
        let w = Wrangler::start(&spec)?;
        let swarm = w.create_swarm("durable")?;
        let (device, cred) = join_device(&w, &swarm.swarm_id, "survivor")?;
        device.close();
        (swarm, cred)
    }; // dropped: workerd stopped
    let spec = WranglerCommand {
        port: free_port()?,
        ..spec
    };
    let w = Wrangler::start(&spec)?;
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
