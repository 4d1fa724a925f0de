//! Jobs in the swarm: the queue, the running job's [`Scheduler`], leases sent to devices,
//! results checked and merged as they are accepted, and progress for the snapshots. One job
//! runs at a time; the others wait in submission order.
//!
//! Lease ids on the wire are `epoch << 32 | scheduler id`: every activation of a job (its
//! start, and every restart of the object while it runs) draws a fresh random epoch (1 to
//! 2^20 − 1), so a late result for a lease of an earlier job or of an earlier life of the
//! object cannot be taken for a current lease. A result for a lease issued before a restart
//! still counts when its holder's connection survived: the leases a device holds travel in its
//! socket's attachment (with their wire ids and their job) and are given back to the rebuilt
//! scheduler, which answers to those wire ids too. Epoch 0 is the benchmark's
//! ([`crate::bench`]).
//!
//! Progress is stored as parts ([`PartRecord`]: who returned which units, what they added, the
//! result's digest, which devices confirmed it, whether it waits for a replica), one row per
//! accepted result, and rebuilt from them after a restart; the job's row is written only when
//! its state changes. Every result goes through the [`Verifier`]: a part it opens is replicated
//! (an ordinary lease of the same range for another device) and the job is done only when no
//! part is open. A device that loses a disagreement is quarantined: every part it returned is
//! taken back out and computed again, and every part it confirmed waits for a new replica —
//! whether they were accepted before or after a restart.

use std::collections::BTreeMap;

use shared_protocol::{
    close_code, DeviceShare, ErrorCode, JobSpec, JobState, JobView, LeaseOffer, LogLevel,
    OwnerReply, RunState, ToClient, WorkResult,
};

use crate::core::{short, Refusal, SwarmCore};
use crate::kinds::{self, reference_rate, Checked};
use crate::records::{CommitEntry, HeldLease, JobRecord, PartRecord, StoreOp, MAX_ATTACHED_LEASES};
use crate::sched::{Completion, Lease, LeaseId, SchedConfig, Scheduler};
use crate::verify::{Answer, Digest, Range, Verdict, Verifier};
use crate::{ConnId, Millis};

/// A device that is not trusted gets no new lease while this many of its results per worker
/// wait for a replica: a fast liar cannot take a job before anyone checks it.
const OPEN_PER_WORKER: usize = 1;

/// The speed factor of a device that has not been measured (see [`crate::kinds`]): a slow
/// phone's, so that its first chunk is small and the rate adapts from the first result.
pub const UNMEASURED_SPEED: f64 = 0.1;

/// What a result did.
enum Taken {
    /// It changed the job: it is durable once the next commit is written.
    Changed,
    /// It changed nothing (late, repeated, moot).
    Nothing,
    /// It was refused (and its device told why).
    Refused,
}

/// Jobs kept in snapshots.
const JOBS_IN_SNAPSHOT: usize = 20;

/// Wire lease ids carry the epoch above this many bits.
const EPOCH_SHIFT: u32 = 32;

/// Epochs are drawn from `1..=MAX_EPOCH`, keeping wire ids below 2^53.
const MAX_EPOCH: u64 = (1 << 20) - 1;

#[derive(Debug, Default)]
pub(crate) struct JobBoard {
    pub(crate) jobs: BTreeMap<String, JobRecord>,
    /// The running job.
    active: Option<Active>,
    /// Devices' speed factors (see [`crate::kinds`]), from their benchmark and then from the
    /// rates observed on real chunks; they outlive a job's scheduler.
    pub(crate) speeds: BTreeMap<String, f64>,
    /// Accepted chunks per device since the object started.
    pub(crate) chunks_done: BTreeMap<String, u64>,
    /// Replication and credibility.
    pub(crate) verifier: Verifier,
}

/// The running job and its scheduler.
#[derive(Debug)]
struct Active {
    job_id: String,
    spec: JobSpec,
    sched: Scheduler,
    epoch: u64,
    /// Leases given back after a restart keep the wire ids their holders know: scheduler id
    /// to wire id, and back.
    wire_of: BTreeMap<LeaseId, u64>,
    restored: BTreeMap<u64, LeaseId>,
    /// The accepted parts by range, so that the parts of a device quarantined later can be
    /// taken out again. (Without pixels: those are in storage, by first row.) The same as the
    /// job's stored parts.
    parts: BTreeMap<Range, Part>,
    /// The replicas' results of ranges whose part is unsettled ([`Answer::unsettled`]), kept
    /// until the range is decided: when the part's device does not win, a winner's result
    /// takes its place. In memory only: after a restart such a range is computed again.
    replicas: BTreeMap<Range, Vec<(String, Checked, Digest)>>,
}

/// Why a workload result is refused for want of its outputs file's receipt (the coordinator
/// gives one only for a file it stored: a device must not name a file it never uploaded);
/// `None` for a result with the right receipt, or of another kind.
fn unreceipted(key: &str, job_id: &str, range: Range, result: &WorkResult) -> Option<String> {
    let WorkResult::Workload {
        outputs,
        unsettled,
        receipt,
        ..
    } = result
    else {
        return None;
    };
    let file = crate::secrets::StoredOutputs {
        name: outputs,
        unsettled: *unsettled,
    };
    (!crate::secrets::check_receipt(key, job_id, range, file, receipt))
        .then(|| "the result names an outputs file without the receipt of its upload".to_owned())
}

/// What a lease ticket vouches for ([`SwarmCore::vouch`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Vouched {
    pub job_id: String,
    /// The module to run (its SHA-256).
    pub module: String,
    /// The pages of the job's input set, in item order (empty for a job over a range).
    #[serde(default)]
    pub inputs: Vec<shared_protocol::InputPage>,
    pub first_item: u64,
    pub items: u64,
    /// When asked for an outputs file: the receipt that the result naming it must carry,
    /// given to the device once the file is stored.
    pub receipt: Option<String>,
}

/// Where a workload job's outputs are, from an item on ([`SwarmCore::outputs_index`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutputsIndex {
    pub state: JobState,
    /// The job's inputs: item `i` is `start + i * step`, for `i < items`.
    pub start: u64,
    pub step: u64,
    pub items: u64,
    /// Settled parts `(lo, hi, outputs file)` in item order, the first holding the item asked
    /// for, each starting where the one before ends.
    pub parts: Vec<(u64, u64, String)>,
}

impl OutputsIndex {
    /// Parts in one answer, at most: 64 files of at most 128 items.
    pub const MAX_PARTS: usize = 64;

    /// The parts, given in item order, that chain without a gap from the one holding item
    /// `from` (at most [`Self::MAX_PARTS`]).
    pub fn chain(
        from: u64,
        parts: impl IntoIterator<Item = (u64, u64, String)>,
    ) -> Vec<(u64, u64, String)> {
        let mut chained: Vec<(u64, u64, String)> = Vec::new();
        let mut next = from;
        for (lo, hi, outputs) in parts {
            if hi <= next {
                continue;
            }
            if lo > next || chained.len() >= Self::MAX_PARTS {
                break;
            }
            next = hi;
            chained.push((lo, hi, outputs));
        }
        chained
    }

    /// Whether the job has ended, so that no more parts will come.
    pub fn ended(&self) -> bool {
        matches!(self.state, JobState::Done | JobState::Cancelled)
    }
}

/// An accepted part of the running job.
#[derive(Debug)]
struct Part {
    device: String,
    checked: Checked,
    digest: Digest,
    confirmed_by: Vec<String>,
    /// Waiting for a replica to agree.
    open: bool,
}

impl Part {
    /// Its answer, as a replica must match it.
    fn answer(&self) -> Answer {
        Answer {
            digest: self.digest,
            unsettled: kinds::unsettled(&self.checked.result),
        }
    }

