//! The hello: protocol version, dashboards (owner key), and devices — resuming with a
//! credential, or registering through an invite token, short code or the owner key.

use shared_protocol::{
    close_code, normalize_code, Capabilities, DeviceCredential, ErrorCode, Hello, HelloRole,
    JoinProof, LogLevel, ToClient, WelcomeRole, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
};

use crate::core::{Device, Refusal, SwarmCore};
use crate::invites::{refusal_text, Presented};
use crate::records::{DeviceLink, DeviceRecord, GuessRecord, Session, StoreOp};
use crate::secrets::hash_secret;
use crate::verify::Credibility;
use crate::{ConnId, Millis};

/// How a device joined when it joined with the owner key: the owner vouches for it.
const VOUCHED: &str = "with the owner key";

impl SwarmCore {
    pub(crate) fn handle_hello(&mut self, now: Millis, conn: ConnId, hello: Hello) {
        let protocol = hello.protocol;
        match self.admit(now, conn, hello) {
            Ok((session, role)) => {
                let device = match &session {
                    Session::Device { device_id, .. } => Some(device_id.clone()),
                    _ => None,
                };
                self.set_session(conn, session);
                let Some(meta) = self.meta.clone() else {
                    return; // admit refuses hellos before creation
                };
                self.send(
                    conn,
                    &ToClient::Welcome {
                        protocol,
                        swarm_id: meta.swarm_id,
                        swarm_name: meta.name,
                        role,
                        heartbeat_interval_ms: self.config.heartbeat_interval_ms,
                        offline_after_ms: self.config.offline_after_ms,
                    },
                );
                // After the welcome, a device is benchmarked; work follows its answer.
                if let Some(device_id) = device {
                    self.send_share(&device_id);
                    self.start_benchmark(now, conn, &device_id);
                }
            }
            Err(refusal) => {
                self.reject(now, conn, refusal, None);
                self.close(now, conn, close_code::POLICY, "hello refused");
            }
        }
    }

    fn admit(
        &mut self,
        now: Millis,
        conn: ConnId,
        hello: Hello,
    ) -> Result<(Session, WelcomeRole), Refusal> {
        if !(OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.protocol) {
            return Err(Refusal::new(
                ErrorCode::ProtocolMismatch,
                format!(
                    "protocol version {} is not supported; this coordinator speaks \
                     {OLDEST_PROTOCOL_VERSION} to {PROTOCOL_VERSION}",
                    hello.protocol
                ),
            ));
        }
        if self.meta.is_none() {
            return Err(Refusal::new(ErrorCode::SwarmNotFound, "no such swarm"));
        }
        let hello_protocol = hello.protocol;
        match hello.role {
            HelloRole::Dashboard { owner_key } => {
                let owner = match owner_key {
                    None => false,
                    Some(key) if self.is_owner_key(&key) => true,
                    Some(_) => return Err(Refusal::new(ErrorCode::BadOwnerKey, "wrong owner key")),
                };
                Ok((
                    Session::Dashboard {
                        owner,
                        deltas: hello.protocol >= 3,
                    },
                    WelcomeRole::Dashboard { owner },
                ))
            }
            HelloRole::Device {
                name,
                capabilities,
                credential: Some(credential),
                ..
            } => {
                self.resume_device(now, conn, &credential, name, capabilities)?;
                let device_id = credential.device_id;
                Ok((
                    Session::Device {
                        device_id: device_id.clone(),
                        link: DeviceLink {
                            acks: hello_protocol >= 4,
                            batches: hello_protocol >= 5,
                            ..DeviceLink::default()
                        },
                    },
                    WelcomeRole::Device {
                        device_id,
                        credential: None,
                    },
                ))
            }
            HelloRole::Device {
                name,
                capabilities,
                credential: None,
                invite,
            } => {
                let how = self.check_invite(now, conn, invite)?;
                let credential = self.register_device(now, conn, name, capabilities, how);
                let device_id = credential.device_id.clone();
                Ok((
                    Session::Device {
                        device_id: device_id.clone(),
                        link: DeviceLink {
                            acks: hello_protocol >= 4,
                            batches: hello_protocol >= 5,
                            ..DeviceLink::default()
                        },
                    },
                    WelcomeRole::Device {
                        device_id,
                        credential: Some(credential),
                    },
                ))
            }
        }
    }

