//! [`SwarmCore`]: registry, sessions, heartbeats, OFFLINE detection, the alarm and snapshots.

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use shared_protocol::{
    close_code, decode, encode, Counters, DecodeError, DeviceCredential, DeviceStatus, DeviceView,
    ErrorCode, Hello, HelloRole, Limits, LogEntry, LogLevel, SwarmSnapshot, ToClient,
    ToCoordinator, WelcomeRole, PROTOCOL_VERSION,
};

use crate::records::{DeviceRecord, Session, SocketAttachment, StoreOp, SwarmMeta};
use crate::secrets::{hash_secret, Rng};
use crate::{ConnId, Millis, Output};

/// Timing and size settings. The defaults are the product's; tests shorten them.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// How often clients send a heartbeat (told to them in the welcome).
    pub heartbeat_interval_ms: Millis,
    /// A device without a heartbeat for this long is OFFLINE and its socket is closed.
    pub offline_after_ms: Millis,
    /// Snapshot broadcast period while any socket is connected.
    pub broadcast_interval_ms: Millis,
    /// A socket that has not said hello after this long is closed.
    pub hello_timeout_ms: Millis,
    /// Inbound size caps.
    pub limits: Limits,
    /// At most this many device rows go into one snapshot (totals always cover all devices).
    pub snapshot_device_cap: usize,
    /// System log entries kept (and sent) in snapshots.
    pub log_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 10_000,
            offline_after_ms: 60_000,
            broadcast_interval_ms: 2_000,
            hello_timeout_ms: 10_000,
            limits: Limits::default(),
            snapshot_device_cap: 200,
            log_capacity: 40,
        }
    }
}

/// Why [`SwarmCore::create`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateError {
    /// This object already holds a swarm.
    AlreadyExists,
}

struct Device {
    record: DeviceRecord,
    /// The socket the device is connected on; a device is ONLINE exactly while this is set.
    conn: Option<ConnId>,
}

impl Device {
    fn status(&self) -> DeviceStatus {
        if self.conn.is_some() {
            DeviceStatus::Online
        } else {
            DeviceStatus::Offline
        }
    }
}

/// One swarm's coordinator state. See the crate docs for how to drive it.
pub struct SwarmCore {
    config: Config,
    rng: Rng,
    meta: Option<SwarmMeta>,
    devices: BTreeMap<String, Device>,
    sessions: BTreeMap<ConnId, Session>,
    alarm_at: Option<Millis>,
    log: VecDeque<LogEntry>,
    counters: Counters,
    snapshot_seq: u64,
    outputs: VecDeque<Output>,
}

impl SwarmCore {
    /// An empty object: no swarm yet, nothing connected. `seed` must come from a CSPRNG.
    pub fn new(config: Config, seed: [u8; 32]) -> Self {
        Self {
            config,
            rng: Rng::from_seed(seed),
            meta: None,
            devices: BTreeMap::new(),
            sessions: BTreeMap::new(),
            alarm_at: None,
            log: VecDeque::new(),
            counters: Counters::default(),
            snapshot_seq: 0,
            outputs: VecDeque::new(),
        }
    }

    /// Rebuilds the state of an object that was evicted or restarted: the stored swarm and
    /// devices, the sockets that are still open (with their attachments), and the alarm that is
    /// armed. Devices with an open socket count as seen `now`.
    pub fn restore(
        &mut self,
        now: Millis,
        meta: Option<SwarmMeta>,
        devices: Vec<DeviceRecord>,
        sockets: Vec<SocketAttachment>,
        alarm_at: Option<Millis>,
    ) {
        self.meta = meta;
        self.alarm_at = alarm_at;
        self.devices = devices
            .into_iter()
            .map(|record| (record.device_id.clone(), Device { record, conn: None }))
            .collect();
        for SocketAttachment { conn, session } in sockets {
            if let Session::Device { device_id } = &session {
                match self.devices.get_mut(device_id) {
                    Some(device) => {
                        device.conn = Some(conn);
                        device.record.last_seen_ms = now;
                    }
                    None => {
                        self.close(now, conn, close_code::POLICY, "device no longer registered");
                        continue;
                    }
                }
            }
            self.sessions.insert(conn, session);
        }
        self.ensure_alarm(now);
    }

    /// Creates the swarm this object holds.
    pub fn create(&mut self, now: Millis, meta: SwarmMeta) -> Result<(), CreateError> {
        if self.meta.is_some() {
            return Err(CreateError::AlreadyExists);
        }
        self.log(
            now,
            LogLevel::Info,
            format!("swarm '{}' created", meta.name),
        );
        self.persist(StoreOp::PutSwarm(meta.clone()));
        self.meta = Some(meta);
        Ok(())
    }

