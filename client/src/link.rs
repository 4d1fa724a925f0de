//! The client's connection logic as a plain, clock-free type: backoff with jitter, the hello,
//! heartbeats, and what each coordinator message means for the link.
//!
//! [`Link`] is driven by the browser glue (or a test) with `now` and random numbers it is
//! handed; it never touches a socket or a timer itself.

use serde::de::IgnoredAny;
use std::collections::VecDeque;

use shared_protocol::{
    ChunkAnswer, DeviceCredential, ErrorCode, Hello, HelloRole, SnapshotDelta, SwarmSnapshot,
    ToClient, ToCoordinator, WelcomeRole, Work, MAX_RESULTS_PER_FRAME, PROTOCOL_VERSION,
    RESEND_AFTER_MS,
};

/// Results kept until the coordinator acknowledges them, and tickets of leases being computed:
/// at most this many of each (the oldest go first; the coordinator computes a lost result's
/// work again). Ample: a 16-core device returns about 240 results in a 30 s commit interval.
pub const MAX_KEPT: usize = 1_024;

/// A result sent but not yet acknowledged ([`ToClient::Committed`]): sent again, with its
/// lease's ticket, after every welcome and every [`RESEND_AFTER_MS`].
#[derive(Debug, Clone)]
struct Kept {
    answer: ChunkAnswer,
    resend_at: u64,
}

/// The most results [`Link::poll_resends`] sends again in one second: below the sustained
/// message limit of any socket (20 a second), whatever else the device sends.
pub const RESENDS_PER_SECOND: usize = 16;

/// The most bytes of results [`Link::chunk_results`] and [`Link::poll_resends`] put in one
/// frame: well inside the coordinator's limit for a frame of results (256 KiB,
/// `shared_protocol::Limits::max_bulk_bytes`).
pub const MAX_FRAME_BYTES: usize = 192 * 1024;

/// Exponential backoff with "equal jitter": the n-th retry waits between half and all of
/// `min(max, base · 2ⁿ)`. It never gives up; a successful welcome resets it.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    pub base_ms: u64,
    pub max_ms: u64,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base_ms: 500,
            max_ms: 30_000,
            attempt: 0,
        }
    }
}

impl Backoff {
    /// The delay before the next attempt. `random` is uniform in [0, 1).
    pub fn next_delay(&mut self, random: f64) -> u64 {
        let ceiling = self
            .base_ms
            .saturating_mul(1u64 << self.attempt.min(20))
            .min(self.max_ms);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + (random.clamp(0.0, 1.0) * (ceiling - half) as f64) as u64
    }

    /// Failed attempts since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Who this client is to the coordinator.
#[derive(Debug, Clone, PartialEq)]
pub enum Identity {
    /// `invite` is presented only while there is no credential.
    Device {
        name: String,
        capabilities: shared_protocol::Capabilities,
        credential: Option<DeviceCredential>,
        invite: Option<shared_protocol::JoinProof>,
    },
    Dashboard {
        owner_key: Option<String>,
    },
}

/// Where the link stands.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkState {
    /// A socket is opening or the hello is out; waiting for the welcome.
    Connecting { attempt: u32 },
    /// Welcomed; heartbeats flow.
    Online,
    /// Disconnected; the next attempt starts at `retry_at`.
    Waiting { retry_at: u64, attempt: u32 },
    /// The coordinator refused this identity for good (unknown device, wrong owner key, other
    /// protocol version); reconnecting would not help.
    Refused { code: ErrorCode, message: String },
}

/// A snapshot as a link decodes it: a dashboard reads [`SwarmSnapshot`]; a device skips it unread
/// ([`IgnoredAny`], as in [`shared_protocol::ToDevice`]), so its wasm carries no decoder for it.
pub trait SnapshotPayload {
    /// How the changes that follow a first snapshot are decoded.
    type Delta;
    /// The snapshot's `seq`, if it was read.
    fn seq(&self) -> Option<u64>;
    /// What receiving it means to the glue.
    fn event(self) -> LinkEvent;
    /// A delta's `seq`, if it was read, and what receiving it means to the glue.
    fn delta_event(delta: Self::Delta) -> (Option<u64>, LinkEvent);
}

impl SnapshotPayload for SwarmSnapshot {
    type Delta = Box<SnapshotDelta>;

    fn seq(&self) -> Option<u64> {
        Some(self.seq)
    }

    fn event(self) -> LinkEvent {
        LinkEvent::Snapshot(Box::new(self))
    }

    fn delta_event(delta: Box<SnapshotDelta>) -> (Option<u64>, LinkEvent) {
        (Some(delta.seq), LinkEvent::SnapshotDelta(delta))
    }
}

impl SnapshotPayload for IgnoredAny {
    type Delta = IgnoredAny;

    fn seq(&self) -> Option<u64> {
        None
    }

    fn event(self) -> LinkEvent {
        LinkEvent::Nothing
    }

    fn delta_event(_: IgnoredAny) -> (Option<u64>, LinkEvent) {
        (None, LinkEvent::Nothing)
    }
}

/// A lease's work as a link decodes it: a device reads [`Work`]; a dashboard, which is never
/// leased work, skips it unread ([`IgnoredAny`], as in [`shared_protocol::ToDashboard`]), so its
/// wasm carries no decoder for it.
pub trait LeasePayload {
    /// What receiving a lease of this work means to the glue.
    fn event(self, lease_id: u64, job_id: String) -> LinkEvent;
}

impl LeasePayload for Work {
    fn event(self, lease_id: u64, job_id: String) -> LinkEvent {
        LinkEvent::Lease {
            lease_id,
            job_id,
            work: self,
        }
    }
}