    /// Checks (and uses) the proof a new device presented. Only short codes can be guessed, so
    /// only wrong codes count against the guessing limits (per source address, and slowed for
    /// everyone); links and the owner key carry 256-bit secrets and share no budget with them,
    /// so a flood of wrong codes cannot lock out a device that has a link.
    fn check_invite(
        &mut self,
        now: Millis,
        conn: ConnId,
        proof: Option<JoinProof>,
    ) -> Result<&'static str, Refusal> {
        let refused = |code: ErrorCode| {
            let text = match code {
                ErrorCode::BadOwnerKey => "wrong owner key",
                other => refusal_text(other),
            };
            Refusal::new(code, text)
        };
        match proof {
            None => Err(refused(ErrorCode::InviteRequired)),
            Some(JoinProof::OwnerKey { owner_key }) => {
                if self.is_owner_key(&owner_key) {
                    Ok(VOUCHED)
                } else {
                    Err(refused(ErrorCode::BadOwnerKey))
                }
            }
            Some(JoinProof::Token { token }) => self
                .redeem(now, Presented::TokenHash(&hash_secret(&token)))
                .map(|()| "through an invite link")
                .map_err(refused),
            Some(JoinProof::Code { code }) => {
                let source = match self.conns.get(&conn).map(|c| &c.session) {
                    Some(Session::AwaitingHello { source, .. }) => source.clone(),
                    _ => String::new(),
                };
                self.code_guesses
                    .check(now, &source)
                    .map_err(Refusal::from)?;
                let outcome = match normalize_code(&code) {
                    Some(canonical) => {
                        self.redeem(now, Presented::CodeHash(&hash_secret(&canonical)))
                    }
                    None => Err(ErrorCode::InviteInvalid),
                };
                if outcome == Err(ErrorCode::InviteInvalid) {
                    self.record_guess(now, source);
                }
                outcome.map(|()| "with an invite code").map_err(refused)
            }
        }
    }

    /// Counts a wrong code guess, in memory and in storage (so that the limit holds across a
    /// restart); at most one write per wrong guess the limits let through, and old guesses are
    /// deleted once a window.
    fn record_guess(&mut self, now: Millis, source: String) {
        self.code_guesses.record_miss(now, &source);
        self.persist(StoreOp::PutGuess(GuessRecord { at_ms: now, source }));
        if let Some(before_ms) = self.code_guesses.prune_before(now) {
            self.persist(StoreOp::PruneGuesses { before_ms });
        }
    }

    fn redeem(&mut self, now: Millis, presented: Presented<'_>) -> Result<(), ErrorCode> {
        let invite = self.invites.redeem(now, presented)?;
        self.persist(StoreOp::PutInvite(invite));
        Ok(())
    }

    fn register_device(
        &mut self,
        now: Millis,
        conn: ConnId,
        name: String,
        capabilities: Capabilities,
        how: &str,
    ) -> DeviceCredential {
        let mut device_id = self.rng.id();
        while self.devices.contains_key(&device_id) {
            device_id = self.rng.id();
        }
        let secret = self.rng.secret();
        let record = DeviceRecord {
            device_id: device_id.clone(),
            name,
            named_by_owner: false,
            capabilities,
            secret_hash: hash_secret(&secret),
            registered_ms: now,
            last_seen_ms: now,
            enabled: true,
            quarantined: false,
            score: None,
            credibility: Credibility {
                vouched: how == VOUCHED,
                ..Credibility::default()
            },
            credibility_rev: 0,
        };
        self.log(
            now,
            LogLevel::Info,
            format!("device '{}' registered {how}", record.name),
        );
        self.persist(StoreOp::PutDevice(record.clone()));
        self.jobs
            .verifier
            .load(&record.device_id, record.credibility);
        self.devices.insert(
            device_id.clone(),
            Device {
                record,
                conn: Some(conn),
            },
        );
        DeviceCredential { device_id, secret }
    }

    /// Resumes a device's identity; its name and capabilities are refreshed from the hello.
    fn resume_device(
        &mut self,
        now: Millis,
        conn: ConnId,
        credential: &DeviceCredential,
        name: String,
        capabilities: Capabilities,
    ) -> Result<(), Refusal> {
        let refused = || {
            Refusal::new(
                ErrorCode::BadCredential,
                "unknown device or wrong secret (a removed device must join again with an invite)",
            )
        };
        let device = self
            .devices
            .get_mut(&credential.device_id)
            .ok_or_else(refused)?;
        if device.record.secret_hash != hash_secret(&credential.secret) {
            return Err(refused());
        }
        // A new connection starts lending everything until the device says otherwise (its
        // link starts empty).
        let previous = device.conn.replace(conn);
        device.record.last_seen_ms = now;
        if !device.record.named_by_owner {
            device.record.name = name;
        }
        device.record.capabilities = capabilities;
        let record = device.record.clone();
        if let Some(old) = previous {
            self.close(
                now,
                old,
                close_code::REPLACED,
                "replaced by a newer connection",
            );
            // What the old connection held goes back to the queue now, not at its deadline.
            self.device_gone(&credential.device_id);
        }
        self.log(
            now,
            LogLevel::Info,
            format!("device '{}' connected", record.name),
        );
        self.persist(StoreOp::PutDevice(record));
        Ok(())
    }
}
