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
//! Progress is stored as parts ([`PartRecord`]: who returned which units, and what they added),
//! one row per accepted result, and rebuilt from them after a restart; the job's row is written
//! only when its state changes. A device caught lying later has every part it returned taken
//! back out, whether it was accepted before or after a restart.

use std::collections::BTreeMap;

use shared_protocol::{
    close_code, ErrorCode, JobSpec, JobState, JobView, LogLevel, OwnerReply, RunState, ToClient,
    WorkResult,
};

use crate::core::{short, Refusal, SwarmCore};
use crate::kinds::{self, reference_rate, Checked};
use crate::records::{HeldLease, JobRecord, PartRecord, StoreOp, MAX_ATTACHED_LEASES};
use crate::sched::{Completion, Lease, LeaseId, SchedConfig, Scheduler};
use crate::{ConnId, Millis};

/// The speed factor of a device that has not been measured (see [`crate::kinds`]): a slow
/// phone's, so that its first chunk is small and the rate adapts from the first result.
pub const UNMEASURED_SPEED: f64 = 0.1;

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
    /// What each device contributed to the job: `(lo, hi, part)`, so that the parts of a
    /// device quarantined later can be taken out again. (Without pixels: those are in storage,
    /// by first row `lo`.) The same as the job's stored parts.
    parts: BTreeMap<String, Vec<(u64, u64, Checked)>>,
}