    fn record(&self, job_id: &str, (lo, hi): Range) -> PartRecord {
        PartRecord {
            job_id: job_id.to_owned(),
            device_id: self.device.clone(),
            lo,
            hi,
            result: self.checked.result.clone(),
            inside: self.checked.inside,
            digest: hex(&self.digest),
            confirmed_by: self.confirmed_by.clone(),
            open: self.open,
        }
    }
}

fn hex(digest: &Digest) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Digest> {
    let mut digest = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in digest.iter_mut().enumerate() {
        let at = i.checked_mul(2)?;
        *byte = u8::from_str_radix(text.get(at..at.checked_add(2)?)?, 16).ok()?;
    }
    Some(digest)
}

impl Active {
    /// The outputs files of the parts that wait for no replica, `(lo, hi, name)` in item
    /// order (none for a job of another kind).
    fn settled_outputs(&self) -> impl Iterator<Item = (u64, u64, String)> + '_ {
        self.parts
            .iter()
            .filter(|(_, part)| !part.open)
            .filter_map(|(&(lo, hi), part)| match &part.checked.result {
                WorkResult::Workload { outputs, .. } => Some((lo, hi, outputs.clone())),
                _ => None,
            })
    }

    fn wire_id(&self, id: LeaseId) -> u64 {
        self.wire_of
            .get(&id)
            .copied()
            .unwrap_or(self.epoch << EPOCH_SHIFT | id)
    }

    /// The scheduler's id of a wire lease id: one of this activation, or one given back after
    /// a restart.
    fn own_id(&self, wire: u64) -> Option<LeaseId> {
        if let Some(id) = self.restored.get(&wire) {
            return Some(*id);
        }
        (wire >> EPOCH_SHIFT == self.epoch).then_some(wire & ((1 << EPOCH_SHIFT) - 1))
    }

    /// Units per ms per worker of a device of this speed on this job.
    fn rate_of(&self, speed: f64) -> f64 {
        speed * reference_rate(&self.spec)
    }
}

impl JobBoard {
    pub(crate) fn new(policy: crate::verify::VerifyPolicy) -> Self {
        Self {
            verifier: Verifier::new(policy),
            ..Self::default()
        }
    }

    fn queued_first(&self) -> Option<String> {
        self.jobs
            .values()
            .filter(|j| j.state == JobState::Queued)
            .min_by_key(|j| (j.created_ms, j.job_id.clone()))
            .map(|j| j.job_id.clone())
    }
}

impl SwarmCore {
    /// Jobs restored from storage: a job that was running resumes from its stored parts (its
    /// result and done ranges are rebuilt from them), with the leases its devices still hold.
    pub(crate) fn restore_jobs(
        &mut self,
        now: Millis,
        jobs: Vec<JobRecord>,
        parts: Vec<PartRecord>,
    ) {
        let running = jobs
            .iter()
            .find(|j| j.state == JobState::Running)
            .map(|j| j.job_id.clone());
        self.jobs.jobs = jobs.into_iter().map(|j| (j.job_id.clone(), j)).collect();
        let Some(job_id) = running else {
            return;
        };
        let mut restored: BTreeMap<Range, Part> = BTreeMap::new();
        if let Some(job) = self.jobs.jobs.get_mut(&job_id) {
            let mine: Vec<PartRecord> = parts.into_iter().filter(|p| p.job_id == job_id).collect();
            // Rows written before parts were stored keep their merged progress.
            if !mine.is_empty() {
                job.result = kinds::empty_result(&job.spec);
                job.done_units = 0;
                job.chunks_done = 0;
                job.done_ranges.clear();
            }
            for part in mine {
                let checked = Checked {
                    result: part.result,
                    pixels: None,
                    inside: part.inside,
                };
                kinds::merge(&mut job.result, &checked);
                job.add_done(part.lo, part.hi);
                // A part stored before digests were kept was accepted by the rules of its
                // time and is not replicated now.
                let digest = unhex(&part.digest);
                let open = part.open && digest.is_some();
                let digest = digest.unwrap_or_default();
                restored.insert(
                    (part.lo, part.hi),
                    Part {
                        device: part.device_id,
                        checked,
                        digest,
                        confirmed_by: part.confirmed_by,
                        open,
                    },
                );
            }
        }
        self.activate(now, job_id, restored, true);
    }

    pub(crate) fn submit_job(&mut self, now: Millis, spec: JobSpec) -> OwnerReply {
        let job_id = self.rng.id();
        let record = JobRecord {
            job_id: job_id.clone(),
            result: kinds::empty_result(&spec),
            spec,
            state: JobState::Queued,
            created_ms: now,
            started_ms: None,
            finished_ms: None,
            done_units: 0,
            done_ranges: Vec::new(),
            replica_units: 0,
            chunks_done: 0,
        };
        self.log(
            now,
            LogLevel::Info,
            format!(
                "job {} submitted: {}",
                short(&job_id),
                kinds::describe(&record.spec)
            ),
        );
        self.persist(StoreOp::PutJob(record.clone()));
        self.jobs.jobs.insert(job_id.clone(), record);
        if self.jobs.active.is_none() {
            self.start_next_job(now);
        }
        OwnerReply::JobSubmitted { job_id }
    }

    pub(crate) fn cancel_job(&mut self, now: Millis, job_id: &str) -> Result<OwnerReply, Refusal> {
        let job = self
            .jobs
            .jobs
            .get_mut(job_id)
            .ok_or_else(|| Refusal::new(shared_protocol::ErrorCode::NotFound, "no such job"))?;
        if matches!(job.state, JobState::Done | JobState::Cancelled) {
            return Ok(OwnerReply::Done {});
        }
        let had_parts = job.state == JobState::Running;
        job.state = JobState::Cancelled;
        job.finished_ms = Some(now);
        let record = job.clone();
        self.persist(StoreOp::PutJob(record));
        self.persist_outputs(job_id);
        if had_parts {
            self.persist(StoreOp::DeleteParts {
                job_id: job_id.to_owned(),
            });
        }
        self.log(
            now,
            LogLevel::Info,
            format!("job {} cancelled", short(job_id)),
        );
        if self
            .jobs
            .active
            .as_ref()
            .is_some_and(|active| active.job_id == job_id)
        {
            self.finish_active();
            self.start_next_job(now);
        }
        Ok(OwnerReply::Done {})
    }

    /// A device is connected and may compute: it joins the running job's scheduler (once its
    /// benchmark is answered).
    pub(crate) fn device_available(&mut self, device_id: &str) {
        let workers = self.workers_of(device_id);
        let speed = self.speed_of(device_id);
        let Some(device) = self.devices.get(device_id) else {
            return;
        };
        // No job work before a right benchmark answer on this connection.
        if self
            .link_of(device_id)
            .is_none_or(|link| link.bench.is_some())
        {
            return;
        }
        let enabled = device.record.enabled;
        let runs_workloads = device.record.capabilities.workloads;
        let trusted = self.jobs.verifier.trusted(device_id);
        if let Some(active) = self.jobs.active.as_mut() {
            // Only a device that says it runs workloads is leased their items.
            let workers = match active.spec {
                JobSpec::Workload { .. } if !runs_workloads => 0,
                _ => workers,
            };
            let rate = active.rate_of(speed);
            active.sched.set_device(device_id, workers, rate);
            active.sched.set_enabled(device_id, enabled);
            active.sched.set_trusted(device_id, trusted);
        }
    }

    /// A device's speed factor: measured, else its stored benchmark score, else a slow guess.
    pub(crate) fn speed_of(&self, device_id: &str) -> f64 {
        self.jobs
            .speeds
            .get(device_id)
            .copied()
            .or_else(|| self.devices.get(device_id).and_then(|d| d.record.score))
            .unwrap_or(UNMEASURED_SPEED)
    }

    /// A device's current speed factor: the running job's observed rate, else the last one
    /// kept, else its benchmark; `None` when it was never measured.
    pub(crate) fn measured_speed(&self, device_id: &str) -> Option<f64> {
        self.jobs
            .active
            .as_ref()
            .and_then(|a| a.sched.rate(device_id).map(|r| r / reference_rate(&a.spec)))
            .or_else(|| self.jobs.speeds.get(device_id).copied())
            .or_else(|| self.devices.get(device_id).and_then(|d| d.record.score))
    }

