//! [`SwarmCore`]: state, lifecycle (connect, message, disconnect, alarm), snapshots and the
//! helpers every handler shares. The hello is handled in `join.rs`, owner commands in
//! `owner.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use shared_protocol::{
    close_code, decode, encode, ChunkAnswer, Counters, DecodeError, DeviceStatus, DeviceView,
    ErrorCode, Limits, LogEntry, LogLevel, SwarmSnapshot, ToClient, ToCoordinator,
};

use crate::audit::Audit;
use crate::invites::Invites;
use crate::jobs::JobBoard;
use crate::limits::{GuessLimiter, GuessLimits, GuessRefusal, SlidingWindow, TokenBucket};
use crate::records::{
    DeviceLink, DeviceRecord, Session, SocketAttachment, StoreOp, Stored, SwarmMeta,
};
use crate::secrets::{hash_secret, Rng};
use crate::verify::VerifyPolicy;
use crate::{ConnId, Millis, Output};

/// Timing, size and rate settings. The defaults are the product's; tests shorten them.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// How often clients send a heartbeat (told to them in the welcome).
    pub heartbeat_interval_ms: Millis,
    /// A device without a heartbeat for this long is OFFLINE and its socket is closed.
    pub offline_after_ms: Millis,
    /// Snapshot broadcast period while a dashboard watches.
    pub broadcast_interval_ms: Millis,
    /// How often a running job's accepted results are committed (one row each time), and how
    /// often a running job wakes the object when no dashboard watches ([`crate::commit`]).
    pub commit_interval_ms: Millis,
    /// A socket that has not said hello after this long is closed, plus twice the time the
    /// object itself keeps hellos waiting under load (at most 5 × this more; see
    /// [`SwarmCore::hello_timeout`]).
    pub hello_timeout_ms: Millis,
    /// Inbound size caps.
    pub limits: Limits,
    /// A dashboard whose heartbeats have not confirmed reading (`seen`) any snapshot sent in
    /// this long is closed: it is not reading. Generous: a browser throttles the timers of a
    /// background tab to one a minute, so its heartbeats may come that rarely.
    pub dashboard_read_timeout_ms: Millis,
    /// At most this many device rows go into one snapshot (totals always cover all devices).
    pub snapshot_device_cap: usize,
    /// System log entries kept (and sent) in snapshots.
    pub log_capacity: usize,
    /// Security events of each kind kept for the owner's audit log (older ones of a kind are
    /// summarised in a count).
    pub audit_per_kind: usize,
    /// Per socket: messages that may arrive at once, and the sustained rate per second. A
    /// result counts as a message whether or not it shares its frame with others
    /// ([`shared_protocol::ToCoordinator::ChunkResults`]). A device's socket may send one more
    /// a second, and hold two more at once, for each core it lends, up to
    /// [`MAX_ALLOWANCE_CORES`] cores.
    pub message_burst: u32,
    pub messages_per_second: u32,
    /// The object's budget of results per second from all devices together. Each result
    /// costs two messages (it in, the next lease out), and the platform gives an object about
    /// a thousand a second: past this many, chunks grow instead of messages
    /// ([`crate::sched::SchedConfig::swarm_results_per_second`]).
    pub results_per_second_budget: u32,
    /// Invites the owner may create per minute.
    pub invites_per_minute: usize,
    /// Wrong invite codes per source address per minute; beyond it that address's code joins
    /// are refused for the rest of the minute.
    pub code_guesses_per_source: usize,
    /// Wrong invite codes per minute from everyone together (also the burst); beyond it code
    /// joins are slowed to this rate (refused with a retry of a few seconds), not locked out.
    /// Links, QR codes and credentials never count against either limit: their 256-bit
    /// secrets cannot be guessed.
    pub code_guesses_per_minute: u32,
    /// Invite lifetime when the owner does not choose one.
    pub default_invite_ttl_ms: Millis,
    /// The window of the invite and failed-join limits: a minute (tests shorten it).
    pub rate_window_ms: Millis,
    /// How results are verified: when a device becomes trusted, how often a trusted device's
    /// result is replicated ([`crate::verify`]).
    pub verify: VerifyPolicy,
    /// Sockets the swarm's object holds itself, and then each gateway object holds, before
    /// the next gateway is opened ([`crate::gateway`]); 0 keeps every socket on the object.
    pub sockets_per_gateway: usize,
}

/// The most lent cores that widen a device socket's message limit ([`Config::messages_per_second`]):
/// a device that claims more cores gets no more room, so one socket cannot take a large part of
/// the object's capacity by claiming cores it does not have.
pub const MAX_ALLOWANCE_CORES: u16 = 64;

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 10_000,
            offline_after_ms: 60_000,
            broadcast_interval_ms: 2_000,
            commit_interval_ms: 30_000,
            hello_timeout_ms: 10_000,
            limits: Limits::default(),
            dashboard_read_timeout_ms: 150_000,
            snapshot_device_cap: 200,
            log_capacity: 40,
            audit_per_kind: 20,
            message_burst: 100,
            messages_per_second: 20,
            results_per_second_budget: 500,
            invites_per_minute: 5,
            code_guesses_per_source: 10,
            code_guesses_per_minute: 30,
            default_invite_ttl_ms: 24 * 60 * 60 * 1000,
            rate_window_ms: 60_000,
            verify: VerifyPolicy::default(),
            sockets_per_gateway: 1_000,
        }
    }
}

