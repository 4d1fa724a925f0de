//! The Ostrich Legs wire protocol: every message and HTTP body exchanged between clients
//! (browser devices, dashboards, native agents) and the swarm coordinator.
//!
//! Messages are JSON text. Types are named by direction: [`ToCoordinator`] goes from a client to
//! the coordinator, [`ToClient`] the other way. Inbound bytes pass through [`decode`] — size cap,
//! then serde, then `garde` validation — and code past it only ever sees a [`Validated`] value.
//!
//! This crate depends only on serde, garde and base64, and builds for native targets and wasm32.

// No panic reachable from input, by construction: the constructs that can panic are denied
// outside tests, and each remaining one carries an `allow` saying why it cannot fire.
#![cfg_attr(
    not(test),
    deny(
        clippy::string_slice,
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::arithmetic_side_effects
    )
)]

mod decode;
mod delta;
mod http;
mod jobs;
mod messages;
pub mod tagged;
mod text;

pub use decode::{decode, encode, DecodeError, Limits, Validated, WireMessage};
pub use delta::{sort_rows, DeltaGap, SnapshotDelta, SEEN_LAG_MS};
pub use http::{
    CreateSwarmRequest, CreateSwarmResponse, HealthResponse, HttpError, ModuleInfo,
    ResolveCodeRequest, ResolveCodeResponse, SwarmInfo, SwarmStats,
};
pub use jobs::{
    decode_counts, encode_counts, valid_job, ImageBand, ImageBands, InputPage, JobResult, JobSpec,
    JobState, JobView, Work, WorkResult, MAX_CHUNK_PIXELS, MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE,
    MAX_INPUT_PAGES, MAX_INPUT_PAGE_BYTES, MAX_INPUT_SET_ITEMS, MAX_ITEM_TIME_LIMIT_MS,
    MAX_ITERATIONS, MAX_LEASE_ITEMS, MAX_NONCE_END, MAX_OUTPUTS_BYTES, MAX_PREFIX_BYTES,
    MAX_PRIME_END, MAX_WANTED_NONCES, MAX_WORKLOAD_ITEMS,
};
pub use messages::{request_of, HEARTBEAT, HEARTBEAT_ACK};
pub use messages::{
    AgentClass, Capabilities, ChunkAnswer, Counters, DeviceCredential, DeviceShare, DeviceStatus,
    DeviceView, ErrorCode, Hello, HelloRole, InviteView, JoinProof, LeaseOffer, LogEntry, LogLevel,
    OwnerCommand, OwnerReply, RunState, SwarmSnapshot, ToClient, ToCoordinator, ToDashboard,
    ToDevice, WelcomeRole,
};
pub use tagged::{TagFirst, TagFirstOf};
pub use text::{
    display_code, is_code, is_id, is_label, is_secret, is_sha256, normalize_code, CODE_ALPHABET,
    CODE_DIGITS, ID_LEN,
};

/// The protocol version this build speaks. It travels in [`Hello`] and [`ToClient::Welcome`];
/// a coordinator answers a version outside [`OLDEST_PROTOCOL_VERSION`]..=this one with
/// [`ErrorCode::ProtocolMismatch`]. Version 3 sends a dashboard [`SnapshotDelta`]s after its
/// first snapshot. Version 4 tells a device when its results are stored
/// ([`ToClient::Committed`]) and gives each lease a `ticket` that a device sends back with a
/// result it sends again ([`RESEND_AFTER_MS`]). Version 5 lets a device send several results
/// in one frame ([`ToCoordinator::ChunkResults`]) and sends it the leases of one pass in one
/// frame ([`ToClient::Leases`]); everything else is as in version 2.
pub const PROTOCOL_VERSION: u16 = 5;

/// The most results in one [`ToCoordinator::ChunkResults`] frame.
pub const MAX_RESULTS_PER_FRAME: usize = 64;

/// The oldest protocol version a coordinator still speaks: a version 2 dashboard gets a full
/// snapshot every time, a version 2 or 3 device no acknowledgements and no tickets.
pub const OLDEST_PROTOCOL_VERSION: u16 = 2;

/// A device speaking version 4 keeps each result it sent until [`ToClient::Committed`] names
/// its lease, sends all it keeps again after every welcome, and any not acknowledged this long
/// after it was sent again then. The coordinator commits at least every 30 s, so a result
/// waits this long only when the coordinator lost it (it restarted before committing).
pub const RESEND_AFTER_MS: u64 = 60_000;

/// WebSocket close codes the coordinator uses. 1008 and 1009 are the standard "policy
/// violation" and "message too big"; the 4xxx range is the application's own.
pub mod close_code {
    /// The connection broke a rule (bad hello, bad credential, version mismatch).
    pub const POLICY: u16 = 1008;
    /// A message exceeded [`crate::Limits::max_message_bytes`].
    pub const TOO_BIG: u16 = 1009;
    /// The same device opened a newer connection; this one is superseded.
    pub const REPLACED: u16 = 4000;
    /// No hello arrived within the hello timeout.
    pub const HELLO_TIMEOUT: u16 = 4001;
    /// A device sent no heartbeat for `offline_after_ms`; it is now OFFLINE.
    pub const HEARTBEAT_TIMEOUT: u16 = 4002;
    /// The owner removed this device; its credential no longer works.
    pub const REMOVED: u16 = 4003;
    /// The socket sent messages faster than its rate limit.
    pub const RATE_LIMITED: u16 = 4004;
    /// The device returned a result that failed its check.
    pub const BAD_RESULT: u16 = 4005;
    /// A dashboard fell too far behind the snapshots it was sent (its heartbeats' `seen`): it
    /// is not reading, and what it does not read would pile up.
    pub const NOT_READING: u16 = 4006;
    /// The coordinator no longer holds this socket's session (it restarted and could not
    /// restore it): reconnect.
    pub const SESSION_LOST: u16 = 1011;
}
