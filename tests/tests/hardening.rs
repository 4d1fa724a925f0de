//! Hostile input and restarts against the real runtime (workerd through `wrangler dev`, real
//! sockets): multi-byte payloads before and after authentication on every socket role and HTTP
//! route, refused without a restart of the object; a flood of bad joins that locks no honest
//! device out; the hello timeout; and `kill -9` of workerd — between a cheating device's lies
//! and its detection, between wrong code guesses, before a commit, and in the middle of a
//! workload job on a real agent — changing no outcome.

// ureq's error type is large; in test code that costs nothing worth boxing for.
#![allow(clippy::result_large_err)]

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use client::link::{Identity, Link, LinkEvent};
use runtime_tests::{await_job, http_agent, run_case, short_timeouts, Wrangler, WsClient};
use shared_protocol::{
    close_code, encode, AgentClass, Capabilities, DeviceCredential, ErrorCode, Hello, HelloRole,
    HttpError, JobResult, JobSpec, JoinProof, OwnerCommand, OwnerReply, SwarmStats, ToClient,
    ToCoordinator, WelcomeRole, Work, WorkResult, PROTOCOL_VERSION,
};

const SECOND: Duration = Duration::from_secs(1);

type Case = (&'static str, fn(&Wrangler) -> Result<()>);

fn main() {
    let root = runtime_tests::repo_root();
    let persist = |name: &str| {
        root.join("target/tmp")
            .join(format!("hardening-{name}-{}", std::process::id()))
    };
    let (mut passed, mut failed) = (0, 0);
    let mut tally = |ok: bool| {
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
    };
    // Dashboards here that do not confirm snapshots are closed after 8 s (4 snapshots).
    let mut vars = short_timeouts();
    vars.push(("DASHBOARD_READ_TIMEOUT_MS".into(), "8000".into()));
    match Wrangler::start_anywhere(&persist("shared"), vars) {
        Ok(mut w) => {
            let cases: &[Case] = &[
                (
                    "multi-byte text on every socket role and route is refused without a restart",
                    multi_byte_everywhere,
                ),
                (
                    "a socket that says no hello is closed at the hello timeout",
                    hello_timeout,
                ),
                (
                    "a flood of bad hellos and wrong codes locks out no link and no credential",
                    flood_locks_no_one_out,
                ),
                (
                    "heartbeats the platform answers keep a device online without waking the object",
                    heartbeats_without_waking,
                ),
                (
                    "a viewer that stops reading is closed; one that reads stays",
                    viewer_that_stops_reading,
                ),
            ];
            for (name, case) in cases {
                let ok = run_case(name, || case(&w));
                if !ok {
                    eprintln!("--- wrangler output ---\n{}", w.log());
                }
                tally(ok);
            }
            w.stop();
        }
        Err(err) => {
            eprintln!("could not start the runtime: {err:#}");
            tally(false);
        }
    }
    tally(run_case(
        "kill -9 between wrong code guesses: the limit holds",
        || guesses_across_kill9(&persist("guesses")),
    ));
    tally(run_case(
        "kill -9 between a cheat's lies and its detection: every lie is taken out",
        || lies_across_kill9(&persist("lies")),
    ));
    tally(run_case(
        "kill -9 before a commit: a device that reconnects sends its unacknowledged results \
         again, and none is lost or counted twice",
        || results_across_kill9(&persist("results")),
    ));
    tally(run_case(
        "kill -9 in the middle of a workload job on an agent: every item's result is the \
         native run's, once, in order",
        || workload_across_kill9(&persist("workload")),
    ));
    for name in ["shared", "guesses", "lies", "results", "workload"] {
        let _ = std::fs::remove_dir_all(persist(name));
    }
    println!("\n{passed} passed, {failed} failed");
    std::process::exit(i32::from(failed > 0));
}

// ---------- helpers ----------

struct Swarm {
    id: String,
    owner_key: String,
    token: String,
}

fn create(w: &Wrangler) -> Result<Swarm> {
    let created = w.create_swarm("hardened")?;
    let mut swarm = Swarm {
        id: created.swarm_id,
        owner_key: created.owner_key,
        token: String::new(),
    };
    let invite = OwnerCommand::CreateInvite {
        ttl_ms: Some(3_600_000),
        max_uses: None,
    };
    match owner(w, &swarm, &invite)? {
        OwnerReply::InviteCreated { token, .. } => swarm.token = token,
        other => bail!("expected an invite, got {other:?}"),
    }
    Ok(swarm)
}

fn owner(w: &Wrangler, swarm: &Swarm, command: &OwnerCommand) -> Result<OwnerReply> {
    Ok(post(
        w,
        &format!("/api/swarms/{}/owner", swarm.id),
        &swarm.owner_key,
        &encode(command),
    )?
    .into_json()?)
}

fn post(w: &Wrangler, path: &str, key: &str, body: &str) -> Result<ureq::Response, ureq::Error> {
    http_agent()
        .post(&format!("{}{path}", w.base))
        .set("authorization", &format!("Bearer {key}"))
        .send_string(body)
}

fn refused(result: Result<ureq::Response, ureq::Error>) -> Result<(u16, ErrorCode)> {
    match result {
        Err(ureq::Error::Status(status, resp)) => Ok((status, resp.into_json::<HttpError>()?.code)),
        Ok(resp) => bail!("expected a refusal, got {}", resp.status()),
        Err(err) => Err(err.into()),
    }
}

fn stats(w: &Wrangler, swarm: &Swarm) -> Result<SwarmStats> {
    Ok(http_agent()
        .get(&format!("{}/api/swarms/{}/stats", w.base, swarm.id))
        .set("authorization", &format!("Bearer {}", swarm.owner_key))
        .call()?
        .into_json()?)
}

/// What the test devices here say they are: a 2-core native agent.
fn two_cores() -> Capabilities {
    Capabilities {
        cores: 2,
        memory_mb: None,
        gpu: false,
        agent: AgentClass::Native,
        workloads: false,
    }
}

/// Submits π(10⁸) as the owner.
fn submit_primes(w: &Wrangler, swarm: &Swarm) -> Result<String> {
    let submit = OwnerCommand::SubmitJob {
        job: JobSpec::PrimeCount {
            lo: 0,
            hi: 100_000_000,
        },
    };
    match owner(w, swarm, &submit)? {
        OwnerReply::JobSubmitted { job_id } => Ok(job_id),
        other => bail!("expected a job id, got {other:?}"),
    }
}

fn device(name: &str, credential: Option<DeviceCredential>, invite: Option<JoinProof>) -> String {
    encode(&ToCoordinator::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        role: HelloRole::Device {
            name: name.into(),
            capabilities: two_cores(),
            credential,
            invite,
        },
    }))
}