impl LeasePayload for IgnoredAny {
    fn event(self, _: u64, _: String) -> LinkEvent {
        LinkEvent::Nothing
    }
}

/// What a coordinator message means to the glue.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkEvent {
    /// Welcomed. `new_credential` must be stored (it is shown only once).
    Welcomed {
        swarm_name: String,
        device_id: Option<String>,
        owner: bool,
        new_credential: Option<DeviceCredential>,
    },
    /// A snapshot for the dashboard.
    Snapshot(Box<shared_protocol::SwarmSnapshot>),
    /// What changed since the last snapshot or delta: apply it to the snapshot held
    /// ([`SwarmSnapshot::apply`]).
    SnapshotDelta(Box<SnapshotDelta>),
    /// A heartbeat round trip completed.
    Ack {
        rtt_ms: u64,
    },
    /// The coordinator refused a message; the link goes on.
    Error {
        code: ErrorCode,
        message: String,
    },
    /// The coordinator refused the identity; the glue should stop reconnecting.
    Refused,
    /// Work to compute; answer with [`Link::chunk_result`].
    Lease {
        lease_id: u64,
        job_id: String,
        work: Work,
    },
    /// How much to compute from now on.
    Share(shared_protocol::DeviceShare),
    /// Stop working on this lease (its result would be ignored).
    CancelLease {
        lease_id: u64,
    },
    /// Raised by the glue, not the coordinator: a worker finished a lease and its result was
    /// sent.
    Computed {
        lease_id: u64,
        compute_ms: u64,
    },
    /// Raised by the glue: a worker could not compute a lease (a workload's module could not
    /// be fetched, or its outputs not uploaded); it is left unanswered.
    Failed {
        lease_id: u64,
        error: String,
    },
    Nothing,
}

/// One client's link to its swarm.
#[derive(Debug, Clone)]
pub struct Link {
    identity: Identity,
    backoff: Backoff,
    state: LinkState,
    heartbeat_interval_ms: u64,
    next_heartbeat_at: Option<u64>,
    heartbeat_sent_at: Option<u64>,
    /// The `seq` of the last snapshot received on this connection (dashboards).
    seen_seq: Option<u64>,
    refusal: Option<(ErrorCode, String)>,
    /// Tickets of the leases being computed, by lease id (protocol 4).
    tickets: VecDeque<(u64, String)>,
    /// Results sent and not yet acknowledged, oldest first.
    kept: VecDeque<Kept>,
    /// A snapshot delta did not follow the snapshot held: this connection's state is lost,
    /// and a new connection starts with a whole snapshot.
    out_of_step: bool,
}