    /// A device left (disconnect, OFFLINE, removal): its leases go back to the queue.
    pub(crate) fn device_gone(&mut self, device_id: &str) {
        if let Some(active) = self.jobs.active.as_mut() {
            if let Some(rate) = active.sched.rate(device_id) {
                let speed = rate / reference_rate(&active.spec);
                self.jobs.speeds.insert(device_id.to_owned(), speed);
            }
            active.sched.remove_device(device_id);
        }
    }

    /// Throttle, run state or a device's enabled flag changed.
    pub(crate) fn capacity_changed(&mut self, now: Millis) {
        for device_id in self.connected_devices() {
            self.device_available(&device_id);
        }
        let stopped = self
            .meta
            .as_ref()
            .is_some_and(|m| m.run_state == RunState::Stopped);
        if stopped {
            if let Some(active) = self.jobs.active.as_mut() {
                let withdrawn = active.sched.withdraw_all();
                self.cancel_leases(&withdrawn);
            }
        }
        self.dispatch(now);
    }

    /// Hands out leases while the swarm runs (once a frame of results is through, while one is
    /// being handled).
    pub(crate) fn dispatch(&mut self, now: Millis) {
        if let Some(pending) = self.dispatch_held.as_mut() {
            *pending = true;
            return;
        }
        let running = self
            .meta
            .as_ref()
            .is_some_and(|m| m.run_state == RunState::Running);
        if running && self.settle_stranded(now) {
            self.finish_if_done(now);
        }
        let Some(active) = self.jobs.active.as_mut().filter(|_| running) else {
            return;
        };
        let mut batch = active.sched.poll_leases(now);
        let mut leases = Vec::new();
        // Replicas are drawn as leases go out, and leased at once alongside them (to another
        // device): served before new work, they can only be issued by another poll. That poll
        // issues replicas and new work, whose replicas are drawn in turn, until one issues
        // nothing.
        while !batch.is_empty() {
            let audit_one_in = self.jobs.verifier.policy().audit_one_in;
            let mut drawn = Vec::new();
            let mut marked = Vec::new();
            for lease in batch.iter().filter(|l| !l.replica) {
                if lease.speculative {
                    // A copy shares its original's draw when the original was drawn for (a
                    // trusted device's); otherwise it is drawn for when it answers.
                    let holder = self
                        .jobs
                        .active
                        .as_ref()
                        .and_then(|a| a.sched.first_holder((lease.lo, lease.hi)));
                    if holder.is_some_and(|h| self.jobs.verifier.audited_on_issue(h)) {
                        marked.push(lease.id);
                    }
                    continue;
                }
                marked.push(lease.id);
                let draw = self.rng.below(audit_one_in);
                if self.jobs.verifier.replicate_on_issue(&lease.device, draw) {
                    drawn.push((lease.lo, lease.hi, lease.device.clone()));
                }
            }
            let Some(active) = self.jobs.active.as_mut() else {
                return;
            };
            for id in marked {
                active.sched.mark_drawn(id);
            }
            leases.append(&mut batch);
            if drawn.is_empty() {
                break;
            }
            for (lo, hi, device) in drawn {
                active
                    .sched
                    .replicate(lo, hi, vec![device], self.rng.below(u64::MAX));
            }
            batch = active.sched.poll_leases(now);
        }
        let Some(active) = self.jobs.active.as_ref() else {
            return;
        };
        let key = self.meta.as_ref().map_or("", |m| m.lease_key.as_str());
        // Each device's leases of this pass, in the order issued.
        let mut offers: BTreeMap<String, Vec<LeaseOffer>> = BTreeMap::new();
        for lease in leases {
            // A device speaking protocol 4 gets the lease's ticket.
            let ticket = self
                .link_of(&lease.device)
                .is_some_and(|link| link.acks)
                .then(|| {
                    crate::secrets::lease_ticket(
                        key,
                        &active.job_id,
                        &lease.device,
                        lease.lo,
                        lease.hi,
                    )
                });
            let offer = LeaseOffer {
                lease_id: active.wire_id(lease.id),
                job_id: active.job_id.clone(),
                work: active.spec.work(lease.lo, lease.hi),
                deadline_ms: lease.deadline_ms,
                ticket,
            };
            offers.entry(lease.device).or_default().push(offer);
        }
        for (device, theirs) in offers {
            if let Some(conn) = self.conn_of(&device) {
                // Protocol 5 takes them in one frame; older devices one frame each.
                if theirs.len() > 1 && self.link(conn).is_some_and(|link| link.batches) {
                    self.send(conn, &ToClient::Leases { leases: theirs });
                } else {
                    for offer in theirs {
                        self.send(conn, &offer.into_lease());
                    }
                }
            }
            self.touch_leases(&device);
        }
    }

    /// A lease of the running job is past its deadline and the object's queueing grace
    /// ([`SwarmCore::queue_grace`]).
    pub(crate) fn lease_deadline_passed(&self, now: Millis) -> bool {
        self.jobs
            .active
            .as_ref()
            .and_then(|a| a.sched.next_deadline())
            .is_some_and(|due| due.saturating_add(self.queue_grace()) <= now)
    }

    /// On each alarm: leases past their deadline and the queueing grace go back to the queue
    /// (their holders are told to stop), then the freed work is handed out again.
    pub(crate) fn expire_leases(&mut self, now: Millis) {
        self.update_queue_grace(now, false);
        let cutoff = now.saturating_sub(self.queue_grace());
        if let Some(active) = self.jobs.active.as_mut() {
            let expired = active.sched.expire(cutoff);
            self.counters.leases_expired = self
                .counters
                .leases_expired
                .saturating_add(expired.len() as u64);
            if !expired.is_empty() {
                self.log(
                    now,
                    LogLevel::Warn,
                    format!(
                        "{} lease(s) missed their deadline and were re-issued",
                        expired.len()
                    ),
                );
            }
            let late: Vec<String> = expired.iter().map(|l| l.device.clone()).collect();
            for device_id in &late {
                self.jobs.verifier.expired(device_id);
            }
            self.cancel_leases(&expired);
            self.sync_credibility(&late);
        }
        self.dispatch(now);
    }

    /// A device's result. A device speaking protocol 4 is told when it may forget it
    /// ([`ToClient::Committed`]): once the commit holding what it changed is written, or at
    /// once when it changes nothing (late, repeated, of a job that ended).
    pub(crate) fn handle_chunk_result(
        &mut self,
        now: Millis,
        conn: ConnId,
        device_id: &str,
        wire_id: u64,
        result: WorkResult,
        ticket: Option<String>,
    ) {
        if wire_id >> EPOCH_SHIFT == 0 {
            let answer = crate::bench::known_answer(&result);
            self.handle_bench_result(now, conn, device_id, wire_id, answer);
            return;
        }
        let job = self.running_job_id().map(str::to_owned);
        let taken = self.take_result(now, conn, device_id, wire_id, result, ticket);
        if matches!(taken, Taken::Nothing) {
            self.counters.results_unused = self.counters.results_unused.saturating_add(1);
        }
        if !self.link(conn).is_some_and(|link| link.acks) {
            return;
        }
        // A result that finished its job is durable at once: the job's row holds it.
        let finished = self.running_job_id() != job.as_deref();
        let now_durable = match taken {
            Taken::Changed => finished,
            Taken::Nothing => !self.acked_on_commit(device_id, wire_id),
            Taken::Refused => false,
        };
        if now_durable {
            let lease_ids = vec![wire_id];
            self.send(conn, &ToClient::Committed { lease_ids });
        } else if matches!(taken, Taken::Changed) {
            self.ack_on_commit(device_id, wire_id);
        }
    }