fn dashboard(owner_key: Option<&str>) -> String {
    encode(&ToCoordinator::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        role: HelloRole::Dashboard {
            owner_key: owner_key.map(str::to_owned),
        },
    }))
}

/// Opens a socket, says `hello`, and expects a welcome.
fn welcomed(w: &Wrangler, swarm: &Swarm, hello: &str) -> Result<(WsClient, ToClient)> {
    let mut ws = WsClient::connect(&w.ws_url(&swarm.id))?;
    ws.send_text(hello)?;
    match ws.recv_message(5 * SECOND)? {
        welcome @ ToClient::Welcome { .. } => Ok((ws, welcome)),
        other => bail!("expected a welcome, got {other:?}"),
    }
}

/// A new device by link: its socket and credential.
fn join(w: &Wrangler, swarm: &Swarm, name: &str) -> Result<(WsClient, DeviceCredential)> {
    let proof = JoinProof::Token {
        token: swarm.token.clone(),
    };
    match welcomed(w, swarm, &device(name, None, Some(proof)))? {
        (
            ws,
            ToClient::Welcome {
                role:
                    WelcomeRole::Device {
                        credential: Some(c),
                        ..
                    },
                ..
            },
        ) => Ok((ws, c)),
        (_, other) => bail!("expected a credential, got {other:?}"),
    }
}

fn expect_error(ws: &mut WsClient, code: ErrorCode) -> Result<ToClient> {
    ws.recv_until(5 * SECOND, |m| match m {
        ToClient::Error { code: got, .. } if *got == code => Some(m.clone()),
        ToClient::Error { .. } => Some(m.clone()),
        _ => None,
    })
    .and_then(|m| match m {
        ToClient::Error { code: got, .. } if got == code => Ok(m),
        other => bail!("expected {code:?}, got {other:?}"),
    })
}

/// Answers every lease that arrives until `stop` says so, computing with the kernels unless
/// `lie` returns a made-up result for it, and claiming 2 s for each (so that chunks stay small
/// and a job spans many leases). Returns how many leases were answered.
fn work(
    ws: &mut WsClient,
    until: Instant,
    mut lie: impl FnMut(&Work) -> Option<WorkResult>,
    mut stop: impl FnMut() -> bool,
) -> Result<usize> {
    let mut answered = 0;
    while Instant::now() < until && !stop() {
        let lease = ws.recv_until(
            until.saturating_duration_since(Instant::now()),
            |m| match m {
                ToClient::Lease { lease_id, work, .. } => Some((*lease_id, work.clone())),
                _ => None,
            },
        );
        let Ok((lease_id, work)) = lease else {
            break;
        };
        let result = match lie(&work) {
            Some(made_up) => made_up,
            None => client_compute::compute(&work).map_err(anyhow::Error::msg)?,
        };
        ws.send(&ToCoordinator::ChunkResult {
            lease_id,
            result,
            compute_ms: 2_000,
            ticket: None,
        })?;
        answered += 1;
    }
    Ok(answered)
}

