//! What the core persists and what it attaches to sockets.
//!
//! The glue stores [`StoreOp`]s as rows (SQLite in the Durable Object) and hands them back to
//! [`crate::SwarmCore::restore`] when the object starts. A [`SocketAttachment`] travels with a
//! hibernated WebSocket, so sessions survive eviction without a storage write.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use shared_protocol::{Capabilities, JobResult, JobSpec, JobState, RunState, WorkResult};

use crate::verify::Credibility;
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
    /// The key lease tickets are signed with ([`crate::SwarmCore::create`] draws it; a swarm
    /// stored before tickets existed gets one when its object next starts). Never sent.
    #[serde(default)]
    pub lease_key: String,
    /// Gateway objects this swarm has opened: `{swarm_id}:0` up to this many
    /// ([`crate::gateway`]). A restarted object asks each for its sockets' sessions.
    #[serde(default)]
    pub gateways: u32,
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
    /// The owner renamed it: the name in its hellos no longer replaces `name`.
    #[serde(default)]
    pub named_by_owner: bool,
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
    /// Its verification record: streak of confirmed results, counts, whether the owner vouches
    /// for it ([`crate::verify`]).
    #[serde(default)]
    pub credibility: Credibility,
    /// Counts the changes of `credibility`: a commit's copy of it ([`CommitEntry::Credibility`])
    /// counts only when it is newer than the row's.
    #[serde(default)]
    pub credibility_rev: u64,
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
    /// When it began to run (rows stored before this was kept have none).
    #[serde(default)]
    pub started_ms: Option<Millis>,
    pub finished_ms: Option<Millis>,
    pub done_units: u64,
    pub result: JobResult,
    pub done_ranges: Vec<(u64, u64)>,
    /// Units computed again as replicas, to verify results (see [`crate::verify`]).
    #[serde(default)]
    pub replica_units: u64,
    /// Accepted chunk results that count toward `done_units` (one per [`Self::add_done`], less
    /// those taken back).
    #[serde(default)]
    pub chunks_done: u64,
}

impl JobRecord {
    /// Records units `[lo, hi)` as done, merging with neighbours.
    pub fn add_done(&mut self, lo: u64, hi: u64) {
        self.chunks_done = self.chunks_done.saturating_add(1);
        self.done_units = self.done_units.saturating_add(hi.saturating_sub(lo));
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
        self.chunks_done = self.chunks_done.saturating_sub(1);
        let mut kept = Vec::with_capacity(self.done_ranges.len().saturating_add(1));
        for (a, b) in self.done_ranges.drain(..) {
            let (cut_lo, cut_hi) = (a.max(lo), b.min(hi));
            if cut_lo >= cut_hi {
                kept.push((a, b));
                continue;
            }
            self.done_units = self
                .done_units
                .saturating_sub(cut_hi.saturating_sub(cut_lo));
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
    /// Accepted parts of running jobs, by device, as written one row each (before commits
    /// batched them).
    pub parts: Vec<PartRecord>,
    /// Commits of running jobs' results, in any order ([`Stored::fold_commits`] orders them).
    pub commits: Vec<CommitRecord>,
    /// Wrong invite-code guesses of the last minute or so.
    pub guesses: Vec<GuessRecord>,
}

/// One accepted result of a running job: which device returned it for which units, and what
/// it added to the job's result, so that the job's progress can be rebuilt after a restart and
/// the device's parts taken out again if it is caught lying later. Deleted when the job ends
/// (its merged result is then in the job row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartRecord {
    pub job_id: String,
    pub device_id: String,
    pub lo: u64,
    pub hi: u64,
    /// The checked result (a Mandelbrot band's counts are in its pixels row, not here).
    pub result: WorkResult,
    /// Mandelbrot pixels of the band inside the set.
    #[serde(default)]
    pub inside: u64,
    /// The canonical digest of the whole result, hex ([`crate::kinds::digest`]), that a
    /// replica must match.
    #[serde(default)]
    pub digest: String,
    /// The devices whose replicas agreed with it.
    #[serde(default)]
    pub confirmed_by: Vec<String>,
    /// It waits for a replica to agree (the verifier drew it, or its device is not trusted).
    #[serde(default)]
    pub open: bool,
}

/// What a running job's results changed since the previous commit, written as one row however
/// many results it holds: the writes of a job grow with time, not with completions (see
/// ARCHITECTURE.md, "Commits"). Replayed in `seq` order over the parts table when the object
/// starts ([`Stored::fold_commits`]); deleted with the job's parts when the job ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub job_id: String,
    /// 1, 2, 3 … within the job (across restarts of the object); with `job_id`, the row's key.
    pub seq: u64,
    pub entries: Vec<CommitEntry>,
}

