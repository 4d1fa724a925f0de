//! WebSocket messages in both directions, with their validation rules.
//!
//! Every message is a JSON object whose `type` field names the variant (snake_case). Unknown
//! fields are rejected, so a typo never silently drops data, and inbound fields that may be
//! `null` must still be present (`required`), so that a forgotten field is an error rather than
//! a silent default (a missing `max_uses` once made an unlimited invite).

use garde::Validate;
use serde::{Deserialize, Serialize};

use crate::delta::SnapshotDelta;
use crate::jobs::{valid_job, JobSpec, JobView, Work, WorkResult};
use crate::tagged::{self, tag_first, TagFirst};
use crate::text::{is_code, is_id, is_label, is_secret};

/// A message from a client (device, dashboard, agent) to the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToCoordinator {
    /// Sent immediately after the socket opens, before any other message. The coordinator
    /// answers with [`ToClient::Welcome`] or with [`ToClient::Error`] and a close.
    Hello(#[garde(dive)] Hello),
    /// Sent every `heartbeat_interval_ms` (from the welcome) while connected; answered with
    /// [`ToClient::HeartbeatAck`]. A device without one for `offline_after_ms` is OFFLINE. A
    /// dashboard puts the `seq` of the last snapshot it has read in `seen`: one that falls too
    /// far behind is not reading and is closed (`close_code::NOT_READING`).
    Heartbeat {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[garde(skip)]
        seen: Option<u64>,
    },
    /// A device's result for a lease ([`ToClient::Lease`]). Accepted only from the lease's
    /// holder, once; `compute_ms` is the device's own measure of the work's duration. In
    /// protocol 4 a result carries its lease's `ticket`, the first time and when sent again
    /// (after a reconnect, or unacknowledged for [`crate::RESEND_AFTER_MS`]): the coordinator
    /// then takes it even if it no longer knows the lease (it restarted, or the deadline
    /// passed), provided its work is still to be done.
    ChunkResult {
        #[garde(skip)]
        lease_id: u64,
        #[garde(skip)]
        result: WorkResult,
        #[garde(range(max = 86_400_000))]
        compute_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[garde(inner(length(max = 64)))]
        ticket: Option<String>,
    },
    /// Protocol 5: several results in one frame, each handled exactly as a
    /// [`ToCoordinator::ChunkResult`] of the same fields, in order. A frame holds 1 to
    /// [`crate::MAX_RESULTS_PER_FRAME`] results and counts as that many messages against the
    /// socket's limit: batching saves frames, not limits.
    ChunkResults {
        #[garde(length(min = 1, max = crate::MAX_RESULTS_PER_FRAME), dive)]
        results: Vec<ChunkAnswer>,
    },
    /// From a device: how many of its cores it lends from now on (0 pauses it). Without it a
    /// device lends all its cores. The swarm's throttle applies on top.
    SetLend {
        #[garde(range(max = 1024))]
        cores: u16,
    },
    /// An owner action, from a dashboard whose hello carried the owner key. Answered with
    /// [`ToClient::OwnerResult`] or with [`ToClient::Error`], both carrying the same `request`.
    Owner {
        #[garde(skip)]
        request: u32,
        #[garde(dive)]
        command: OwnerCommand,
    },
}

/// One result of a [`ToCoordinator::ChunkResults`] frame: the fields of a
/// [`ToCoordinator::ChunkResult`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ChunkAnswer {
    #[garde(skip)]
    pub lease_id: u64,
    #[garde(skip)]
    pub result: WorkResult,
    #[garde(range(max = 86_400_000))]
    pub compute_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(inner(length(max = 64)))]
    pub ticket: Option<String>,
}

impl From<ChunkAnswer> for ToCoordinator {
    /// The result alone, as a [`ToCoordinator::ChunkResult`].
    fn from(answer: ChunkAnswer) -> Self {
        let ChunkAnswer {
            lease_id,
            result,
            compute_ms,
            ticket,
        } = answer;
        Self::ChunkResult {
            lease_id,
            result,
            compute_ms,
            ticket,
        }
    }
}