// ---------- cases ----------

/// `{"type":"aaaa…é"}` (63 × `a`, then `é`) once panicked the coordinator; so did a long
/// multi-byte unknown field in an HTTP body. Each variant goes to every socket role, before and
/// after the hello, and to every HTTP route that reads a body.
fn multi_byte_everywhere(w: &Wrangler) -> Result<()> {
    let swarm = create(w)?;
    let started = stats(w, &swarm)?.started_ms;
    let long_field = "é".repeat(299);
    let frames = [
        format!("{{\"type\":\"{}é\"}}", "a".repeat(63)),
        format!("{{\"type\":\"{}😀bbbb\"}}", "a".repeat(62)),
        format!("{{\"type\":\"heartbeat\",\"{long_field}\":1}}"),
        format!("{{\"type\":\"{}\"}}", "\u{200b}\u{202e}".repeat(40)),
    ];
    let codes = [
        ErrorCode::UnknownType,
        ErrorCode::UnknownType,
        ErrorCode::Malformed,
        ErrorCode::UnknownType,
    ];
    // Before any hello: refused and closed (1008).
    for (frame, code) in frames.iter().zip(codes) {
        let mut ws = WsClient::connect(&w.ws_url(&swarm.id))?;
        ws.send_text(frame)?;
        expect_error(&mut ws, code).with_context(|| format!("before hello: {frame}"))?;
        ensure!(ws.recv_close(3 * SECOND)? == Some(close_code::POLICY));
    }
    // After the hello, as a device, a viewer and the owner: refused, the socket stays open.
    let (dev, _) = join(w, &swarm, "target")?;
    let (viewer, _) = welcomed(w, &swarm, &dashboard(None))?;
    let (owner_ws, _) = welcomed(w, &swarm, &dashboard(Some(&swarm.owner_key)))?;
    for (role, mut ws) in [("device", dev), ("viewer", viewer), ("owner", owner_ws)] {
        for (frame, code) in frames.iter().zip(codes) {
            ws.send_text(frame)?;
            expect_error(&mut ws, code).with_context(|| format!("{role}: {frame}"))?;
        }
        // An owner command with a multi-byte unknown field: refused with its request.
        ws.send_text(&format!(
            "{{\"type\":\"owner\",\"request\":77,\"command\":{{\"command\":\"list_invites\",\"{long_field}\":1}}}}"
        ))?;
        match expect_error(&mut ws, ErrorCode::Malformed)? {
            ToClient::Error {
                request: Some(77), ..
            } => {}
            other => bail!("{role}: the refusal lost its request: {other:?}"),
        }
        ws.send(&ToCoordinator::Heartbeat { seen: None })?;
        ensure!(
            matches!(
                ws.recv_until(3 * SECOND, |m| matches!(m, ToClient::HeartbeatAck { .. })
                    .then_some(())),
                Ok(())
            ),
            "{role}: the socket no longer works"
        );
    }
    // Every HTTP route with a body, with and without the owner key.
    let body = format!("{{\"name\":\"x\",\"{long_field}\":1}}");
    let owner_path = format!("/api/swarms/{}/owner", swarm.id);
    let routes = [
        ("/api/swarms", "", body.clone()),
        (
            "/api/join",
            "",
            format!("{{\"code\":\"ABCDE-FGHJK\",\"{long_field}\":1}}"),
        ),
        (
            owner_path.as_str(),
            swarm.owner_key.as_str(),
            format!("{{\"command\":\"list_invites\",\"{long_field}\":1}}"),
        ),
        (
            owner_path.as_str(),
            "",
            format!("{{\"command\":\"list_invites\",\"{long_field}\":1}}"),
        ),
        (
            owner_path.as_str(),
            swarm.owner_key.as_str(),
            format!("{{\"command\":\"{}é\"}}", "a".repeat(63)),
        ),
    ];
    for (path, key, body) in &routes {
        let (status, code) =
            refused(post(w, path, key, body)).with_context(|| format!("{path} with {body:.40}"))?;
        ensure!(
            status == 400 && code == ErrorCode::Malformed,
            "{path}: {status} {code:?}"
        );
    }
    // A multi-byte job id in a path.
    let (status, _) = refused(
        http_agent()
            .get(&format!(
                "{}/api/swarms/{}/jobs/%C3%A9{}",
                w.base,
                swarm.id,
                "a".repeat(31)
            ))
            .call(),
    )?;
    ensure!(status == 404, "a multi-byte job id: {status}");
    // A body over the cap sent in chunks, without a Content-Length: refused while streaming,
    // at the chunk that passes the cap (on a connection of its own).
    let chunked = std::io::Cursor::new(vec![b' '; 20 * 1024]);
    let (status, code) = refused(
        ureq::AgentBuilder::new()
            .timeout(10 * SECOND)
            .build()
            .post(&format!("{}{owner_path}", w.base))
            .set("authorization", &format!("Bearer {}", swarm.owner_key))
            .set("connection", "close")
            .send(chunked),
    )?;
    ensure!(
        (status, code) == (413, ErrorCode::TooLarge),
        "a chunked 20 KiB body: {status} {code:?}"
    );
    let after = stats(w, &swarm)?;
    ensure!(
        after.started_ms == started,
        "the object restarted: started {started} then {}",
        after.started_ms
    );
    Ok(())
}

