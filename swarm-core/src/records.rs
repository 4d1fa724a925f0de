//! What the core persists and what it attaches to sockets.
//!
//! The glue stores [`StoreOp`]s as rows (SQLite in the Durable Object) and hands them back to
//! [`crate::SwarmCore::restore`] when the object starts. A [`SocketAttachment`] travels with a
//! hibernated WebSocket, so sessions survive eviction without a storage write.

use serde::{Deserialize, Serialize};
use shared_protocol::{Capabilities, JobResult, JobSpec, JobState, RunState};

use crate::{ConnId, Millis};

/// The swarm's identity, written once at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmMeta {
    pub swarm_id: String,
    pub name: String,
    /// [`crate::hash_secret`] of the owner key; the key itself is never stored.
    pub owner_key_hash: String,
    pub created_ms: Millis,
    #[serde(default = "running")]
    pub run_state: RunState,
    #[serde(default = "full_throttle")]
    pub throttle_percent: u8,
}

fn running() -> RunState {
    RunState::Running
}

fn full_throttle() -> u8 {
    100
}

fn yes() -> bool {
    true
}

/// A registered device as stored. Written on registration, connect, disconnect and status
/// change — never on a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub device_id: String,
    pub name: String,
    pub capabilities: Capabilities,
    /// [`crate::hash_secret`] of the device secret.
    pub secret_hash: String,
    pub registered_ms: Millis,
    /// The last heartbeat or connect known when the row was written.
    pub last_seen_ms: Millis,
    /// The owner can disable a device: it stays registered but gets no work.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// It returned a result that failed its check: it is disabled until the owner enables it.
    #[serde(default)]
    pub quarantined: bool,
    /// The speed its last benchmark showed, as a factor of a reference core
    /// ([`crate::kinds`]).
    #[serde(default)]
    pub score: Option<f64>,
}

/// An invite as stored: only hashes of its token and short code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteRecord {
    pub invite_id: String,
    /// [`crate::hash_secret`] of the link token.
    pub token_hash: String,
    /// [`crate::hash_secret`] of the canonical short code.
    pub code_hash: String,
    pub created_ms: Millis,
    pub expires_ms: Millis,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub revoked: bool,
}

/// A job as stored, with its merged result and the unit ranges already done (adjacent ranges
/// merged, so the list stays short).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: String,
    pub spec: JobSpec,
    pub state: JobState,
    pub created_ms: Millis,
    pub finished_ms: Option<Millis>,
    pub done_units: u64,
    pub result: JobResult,
    pub done_ranges: Vec<(u64, u64)>,
}

impl JobRecord {
    /// Records units `[lo, hi)` as done, merging with neighbours.
    pub fn add_done(&mut self, lo: u64, hi: u64) {
        self.done_units += hi - lo;
        let at = self.done_ranges.partition_point(|r| r.0 < lo);
        self.done_ranges.insert(at, (lo, hi));
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.done_ranges.len());
        for (a, b) in self.done_ranges.drain(..) {
            match merged.last_mut() {
                Some(last) if last.1 >= a => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.done_ranges = merged;
    }
}

impl JobRecord {
    /// Records units `[lo, hi)` as not done any more (the part of a quarantined device).
    pub fn remove_done(&mut self, lo: u64, hi: u64) {
        let mut kept = Vec::with_capacity(self.done_ranges.len() + 1);
        for (a, b) in self.done_ranges.drain(..) {
            let (cut_lo, cut_hi) = (a.max(lo), b.min(hi));
            if cut_lo >= cut_hi {
                kept.push((a, b));
                continue;
            }
            self.done_units -= cut_hi - cut_lo;
            if a < cut_lo {
                kept.push((a, cut_lo));
            }
            if cut_hi < b {
                kept.push((cut_hi, b));
            }
        }
        self.done_ranges = kept;
    }
}

/// Everything a swarm's storage holds, as the glue loads it when the object starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    pub meta: Option<SwarmMeta>,
    pub devices: Vec<DeviceRecord>,
    pub invites: Vec<InviteRecord>,
    pub jobs: Vec<JobRecord>,
}

/// A durable write.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    /// Insert or replace the swarm's row (at creation, and when run state or throttle change).
    PutSwarm(SwarmMeta),
    /// Insert or replace a device row.
    PutDevice(DeviceRecord),
    /// Delete a device row (the owner removed it).
    DeleteDevice { device_id: String },
    /// Insert or replace an invite row.
    PutInvite(InviteRecord),
    /// Insert or replace a job row (on submission, every accepted result, and state changes).
    PutJob(JobRecord),
    /// Store the escape counts of a Mandelbrot band (rows from `first_row`, 2 little-endian
    /// bytes per pixel). Written before the job row that counts the band as done; read back
    /// by the glue to serve the image ([`crate::kinds::render_png`]).
    PutPixels {
        job_id: String,
        first_row: u32,
        counts: Vec<u8>,
    },
    /// Delete a Mandelbrot band (it came from a device that was then quarantined).
    DeletePixels { job_id: String, first_row: u32 },
}

/// What a socket is, once it has said hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Session {
    /// The socket has not said hello yet; it is closed if it stays silent too long.
    AwaitingHello { since_ms: Millis },
    /// A device socket.
    Device { device_id: String },
    /// A dashboard socket; `owner` if it presented the owner key.
    Dashboard { owner: bool },
}

/// Kept on each WebSocket through hibernation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketAttachment {
    pub conn: ConnId,
    pub session: Session,
}
