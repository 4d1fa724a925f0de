//! Deterministic tests of the coordinator core on a simulated clock: registry, heartbeats,
//! OFFLINE detection, the alarm, snapshots, refusals and restoring after eviction.

mod sim;

use sim::*;

use shared_protocol::{
    close_code, encode, DeviceCredential, DeviceStatus, ErrorCode, JoinProof, OwnerCommand,
    RunState, SwarmSnapshot, ToClient, ToCoordinator, WelcomeRole, OLDEST_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
};
use swarm_core::{hash_secret, Config, ConnId, CreateError, SwarmMeta};

#[test]
fn a_swarm_is_created_once() {
    let mut sim = Sim::new();
    assert!(sim.store.meta.is_some());
    let again = SwarmMeta {
        name: "other".into(),
        ..meta(0)
    };
    assert_eq!(
        sim.core.create(sim.now, again),
        Err(CreateError::AlreadyExists)
    );
    sim.drain();
    assert_eq!(sim.store.meta.as_ref().unwrap().name, "lab");
}

#[test]
fn a_device_registers_and_is_listed_online() {
    let mut sim = Sim::new();
    let (_, cred) = sim.join_device("laptop");
    let row = &sim.store.devices[&cred.device_id];
    assert_eq!(row.name, "laptop");
    assert_eq!(
        row.secret_hash,
        hash_secret(&cred.secret),
        "only the hash is stored"
    );
    let snap = sim.snapshot();
    assert_eq!((snap.device_total, snap.online), (1, 1));
    assert_eq!(snap.devices[0].capabilities, caps());
    assert_eq!(sim.status_of(&cred.device_id), DeviceStatus::Online);
}

#[test]
fn heartbeats_are_acknowledged_without_storage_writes() {
    let mut sim = Sim::new();
    let (conn, cred) = sim.join_device("phone");
    for _ in 0..30 {
        // Time passing may fire the alarm, which re-arms it (a write, counted); the heartbeat
        // itself writes nothing, not even the alarm.
        sim.advance(10_000);
        let writes = sim.writes;
        sim.send(conn, &ToCoordinator::Heartbeat { seen: None });
        assert_eq!(
            sim.take(conn),
            vec![ToClient::HeartbeatAck {
                server_time_ms: Some(sim.now)
            }]
        );
        assert_eq!(sim.writes, writes);
    }
    let counters = sim.core.counters();
    assert_eq!(
        (counters.storage_writes, counters.alarm_writes),
        (sim.writes as u64, sim.alarm_writes as u64)
    );
    assert_eq!(
        sim.status_of(&cred.device_id),
        DeviceStatus::Online,
        "5 minutes of heartbeats"
    );
}

#[test]
fn a_silent_device_goes_offline_after_the_timeout_and_is_closed() {
    let mut sim = Sim::new();
    // A dashboard is watching, so the 2 s ticks check the timeout (without one, the check runs
    // once a timeout: see the idle test below).
    let dash = sim.join_dashboard(None);
    let phone_joined = sim.now;
    let (conn, cred) = sim.join_device("phone");
    let (talker, talker_cred) = sim.join_device("laptop");
    let start = sim.now;
    // The talker keeps heartbeating; the phone stays silent.
    while sim.now < start + 59_000 {
        sim.advance(1_000);
        sim.send(talker, &ToCoordinator::Heartbeat { seen: None });
        sim.read_snapshots(dash);
    }
    assert_eq!(
        sim.status_of(&cred.device_id),
        DeviceStatus::Online,
        "59 s silent is still online"
    );
    for _ in 0..3 {
        sim.advance(1_000);
        sim.send(talker, &ToCoordinator::Heartbeat { seen: None });
    }
    assert_eq!(sim.status_of(&cred.device_id), DeviceStatus::Offline);
    assert_eq!(sim.closed.get(&conn), Some(&close_code::HEARTBEAT_TIMEOUT));
    assert_eq!(sim.status_of(&talker_cred.device_id), DeviceStatus::Online);
    // OFFLINE was detected by the 2 s alarm, so no later than one interval past the timeout.
    let row = &sim.store.devices[&cred.device_id];
    assert_eq!(
        row.last_seen_ms, phone_joined,
        "the stored row keeps the last time it was seen"
    );
    assert!(sim
        .snapshot()
        .log
        .iter()
        .any(|e| e.text.contains("OFFLINE")));
}