fn hello_timeout(w: &Wrangler) -> Result<()> {
    // The tests run with HELLO_TIMEOUT_MS = 4000 (the product's is 10 s).
    let swarm = create(w)?;
    let opened = Instant::now();
    let mut silent = WsClient::connect(&w.ws_url(&swarm.id))?;
    let code = silent.recv_close(15 * SECOND)?;
    let took = opened.elapsed();
    ensure!(
        code == Some(close_code::HELLO_TIMEOUT),
        "closed with {code:?}"
    );
    ensure!(
        took >= Duration::from_millis(3_900) && took <= Duration::from_millis(5_500),
        "closed after {took:?}, expected at the 4 s timeout"
    );
    Ok(())
}

/// 1,000 bad hellos and wrong codes a minute (about 17 a second, from many addresses) hit the
/// swarm while a new device joins by link and an old one reconnects by its credential.
fn flood_locks_no_one_out(w: &Wrangler) -> Result<()> {
    let swarm = create(w)?;
    let (old, cred) = join(w, &swarm, "old")?;
    old.close();
    let url = w.ws_url(&swarm.id);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let (url, stop) = (url.clone(), stop.clone());
        std::thread::spawn(move || -> usize {
            let mut sent = 0usize;
            let start = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let hello = match sent % 4 {
                    0 => device(
                        "x",
                        None,
                        Some(JoinProof::Code {
                            code: format!("ZZZZZ-{:05}", sent % 100_000),
                        }),
                    ),
                    1 => device(
                        "x",
                        None,
                        Some(JoinProof::Token {
                            token: "t".repeat(43),
                        }),
                    ),
                    2 => dashboard(Some(&"k".repeat(43))),
                    _ => device(
                        "x",
                        None,
                        Some(JoinProof::OwnerKey {
                            owner_key: "o".repeat(43),
                        }),
                    ),
                };
                let address = format!("10.{}.{}.{}", sent % 7, sent % 251, sent % 13);
                if let Ok(mut ws) = WsClient::connect_from(&url, &address) {
                    let _ = ws.send_text(&hello);
                    let _ = ws.recv_close(2 * SECOND);
                }
                sent += 1;
                // 1,000 a minute.
                let due = start + Duration::from_millis(60 * sent as u64);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            sent
        })
    };
    // Let the flood spend every shared budget first.
    std::thread::sleep(8 * SECOND);
    let result = (|| -> Result<()> {
        for round in 0..3 {
            let t = Instant::now();
            let (ws, _) = join(w, &swarm, &format!("new {round}"))?;
            let joined = t.elapsed();
            ws.close();
            let t = Instant::now();
            let (ws, welcome) = welcomed(w, &swarm, &device("old", Some(cred.clone()), None))?;
            let back = t.elapsed();
            ws.close();
            ensure!(matches!(welcome, ToClient::Welcome { .. }));
            ensure!(
                joined < 2 * SECOND && back < 2 * SECOND,
                "join by link took {joined:?}, reconnect {back:?}"
            );
            std::thread::sleep(2 * SECOND);
        }
        Ok(())
    })();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flood.join().unwrap_or(0);
    result?;
    ensure!(sent >= 200, "the flood sent only {sent} hellos");
    let OwnerReply::Audit { entries } = owner(w, &swarm, &OwnerCommand::AuditLog {})? else {
        bail!("expected the audit log")
    };
    ensure!(
        entries.iter().any(|e| e.text.contains("more event")),
        "the flood is summarised in the audit log"
    );
    Ok(())
}

