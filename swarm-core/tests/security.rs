//! The security model on a simulated clock: owner authority, invites (rate limit, expiry,
//! revocation, use limits, short codes), device removal, rate limits, the audit log (the
//! fuzzer is in `fuzz.rs`).

mod sim;

use shared_protocol::{
    close_code, normalize_code, ChunkAnswer, DeviceStatus, ErrorCode, Hello, HelloRole, JoinProof,
    OwnerCommand, OwnerReply, RunState, ToClient, ToCoordinator, WorkResult,
};
use swarm_core::{hash_secret, Config, MAX_ALLOWANCE_CORES};

use sim::*;

fn owner_msg(request: u32, command: OwnerCommand) -> ToCoordinator {
    ToCoordinator::Owner { request, command }
}

#[test]
fn the_sixth_invite_in_a_minute_is_refused_until_the_window_frees() {
    let mut sim = Sim::new(); // created one invite at t0
    for _ in 0..4 {
        sim.advance(1_000);
        sim.create_invite(None, None).unwrap();
    }
    sim.advance(1_000);
    let command = shared_protocol::decode::<OwnerCommand>(
        br#"{"command":"create_invite","ttl_ms":null,"max_uses":null}"#,
        &shared_protocol::Limits::default(),
    )
    .unwrap();
    let refusal = sim
        .core
        .handle_owner_request(sim.now, OWNER_KEY, command)
        .unwrap_err();
    assert_eq!(refusal.code, ErrorCode::RateLimited);
    assert_eq!(
        refusal.retry_after_ms,
        Some(55_000),
        "the first invite frees its slot at t0 + 60 s"
    );
    sim.drain();
    assert_eq!(
        sim.store.invites.len(),
        5,
        "the refused invite was not stored"
    );
    sim.advance(55_000);
    assert!(sim.create_invite(None, None).is_ok());
}

#[test]
fn invite_secrets_are_stored_hashed_and_codes_registered() {
    let mut sim = Sim::new();
    let (token, code) = sim.create_invite(None, Some(3)).unwrap();
    let row = sim
        .store
        .invites
        .values()
        .find(|r| r.max_uses == Some(3))
        .unwrap();
    assert_eq!(row.token_hash, hash_secret(&token));
    let canonical = normalize_code(&code).unwrap();
    assert_eq!(row.code_hash, hash_secret(&canonical));
    assert!(sim.registered_codes.contains(&row.code_hash));
    assert_eq!(row.expires_ms, sim.now + 24 * 3_600_000, "24 h by default");
    assert_eq!(code.len(), 11, "shown as XXXXX-XXXXX");
}

#[test]
fn a_device_joins_by_link_token_by_code_or_with_the_owner_key() {
    let mut sim = Sim::new();
    let (token, code) = sim.create_invite(None, None).unwrap();
    assert!(sim.join_with("by link", JoinProof::Token { token }).is_ok());
    let typed = code.to_lowercase().replace('-', " ");
    assert!(sim
        .join_with("by code", JoinProof::Code { code: typed })
        .is_ok());
    assert!(sim
        .join_with(
            "owner's",
            JoinProof::OwnerKey {
                owner_key: OWNER_KEY.into()
            }
        )
        .is_ok());
    assert_eq!(sim.snapshot().online, 3);
    let log = sim.snapshot().log;
    assert!(log
        .iter()
        .any(|e| e.text.contains("'by code' registered with an invite code")));
}

