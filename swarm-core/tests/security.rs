//! The security model on a simulated clock: owner authority, invites (rate limit, expiry,
//! revocation, use limits, short codes), device removal, rate limits, the audit log, and a
//! mutation fuzzer over the message entry.

mod sim;

use shared_protocol::{
    close_code, encode, normalize_code, DeviceStatus, ErrorCode, JoinProof, OwnerCommand,
    OwnerReply, RunState, ToClient, ToCoordinator,
};
use swarm_core::{hash_secret, ConnId};

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
    let refusal = sim
        .core
        .handle_owner_request(
            sim.now,
            OWNER_KEY,
            OwnerCommand::CreateInvite {
                ttl_ms: None,
                max_uses: None,
            },
        )
        .unwrap_err();
    assert_eq!(refusal.code, ErrorCode::RateLimited);
    assert_eq!(
        refusal.retry_after_ms,
        Some(55_000),
        "the first invite frees its slot at t0 + 60 s"
    );
    sim.drain();
    assert_eq!(
        sim.invite_rows.len(),
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
        .invite_rows
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
    let writes = sim.writes;
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
    assert_eq!(sim.writes, writes, "refused joins write nothing");

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

#[test]
fn failed_join_attempts_are_rate_limited_per_swarm() {
    let mut sim = Sim::new();
    for _ in 0..30 {
        let guess = JoinProof::Code {
            code: "ZZZZZ-ZZZZZ".into(),
        };
        assert_eq!(
            sim.join_with("guesser", guess).unwrap_err(),
            ErrorCode::InviteInvalid
        );
    }
    let token = sim.token.clone();
    assert_eq!(
        sim.join_with(
            "honest",
            JoinProof::Token {
                token: token.clone()
            }
        )
        .unwrap_err(),
        ErrorCode::RateLimited,
        "past the limit even a good invite waits"
    );
    sim.advance(60_000);
    assert!(sim.join_with("honest", JoinProof::Token { token }).is_ok());
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
        let refusal = sim.core.handle_owner_request(
            sim.now,
            "not-the-owner-key-not-the-owner-key-xx",
            command.clone(),
        );
        assert_eq!(refusal.unwrap_err().code, ErrorCode::BadOwnerKey);
        sim.drain();
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
    let row = sim.swarm_row.clone().unwrap();
    assert_eq!(
        (row.run_state, row.throttle_percent),
        (RunState::Paused, 40),
        "persisted"
    );
    assert!(!sim.device_rows[&cred.device_id].enabled, "persisted");
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
    assert!(!sim.device_rows.contains_key(&cred.device_id));
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
        sim.send(conn, &ToCoordinator::Heartbeat {});
    }
    assert!(
        !sim.closed.contains_key(&conn),
        "the hello, the benchmark answer and 98 heartbeats fit the burst of 100"
    );
    sim.send(conn, &ToCoordinator::Heartbeat {});
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
        sim.send(conn, &ToCoordinator::Heartbeat {});
    }
    assert!(!sim.closed.contains_key(&conn));
}

/// Small deterministic generator for the fuzzer (xorshift64*).
struct Fuzz(u64);

impl Fuzz {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A valid message with a few bytes flipped, cut, duplicated or replaced.
    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut bytes = seed.to_vec();
        for _ in 0..=self.below(4) {
            if bytes.is_empty() {
                break;
            }
            let at = self.below(bytes.len());
            match self.below(5) {
                0 => bytes[at] = self.next() as u8,
                1 => bytes.truncate(at),
                2 => bytes.insert(at, b"{}[]\",:0-9eE\\"[self.below(13)]),
                3 => {
                    let tail = bytes[at..].to_vec();
                    bytes.extend_from_slice(&tail[..tail.len().min(64)]);
                }
                _ => {
                    bytes.remove(at);
                }
            }
        }
        bytes
    }
}

#[test]
fn fuzzed_messages_never_panic_and_never_change_the_registry_unasked() {
    let mut sim = Sim::new();
    let (device, cred) = sim.join_device("target");
    let owner = sim.join_dashboard(Some(OWNER_KEY));
    let seeds: Vec<Vec<u8>> = vec![
        encode(&ToCoordinator::Heartbeat {}).into_bytes(),
        encode(&device_hello("x", Some(cred.clone()))).into_bytes(),
        encode(&new_device_hello(
            "x",
            Some(JoinProof::Code {
                code: "ABCDE-FGHJK".into(),
            }),
        ))
        .into_bytes(),
        encode(&owner_msg(
            1,
            OwnerCommand::RemoveDevice {
                device_id: cred.device_id.clone(),
            },
        ))
        .into_bytes(),
        encode(&owner_msg(2, OwnerCommand::SetThrottle { percent: 50 })).into_bytes(),
    ];
    let mut fuzz = Fuzz(0x5eed);
    let mut fresh: Vec<ConnId> = Vec::new();
    for round in 0..20_000 {
        let input = if round % 10 == 0 {
            (0..fuzz.below(64)).map(|_| fuzz.next() as u8).collect()
        } else {
            let seed = &seeds[fuzz.below(seeds.len())];
            fuzz.mutate(seed)
        };
        // Through a device socket, then a new socket (a hello at most registers nothing
        // without a valid invite), with time moving so the rate limit never bites.
        sim.advance(100);
        sim.core.handle_message(sim.now, device, &input);
        let conn = sim.connect();
        sim.core.handle_message(sim.now, conn, &input);
        sim.drain();
        fresh.push(conn);
        if fresh.len() > 50 {
            for c in fresh.drain(..) {
                sim.disconnect(c);
            }
        }
        if sim.closed.contains_key(&device) {
            break; // a mutated message may legitimately get the device closed (e.g. too large)
        }
    }
    let snap = sim.snapshot();
    assert_eq!(snap.device_total, 1, "no fuzzed hello registered a device");
    assert!(
        sim.device_rows.contains_key(&cred.device_id),
        "no fuzzed message removed the device"
    );
    let _ = sim.take(owner);
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
    let writes = sim.writes;
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
    assert_eq!(sim.writes, writes, "no refused message wrote anything");
    assert!(sim.device_rows.contains_key(&cred.device_id));
}