    /// The swarm's identity, once created.
    pub fn meta(&self) -> Option<&SwarmMeta> {
        self.meta.as_ref()
    }

    /// Whether `key` is this swarm's owner key.
    pub fn is_owner_key(&self, key: &str) -> bool {
        self.meta
            .as_ref()
            .is_some_and(|meta| hash_secret(key) == meta.owner_key_hash)
    }

    /// The cost counters since this core was built.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Number of open sockets.
    pub fn connection_count(&self) -> usize {
        self.sessions.len()
    }

    /// When the alarm is armed for, as far as the core knows.
    pub fn alarm_at(&self) -> Option<Millis> {
        self.alarm_at
    }

    /// The next effect to carry out, or `None` when all are drained.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// A socket was accepted. It must say hello within the hello timeout.
    pub fn handle_connect(&mut self, now: Millis, conn: ConnId) {
        let session = Session::AwaitingHello { since_ms: now };
        self.outputs.push_back(Output::Attach {
            conn,
            attachment: SocketAttachment {
                conn,
                session: session.clone(),
            },
        });
        self.sessions.insert(conn, session);
        self.ensure_alarm(now);
    }

    /// A message arrived on a socket.
    pub fn handle_message(&mut self, now: Millis, conn: ConnId, bytes: &[u8]) {
        self.counters.messages_in += 1;
        let Some(session) = self.sessions.get(&conn).cloned() else {
            // A message racing the socket's own close; nothing to answer to.
            return;
        };
        let message = match decode::<ToCoordinator>(bytes, &self.config.limits) {
            Ok(message) => message.into_inner(),
            Err(err) => return self.reject_decode(now, conn, &session, &err),
        };
        match (session, message) {
            (Session::AwaitingHello { .. }, ToCoordinator::Hello(hello)) => {
                self.handle_hello(now, conn, hello)
            }
            (Session::AwaitingHello { .. }, ToCoordinator::Heartbeat {}) => {
                self.reject(
                    now,
                    conn,
                    ErrorCode::HelloRequired,
                    "say hello first".into(),
                );
                self.close(now, conn, close_code::POLICY, "hello required");
            }
            (_, ToCoordinator::Hello(_)) => self.reject(
                now,
                conn,
                ErrorCode::AlreadyIntroduced,
                "hello was already said".into(),
            ),
            (session, ToCoordinator::Heartbeat {}) => {
                if let Session::Device { device_id } = session {
                    if let Some(device) = self.devices.get_mut(&device_id) {
                        device.record.last_seen_ms = now;
                    }
                }
                self.send(
                    conn,
                    &ToClient::HeartbeatAck {
                        server_time_ms: now,
                    },
                );
            }
        }
    }

    /// A socket closed (or errored). Idempotent.
    pub fn handle_disconnect(&mut self, now: Millis, conn: ConnId) {
        let Some(session) = self.sessions.remove(&conn) else {
            return;
        };
        if let Session::Device { device_id } = session {
            if let Some(device) = self.devices.get_mut(&device_id) {
                if device.conn == Some(conn) {
                    device.conn = None;
                    let record = device.record.clone();
                    self.log(
                        now,
                        LogLevel::Info,
                        format!("device '{}' disconnected", record.name),
                    );
                    self.persist(StoreOp::PutDevice(record));
                }
            }
        }
        if self.sessions.is_empty() && self.alarm_at.is_some() {
            self.alarm_at = None;
            self.outputs.push_back(Output::ClearAlarm);
        }
    }

    /// The object's alarm fired: time out silent sockets, broadcast a snapshot, and re-arm only
    /// while any socket is connected.
    pub fn handle_alarm(&mut self, now: Millis) {
        self.counters.alarms += 1;
        self.alarm_at = None;
        self.expire_silent(now);
        self.broadcast_snapshot(now);
        self.ensure_alarm(now);
    }

    /// The snapshot dashboards receive, as of `now`.
    pub fn snapshot(&self, now: Millis) -> SwarmSnapshot {
        let (swarm_id, swarm_name) = match &self.meta {
            Some(meta) => (meta.swarm_id.clone(), meta.name.clone()),
            None => (String::new(), String::new()),
        };
        let mut rows: Vec<&Device> = self.devices.values().collect();
        rows.sort_by(|a, b| {
            (b.conn.is_some(), b.record.last_seen_ms)
                .cmp(&(a.conn.is_some(), a.record.last_seen_ms))
        });
        let devices = rows
            .into_iter()
            .take(self.config.snapshot_device_cap)
            .map(|d| DeviceView {
                id: d.record.device_id.clone(),
                name: d.record.name.clone(),
                status: d.status(),
                capabilities: d.record.capabilities.clone(),
                last_seen_ms: d.record.last_seen_ms,
                registered_ms: d.record.registered_ms,
            })
            .collect();
        SwarmSnapshot {
            swarm_id,
            swarm_name,
            now_ms: now,
            seq: self.snapshot_seq,
            device_total: count_u32(self.devices.len()),
            online: count_u32(self.devices.values().filter(|d| d.conn.is_some()).count()),
            devices,
            log: self.log.iter().cloned().collect(),
            counters: self.counters,
        }
    }