/// Why [`SwarmCore::create`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateError {
    /// This object already holds a swarm.
    AlreadyExists,
}

impl Config {
    pub(crate) fn code_guess_limits(&self) -> GuessLimits {
        GuessLimits {
            per_source: self.code_guesses_per_source,
            burst: self.code_guesses_per_minute,
            per_window: self.code_guesses_per_minute,
            window_ms: self.rate_window_ms,
        }
    }
}

impl From<GuessRefusal> for Refusal {
    fn from(refusal: GuessRefusal) -> Self {
        match refusal {
            GuessRefusal::Source { retry_after_ms } => Refusal::rate_limited(
                "too many wrong invite codes from this address",
                retry_after_ms,
            ),
            GuessRefusal::Everyone { retry_after_ms } => Refusal::rate_limited(
                "many wrong invite codes are being tried; codes are slowed down",
                retry_after_ms,
            ),
        }
    }
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
    /// What belongs to that connection (benchmark gate, lent cores, pending check, leases) is
    /// in its session's [`DeviceLink`].
    pub(crate) conn: Option<ConnId>,
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
    /// For a dashboard: the newest snapshot it has said it read (heartbeat `seen`), or the one
    /// before it said hello.
    read_seq: u64,
    /// For a dashboard: it has been sent a full snapshot on this socket by this core, so it
    /// holds the base the next delta is made from.
    has_base: bool,
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
    pub(crate) code_guesses: GuessLimiter,
    alarm_at: Option<Millis>,
    /// While a frame of results is handled, leases are handed out once at its end rather than
    /// after each result (so that they go out in one frame too): `Some(pending)`.
    pub(crate) dispatch_held: Option<bool>,
    /// Sockets placed on each gateway that it has not yet said are open, by when they were
    /// placed ([`crate::gateway`]).
    pub(crate) placing: BTreeMap<u32, VecDeque<Millis>>,
    /// When the next snapshot broadcast is due, while a dashboard watches; `None` otherwise.
    next_tick_ms: Option<Millis>,
    /// When the next commit and job wake-up are due, while a job runs or changes wait to be
    /// committed; `None` otherwise.
    pub(crate) next_commit_ms: Option<Millis>,
    /// The running job's changes not yet committed.
    pub(crate) pending: crate::commit::Pending,
    /// Commit numbers and the devices whose credibility commits hold.
    pub(crate) commits: crate::commit::Commits,
    log: VecDeque<LogEntry>,
    /// Entries ever logged by this core, so a delta knows which are new.
    log_count: u64,
    /// What the dashboards that hold a base hold: the last broadcast as they applied it, and
    /// `log_count` then. `None` while no dashboard watches.
    dashboard_base: Option<(SwarmSnapshot, u64)>,
    pub(crate) audit: Audit,
    pub(crate) jobs: JobBoard,
    pub(crate) counters: Counters,
    snapshot_seq: u64,
    /// When this core was built (the object's last start).
    started_ms: Millis,
    /// The earliest deadline created since the alarm was last armed (see `deadline_at`).
    new_deadline: Option<Millis>,
    /// Devices whose held leases changed since their attachment was last written.
    dirty_links: BTreeSet<String>,
    /// How long the object kept recent hellos waiting, and the extra time it gives because of
    /// it (as of the last hello, alarm or lease expiry) to a socket to say hello and to a
    /// lease's result to arrive.
    hello_waits: crate::limits::HelloWaits,
    queue_grace_ms: Millis,
    /// The sockets accepted and messages handled in the last second, up to the budget: when
    /// full, the object is busy, and hellos may be waiting in its queue unseen.
    recent_events: SlidingWindow,
    outputs: VecDeque<Output>,
}

impl SwarmCore {
    /// An empty object: no swarm yet, nothing connected. `seed` must come from a CSPRNG.
    pub fn new(config: Config, seed: [u8; 32]) -> Self {
        let busy_events = usize::try_from(config.results_per_second_budget).unwrap_or(usize::MAX);
        Self {
            jobs: JobBoard::new(config.verify),
            invite_window: SlidingWindow::new(config.invites_per_minute, config.rate_window_ms),
            code_guesses: GuessLimiter::new(config.code_guess_limits()),
            audit: Audit::new(config.audit_per_kind),
            config,
            rng: Rng::from_seed(seed),
            meta: None,
            devices: BTreeMap::new(),
            conns: BTreeMap::new(),
            invites: Invites::default(),
            alarm_at: None,
            next_tick_ms: None,
            next_commit_ms: None,
            pending: crate::commit::Pending::default(),
            commits: crate::commit::Commits::default(),
            log: VecDeque::new(),
            log_count: 0,
            dashboard_base: None,
            counters: Counters::default(),
            snapshot_seq: 0,
            started_ms: 0,
            new_deadline: None,
            dirty_links: BTreeSet::new(),
            hello_waits: crate::limits::HelloWaits::default(),
            queue_grace_ms: 0,
            recent_events: SlidingWindow::new(busy_events, 1_000),
            dispatch_held: None,
            placing: BTreeMap::new(),
            outputs: VecDeque::new(),
        }
    }