#[test]
fn snapshots_reach_dashboards_every_two_seconds_while_connected() {
    let mut sim = Sim::new();
    let dash = sim.join_dashboard(Some(OWNER_KEY));
    let device = sim.join_device("tablet").0;
    sim.advance(10_000);
    let msgs = sim.take(dash);
    let snaps = snapshots(&msgs);
    assert_eq!(snaps.len(), 5);
    for pair in snaps.windows(2) {
        assert_eq!(pair[1].now_ms - pair[0].now_ms, 2_000);
        assert_eq!(pair[1].seq, pair[0].seq + 1);
    }
    assert!(
        sim.take(device).is_empty(),
        "devices do not receive dashboard snapshots"
    );
}

#[test]
fn the_alarm_is_cleared_when_the_last_socket_leaves_and_not_rearmed() {
    let mut sim = Sim::new();
    assert_eq!(sim.alarm, None, "no alarm while nobody is connected");
    let dash = sim.join_dashboard(None);
    assert_eq!(sim.alarm, Some(sim.now + 2_000));
    sim.advance(4_000);
    assert_eq!(sim.core.counters().alarms, 2);
    sim.disconnect(dash);
    assert_eq!(sim.alarm, None);
    sim.advance(600_000);
    assert_eq!(
        sim.core.counters().alarms,
        2,
        "an idle swarm handles no alarms"
    );
    // A late alarm (already in flight when the last socket left) does not re-arm either.
    sim.core.handle_alarm(sim.now);
    sim.drain();
    assert_eq!(sim.alarm, None);
}

#[test]
fn disconnect_marks_the_device_offline_at_once() {
    let mut sim = Sim::new();
    let (conn, cred) = sim.join_device("laptop");
    let writes = sim.writes;
    sim.disconnect(conn);
    assert_eq!(sim.status_of(&cred.device_id), DeviceStatus::Offline);
    assert_eq!(
        sim.writes,
        writes + 2,
        "the device's row, and the alarm cleared (the last socket left)"
    );
    sim.disconnect(conn);
    assert_eq!(sim.writes, writes + 2, "a repeated close changes nothing");
}

#[test]
fn bad_messages_are_answered_and_change_nothing() {
    let mut sim = Sim::new();
    let dash = sim.join_dashboard(Some(OWNER_KEY));
    let (conn, _) = sim.join_device("laptop");
    let before = sim.snapshot();
    let writes = sim.writes;
    let cases: &[(&[u8], ErrorCode)] = &[
        (b"{not json", ErrorCode::Malformed),
        (b"{\"type\":\"shutdown\"}", ErrorCode::UnknownType),
        (b"{\"type\":\"heartbeat\",\"x\":1}", ErrorCode::Malformed),
        (&[0xff, 0xfe, 0x00], ErrorCode::Malformed),
    ];
    for (bytes, code) in cases {
        sim.send_raw(conn, bytes);
        assert_eq!(sim.last_error(conn), *code);
        assert!(
            !sim.closed.contains_key(&conn),
            "a connected device survives a bad message"
        );
    }
    sim.send(conn, &device_hello("again", None));
    assert_eq!(sim.last_error(conn), ErrorCode::AlreadyIntroduced);
    let after = sim.snapshot();
    assert_eq!(after.devices, before.devices);
    assert_eq!(sim.writes, writes);
    assert_eq!(after.counters.rejected, 5);
    let security: Vec<_> = after
        .log
        .iter()
        .filter(|e| e.text.starts_with("refused"))
        .collect();
    assert_eq!(security.len(), 5);
    let _ = sim.take(dash);
}