/// The tests run with OFFLINE_AFTER_MS = 4000: a device that heartbeats for three times that
/// (answered by the platform, never reaching the object) stays online, and one that stops is
/// closed — at the latest by the first tick once a dashboard watches (the object does not
/// wake for an idle device's timeout while nobody waits on it).
fn heartbeats_without_waking(w: &Wrangler) -> Result<()> {
    let swarm = create(w)?;
    let (mut beating, _) = join(w, &swarm, "beating")?;
    let (mut silent, _) = join(w, &swarm, "silent")?;
    let before = stats(w, &swarm)?;
    let start = Instant::now();
    while start.elapsed() < 12 * SECOND {
        beating.send_text(shared_protocol::HEARTBEAT)?;
        beating.recv_until(2 * SECOND, |m| {
            matches!(
                m,
                ToClient::HeartbeatAck {
                    server_time_ms: None
                }
            )
            .then_some(())
        })?;
        std::thread::sleep(SECOND);
    }
    let after = stats(w, &swarm)?;
    ensure!(
        after.started_ms != before.started_ms
            || after.counters.messages_in == before.counters.messages_in,
        "heartbeats reached the object: {:?} → {:?}",
        before.counters,
        after.counters
    );
    let (_viewer, _) = welcomed(w, &swarm, &dashboard(None))?;
    ensure!(
        silent.recv_close(4 * SECOND)? == Some(close_code::HEARTBEAT_TIMEOUT),
        "the silent device was not closed"
    );
    beating.send(&ToCoordinator::Heartbeat { seen: None })?;
    ensure!(
        beating
            .recv_until(2 * SECOND, |m| matches!(m, ToClient::HeartbeatAck { .. })
                .then_some(()))
            .is_ok(),
        "the beating device was closed"
    );
    Ok(())
}

/// With DASHBOARD_READ_TIMEOUT_MS = 8000 (4 snapshots of 2 s): a viewer that never confirms a
/// snapshot is closed with 4006 within about 10 s; one that confirms what it reads stays.
fn viewer_that_stops_reading(w: &Wrangler) -> Result<()> {
    let swarm = create(w)?;
    let (mut stuck, _) = welcomed(w, &swarm, &dashboard(None))?;
    let (mut reader, _) = welcomed(w, &swarm, &dashboard(None))?;
    let start = Instant::now();
    let mut closed = None;
    while start.elapsed() < 14 * SECOND && closed.is_none() {
        let seen = reader.recv_until(3 * SECOND, |m| match m {
            ToClient::Snapshot(s) => Some(s.seq),
            _ => None,
        })?;
        reader.send(&ToCoordinator::Heartbeat { seen: Some(seen) })?;
        // The stuck one's frames pile up unread, until its close comes.
        if let Ok(runtime_tests::Received::Closed(code)) = stuck.recv(Duration::from_millis(10)) {
            closed = Some(code);
        }
    }
    let closed = match closed {
        Some(code) => code,
        None => stuck.recv_close(2 * SECOND)?,
    };
    ensure!(
        closed == Some(close_code::NOT_READING),
        "closed with {closed:?}"
    );
    ensure!(
        start.elapsed() >= 7 * SECOND,
        "closed after {:?}, before its 8 s",
        start.elapsed()
    );
    reader.recv_until(3 * SECOND, |m| {
        matches!(m, ToClient::Snapshot(_)).then_some(())
    })?;
    Ok(())
}

fn start(persist: &std::path::Path, vars: Vec<(String, String)>) -> Result<Wrangler> {
    Wrangler::start_anywhere(persist, vars)
}

/// Ten wrong codes from one address, `kill -9`, and the eleventh is still refused.
fn guesses_across_kill9(persist: &std::path::Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(persist);
    // A minute-long window, so that the restart happens well inside it.
    let mut vars = short_timeouts();
    vars.retain(|(k, _)| k != "RATE_WINDOW_MS");
    let mut w = start(persist, vars.clone())?;
    let swarm = create(&w)?;
    let guess = |w: &Wrangler| -> Result<ErrorCode> {
        let mut ws = WsClient::connect_from(&w.ws_url(&swarm.id), "10.0.0.1")?;
        ws.send_text(&device(
            "guesser",
            None,
            Some(JoinProof::Code {
                code: "ZZZZZ-ZZZZZ".into(),
            }),
        ))?;
        match ws.recv_message(5 * SECOND)? {
            ToClient::Error { code, .. } => Ok(code),
            other => bail!("expected a refusal, got {other:?}"),
        }
    };
    for i in 0..10 {
        ensure!(guess(&w)? == ErrorCode::InviteInvalid, "guess {i}");
    }
    ensure!(guess(&w)? == ErrorCode::RateLimited);
    // The limit is per address: another one may still guess (its window is its own).
    let mut other = WsClient::connect_from(&w.ws_url(&swarm.id), "10.0.0.2")?;
    other.send_text(&device(
        "guesser",
        None,
        Some(JoinProof::Code {
            code: "ZZZZZ-ZZZZZ".into(),
        }),
    ))?;
    match other.recv_message(5 * SECOND)? {
        ToClient::Error {
            code: ErrorCode::InviteInvalid,
            ..
        } => {}
        answer => bail!("another address was refused too: {answer:?}"),
    }
    w.kill9();
    let w = start(persist, vars)?;
    ensure!(
        guess(&w)? == ErrorCode::RateLimited,
        "after kill -9 the address got a fresh window"
    );
    Ok(())
}

