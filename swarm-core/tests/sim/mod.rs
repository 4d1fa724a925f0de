//! The simulated glue shared by the core's tests. [`Sim`] feeds inputs with a virtual `now`,
//! drains outputs, keeps the "database" of persisted rows and the per-socket inboxes, and fires the alarm when the clock
//! reaches it.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::collections::BTreeMap;

use shared_protocol::{
    close_code, encode, AgentClass, Capabilities, DeviceCredential, DeviceStatus, ErrorCode, Hello,
    HelloRole, JoinProof, OwnerCommand, OwnerReply, RunState, SwarmSnapshot, ToClient,
    ToCoordinator, WelcomeRole, Work, WorkResult, PROTOCOL_VERSION,
};
use swarm_core::gateway::{GatewayBatch, GatewayEvent, Placement};
use swarm_core::{
    hash_secret, Config, ConnId, MemoryStore, Millis, Output, SocketAttachment, SwarmCore,
    SwarmMeta, BENCH_JOB_ID,
};

pub const OWNER_KEY: &str = "owner-key-owner-key-owner-key-owner-key-000";

pub struct Sim {
    pub core: SwarmCore,
    pub now: Millis,
    pub alarm: Option<Millis>,
    pub inbox: BTreeMap<ConnId, Vec<ToClient>>,
    /// The last share ([`ToClient::Share`]) each device socket was sent, kept out of its inbox
    /// unless `shares_in_inbox`.
    pub shares: BTreeMap<ConnId, ToClient>,
    pub shares_in_inbox: bool,
    /// Socket events handed to the core in gateway batches (sockets placed on a gateway).
    pub gateway_events: u64,
    /// What each dashboard holds: its first snapshot with every delta since applied. Unless
    /// `deltas_in_inbox`, a delta shows in the inbox as the snapshot it makes.
    pub held: BTreeMap<ConnId, SwarmSnapshot>,
    pub deltas_in_inbox: bool,
    /// Bytes of every delta sent, in order.
    pub delta_bytes: Vec<usize>,
    pub closed: BTreeMap<ConnId, u16>,
    pub attachments: BTreeMap<ConnId, SocketAttachment>,
    /// The object's storage, as the glue's SQL would hold it.
    pub store: MemoryStore,
    pub registered_codes: Vec<String>,
    /// The config the core was built with (a restart keeps it).
    pub config: Config,
    /// Storage writes carried out: rows, and the alarm armed or cleared...
    pub writes: usize,
    /// ...of which the alarm.
    pub alarm_writes: usize,
    pub next_conn: u64,
    /// A link token of an unlimited invite, for devices joining in tests.
    pub token: String,
}

impl Sim {
    pub fn new() -> Self {
        Self::with_config(Config::default())
    }

    pub fn with_config(config: Config) -> Self {
        let mut sim = Self {
            core: SwarmCore::new(config.clone(), [1; 32]),
            now: 1_700_000_000_000,
            alarm: None,
            inbox: BTreeMap::new(),
            shares: BTreeMap::new(),
            shares_in_inbox: false,
            gateway_events: 0,
            held: BTreeMap::new(),
            deltas_in_inbox: false,
            delta_bytes: Vec::new(),
            closed: BTreeMap::new(),
            attachments: BTreeMap::new(),
            store: MemoryStore::default(),
            registered_codes: Vec::new(),
            config,
            writes: 0,
            alarm_writes: 0,
            next_conn: 0,
            token: String::new(),
        };
        sim.core.create(sim.now, meta(sim.now)).unwrap();
        sim.drain();
        let (token, _) = sim.create_invite(None, None).expect("the first invite");
        sim.token = token;
        sim
    }

    /// An owner command over HTTP with the owner key, decoded as the glue decodes a body.
    pub fn owner(&mut self, command: OwnerCommand) -> Result<OwnerReply, ErrorCode> {
        self.owner_with_key(OWNER_KEY, command)
    }

    /// An owner command over HTTP with this key, decoded as the glue decodes a body (a command
    /// that fails validation is refused there and never reaches the core).
    pub fn owner_with_key(
        &mut self,
        key: &str,
        command: OwnerCommand,
    ) -> Result<OwnerReply, ErrorCode> {
        let body = encode(&command);
        let command = shared_protocol::decode::<OwnerCommand>(
            body.as_bytes(),
            &shared_protocol::Limits::default(),
        )
        .map_err(|err| err.code())?;
        let result = self
            .core
            .handle_owner_request(self.now, key, command)
            .map_err(|r| r.code);
        self.drain();
        result
    }

