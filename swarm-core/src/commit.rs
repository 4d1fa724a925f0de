//! Commits: what the running job's results change is written in batches, one row per commit
//! ([`CommitRecord`]), not a row per result. A commit is due a commit interval after the
//! previous one (and at once when a batch grows to [`MAX_COMMIT_ENTRIES`], or when a device is
//! quarantined: taking a liar's parts out must not wait). The job's own wake-up — leases past
//! their deadline, silent devices — runs with the commit, so a running job with no dashboard
//! costs one alarm and one row per interval, however many devices compute.
//!
//! Results are accepted in memory at once (the scheduler and the dashboards see them) and are
//! durable only once committed; the glue's platform holds outgoing messages until the writes
//! before them are durable, so a message sent after a commit is never ahead of it.

use std::collections::{BTreeMap, BTreeSet};

use shared_protocol::ToClient;

use crate::core::SwarmCore;
use crate::records::{CommitEntry, CommitRecord, StoreOp};
use crate::Millis;

/// A commit holds at most this many changes, so that its row stays far below the platform's
/// 2 MB row limit (a part takes a few hundred bytes).
pub const MAX_COMMIT_ENTRIES: usize = 1_000;

/// The changes of the running job not yet committed.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    job_id: String,
    entries: Vec<CommitEntry>,
    /// Per device (speaking protocol 4): the leases whose results this commit makes durable,
    /// acknowledged once it is written.
    acks: BTreeMap<String, Vec<u64>>,
}

/// What the commits of jobs hold beyond their parts.
#[derive(Debug, Default)]
pub(crate) struct Commits {
    /// The last commit number used, by job.
    pub(crate) seqs: BTreeMap<String, u64>,
    /// Devices whose credibility is in a commit or pending: when the job ends and its commits
    /// are deleted, their rows are written.
    pub(crate) credible: BTreeSet<String>,
}

impl Pending {
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.acks.is_empty()
    }
}

impl SwarmCore {
    /// A change to the running job `job_id` for the next commit.
    pub(crate) fn journal(&mut self, job_id: &str, entry: CommitEntry) {
        if self.pending.job_id != job_id {
            // Another job than the last one journalled: its entries (none, as a job's end
            // clears them) start over.
            self.pending.job_id = job_id.to_owned();
            self.pending.entries.clear();
        }
        if let CommitEntry::Credibility { device_id, .. } = &entry {
            if !self.commits.credible.contains(device_id) {
                self.commits.credible.insert(device_id.clone());
            }
        }
        self.pending.entries.push(entry);
        if self.pending.entries.len() >= MAX_COMMIT_ENTRIES {
            self.commit();
        }
    }

    /// A device's result for lease `wire_id` is durable once the pending changes are
    /// committed: it is acknowledged then.
    pub(crate) fn ack_on_commit(&mut self, device_id: &str, wire_id: u64) {
        let acks = self.pending.acks.entry(device_id.to_owned()).or_default();
        if !acks.contains(&wire_id) {
            acks.push(wire_id);
        }
    }

    /// The result for lease `wire_id` of this device waits for the next commit.
    pub(crate) fn acked_on_commit(&self, device_id: &str, wire_id: u64) -> bool {
        self.pending
            .acks
            .get(device_id)
            .is_some_and(|acks| acks.contains(&wire_id))
    }

    /// Tells each device whose results the last commit made durable (on its current socket, if
    /// that speaks protocol 4: one that reconnected since sends them again, and is told at
    /// once).
    fn send_acks(&mut self) {
        for (device_id, lease_ids) in std::mem::take(&mut self.pending.acks) {
            let conn = self.devices.get(&device_id).and_then(|d| d.conn);
            if let Some(conn) = conn.filter(|c| self.link(*c).is_some_and(|link| link.acks)) {
                self.send(conn, &ToClient::Committed { lease_ids });
            }
        }
    }

    /// Writes the pending changes as one row, then acknowledges the results it holds.
    pub(crate) fn commit(&mut self) {
        if self.pending.entries.is_empty() {
            self.send_acks();
            return;
        }
        let job_id = self.pending.job_id.clone();
        let seq = self
            .commits
            .seqs
            .get(&job_id)
            .copied()
            .unwrap_or(0)
            .saturating_add(1);
        let record = CommitRecord {
            job_id,
            seq,
            entries: std::mem::take(&mut self.pending.entries),
        };
        self.commits.seqs.insert(record.job_id.clone(), record.seq);
        self.persist(StoreOp::PutCommit(record));
        self.send_acks();
    }

    /// The running job ended: its row holds its result and its parts and commits are deleted,
    /// so its pending parts are moot; the devices whose credibility a commit held, or was to
    /// hold, get their rows written.
    pub(crate) fn drop_pending(&mut self) {
        self.pending.entries.clear();
        self.send_acks();
        for device_id in std::mem::take(&mut self.commits.credible) {
            if let Some(device) = self.devices.get(&device_id) {
                let record = device.record.clone();
                self.persist(StoreOp::PutDevice(record));
            }
        }
    }

    /// Changes accepted but not committed yet.
    pub fn uncommitted(&self) -> usize {
        self.pending.entries.len()
    }

    /// The commit is due (or nearly: within `slack`, so that an alarm armed for another reason
    /// just before it takes it along).
    pub(crate) fn commit_due(&self, now: Millis, slack: Millis) -> bool {
        self.next_commit_ms
            .is_some_and(|due| due <= now.saturating_add(slack))
    }

    /// The job's wake-up: leases past their deadline and devices fallen silent are dealt with,
    /// and the pending changes committed.
    pub(crate) fn job_tick(&mut self, now: Millis) {
        self.next_commit_ms = None;
        self.expire_leases(now);
        self.commit();
    }

    /// What the stored commits showed ([`crate::Stored::fold_commits`]).
    pub(crate) fn restore_commits(
        &mut self,
        (seqs, credible): (BTreeMap<String, u64>, BTreeSet<String>),
    ) {
        self.commits = Commits { seqs, credible };
    }
}