impl Link {
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            backoff: Backoff::default(),
            state: LinkState::Connecting { attempt: 0 },
            heartbeat_interval_ms: 10_000,
            next_heartbeat_at: None,
            heartbeat_sent_at: None,
            seen_seq: None,
            refusal: None,
            tickets: VecDeque::new(),
            kept: VecDeque::new(),
            out_of_step: false,
        }
    }

    /// The dashboard's snapshot fell out of step with the deltas (one was lost or came out of
    /// order): close this connection and open a new one, which starts with a whole snapshot.
    pub fn must_reconnect(&self) -> bool {
        self.out_of_step
    }

    pub fn state(&self) -> &LinkState {
        &self.state
    }

    /// The socket opened: the hello to send first.
    pub fn on_open(&mut self) -> ToCoordinator {
        self.out_of_step = false;
        self.state = LinkState::Connecting {
            attempt: self.backoff.attempts(),
        };
        let role = match &self.identity {
            Identity::Device {
                name,
                capabilities,
                credential,
                invite,
            } => HelloRole::Device {
                name: name.clone(),
                capabilities: capabilities.clone(),
                credential: credential.clone(),
                invite: if credential.is_some() {
                    None
                } else {
                    invite.clone()
                },
            },
            Identity::Dashboard { owner_key } => HelloRole::Dashboard {
                owner_key: owner_key.clone(),
            },
        };
        ToCoordinator::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            role,
        })
    }

    /// A message from the coordinator: what it means, one event per lease of a frame of
    /// leases ([`ToClient::Leases`]) and otherwise one event.
    pub fn on_message<S: SnapshotPayload, R, W: LeasePayload>(
        &mut self,
        now: u64,
        message: ToClient<S, R, S::Delta, W>,
    ) -> Vec<LinkEvent> {
        match message {
            ToClient::Leases { leases } => leases
                .into_iter()
                .map(|lease| self.on_one(now, lease.into_lease::<S, R, S::Delta>()))
                .collect(),
            message => vec![self.on_one(now, message)],
        }
    }

    fn on_one<S: SnapshotPayload, R, W: LeasePayload>(
        &mut self,
        now: u64,
        message: ToClient<S, R, S::Delta, W>,
    ) -> LinkEvent {
        match message {
            ToClient::Welcome {
                swarm_name,
                role,
                heartbeat_interval_ms,
                ..
            } => {
                self.backoff.reset();
                self.state = LinkState::Online;
                self.heartbeat_interval_ms = heartbeat_interval_ms.max(100);
                self.next_heartbeat_at = Some(now + self.heartbeat_interval_ms);
                // Whatever was not acknowledged goes again on this connection.
                for kept in &mut self.kept {
                    kept.resend_at = now;
                }
                match role {
                    WelcomeRole::Device {
                        device_id,
                        credential,
                    } => {
                        if let (
                            Identity::Device {
                                credential: stored, ..
                            },
                            Some(new),
                        ) = (&mut self.identity, &credential)
                        {
                            *stored = Some(new.clone());
                        }
                        LinkEvent::Welcomed {
                            swarm_name,
                            device_id: Some(device_id),
                            owner: false,
                            new_credential: credential,
                        }
                    }
                    WelcomeRole::Dashboard { owner } => LinkEvent::Welcomed {
                        swarm_name,
                        device_id: None,
                        owner,
                        new_credential: None,
                    },
                }
            }
            ToClient::HeartbeatAck { .. } => match self.heartbeat_sent_at.take() {
                Some(sent) => LinkEvent::Ack {
                    rtt_ms: now.saturating_sub(sent),
                },
                None => LinkEvent::Nothing,
            },
            ToClient::Snapshot(snapshot) => {
                self.seen_seq = snapshot.seq().or(self.seen_seq);
                snapshot.event()
            }
            ToClient::SnapshotDelta(delta) => {
                let (seq, event) = S::delta_event(delta);
                // A delta read (a dashboard's) must make the snapshot after the one held.
                if let Some(seq) = seq {
                    if self
                        .seen_seq
                        .is_none_or(|seen| seen.checked_add(1) != Some(seq))
                    {
                        self.out_of_step = true;
                        return LinkEvent::Nothing;
                    }
                }
                self.seen_seq = seq.or(self.seen_seq);
                event
            }
            // Owner commands go over HTTP from this client; a reply here is not ours to handle.
            ToClient::OwnerResult { .. } => LinkEvent::Nothing,
            ToClient::Lease {
                lease_id,
                job_id,
                work,
                ticket,
                ..
            } => {
                if let Some(ticket) = ticket {
                    if self.tickets.len() >= MAX_KEPT {
                        self.tickets.pop_front();
                    }
                    self.tickets.push_back((lease_id, ticket));
                }
                work.event(lease_id, job_id)
            }
            // [`Self::on_message`] takes a frame of leases apart before this.
            ToClient::Leases { .. } => LinkEvent::Nothing,
            ToClient::CancelLease { lease_id } => {
                self.tickets.retain(|(id, _)| *id != lease_id);
                LinkEvent::CancelLease { lease_id }
            }
            ToClient::Committed { lease_ids } => {
                self.kept
                    .retain(|kept| !lease_ids.contains(&kept.answer.lease_id));
                LinkEvent::Nothing
            }
            ToClient::Share(share) => LinkEvent::Share(share),
            ToClient::Error { code, message, .. } => {
                if is_final(code) {
                    self.refusal = Some((code, message));
                    LinkEvent::Refused
                } else {
                    LinkEvent::Error { code, message }
                }
            }
        }
    }

    /// The message that tells the coordinator how many cores this device lends (0 pauses it).
    /// Sent after every welcome while the user has chosen a number, since a new connection
    /// starts by lending everything.
    pub fn lend_message(&self, cores: u16) -> ToCoordinator {
        ToCoordinator::SetLend { cores }
    }

    /// The ticket of a lease being computed, as the coordinator gave it (protocol 4): a
    /// workload lease's key to its module and to the upload of its outputs.
    pub fn ticket(&self, lease_id: u64) -> Option<&str> {
        self.tickets
            .iter()
            .find(|(id, _)| *id == lease_id)
            .map(|(_, ticket)| ticket.as_str())
    }

    /// What a workload lease's module fetch and outputs upload present, once welcomed:
    /// `Lease <device id> <ticket>` (docs/PROTOCOL.md, the module and outputs endpoints).
    pub fn lease_authorization(&self, lease_id: u64) -> Option<String> {
        let Identity::Device {
            credential: Some(credential),
            ..
        } = &self.identity
        else {
            return None;
        };
        let ticket = self.ticket(lease_id)?;
        Some(format!("Lease {} {ticket}", credential.device_id))
    }

    /// The message that reports a computed lease. A result of a lease that came with a
    /// ticket carries it, so that the coordinator can still take it if it arrives after the
    /// lease's deadline while its work waits in the queue, and is kept until the coordinator
    /// acknowledges it ([`Self::poll_resends`]).
    pub fn chunk_result(
        &mut self,
        now: u64,
        lease_id: u64,
        result: shared_protocol::WorkResult,
        compute_ms: u64,
    ) -> ToCoordinator {
        self.answer(now, lease_id, result, compute_ms).into()
    }

    /// [`Self::chunk_result`] for several results ready at once: as few frames as hold them
    /// (protocol 5, [`ToCoordinator::ChunkResults`]), each at most [`MAX_RESULTS_PER_FRAME`]
    /// results and about [`MAX_FRAME_BYTES`]; a result alone goes as a plain
    /// [`ToCoordinator::ChunkResult`].
    pub fn chunk_results(
        &mut self,
        now: u64,
        results: impl IntoIterator<Item = (u64, shared_protocol::WorkResult, u64)>,
    ) -> Vec<ToCoordinator> {
        let answers: Vec<ChunkAnswer> = results
            .into_iter()
            .map(|(lease_id, result, compute_ms)| self.answer(now, lease_id, result, compute_ms))
            .collect();
        frames(answers)
    }

    /// A result as it goes out, kept until acknowledged when its lease had a ticket.
    fn answer(
        &mut self,
        now: u64,
        lease_id: u64,
        result: shared_protocol::WorkResult,
        compute_ms: u64,
    ) -> ChunkAnswer {
        let ticket = self
            .tickets
            .iter()
            .position(|(id, _)| *id == lease_id)
            .and_then(|at| self.tickets.remove(at))
            .map(|(_, ticket)| ticket);
        let answer = ChunkAnswer {
            lease_id,
            result,
            compute_ms: compute_ms.min(86_400_000),
            ticket,
        };
        if answer.ticket.is_some() {
            if self.kept.len() >= MAX_KEPT {
                self.kept.pop_front();
            }
            self.kept.push_back(Kept {
                answer: answer.clone(),
                resend_at: now.saturating_add(RESEND_AFTER_MS),
            });
        }
        answer
    }

    /// The results to send again now, while online: all that are not acknowledged after a
    /// welcome, and then each one [`RESEND_AFTER_MS`] after it was last sent; packed into as
    /// few frames as [`Self::chunk_results`] would. At most [`RESENDS_PER_SECOND`] go at once
    /// (the oldest first); the rest are due a second later, so that a device that kept many
    /// stays within its socket's message limit, where every result counts.
    pub fn poll_resends(&mut self, now: u64) -> Vec<ToCoordinator> {
        if self.state != LinkState::Online {
            return Vec::new();
        }
        let mut due = Vec::new();
        for kept in self.kept.iter_mut().filter(|kept| kept.resend_at <= now) {
            if due.len() < RESENDS_PER_SECOND {
                kept.resend_at = now.saturating_add(RESEND_AFTER_MS);
                due.push(kept.answer.clone());
            } else {
                kept.resend_at = now.saturating_add(1_000);
            }
        }
        frames(due)
    }

    /// Results sent and not yet acknowledged.
    pub fn unacknowledged(&self) -> usize {
        self.kept.len()
    }

    /// When the next heartbeat is due, while online.
    pub fn next_heartbeat_at(&self) -> Option<u64> {
        self.next_heartbeat_at
            .filter(|_| self.state == LinkState::Online)
    }

    /// The heartbeat to send if one is due at `now`.
    pub fn poll_heartbeat(&mut self, now: u64) -> Option<ToCoordinator> {
        let due = self.next_heartbeat_at()?;
        if now < due {
            return None;
        }
        self.next_heartbeat_at = Some(now + self.heartbeat_interval_ms);
        self.heartbeat_sent_at = Some(now);
        // A dashboard tells which snapshot it read last, so the coordinator knows it reads.
        Some(ToCoordinator::Heartbeat {
            seen: self.seen_seq,
        })
    }

    /// The socket closed (or never opened). Returns the delay before reconnecting, or `None`
    /// when the identity was refused and reconnecting would not help.
    pub fn on_close(&mut self, now: u64, random: f64) -> Option<u64> {
        self.next_heartbeat_at = None;
        self.heartbeat_sent_at = None;
        self.seen_seq = None;
        if let Some((code, message)) = self.refusal.clone() {
            self.state = LinkState::Refused { code, message };
            return None;
        }
        let delay = self.backoff.next_delay(random);
        self.state = LinkState::Waiting {
            retry_at: now + delay,
            attempt: self.backoff.attempts(),
        };
        Some(delay)
    }

    /// Forgets the device credential (after a refusal), so the next attempt registers anew
    /// with `invite`.
    pub fn forget_credential(&mut self, invite: Option<shared_protocol::JoinProof>) {
        if let Identity::Device {
            credential,
            invite: proof,
            ..
        } = &mut self.identity
        {
            *credential = None;
            *proof = invite;
        }
        self.refusal = None;
        self.state = LinkState::Connecting { attempt: 0 };
    }
}