/// What only the owner may do. The same commands are accepted over HTTP
/// (`POST /api/swarms/{id}/owner` with the owner key as bearer token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum OwnerCommand {
    /// At most 5 per minute per swarm. `ttl_ms` defaults to 24 h (1 min to 7 days);
    /// `max_uses` to unlimited (1 to 10,000).
    CreateInvite {
        #[serde(deserialize_with = "required")]
        #[garde(inner(range(min = 60_000, max = 604_800_000)))]
        ttl_ms: Option<u64>,
        #[serde(deserialize_with = "required")]
        #[garde(inner(range(min = 1, max = 10_000)))]
        max_uses: Option<u32>,
    },
    /// The invites that can still be used.
    ListInvites {},
    RevokeInvite {
        #[garde(custom(is_id))]
        invite_id: String,
    },
    /// A disabled device stays connected but is given no work.
    SetDeviceEnabled {
        #[garde(custom(is_id))]
        device_id: String,
        #[garde(skip)]
        enabled: bool,
    },
    /// Gives a device the name the dashboard shows. It sticks: the name the device sends in
    /// later hellos no longer replaces it.
    RenameDevice {
        #[garde(custom(is_id))]
        device_id: String,
        #[garde(custom(is_label))]
        name: String,
    },
    /// Forgets the device and invalidates its credential; its socket is closed.
    RemoveDevice {
        #[garde(custom(is_id))]
        device_id: String,
    },
    SetRunState {
        #[garde(skip)]
        state: RunState,
    },
    /// How much of every device's lent capacity the swarm uses, 0–100 %.
    SetThrottle {
        #[garde(range(max = 100))]
        percent: u8,
    },
    /// The security events since the coordinator object started, newest last.
    AuditLog {},
    /// Queues a job; it runs when the jobs before it are done.
    SubmitJob {
        #[garde(custom(valid_job))]
        job: JobSpec,
    },
    /// Stops a queued or running job; its leases are withdrawn.
    CancelJob {
        #[garde(custom(is_id))]
        job_id: String,
    },
}

/// Whether the swarm hands out work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    /// Leases in flight finish; no new work is handed out.
    Paused,
    /// No work is handed out and queued work waits until the swarm runs again.
    Stopped,
}

/// The answer to an [`OwnerCommand`]. Only the coordinator writes it: it is read tag first
/// (see [`crate::tagged`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum OwnerReply {
    /// The token and code are shown only here; the coordinator keeps their hashes.
    InviteCreated {
        invite: InviteView,
        token: String,
        code: String,
    },
    Invites {
        invites: Vec<InviteView>,
    },
    Audit {
        entries: Vec<LogEntry>,
    },
    JobSubmitted {
        job_id: String,
    },
    Done {},
}

tag_first!(deserialize OwnerReply, tag "reply" {
    "invite_created" => InviteCreated { invite: InviteView, token: String, code: String },
    "invites" => Invites { invites: Vec<InviteView> },
    "audit" => Audit { entries: Vec<LogEntry> },
    "job_submitted" => JobSubmitted { job_id: String },
    "done" => Done {},
});

/// An invite as the owner sees it (without its secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteView {
    pub invite_id: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub revoked: bool,
}

/// The first message on a socket: the protocol version and who is connecting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// Must equal [`crate::PROTOCOL_VERSION`].
    #[garde(skip)]
    pub protocol: u16,
    /// The role this socket takes for its whole life.
    #[garde(dive)]
    pub role: HelloRole,
}

/// Who is saying hello.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum HelloRole {
    /// A compute device. Without a credential the coordinator registers a new device and returns
    /// its credential in the welcome; with one, the device resumes its identity.
    Device {
        #[garde(custom(is_label))]
        name: String,
        #[garde(dive)]
        capabilities: Capabilities,
        #[serde(deserialize_with = "required")]
        #[garde(dive)]
        credential: Option<DeviceCredential>,
        /// How a new device proves it was invited; ignored when `credential` is present.
        #[serde(deserialize_with = "required")]
        #[garde(dive)]
        invite: Option<JoinProof>,
    },
    /// A dashboard that receives swarm snapshots. With the owner key it is the owner's.
    Dashboard {
        #[serde(deserialize_with = "required")]
        #[garde(inner(custom(is_secret)))]
        owner_key: Option<String>,
    },
}