/// One change a commit holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CommitEntry {
    /// A part was accepted or changed (confirmed by a replica, or reopened): it replaces the
    /// part of the same job and first unit.
    Part(PartRecord),
    /// The part of the job starting at unit `lo` was taken out (its device was caught lying).
    Drop { lo: u64 },
    /// A device's credibility changed; it replaces the stored one when `rev` is newer.
    Credibility {
        device_id: String,
        rev: u64,
        credibility: Credibility,
    },
}

impl Stored {
    /// Applies the stored commits, oldest first, to the parts and device rows, and returns the
    /// highest commit number of each job (the next commit of a job takes the one after) and
    /// the devices whose credibility a commit holds (their rows must be written before the
    /// job's commits are deleted).
    pub fn fold_commits(&mut self) -> (BTreeMap<String, u64>, BTreeSet<String>) {
        let mut commits = std::mem::take(&mut self.commits);
        commits.sort_by(|a, b| (&a.job_id, a.seq).cmp(&(&b.job_id, b.seq)));
        let mut parts: BTreeMap<(String, u64), PartRecord> = std::mem::take(&mut self.parts)
            .into_iter()
            .map(|p| ((p.job_id.clone(), p.lo), p))
            .collect();
        let mut last = BTreeMap::new();
        let mut credible = BTreeSet::new();
        for commit in commits {
            last.insert(commit.job_id.clone(), commit.seq);
            for entry in commit.entries {
                match entry {
                    CommitEntry::Part(part) => {
                        parts.insert((part.job_id.clone(), part.lo), part);
                    }
                    CommitEntry::Drop { lo } => {
                        parts.remove(&(commit.job_id.clone(), lo));
                    }
                    CommitEntry::Credibility {
                        device_id,
                        rev,
                        credibility,
                    } => {
                        credible.insert(device_id.clone());
                        if let Some(device) = self
                            .devices
                            .iter_mut()
                            .find(|d| d.device_id == device_id && d.credibility_rev < rev)
                        {
                            device.credibility = credibility;
                            device.credibility_rev = rev;
                        }
                    }
                }
            }
        }
        self.parts = parts.into_values().collect();
        (last, credible)
    }
}

/// A wrong invite-code guess: when, and from which (hashed) source address. Kept so that the
/// guessing limits hold across a restart of the object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuessRecord {
    pub at_ms: Millis,
    pub source: String,
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
    /// Insert or replace a job row (on submission and state changes; a running job's progress
    /// is in its parts).
    PutJob(JobRecord),
    /// Insert an accepted part of a running job (key: job, first unit).
    PutPart(PartRecord),
    /// Delete one part (its device was caught lying; the units are computed again).
    DeletePart { job_id: String, lo: u64 },
    /// Delete every part and commit of a job (it ended; its result is in its row).
    DeleteParts { job_id: String },
    /// Insert a commit of a running job's results.
    PutCommit(CommitRecord),
    /// Insert a wrong code guess.
    PutGuess(GuessRecord),
    /// Delete the guesses older than this: they no longer count against any limit.
    PruneGuesses { before_ms: Millis },
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
    /// Where the outputs of items `[lo, hi)` of a workload job are: the outputs file named
    /// `outputs` (its SHA-256) in the bucket. Written for every settled part when the job
    /// ends, done or cancelled (its parts are deleted then); read by the results endpoint.
    PutOutputs {
        job_id: String,
        lo: u64,
        hi: u64,
        outputs: String,
    },
}

/// What a socket is, once it has said hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Session {
    /// The socket has not said hello yet; it is closed if it stays silent too long. `source` is
    /// the hashed address it came from (for the code-guessing limit), empty when unknown.
    AwaitingHello {
        since_ms: Millis,
        #[serde(default)]
        source: String,
    },
    /// A device socket, with what the coordinator must remember about this connection.
    Device {
        device_id: String,
        #[serde(default)]
        link: DeviceLink,
    },
    /// A dashboard socket; `owner` if it presented the owner key, `deltas` if it speaks
    /// protocol 3 (it gets [`shared_protocol::SnapshotDelta`]s after its first snapshot).
    Dashboard {
        owner: bool,
        #[serde(default)]
        deltas: bool,
    },
}