    fn handle_hello(&mut self, now: Millis, conn: ConnId, hello: Hello) {
        if hello.protocol != PROTOCOL_VERSION {
            let text = format!(
                "protocol version {} is not supported; this coordinator speaks {PROTOCOL_VERSION}",
                hello.protocol
            );
            self.reject(now, conn, ErrorCode::ProtocolMismatch, text);
            return self.close(now, conn, close_code::POLICY, "protocol mismatch");
        }
        let Some(meta) = self.meta.clone() else {
            self.reject(now, conn, ErrorCode::SwarmNotFound, "no such swarm".into());
            return self.close(now, conn, close_code::POLICY, "no such swarm");
        };
        let (session, role) = match hello.role {
            HelloRole::Dashboard { owner_key } => {
                let owner = match owner_key {
                    None => false,
                    Some(key) if self.is_owner_key(&key) => true,
                    Some(_) => {
                        self.reject(now, conn, ErrorCode::BadOwnerKey, "wrong owner key".into());
                        return self.close(now, conn, close_code::POLICY, "wrong owner key");
                    }
                };
                (
                    Session::Dashboard { owner },
                    WelcomeRole::Dashboard { owner },
                )
            }
            HelloRole::Device {
                name,
                capabilities,
                credential,
            } => {
                let result = match credential {
                    Some(credential) => self.resume_device(now, conn, &credential),
                    None => Ok(self.register_device(now, conn, name, capabilities)),
                };
                match result {
                    Ok((device_id, credential)) => (
                        Session::Device {
                            device_id: device_id.clone(),
                        },
                        WelcomeRole::Device {
                            device_id,
                            credential,
                        },
                    ),
                    Err(()) => {
                        self.reject(
                            now,
                            conn,
                            ErrorCode::BadCredential,
                            "unknown device or wrong secret".into(),
                        );
                        return self.close(now, conn, close_code::POLICY, "bad credential");
                    }
                }
            }
        };
        self.sessions.insert(conn, session.clone());
        self.outputs.push_back(Output::Attach {
            conn,
            attachment: SocketAttachment { conn, session },
        });
        self.send(
            conn,
            &ToClient::Welcome {
                protocol: PROTOCOL_VERSION,
                swarm_id: meta.swarm_id,
                swarm_name: meta.name,
                role,
                heartbeat_interval_ms: self.config.heartbeat_interval_ms,
                offline_after_ms: self.config.offline_after_ms,
            },
        );
    }

    fn register_device(
        &mut self,
        now: Millis,
        conn: ConnId,
        name: String,
        capabilities: shared_protocol::Capabilities,
    ) -> (String, Option<DeviceCredential>) {
        let mut device_id = self.rng.id();
        while self.devices.contains_key(&device_id) {
            device_id = self.rng.id();
        }
        let secret = self.rng.secret();
        let record = DeviceRecord {
            device_id: device_id.clone(),
            name,
            capabilities,
            secret_hash: hash_secret(&secret),
            registered_ms: now,
            last_seen_ms: now,
        };
        self.log(
            now,
            LogLevel::Info,
            format!("device '{}' registered", record.name),
        );
        self.persist(StoreOp::PutDevice(record.clone()));
        self.devices.insert(
            device_id.clone(),
            Device {
                record,
                conn: Some(conn),
            },
        );
        let credential = DeviceCredential {
            device_id: device_id.clone(),
            secret,
        };
        (device_id, Some(credential))
    }

    fn resume_device(
        &mut self,
        now: Millis,
        conn: ConnId,
        credential: &DeviceCredential,
    ) -> Result<(String, Option<DeviceCredential>), ()> {
        let device = self.devices.get_mut(&credential.device_id).ok_or(())?;
        if device.record.secret_hash != hash_secret(&credential.secret) {
            return Err(());
        }
        let previous = device.conn.replace(conn);
        device.record.last_seen_ms = now;
        let record = device.record.clone();
        if let Some(old) = previous {
            self.close(
                now,
                old,
                close_code::REPLACED,
                "replaced by a newer connection",
            );
        }
        self.log(
            now,
            LogLevel::Info,
            format!("device '{}' connected", record.name),
        );
        self.persist(StoreOp::PutDevice(record));
        Ok((credential.device_id.clone(), None))
    }