    fn take_result(
        &mut self,
        now: Millis,
        conn: ConnId,
        device_id: &str,
        wire_id: u64,
        result: WorkResult,
        ticket: Option<String>,
    ) -> Taken {
        let Some(active) = self.jobs.active.as_mut() else {
            return Taken::Nothing;
        };
        // A late result of an earlier activation, an expired or cancelled lease, or a repeat:
        // nothing to do, unless its ticket shows work still to do ([`Self::take_resent`]).
        let Some(lease) = active
            .own_id(wire_id)
            .and_then(|id| active.sched.lease(id).cloned())
        else {
            return match ticket {
                Some(ticket) => self.take_resent(now, conn, device_id, result, &ticket),
                None => Taken::Nothing,
            };
        };
        let lease_id = lease.id;
        if lease.device != device_id {
            let refusal =
                Refusal::new(ErrorCode::Forbidden, "this lease belongs to another device");
            self.reject(now, conn, refusal, None);
            return Taken::Refused;
        }
        let receipt_key = self.meta.as_ref().map_or("", |m| m.lease_key.as_str());
        let checked = match unreceipted(receipt_key, &active.job_id, (lease.lo, lease.hi), &result)
            .map_or_else(
                || kinds::check(&active.spec, lease.lo, lease.hi, result, &mut self.rng),
                Err,
            ) {
            Ok(checked) => checked,
            Err(why) => {
                self.refuse_result(now, conn, device_id, &why);
                return Taken::Refused;
            }
        };
        let digest = kinds::digest(&checked);
        let Some(active) = self.jobs.active.as_mut() else {
            return Taken::Nothing;
        };
        let job_id = active.job_id.clone();
        // An untrusted device's first answer is replicated; a trusted device's when its lease
        // was not drawn for as it went out (a speculative copy, or a lease restored after a
        // restart) and the draw says so now. A twin of it that another device still computes
        // then becomes the replica.
        let audit = !lease.replica && {
            let draw = self.rng.below(self.jobs.verifier.policy().audit_one_in);
            self.jobs
                .verifier
                .replicate_on_answer(device_id, lease.drawn, draw)
        };
        let pick = self.rng.below(u64::MAX);
        let Some(active) = self.jobs.active.as_mut() else {
            return Taken::Nothing;
        };
        let range = (lease.lo, lease.hi);
        if audit && !active.sched.is_replicated(range, &[device_id.to_owned()]) {
            active.sched.adopt_twin(range, device_id, pick);
        }
        let completion = active.sched.complete(now, device_id, lease_id);
        self.touch_leases(device_id);
        match completion {
            Completion::Accepted { lo, hi, cancelled } => {
                self.cancel_leases(&cancelled);
                self.count_chunk(device_id);
                self.accept_part(device_id, &job_id, (lo, hi), checked, digest, audit);
            }
            Completion::Replica { lo, hi } => {
                if let Some(job) = self.jobs.jobs.get_mut(&job_id) {
                    job.replica_units = job.replica_units.saturating_add(hi.saturating_sub(lo));
                }
                let answer = Answer {
                    digest,
                    unsettled: kinds::unsettled(&checked.result),
                };
                if let Some(active) = self.jobs.active.as_mut() {
                    if active
                        .parts
                        .get(&(lo, hi))
                        .is_some_and(|p| p.answer().unsettled)
                    {
                        let kept = active.replicas.entry((lo, hi)).or_default();
                        kept.push((device_id.to_owned(), checked, digest));
                    }
                }
                self.replica_answer(now, device_id, (lo, hi), answer);
            }
            Completion::Duplicate | Completion::NotHolder | Completion::Unknown => {
                return Taken::Nothing
            }
        }
        self.finish_if_done(now);
        self.dispatch(now);
        Taken::Changed
    }

    /// A result for a lease the coordinator no longer holds (it restarted before committing
    /// the result, the device reconnected, or the lease passed its deadline while the result
    /// waited): taken as the lease's first answer when its ticket shows that this device was
    /// given exactly this work of the running job, the device may compute, and nobody has done
    /// any of the work since. Leases of that work given out since are withdrawn, their holders
    /// told to stop. It is checked and verified like any result (a trusted device's is drawn
    /// for an audit as it answers).
    fn take_resent(
        &mut self,
        now: Millis,
        conn: ConnId,
        device_id: &str,
        result: WorkResult,
        ticket: &str,
    ) -> Taken {
        let key = self
            .meta
            .as_ref()
            .map(|m| m.lease_key.clone())
            .unwrap_or_default();
        let may_compute = self
            .devices
            .get(device_id)
            .is_some_and(|d| d.record.enabled && !d.record.quarantined);
        let Some(active) = self.jobs.active.as_mut() else {
            return Taken::Nothing;
        };
        let Some((lo, hi)) = crate::secrets::check_ticket(&key, &active.job_id, device_id, ticket)
        else {
            return Taken::Nothing;
        };
        if !may_compute || !active.sched.can_claim(lo, hi) {
            return Taken::Nothing;
        }
        let job_id = active.job_id.clone();
        // Checked before it is taken: a refused result must not stop the leases it would
        // replace.
        let checked = match unreceipted(&key, &active.job_id, (lo, hi), &result).map_or_else(
            || kinds::check(&active.spec, lo, hi, result, &mut self.rng),
            Err,
        ) {
            Ok(checked) => checked,
            Err(why) => {
                self.refuse_result(now, conn, device_id, &why);
                return Taken::Refused;
            }
        };
        let Some(cancelled) = active.sched.claim(lo, hi) else {
            return Taken::Nothing;
        };
        self.cancel_leases(&cancelled);
        let digest = kinds::digest(&checked);
        let draw = self.rng.below(self.jobs.verifier.policy().audit_one_in);
        let audit = self
            .jobs
            .verifier
            .replicate_on_answer(device_id, false, draw);
        self.log(
            now,
            LogLevel::Info,
            format!(
                "a late result (its lease had expired, or the object restarted) was taken for units {lo}–{hi} of job {}",
                short(&job_id)
            ),
        );
        self.count_chunk(device_id);
        self.accept_part(device_id, &job_id, (lo, hi), checked, digest, audit);
        self.finish_if_done(now);
        self.dispatch(now);
        Taken::Changed
    }

    fn count_chunk(&mut self, device_id: &str) {
        let chunks = self
            .jobs
            .chunks_done
            .entry(device_id.to_owned())
            .or_default();
        *chunks = chunks.saturating_add(1);
    }

    /// Merges a device's accepted part into its job, stores it (the part, not the job row),
    /// and hands it to the verifier, which may ask for a replica.
    fn accept_part(
        &mut self,
        device_id: &str,
        job_id: &str,
        (lo, hi): Range,
        mut checked: Checked,
        digest: Digest,
        audit: bool,
    ) {
        let Some(job) = self.jobs.jobs.get_mut(job_id) else {
            return;
        };
        kinds::merge(&mut job.result, &checked);
        job.add_done(lo, hi);
        // The pixels are written before the part that counts them as done. A Mandelbrot
        // job's units are its rows, so the band starts at row `lo`.
        if let Some(counts) = checked.pixels.take() {
            self.persist(StoreOp::PutPixels {
                job_id: job_id.to_owned(),
                first_row: u32::try_from(lo).unwrap_or(u32::MAX),
                counts,
            });
        }
        // Audited: a replica was drawn when the lease went out, or when it answered (`audit`).
        let audited = audit
            || self
                .jobs
                .active
                .as_ref()
                .is_some_and(|a| a.sched.is_replicated((lo, hi), &[device_id.to_owned()]));
        let answer = Answer {
            digest,
            unsettled: kinds::unsettled(&checked.result),
        };
        let verdict = self
            .jobs
            .verifier
            .first(device_id, (lo, hi), answer, audited);
        let open = matches!(verdict, Verdict::Replicate { .. });
        let part = Part {
            device: device_id.to_owned(),
            checked,
            digest,
            confirmed_by: Vec::new(),
            open,
        };
        self.journal(job_id, CommitEntry::Part(part.record(job_id, (lo, hi))));
        if let Some(active) = self.jobs.active.as_mut() {
            active.parts.insert((lo, hi), part);
        }
        self.follow(verdict, (lo, hi));
        self.sync_credibility(&[device_id.to_owned()]);
    }

