//! [`SwarmCore`]: state, lifecycle (connect, message, disconnect, alarm), snapshots and the
//! helpers every handler shares. The hello is handled in `join.rs`, owner commands in
//! `owner.rs`.

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use shared_protocol::{
    close_code, decode, encode, Counters, DecodeError, DeviceStatus, DeviceView, ErrorCode, Limits,
    LogEntry, LogLevel, SwarmSnapshot, ToClient, ToCoordinator,
};

use crate::invites::Invites;
use crate::jobs::JobBoard;
use crate::limits::{SlidingWindow, TokenBucket};
use crate::records::{DeviceRecord, Session, SocketAttachment, StoreOp, Stored, SwarmMeta};
use crate::secrets::{hash_secret, Rng};
use crate::{ConnId, Millis, Output};

/// Timing, size and rate settings. The defaults are the product's; tests shorten them.
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
    /// Security events kept for the owner's audit log.
    pub audit_capacity: usize,
    /// Per socket: messages that may arrive at once, and the sustained rate per second.
    pub message_burst: u32,
    pub messages_per_second: u32,
    /// Invites the owner may create per minute.
    pub invites_per_minute: usize,
    /// Refused join attempts (bad, expired, revoked or used-up invites) per minute per swarm;
    /// beyond it every join attempt without a credential is refused for the rest of the minute.
    pub failed_joins_per_minute: usize,
    /// Invite lifetime when the owner does not choose one.
    pub default_invite_ttl_ms: Millis,
    /// The window of the invite and failed-join limits: a minute (tests shorten it).
    pub rate_window_ms: Millis,
    /// About one accepted prime-count chunk in this many is followed by a known-answer spot
    /// check of the device (see `checks.rs`); 0 turns checks off.
    pub spot_check_one_in: u64,
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
            audit_capacity: 200,
            message_burst: 100,
            messages_per_second: 20,
            invites_per_minute: 5,
            failed_joins_per_minute: 30,
            default_invite_ttl_ms: 24 * 60 * 60 * 1000,
            rate_window_ms: 60_000,
            spot_check_one_in: 10,
        }
    }
}

/// Why [`SwarmCore::create`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateError {
    /// This object already holds a swarm.
    AlreadyExists,
}

/// A refused request, as the glue reports it (WebSocket error or HTTP status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    /// With [`ErrorCode::RateLimited`]: when to try again.
    pub retry_after_ms: Option<Millis>,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    pub fn rate_limited(what: &str, retry_after_ms: Millis) -> Self {
        Self {
            code: ErrorCode::RateLimited,
            message: format!("{what}: try again in {} s", retry_after_ms.div_ceil(1000)),
            retry_after_ms: Some(retry_after_ms),
        }
    }
}

pub(crate) struct Device {
    pub(crate) record: DeviceRecord,
    /// The socket the device is connected on; a device is ONLINE exactly while this is set.
    pub(crate) conn: Option<ConnId>,
    /// Cores the device lends (its own control; all of them unless it said otherwise).
    pub(crate) lend: Option<u16>,
    /// The benchmark lease it has not answered yet; it gets no job work until it has.
    pub(crate) bench: Option<crate::bench::PendingBench>,
    /// The spot check it has not answered yet.
    pub(crate) check: Option<crate::checks::PendingCheck>,
    /// Spot checks it answered right since the object started.
    pub(crate) checks_passed: u64,
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

/// One open socket.
pub(crate) struct Conn {
    pub(crate) session: Session,
    bucket: TokenBucket,
}

/// One swarm's coordinator state. See the crate docs for how to drive it.
pub struct SwarmCore {
    pub(crate) config: Config,
    pub(crate) rng: Rng,
    pub(crate) meta: Option<SwarmMeta>,
    pub(crate) devices: BTreeMap<String, Device>,
    pub(crate) conns: BTreeMap<ConnId, Conn>,
    pub(crate) invites: Invites,
    pub(crate) invite_window: SlidingWindow,
    pub(crate) failed_joins: SlidingWindow,
    alarm_at: Option<Millis>,
    log: VecDeque<LogEntry>,
    pub(crate) audit: VecDeque<LogEntry>,
    pub(crate) jobs: JobBoard,
    counters: Counters,
    snapshot_seq: u64,
    outputs: VecDeque<Output>,
}

impl SwarmCore {
    /// An empty object: no swarm yet, nothing connected. `seed` must come from a CSPRNG.
    pub fn new(config: Config, seed: [u8; 32]) -> Self {
        Self {
            invite_window: SlidingWindow::new(config.invites_per_minute, config.rate_window_ms),
            failed_joins: SlidingWindow::new(config.failed_joins_per_minute, config.rate_window_ms),
            config,
            rng: Rng::from_seed(seed),
            meta: None,
            devices: BTreeMap::new(),
            conns: BTreeMap::new(),
            invites: Invites::default(),
            alarm_at: None,
            log: VecDeque::new(),
            audit: VecDeque::new(),
            jobs: JobBoard::default(),
            counters: Counters::default(),
            snapshot_seq: 0,
            outputs: VecDeque::new(),
        }
    }