    /// Closes sockets that never said hello and devices whose heartbeats stopped.
    fn expire_silent(&mut self, now: Millis) {
        let mut silent = Vec::new();
        for (conn, session) in &self.sessions {
            match session {
                Session::AwaitingHello { since_ms }
                    if now.saturating_sub(*since_ms) >= self.config.hello_timeout_ms =>
                {
                    silent.push((*conn, close_code::HELLO_TIMEOUT, "no hello"));
                }
                Session::Device { device_id } => {
                    let last = self
                        .devices
                        .get(device_id)
                        .map_or(0, |d| d.record.last_seen_ms);
                    if now.saturating_sub(last) >= self.config.offline_after_ms {
                        silent.push((*conn, close_code::HEARTBEAT_TIMEOUT, "heartbeat timeout"));
                    }
                }
                _ => {}
            }
        }
        for (conn, code, reason) in silent {
            if code == close_code::HEARTBEAT_TIMEOUT {
                if let Some(Session::Device { device_id }) = self.sessions.get(&conn) {
                    let name = self.devices.get(device_id).map(|d| d.record.name.clone());
                    let text = format!(
                        "device '{}' is OFFLINE: no heartbeat",
                        name.unwrap_or_default()
                    );
                    self.log(now, LogLevel::Warn, text);
                }
            }
            self.close(now, conn, code, reason);
        }
    }

    fn broadcast_snapshot(&mut self, now: Millis) {
        let dashboards: Vec<ConnId> = self
            .sessions
            .iter()
            .filter(|(_, s)| matches!(s, Session::Dashboard { .. }))
            .map(|(conn, _)| *conn)
            .collect();
        if dashboards.is_empty() {
            return;
        }
        self.snapshot_seq += 1;
        // Count the sends first so the snapshot reports them; encode once for every dashboard.
        self.counters.messages_out += dashboards.len() as u64;
        let text: Rc<str> = encode(&ToClient::Snapshot(self.snapshot(now))).into();
        for conn in dashboards {
            self.outputs.push_back(Output::Send {
                conn,
                text: Rc::clone(&text),
            });
        }
    }

    fn ensure_alarm(&mut self, now: Millis) {
        if self.alarm_at.is_none() && !self.sessions.is_empty() {
            let at = now + self.config.broadcast_interval_ms;
            self.alarm_at = Some(at);
            self.outputs.push_back(Output::SetAlarm { at });
        }
    }

    fn reject_decode(&mut self, now: Millis, conn: ConnId, session: &Session, err: &DecodeError) {
        self.reject(now, conn, err.code(), err.to_string());
        if matches!(err, DecodeError::TooLarge { .. }) {
            self.close(now, conn, close_code::TOO_BIG, "message too big");
        } else if matches!(session, Session::AwaitingHello { .. }) {
            self.close(now, conn, close_code::POLICY, "bad hello");
        }
    }

    /// Answers a refused message with an error and records a security event. The log line
    /// names only the code and the socket, never the input, which may carry secrets.
    fn reject(&mut self, now: Millis, conn: ConnId, code: ErrorCode, message: String) {
        self.counters.rejected += 1;
        let who = match self.sessions.get(&conn) {
            Some(Session::Device { device_id }) => format!("device {}", short(device_id)),
            Some(Session::Dashboard { .. }) => "a dashboard".to_owned(),
            _ => "a new connection".to_owned(),
        };
        let code_text = encode(&code);
        self.log(
            now,
            LogLevel::Security,
            format!(
                "refused a message from {who}: {}",
                code_text.trim_matches('"')
            ),
        );
        self.send(conn, &ToClient::Error { code, message });
    }

    /// Closes a socket and forgets its session at once: the platform may not report the close.
    fn close(&mut self, now: Millis, conn: ConnId, code: u16, reason: &str) {
        self.outputs.push_back(Output::Close {
            conn,
            code,
            reason: reason.to_owned(),
        });
        self.handle_disconnect(now, conn);
    }

    fn send(&mut self, conn: ConnId, message: &ToClient) {
        self.counters.messages_out += 1;
        self.outputs.push_back(Output::Send {
            conn,
            text: encode(message).into(),
        });
    }

    fn persist(&mut self, op: StoreOp) {
        self.counters.storage_writes += 1;
        self.outputs.push_back(Output::Persist(op));
    }

    fn log(&mut self, now: Millis, level: LogLevel, text: String) {
        if self.log.len() == self.config.log_capacity {
            self.log.pop_front();
        }
        self.log.push_back(LogEntry {
            at_ms: now,
            level,
            text,
        });
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