    /// Creates an invite over the owner's HTTP path; returns its token and short code.
    pub fn create_invite(
        &mut self,
        ttl_ms: Option<u64>,
        max_uses: Option<u32>,
    ) -> Result<(String, String), ErrorCode> {
        match self.owner(OwnerCommand::CreateInvite { ttl_ms, max_uses })? {
            OwnerReply::InviteCreated { token, code, .. } => Ok((token, code)),
            other => panic!("{other:?}"),
        }
    }

    /// Simulates the object being evicted and started again: a fresh core restored from the
    /// stored rows, the attachments of still-open sockets and the armed alarm.
    pub fn restart(&mut self) {
        self.restart_with_seed([2; 32]);
    }

    /// The runtime crashed (`kill -9`, a deploy): every socket is gone, and a fresh core is
    /// restored from storage alone.
    pub fn crash(&mut self) {
        let open: Vec<ConnId> = self
            .attachments
            .keys()
            .filter(|conn| !self.closed.contains_key(conn))
            .copied()
            .collect();
        for conn in open {
            self.closed.insert(conn, 1006);
        }
        self.attachments.clear();
        self.alarm = None;
        self.restart_with_seed([3; 32]);
    }

    /// [`Sim::restart`] with the new core seeded by `seed`.
    pub fn restart_with_seed(&mut self, seed: [u8; 32]) {
        let mut core = SwarmCore::new(self.config.clone(), seed);
        let open: Vec<SocketAttachment> = self
            .attachments
            .iter()
            .filter(|(conn, _)| !self.closed.contains_key(conn))
            .map(|(_, a)| a.clone())
            .collect();
        core.restore(self.now, self.store.load(), open, self.alarm);
        self.core = core;
        self.drain();
    }