    /// A replica's answer for a range: compared with the others by the verifier. A decided
    /// range records its confirmers (or, when its first answer lost, is computed again); every
    /// loser is quarantined.
    fn replica_answer(&mut self, now: Millis, device_id: &str, range: Range, answer: Answer) {
        let mut answered = self.jobs.verifier.answerers(range);
        answered.push(device_id.to_owned());
        let more_devices = self.devices.values().any(|d| {
            d.conn.is_some() && d.record.enabled && !answered.contains(&d.record.device_id)
        });
        let verdict = self
            .jobs
            .verifier
            .replica(device_id, range, answer, more_devices);
        let mut involved = vec![device_id.to_owned()];
        if let Verdict::Decided { winners, losers } = &verdict {
            involved.extend(winners.iter().cloned());
            self.apply_decision(now, range, winners, losers);
        }
        self.follow(verdict, range);
        // Whatever the answer was (one from a device that answered the range already changes
        // nothing), a range still open has a replica on its way to a device that has not.
        let answered = self.jobs.verifier.answerers(range);
        let pick = self.rng.below(u64::MAX);
        if let Some(active) = self.jobs.active.as_mut() {
            if self.jobs.verifier.is_open(range) && !active.sched.is_replicated(range, &answered) {
                active.sched.replicate(range.0, range.1, answered, pick);
            }
        }
        self.sync_credibility(&involved);
    }

    /// A range was decided: its part records who confirmed it (or, when its first answer lost,
    /// is computed again with the rest of that device's parts), and every loser is quarantined.
    fn apply_decision(&mut self, now: Millis, range: Range, winners: &[String], losers: &[String]) {
        self.replace_unsettled(range, winners);
        if let Some(active) = self.jobs.active.as_mut() {
            if let Some(part) = active.parts.get_mut(&range) {
                if winners.contains(&part.device) {
                    part.open = false;
                    for winner in winners {
                        if *winner != part.device && !part.confirmed_by.contains(winner) {
                            part.confirmed_by.push(winner.clone());
                        }
                    }
                    let (job_id, record) =
                        (active.job_id.clone(), part.record(&active.job_id, range));
                    self.journal(&job_id, CommitEntry::Part(record));
                }
            }
        }
        for loser in losers {
            self.quarantine(
                now,
                loser,
                "its result disagreed with the results of other devices for the same work",
            );
        }
    }

    /// A decided range whose part is an unsettled answer that did not win (its device ran out
    /// of time or stack where others did not, and is not a loser): a winner's result takes
    /// its place, or, when none was kept (the object restarted since), the range is computed
    /// again.
    fn replace_unsettled(&mut self, range: Range, winners: &[String]) {
        let Some(active) = self.jobs.active.as_mut() else {
            return;
        };
        let kept = active.replicas.remove(&range).unwrap_or_default();
        let Some(part) = active.parts.get_mut(&range) else {
            return;
        };
        if winners.contains(&part.device) || !part.answer().unsettled {
            return;
        }
        let job_id = active.job_id.clone();
        let winner = kept
            .into_iter()
            .find(|(device, _, _)| winners.contains(device));
        let Some(job) = self.jobs.jobs.get_mut(&job_id) else {
            return;
        };
        match winner {
            Some((device, checked, digest)) => {
                kinds::unmerge(&mut job.result, &part.checked);
                kinds::merge(&mut job.result, &checked);
                // Open until `apply_decision` records its confirmers and journals it.
                *part = Part {
                    confirmed_by: Vec::new(),
                    device,
                    checked,
                    digest,
                    open: true,
                };
            }
            None => {
                if !active.sched.redo(range.0, range.1) {
                    return;
                }
                if let Some(part) = active.parts.remove(&range) {
                    kinds::unmerge(&mut job.result, &part.checked);
                }
                job.remove_done(range.0, range.1);
                self.journal(&job_id, CommitEntry::Drop { lo: range.0 });
            }
        }
    }

    /// Ranges whose replica no device can take (every device that could has answered) are
    /// decided with the answers they have, by a lead of one; a tie waits for another device.
    fn settle_stranded(&mut self, now: Millis) -> bool {
        let stranded = self
            .jobs
            .active
            .as_ref()
            .map(|a| a.sched.stranded())
            .unwrap_or_default();
        let mut decided = false;
        for range in stranded {
            if let Verdict::Decided { winners, losers } = self.jobs.verifier.settle(range) {
                decided = true;
                if let Some(active) = self.jobs.active.as_mut() {
                    active.sched.drop_replica(range.0, range.1);
                }
                self.apply_decision(now, range, &winners, &losers);
                let involved: Vec<String> = winners.into_iter().chain(losers).collect();
                self.sync_credibility(&involved);
            }
        }
        decided
    }

    /// Queues the replica a verdict asks for.
    fn follow(&mut self, verdict: Verdict, (lo, hi): Range) {
        let pick = self.rng.below(u64::MAX);
        if let (Verdict::Replicate { exclude }, Some(active)) = (verdict, self.jobs.active.as_mut())
        {
            active.sched.replicate(lo, hi, exclude, pick);
        }
    }

    /// Copies the verifier's view of these devices' credibility into their records (one write
    /// each when it changed), and holds back an untrusted device with too many open results.
    fn sync_credibility(&mut self, devices: &[String]) {
        let running = self.running_job_id().map(str::to_owned);
        for device_id in devices {
            let credibility = self.jobs.verifier.credibility(device_id);
            let trusted = self.jobs.verifier.trusted(device_id);
            let open = self.jobs.verifier.open_of(device_id);
            let workers = self.workers_of(device_id) as usize;
            if let Some(active) = self.jobs.active.as_mut() {
                let held = !trusted && open >= workers.max(1).saturating_mul(OPEN_PER_WORKER);
                active.sched.set_held(device_id, held);
                active.sched.set_trusted(device_id, trusted);
            }
            let Some(device) = self.devices.get_mut(device_id) else {
                continue;
            };
            if device.record.credibility != credibility {
                device.record.credibility = credibility;
                device.record.credibility_rev = device.record.credibility_rev.saturating_add(1);
                let rev = device.record.credibility_rev;
                // With the running job's next commit; without a job, at once.
                match &running {
                    Some(job_id) => self.journal(
                        job_id,
                        CommitEntry::Credibility {
                            device_id: device_id.clone(),
                            rev,
                            credibility,
                        },
                    ),
                    None => {
                        let record = device.record.clone();
                        self.persist(StoreOp::PutDevice(record));
                    }
                }
            }
        }
    }

    /// The running job is done when every unit is (or, for a nonce search, its answer is
    /// final) and no part waits for a replica: its row takes the merged result and its parts
    /// are deleted, and the next job starts.
    fn finish_if_done(&mut self, now: Millis) {
        let Some(active) = self.jobs.active.as_ref() else {
            return;
        };
        let Some(job) = self.jobs.jobs.get_mut(&active.job_id) else {
            return;
        };
        let settled = active.sched.replicas_pending() == 0 && self.jobs.verifier.is_settled();
        let complete = active.sched.progress().0 >= active.sched.progress().1
            || kinds::satisfied(&job.spec, &job.result, &job.done_ranges);
        if !(settled && complete) {
            return;
        }
        kinds::finish(&job.spec, &mut job.result);
        job.state = JobState::Done;
        job.finished_ms = Some(now);
        let record = job.clone();
        let job_id = record.job_id.clone();
        self.persist(StoreOp::PutJob(record.clone()));
        self.persist_outputs(&job_id);
        self.persist(StoreOp::DeleteParts {
            job_id: job_id.clone(),
        });
        let took = now.saturating_sub(record.created_ms) as f64 / 1000.0;
        let verified = record.replica_units as f64 / record.spec.units().max(1) as f64 * 100.0;
        let text = format!(
            "job {} done in {took:.1} s: {} ({verified:.0} % of its work computed again to verify it)",
            short(&job_id),
            kinds::describe_result(&record.result)
        );
        self.log(now, LogLevel::Info, text);
        self.finish_active();
        self.start_next_job(now);
    }