/// Proof that a new device may join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum JoinProof {
    /// The token from an invite link (or its QR code).
    Token {
        #[garde(custom(is_secret))]
        token: String,
    },
    /// The short code of an invite, as typed (case, spaces and dashes do not matter).
    Code {
        #[garde(custom(is_code))]
        code: String,
    },
    /// The owner key: the owner's own browsers and agents join without an invite.
    OwnerKey {
        #[garde(custom(is_secret))]
        owner_key: String,
    },
}

/// What a device can lend to the swarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Logical cores (`navigator.hardwareConcurrency` in a browser).
    #[garde(range(min = 1, max = 1024))]
    pub cores: u16,
    /// Memory in MiB when the platform reveals it (`navigator.deviceMemory` × 1024).
    #[serde(deserialize_with = "required")]
    #[garde(inner(range(min = 1, max = 16_777_216)))]
    pub memory_mb: Option<u32>,
    /// Whether a GPU / WebGPU adapter is available.
    #[garde(skip)]
    pub gpu: bool,
    /// What kind of client this is.
    #[garde(skip)]
    pub agent: AgentClass,
    /// It runs own workloads (docs/WORKLOADS.md): only a device that says so is leased items
    /// of a workload job. Absent means false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[garde(skip)]
    pub workloads: bool,
}

/// The class of client, from its user agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentClass {
    BrowserDesktop,
    BrowserMobile,
    Native,
}

/// A device's own credential: issued once in the welcome, kept by the device (localStorage,
/// or a file for the native agent), and presented in later hellos.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct DeviceCredential {
    #[garde(custom(is_id))]
    pub device_id: String,
    #[garde(custom(is_secret))]
    pub secret: String,
}

/// A message from the coordinator to a client. The three dashboard payloads and a lease's work
/// are type parameters only so that a device can decode the same messages as [`ToDevice`],
/// skipping a dashboard's payloads unread, and a dashboard as [`ToDashboard`], skipping a
/// device's work; everything else names the plain `ToClient`. Only the coordinator writes it:
/// it is read tag first (see [`crate::tagged`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToClient<
    Snapshot = SwarmSnapshot,
    Reply = OwnerReply,
    Delta = Box<SnapshotDelta>,
    LeaseWork = Work,
> {
    /// The answer to a good hello; always the first message a client receives.
    Welcome {
        protocol: u16,
        swarm_id: String,
        swarm_name: String,
        role: WelcomeRole,
        /// How often the client must send [`ToCoordinator::Heartbeat`].
        heartbeat_interval_ms: u64,
        /// After how long without a heartbeat a device counts as OFFLINE.
        offline_after_ms: u64,
    },
    /// The answer to a heartbeat. A device's plain heartbeat ([`HEARTBEAT`]) is answered by
    /// the platform itself with [`HEARTBEAT_ACK`], without waking the coordinator, so it has no
    /// `server_time_ms`; a heartbeat the coordinator answers carries its wall clock.
    HeartbeatAck {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server_time_ms: Option<u64>,
    },
    /// The swarm's live state, sent to dashboards every broadcast interval (2 s); to a dashboard
    /// speaking protocol 3, only the first time, and then [`ToClient::SnapshotDelta`].
    Snapshot(Snapshot),
    /// What changed since the previous snapshot or delta on this socket
    /// ([`SwarmSnapshot::apply`]).
    SnapshotDelta(Delta),
    /// How much a device computes: sent to a device right after its welcome and again whenever
    /// its lent cores, the swarm's throttle, the run state or its enabled flag change.
    Share(DeviceShare),
    /// Work for a device: compute it and answer with [`ToCoordinator::ChunkResult`] before
    /// `deadline_ms`, after which the lease may go to another device. A device holds at most
    /// its lent workers plus one prefetched lease.
    /// To a device speaking protocol 4, `ticket` is the coordinator's signature of the lease's
    /// work for this device, to send back with the result if it is sent again.
    Lease {
        lease_id: u64,
        job_id: String,
        work: LeaseWork,
        deadline_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ticket: Option<String>,
    },
    /// To a device speaking protocol 5: several leases at once (those given to it in one
    /// pass, in order), each to be taken exactly as a [`ToClient::Lease`] of the same fields.
    Leases { leases: Vec<LeaseOffer<LeaseWork>> },
    /// Stop working on a lease: another device finished it, or the job was cancelled or stopped.
    CancelLease { lease_id: u64 },
    /// To a device speaking protocol 4: the results it sent for these leases are stored, or
    /// were not needed (late, repeated, of a job that ended); it may forget them.
    Committed { lease_ids: Vec<u64> },
    /// The answer to [`ToCoordinator::Owner`] with the same `request`.
    OwnerResult { request: u32, result: Reply },
    /// A refused message or connection. The state of the swarm is unchanged by the message
    /// that caused it. Errors during the hello are followed by a close. `request` is set when
    /// the refused message was an owner command; `retry_after_ms` when the code is
    /// `rate_limited`.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

impl<'de, S, R, D, W> Deserialize<'de> for ToClient<S, R, D, W>
where
    S: Deserialize<'de>,
    R: Deserialize<'de>,
    D: Deserialize<'de>,
    W: Deserialize<'de>,
{
    fn deserialize<De: serde::Deserializer<'de>>(input: De) -> Result<Self, De::Error> {
        tagged::deserialize(input)
    }
}