    pub fn drain(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Send { conn, text } => {
                    assert!(!self.closed.contains_key(&conn), "sent on a closed socket");
                    let msg: ToClient = serde_json::from_str(&text).unwrap();
                    match msg {
                        ToClient::Share { .. } if !self.shares_in_inbox => {
                            self.shares.insert(conn, msg);
                        }
                        ToClient::Snapshot(ref snapshot) => {
                            self.held.insert(conn, snapshot.clone());
                            self.inbox.entry(conn).or_default().push(msg);
                        }
                        ToClient::SnapshotDelta(delta) => {
                            self.delta_bytes.push(text.len());
                            let held = self.held.get_mut(&conn).expect("a delta before a snapshot");
                            held.apply((*delta).clone()).expect("a delta that follows");
                            let shown = if self.deltas_in_inbox {
                                ToClient::SnapshotDelta(delta)
                            } else {
                                ToClient::Snapshot(held.clone())
                            };
                            self.inbox.entry(conn).or_default().push(shown);
                        }
                        msg => self.inbox.entry(conn).or_default().push(msg),
                    }
                }
                // A socket closes once: a later close of it (a gateway's socket the core
                // no longer knows, closed again on its next frame) changes nothing.
                Output::Close { conn, code, .. } => {
                    self.closed.entry(conn).or_insert(code);
                }
                Output::Attach { conn, attachment } => {
                    self.attachments.insert(conn, attachment);
                }
                Output::Persist(op) => {
                    self.writes += 1;
                    self.store.apply(op);
                }
                // Arming and clearing the alarm are storage writes on the platform.
                Output::SetAlarm { at } => {
                    self.writes += 1;
                    self.alarm_writes += 1;
                    self.alarm = Some(at);
                }
                Output::ClearAlarm => {
                    self.writes += 1;
                    self.alarm_writes += 1;
                    self.alarm = None;
                }
                Output::RegisterCode {
                    code_hash,
                    swarm_id,
                    ..
                } => {
                    assert_eq!(swarm_id, "ab".repeat(16));
                    self.registered_codes.push(code_hash);
                }
            }
        }
    }

    pub fn connect(&mut self) -> ConnId {
        self.connect_from("")
    }

    /// Connects a socket from this client address.
    pub fn connect_from(&mut self, source: &str) -> ConnId {
        let conn = self.place();
        self.open(conn, source);
        conn
    }

    /// The id of the next socket, where the core places it (as the glue asks before it
    /// accepts the socket itself or hands it to a gateway): open it with [`Sim::open`].
    pub fn place(&mut self) -> ConnId {
        self.next_conn += 1;
        match self.core.place_socket(self.now) {
            Placement::Here => ConnId::direct(self.next_conn),
            Placement::Gateway(k) => ConnId::on_gateway(k, u32::try_from(self.next_conn).unwrap()),
        }
    }

    /// Opens a socket [`Sim::place`] gave: on the object itself, or on its gateway, which
    /// hands the core a batch of one event (as a gateway object does when events are sparse).
    pub fn open(&mut self, conn: ConnId, source: &str) {
        match conn.gateway() {
            None => self.core.handle_connect(self.now, conn, source),
            Some(gateway) => self.gateway_batch(
                gateway,
                GatewayEvent::Open {
                    conn,
                    source: source.to_owned(),
                },
            ),
        }
        self.drain();
    }

    /// Hands the core one event of a gateway's socket, in a batch of its own.
    fn gateway_batch(&mut self, gateway: u32, event: GatewayEvent) {
        self.gateway_events += 1;
        self.core.handle_gateway_batch(
            self.now,
            GatewayBatch {
                gateway,
                events: vec![event],
            },
        );
    }

    pub fn send_raw(&mut self, conn: ConnId, bytes: &[u8]) {
        match conn.gateway() {
            None => self.core.handle_message(self.now, conn, bytes),
            Some(gateway) => {
                let event = match std::str::from_utf8(bytes) {
                    Ok(text) => GatewayEvent::Text {
                        conn,
                        text: text.to_owned(),
                    },
                    Err(_) => GatewayEvent::Binary {
                        conn,
                        bytes: bytes.to_vec(),
                    },
                };
                self.gateway_batch(gateway, event);
            }
        }
        self.drain();
    }

    pub fn send(&mut self, conn: ConnId, msg: &ToCoordinator) {
        self.send_raw(conn, encode(msg).as_bytes());
    }

    pub fn disconnect(&mut self, conn: ConnId) {
        self.attachments.remove(&conn);
        match conn.gateway() {
            None => self.core.handle_disconnect(self.now, conn),
            Some(gateway) => self.gateway_batch(gateway, GatewayEvent::Close { conn }),
        }
        self.drain();
    }

    /// Moves the virtual clock forward, firing the alarm each time it comes due.
    pub fn advance(&mut self, ms: Millis) {
        let end = self.now + ms;
        while let Some(at) = self.alarm.filter(|at| *at <= end) {
            self.now = self.now.max(at);
            self.alarm = None;
            self.core.handle_alarm(self.now);
            self.drain();
        }
        self.now = end;
    }

    /// What a socket received, as a device reads it: a frame of leases (protocol 5) as its
    /// leases one by one.
    pub fn take(&mut self, conn: ConnId) -> Vec<ToClient> {
        self.take_frames(conn)
            .into_iter()
            .flat_map(|message| match message {
                ToClient::Leases { leases } => leases.into_iter().map(|l| l.into_lease()).collect(),
                message => vec![message],
            })
            .collect()
    }

    /// What a socket received, frame by frame.
    pub fn take_frames(&mut self, conn: ConnId) -> Vec<ToClient> {
        self.inbox.remove(&conn).unwrap_or_default()
    }

    pub fn last_error(&mut self, conn: ConnId) -> ErrorCode {
        match self.take(conn).pop() {
            Some(ToClient::Error { code, .. }) => code,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// Joins one of the owner's own devices (with the owner key: the owner vouches for it, so
    /// its results are not replicated) and answers its benchmark as a reference core would
    /// (2 ms).
    pub fn join_device(&mut self, name: &str) -> (ConnId, DeviceCredential) {
        let proof = JoinProof::OwnerKey {
            owner_key: OWNER_KEY.to_owned(),
        };
        let joined = self
            .join_with(name, proof)
            .unwrap_or_else(|code| panic!("join refused: {code:?}"));
        self.answer_benchmark(joined.0, 2);
        joined
    }

    /// Joins a device with the swarm's invite (not trusted: its results are replicated until
    /// it has earned trust) and answers its benchmark as a reference core would (2 ms).
    pub fn join_invited(&mut self, name: &str) -> (ConnId, DeviceCredential) {
        let proof = JoinProof::Token {
            token: self.token.clone(),
        };
        let joined = self
            .join_with(name, proof)
            .unwrap_or_else(|code| panic!("join refused: {code:?}"));
        self.answer_benchmark(joined.0, 2);
        joined
    }

    /// Takes the benchmark lease out of a device's inbox and answers it correctly
    /// `compute_ms` later (the coordinator measures the time itself). Returns the lease.
    pub fn answer_benchmark(&mut self, conn: ConnId, compute_ms: u64) -> (u64, u64, u64) {
        let (lease_id, lo, hi) = self.take_benchmark(conn);
        let count = kernels::primes::count_primes(lo, hi);
        self.advance(compute_ms);
        self.send(
            conn,
            &ToCoordinator::ChunkResult {
                lease_id,
                result: WorkResult::PrimeCount { count },
                compute_ms,
                ticket: None,
            },
        );
        (lease_id, lo, hi)
    }

    /// Takes the benchmark lease out of a device's inbox: `(lease id, lo, hi)`.
    pub fn take_benchmark(&mut self, conn: ConnId) -> (u64, u64, u64) {
        let inbox = self.inbox.entry(conn).or_default();
        let at = inbox
            .iter()
            .position(|m| matches!(m, ToClient::Lease { job_id, .. } if job_id == BENCH_JOB_ID))
            .expect("a benchmark lease");
        match inbox.remove(at) {
            ToClient::Lease {
                lease_id,
                work: Work::PrimeCount { lo, hi },
                ..
            } => (lease_id, lo, hi),
            other => panic!("benchmark of another kind: {other:?}"),
        }
    }

    /// Connects a new device with this proof: its socket and credential, or the refusal.
    pub fn join_with(
        &mut self,
        name: &str,
        proof: JoinProof,
    ) -> Result<(ConnId, DeviceCredential), ErrorCode> {
        let conn = self.connect();
        self.send(conn, &new_device_hello(name, Some(proof)));
        if let [ToClient::Error { code, .. }] =
            self.inbox.get(&conn).map(Vec::as_slice).unwrap_or_default()
        {
            let code = *code;
            assert_eq!(
                self.closed.get(&conn),
                Some(&close_code::POLICY),
                "a refused hello closes"
            );
            return Err(code);
        }
        // The welcome comes first; anything after it (leases) stays in the inbox.
        let mut messages = self.take(conn);
        let rest = messages.split_off(1.min(messages.len()));
        self.inbox.insert(conn, rest);
        match messages.as_slice() {
            [ToClient::Welcome {
                role:
                    WelcomeRole::Device {
                        credential: Some(c),
                        device_id,
                    },
                ..
            }] => {
                assert_eq!(&c.device_id, device_id);
                Ok((conn, c.clone()))
            }
            other => panic!("expected a welcome with a credential, got {other:?}"),
        }
    }

    pub fn join_dashboard(&mut self, owner_key: Option<&str>) -> ConnId {
        let conn = self.connect();
        self.send(conn, &dashboard_hello(owner_key));
        assert!(matches!(
            self.take(conn).as_slice(),
            [ToClient::Welcome { .. }]
        ));
        conn
    }

    /// A dashboard reads what it was sent and says so in a heartbeat (`seen`), as a dashboard
    /// must to stay connected.
    pub fn read_snapshots(&mut self, dash: ConnId) {
        let seen = snapshots(&self.take(dash)).last().map(|s| s.seq);
        self.send(dash, &ToCoordinator::Heartbeat { seen });
        let _ = self.take(dash);
    }

    pub fn snapshot(&self) -> SwarmSnapshot {
        self.core.snapshot(self.now)
    }

    pub fn status_of(&self, device_id: &str) -> DeviceStatus {
        self.snapshot()
            .devices
            .iter()
            .find(|d| d.id == device_id)
            .expect("device listed")
            .status
    }
}

pub fn caps() -> Capabilities {
    Capabilities {
        cores: 4,
        memory_mb: Some(4096),
        gpu: false,
        agent: AgentClass::Native,
        workloads: true,
    }
}

pub fn meta(now: Millis) -> SwarmMeta {
    SwarmMeta {
        swarm_id: "ab".repeat(16),
        name: "lab".into(),
        owner_key_hash: hash_secret(OWNER_KEY),
        created_ms: now,
        run_state: RunState::Running,
        throttle_percent: 100,
        lease_key: String::new(),
        gateways: 0,
    }
}

/// A hello resuming a device with its credential.
pub fn device_hello(name: &str, credential: Option<DeviceCredential>) -> ToCoordinator {
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

/// A hello registering a new device with this proof.
pub fn new_device_hello(name: &str, invite: Option<JoinProof>) -> ToCoordinator {
    ToCoordinator::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        role: HelloRole::Device {
            name: name.into(),
            capabilities: caps(),
            credential: None,
            invite,
        },
    })
}

pub fn dashboard_hello(owner_key: Option<&str>) -> ToCoordinator {
    ToCoordinator::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        role: HelloRole::Dashboard {
            owner_key: owner_key.map(str::to_owned),
        },
    })
}

pub fn snapshots(msgs: &[ToClient]) -> Vec<&SwarmSnapshot> {
    msgs.iter()
        .filter_map(|m| match m {
            ToClient::Snapshot(s) => Some(s),
            _ => None,
        })
        .collect()
}