    /// A result that failed its check: nothing of it is kept, the device is quarantined
    /// and disconnected ([`SwarmCore::quarantine`]).
    pub(crate) fn refuse_result(&mut self, now: Millis, conn: ConnId, device_id: &str, why: &str) {
        self.send(
            conn,
            &ToClient::Error {
                code: ErrorCode::BadResult,
                message: format!("result refused: {why}"),
                request: None,
                retry_after_ms: None,
            },
        );
        self.quarantine(now, device_id, why);
        // Closed by `quarantine` when it is the device's current socket; a stale one too.
        if self.conns.contains_key(&conn) {
            self.close(now, conn, close_code::BAD_RESULT, "wrong result");
        }
    }

    /// A device caught returning a wrong result is quarantined (disabled until the owner
    /// enables it again) and disconnected; its parts of the running job are taken back out,
    /// the parts it confirmed wait for a new replica, and its leases go back to the queue.
    pub(crate) fn quarantine(&mut self, now: Millis, device_id: &str, why: &str) {
        let mut name = String::new();
        if let Some(device) = self.devices.get_mut(device_id) {
            device.record.enabled = false;
            device.record.quarantined = true;
            name.clone_from(&device.record.name);
        }
        self.security(
            now,
            "wrong result",
            format!(
                "device '{name}' returned a wrong result ({why}); quarantined until the owner enables it"
            ),
        );
        self.discard_parts(now, device_id);
        // Taking a liar's parts out is committed at once, not with the next commit.
        self.commit();
        let credibility = self.jobs.verifier.credibility(device_id);
        if let Some(device) = self.devices.get_mut(device_id) {
            device.record.credibility = credibility;
            device.record.credibility_rev = device.record.credibility_rev.saturating_add(1);
            let record = device.record.clone();
            self.persist(StoreOp::PutDevice(record));
        }
        if let Some(conn) = self.conn_of(device_id) {
            self.close(now, conn, close_code::BAD_RESULT, "wrong result");
        }
    }