impl<'de, S, R, D, W> TagFirst<'de> for ToClient<S, R, D, W>
where
    S: Deserialize<'de>,
    R: Deserialize<'de>,
    D: Deserialize<'de>,
    W: Deserialize<'de>,
{
    const TAG: &'static str = "type";
    const VARIANTS: &'static [&'static str] = &[
        "welcome",
        "heartbeat_ack",
        "snapshot",
        "snapshot_delta",
        "share",
        "lease",
        "leases",
        "cancel_lease",
        "committed",
        "owner_result",
        "error",
    ];

    fn variant<A: serde::de::MapAccess<'de>>(tag: &str, rest: A) -> Result<Self, A::Error> {
        // The fields of each struct variant, in the variant's order and with its attributes.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Welcome {
            protocol: u16,
            swarm_id: String,
            swarm_name: String,
            role: WelcomeRole,
            heartbeat_interval_ms: u64,
            offline_after_ms: u64,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct HeartbeatAck {
            #[serde(default)]
            server_time_ms: Option<u64>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Leases<W> {
            leases: Vec<LeaseOffer<W>>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct CancelLease {
            lease_id: u64,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Committed {
            lease_ids: Vec<u64>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct OwnerResult<R> {
            request: u32,
            result: R,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Error {
            code: ErrorCode,
            message: String,
            #[serde(default)]
            request: Option<u32>,
            #[serde(default)]
            retry_after_ms: Option<u64>,
        }
        Ok(match tag {
            "welcome" => {
                let Welcome {
                    protocol,
                    swarm_id,
                    swarm_name,
                    role,
                    heartbeat_interval_ms,
                    offline_after_ms,
                } = tagged::rest(rest)?;
                ToClient::Welcome {
                    protocol,
                    swarm_id,
                    swarm_name,
                    role,
                    heartbeat_interval_ms,
                    offline_after_ms,
                }
            }
            "heartbeat_ack" => {
                let HeartbeatAck { server_time_ms } = tagged::rest(rest)?;
                ToClient::HeartbeatAck { server_time_ms }
            }
            // A newtype variant's fields are its payload's.
            "snapshot" => ToClient::Snapshot(tagged::rest(rest)?),
            "snapshot_delta" => ToClient::SnapshotDelta(tagged::rest(rest)?),
            "share" => ToClient::Share(tagged::rest(rest)?),
            "lease" => tagged::rest::<LeaseOffer<W>, A>(rest)?.into_lease(),
            "leases" => {
                let Leases { leases } = tagged::rest(rest)?;
                ToClient::Leases { leases }
            }
            "cancel_lease" => {
                let CancelLease { lease_id } = tagged::rest(rest)?;
                ToClient::CancelLease { lease_id }
            }
            "committed" => {
                let Committed { lease_ids } = tagged::rest(rest)?;
                ToClient::Committed { lease_ids }
            }
            "owner_result" => {
                let OwnerResult { request, result } = tagged::rest(rest)?;
                ToClient::OwnerResult { request, result }
            }
            "error" => {
                let Error {
                    code,
                    message,
                    request,
                    retry_after_ms,
                } = tagged::rest(rest)?;
                ToClient::Error {
                    code,
                    message,
                    request,
                    retry_after_ms,
                }
            }
            _ => return Err(serde::de::Error::unknown_variant(tag, Self::VARIANTS)),
        })
    }
}

/// One lease of a [`ToClient::Leases`] frame: the fields of a [`ToClient::Lease`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseOffer<LeaseWork = Work> {
    pub lease_id: u64,
    pub job_id: String,
    pub work: LeaseWork,
    pub deadline_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
}

impl<W> LeaseOffer<W> {
    /// The same lease as a [`ToClient::Lease`] of its own.
    pub fn into_lease<S, R, D>(self) -> ToClient<S, R, D, W> {
        ToClient::Lease {
            lease_id: self.lease_id,
            job_id: self.job_id,
            work: self.work,
            deadline_ms: self.deadline_ms,
            ticket: self.ticket,
        }
    }
}

/// [`ToClient`] as a device reads it: the same wire form, with a dashboard's snapshots and an
/// owner's reply skipped unread. A device's wasm then carries no decoder for the dashboard's
/// types.
pub type ToDevice = ToClient<serde::de::IgnoredAny, serde::de::IgnoredAny, serde::de::IgnoredAny>;

/// [`ToClient`] as a dashboard reads it: the same wire form, with an owner's reply (owners'
/// commands go over HTTP from a dashboard) and a lease's work skipped unread (a dashboard is
/// never leased work). A dashboard's wasm then carries no decoder for [`Work`].
pub type ToDashboard =
    ToClient<SwarmSnapshot, serde::de::IgnoredAny, Box<SnapshotDelta>, serde::de::IgnoredAny>;

/// How much of a device the swarm uses ([`ToClient::Share`]): `lent_cores × throttle_percent ÷
/// 100` cores' worth. The device runs at most `workers` leases at once, and a worker that took
/// `t` ms over a lease rests `t × (100 − duty_percent) ÷ duty_percent` ms before its next one (a
/// resting worker counts toward `workers`). The benchmark lease is exempt: it runs at once, at
/// full speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceShare {
    /// ⌈lent cores × throttle ÷ 100⌉; 0 when either is 0.
    pub workers: u16,
    /// 1–100: the share spread evenly over those workers, rounded down (100 when `workers` is 0).
    pub duty_percent: u8,
    /// The cores the device lends (`set_lend`, else all of them).
    pub lent_cores: u16,
    pub throttle_percent: u8,
    pub run_state: RunState,
    /// `false` when the owner disabled the device: it gets no work.
    pub enabled: bool,
}

impl DeviceShare {
    /// The average number of cores this share keeps busy, in hundredths.
    pub fn cores_hundredths(&self) -> u32 {
        u32::from(self.workers).saturating_mul(u32::from(self.duty_percent))
    }
}

/// The role the coordinator granted. Read tag first (see [`crate::tagged`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WelcomeRole {
    /// `credential` is present only when this hello registered a new device: store it. (On a
    /// reconnect the field is absent.)
    Device {
        device_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential: Option<DeviceCredential>,
    },
    /// `owner` tells whether the owner key was accepted.
    Dashboard { owner: bool },
}