/// What belongs to one device connection and must outlive a restart of the object as long as
/// the socket does: it travels in the socket's attachment, so keeping it costs no storage
/// write, and it ends with the connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceLink {
    /// The benchmark lease it has not answered yet: until it has, it gets no job work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bench: Option<PendingBench>,
    /// Cores it lends (`set_lend`); all of them when `None`. 0 pauses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lend: Option<u16>,
    /// Leases of the running job it holds (at most [`MAX_ATTACHED_LEASES`]), so that their
    /// results still count after a restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leases: Vec<HeldLease>,
    /// The job those leases belong to (the first 8 characters of its id).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lease_job: String,
    /// It speaks protocol 4: its leases carry tickets and its results are acknowledged once
    /// committed ([`shared_protocol::ToClient::Committed`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub acks: bool,
    /// It speaks protocol 5: the leases of one pass go to it in one
    /// [`shared_protocol::ToClient::Leases`] frame.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub batches: bool,
}

/// Leases kept in a socket's attachment: the platform caps an attachment at 2,048 bytes, and
/// each lease takes at most about 90.
pub const MAX_ATTACHED_LEASES: usize = 16;

/// A benchmark lease a device has not answered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingBench {
    pub lease_id: u64,
    pub units: u64,
    pub expected: u64,
    pub sent_ms: Millis,
}

/// A lease a device holds: wire id, units `[lo, hi)`, when it was issued and its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldLease(pub u64, pub u64, pub u64, pub Millis, pub Millis);

/// A model of the object's storage: applies [`StoreOp`]s the way the glue's SQL does and gives
/// back what a restarted object would load. The simulator, the fuzzer and the tests use it, so
/// that every test of a restart goes through the same rules as the real storage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryStore {
    pub meta: Option<SwarmMeta>,
    pub devices: BTreeMap<String, DeviceRecord>,
    pub invites: BTreeMap<String, InviteRecord>,
    pub jobs: BTreeMap<String, JobRecord>,
    pub parts: BTreeMap<(String, u64), PartRecord>,
    pub commits: BTreeMap<(String, u64), CommitRecord>,
    pub pixels: BTreeMap<(String, u32), Vec<u8>>,
    /// Outputs files of ended workload jobs: (job, first item) to (end item, name).
    pub outputs: BTreeMap<(String, u64), (u64, String)>,
    pub guesses: Vec<GuessRecord>,
    /// Write operations applied.
    pub writes: u64,
}

impl MemoryStore {
    pub fn apply(&mut self, op: StoreOp) {
        self.writes = self.writes.saturating_add(1);
        match op {
            StoreOp::PutSwarm(meta) => self.meta = Some(meta),
            StoreOp::PutDevice(row) => {
                self.devices.insert(row.device_id.clone(), row);
            }
            StoreOp::DeleteDevice { device_id } => {
                self.devices.remove(&device_id);
            }
            StoreOp::PutInvite(row) => {
                self.invites.insert(row.invite_id.clone(), row);
            }
            StoreOp::PutJob(row) => {
                self.jobs.insert(row.job_id.clone(), row);
            }
            StoreOp::PutPart(part) => {
                self.parts.insert((part.job_id.clone(), part.lo), part);
            }
            StoreOp::DeletePart { job_id, lo } => {
                self.parts.remove(&(job_id, lo));
            }
            StoreOp::DeleteParts { job_id } => {
                self.parts.retain(|(job, _), _| *job != job_id);
                self.commits.retain(|(job, _), _| *job != job_id);
            }
            StoreOp::PutCommit(commit) => {
                self.commits
                    .insert((commit.job_id.clone(), commit.seq), commit);
            }
            StoreOp::PutPixels {
                job_id,
                first_row,
                counts,
            } => {
                self.pixels.insert((job_id, first_row), counts);
            }
            StoreOp::DeletePixels { job_id, first_row } => {
                self.pixels.remove(&(job_id, first_row));
            }
            StoreOp::PutOutputs {
                job_id,
                lo,
                hi,
                outputs,
            } => {
                self.outputs.insert((job_id, lo), (hi, outputs));
            }
            StoreOp::PutGuess(guess) => self.guesses.push(guess),
            StoreOp::PruneGuesses { before_ms } => self.guesses.retain(|g| g.at_ms >= before_ms),
        }
    }

    /// What an object starting now would load.
    pub fn load(&self) -> Stored {
        Stored {
            meta: self.meta.clone(),
            devices: self.devices.values().cloned().collect(),
            invites: self.invites.values().cloned().collect(),
            jobs: self.jobs.values().cloned().collect(),
            parts: self.parts.values().cloned().collect(),
            commits: self.commits.values().cloned().collect(),
            guesses: self.guesses.clone(),
        }
    }
}

/// Kept on each WebSocket through hibernation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketAttachment {
    pub conn: ConnId,
    pub session: Session,
}