    /// Takes a quarantined device's accepted parts of the running job back out (out of the
    /// merged result, the done ranges and the stored pixels, and back into the queue), and
    /// reopens the parts it alone confirmed.
    fn discard_parts(&mut self, now: Millis, device_id: &str) {
        let again: Vec<(Range, Vec<String>, u64)> = self
            .jobs
            .verifier
            .caught(device_id)
            .into_iter()
            .map(|(range, exclude)| (range, exclude, self.rng.below(u64::MAX)))
            .collect();
        let Some(active) = self.jobs.active.as_mut() else {
            return;
        };
        for ((lo, hi), exclude, pick) in again {
            active.sched.replicate(lo, hi, exclude, pick);
        }
        let job_id = active.job_id.clone();
        let image = matches!(active.spec, JobSpec::Mandelbrot { .. });
        let produced: Vec<Range> = active
            .parts
            .iter()
            .filter(|(_, p)| p.device == device_id)
            .map(|(range, _)| *range)
            .collect();
        let mut redone = Vec::new();
        for (lo, hi) in produced {
            if active.sched.redo(lo, hi) {
                // Replicas kept for a part computed again are of no use to the new one.
                active.replicas.remove(&(lo, hi));
                if let Some(part) = active.parts.remove(&(lo, hi)) {
                    redone.push((lo, hi, part));
                }
            }
        }
        let mut reopened = Vec::new();
        for (range, part) in &mut active.parts {
            let before = part.confirmed_by.len();
            part.confirmed_by.retain(|d| d != device_id);
            if part.confirmed_by.len() != before && part.confirmed_by.is_empty() && !part.open {
                part.open = true;
                reopened.push((*range, part.device.clone(), part.answer()));
            }
        }
        for (range, producer, answer) in &reopened {
            if let Verdict::Replicate { mut exclude } =
                self.jobs.verifier.reopen(producer, *range, *answer)
            {
                exclude.push(device_id.to_owned());
                let pick = self.rng.below(u64::MAX);
                if let Some(active) = self.jobs.active.as_mut() {
                    active.sched.replicate(range.0, range.1, exclude, pick);
                }
            }
        }
        let records: Vec<PartRecord> = self
            .jobs
            .active
            .as_ref()
            .map(|active| {
                reopened
                    .iter()
                    .filter_map(|(range, _, _)| {
                        active.parts.get(range).map(|p| p.record(&job_id, *range))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for record in records {
            self.journal(&job_id, CommitEntry::Part(record));
        }
        if let Some(job) = self.jobs.jobs.get_mut(&job_id) {
            for (lo, hi, part) in &redone {
                kinds::unmerge(&mut job.result, &part.checked);
                job.remove_done(*lo, *hi);
            }
        }
        for (lo, _, _) in &redone {
            if image {
                self.persist(StoreOp::DeletePixels {
                    job_id: job_id.clone(),
                    first_row: u32::try_from(*lo).unwrap_or(u32::MAX),
                });
            }
            self.journal(&job_id, CommitEntry::Drop { lo: *lo });
        }
        if !redone.is_empty() || !reopened.is_empty() {
            self.log(
                now,
                LogLevel::Warn,
                format!(
                    "{} chunk(s) of job {} from that device were discarded and will be computed again; {} it confirmed will be checked again",
                    redone.len(),
                    short(&job_id),
                    reopened.len()
                ),
            );
        }
    }

    /// The jobs for the snapshot: the newest, oldest first.
    pub(crate) fn job_views(&self) -> Vec<JobView> {
        let mut jobs: Vec<&JobRecord> = self.jobs.jobs.values().collect();
        jobs.sort_by_key(|j| (j.created_ms, j.job_id.clone()));
        let skip = jobs.len().saturating_sub(JOBS_IN_SNAPSHOT);
        jobs.into_iter()
            .skip(skip)
            .map(|j| self.job_view(j))
            .collect()
    }

    /// Ranges of the running job that wait for a replica but have none on its way to a device
    /// that has not answered them (out to one, queued for one, or queued for none because no
    /// such device is there): a job that could never finish. Always empty; the fuzzer and the
    /// saboteur runs check it after every step.
    pub fn stalled_ranges(&self) -> Vec<(u64, u64)> {
        let Some(active) = self.jobs.active.as_ref() else {
            return Vec::new();
        };
        self.jobs
            .verifier
            .open_ranges()
            .filter(|range| {
                let answered = self.jobs.verifier.answerers(*range);
                !active.sched.replica_on_its_way(*range, &answered)
            })
            .collect()
    }

    /// A workload job that ends keeps where its settled parts' outputs are
    /// ([`StoreOp::PutOutputs`]): its parts are deleted, and the results endpoint reads these.
    fn persist_outputs(&mut self, job_id: &str) {
        let Some(active) = self.jobs.active.as_ref().filter(|a| a.job_id == job_id) else {
            return;
        };
        let rows: Vec<StoreOp> = active
            .settled_outputs()
            .map(|(lo, hi, outputs)| StoreOp::PutOutputs {
                job_id: job_id.to_owned(),
                lo,
                hi,
                outputs,
            })
            .collect();
        for row in rows {
            self.persist(row);
        }
    }

    /// What a lease's ticket, presented by `device_id` over HTTP, lets it do: fetch the
    /// running workload job's module and upload the outputs of the items the ticket names,
    /// with the receipt for the outputs file named `outputs` when one is asked for.
    /// `None` unless the ticket is this object's, for this device and the running job, and
    /// that job is a workload.
    pub fn vouch(
        &self,
        device_id: &str,
        ticket: &str,
        outputs: Option<crate::secrets::StoredOutputs>,
    ) -> Option<Vouched> {
        let key = self.meta.as_ref()?.lease_key.as_str();
        let active = self.jobs.active.as_ref()?;
        let JobSpec::Workload { module, inputs, .. } = &active.spec else {
            return None;
        };
        let (lo, hi) = crate::secrets::check_ticket(key, &active.job_id, device_id, ticket)?;
        Some(Vouched {
            job_id: active.job_id.clone(),
            module: module.clone(),
            inputs: inputs.clone().unwrap_or_default(),
            first_item: lo,
            items: hi.saturating_sub(lo),
            receipt: outputs
                .map(|file| crate::secrets::outputs_receipt(key, &active.job_id, lo, hi, file)),
        })
    }

    /// Where the outputs of a workload job's items from `from` on are, as far as they are
    /// settled without a gap: for the running job from its parts; for an ended one `parts`
    /// is empty and the glue reads the rows written when it ended ([`StoreOp::PutOutputs`]).
    /// `None` for an unknown job or one of another kind.
    pub fn outputs_index(&self, job_id: &str, from: u64) -> Option<OutputsIndex> {
        let job = self.jobs.jobs.get(job_id)?;
        let JobSpec::Workload {
            start, step, items, ..
        } = &job.spec
        else {
            return None;
        };
        let parts = match &self.jobs.active {
            Some(active) if active.job_id == job_id => {
                OutputsIndex::chain(from, active.settled_outputs())
            }
            _ => Vec::new(),
        };
        Some(OutputsIndex {
            state: job.state,
            start: *start,
            step: *step,
            items: *items,
            parts,
        })
    }

    pub fn job(&self, job_id: &str) -> Option<JobView> {
        self.jobs.jobs.get(job_id).map(|j| self.job_view(j))
    }

    fn job_view(&self, job: &JobRecord) -> JobView {
        let per_ms = match &self.jobs.active {
            Some(active) if active.job_id == job.job_id => active.sched.throughput(),
            _ => 0.0,
        };
        let total = job.spec.units();
        let unverified_units = match &self.jobs.active {
            Some(active) if active.job_id == job.job_id => self.jobs.verifier.open_units(),
            _ => 0,
        };
        let eta_ms = (per_ms > 0.0 && job.state == JobState::Running)
            .then(|| (total.saturating_sub(job.done_units) as f64 / per_ms) as u64);
        JobView {
            job_id: job.job_id.clone(),
            spec: job.spec.clone(),
            state: job.state,
            done_units: job.done_units,
            total_units: total,
            units_per_second: per_ms * 1000.0,
            eta_ms,
            created_ms: job.created_ms,
            started_ms: job.started_ms,
            finished_ms: job.finished_ms,
            result: job.result.clone(),
            verify_units: job.replica_units,
            unverified_units,
            chunks_done: job.chunks_done,
        }
    }

    fn start_next_job(&mut self, now: Millis) {
        if let Some(job_id) = self.jobs.queued_first() {
            if let Some(job) = self.jobs.jobs.get_mut(&job_id) {
                job.state = JobState::Running;
                job.started_ms = Some(now);
                let record = job.clone();
                self.persist(StoreOp::PutJob(record));
            }
            self.log(
                now,
                LogLevel::Info,
                format!("job {} started", short(&job_id)),
            );
            self.activate(now, job_id, BTreeMap::new(), false);
        }
    }

    /// Builds the scheduler of a running job from its progress (its parts, by device, after a
    /// restart) and the devices online; after a restart (`restarted`) also from the leases its
    /// devices' connections hold.
    fn activate(
        &mut self,
        now: Millis,
        job_id: String,
        parts: BTreeMap<Range, Part>,
        restarted: bool,
    ) {
        // A fresh epoch, none that a held lease's wire id already carries.
        let held_epochs: Vec<u64> = self
            .conns
            .values()
            .filter_map(|c| match &c.session {
                crate::records::Session::Device { link, .. } => Some(link),
                _ => None,
            })
            .flat_map(|link| link.leases.iter().map(|l| l.0 >> EPOCH_SHIFT))
            .collect();
        let mut epoch = self.rng.below(MAX_EPOCH).saturating_add(1);
        while held_epochs.contains(&epoch) {
            epoch = self.rng.below(MAX_EPOCH).saturating_add(1);
        }
        let Some(job) = self.jobs.jobs.get(&job_id) else {
            return;
        };
        let spec = job.spec.clone();
        let mut sched = Scheduler::new(SchedConfig {
            max_chunk_units: spec.max_chunk_units(),
            // Four fifths of the socket's limit: heartbeats and the rest need room too.
            results_per_second: f64::from(self.config.messages_per_second) * 0.8,
            results_per_second_per_worker: 0.8,
            allowance_workers: u32::from(crate::core::MAX_ALLOWANCE_CORES),
            swarm_results_per_second: f64::from(self.config.results_per_second_budget),
            ..SchedConfig::default()
        });
        sched.add_work(spec.units());
        if parts.is_empty() {
            for (lo, hi) in &job.done_ranges {
                sched.mark_done(*lo, *hi);
            }
        }
        // Each part is marked on its own, so that it can be redone if its device is caught;
        // the open ones wait for a replica again.
        self.jobs.verifier.clear();
        for ((lo, hi), part) in &parts {
            sched.mark_done(*lo, *hi);
            if part.open {
                if let Verdict::Replicate { exclude } =
                    self.jobs
                        .verifier
                        .reopen(&part.device, (*lo, *hi), part.answer())
                {
                    sched.replicate(*lo, *hi, exclude, self.rng.below(u64::MAX));
                }
            }
        }
        self.jobs.active = Some(Active {
            job_id,
            spec,
            sched,
            epoch,
            wire_of: BTreeMap::new(),
            restored: BTreeMap::new(),
            parts,
            replicas: BTreeMap::new(),
        });
        if restarted {
            self.restore_held_leases();
        }
        self.capacity_changed(now);
    }

    /// Gives the leases that device connections hold (kept in their attachments) back to the
    /// scheduler of the running job, so that their results still count. A lease of another
    /// job, or whose units are done or out with another device, is dropped and its holder told
    /// to stop.
    fn restore_held_leases(&mut self) {
        let job = self
            .jobs
            .active
            .as_ref()
            .map(|a| short(&a.job_id).to_owned())
            .unwrap_or_default();
        let held: Vec<(String, Vec<HeldLease>, bool)> = self
            .devices
            .values()
            .filter_map(|d| {
                let link = self.link(d.conn?)?;
                (!link.leases.is_empty()).then(|| {
                    let same_job = link.lease_job == job;
                    (d.record.device_id.clone(), link.leases.clone(), same_job)
                })
            })
            .collect();
        let mut stale = Vec::new();
        for (device_id, leases, same_job) in held {
            self.device_available(&device_id);
            let Some(active) = self.jobs.active.as_mut() else {
                return;
            };
            for HeldLease(wire, lo, hi, issued_ms, deadline_ms) in leases {
                let restored = same_job
                    .then(|| {
                        active
                            .sched
                            .restore_lease(&device_id, lo, hi, issued_ms, deadline_ms)
                    })
                    .flatten();
                match restored {
                    Some(id) => {
                        active.wire_of.insert(id, wire);
                        active.restored.insert(wire, id);
                    }
                    None => stale.push((device_id.clone(), wire)),
                }
            }
            self.touch_leases(&device_id);
        }
        for (device_id, lease_id) in stale {
            if let Some(conn) = self.conn_of(&device_id) {
                self.send(conn, &ToClient::CancelLease { lease_id });
            }
        }
    }

    /// The leases of the running job a device holds, as its attachment keeps them (the
    /// newest [`MAX_ATTACHED_LEASES`]).
    pub(crate) fn held_leases(&self, device_id: &str) -> Vec<HeldLease> {
        let Some(active) = self.jobs.active.as_ref() else {
            return Vec::new();
        };
        let mut held: Vec<HeldLease> = active
            .sched
            .leases_of(device_id)
            .map(|l| HeldLease(active.wire_id(l.id), l.lo, l.hi, l.issued_ms, l.deadline_ms))
            .collect();
        let extra = held.len().saturating_sub(MAX_ATTACHED_LEASES);
        held.drain(..extra);
        held
    }

    /// Ends the running job's scheduler: the devices' observed speeds are kept and the leases
    /// still out are withdrawn.
    fn finish_active(&mut self) {
        let Some(mut active) = self.jobs.active.take() else {
            return;
        };
        self.drop_pending();
        self.jobs.verifier.clear();
        for device_id in active.sched.devices() {
            self.touch_leases(&device_id);
        }
        let reference = reference_rate(&active.spec);
        for device_id in self.devices.keys() {
            if let Some(rate) = active.sched.rate(device_id) {
                self.jobs.speeds.insert(device_id.clone(), rate / reference);
            }
        }
        let withdrawn = active.sched.withdraw_all();
        let messages: Vec<(String, u64)> = withdrawn
            .into_iter()
            .map(|lease| (lease.device, active.wire_id(lease.id)))
            .collect();
        for (device, lease_id) in messages {
            if let Some(conn) = self.conn_of(&device) {
                self.send(conn, &ToClient::CancelLease { lease_id });
            }
        }
    }

    fn cancel_leases(&mut self, leases: &[Lease]) {
        for lease in leases {
            self.touch_leases(&lease.device);
        }
        let Some(active) = self.jobs.active.as_ref() else {
            return;
        };
        let messages: Vec<(String, u64)> = leases
            .iter()
            .map(|lease| (lease.device.clone(), active.wire_id(lease.id)))
            .collect();
        for (device, lease_id) in messages {
            if let Some(conn) = self.conn_of(&device) {
                self.send(conn, &ToClient::CancelLease { lease_id });
            }
        }
    }

    /// Leases a device holds on the running job, and its share of the job's capacity (0–1),
    /// given the job's whole throughput ([`SwarmCore::job_throughput`]).
    pub(crate) fn device_load(&self, device_id: &str, throughput: f64) -> (u32, f64) {
        self.jobs.active.as_ref().map_or((0, 0.0), |active| {
            let share = if throughput > 0.0 {
                active.sched.weight(device_id) / throughput
            } else {
                0.0
            };
            (active.sched.in_flight(device_id), share)
        })
    }

    /// Whether a job is running and the swarm hands out work (not paused or stopped).
    pub(crate) fn jobs_running(&self) -> bool {
        self.jobs.active.is_some()
            && self
                .meta
                .as_ref()
                .is_some_and(|m| m.run_state == RunState::Running)
    }

    /// The running job's id.
    pub(crate) fn running_job_id(&self) -> Option<&str> {
        self.jobs.active.as_ref().map(|a| a.job_id.as_str())
    }

    /// The running job's measured throughput, units per ms (0 when none runs).
    pub(crate) fn job_throughput(&self) -> f64 {
        self.jobs
            .active
            .as_ref()
            .map_or(0.0, |active| active.sched.throughput())
    }

    fn conn_of(&self, device_id: &str) -> Option<ConnId> {
        self.devices.get(device_id).and_then(|d| d.conn)
    }

    /// The cores a device lends: all of them unless it said otherwise (`set_lend`).
    pub(crate) fn lent_of(&self, device_id: &str) -> u16 {
        let lend = self.link_of(device_id).and_then(|link| link.lend);
        self.devices.get(device_id).map_or(0, |d| {
            let cores = d.record.capabilities.cores;
            lend.map_or(cores, |lend| lend.min(cores))
        })
    }

    fn throttle_percent(&self) -> u8 {
        self.meta.as_ref().map_or(100, |m| m.throttle_percent)
    }

    /// Workers a device computes with: its lent cores scaled by the swarm throttle, rounded up
    /// (each of them then duty-cycled, see [`Share`]).
    fn workers_of(&self, device_id: &str) -> u32 {
        u32::from(Share::of(self.lent_of(device_id), self.throttle_percent()).workers)
    }

    /// Tells a connected device how much to compute ([`ToClient::Share`]).
    pub(crate) fn send_share(&mut self, device_id: &str) {
        let (Some(conn), Some(meta)) = (self.conn_of(device_id), self.meta.as_ref()) else {
            return;
        };
        let lent_cores = self.lent_of(device_id);
        let share = Share::of(lent_cores, meta.throttle_percent);
        let message: ToClient = ToClient::Share(DeviceShare {
            workers: share.workers,
            duty_percent: share.duty_percent,
            lent_cores,
            throttle_percent: meta.throttle_percent,
            run_state: meta.run_state,
            enabled: self
                .devices
                .get(device_id)
                .is_some_and(|d| d.record.enabled),
        });
        self.send(conn, &message);
    }

    /// [`Self::send_share`] to every connected device (the throttle or the run state changed).
    pub(crate) fn send_shares(&mut self) {
        for device_id in self.connected_devices() {
            self.send_share(&device_id);
        }
    }

    /// The ids of the devices with a connected socket.
    fn connected_devices(&self) -> Vec<String> {
        self.devices
            .values()
            .filter(|d| d.conn.is_some())
            .map(|d| d.record.device_id.clone())
            .collect()
    }
}

/// How much a device computes: at most `workers` leases at once, each worker busy
/// `duty_percent` of the time (after a lease of `t` ms it rests `t × (100 − duty) ÷ duty` ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub workers: u16,
    pub duty_percent: u8,
}

impl Share {
    /// `lent` cores at `throttle` percent: ⌈lent × throttle ÷ 100⌉ workers with the share spread
    /// evenly over them, never more than asked (2 cores at 10 % is one worker busy 20 % of the
    /// time; 3 cores at 50 %, two workers at 75 %).
    pub fn of(lent: u16, throttle: u8) -> Self {
        // In hundredths of a core.
        let capacity = u32::from(lent).saturating_mul(u32::from(throttle.min(100)));
        let workers = capacity.div_ceil(100);
        let duty = capacity.checked_div(workers).unwrap_or(100);
        Self {
            workers: u16::try_from(workers).unwrap_or(u16::MAX),
            duty_percent: u8::try_from(duty).unwrap_or(100),
        }
    }
}
#[cfg(test)]
mod tests {
    use super::Share;

    fn share(lent: u16, throttle: u8) -> (u16, u8) {
        let s = Share::of(lent, throttle);
        (s.workers, s.duty_percent)
    }

    #[test]
    fn a_share_is_the_lent_cores_times_the_throttle_in_as_few_workers_as_fit() {
        assert_eq!(share(2, 100), (2, 100));
        assert_eq!(share(2, 50), (1, 100));
        assert_eq!(share(2, 10), (1, 20), "below one worker: duty-cycled");
        assert_eq!(share(1, 5), (1, 5));
        assert_eq!(share(3, 50), (2, 75));
        assert_eq!(share(4, 30), (2, 60));
        assert_eq!(share(7, 33), (3, 77), "never more than asked (2.31 cores)");
        assert_eq!(share(0, 100), (0, 100));
        assert_eq!(share(8, 0), (0, 100));
        assert_eq!(share(1024, 100), (1024, 100));
        assert_eq!(
            share(2, 255),
            (2, 100),
            "a throttle over 100 % counts as 100 %"
        );
        for lent in 0..=64 {
            for throttle in 0..=100 {
                let (workers, duty) = share(lent, throttle);
                let asked = u32::from(lent) * u32::from(throttle);
                let given = u32::from(workers) * u32::from(duty);
                assert!(given <= asked || workers == 0, "{lent} × {throttle} %");
                assert!(
                    asked - given.min(asked) < u32::from(workers.max(1)),
                    "{lent} × {throttle} %: gives {given} of {asked}"
                );
                assert!((1..=100).contains(&duty));
            }
        }
    }
}