tag_first!(deserialize WelcomeRole, tag "kind" {
    "device" => Device {
        device_id: String,
        #[serde(default)]
        credential: Option<DeviceCredential>,
    },
    "dashboard" => Dashboard { owner: bool },
});

/// Machine-readable error codes. The text beside them is for people and may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message exceeded the size limit.
    TooLarge,
    /// Not JSON, or not the shape of any message.
    Malformed,
    /// The `type` names no message this protocol knows.
    UnknownType,
    /// Well-formed but a field broke its rule (length, range, charset).
    Invalid,
    /// The hello carried another protocol version.
    ProtocolMismatch,
    /// A message other than hello arrived before the hello.
    HelloRequired,
    /// A second hello on the same socket.
    AlreadyIntroduced,
    /// The device credential is unknown or its secret is wrong.
    BadCredential,
    /// The owner key is wrong.
    BadOwnerKey,
    /// The caller may not do this (for example an owner action without the owner key).
    Forbidden,
    /// A new device came without an invite.
    InviteRequired,
    /// No such invite (unknown token or code).
    InviteInvalid,
    /// The invite's time is up.
    InviteExpired,
    /// The owner revoked the invite.
    InviteRevoked,
    /// The invite's uses are all taken.
    InviteExhausted,
    /// No such device.
    DeviceNotFound,
    /// No swarm with this id.
    SwarmNotFound,
    /// No such HTTP endpoint.
    NotFound,
    /// Too many requests; retry later.
    RateLimited,
    /// A chunk or benchmark result failed the coordinator's check; the device is disconnected
    /// and the result discarded.
    BadResult,
    /// Something failed inside the coordinator.
    Internal,
}