/// A cheat that joined by invite lies on its prime chunks: they are merged but wait for a
/// replica (nobody else is there to compute one). workerd is killed with `kill -9`; after the
/// restart the cheat reconnects and one of the owner's own devices joins: its replicas
/// contradict the cheat, which is quarantined; every lie, from before the restart, is taken
/// out, and π(10⁸) comes out exact.
fn lies_across_kill9(persist: &std::path::Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(persist);
    let vars = short_timeouts();
    let mut w = start(persist, vars.clone())?;
    let swarm = create(&w)?;
    let (mut cheat, cred) = join(&w, &swarm, "cheat")?;
    let job_id = submit_primes(&w, &swarm)?;
    // Benchmarks count numbers from 2³⁰ on, beyond the job.
    let is_benchmark =
        |work: &Work| matches!(work, Work::PrimeCount { lo, .. } if *lo >= 100_000_000);
    let lies = std::cell::Cell::new(0);
    work(
        &mut cheat,
        Instant::now() + 10 * SECOND,
        |work| {
            if is_benchmark(work) {
                None
            } else {
                lies.set(lies.get() + 1);
                Some(WorkResult::PrimeCount { count: 1 })
            }
        },
        || lies.get() >= 1,
    )?;
    let lies = lies.get();
    ensure!(lies >= 1, "the cheat never lied");
    let before = await_job(&w.base, &swarm.id, &job_id, Duration::ZERO)?;
    ensure!(
        before.done_units > 0 && before.unverified_units == before.done_units,
        "its lies were merged, unverified: {before:?}"
    );
    // Accepted results are durable once committed (every 2 s here); this cheat does not send
    // them again after the crash, so the crash comes after the commit.
    std::thread::sleep(3 * SECOND);
    w.kill9();

    let w = start(persist, vars)?;
    let (mut cheat, _) = welcomed(&w, &swarm, &device("cheat", Some(cred.clone()), None))?;
    let after = await_job(&w.base, &swarm.id, &job_id, Duration::ZERO)?;
    ensure!(
        after.unverified_units == before.unverified_units,
        "still waiting for a replica after the restart: {after:?}"
    );
    // One of the owner's devices joins and computes the replicas and the rest; the cheat keeps
    // lying on whatever it gets.
    let mine = JoinProof::OwnerKey {
        owner_key: swarm.owner_key.clone(),
    };
    let (mut honest, _) = welcomed(&w, &swarm, &device("mine", None, Some(mine)))?;
    let deadline = Instant::now() + 120 * SECOND;
    let mut done = None;
    while Instant::now() < deadline {
        work(&mut honest, Instant::now() + 2 * SECOND, |_| None, || false)?;
        let _ = work(
            &mut cheat,
            Instant::now() + Duration::from_millis(100),
            |work| (!is_benchmark(work)).then_some(WorkResult::PrimeCount { count: 1 }),
            || false,
        );
        let job = await_job(&w.base, &swarm.id, &job_id, Duration::ZERO)?;
        if job.state == shared_protocol::JobState::Done {
            done = Some(job);
            break;
        }
    }
    let job = done.context("the job did not finish")?;
    ensure!(
        job.result == JobResult::PrimeCount { count: 5_761_455 },
        "π(10^8) came out as {:?}",
        job.result
    );
    // The cheat is quarantined, and its credential no longer gets work.
    let (mut dash, _) = welcomed(&w, &swarm, &dashboard(Some(&swarm.owner_key)))?;
    let snap = dash.recv_until(5 * SECOND, |m| match m {
        ToClient::Snapshot(snap) => Some(snap.clone()),
        _ => None,
    })?;
    let row = snap
        .devices
        .iter()
        .find(|d| d.id == cred.device_id)
        .context("the cheat's row")?;
    ensure!(row.quarantined && row.disputed > 0, "{row:?}");
    Ok(())
}

/// A device as the browser and the agent run it: the client's [`Link`] over a real socket,
/// keeping each result until the coordinator acknowledges it.
struct LinkedDevice {
    link: Link,
    ws: WsClient,
    leases: Vec<(u64, Work)>,
    acked: usize,
}

impl LinkedDevice {
    fn connect(w: &Wrangler, swarm: &Swarm, link: Link) -> Result<Self> {
        let mut device = Self {
            ws: WsClient::connect(&w.ws_url(&swarm.id))?,
            link,
            leases: Vec::new(),
            acked: 0,
        };
        let hello = device.link.on_open();
        device.ws.send(&hello)?;
        Ok(device)
    }