/// Results packed into frames in order: at most [`MAX_RESULTS_PER_FRAME`] and about
/// [`MAX_FRAME_BYTES`] each (a result larger than that goes alone); a frame of one is a plain
/// [`ToCoordinator::ChunkResult`]. For devices that keep no [`Link`] (tests, benchmarks).
pub fn frames(answers: Vec<ChunkAnswer>) -> Vec<ToCoordinator> {
    let mut frames: Vec<Vec<ChunkAnswer>> = Vec::new();
    let mut bytes: usize = 0;
    for answer in answers {
        let size = serde_json::to_string(&answer).map_or(0, |text| text.len());
        match frames.last_mut() {
            Some(frame)
                if frame.len() < MAX_RESULTS_PER_FRAME
                    && bytes.saturating_add(size) <= MAX_FRAME_BYTES =>
            {
                bytes = bytes.saturating_add(size);
                frame.push(answer);
            }
            _ => {
                bytes = size;
                frames.push(vec![answer]);
            }
        }
    }
    frames
        .into_iter()
        .map(|mut frame| match (frame.pop(), frame.is_empty()) {
            (Some(answer), true) => answer.into(),
            (last, _) => {
                frame.extend(last);
                ToCoordinator::ChunkResults { results: frame }
            }
        })
        .collect()
}