/// Whether a device is currently reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeviceStatus {
    /// Connected, and a heartbeat arrived within `offline_after_ms`.
    Online,
    /// Disconnected, or silent for longer than `offline_after_ms`.
    Offline,
}

/// The live swarm state sent to dashboards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmSnapshot {
    pub swarm_id: String,
    pub swarm_name: String,
    /// The coordinator's wall clock when the snapshot was taken.
    pub now_ms: u64,
    /// Increases by one with every snapshot the coordinator builds.
    pub seq: u64,
    /// Total registered devices (the list below may be capped).
    pub device_total: u32,
    /// Devices currently ONLINE.
    pub online: u32,
    pub run_state: RunState,
    pub throttle_percent: u8,
    /// The newest jobs (at most 20), oldest first.
    pub jobs: Vec<JobView>,
    /// Up to the coordinator's cap: online devices first, then the most recently seen.
    pub devices: Vec<DeviceView>,
    /// The newest system log entries, oldest first.
    pub log: Vec<LogEntry>,
    /// The coordinator's own cost counters since the object last started.
    pub counters: Counters,
}

/// One row of the devices table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceView {
    pub id: String,
    pub name: String,
    pub status: DeviceStatus,
    /// `false` when the owner disabled the device, or it is quarantined: it gets no work.
    pub enabled: bool,
    /// It returned a result that failed its check; it stays disabled until the owner
    /// enables it.
    pub quarantined: bool,
    pub capabilities: Capabilities,
    pub last_seen_ms: u64,
    pub registered_ms: u64,
    /// Its last benchmark, as a factor of a reference core (1.0 counts the benchmark's primes
    /// at 2 × 10^6 numbers per ms on one worker); `null` until it has answered one.
    pub score: Option<f64>,
    /// Its current per-worker speed, same unit: the benchmark at first, then the moving average
    /// of the rates observed on its chunks; `null` when never measured.
    pub speed: Option<f64>,
    /// Its share of the running job's capacity (speed × workers), in percent.
    pub weight_percent: f64,
    /// Leases it holds now.
    pub in_flight: u32,
    /// Chunks accepted from it since the coordinator object started.
    pub chunks_done: u64,
    /// Whether its results are trusted: enough of them in a row were confirmed by other
    /// devices (or it joined with the owner key). An untrusted device's every result is
    /// computed again by another device before the job can finish.
    pub trusted: bool,
    /// Its results that another device's computation confirmed.
    pub confirmed: u64,
    /// Its results that were computed again by another device to check them.
    pub replicated: u64,
    /// Disagreements over its results or its replicas.
    pub disputed: u64,
}

/// A system log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEntry {
    pub at_ms: u64,
    pub level: LogLevel,
    pub text: String,
}

/// Severity of a log line; `security` marks rejected input and refused actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Info,
    Warn,
    Security,
}