    /// Reads for `wait`, then sends whatever the link wants sent again.
    fn pump(&mut self, wait: Duration) -> Result<()> {
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.ws.recv(left.max(Duration::from_millis(1))) {
                Ok(runtime_tests::Received::Message(message)) => {
                    if let ToClient::Committed { lease_ids } = &message {
                        self.acked += lease_ids.len();
                    }
                    for event in self.link.on_message(now_ms(), message) {
                        if let LinkEvent::Lease { lease_id, work, .. } = event {
                            self.leases.push((lease_id, work));
                        }
                    }
                }
                Ok(runtime_tests::Received::Closed(code)) => bail!("closed: {code:?}"),
                Err(_) => break, // nothing more within `wait`
            }
            if Instant::now() >= until {
                break;
            }
        }
        for message in self.link.poll_resends(now_ms()) {
            self.ws.send(&message)?;
        }
        if let Some(heartbeat) = self.link.poll_heartbeat(now_ms()) {
            self.ws.send(&heartbeat)?;
        }
        Ok(())
    }

    /// Computes and answers the leases it holds (at most `n`).
    fn compute(&mut self, n: usize) -> Result<usize> {
        let take = n.min(self.leases.len());
        let leases: Vec<(u64, Work)> = self.leases.drain(..take).collect();
        let mut results = Vec::new();
        for (lease_id, work) in &leases {
            let result = client_compute::compute(work).map_err(anyhow::Error::msg)?;
            results.push((*lease_id, result, 1_000));
        }
        // Computed together, they go together: in one frame (protocol 5).
        for frame in self.link.chunk_results(now_ms(), results) {
            self.ws.send(&frame)?;
        }
        Ok(take)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One of the owner's devices (the client's own `Link`, protocol 4) computes prime chunks of
/// π(10⁸); the coordinator commits every 10 s here. Within that interval workerd is killed with
/// `kill -9`, losing what it had accepted but not committed. The device reconnects and, after
/// the welcome, sends its unacknowledged results again with their tickets: the job is back to
/// exactly where it was before the crash without computing them again, they are acknowledged
/// once committed, and π(10⁸) comes out exact.
fn results_across_kill9(persist: &std::path::Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(persist);
    let mut vars = short_timeouts();
    // This device computes between reads, as one worker would: it may be silent for a while.
    vars.retain(|(name, _)| name != "COMMIT_INTERVAL_MS" && name != "OFFLINE_AFTER_MS");
    vars.push(("COMMIT_INTERVAL_MS".into(), "10000".into()));
    vars.push(("OFFLINE_AFTER_MS".into(), "60000".into()));
    let mut w = start(persist, vars.clone())?;
    let swarm = create(&w)?;
    let link = Link::new(Identity::Device {
        name: "keeper".into(),
        capabilities: two_cores(),
        credential: None,
        invite: Some(JoinProof::OwnerKey {
            owner_key: swarm.owner_key.clone(),
        }),
    });
    let mut device = LinkedDevice::connect(&w, &swarm, link)?;
    device.pump(SECOND)?;
    ensure!(device.compute(1)? == 1, "no benchmark lease");
    let job_id = submit_primes(&w, &swarm)?;
    // Well within the first commit interval: two results sent, none committed.
    device.pump(SECOND)?;
    let answered = device.compute(2)?;
    ensure!(answered == 2, "two leases to answer: {:?}", device.leases);
    device.pump(Duration::from_millis(500))?;
    let before = await_job(&w.base, &swarm.id, &job_id, Duration::ZERO)?;
    let kept = device.link.unacknowledged();
    ensure!(
        before.done_units > 0 && kept == 2 && device.acked == 0,
        "two results accepted and kept, none acknowledged yet: {before:?}, {kept} kept, {} acked",
        device.acked
    );
    w.kill9();

    let w = start(persist, vars)?;
    let lost = await_job(&w.base, &swarm.id, &job_id, Duration::ZERO)?;
    ensure!(
        lost.done_units < before.done_units,
        "the crash took back what was not committed: {lost:?}"
    );
    // The same link reconnects with the credential it was given; after the welcome it sends
    // the two results again.
    let link = device.link;
    let mut device = LinkedDevice::connect(&w, &swarm, link)?;
    device.pump(SECOND)?;
    let deadline = Instant::now() + 10 * SECOND;
    let again = loop {
        let job = await_job(&w.base, &swarm.id, &job_id, Duration::ZERO)?;
        if job.done_units >= before.done_units || Instant::now() > deadline {
            break job;
        }
        device.pump(Duration::from_millis(200))?;
    };
    ensure!(
        (again.done_units, again.chunks_done, &again.result)
            == (before.done_units, before.chunks_done, &before.result),
        "the results sent again restored exactly what was accepted: {before:?} → {again:?}"
    );
    // Acknowledged with the next commit; then the device computes the rest.
    let deadline = Instant::now() + 30 * SECOND;
    while device.acked < 2 && Instant::now() < deadline {
        device.compute(1)?;
        device.pump(Duration::from_millis(500))?;
    }
    ensure!(
        device.acked >= 2,
        "the results sent again were acknowledged"
    );
    let deadline = Instant::now() + 180 * SECOND;
    let done = loop {
        device.compute(usize::MAX)?;
        device.pump(Duration::from_millis(200))?;
        let job = await_job(&w.base, &swarm.id, &job_id, Duration::ZERO)?;
        if job.state == shared_protocol::JobState::Done {
            break job;
        }
        ensure!(Instant::now() < deadline, "the job did not finish: {job:?}");
    };
    ensure!(
        done.result == JobResult::PrimeCount { count: 5_761_455 },
        "π(10^8) came out as {:?}: something was lost or counted twice",
        done.result
    );
    device.pump(SECOND)?;
    ensure!(
        device.link.unacknowledged() == 0,
        "{} results never acknowledged",
        device.link.unacknowledged()
    );
    Ok(())
}