impl Active {
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
        let mut restored: BTreeMap<String, Vec<(u64, u64, Checked)>> = BTreeMap::new();
        if let Some(job) = self.jobs.jobs.get_mut(&job_id) {
            let mine: Vec<PartRecord> = parts.into_iter().filter(|p| p.job_id == job_id).collect();
            // Rows written before parts were stored keep their merged progress.
            if !mine.is_empty() {
                job.result = kinds::empty_result(&job.spec);
                job.done_units = 0;
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
                restored
                    .entry(part.device_id)
                    .or_default()
                    .push((part.lo, part.hi, checked));
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
            finished_ms: None,
            done_units: 0,
            done_ranges: Vec::new(),
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
        if let Some(active) = self.jobs.active.as_mut() {
            let rate = active.rate_of(speed);
            active.sched.set_device(device_id, workers, rate);
            active.sched.set_enabled(device_id, enabled);
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
        let online: Vec<String> = self
            .devices
            .values()
            .filter(|d| d.conn.is_some())
            .map(|d| d.record.device_id.clone())
            .collect();
        for device_id in online {
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

    /// Hands out leases while the swarm runs.
    pub(crate) fn dispatch(&mut self, now: Millis) {
        let running = self
            .meta
            .as_ref()
            .is_some_and(|m| m.run_state == RunState::Running);
        let Some(active) = self.jobs.active.as_mut().filter(|_| running) else {
            return;
        };
        let leases = active.sched.poll_leases(now);
        let messages: Vec<(String, ToClient)> = leases
            .into_iter()
            .map(|lease| {
                let message = ToClient::Lease {
                    lease_id: active.wire_id(lease.id),
                    job_id: active.job_id.clone(),
                    work: active.spec.work(lease.lo, lease.hi),
                    deadline_ms: lease.deadline_ms,
                };
                (lease.device, message)
            })
            .collect();
        for (device, message) in messages {
            if let Some(conn) = self.conn_of(&device) {
                self.send(conn, &message);
            }
            self.touch_leases(&device);
        }
    }

    /// On each alarm: leases past their deadline go back to the queue (their holders are told
    /// to stop), then the freed work is handed out again.
    pub(crate) fn expire_leases(&mut self, now: Millis) {
        if let Some(active) = self.jobs.active.as_mut() {
            let expired = active.sched.expire(now);
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
            self.cancel_leases(&expired);
        }
        self.dispatch(now);
    }

    pub(crate) fn handle_chunk_result(
        &mut self,
        now: Millis,
        conn: ConnId,
        device_id: &str,
        wire_id: u64,
        result: WorkResult,
        compute_ms: Millis,
    ) {
        if wire_id >> EPOCH_SHIFT == 0 {
            let answer = crate::bench::known_answer(&result);
            if !self.handle_check_result(now, conn, device_id, wire_id, answer) {
                self.handle_bench_result(now, conn, device_id, wire_id, answer, compute_ms);
            }
            return;
        }
        let Some(active) = self.jobs.active.as_mut() else {
            return;
        };
        // A late result of an earlier activation, an expired or cancelled lease, or a repeat:
        // nothing to do.
        let Some(lease_id) = active.own_id(wire_id) else {
            return;
        };
        let Some(lease) = active.sched.lease(lease_id).cloned() else {
            return;
        };
        if lease.device != device_id {
            let refusal =
                Refusal::new(ErrorCode::Forbidden, "this lease belongs to another device");
            return self.reject(now, conn, refusal, None);
        }
        let checked = match kinds::check(&active.spec, lease.lo, lease.hi, result, &mut self.rng) {
            Ok(checked) => checked,
            Err(why) => return self.refuse_result(now, conn, device_id, &why),
        };
        let Some(active) = self.jobs.active.as_mut() else {
            return;
        };
        let job_id = active.job_id.clone();
        let completion = active.sched.complete(now, device_id, lease_id, compute_ms);
        let mut finished = active.sched.is_finished();
        self.touch_leases(device_id);
        let Completion::Accepted { lo, hi, cancelled } = completion else {
            return;
        };
        self.cancel_leases(&cancelled);
        let chunks = self
            .jobs
            .chunks_done
            .entry(device_id.to_owned())
            .or_default();
        *chunks = chunks.saturating_add(1);
        self.accept_part(now, device_id, &job_id, (lo, hi), checked, &mut finished);
        if !finished {
            self.maybe_spot_check(now, device_id);
        }
        if finished {
            self.finish_active();
            self.start_next_job(now);
        }
        self.dispatch(now);
    }

    /// Merges a device's accepted part into its job, stores it (the part, not the job row),
    /// remembers it (without its pixels) in case the device is quarantined later, and marks the
    /// job done when it is: then the job row takes the merged result and the parts are deleted.
    fn accept_part(
        &mut self,
        now: Millis,
        device_id: &str,
        job_id: &str,
        (lo, hi): (u64, u64),
        mut checked: Checked,
        finished: &mut bool,
    ) {
        let Some(job) = self.jobs.jobs.get_mut(job_id) else {
            return;
        };
        kinds::merge(&mut job.result, &checked);
        job.add_done(lo, hi);
        *finished |= kinds::satisfied(&job.spec, &job.result, &job.done_ranges);
        if *finished {
            kinds::finish(&job.spec, &mut job.result);
            job.state = JobState::Done;
            job.finished_ms = Some(now);
        }
        let record = job.clone();
        // The pixels are written before the part that counts them as done. A Mandelbrot
        // job's units are its rows, so the band starts at row `lo`.
        if let Some(counts) = checked.pixels.take() {
            self.persist(StoreOp::PutPixels {
                job_id: job_id.to_owned(),
                first_row: u32::try_from(lo).unwrap_or(u32::MAX),
                counts,
            });
        }
        if *finished {
            self.persist(StoreOp::PutJob(record.clone()));
            self.persist(StoreOp::DeleteParts {
                job_id: job_id.to_owned(),
            });
        } else {
            self.persist(StoreOp::PutPart(PartRecord {
                job_id: job_id.to_owned(),
                device_id: device_id.to_owned(),
                lo,
                hi,
                result: checked.result.clone(),
                inside: checked.inside,
            }));
        }
        if let Some(active) = self.jobs.active.as_mut() {
            let parts = active.parts.entry(device_id.to_owned()).or_default();
            parts.push((lo, hi, checked));
        }
        if *finished {
            let took = now.saturating_sub(record.created_ms) as f64 / 1000.0;
            let text = format!(
                "job {} done in {took:.1} s: {}",
                short(job_id),
                kinds::describe_result(&record.result)
            );
            self.log(now, LogLevel::Info, text);
        }
    }

    /// A result that failed its check: nothing of it is kept, the device is quarantined
    /// (disabled until the owner enables it again), told why and disconnected, and its leases
    /// go back to the queue.
    pub(crate) fn refuse_result(&mut self, now: Millis, conn: ConnId, device_id: &str, why: &str) {
        let mut name = String::new();
        if let Some(device) = self.devices.get_mut(device_id) {
            device.record.enabled = false;
            device.record.quarantined = true;
            name.clone_from(&device.record.name);
            let record = device.record.clone();
            self.persist(StoreOp::PutDevice(record));
        }
        self.security(
            now,
            "wrong result",
            format!(
                "device '{name}' returned a wrong result ({why}); quarantined until the owner enables it"
            ),
        );
        self.send(
            conn,
            &ToClient::Error {
                code: ErrorCode::BadResult,
                message: format!("result refused: {why}"),
                request: None,
                retry_after_ms: None,
            },
        );
        self.discard_parts(now, device_id);
        self.close(now, conn, close_code::BAD_RESULT, "wrong result");
    }

    /// Takes a quarantined device's accepted parts of the running job back out: out of the
    /// merged result, the done ranges and the stored pixels, and back into the queue.
    fn discard_parts(&mut self, now: Millis, device_id: &str) {
        let Some(active) = self.jobs.active.as_mut() else {
            return;
        };
        let parts = active.parts.remove(device_id).unwrap_or_default();
        let redone: Vec<(u64, u64, Checked)> = parts
            .into_iter()
            .filter(|(lo, hi, _)| active.sched.redo(*lo, *hi))
            .collect();
        let job_id = active.job_id.clone();
        let image = matches!(active.spec, JobSpec::Mandelbrot { .. });
        let Some(job) = self
            .jobs
            .jobs
            .get_mut(&job_id)
            .filter(|_| !redone.is_empty())
        else {
            return;
        };
        for (lo, hi, part) in &redone {
            kinds::unmerge(&mut job.result, part);
            job.remove_done(*lo, *hi);
        }
        for (lo, _, _) in &redone {
            if image {
                self.persist(StoreOp::DeletePixels {
                    job_id: job_id.clone(),
                    first_row: u32::try_from(*lo).unwrap_or(u32::MAX),
                });
            }
            self.persist(StoreOp::DeletePart {
                job_id: job_id.clone(),
                lo: *lo,
            });
        }
        self.log(
            now,
            LogLevel::Warn,
            format!(
                "{} chunk(s) of job {} from that device were discarded and will be computed again",
                redone.len(),
                short(&job_id)
            ),
        );
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

    pub fn job(&self, job_id: &str) -> Option<JobView> {
        self.jobs.jobs.get(job_id).map(|j| self.job_view(j))
    }

    fn job_view(&self, job: &JobRecord) -> JobView {
        let per_ms = match &self.jobs.active {
            Some(active) if active.job_id == job.job_id => active.sched.throughput(),
            _ => 0.0,
        };
        let total = job.spec.units();
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
            finished_ms: job.finished_ms,
            result: job.result.clone(),
        }
    }

    fn start_next_job(&mut self, now: Millis) {
        if let Some(job_id) = self.jobs.queued_first() {
            if let Some(job) = self.jobs.jobs.get_mut(&job_id) {
                job.state = JobState::Running;
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
        parts: BTreeMap<String, Vec<(u64, u64, Checked)>>,
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
            ..SchedConfig::default()
        });
        sched.add_work(spec.units());
        if parts.is_empty() {
            for (lo, hi) in &job.done_ranges {
                sched.mark_done(*lo, *hi);
            }
        }
        // Each part is marked on its own, so that it can be redone if its device is caught.
        for (lo, hi, _) in parts.values().flatten() {
            sched.mark_done(*lo, *hi);
        }
        self.jobs.active = Some(Active {
            job_id,
            spec,
            sched,
            epoch,
            wire_of: BTreeMap::new(),
            restored: BTreeMap::new(),
            parts,
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

    /// The running job's id and range, when it is a prime count.
    pub(crate) fn running_prime_count(&self) -> Option<(String, u64, u64)> {
        match self.jobs.active.as_ref()? {
            Active {
                job_id,
                spec: JobSpec::PrimeCount { lo, hi },
                ..
            } => Some((job_id.clone(), *lo, *hi)),
            _ => None,
        }
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

    /// Workers a device lends: the cores it lends (all unless it said otherwise) scaled by the
    /// swarm throttle (at least one while both are above zero).
    fn workers_of(&self, device_id: &str) -> u32 {
        let lend = self.link_of(device_id).and_then(|link| link.lend);
        let cores = self.devices.get(device_id).map_or(0, |d| {
            let cores = d.record.capabilities.cores;
            u32::from(lend.map_or(cores, |lend| lend.min(cores)))
        });
        let throttle = self
            .meta
            .as_ref()
            .map_or(100, |m| u32::from(m.throttle_percent));
        if throttle == 0 || cores == 0 {
            0
        } else {
            (cores.saturating_mul(throttle) / 100).max(1)
        }
    }
}