    /// Rebuilds the state of an object that was evicted or restarted: what storage holds, the
    /// sockets that are still open (with their attachments), and the alarm that is armed.
    /// Devices with an open socket count as seen `now`; a running job resumes from its stored
    /// progress.
    pub fn restore(
        &mut self,
        now: Millis,
        stored: Stored,
        sockets: Vec<SocketAttachment>,
        alarm_at: Option<Millis>,
    ) {
        let Stored {
            meta,
            devices,
            invites,
            jobs,
        } = stored;
        self.meta = meta;
        self.alarm_at = alarm_at;
        self.devices = devices
            .into_iter()
            .map(|record| {
                (
                    record.device_id.clone(),
                    Device {
                        record,
                        conn: None,
                        lend: None,
                        bench: None,
                        check: None,
                        checks_passed: 0,
                    },
                )
            })
            .collect();
        for invite in invites {
            self.invites.insert(invite);
        }
        for SocketAttachment { conn, session } in sockets {
            self.add_conn(now, conn, session.clone());
            if let Session::Device { device_id } = &session {
                match self.devices.get_mut(device_id) {
                    Some(device) => {
                        device.conn = Some(conn);
                        device.record.last_seen_ms = now;
                    }
                    None => self.close(
                        now,
                        conn,
                        close_code::REMOVED,
                        "device no longer registered",
                    ),
                }
            }
        }
        self.restore_jobs(now, jobs);
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
        self.conns.len()
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
        self.add_conn(now, conn, session);
        self.ensure_alarm(now);
    }