/// Errors after which the same hello would be refused again.
fn is_final(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::BadCredential
            | ErrorCode::BadOwnerKey
            | ErrorCode::ProtocolMismatch
            | ErrorCode::SwarmNotFound
            | ErrorCode::InviteRequired
            | ErrorCode::InviteInvalid
            | ErrorCode::InviteExpired
            | ErrorCode::InviteRevoked
            | ErrorCode::InviteExhausted
            | ErrorCode::BadResult
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_protocol::{AgentClass, Capabilities, JoinProof};

    fn device(credential: Option<DeviceCredential>) -> Link {
        Link::new(Identity::Device {
            name: "phone".into(),
            capabilities: Capabilities {
                cores: 4,
                memory_mb: None,
                gpu: false,
                agent: AgentClass::BrowserMobile,
                workloads: false,
            },
            credential,
            invite: Some(JoinProof::Token {
                token: "t".repeat(43),
            }),
        })
    }

    fn welcome(credential: Option<DeviceCredential>) -> ToClient {
        ToClient::Welcome {
            protocol: PROTOCOL_VERSION,
            swarm_id: "s".into(),
            swarm_name: "lab".into(),
            role: WelcomeRole::Device {
                device_id: "d".repeat(32),
                credential,
            },
            heartbeat_interval_ms: 10_000,
            offline_after_ms: 60_000,
        }
    }

    fn cred() -> DeviceCredential {
        DeviceCredential {
            device_id: "d".repeat(32),
            secret: "s".repeat(43),
        }
    }

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_caps() {
        let mut b = Backoff::default();
        let lows: Vec<u64> = (0..10).map(|_| b.next_delay(0.0)).collect();
        assert_eq!(
            lows,
            [250, 500, 1000, 2000, 4000, 8000, 15000, 15000, 15000, 15000]
        );
        let mut b = Backoff::default();
        let highs: Vec<u64> = (0..8).map(|_| b.next_delay(0.999_999)).collect();
        assert_eq!(highs, [499, 999, 1999, 3999, 7999, 15999, 29999, 29999]);
        // It never gives up, however long the outage.
        for _ in 0..1000 {
            assert!(b.next_delay(0.5) <= 30_000);
        }
        b.reset();
        assert_eq!(b.next_delay(0.0), 250);
    }

    #[test]
    fn jitter_spreads_a_thundering_herd() {
        let delays: Vec<u64> = (0..10)
            .map(|i| Backoff::default().next_delay(f64::from(i) / 10.0))
            .collect();
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert_eq!(distinct.len(), 10);
    }

    #[test]
    fn hello_carries_the_protocol_version_and_credential() {
        let mut link = device(Some(cred()));
        let ToCoordinator::Hello(hello) = link.on_open() else {
            panic!()
        };
        assert_eq!(hello.protocol, PROTOCOL_VERSION);
        assert!(matches!(
            hello.role,
            HelloRole::Device {
                credential: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn a_new_credential_is_kept_for_the_next_hello() {
        let mut link = device(None);
        link.on_open();
        let event = link.on_message(0, welcome(Some(cred())));
        assert!(matches!(
            event.as_slice(),
            [LinkEvent::Welcomed {
                new_credential: Some(_),
                ..
            }]
        ));
        assert_eq!(link.on_close(10, 0.0), Some(250));
        let ToCoordinator::Hello(hello) = link.on_open() else {
            panic!()
        };
        assert!(matches!(hello.role, HelloRole::Device { credential: Some(c), .. } if c == cred()));
    }

    #[test]
    fn heartbeats_follow_the_welcomed_interval_and_measure_rtt() {
        let mut link = device(None);
        assert_eq!(
            link.poll_heartbeat(0),
            None,
            "no heartbeat before the welcome"
        );
        link.on_open();
        link.on_message(1_000, welcome(None));
        assert_eq!(link.next_heartbeat_at(), Some(11_000));
        assert_eq!(link.poll_heartbeat(10_999), None);
        assert_eq!(
            link.poll_heartbeat(11_000),
            Some(ToCoordinator::Heartbeat { seen: None })
        );
        assert_eq!(
            link.on_message(
                11_042,
                ToClient::<SwarmSnapshot>::HeartbeatAck {
                    server_time_ms: None
                }
            ),
            [LinkEvent::Ack { rtt_ms: 42 }]
        );
        assert_eq!(link.next_heartbeat_at(), Some(21_000));
        link.on_close(12_000, 0.5);
        assert_eq!(
            link.next_heartbeat_at(),
            None,
            "no heartbeats while disconnected"
        );
    }

    fn snapshot(seq: u64) -> SwarmSnapshot {
        SwarmSnapshot {
            swarm_id: "s".into(),
            swarm_name: "n".into(),
            now_ms: 1,
            seq,
            device_total: 0,
            online: 0,
            run_state: shared_protocol::RunState::Running,
            throttle_percent: 100,
            jobs: vec![],
            devices: vec![],
            log: vec![],
            counters: shared_protocol::Counters::default(),
        }
    }

    #[test]
    fn a_dashboards_heartbeat_says_which_snapshot_it_read() {
        let mut link = Link::new(Identity::Dashboard { owner_key: None });
        link.on_open();
        link.on_message(
            0,
            ToClient::<SwarmSnapshot>::Welcome {
                protocol: PROTOCOL_VERSION,
                swarm_id: "s".into(),
                swarm_name: "n".into(),
                role: WelcomeRole::Dashboard { owner: false },
                heartbeat_interval_ms: 10_000,
                offline_after_ms: 60_000,
            },
        );
        let snapshot = snapshot(41);
        let wire = shared_protocol::encode::<ToClient>(&ToClient::Snapshot(snapshot.clone()));
        link.on_message(5_000, ToClient::<SwarmSnapshot>::Snapshot(snapshot));
        assert_eq!(
            link.poll_heartbeat(10_000),
            Some(ToCoordinator::Heartbeat { seen: Some(41) })
        );

        // A device decodes the same text as `ToDevice`: the snapshot is skipped unread.
        let mut device = device(None);
        device.on_open();
        device.on_message(0, welcome(None));
        let skipped: shared_protocol::ToDevice = serde_json::from_str(&wire).unwrap();
        assert_eq!(device.on_message(5_000, skipped), [LinkEvent::Nothing]);
        assert_eq!(
            device.poll_heartbeat(10_000),
            Some(ToCoordinator::Heartbeat { seen: None })
        );
    }

    #[test]
    fn a_device_reads_its_messages_as_a_dashboard_would() {
        let messages: Vec<ToClient> = [
            welcome(None),
            ToClient::Lease {
                lease_id: 7,
                job_id: "job".into(),
                work: shared_protocol::Work::PrimeCount { lo: 0, hi: 100 },
                deadline_ms: 60_000,
                ticket: Some("t".into()),
            },
            ToClient::Leases {
                leases: vec![offer(8, Some("t8")), offer(9, None)],
            },
            ToClient::CancelLease { lease_id: 7 },
            ToClient::Committed { lease_ids: vec![7] },
        ]
        .into_iter()
        .chain(to_any_client())
        .collect();
        let (mut full, mut skipping) = (device(None), device(None));
        full.on_open();
        skipping.on_open();
        reads_alike::<IgnoredAny, IgnoredAny, Work>(messages, &mut full, &mut skipping);
    }

    /// Feeds each message to `full` as it is and to `skipping` decoded from its wire form as
    /// `ToClient<S, R, S::Delta, W>`, and checks that both make the same events and end in the
    /// same state.
    fn reads_alike<S, R, W>(messages: Vec<ToClient>, full: &mut Link, skipping: &mut Link)
    where
        S: SnapshotPayload + serde::de::DeserializeOwned,
        S::Delta: serde::de::DeserializeOwned,
        R: serde::de::DeserializeOwned,
        W: LeasePayload + serde::de::DeserializeOwned,
    {
        for message in messages {
            let wire = shared_protocol::encode(&message);
            let skipped: ToClient<S, R, S::Delta, W> = serde_json::from_str(&wire).unwrap();
            assert_eq!(
                skipping.on_message(1, skipped),
                full.on_message(1, message),
                "{wire}"
            );
        }
        assert_eq!(full.state(), skipping.state());
    }

    /// A delta that changes nothing but its `seq`.
    fn empty_delta(seq: u64) -> ToClient {
        ToClient::SnapshotDelta(Box::new(SnapshotDelta {
            seq,
            now_ms: seq,
            device_total: 0,
            online: 0,
            run_state: shared_protocol::RunState::Running,
            throttle_percent: 100,
            jobs: None,
            devices: vec![],
            seen_since_ms: 0,
            seen: Default::default(),
            removed: vec![],
            log: vec![],
            log_kept: 40,
            counters: shared_protocol::Counters::default(),
        }))
    }

    /// Messages that may come to a device or a dashboard alike.
    fn to_any_client() -> [ToClient; 2] {
        [
            ToClient::OwnerResult {
                request: 3,
                result: shared_protocol::OwnerReply::Done {},
            },
            ToClient::Error {
                code: ErrorCode::RateLimited,
                message: "slow down".into(),
                request: None,
                retry_after_ms: Some(500),
            },
        ]
    }

    #[test]
    fn a_dashboard_reads_every_message_but_a_leases_work_as_in_full() {
        let first = snapshot(41);
        let messages: Vec<ToClient> = [
            ToClient::Welcome {
                protocol: PROTOCOL_VERSION,
                swarm_id: "s".into(),
                swarm_name: "n".into(),
                role: WelcomeRole::Dashboard { owner: true },
                heartbeat_interval_ms: 10_000,
                offline_after_ms: 60_000,
            },
            ToClient::Snapshot(first),
            empty_delta(42),
            ToClient::HeartbeatAck {
                server_time_ms: Some(5),
            },
        ]
        .into_iter()
        .chain(to_any_client())
        .collect();
        let dashboard = || {
            let mut link = Link::new(Identity::Dashboard { owner_key: None });
            link.on_open();
            link
        };
        let (mut full, mut skipping) = (dashboard(), dashboard());
        reads_alike::<SwarmSnapshot, IgnoredAny, IgnoredAny>(messages, &mut full, &mut skipping);
        // A lease, which never comes to a dashboard, is read and means nothing to it.
        for message in [
            lease(7, Some("t")),
            ToClient::Leases {
                leases: vec![offer(8, None)],
            },
        ] {
            let wire = shared_protocol::encode(&message);
            let as_dashboard: shared_protocol::ToDashboard = serde_json::from_str(&wire).unwrap();
            assert_eq!(skipping.on_message(1, as_dashboard), [LinkEvent::Nothing]);
        }
    }

    fn lease(lease_id: u64, ticket: Option<&str>) -> ToClient {
        ToClient::Lease {
            lease_id,
            job_id: "job".into(),
            work: shared_protocol::Work::PrimeCount { lo: 0, hi: 100 },
            deadline_ms: 60_000,
            ticket: ticket.map(str::to_owned),
        }
    }

    fn offer(lease_id: u64, ticket: Option<&str>) -> shared_protocol::LeaseOffer {
        shared_protocol::LeaseOffer {
            lease_id,
            job_id: "job".into(),
            work: shared_protocol::Work::PrimeCount {
                lo: lease_id * 100,
                hi: lease_id * 100 + 100,
            },
            deadline_ms: 60_000,
            ticket: ticket.map(str::to_owned),
        }
    }

    #[test]
    fn a_frame_of_leases_is_each_of_its_leases_in_turn() {
        let mut link = device(Some(cred()));
        link.on_open();
        link.on_message(0, welcome(None));
        let frame: ToClient = ToClient::Leases {
            leases: vec![offer(1, Some("t1")), offer(2, None), offer(3, Some("t3"))],
        };
        let one_by_one: Vec<LinkEvent> = [offer(1, None), offer(2, None), offer(3, None)]
            .into_iter()
            .flat_map(|o| {
                let alone: ToClient = o.into_lease();
                device(None).on_message(0, alone)
            })
            .collect();
        let events = link.on_message(0, frame);
        assert_eq!(events, one_by_one);
        assert_eq!(events.len(), 3);
        // Each lease's ticket is kept as if it had come alone.
        assert_eq!(
            link.lease_authorization(3).as_deref(),
            Some(format!("Lease {} t3", cred().device_id).as_str())
        );
        assert_eq!(link.ticket(1), Some("t1"));
        assert_eq!(link.ticket(2), None);
    }

    /// The lease ids of the results in a frame, and whether each carries a ticket.
    fn results_in(message: &ToCoordinator) -> Vec<(u64, bool)> {
        match message {
            ToCoordinator::ChunkResult {
                lease_id, ticket, ..
            } => vec![(*lease_id, ticket.is_some())],
            ToCoordinator::ChunkResults { results } => results
                .iter()
                .map(|r| (r.lease_id, r.ticket.is_some()))
                .collect(),
            other => panic!("not a result: {other:?}"),
        }
    }

    #[test]
    fn results_ready_together_go_in_as_few_frames_as_the_limits_allow() {
        let mut link = device(None);
        link.on_open();
        link.on_message(0, welcome(None));
        let count = shared_protocol::WorkResult::PrimeCount { count: 25 };
        for id in 1..=70 {
            link.on_message(0, lease(id, Some(&format!("t{id}"))));
        }
        // One result alone is a plain `chunk_result`, as protocol 4 sends it.
        let alone = link.chunk_results(1_000, [(1, count.clone(), 5)]);
        assert!(matches!(
            alone.as_slice(),
            [ToCoordinator::ChunkResult { lease_id: 1, .. }]
        ));
        // 69 at once: 64 in the first frame, the rest in a second; in order, tickets kept.
        let frames = link.chunk_results(1_000, (2..=70).map(|id| (id, count.clone(), 5)));
        let sizes: Vec<usize> = frames.iter().map(|f| results_in(f).len()).collect();
        assert_eq!(sizes, [MAX_RESULTS_PER_FRAME, 5]);
        let sent: Vec<(u64, bool)> = frames.iter().flat_map(results_in).collect();
        assert_eq!(sent, (2..=70).map(|id| (id, true)).collect::<Vec<_>>());
        for frame in &frames {
            let wire = shared_protocol::encode(frame);
            let decoded = shared_protocol::decode::<ToCoordinator>(
                wire.as_bytes(),
                &shared_protocol::Limits::default(),
            );
            assert!(decoded.is_ok(), "the coordinator takes it: {decoded:?}");
        }
        // After a reconnect everything kept goes again, packed the same way, but no more
        // than 16 a second: 70 take five seconds, oldest first.
        assert_eq!(link.unacknowledged(), 70);
        link.on_close(2_000, 0.5);
        link.on_open();
        link.on_message(3_000, welcome(None));
        let mut again = Vec::new();
        for second in 0..6 {
            let now = 3_000 + second * 1_000;
            let frames = link.poll_resends(now);
            assert!(
                link.poll_resends(now + 999).is_empty(),
                "not within the second"
            );
            let sizes: Vec<usize> = frames.iter().map(|f| results_in(f).len()).collect();
            assert!(sizes.len() <= 1 && sizes.iter().all(|n| *n <= RESENDS_PER_SECOND));
            again.extend(frames.iter().flat_map(results_in));
        }
        assert_eq!(again, (1..=70).map(|id| (id, true)).collect::<Vec<_>>());
        // Large results fill a frame by bytes: about 100 KiB each, one per frame.
        let band = shared_protocol::WorkResult::Mandelbrot {
            counts: "A".repeat(100 * 1024),
        };
        let frames = link.chunk_results(4_000, [(71, band.clone(), 5), (72, band, 5)]);
        assert_eq!(frames.len(), 2);
        assert!(frames
            .iter()
            .all(|f| shared_protocol::encode(f).len() <= MAX_FRAME_BYTES));
    }

    fn result_of(message: &ToCoordinator) -> (u64, Option<&str>) {
        match message {
            ToCoordinator::ChunkResult {
                lease_id, ticket, ..
            } => (*lease_id, ticket.as_deref()),
            other => panic!("not a result: {other:?}"),
        }
    }

    #[test]
    fn results_are_kept_until_acknowledged_and_sent_again_with_their_ticket() {
        let mut link = device(None);
        link.on_open();
        link.on_message(0, welcome(None));
        // Lease 1 and 2 come with tickets; 3 (a benchmark, or an older coordinator) without.
        link.on_message(0, lease(1, Some("t1")));
        link.on_message(0, lease(2, Some("t2")));
        link.on_message(0, lease(3, None));
        let count = shared_protocol::WorkResult::PrimeCount { count: 25 };
        for (id, ticket) in [(1, Some("t1")), (2, Some("t2")), (3, None)] {
            let sent = link.chunk_result(1_000, id, count.clone(), 5);
            assert_eq!(
                result_of(&sent),
                (id, ticket),
                "the first send carries the ticket"
            );
        }
        assert_eq!(
            link.unacknowledged(),
            2,
            "only results of leases with a ticket"
        );
        assert!(link.poll_resends(1_000).is_empty());
        // Lease 1 is stored; lease 2 is not acknowledged for a minute: it goes again, once.
        link.on_message(
            2_000,
            ToClient::<SwarmSnapshot>::Committed { lease_ids: vec![1] },
        );
        assert_eq!(link.unacknowledged(), 1);
        assert!(link.poll_resends(1_000 + RESEND_AFTER_MS - 1).is_empty());
        let again = link.poll_resends(1_000 + RESEND_AFTER_MS);
        assert_eq!(
            again.iter().map(result_of).collect::<Vec<_>>(),
            [(2, Some("t2"))]
        );
        assert!(
            link.poll_resends(1_000 + RESEND_AFTER_MS).is_empty(),
            "not twice at once"
        );
        // Disconnected: nothing goes out; after the next welcome everything kept goes at once.
        link.on_close(70_000, 0.5);
        assert!(link.poll_resends(200_000).is_empty(), "offline");
        link.on_open();
        link.on_message(80_000, welcome(None));
        let again = link.poll_resends(80_000);
        assert_eq!(
            again.iter().map(result_of).collect::<Vec<_>>(),
            [(2, Some("t2"))]
        );
        link.on_message(
            81_000,
            ToClient::<SwarmSnapshot>::Committed { lease_ids: vec![2] },
        );
        assert_eq!(link.unacknowledged(), 0);
        assert!(link.poll_resends(500_000).is_empty());
        // A cancelled lease's ticket is forgotten: its result (ignored anyway) is not kept.
        link.on_message(0, lease(4, Some("t4")));
        link.on_message(0, ToClient::<SwarmSnapshot>::CancelLease { lease_id: 4 });
        link.chunk_result(600_000, 4, count, 5);
        assert_eq!(link.unacknowledged(), 0);
    }

    #[test]
    fn a_delta_that_does_not_follow_the_snapshot_held_makes_the_dashboard_start_over() {
        let mut link = Link::new(Identity::Dashboard { owner_key: None });
        link.on_open();
        let welcome = ToClient::<SwarmSnapshot>::Welcome {
            protocol: PROTOCOL_VERSION,
            swarm_id: "s".into(),
            swarm_name: "lab".into(),
            role: WelcomeRole::Dashboard { owner: false },
            heartbeat_interval_ms: 10_000,
            offline_after_ms: 60_000,
        };
        link.on_message(0, welcome.clone());
        let delta = empty_delta;
        // A delta before any snapshot, and one that skips a snapshot, are not applied.
        assert_eq!(link.on_message(1, delta(5)), [LinkEvent::Nothing]);
        assert!(link.must_reconnect());
        link.on_open();
        assert!(!link.must_reconnect(), "a new connection starts in step");
        link.on_message(2, welcome);
        link.on_message(3, ToClient::<SwarmSnapshot>::Snapshot(snapshot(7)));
        assert!(matches!(
            link.on_message(4, delta(8)).as_slice(),
            [LinkEvent::SnapshotDelta(_)]
        ));
        assert!(!link.must_reconnect());
        assert_eq!(
            link.on_message(5, delta(10)),
            [LinkEvent::Nothing],
            "9 is missing"
        );
        assert!(link.must_reconnect());
    }

    #[test]
    fn after_a_long_stop_one_heartbeat_goes_out_not_one_per_missed_interval() {
        let mut link = device(None);
        link.on_open();
        link.on_message(0, welcome(None));
        // Stopped (Ctrl-Z, SIGSTOP, a frozen cgroup) for ten minutes: sixty intervals missed.
        let resumed = 600_000;
        assert_eq!(
            link.poll_heartbeat(resumed),
            Some(ToCoordinator::Heartbeat { seen: None })
        );
        assert_eq!(link.poll_heartbeat(resumed), None, "no burst");
        assert_eq!(link.next_heartbeat_at(), Some(resumed + 10_000));
        assert_eq!(link.state(), &LinkState::Online, "the pause is no failure");
    }

    #[test]
    fn reconnects_forever_until_welcomed_then_resets() {
        let mut link = device(None);
        let mut last = 0;
        for _ in 0..50 {
            link.on_open();
            last = link.on_close(0, 0.0).expect("always retries");
        }
        assert_eq!(last, 15_000);
        assert!(matches!(
            link.state(),
            LinkState::Waiting { attempt: 50, .. }
        ));
        link.on_open();
        link.on_message(0, welcome(None));
        assert_eq!(link.state(), &LinkState::Online);
        assert_eq!(
            link.on_close(0, 0.0),
            Some(250),
            "backoff restarts after a success"
        );
    }

    #[test]
    fn a_refused_credential_stops_reconnecting_until_forgotten() {
        let mut link = device(Some(cred()));
        link.on_open();
        let event = link.on_message(
            0,
            ToClient::<SwarmSnapshot>::Error {
                code: ErrorCode::BadCredential,
                message: "no".into(),
                request: None,
                retry_after_ms: None,
            },
        );
        assert_eq!(event, [LinkEvent::Refused]);
        assert_eq!(link.on_close(5, 0.3), None);
        assert!(matches!(
            link.state(),
            LinkState::Refused {
                code: ErrorCode::BadCredential,
                ..
            }
        ));
        link.forget_credential(None);
        let ToCoordinator::Hello(hello) = link.on_open() else {
            panic!()
        };
        assert!(matches!(
            hello.role,
            HelloRole::Device {
                credential: None,
                invite: None,
                ..
            }
        ));
    }

    #[test]
    fn a_refused_invite_or_result_is_final_but_a_rate_limit_is_retried() {
        for code in [
            ErrorCode::InviteExpired,
            ErrorCode::InviteRevoked,
            ErrorCode::InviteExhausted,
            ErrorCode::InviteInvalid,
            ErrorCode::BadResult,
        ] {
            let mut link = device(None);
            link.on_open();
            let error: ToClient = ToClient::Error {
                code,
                message: "no".into(),
                request: None,
                retry_after_ms: None,
            };
            assert_eq!(link.on_message(0, error), [LinkEvent::Refused]);
            assert_eq!(link.on_close(1, 0.5), None, "{code:?} is not retried");
        }
        let mut link = device(None);
        link.on_open();
        let error: ToClient = ToClient::Error {
            code: ErrorCode::RateLimited,
            message: "later".into(),
            request: None,
            retry_after_ms: Some(5_000),
        };
        link.on_message(0, error);
        assert!(link.on_close(1, 0.5).is_some());
    }

    #[test]
    fn an_ordinary_error_keeps_the_link() {
        let mut link = device(None);
        link.on_open();
        link.on_message(0, welcome(None));
        let event = link.on_message(
            1,
            ToClient::<SwarmSnapshot>::Error {
                code: ErrorCode::Malformed,
                message: "x".into(),
                request: None,
                retry_after_ms: None,
            },
        );
        assert!(matches!(
            event.as_slice(),
            [LinkEvent::Error {
                code: ErrorCode::Malformed,
                ..
            }]
        ));
        assert_eq!(link.state(), &LinkState::Online);
        assert!(link.on_close(2, 0.0).is_some());
    }
}