/// `examples/pi` over 3,000 seeds on a real agent (the owner's, so nothing waits for a
/// replica); workerd and the agent are killed with SIGKILL once a fifth of the items are done,
/// both started again on the same state, and the job runs to its end. Every item's line is
/// then the native run's: nothing accepted was lost, nothing was written twice.
fn workload_across_kill9(persist: &std::path::Path) -> Result<()> {
    use runtime_tests::results::{all_results, expected_line, ResultsOf};
    const ITEMS: u64 = 3_000;
    let _ = std::fs::remove_dir_all(persist);
    let root = runtime_tests::repo_root();
    let agent_bin = runtime_tests::agents::build_agent(&root)?;
    let pi_path = root.join("target/examples/pi.wasm");
    let pi = std::fs::read(&pi_path)
        .with_context(|| format!("{} (built by cargo xtask examples)", pi_path.display()))?;
    let vars = short_timeouts();
    let mut w = start(persist, vars.clone())?;
    let swarm = create(&w)?;
    let module = {
        use sha2::{Digest, Sha256};
        workload::module::hex(&Sha256::digest(&pi).into())
    };
    http_agent()
        .put(&format!(
            "{}/api/swarms/{}/modules/{module}",
            w.base, swarm.id
        ))
        .set("authorization", &format!("Bearer {}", swarm.owner_key))
        .send_bytes(&pi)?;
    let state = persist.with_extension("agent.json");
    let _ = std::fs::remove_file(&state);
    let agent = |w: &Wrangler| {
        runtime_tests::agents::AgentProcess::spawn(
            &agent_bin,
            "keeper",
            &[
                format!("{}/s/{}", w.base, swarm.id),
                "--owner-key".into(),
                swarm.owner_key.clone(),
                "--cores".into(),
                "1".into(),
                "--state".into(),
                state.display().to_string(),
            ],
        )
    };
    let mut keeper = agent(&w)?;
    let job = JobSpec::Workload {
        module,
        start: 0,
        step: 1,
        items: ITEMS,
        time_limit_ms: 10_000,
        inputs: None,
    };
    let job_id = match owner(&w, &swarm, &OwnerCommand::SubmitJob { job })? {
        OwnerReply::JobSubmitted { job_id } => job_id,
        other => bail!("expected a job id, got {other:?}"),
    };
    let deadline = Instant::now() + 120 * SECOND;
    let before = loop {
        let job = await_job(&w.base, &swarm.id, &job_id, Duration::ZERO)?;
        if job.done_units >= ITEMS / 5 {
            break job;
        }
        ensure!(
            Instant::now() < deadline,
            "a fifth never got done: {job:?}\n{}",
            keeper.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure!(before.done_units < ITEMS, "the job ended before the crash");
    keeper.kill();
    w.kill9();

    let w = start(persist, vars)?;
    let mut keeper = agent(&w)?;
    let deadline = Instant::now() + 300 * SECOND;
    let done = loop {
        let job = await_job(&w.base, &swarm.id, &job_id, Duration::ZERO)?;
        if job.state == shared_protocol::JobState::Done {
            break job;
        }
        ensure!(
            Instant::now() < deadline,
            "the job did not finish after the restart: {job:?}\n{}",
            keeper.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    ensure!(done.done_units == ITEMS, "{done:?}");
    let swarm_results = ResultsOf {
        base: w.base.clone(),
        swarm_id: swarm.id.clone(),
        owner_key: swarm.owner_key.clone(),
    };
    let (lines, _) = all_results(&swarm_results, &job_id, 0)?;
    ensure!(lines.len() as u64 == ITEMS, "{} lines", lines.len());
    let runner = workload::native::Runner::new().map_err(anyhow::Error::msg)?;
    let compiled = runner.compile(&pi)?;
    for (item, line) in (0u64..).zip(&lines) {
        let got: serde_json::Value = serde_json::from_str(line)?;
        let want = expected_line(&runner, &compiled, item, item, 10 * SECOND);
        ensure!(got == want, "item {item}: got {got}, want {want}");
    }
    keeper.kill();
    let _ = std::fs::remove_file(&state);
    Ok(())
}
