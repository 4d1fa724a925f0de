//! The swarm coordinator as a deterministic state machine.
//!
//! [`SwarmCore`] holds one swarm: its devices, the sockets connected to it, its log and its cost
//! counters. It never reads a clock, never does IO and never draws randomness it was not
//! handed: every input carries `now` (wall-clock milliseconds, because Durable Object alarms are
//! wall-clock), randomness comes from a seed given at construction, and every effect comes out of
//! [`SwarmCore::poll_output`] as an [`Output`] for the glue to carry out (send, close, persist,
//! set or clear the alarm).
//!
//! Driving it: after each `handle_*` call, drain `poll_output` until it returns `None`.

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

mod audit;
mod bench;
pub mod commit;
mod core;
pub mod delta;
pub mod directory;
pub mod gateway;
mod invites;
mod jobs;
mod join;
pub mod kinds;
pub mod limits;
mod owner;
mod records;
pub mod sched;
mod secrets;
pub mod verify;
// The simulator runs only in tests and `cargo xtask bench`, on inputs it generates itself: no
// input from outside reaches it.
#[allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::expect_used,
    clippy::unreachable,
    clippy::string_slice
)]
pub mod simulator;

pub use crate::bench::BENCH_JOB_ID;
pub use crate::core::{Config, CreateError, Refusal, SwarmCore, MAX_ALLOWANCE_CORES};
pub use crate::jobs::{OutputsIndex, Vouched, UNMEASURED_SPEED};
pub use crate::records::{
    CommitEntry, CommitRecord, DeviceLink, DeviceRecord, GuessRecord, HeldLease, InviteRecord,
    JobRecord, MemoryStore, PartRecord, PendingBench, Session, SocketAttachment, StoreOp, Stored,
    SwarmMeta, MAX_ATTACHED_LEASES,
};
pub use crate::secrets::{hash_secret, Rng, StoredOutputs};

/// Wall-clock milliseconds since the Unix epoch.
pub type Millis = u64;

/// Identifies one WebSocket for the life of that socket. Chosen by the glue and kept in the
/// socket's hibernation attachment, so it survives the object being evicted. Values must stay
/// below 2^53 because the attachment is stored as a JavaScript value.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ConnId(pub u64);

impl ConnId {
    /// Set on the ids of sockets held by gateway objects ([`crate::gateway`]).
    const ON_GATEWAY: u64 = 1 << 52;
    /// Gateways a swarm can have: their index fills bits 32 to 51 of their sockets' ids.
    pub const MAX_GATEWAYS: u32 = 1 << 20;
    const GATEWAY_MASK: u32 = 0xf_ffff;

    /// The id of a socket the swarm's object holds itself, from 64 random bits: below 2^52,
    /// so never the id of a gateway's socket.
    pub fn direct(random: u64) -> Self {
        Self(random & (Self::ON_GATEWAY - 1))
    }

    /// The id of socket number `local` of gateway `gateway` (taken modulo
    /// [`Self::MAX_GATEWAYS`]). Distinct from every direct id and every other gateway's.
    pub fn on_gateway(gateway: u32, local: u32) -> Self {
        let gateway = u64::from(gateway & Self::GATEWAY_MASK);
        Self(Self::ON_GATEWAY | (gateway << 32) | u64::from(local))
    }

    /// Which gateway holds this socket, or `None` when the swarm's object holds it.
    pub fn gateway(self) -> Option<u32> {
        (self.0 & Self::ON_GATEWAY != 0)
            .then(|| u32::try_from((self.0 >> 32) & u64::from(Self::GATEWAY_MASK)).ok())
            .flatten()
    }
}

/// An effect the glue must carry out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this JSON text on the socket. Broadcasts share one encoded text.
    Send {
        conn: ConnId,
        text: std::rc::Rc<str>,
    },
    /// Close the socket with this code and reason.
    Close {
        conn: ConnId,
        code: u16,
        reason: String,
    },
    /// Store this attachment on the socket so that a woken object can rebuild its session.
    Attach {
        conn: ConnId,
        attachment: SocketAttachment,
    },
    /// Write this to durable storage.
    Persist(StoreOp),
    /// Arm the object's alarm for this wall-clock time (replacing any armed one).
    SetAlarm { at: Millis },
    /// Disarm the object's alarm.
    ClearAlarm,
    /// Tell the short-code directory that this code hash belongs to this swarm until
    /// `expires_ms`, so that a typed code can be routed here.
    RegisterCode {
        code_hash: String,
        swarm_id: String,
        expires_ms: Millis,
    },
}