#[test]
fn an_oversized_message_closes_the_socket_with_1009() {
    let mut sim = Sim::new();
    let (conn, cred) = sim.join_device("laptop");
    let big = vec![b' '; 16 * 1024 + 1];
    sim.send_raw(conn, &big);
    assert_eq!(sim.last_error(conn), ErrorCode::TooLarge);
    assert_eq!(sim.closed.get(&conn), Some(&close_code::TOO_BIG));
    assert_eq!(sim.status_of(&cred.device_id), DeviceStatus::Offline);
}

#[test]
fn before_hello_only_hello_is_accepted() {
    let mut sim = Sim::new();
    let conn = sim.connect();
    sim.send(conn, &ToCoordinator::Heartbeat { seen: None });
    assert_eq!(sim.last_error(conn), ErrorCode::HelloRequired);
    assert_eq!(sim.closed.get(&conn), Some(&close_code::POLICY));

    let conn = sim.connect();
    sim.send_raw(conn, b"garbage");
    assert_eq!(sim.last_error(conn), ErrorCode::Malformed);
    assert_eq!(sim.closed.get(&conn), Some(&close_code::POLICY));
    assert_eq!(sim.snapshot().device_total, 0);
}

#[test]
fn a_protocol_mismatch_is_refused_clearly() {
    let mut sim = Sim::new();
    let conn = sim.connect();
    let mut hello = device_hello("old", None);
    if let ToCoordinator::Hello(h) = &mut hello {
        h.protocol = PROTOCOL_VERSION + 1;
    }
    sim.send(conn, &hello);
    match sim.take(conn).as_slice() {
        [ToClient::Error {
            code: ErrorCode::ProtocolMismatch,
            message,
            ..
        }] => {
            assert!(
                message.contains(&format!(
                    "speaks {OLDEST_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
                )),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.closed.get(&conn), Some(&close_code::POLICY));
    assert_eq!(sim.snapshot().device_total, 0);
}

#[test]
fn a_socket_that_never_says_hello_is_closed() {
    let mut sim = Sim::new();
    let conn = sim.connect();
    sim.advance(9_000);
    assert!(!sim.closed.contains_key(&conn));
    sim.advance(2_000);
    assert_eq!(sim.closed.get(&conn), Some(&close_code::HELLO_TIMEOUT));
    assert_eq!(sim.core.connection_count(), 0);
    assert_eq!(sim.alarm, None);
}

/// A new device's hello that joins with the owner key.
fn owner_key_hello(name: &str) -> ToCoordinator {
    new_device_hello(
        name,
        Some(JoinProof::OwnerKey {
            owner_key: OWNER_KEY.to_owned(),
        }),
    )
}

#[test]
fn a_join_under_load_waits_for_its_hello_and_a_silent_socket_is_still_closed() {
    let mut sim = Sim::new();
    let welcomed =
        |messages: &[ToClient]| matches!(messages.first(), Some(ToClient::Welcome { .. }));
    // The object falls behind: hellos reach it 8 s after their sockets were accepted.
    for i in 0..5 {
        let conn = sim.connect();
        sim.advance(8_000);
        sim.send(conn, &owner_key_hello(&format!("early {i}")));
        assert!(welcomed(&sim.take(conn)), "early {i}");
    }
    // So it waits twice that longer for a hello: 26 s instead of the configured 10 s.
    assert_eq!(sim.core.hello_timeout(), 10_000 + 2 * 8_000);
    let late = sim.connect();
    let silent = sim.connect();
    sim.advance(20_000);
    assert!(!sim.closed.contains_key(&late), "a join under load waits");
    sim.send(late, &owner_key_hello("late"));
    assert!(welcomed(&sim.take(late)));
    assert!(!sim.closed.contains_key(&silent));
    sim.advance(6_000);
    assert_eq!(sim.closed.get(&silent), Some(&close_code::HELLO_TIMEOUT));
    // A minute later, with no hello since, the grace ends at the next alarm: the one for the
    // next silent socket's deadline, which it still had (nothing woke the object meanwhile).
    sim.advance(60_000);
    let idle = sim.connect();
    sim.advance(26_000);
    assert_eq!(sim.closed.get(&idle), Some(&close_code::HELLO_TIMEOUT));
    assert_eq!(sim.core.hello_timeout(), 10_000);
    let next = sim.connect();
    sim.advance(10_000);
    assert_eq!(sim.closed.get(&next), Some(&close_code::HELLO_TIMEOUT));
}

#[test]
fn hellos_held_back_on_purpose_buy_at_most_six_times_the_timeout() {
    let mut sim = Sim::new();
    // Sockets that hold their hello back as long as they can, again and again.
    for i in 0..40 {
        let conn = sim.connect();
        sim.advance(sim.core.hello_timeout() - 1);
        sim.send(conn, &owner_key_hello(&format!("slow {i}")));
    }
    assert_eq!(sim.core.hello_timeout(), 60_000);
    let silent = sim.connect();
    sim.advance(60_000);
    assert_eq!(sim.closed.get(&silent), Some(&close_code::HELLO_TIMEOUT));
}

#[test]
fn while_the_object_is_busy_a_silent_socket_waits_the_longest_grace() {
    let mut sim = Sim::with_config(Config {
        results_per_second_budget: 50,
        ..Config::default()
    });
    let (device, _) = sim.join_device("busy");
    let silent = sim.connect();
    sim.advance(9_500);
    // 60 messages within the second before its deadline: the object is busy.
    for _ in 0..60 {
        sim.send(device, &ToCoordinator::Heartbeat { seen: None });
    }
    sim.advance(1_000);
    assert!(!sim.closed.contains_key(&silent), "its hello may be queued");
    assert_eq!(sim.core.hello_timeout(), 60_000);
    sim.advance(50_000);
    assert_eq!(sim.closed.get(&silent), Some(&close_code::HELLO_TIMEOUT));
}

#[test]
fn owner_key_is_checked_and_viewers_are_allowed() {
    let mut sim = Sim::new();
    let conn = sim.connect();
    sim.send(conn, &dashboard_hello(Some(OWNER_KEY)));
    assert!(matches!(
        sim.take(conn).as_slice(),
        [ToClient::Welcome {
            role: WelcomeRole::Dashboard { owner: true },
            ..
        }]
    ));
    let conn = sim.connect();
    sim.send(conn, &dashboard_hello(None));
    assert!(matches!(
        sim.take(conn).as_slice(),
        [ToClient::Welcome {
            role: WelcomeRole::Dashboard { owner: false },
            ..
        }]
    ));
    let conn = sim.connect();
    sim.send(
        conn,
        &dashboard_hello(Some("wrong-key-wrong-key-wrong-key-wrong-key-000")),
    );
    assert_eq!(sim.last_error(conn), ErrorCode::BadOwnerKey);
    assert_eq!(sim.closed.get(&conn), Some(&close_code::POLICY));
}

#[test]
fn a_device_resumes_with_its_credential_after_a_restart() {
    let mut sim = Sim::new();
    let (conn, cred) = sim.join_device("laptop");
    sim.disconnect(conn);
    sim.restart();
    assert_eq!(
        sim.snapshot().device_total,
        1,
        "the registry survives the restart"
    );
    assert_eq!(sim.status_of(&cred.device_id), DeviceStatus::Offline);

    let conn = sim.connect();
    sim.send(conn, &device_hello("laptop", Some(cred.clone())));
    // The welcome, then the benchmark every connection starts with.
    match sim.take(conn).as_slice() {
        [ToClient::Welcome {
            role:
                WelcomeRole::Device {
                    device_id,
                    credential: None,
                },
            ..
        }, ToClient::Lease { job_id, .. }] => {
            assert_eq!(device_id, &cred.device_id);
            assert_eq!(job_id, "benchmark");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.status_of(&cred.device_id), DeviceStatus::Online);
    assert_eq!(sim.snapshot().device_total, 1, "no duplicate registration");

    let conn = sim.connect();
    let forged = DeviceCredential {
        device_id: cred.device_id.clone(),
        secret: "x".repeat(43),
    };
    sim.send(conn, &device_hello("laptop", Some(forged)));
    assert_eq!(sim.last_error(conn), ErrorCode::BadCredential);
    assert_eq!(sim.closed.get(&conn), Some(&close_code::POLICY));
    assert_eq!(
        sim.status_of(&cred.device_id),
        DeviceStatus::Online,
        "the real device is untouched"
    );
}

#[test]
fn a_new_connection_of_the_same_device_replaces_the_old_one() {
    let mut sim = Sim::new();
    let (old, cred) = sim.join_device("laptop");
    let new = sim.connect();
    sim.send(new, &device_hello("laptop", Some(cred.clone())));
    assert_eq!(sim.closed.get(&old), Some(&close_code::REPLACED));
    assert_eq!(sim.status_of(&cred.device_id), DeviceStatus::Online);
    sim.disconnect(old);
    assert_eq!(
        sim.status_of(&cred.device_id),
        DeviceStatus::Online,
        "the old close is stale"
    );
}

#[test]
fn open_sockets_survive_eviction_through_their_attachments() {
    let mut sim = Sim::new();
    let dash = sim.join_dashboard(Some(OWNER_KEY));
    let (dev, cred) = sim.join_device("laptop");
    sim.restart();
    assert_eq!(sim.core.connection_count(), 2);
    assert_eq!(sim.status_of(&cred.device_id), DeviceStatus::Online);
    sim.send(dev, &ToCoordinator::Heartbeat { seen: None });
    assert!(matches!(
        sim.take(dev).as_slice(),
        [ToClient::HeartbeatAck { .. }]
    ));
    let _ = sim.take(dash);
    sim.advance(2_000);
    assert_eq!(
        snapshots(&sim.take(dash)).len(),
        1,
        "broadcasts resume after a restart"
    );
}

#[test]
fn snapshots_are_capped_but_totals_count_everyone() {
    let config = Config {
        snapshot_device_cap: 3,
        ..Config::default()
    };
    let mut sim = Sim::with_config(config);
    let mut conns = Vec::new();
    for i in 0..6 {
        conns.push(sim.join_device(&format!("d{i}")).0);
    }
    sim.disconnect(conns[0]);
    let snap = sim.snapshot();
    assert_eq!(
        (snap.device_total, snap.online, snap.devices.len()),
        (6, 5, 3)
    );
    assert!(
        snap.devices
            .iter()
            .all(|d| d.status == DeviceStatus::Online),
        "online first"
    );
}

#[test]
fn a_dashboard_that_stops_reading_is_closed_and_one_that_reads_is_kept() {
    let mut sim = Sim::new();
    let reader = sim.join_dashboard(None);
    let stuck = sim.join_dashboard(Some(OWNER_KEY));
    let mut stuck_got = 0;
    // 150 s of snapshots may go unconfirmed: 75 at 2 s.
    for _ in 0..100 {
        sim.advance(2_000);
        let seen = snapshots(&sim.take(reader)).last().map(|s| s.seq);
        sim.send(reader, &ToCoordinator::Heartbeat { seen });
        let _ = sim.take(reader);
        stuck_got += snapshots(&sim.take(stuck)).len();
        // The stuck one heartbeats, but never says it read anything.
        if !sim.closed.contains_key(&stuck) {
            sim.send(stuck, &ToCoordinator::Heartbeat { seen: None });
        }
    }
    assert_eq!(sim.closed.get(&stuck), Some(&close_code::NOT_READING));
    assert_eq!(stuck_got, 75, "it was sent its backlog of 75 and no more");
    assert!(
        !sim.closed.contains_key(&reader),
        "a dashboard that reads stays"
    );
    // A dashboard cannot claim to have read what was never sent.
    sim.send(
        reader,
        &ToCoordinator::Heartbeat {
            seen: Some(u64::MAX),
        },
    );
    sim.advance(160_000);
    assert_eq!(sim.closed.get(&reader), Some(&close_code::NOT_READING));
}

#[test]
fn idle_devices_without_a_dashboard_or_a_job_arm_no_alarm_and_write_nothing() {
    let mut sim = Sim::new();
    let devices: Vec<ConnId> = (0..10)
        .map(|i| sim.join_device(&format!("idle {i}")).0)
        .collect();
    // Only the hello deadlines had the alarm armed; once they pass, nothing is due.
    sim.advance(11_000);
    assert_eq!(sim.alarm, None, "nothing is due while nobody waits");
    let (alarms, writes) = (sim.core.counters().alarms, sim.writes);
    // Ten minutes of heartbeats, each device at its own phase.
    for second in 0..600u64 {
        for (i, conn) in devices.iter().enumerate() {
            if (second + i as u64).is_multiple_of(10) {
                sim.send(*conn, &ToCoordinator::Heartbeat { seen: None });
            }
        }
        sim.advance(1_000);
        assert_eq!(sim.alarm, None, "a heartbeat armed the alarm");
    }
    assert_eq!(sim.core.counters().alarms - alarms, 0, "the object woke");
    assert_eq!(sim.writes - writes, 0, "an idle swarm wrote");
    assert!(devices.iter().all(|d| !sim.closed.contains_key(d)));
    // A device that falls silent is not looked for while nobody waits on it; the first tick
    // after a dashboard arrives finds it, and the ticks stop again when the dashboard leaves.
    let silent = devices[0];
    for _ in 0..30 {
        for conn in &devices[1..] {
            sim.send(*conn, &ToCoordinator::Heartbeat { seen: None });
        }
        sim.advance(5_000);
    }
    assert!(!sim.closed.contains_key(&silent));
    let dash = sim.join_dashboard(None);
    sim.advance(2_000);
    assert_eq!(
        sim.closed.get(&silent),
        Some(&close_code::HEARTBEAT_TIMEOUT),
        "found OFFLINE by the first tick"
    );
    assert!(devices[1..].iter().all(|d| !sim.closed.contains_key(d)));
    let before = sim.core.counters().alarms;
    sim.advance(8_000);
    assert_eq!(sim.core.counters().alarms - before, 4, "a tick every 2 s");
    sim.disconnect(dash);
    sim.advance(30_000);
    assert_eq!(sim.alarm, None, "the ticks stopped with the dashboard gone");
}

#[test]
fn heartbeats_the_platform_answered_keep_a_device_online() {
    let mut sim = Sim::new();
    let (pinging, _) = sim.join_device("pinging");
    let (silent, _) = sim.join_device("silent");
    // A dashboard keeps the ticks going. Neither device sends anything the core sees; the
    // platform answered the first one's heartbeats and says when, before each alarm.
    sim.join_dashboard(None);
    for _ in 0..60 {
        let due = sim.alarm.expect("a tick while a dashboard watches");
        sim.now = due;
        sim.core
            .handle_pongs(&[(pinging, due.saturating_sub(3_000))]);
        sim.advance(0);
    }
    assert!(
        !sim.closed.contains_key(&pinging),
        "its pongs kept it online"
    );
    assert_eq!(
        sim.closed.get(&silent),
        Some(&close_code::HEARTBEAT_TIMEOUT)
    );
}

/// The share a device socket was last told: `(workers, duty, lent, throttle, run state, enabled)`.
fn share_of(sim: &Sim, conn: ConnId) -> (u16, u8, u16, u8, RunState, bool) {
    let Some(ToClient::Share(s)) = sim.shares.get(&conn) else {
        panic!("no share for {conn:?}");
    };
    (
        s.workers,
        s.duty_percent,
        s.lent_cores,
        s.throttle_percent,
        s.run_state,
        s.enabled,
    )
}

#[test]
fn a_device_is_told_its_share_at_its_welcome_and_whenever_it_changes() {
    let mut sim = Sim::new();
    let dash = sim.join_dashboard(Some(OWNER_KEY));
    let (conn, cred) = sim.join_device("laptop");
    use RunState::*;
    assert_eq!(share_of(&sim, conn), (4, 100, 4, 100, Running, true));
    sim.owner(OwnerCommand::SetThrottle { percent: 10 })
        .unwrap();
    assert_eq!(
        share_of(&sim, conn),
        (1, 40, 4, 10, Running, true),
        "0.4 cores: one worker, 40 % of the time"
    );
    sim.send(conn, &ToCoordinator::SetLend { cores: 1 });
    assert_eq!(share_of(&sim, conn), (1, 10, 1, 10, Running, true));
    sim.owner(OwnerCommand::SetThrottle { percent: 0 }).unwrap();
    assert_eq!(share_of(&sim, conn), (0, 100, 1, 0, Running, true));
    sim.owner(OwnerCommand::SetThrottle { percent: 75 })
        .unwrap();
    sim.send(conn, &ToCoordinator::SetLend { cores: 3 });
    assert_eq!(share_of(&sim, conn), (3, 75, 3, 75, Running, true));
    sim.owner(OwnerCommand::SetRunState { state: Paused })
        .unwrap();
    assert_eq!(share_of(&sim, conn), (3, 75, 3, 75, Paused, true));
    sim.owner(OwnerCommand::SetDeviceEnabled {
        device_id: cred.device_id.clone(),
        enabled: false,
    })
    .unwrap();
    assert_eq!(share_of(&sim, conn), (3, 75, 3, 75, Paused, false));
    assert!(
        !sim.shares.contains_key(&dash),
        "dashboards are not told a share"
    );
    // A new connection starts lending everything again, at the swarm's throttle.
    let again = sim.connect();
    sim.send(again, &device_hello("laptop", Some(cred)));
    assert_eq!(share_of(&sim, again), (3, 100, 4, 75, Paused, false));
}

#[test]
fn an_owners_name_for_a_device_outlives_its_hellos_and_a_restart() {
    let mut sim = Sim::new();
    let (conn, cred) = sim.join_device("Chrome on Linux");
    let device_id = cred.device_id.clone();
    let name_of = |sim: &Sim| {
        sim.snapshot()
            .devices
            .iter()
            .find(|d| d.id == device_id)
            .map(|d| d.name.clone())
    };
    let rename = |name: &str| OwnerCommand::RenameDevice {
        device_id: cred.device_id.clone(),
        name: name.into(),
    };
    assert_eq!(sim.owner(rename("")), Err(ErrorCode::Invalid));
    assert_eq!(sim.owner(rename("tab\there")), Err(ErrorCode::Invalid));
    assert_eq!(sim.owner(rename(&"x".repeat(65))), Err(ErrorCode::Invalid));
    assert_eq!(
        sim.owner(OwnerCommand::RenameDevice {
            device_id: "0".repeat(32),
            name: "lab 3".into(),
        }),
        Err(ErrorCode::DeviceNotFound)
    );
    assert_eq!(name_of(&sim).as_deref(), Some("Chrome on Linux"));

    sim.owner(rename("Lab bench 3")).unwrap();
    assert_eq!(name_of(&sim).as_deref(), Some("Lab bench 3"));
    assert!(sim
        .snapshot()
        .log
        .iter()
        .any(|e| e.text == "device 'Chrome on Linux' renamed to 'Lab bench 3'"));
    // The device reconnects with the name it chose for itself: the owner's stays.
    sim.disconnect(conn);
    let again = sim.connect();
    sim.send(again, &device_hello("Chrome on Linux", Some(cred.clone())));
    assert_eq!(name_of(&sim).as_deref(), Some("Lab bench 3"));
    sim.restart();
    assert_eq!(name_of(&sim).as_deref(), Some("Lab bench 3"));
}

/// `n` devices join and heartbeat for five minutes, each at its own phase of the 10 s
/// interval, with a dashboard that confirms what it reads. Returns the sim, the devices, the
/// dashboard, the size of its first (whole) snapshot and of every delta after it.
fn idle_swarm_watched(n: usize) -> (Sim, Vec<(ConnId, DeviceCredential)>, ConnId, usize) {
    let mut sim = Sim::new();
    let joined: Vec<(ConnId, DeviceCredential)> = (0..n)
        .map(|i| sim.join_device(&format!("idle {i}")))
        .collect();
    let dash = sim.join_dashboard(None);
    sim.advance(2_000);
    let full = snapshots(&sim.take(dash))
        .last()
        .map(|s| encode::<ToClient>(&ToClient::Snapshot((*s).clone())).len())
        .expect("a first, whole snapshot");
    for second in 0..300u64 {
        for (i, (conn, _)) in joined.iter().enumerate() {
            if (second + i as u64).is_multiple_of(10) {
                sim.send(*conn, &ToCoordinator::Heartbeat { seen: None });
            }
        }
        sim.advance(1_000);
        let seen = snapshots(&sim.take(dash)).last().map(|s| s.seq);
        if seen.is_some() {
            sim.send(dash, &ToCoordinator::Heartbeat { seen });
            let _ = sim.take(dash);
        }
    }
    (sim, joined, dash, full)
}

#[test]
fn a_dashboard_watching_200_idle_devices_is_sent_at_most_2_kb_a_tick() {
    let (mut sim, joined, dash, full) = idle_swarm_watched(200);
    let devices: Vec<ConnId> = joined.iter().map(|(conn, _)| *conn).collect();
    let sizes = &sim.delta_bytes;
    assert_eq!(
        sizes.len(),
        150,
        "a delta every 2 s after the first snapshot"
    );
    let largest = sizes.iter().copied().max().unwrap_or(0);
    assert!(
        full > 50_000,
        "the whole snapshot holds every row: {full} bytes"
    );
    assert!(largest <= 2_048, "a delta of {largest} bytes");
    // What the dashboard holds is what a whole snapshot says, last-seen times within 25 s.
    let held = sim.held[&dash].clone();
    let exact = sim.snapshot();
    assert_eq!(held.devices.len(), 200);
    for row in &held.devices {
        let now = exact.devices.iter().find(|d| d.id == row.id).unwrap();
        assert!(now.last_seen_ms - row.last_seen_ms <= 25_000);
    }
    // A device that misses its heartbeats is held at its exact last-seen time.
    let quiet = &joined[0].1.device_id;
    for _ in 0..20 {
        for conn in &devices[1..] {
            sim.send(*conn, &ToCoordinator::Heartbeat { seen: None });
        }
        sim.advance(2_000);
    }
    let _ = sim.take(dash);
    let exact = sim.snapshot();
    let row = |s: &SwarmSnapshot| s.devices.iter().find(|d| &d.id == quiet).unwrap().clone();
    assert_eq!(row(&exact).status, DeviceStatus::Online);
    assert!(exact.now_ms - row(&exact).last_seen_ms > 30_000);
    assert_eq!(row(&sim.held[&dash]), row(&exact));
}

/// The table in docs/BENCHMARKS.md: `cargo xtask bench` runs it (release build).
#[test]
#[ignore = "a benchmark table; run by cargo xtask bench"]
fn dashboard_bytes_per_tick_table() {
    println!("\nDashboard bytes per 2 s tick, idle devices heartbeating every 10 s (5 minutes):\n");
    println!(
        "| devices | whole snapshot (protocol 2, every tick) | delta, mean | delta, largest |"
    );
    println!("| ---: | ---: | ---: | ---: |");
    for n in [10, 50, 200] {
        let (sim, _, _, full) = idle_swarm_watched(n);
        let sizes = &sim.delta_bytes;
        let mean = sizes.iter().sum::<usize>() / sizes.len().max(1);
        let largest = sizes.iter().copied().max().unwrap_or(0);
        println!("| {n} | {full} | {mean} | {largest} |");
    }
}