#[test]
fn expired_revoked_exhausted_and_missing_invites_are_refused_and_change_nothing() {
    let mut sim = Sim::new();
    sim.advance(1);
    let (short_lived, _) = sim.create_invite(Some(60_000), None).unwrap();
    sim.advance(1);
    let (once, _) = sim.create_invite(None, Some(1)).unwrap();
    sim.advance(1);
    let (revoked, _) = sim.create_invite(None, None).unwrap();
    let OwnerReply::Invites { invites } = sim.owner(OwnerCommand::ListInvites {}).unwrap() else {
        panic!()
    };
    assert_eq!(invites.len(), 4);
    let revoked_id = invites[3].invite_id.clone(); // listed oldest first
    sim.owner(OwnerCommand::RevokeInvite {
        invite_id: revoked_id,
    })
    .unwrap();

    assert!(sim
        .join_with(
            "first",
            JoinProof::Token {
                token: once.clone()
            }
        )
        .is_ok());
    let devices = sim.snapshot().device_total;
    let stored = sim.store.clone();
    let cases = [
        (JoinProof::Token { token: once }, ErrorCode::InviteExhausted),
        (
            JoinProof::Token { token: revoked },
            ErrorCode::InviteRevoked,
        ),
        (
            JoinProof::Token {
                token: "x".repeat(43),
            },
            ErrorCode::InviteInvalid,
        ),
        (
            JoinProof::Code {
                code: "00000-00000".into(),
            },
            ErrorCode::InviteInvalid,
        ),
        (
            JoinProof::OwnerKey {
                owner_key: "y".repeat(43),
            },
            ErrorCode::BadOwnerKey,
        ),
    ];
    for (proof, code) in cases {
        assert_eq!(sim.join_with("intruder", proof).unwrap_err(), code);
    }
    let conn = sim.connect();
    sim.send(conn, &new_device_hello("no invite", None));
    assert_eq!(sim.last_error(conn), ErrorCode::InviteRequired);
    assert_eq!(
        sim.store.guesses.len(),
        1,
        "the wrong code is stored, for the guessing limit"
    );
    let mut after = sim.store.clone();
    after.guesses.clear();
    after.writes = stored.writes;
    assert_eq!(after, stored, "refused joins write nothing else");

    sim.advance(60_000);
    assert_eq!(
        sim.join_with("late", JoinProof::Token { token: short_lived })
            .unwrap_err(),
        ErrorCode::InviteExpired
    );
    assert_eq!(sim.snapshot().device_total, devices);
    let OwnerReply::Invites { invites } = sim.owner(OwnerCommand::ListInvites {}).unwrap() else {
        panic!()
    };
    assert_eq!(
        invites.len(),
        1,
        "only the unlimited first invite is still live"
    );
}

fn guess(sim: &mut Sim, source: &str) -> ErrorCode {
    let conn = sim.connect_from(source);
    let hello = new_device_hello(
        "guesser",
        Some(JoinProof::Code {
            code: "ZZZZZ-ZZZZZ".into(),
        }),
    );
    sim.send(conn, &hello);
    sim.last_error(conn)
}

#[test]
fn wrong_codes_are_limited_per_address_and_never_lock_out_links_or_credentials() {
    let mut sim = Sim::new();
    let (old, cred) = sim.join_device("old");
    sim.disconnect(old);
    for _ in 0..10 {
        assert_eq!(guess(&mut sim, "10.0.0.1"), ErrorCode::InviteInvalid);
    }
    assert_eq!(
        guess(&mut sim, "10.0.0.1"),
        ErrorCode::RateLimited,
        "this address is done for the minute"
    );
    assert_eq!(
        guess(&mut sim, "10.0.0.2"),
        ErrorCode::InviteInvalid,
        "another address may still try"
    );
    // A flood of wrong codes from many addresses spends the shared budget ...
    for n in 0..200 {
        let _ = guess(&mut sim, &format!("10.1.{}.{}", n / 250, n % 250));
    }
    let slowed = sim.connect_from("10.9.9.9");
    sim.send(
        slowed,
        &new_device_hello(
            "typist",
            Some(JoinProof::Code {
                code: "ZZZZZ-ZZZZZ".into(),
            }),
        ),
    );
    let Some(ToClient::Error {
        code: ErrorCode::RateLimited,
        retry_after_ms: Some(wait),
        ..
    }) = sim.take(slowed).pop()
    else {
        panic!("codes are slowed while the budget is spent");
    };
    assert!(wait <= 2_000, "slowed, not locked out: {wait} ms");
    // ... but a link joins and a credential reconnects at once.
    let token = sim.token.clone();
    assert!(sim.join_with("new", JoinProof::Token { token }).is_ok());
    let back = sim.connect_from("10.0.0.1");
    sim.send(back, &device_hello("old", Some(cred)));
    assert!(matches!(
        sim.take(back).first(),
        Some(ToClient::Welcome { .. })
    ));
    // After the wait, a code is tried again.
    sim.advance(wait);
    assert_eq!(guess(&mut sim, "10.9.9.9"), ErrorCode::InviteInvalid);
}