    /// Rebuilds the state of an object that was evicted or restarted: what storage holds, the
    /// sockets that are still open (with their attachments), and the alarm that is armed.
    /// Devices with an open socket count as seen `now`; a running job resumes from its stored
    /// parts, with the leases its devices' connections still hold; the rate limits resume from
    /// the stored invites and guesses. See ARCHITECTURE.md, "Failure and restart".
    pub fn restore(
        &mut self,
        now: Millis,
        mut stored: Stored,
        sockets: Vec<SocketAttachment>,
        alarm_at: Option<Millis>,
    ) {
        let folded = stored.fold_commits();
        self.restore_commits(folded);
        let Stored {
            meta,
            devices,
            invites,
            jobs,
            parts,
            commits: _,
            guesses,
        } = stored;
        self.started_ms = now;
        self.meta = meta;
        if let Some(meta) = self.meta.as_mut().filter(|m| m.lease_key.is_empty()) {
            meta.lease_key = self.rng.secret();
            let meta = meta.clone();
            self.persist(StoreOp::PutSwarm(meta));
        }
        self.alarm_at = alarm_at;
        for record in &devices {
            self.jobs
                .verifier
                .load(&record.device_id, record.credibility);
        }
        self.devices = devices
            .into_iter()
            .map(|record| (record.device_id.clone(), Device { record, conn: None }))
            .collect();
        let window = self.config.rate_window_ms;
        let mut created: Vec<Millis> = invites
            .iter()
            .map(|i| i.created_ms)
            .filter(|t| now.saturating_sub(*t) < window)
            .collect();
        created.sort_unstable();
        for at in created {
            self.invite_window.record(at);
        }
        for invite in invites {
            self.invites.insert(invite);
        }
        let stale = guesses
            .iter()
            .any(|g| now.saturating_sub(g.at_ms) >= window);
        self.code_guesses.replay(
            guesses
                .into_iter()
                .filter(|g| now.saturating_sub(g.at_ms) < window)
                .map(|g| (g.at_ms, g.source))
                .collect(),
        );
        if stale {
            self.persist(StoreOp::PruneGuesses {
                before_ms: now.saturating_sub(window),
            });
        }
        // A restarted object does not know how long its queue keeps hellos waiting: sockets
        // still waiting get the longest grace until the next alarm measures it afresh (and
        // closes those past the timeout then in force).
        if sockets
            .iter()
            .any(|s| matches!(s.session, Session::AwaitingHello { .. }))
        {
            self.queue_grace_ms = self.config.hello_timeout_ms.saturating_mul(5);
        }
        for SocketAttachment { conn, session } in sockets {
            self.add_conn(now, conn, session.clone());
            if let Session::Device { device_id, .. } = &session {
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
        self.restore_jobs(now, jobs, parts);
        self.rearm(now, true);
    }

    /// Creates the swarm this object holds (drawing its lease key if `meta` has none).
    pub fn create(&mut self, now: Millis, meta: SwarmMeta) -> Result<(), CreateError> {
        if self.meta.is_some() {
            return Err(CreateError::AlreadyExists);
        }
        let mut meta = meta;
        if meta.lease_key.is_empty() {
            meta.lease_key = self.rng.secret();
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

    /// The platform answered heartbeats itself (the hibernation API's automatic response) and
    /// reports, per socket, when it last did: each device counts as seen then. The glue passes
    /// them before each alarm, so OFFLINE detection sees heartbeats that never woke the object.
    pub fn handle_pongs(&mut self, pongs: &[(ConnId, Millis)]) {
        for (conn, at) in pongs {
            let Some(Session::Device { device_id, .. }) = self.conns.get(conn).map(|c| &c.session)
            else {
                continue;
            };
            if let Some(device) = self.devices.get_mut(device_id) {
                device.record.last_seen_ms = device.record.last_seen_ms.max(*at);
            }
        }
    }

    /// The platform could not arm the alarm the core asked for: forget it, so that the next
    /// input arms one again.
    pub fn forget_alarm(&mut self) {
        self.alarm_at = None;
    }

    /// When this core was built or restored: it changes exactly when the object restarts.
    pub fn started_ms(&self) -> Millis {
        self.started_ms
    }

    /// Number of open sockets.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// The next effect to carry out, or `None` when all are drained.
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.outputs.is_empty() && !self.dirty_links.is_empty() {
            self.flush_links();
        }
        self.outputs.pop_front()
    }

    /// A socket was accepted from `source` (the client's address as the platform reports it,
    /// `""` when unknown; only its hash is kept). It must say hello within the hello timeout.
    pub fn handle_connect(&mut self, now: Millis, conn: ConnId, source: &str) {
        self.recent_events.record(now);
        let source = crate::limits::source_key(source);
        let session = Session::AwaitingHello {
            since_ms: now,
            source,
        };
        self.outputs.push_back(Output::Attach {
            conn,
            attachment: SocketAttachment {
                conn,
                session: session.clone(),
            },
        });
        self.add_conn(now, conn, session);
        self.deadline_at(now.saturating_add(self.config.hello_timeout_ms));
        self.rearm(now, false);
    }

    /// A message arrived on a socket.
    pub fn handle_message(&mut self, now: Millis, conn: ConnId, bytes: &[u8]) {
        self.recent_events.record(now);
        self.handle_message_inner(now, conn, bytes);
        self.catch_up(now);
        self.rearm(now, false);
    }

    /// What time-based work a busy object does without waiting for its alarm: leases past
    /// their deadline go back to the queue as soon as any message arrives, and a commit that
    /// came due is made (the alarm then finds nothing to do).
    fn catch_up(&mut self, now: Millis) {
        if self.commit_due(now, 0) {
            self.job_tick(now);
        } else if self.lease_deadline_passed(now) {
            self.expire_leases(now);
        }
    }

    fn handle_message_inner(&mut self, now: Millis, conn: ConnId, bytes: &[u8]) {
        self.counters.messages_in = self.counters.messages_in.saturating_add(1);
        let Some(entry) = self.conns.get_mut(&conn) else {
            // A message racing the socket's own close; nothing to answer to.
            return;
        };
        let session = entry.session.clone();
        let (burst, per_second) = self.allowance(&session);
        let fits = self.conns.get_mut(&conn).is_some_and(|entry| {
            entry.bucket.set_limit(now, burst, per_second);
            entry.bucket.take(now)
        });
        if !fits {
            return self.rate_limited(now, conn, per_second);
        }
        let message = match decode::<ToCoordinator>(bytes, &self.config.limits) {
            Ok(message) => message.into_inner(),
            Err(err) => return self.reject_decode(now, conn, &session, &err, bytes),
        };
        // A frame of results counts as that many messages (its first was taken above).
        if let ToCoordinator::ChunkResults { results } = &message {
            let more = results.len().saturating_sub(1);
            let fits = self
                .conns
                .get_mut(&conn)
                .is_some_and(|entry| entry.bucket.take_n(now, more));
            if !fits {
                return self.rate_limited(now, conn, per_second);
            }
        }
        match (session, message) {
            (Session::AwaitingHello { since_ms, .. }, ToCoordinator::Hello(hello)) => {
                self.hello_waits.record(now, now.saturating_sub(since_ms));
                self.update_queue_grace(now, false);
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
            (session, ToCoordinator::Heartbeat { seen }) => {
                match session {
                    Session::Device { device_id, .. } => {
                        if let Some(device) = self.devices.get_mut(&device_id) {
                            device.record.last_seen_ms = now;
                        }
                    }
                    Session::Dashboard { .. } => {
                        let sent = self.snapshot_seq;
                        if let (Some(seen), Some(entry)) = (seen, self.conns.get_mut(&conn)) {
                            entry.read_seq = entry.read_seq.max(seen.min(sent));
                        }
                    }
                    Session::AwaitingHello { .. } => {}
                }
                self.send(
                    conn,
                    &ToClient::HeartbeatAck {
                        server_time_ms: Some(now),
                    },
                );
            }
            (
                Session::Device { device_id, .. },
                ToCoordinator::ChunkResult {
                    lease_id,
                    result,
                    // The device's own timing is not believed: speeds are what the coordinator
                    // measures (see `sched.rs`).
                    compute_ms: _,
                    ticket,
                },
            ) => self.handle_chunk_result(now, conn, &device_id, lease_id, result, ticket),
            (Session::Device { device_id, .. }, ToCoordinator::ChunkResults { results }) => {
                self.dispatch_held = Some(false);
                for answer in results {
                    // A result that got the socket closed (a bad one) ends the frame.
                    if !self.conns.contains_key(&conn) {
                        break;
                    }
                    // `compute_ms` is not believed, as above.
                    let ChunkAnswer {
                        lease_id,
                        result,
                        ticket,
                        ..
                    } = answer;
                    self.handle_chunk_result(now, conn, &device_id, lease_id, result, ticket);
                }
                if self.dispatch_held.take() == Some(true) {
                    self.dispatch(now);
                }
            }
            (Session::Device { device_id, .. }, ToCoordinator::SetLend { cores }) => {
                let has = self
                    .devices
                    .get(&device_id)
                    .map_or(0, |d| d.record.capabilities.cores);
                if cores > has {
                    let refusal = Refusal::new(
                        ErrorCode::Invalid,
                        format!("cores: this device has {has}; it cannot lend {cores}"),
                    );
                    return self.reject(now, conn, refusal, None);
                }
                self.update_link(conn, |link| link.lend = Some(cores));
                self.send_share(&device_id);
                self.device_available(&device_id);
                self.dispatch(now);
            }
            (_, ToCoordinator::SetLend { .. }) => {
                let refusal = Refusal::new(ErrorCode::Forbidden, "only devices lend cores");
                self.reject(now, conn, refusal, None);
            }
            (_, ToCoordinator::ChunkResult { .. } | ToCoordinator::ChunkResults { .. }) => {
                let refusal = Refusal::new(ErrorCode::Forbidden, "only devices return results");
                self.reject(now, conn, refusal, None);
            }
            (Session::Dashboard { owner: true, .. }, ToCoordinator::Owner { request, command }) => {
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

    /// A socket's message limit now: burst and sustained rate ([`Config::message_burst`]),
    /// wider for a device by the cores it lends.
    fn allowance(&self, session: &Session) -> (u32, u32) {
        let cores = match session {
            Session::Device { device_id, .. } => {
                u32::from(self.lent_of(device_id).min(MAX_ALLOWANCE_CORES))
            }
            _ => 0,
        };
        (
            self.config
                .message_burst
                .saturating_add(cores.saturating_mul(2)),
            self.config.messages_per_second.saturating_add(cores),
        )
    }

    /// The socket sent more than its limit: refused, and closed.
    fn rate_limited(&mut self, now: Millis, conn: ConnId, per_second: u32) {
        // A limit of 0 counts as 1 (a retry after a second).
        let retry = 1_000u64
            .checked_div(Millis::from(per_second))
            .unwrap_or(1_000);
        self.reject(
            now,
            conn,
            Refusal::rate_limited(
                &format!("more than {per_second} messages per second"),
                retry,
            ),
            None,
        );
        self.close(now, conn, close_code::RATE_LIMITED, "message rate limit");
    }

    /// An owner command over HTTP, authorised by the owner key. It takes the command only as
    /// the protocol's decoder validated it, so no unchecked field (a NaN centre, a zero width)
    /// can reach a job.
    pub fn handle_owner_request(
        &mut self,
        now: Millis,
        owner_key: &str,
        command: shared_protocol::Validated<shared_protocol::OwnerCommand>,
    ) -> Result<shared_protocol::OwnerReply, Refusal> {
        let result = self.owner_request(now, owner_key, command.into_inner());
        self.rearm(now, false);
        result
    }

    fn owner_request(
        &mut self,
        now: Millis,
        owner_key: &str,
        command: shared_protocol::OwnerCommand,
    ) -> Result<shared_protocol::OwnerReply, Refusal> {
        if !self.is_owner_key(owner_key) {
            self.counters.rejected = self.counters.rejected.saturating_add(1);
            self.security(
                now,
                "owner request over HTTP: bad_owner_key",
                "refused an owner request over HTTP: bad_owner_key".into(),
            );
            return Err(Refusal::new(
                ErrorCode::BadOwnerKey,
                "the owner key is required",
            ));
        }
        let result = self.owner_command(now, command);
        if let Err(refusal) = &result {
            self.counters.rejected = self.counters.rejected.saturating_add(1);
            let code = code_name(refusal.code);
            self.security(
                now,
                "owner request over HTTP: refused",
                format!("refused an owner request over HTTP: {code}"),
            );
        }
        result
    }

    /// A socket closed (or errored). Idempotent.
    pub fn handle_disconnect(&mut self, now: Millis, conn: ConnId) {
        self.forget_conn(now, conn);
        self.rearm(now, false);
    }

    /// Forgets a socket: its device goes offline and its leases back to the queue.
    fn forget_conn(&mut self, now: Millis, conn: ConnId) {
        let Some(entry) = self.conns.remove(&conn) else {
            return;
        };
        if let Session::Device { device_id, .. } = entry.session {
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
    }

    /// The object's alarm fired: time out silent sockets, expire leases, broadcast
    /// a snapshot when one is due, and re-arm for the next thing due ([`Self::poll_timeout`]).
    pub fn handle_alarm(&mut self, now: Millis) {
        self.counters.alarms = self.counters.alarms.saturating_add(1);
        self.alarm_at = None;
        self.expire_silent(now);
        // A commit due before the next broadcast is made now, on this alarm.
        let slack = if self.next_tick_ms.is_some() {
            self.config.broadcast_interval_ms
        } else {
            0
        };
        if self.commit_due(now, slack) {
            self.job_tick(now);
        } else {
            self.expire_leases(now);
        }
        if self.next_tick_ms.is_some_and(|due| due <= now) {
            self.next_tick_ms = None;
            self.broadcast_snapshot(now);
        }
        self.rearm(now, true);
    }

    /// The next time the core needs the alarm, or `None` when nothing will be due: the next
    /// 2 s broadcast while a dashboard watches, the next commit (every 30 s) while a job runs
    /// or changes wait to be committed, and the sockets' hello deadlines. Devices' OFFLINE timeouts
    /// alone never wake the object: nobody is waiting on an idle device, so its check is put
    /// off until ticks start again, and the first tick (with the heartbeats the platform
    /// answered meanwhile, [`Self::handle_pongs`]) closes whoever fell silent. So an idle
    /// swarm of connected devices arms no alarm at all and the object can hibernate.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let hello = self.hello_timeout();
        self.conns
            .values()
            .filter_map(|entry| match &entry.session {
                Session::AwaitingHello { since_ms, .. } => Some(since_ms.saturating_add(hello)),
                _ => None,
            })
            .chain(self.next_tick_ms)
            .chain(self.next_commit_ms)
            .min()
    }

    /// Whether snapshots must go out every broadcast interval: a dashboard is watching.
    fn needs_ticks(&self) -> bool {
        self.conns
            .values()
            .any(|c| matches!(c.session, Session::Dashboard { .. }))
    }

    /// Whether the job's wake-up must run every commit interval: changes wait to be
    /// committed, or, with someone connected, a job runs (its leases expire) or results wait
    /// to be acknowledged.
    fn needs_commits(&self) -> bool {
        self.uncommitted() > 0
            || (!self.conns.is_empty() && (self.jobs_running() || !self.pending.is_empty()))
    }

    /// Snapshots a dashboard may leave unconfirmed before it counts as not reading.
    fn max_unread_snapshots(&self) -> u64 {
        self.config
            .dashboard_read_timeout_ms
            .checked_div(self.config.broadcast_interval_ms)
            .unwrap_or(0)
            .max(3)
    }

    /// A deadline was just created (a socket's hello): the next [`Self::rearm`] arms the alarm
    /// for it if it comes before the armed one.
    pub(crate) fn deadline_at(&mut self, at: Millis) {
        self.new_deadline = Some(self.new_deadline.map_or(at, |d| d.min(at)));
    }

    /// Arms the platform alarm for what [`Self::poll_timeout`] says, after every input. A
    /// full look (`full`, or when no alarm is armed) scans every socket; otherwise only what
    /// an input can make sooner — ticks starting, or a deadline it created
    /// ([`Self::deadline_at`]) — is considered, and an alarm armed too early simply finds
    /// nothing due and re-arms. The alarm is never moved later (that would be a storage write
    /// per heartbeat).
    fn rearm(&mut self, now: Millis, full: bool) {
        let created = self.new_deadline.take();
        if self.needs_commits() {
            if self.next_commit_ms.is_none() {
                self.next_commit_ms = Some(now.saturating_add(self.config.commit_interval_ms));
            }
        } else {
            self.next_commit_ms = None;
        }
        if self.conns.is_empty() && self.next_commit_ms.is_none() {
            self.next_tick_ms = None;
            if self.alarm_at.take().is_some() {
                self.write_alarm(Output::ClearAlarm);
            }
            return;
        }
        if self.needs_ticks() {
            if self.next_tick_ms.is_none() {
                self.next_tick_ms = Some(now.saturating_add(self.config.broadcast_interval_ms));
            }
        } else {
            self.next_tick_ms = None;
        }
        let due = if full || self.alarm_at.is_none() {
            self.poll_timeout()
        } else {
            [self.next_tick_ms, self.next_commit_ms, created]
                .into_iter()
                .flatten()
                .min()
        };
        let Some(due) = due.map(|at| at.max(now)) else {
            return;
        };
        if self.alarm_at.is_none_or(|armed| due < armed) {
            self.alarm_at = Some(due);
            self.write_alarm(Output::SetAlarm { at: due });
        }
    }

    /// Arming or clearing the platform alarm is a storage write there, and counts as one.
    fn write_alarm(&mut self, output: Output) {
        self.counters.storage_writes = self.counters.storage_writes.saturating_add(1);
        self.counters.alarm_writes = self.counters.alarm_writes.saturating_add(1);
        self.outputs.push_back(output);
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
            lease_key: String::new(),
            gateways: 0,
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
                    trusted: d.record.credibility.trusted(&self.config.verify),
                    confirmed: d.record.credibility.confirmed,
                    replicated: d.record.credibility.replicated,
                    disputed: d.record.credibility.disputed,
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
        let read_seq = self.snapshot_seq;
        self.conns.insert(
            conn,
            Conn {
                session,
                bucket,
                read_seq,
                has_base: false,
            },
        );
    }

    /// Records the session a socket now has, in memory and in its attachment.
    pub(crate) fn set_session(&mut self, conn: ConnId, session: Session) {
        if let Some(entry) = self.conns.get_mut(&conn) {
            entry.session = session.clone();
            entry.read_seq = self.snapshot_seq;
        }
        self.outputs.push_back(Output::Attach {
            conn,
            attachment: SocketAttachment { conn, session },
        });
    }

    /// The connection state of a device socket.
    pub(crate) fn link(&self, conn: ConnId) -> Option<&DeviceLink> {
        match &self.conns.get(&conn)?.session {
            Session::Device { link, .. } => Some(link),
            _ => None,
        }
    }

    /// The connection state of a device's current socket.
    pub(crate) fn link_of(&self, device_id: &str) -> Option<&DeviceLink> {
        self.link(self.devices.get(device_id)?.conn?)
    }

    /// Changes the connection state of a device socket, in memory and in its attachment.
    pub(crate) fn update_link(&mut self, conn: ConnId, change: impl FnOnce(&mut DeviceLink)) {
        let Some(entry) = self.conns.get_mut(&conn) else {
            return;
        };
        if let Session::Device { link, .. } = &mut entry.session {
            change(link);
            let session = entry.session.clone();
            self.outputs.push_back(Output::Attach {
                conn,
                attachment: SocketAttachment { conn, session },
            });
        }
    }

    /// The device's leases changed: its attachment is rewritten before the outputs drain.
    pub(crate) fn touch_leases(&mut self, device_id: &str) {
        if !self.dirty_links.contains(device_id) {
            self.dirty_links.insert(device_id.to_owned());
        }
    }

    /// Writes the held leases of every touched device into its socket's attachment.
    fn flush_links(&mut self) {
        for device_id in std::mem::take(&mut self.dirty_links) {
            let Some(conn) = self.devices.get(&device_id).and_then(|d| d.conn) else {
                continue;
            };
            let held = self.held_leases(&device_id);
            let job = if held.is_empty() {
                String::new()
            } else {
                self.running_job_id()
                    .map(|id| short(id).to_owned())
                    .unwrap_or_default()
            };
            if self
                .link(conn)
                .is_some_and(|link| link.leases != held || link.lease_job != job)
            {
                self.update_link(conn, |link| {
                    link.leases = held;
                    link.lease_job = job;
                });
            }
        }
    }

    /// How long a socket may take to say hello: the configured timeout, plus twice how long
    /// the object itself has recently kept hellos waiting (its input queue under load), or 5 ×
    /// the timeout while it is busy (it handled as many events in the last second as its
    /// budget of results), at most 5 × the timeout more. A join under load waits for its turn
    /// instead of being closed with 4001; a socket that never says hello is still closed,
    /// within 6 × the timeout.
    pub fn hello_timeout(&self) -> Millis {
        self.config
            .hello_timeout_ms
            .saturating_add(self.queue_grace_ms)
    }

    /// The extra time the object's own queueing buys a lease's result: the same as a hello's
    /// ([`Self::hello_timeout`]). A lease expires only this long after its deadline, so that a
    /// device whose result waited in the object's queue is not taken for a straggler (its
    /// rate halved, its work given out again) because the object was slow.
    pub fn queue_grace(&self) -> Millis {
        self.queue_grace_ms
    }

    /// The grace grows at once, but shrinks only at an alarm, which also closes whoever it
    /// leaves past their deadline.
    pub(crate) fn update_queue_grace(&mut self, now: Millis, may_shrink: bool) {
        let cap = self.config.hello_timeout_ms.saturating_mul(5);
        // Busy: as many events in the last second as the budget of results. Hellos may then
        // wait in the queue behind the rest, unmeasured yet (a join storm: none handled so far).
        let busy = self.recent_events.check(now).is_err();
        let grace = if busy {
            cap
        } else {
            self.hello_waits.median(now).saturating_mul(2).min(cap)
        };
        self.queue_grace_ms = if may_shrink {
            grace
        } else {
            grace.max(self.queue_grace_ms)
        };
    }

    /// Closes sockets that never said hello and devices whose heartbeats stopped.
    fn expire_silent(&mut self, now: Millis) {
        self.update_queue_grace(now, true);
        let timeout = self.hello_timeout();
        let mut silent = Vec::new();
        for (conn, entry) in &self.conns {
            match &entry.session {
                Session::AwaitingHello { since_ms, .. }
                    if now.saturating_sub(*since_ms) >= timeout =>
                {
                    silent.push((*conn, None));
                }
                Session::Device { device_id, .. } => {
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

    /// Sends the snapshot to every dashboard that keeps up. One that has not read the last
    /// [`Config::dashboard_read_timeout_ms`] worth of snapshots is closed instead (that many
    /// broadcast intervals, at least 3): what it does not read would pile
    /// up in the runtime's send buffer.
    fn broadcast_snapshot(&mut self, now: Millis) {
        let seq = self.snapshot_seq.saturating_add(1);
        let max_unread = self.max_unread_snapshots();
        let (dashboards, stuck): (Vec<ConnId>, Vec<ConnId>) = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.session, Session::Dashboard { .. }))
            .map(|(conn, c)| (*conn, seq.saturating_sub(c.read_seq) <= max_unread))
            .fold(
                (Vec::new(), Vec::new()),
                |(mut keep, mut stuck), (conn, reads)| {
                    if reads {
                        keep.push(conn)
                    } else {
                        stuck.push(conn)
                    }
                    (keep, stuck)
                },
            );
        for conn in stuck {
            self.log(
                now,
                LogLevel::Warn,
                format!("a dashboard stopped reading its snapshots ({max_unread} unread) and was closed"),
            );
            self.close(now, conn, close_code::NOT_READING, "not reading");
        }
        if dashboards.is_empty() {
            self.dashboard_base = None;
            return;
        }
        self.snapshot_seq = seq;
        // Count the sends first so the snapshot reports them; encode once for every dashboard.
        self.counters.messages_out = self
            .counters
            .messages_out
            .saturating_add(dashboards.len() as u64);
        let snapshot = self.snapshot(now);
        let (deltas, mut fulls): (Vec<ConnId>, Vec<ConnId>) =
            dashboards.into_iter().partition(|conn| {
                self.conns.get(conn).is_some_and(|c| {
                    c.has_base && matches!(c.session, Session::Dashboard { deltas: true, .. })
                })
            });
        let base = match self.dashboard_base.take() {
            Some((mut base, logged)) if !deltas.is_empty() => {
                let added = self.log_count.saturating_sub(logged);
                // The log ring always keeps its newest entry (`push_bounded`).
                let kept = self.config.log_capacity.max(1);
                let delta = crate::delta::diff(&base, &snapshot, added, kept);
                let text: Rc<str> =
                    encode::<ToClient>(&ToClient::SnapshotDelta(Box::new(delta.clone()))).into();
                // The base becomes what those dashboards hold once they apply it.
                if base.apply(delta).is_ok() {
                    for conn in deltas {
                        self.outputs.push_back(Output::Send {
                            conn,
                            text: Rc::clone(&text),
                        });
                    }
                    base
                } else {
                    fulls.extend(deltas);
                    snapshot.clone()
                }
            }
            _ => {
                fulls.extend(deltas);
                snapshot.clone()
            }
        };
        if !fulls.is_empty() {
            let text: Rc<str> = encode::<ToClient>(&ToClient::Snapshot(snapshot)).into();
            for conn in fulls {
                if let Some(entry) = self.conns.get_mut(&conn) {
                    entry.has_base = true;
                }
                self.outputs.push_back(Output::Send {
                    conn,
                    text: Rc::clone(&text),
                });
            }
        }
        self.dashboard_base = Some((base, self.log_count));
    }

    fn reject_decode(
        &mut self,
        now: Millis,
        conn: ConnId,
        session: &Session,
        err: &DecodeError,
        bytes: &[u8],
    ) {
        // A refused owner command is answered with its `request`, when one can be read (a
        // message over the size cap is not parsed at all).
        let request = match err {
            DecodeError::TooLarge { .. } => None,
            _ => shared_protocol::request_of(bytes),
        };
        self.reject(
            now,
            conn,
            Refusal::new(err.code(), err.to_string()),
            request,
        );
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
        self.counters.rejected = self.counters.rejected.saturating_add(1);
        let (kind, who) = match self.conns.get(&conn).map(|c| &c.session) {
            Some(Session::Device { device_id, .. }) => (
                "message from a device",
                format!("device {}", short(device_id)),
            ),
            Some(Session::Dashboard { owner: true, .. }) => {
                ("message from the owner", "the owner's dashboard".to_owned())
            }
            Some(Session::Dashboard { owner: false, .. }) => {
                ("message from a viewer", "a viewer".to_owned())
            }
            _ => ("hello", "a new connection".to_owned()),
        };
        let code = code_name(refusal.code);
        self.security(now, kind, format!("refused a message from {who}: {code}"));
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
        self.forget_conn(now, conn);
    }

    pub(crate) fn send(&mut self, conn: ConnId, message: &ToClient) {
        self.counters.messages_out = self.counters.messages_out.saturating_add(1);
        self.outputs.push_back(Output::Send {
            conn,
            text: encode(message).into(),
        });
    }

    pub(crate) fn persist(&mut self, op: StoreOp) {
        self.counters.storage_writes = self.counters.storage_writes.saturating_add(1);
        self.outputs.push_back(Output::Persist(op));
    }

    pub(crate) fn emit(&mut self, output: Output) {
        self.outputs.push_back(output);
    }

    pub(crate) fn log(&mut self, now: Millis, level: LogLevel, text: String) {
        self.log_count = self.log_count.saturating_add(1);
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

    /// A security event of a kind (a fixed name: the audit log keeps the newest few of each
    /// kind and counts the rest): in the system log and in the owner's audit log.
    pub(crate) fn security(&mut self, now: Millis, kind: &'static str, text: String) {
        let entry = LogEntry {
            at_ms: now,
            level: LogLevel::Security,
            text,
        };
        self.audit.record(kind, entry.clone());
        self.log_count = self.log_count.saturating_add(1);
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

/// The first 8 characters of an id, for log lines.
pub(crate) fn short(id: &str) -> &str {
    id.char_indices()
        .nth(8)
        .map_or(id, |(end, _)| id.get(..end).unwrap_or(id))
}

fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