    /// A message arrived on a socket.
    pub fn handle_message(&mut self, now: Millis, conn: ConnId, bytes: &[u8]) {
        self.counters.messages_in += 1;
        let Some(entry) = self.conns.get_mut(&conn) else {
            // A message racing the socket's own close; nothing to answer to.
            return;
        };
        if !entry.bucket.take(now) {
            let limit = self.config.messages_per_second;
            self.reject(
                now,
                conn,
                Refusal::new(
                    ErrorCode::RateLimited,
                    format!("more than {limit} messages per second"),
                ),
                None,
            );
            return self.close(now, conn, close_code::RATE_LIMITED, "message rate limit");
        }
        let session = entry.session.clone();
        let message = match decode::<ToCoordinator>(bytes, &self.config.limits) {
            Ok(message) => message.into_inner(),
            Err(err) => return self.reject_decode(now, conn, &session, &err),
        };
        match (session, message) {
            (Session::AwaitingHello { .. }, ToCoordinator::Hello(hello)) => {
                self.handle_hello(now, conn, hello)
            }
            (Session::AwaitingHello { .. }, _) => {
                self.reject(
                    now,
                    conn,
                    Refusal::new(ErrorCode::HelloRequired, "say hello first"),
                    None,
                );
                self.close(now, conn, close_code::POLICY, "hello required");
            }
            (_, ToCoordinator::Hello(_)) => self.reject(
                now,
                conn,
                Refusal::new(ErrorCode::AlreadyIntroduced, "hello was already said"),
                None,
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
            (
                Session::Device { device_id },
                ToCoordinator::ChunkResult {
                    lease_id,
                    result,
                    compute_ms,
                },
            ) => self.handle_chunk_result(now, conn, &device_id, lease_id, result, compute_ms),
            (Session::Device { device_id }, ToCoordinator::SetLend { cores }) => {
                if let Some(device) = self.devices.get_mut(&device_id) {
                    device.lend = Some(cores);
                }
                self.device_available(&device_id);
                self.dispatch(now);
            }
            (_, ToCoordinator::SetLend { .. }) => {
                let refusal = Refusal::new(ErrorCode::Forbidden, "only devices lend cores");
                self.reject(now, conn, refusal, None);
            }
            (_, ToCoordinator::ChunkResult { .. }) => {
                let refusal = Refusal::new(ErrorCode::Forbidden, "only devices return results");
                self.reject(now, conn, refusal, None);
            }
            (Session::Dashboard { owner: true }, ToCoordinator::Owner { request, command }) => {
                match self.owner_command(now, command) {
                    Ok(result) => self.send(conn, &ToClient::OwnerResult { request, result }),
                    Err(refusal) => self.reject(now, conn, refusal, Some(request)),
                }
            }
            (_, ToCoordinator::Owner { request, .. }) => {
                let refusal = Refusal::new(
                    ErrorCode::Forbidden,
                    "only the owner's dashboard may do this",
                );
                self.reject(now, conn, refusal, Some(request));
            }
        }
    }

    /// An owner command over HTTP, authorised by the owner key.
    pub fn handle_owner_request(
        &mut self,
        now: Millis,
        owner_key: &str,
        command: shared_protocol::OwnerCommand,
    ) -> Result<shared_protocol::OwnerReply, Refusal> {
        if !self.is_owner_key(owner_key) {
            self.security(
                now,
                "refused an owner request over HTTP: bad_owner_key".into(),
            );
            return Err(Refusal::new(
                ErrorCode::BadOwnerKey,
                "the owner key is required",
            ));
        }
        let result = self.owner_command(now, command);
        if let Err(refusal) = &result {
            self.counters.rejected += 1;
            self.security(
                now,
                format!(
                    "refused an owner request over HTTP: {}",
                    code_name(refusal.code)
                ),
            );
        }
        result
    }

    /// A socket closed (or errored). Idempotent.
    pub fn handle_disconnect(&mut self, now: Millis, conn: ConnId) {
        let Some(entry) = self.conns.remove(&conn) else {
            return;
        };
        if let Session::Device { device_id } = entry.session {
            // A device that was removed is gone from the registry; its leases go back too.
            let mut current = true;
            if let Some(device) = self.devices.get_mut(&device_id) {
                current = device.conn == Some(conn);
                if current {
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
            if current {
                self.device_gone(&device_id);
                self.dispatch(now);
            }
        }
        if self.conns.is_empty() && self.alarm_at.is_some() {
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
        self.expire_leases(now);
        self.broadcast_snapshot(now);
        self.ensure_alarm(now);
    }

    /// The snapshot dashboards receive, as of `now`.
    pub fn snapshot(&self, now: Millis) -> SwarmSnapshot {
        let meta = self.meta.clone().unwrap_or_else(|| SwarmMeta {
            swarm_id: String::new(),
            name: String::new(),
            owner_key_hash: String::new(),
            created_ms: 0,
            run_state: shared_protocol::RunState::Running,
            throttle_percent: 100,
        });
        let mut rows: Vec<&Device> = self.devices.values().collect();
        rows.sort_by(|a, b| {
            (b.conn.is_some(), b.record.last_seen_ms)
                .cmp(&(a.conn.is_some(), a.record.last_seen_ms))
        });
        let throughput = self.job_throughput();
        let devices = rows
            .into_iter()
            .take(self.config.snapshot_device_cap)
            .map(|d| {
                let id = &d.record.device_id;
                let (in_flight, share) = self.device_load(id, throughput);
                DeviceView {
                    id: id.clone(),
                    name: d.record.name.clone(),
                    status: d.status(),
                    enabled: d.record.enabled,
                    quarantined: d.record.quarantined,
                    capabilities: d.record.capabilities.clone(),
                    last_seen_ms: d.record.last_seen_ms,
                    registered_ms: d.record.registered_ms,
                    score: d.record.score,
                    speed: self.measured_speed(id),
                    weight_percent: share * 100.0,
                    in_flight,
                    chunks_done: self.jobs.chunks_done.get(id).copied().unwrap_or(0),
                    checks_passed: d.checks_passed,
                }
            })
            .collect();
        SwarmSnapshot {
            swarm_id: meta.swarm_id,
            swarm_name: meta.name,
            now_ms: now,
            seq: self.snapshot_seq,
            device_total: count_u32(self.devices.len()),
            online: count_u32(self.devices.values().filter(|d| d.conn.is_some()).count()),
            run_state: meta.run_state,
            throttle_percent: meta.throttle_percent,
            jobs: self.job_views(),
            devices,
            log: self.log.iter().cloned().collect(),
            counters: self.counters,
        }
    }

    fn add_conn(&mut self, now: Millis, conn: ConnId, session: Session) {
        let bucket = TokenBucket::new(
            now,
            self.config.message_burst,
            self.config.messages_per_second,
        );
        self.conns.insert(conn, Conn { session, bucket });
    }

    /// Records the session a socket now has, in memory and in its attachment.
    pub(crate) fn set_session(&mut self, conn: ConnId, session: Session) {
        if let Some(entry) = self.conns.get_mut(&conn) {
            entry.session = session.clone();
        }
        self.outputs.push_back(Output::Attach {
            conn,
            attachment: SocketAttachment { conn, session },
        });
    }

    /// Closes sockets that never said hello and devices whose heartbeats stopped.
    fn expire_silent(&mut self, now: Millis) {
        let mut silent = Vec::new();
        for (conn, entry) in &self.conns {
            match &entry.session {
                Session::AwaitingHello { since_ms }
                    if now.saturating_sub(*since_ms) >= self.config.hello_timeout_ms =>
                {
                    silent.push((*conn, None));
                }
                Session::Device { device_id } => {
                    if let Some(device) = self.devices.get(device_id) {
                        if now.saturating_sub(device.record.last_seen_ms)
                            >= self.config.offline_after_ms
                        {
                            silent.push((*conn, Some(device.record.name.clone())));
                        }
                    }
                }
                _ => {}
            }
        }
        for (conn, device_name) in silent {
            match device_name {
                Some(name) => {
                    self.log(
                        now,
                        LogLevel::Warn,
                        format!("device '{name}' is OFFLINE: no heartbeat"),
                    );
                    self.close(
                        now,
                        conn,
                        close_code::HEARTBEAT_TIMEOUT,
                        "heartbeat timeout",
                    );
                }
                None => self.close(now, conn, close_code::HELLO_TIMEOUT, "no hello"),
            }
        }
    }

    fn broadcast_snapshot(&mut self, now: Millis) {
        let dashboards: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.session, Session::Dashboard { .. }))
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
        if self.alarm_at.is_none() && !self.conns.is_empty() {
            let at = now + self.config.broadcast_interval_ms;
            self.alarm_at = Some(at);
            self.outputs.push_back(Output::SetAlarm { at });
        }
    }

    fn reject_decode(&mut self, now: Millis, conn: ConnId, session: &Session, err: &DecodeError) {
        self.reject(now, conn, Refusal::new(err.code(), err.to_string()), None);
        if matches!(err, DecodeError::TooLarge { .. }) {
            self.close(now, conn, close_code::TOO_BIG, "message too big");
        } else if matches!(session, Session::AwaitingHello { .. }) {
            self.close(now, conn, close_code::POLICY, "bad hello");
        }
    }

    /// Answers a refused message with an error and records a security event. The event names
    /// only the code and the socket, never the input, which may carry secrets.
    pub(crate) fn reject(
        &mut self,
        now: Millis,
        conn: ConnId,
        refusal: Refusal,
        request: Option<u32>,
    ) {
        self.counters.rejected += 1;
        let who = match self.conns.get(&conn).map(|c| &c.session) {
            Some(Session::Device { device_id }) => format!("device {}", short(device_id)),
            Some(Session::Dashboard { owner: true }) => "the owner's dashboard".to_owned(),
            Some(Session::Dashboard { owner: false }) => "a viewer".to_owned(),
            _ => "a new connection".to_owned(),
        };
        self.security(
            now,
            format!("refused a message from {who}: {}", code_name(refusal.code)),
        );
        let Refusal {
            code,
            message,
            retry_after_ms,
        } = refusal;
        self.send(
            conn,
            &ToClient::Error {
                code,
                message,
                request,
                retry_after_ms,
            },
        );
    }

    /// Closes a socket and forgets its session at once: the platform may not report the close.
    pub(crate) fn close(&mut self, now: Millis, conn: ConnId, code: u16, reason: &str) {
        self.outputs.push_back(Output::Close {
            conn,
            code,
            reason: reason.to_owned(),
        });
        self.handle_disconnect(now, conn);
    }

    pub(crate) fn send(&mut self, conn: ConnId, message: &ToClient) {
        self.counters.messages_out += 1;
        self.outputs.push_back(Output::Send {
            conn,
            text: encode(message).into(),
        });
    }

    pub(crate) fn persist(&mut self, op: StoreOp) {
        self.counters.storage_writes += 1;
        self.outputs.push_back(Output::Persist(op));
    }

    pub(crate) fn emit(&mut self, output: Output) {
        self.outputs.push_back(output);
    }

    pub(crate) fn log(&mut self, now: Millis, level: LogLevel, text: String) {
        push_bounded(
            &mut self.log,
            self.config.log_capacity,
            LogEntry {
                at_ms: now,
                level,
                text,
            },
        );
    }

    /// A security event: in the system log and in the owner's audit log.
    pub(crate) fn security(&mut self, now: Millis, text: String) {
        let entry = LogEntry {
            at_ms: now,
            level: LogLevel::Security,
            text,
        };
        push_bounded(&mut self.audit, self.config.audit_capacity, entry.clone());
        push_bounded(&mut self.log, self.config.log_capacity, entry);
    }
}

fn push_bounded(ring: &mut VecDeque<LogEntry>, capacity: usize, entry: LogEntry) {
    if ring.len() >= capacity {
        ring.pop_front();
    }
    ring.push_back(entry);
}

/// The wire name of an error code (`bad_credential`).
pub(crate) fn code_name(code: ErrorCode) -> String {
    encode(&code).trim_matches('"').to_owned()
}

pub(crate) fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