/// What the coordinator did since its object last started, so that cost can be measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counters {
    /// WebSocket messages received.
    pub messages_in: u64,
    /// WebSocket messages sent.
    pub messages_out: u64,
    /// Storage writes: rows written, and the alarm armed or cleared (a write on the platform).
    pub storage_writes: u64,
    /// Of `storage_writes`, those that armed or cleared the alarm.
    #[serde(default)]
    pub alarm_writes: u64,
    /// Alarms handled.
    pub alarms: u64,
    /// Inbound messages refused.
    pub rejected: u64,
    /// Job results that changed nothing: repeats, and results that came after their work was
    /// done or partly given out again.
    #[serde(default)]
    pub results_unused: u64,
    /// Leases taken back at their deadline (and the queueing grace) because no result came.
    #[serde(default)]
    pub leases_expired: u64,
    /// Calls from gateway objects, each carrying the events of many of their sockets...
    #[serde(default)]
    pub gateway_calls: u64,
    /// ...and the messages they carried (also counted in `messages_in`). So the object itself
    /// was called `messages_in - gateway_messages + gateway_calls` times for messages.
    #[serde(default)]
    pub gateway_messages: u64,
}

/// A device's heartbeat, exactly as it must be sent for the platform to answer it without
/// waking the coordinator (the WebSocket hibernation API's automatic response).
pub const HEARTBEAT: &str = r#"{"type":"heartbeat"}"#;

/// The platform's fixed answer to [`HEARTBEAT`].
pub const HEARTBEAT_ACK: &str = r#"{"type":"heartbeat_ack"}"#;

/// For a nullable field that must be present: serde treats a missing `Option` as `None` unless
/// the field has its own deserializer, so this one simply defers to `Option`'s.
fn required<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer)
}

/// Just enough of an inbound message to answer a refused owner command with its `request`.
#[derive(Deserialize)]
struct RequestTag {
    #[serde(rename = "type")]
    kind: Option<String>,
    request: Option<u32>,
}

/// The `request` number of an owner command, read from bytes that failed to decode as a whole
/// (so that its refusal can carry it), or `None`.
pub fn request_of(bytes: &[u8]) -> Option<u32> {
    let tag: RequestTag = serde_json::from_slice(bytes).ok()?;
    (tag.kind.as_deref() == Some("owner"))
        .then_some(tag.request)
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nullable_fields_must_be_present() {
        let missing = r#"{"command":"create_invite","ttl_ms":null}"#;
        assert!(serde_json::from_str::<OwnerCommand>(missing).is_err());
        let present = r#"{"command":"create_invite","ttl_ms":null,"max_uses":null}"#;
        assert!(serde_json::from_str::<OwnerCommand>(present).is_ok());
        let caps = r#"{"cores":2,"gpu":false,"agent":"native"}"#;
        assert!(serde_json::from_str::<Capabilities>(caps).is_err());
        let hello = r#"{"kind":"device","name":"a","capabilities":{"cores":2,"memory_mb":null,"gpu":false,"agent":"native"},"invite":null}"#;
        assert!(
            serde_json::from_str::<HelloRole>(hello).is_err(),
            "credential missing"
        );
    }

    #[test]
    fn a_refused_owner_command_keeps_its_request() {
        assert_eq!(
            request_of(br#"{"type":"owner","request":7,"command":{"command":"nope"}}"#),
            Some(7)
        );
        assert_eq!(request_of(br#"{"type":"heartbeat","request":7}"#), None);
        assert_eq!(request_of(b"not json"), None);
    }

    #[test]
    fn the_plain_heartbeat_and_its_fixed_answer_are_the_encoded_messages() {
        let heartbeat = ToCoordinator::Heartbeat { seen: None };
        assert_eq!(
            serde_json::to_string(&heartbeat).unwrap_or_default(),
            HEARTBEAT
        );
        let ack: ToClient = serde_json::from_str(HEARTBEAT_ACK).unwrap_or(ToClient::HeartbeatAck {
            server_time_ms: Some(1),
        });
        assert_eq!(
            ack,
            ToClient::HeartbeatAck {
                server_time_ms: None
            }
        );
    }

    #[test]
    fn a_reconnect_welcome_has_no_credential_field() {
        let role = WelcomeRole::Device {
            device_id: "d".into(),
            credential: None,
        };
        let text = serde_json::to_string(&role).unwrap_or_default();
        assert_eq!(text, r#"{"kind":"device","device_id":"d"}"#);
    }
}