#[test]
fn guessing_limits_hold_across_a_restart() {
    let mut sim = Sim::new();
    for _ in 0..10 {
        assert_eq!(guess(&mut sim, "10.0.0.1"), ErrorCode::InviteInvalid);
    }
    for _ in 0..3 {
        sim.advance(1_000);
        sim.restart();
        assert_eq!(
            guess(&mut sim, "10.0.0.1"),
            ErrorCode::RateLimited,
            "a restart does not give the address a fresh window"
        );
    }
    sim.advance(60_000);
    sim.restart();
    assert_eq!(guess(&mut sim, "10.0.0.1"), ErrorCode::InviteInvalid);
    assert_eq!(
        sim.store.guesses.len(),
        1,
        "the guesses of an earlier window are pruned when the object starts"
    );
}

#[test]
fn the_invite_limit_holds_across_a_restart() {
    let mut sim = Sim::new(); // one invite already created
    for _ in 0..4 {
        assert!(sim.create_invite(None, None).is_ok());
    }
    sim.advance(1_000);
    sim.restart();
    assert_eq!(
        sim.create_invite(None, None).unwrap_err(),
        ErrorCode::RateLimited
    );
    sim.advance(60_000);
    sim.restart();
    assert!(sim.create_invite(None, None).is_ok());
}

#[test]
fn every_owner_action_is_refused_for_devices_and_viewers() {
    let mut sim = Sim::new();
    let (device, cred) = sim.join_device("sneaky");
    let viewer = sim.join_dashboard(None);
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
            state: RunState::Stopped,
        },
        OwnerCommand::SetThrottle { percent: 0 },
        OwnerCommand::AuditLog {},
    ];
    let before = sim.snapshot();
    let writes = sim.writes;
    for (i, command) in commands.iter().enumerate() {
        for conn in [device, viewer] {
            sim.send(conn, &owner_msg(i as u32, command.clone()));
            match sim.take(conn).as_slice() {
                [ToClient::Error {
                    code: ErrorCode::Forbidden,
                    request: Some(r),
                    ..
                }] => assert_eq!(*r, i as u32),
                other => panic!("{command:?}: {other:?}"),
            }
        }
        let refusal = sim.owner_with_key("not-the-owner-key-not-the-owner-key-xx", command.clone());
        assert_eq!(refusal.unwrap_err(), ErrorCode::BadOwnerKey);
    }
    let after = sim.snapshot();
    assert_eq!(after.devices, before.devices);
    assert_eq!(
        (after.run_state, after.throttle_percent),
        (RunState::Running, 100)
    );
    assert_eq!(sim.writes, writes);
    let OwnerReply::Audit { entries } = sim.owner(OwnerCommand::AuditLog {}).unwrap() else {
        panic!()
    };
    assert_eq!(
        entries.len(),
        commands.len() * 3,
        "every refusal is an audit event"
    );
    assert!(entries.iter().all(|e| !e.text.contains(OWNER_KEY)));
}

#[test]
fn the_owner_dashboard_runs_commands_over_its_socket() {
    let mut sim = Sim::new();
    let dash = sim.join_dashboard(Some(OWNER_KEY));
    let (_, cred) = sim.join_device("worker");
    sim.send(
        dash,
        &owner_msg(1, OwnerCommand::SetThrottle { percent: 40 }),
    );
    sim.send(
        dash,
        &owner_msg(
            2,
            OwnerCommand::SetRunState {
                state: RunState::Paused,
            },
        ),
    );
    sim.send(
        dash,
        &owner_msg(
            3,
            OwnerCommand::SetDeviceEnabled {
                device_id: cred.device_id.clone(),
                enabled: false,
            },
        ),
    );
    let replies: Vec<_> = sim
        .take(dash)
        .into_iter()
        .filter(|m| matches!(m, ToClient::OwnerResult { .. }))
        .collect();
    assert_eq!(replies.len(), 3);
    let snap = sim.snapshot();
    assert_eq!(
        (snap.run_state, snap.throttle_percent),
        (RunState::Paused, 40)
    );
    assert!(!snap.devices[0].enabled);
    let row = sim.store.meta.clone().unwrap();
    assert_eq!(
        (row.run_state, row.throttle_percent),
        (RunState::Paused, 40),
        "persisted"
    );
    assert!(!sim.store.devices[&cred.device_id].enabled, "persisted");
    sim.restart();
    assert_eq!(sim.snapshot().throttle_percent, 40, "survives a restart");
}

#[test]
fn a_removed_device_is_closed_and_cannot_come_back() {
    let mut sim = Sim::new();
    let (conn, cred) = sim.join_device("stolen phone");
    sim.owner(OwnerCommand::RemoveDevice {
        device_id: cred.device_id.clone(),
    })
    .unwrap();
    assert_eq!(sim.closed.get(&conn), Some(&close_code::REMOVED));
    assert!(!sim.store.devices.contains_key(&cred.device_id));
    assert_eq!(sim.snapshot().device_total, 0);
    let again = sim.connect();
    sim.send(again, &device_hello("stolen phone", Some(cred.clone())));
    assert_eq!(sim.last_error(again), ErrorCode::BadCredential);
    sim.restart();
    let after_restart = sim.connect();
    sim.send(after_restart, &device_hello("stolen phone", Some(cred)));
    assert_eq!(sim.last_error(after_restart), ErrorCode::BadCredential);
    assert_eq!(
        sim.owner(OwnerCommand::RemoveDevice {
            device_id: "0".repeat(32)
        }),
        Err(ErrorCode::DeviceNotFound)
    );
}

#[test]
fn a_flooding_socket_is_refused_and_closed() {
    let mut sim = Sim::new();
    let (conn, cred) = sim.join_device("flooder");
    for _ in 0..98 {
        sim.send(conn, &ToCoordinator::Heartbeat { seen: None });
    }
    assert!(
        !sim.closed.contains_key(&conn),
        "the hello, the benchmark answer and 98 heartbeats fit the burst of 100"
    );
    sim.send(conn, &ToCoordinator::Heartbeat { seen: None });
    assert_eq!(sim.last_error(conn), ErrorCode::RateLimited);
    assert_eq!(sim.closed.get(&conn), Some(&close_code::RATE_LIMITED));
    assert_eq!(sim.status_of(&cred.device_id), DeviceStatus::Offline);
}

#[test]
fn a_steady_device_is_never_rate_limited() {
    let mut sim = Sim::new();
    let (conn, _) = sim.join_device("steady");
    for _ in 0..2_000 {
        sim.advance(50); // 20 messages per second, the sustained limit
        sim.send(conn, &ToCoordinator::Heartbeat { seen: None });
    }
    assert!(!sim.closed.contains_key(&conn));
}

/// `n` results in one frame, for leases nobody holds (they change nothing when taken).
fn frame_of(n: u64) -> ToCoordinator {
    ToCoordinator::ChunkResults {
        results: (0..n)
            .map(|i| ChunkAnswer {
                lease_id: (1 << 40) + i,
                result: WorkResult::PrimeCount { count: 1 },
                compute_ms: 1,
                ticket: None,
            })
            .collect(),
    }
}

#[test]
fn a_frame_of_results_counts_as_that_many_messages_against_a_limit_that_grows_with_lent_cores() {
    // A burst of 10 and 5 a second; a device lending 4 cores may hold 8 more and send 4 more.
    let mut sim = Sim::with_config(Config {
        message_burst: 10,
        messages_per_second: 5,
        ..Config::default()
    });
    let (a, _) = sim.join_device("a");
    let (b, _) = sim.join_device("b");
    sim.advance(10_000); // both buckets full again: 18 each
    let unused = sim.snapshot().counters.results_unused;
    sim.send(a, &frame_of(18));
    assert!(
        !sim.closed.contains_key(&a),
        "18 results in one frame fit the widened burst"
    );
    assert_eq!(
        sim.snapshot().counters.results_unused,
        unused + 18,
        "each was handled"
    );
    sim.send(a, &ToCoordinator::Heartbeat { seen: None });
    assert_eq!(
        sim.last_error(a),
        ErrorCode::RateLimited,
        "the frame took 18 messages' worth"
    );
    assert_eq!(sim.closed.get(&a), Some(&close_code::RATE_LIMITED));
    // A frame larger than what is left is refused whole: none of it is handled.
    let unused = sim.snapshot().counters.results_unused;
    sim.send(b, &frame_of(19));
    assert_eq!(sim.last_error(b), ErrorCode::RateLimited);
    assert_eq!(sim.closed.get(&b), Some(&close_code::RATE_LIMITED));
    assert_eq!(sim.snapshot().counters.results_unused, unused);
}

#[test]
fn a_device_claiming_many_cores_gets_no_more_room_than_the_cap() {
    let mut sim = Sim::with_config(Config {
        message_burst: 10,
        messages_per_second: 5,
        ..Config::default()
    });
    let conn = sim.connect();
    let mut hello = new_device_hello(
        "claims 1024 cores",
        Some(JoinProof::OwnerKey {
            owner_key: OWNER_KEY.into(),
        }),
    );
    if let ToCoordinator::Hello(Hello {
        role: HelloRole::Device { capabilities, .. },
        ..
    }) = &mut hello
    {
        capabilities.cores = 1024;
    }
    sim.send(conn, &hello);
    sim.answer_benchmark(conn, 2);
    sim.advance(60_000);
    // Room for 10 + 2 × 64 = 138 at once, not 10 + 2 × 1024.
    let room = 10 + 2 * u64::from(MAX_ALLOWANCE_CORES);
    let full = shared_protocol::MAX_RESULTS_PER_FRAME as u64;
    sim.send(conn, &frame_of(full));
    sim.send(conn, &frame_of(full));
    assert!(!sim.closed.contains_key(&conn));
    sim.send(conn, &frame_of(room - 2 * full + 1));
    assert_eq!(sim.last_error(conn), ErrorCode::RateLimited);
}

/// The shared corpus of bad messages (also replayed against the real runtime).
fn corpus() -> serde_json::Value {
    serde_json::from_str(include_str!("../../tests/corpus/bad_messages.json"))
        .expect("the corpus is JSON")
}

fn expected_code(case: &serde_json::Value) -> ErrorCode {
    serde_json::from_value(case["code"].clone()).expect("a known error code")
}

#[test]
fn the_bad_message_corpus_gets_its_documented_errors_and_changes_nothing() {
    let mut sim = Sim::new();
    let (device, cred) = sim.join_device("target");
    let before = sim.snapshot();
    let stored = sim.store.clone();
    let corpus = corpus();
    for case in corpus["after_hello"].as_array().unwrap() {
        sim.send_raw(device, case["text"].as_str().unwrap().as_bytes());
        assert_eq!(
            sim.last_error(device),
            expected_code(case),
            "{}",
            case["name"]
        );
        assert!(
            !sim.closed.contains_key(&device),
            "{} closed the device",
            case["name"]
        );
    }
    for case in corpus["as_hello"].as_array().unwrap() {
        let conn = sim.connect();
        sim.send_raw(conn, case["text"].as_str().unwrap().as_bytes());
        assert_eq!(
            sim.last_error(conn),
            expected_code(case),
            "{}",
            case["name"]
        );
        assert_eq!(
            sim.closed.get(&conn),
            Some(&close_code::POLICY),
            "{}",
            case["name"]
        );
    }
    let after = sim.snapshot();
    assert_eq!(after.devices, before.devices);
    assert_eq!(
        (after.run_state, after.throttle_percent),
        (before.run_state, before.throttle_percent)
    );
    let mut after = sim.store.clone();
    after.guesses.clear();
    after.writes = stored.writes;
    assert_eq!(
        after, stored,
        "no refused message wrote anything but a wrong code's guess"
    );
    assert!(sim.store.devices.contains_key(&cred.device_id));
}
