//! Jobs in the swarm: the queue, the running job's [`Scheduler`], leases sent to devices,
//! results merged as they are accepted, and progress for the snapshots. One job runs at a time;
//! the others wait in submission order.

use std::collections::BTreeMap;

use shared_protocol::{
    JobResult, JobSpec, JobState, JobView, LogLevel, OwnerReply, RunState, ToClient, WorkResult,
};

use crate::core::{short, Refusal, SwarmCore};
use crate::records::{JobRecord, StoreOp};
use crate::sched::{Completion, Lease, LeaseId, SchedConfig, Scheduler};
use crate::{ConnId, Millis};

/// Units per millisecond per worker assumed for a device never measured: a prime sieve does
/// about 10⁶ on one desktop core, so this first chunk is small everywhere and the rate adapts
/// from the first result.
pub const RATE_HINT: f64 = 100_000.0;

/// Jobs kept in snapshots.
const JOBS_IN_SNAPSHOT: usize = 20;

#[derive(Debug, Default)]
pub(crate) struct JobBoard {
    pub(crate) jobs: BTreeMap<String, JobRecord>,
    /// The running job and its scheduler.
    active: Option<(String, Scheduler)>,
    /// Measured rates (units per ms per worker) that outlive a job's scheduler.
    rates: BTreeMap<String, f64>,
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
    /// Jobs restored from storage: a job that was running resumes where its stored progress
    /// ends.
    pub(crate) fn restore_jobs(&mut self, now: Millis, jobs: Vec<crate::records::JobRecord>) {
        let running = jobs
            .iter()
            .find(|j| j.state == JobState::Running)
            .map(|j| j.job_id.clone());
        self.jobs.jobs = jobs.into_iter().map(|j| (j.job_id.clone(), j)).collect();
        if let Some(job_id) = running {
            self.activate(now, job_id);
        }
    }

    pub(crate) fn submit_job(&mut self, now: Millis, spec: JobSpec) -> OwnerReply {
        let job_id = self.rng.id();
        let record = JobRecord {
            job_id: job_id.clone(),
            result: empty_result(&spec),
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
                describe(&record.spec)
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
        job.state = JobState::Cancelled;
        job.finished_ms = Some(now);
        let record = job.clone();
        self.persist(StoreOp::PutJob(record));
        self.log(
            now,
            LogLevel::Info,
            format!("job {} cancelled", short(job_id)),
        );
        if self
            .jobs
            .active
            .as_ref()
            .is_some_and(|(id, _)| id == job_id)
        {
            if let Some((_, mut sched)) = self.jobs.active.take() {
                self.remember_rates(&sched);
                let withdrawn = sched.withdraw_all();
                self.cancel_leases(&withdrawn);
            }
            self.start_next_job(now);
        }
        Ok(OwnerReply::Done {})
    }

    /// A device is connected and may compute: it joins the running job's scheduler.
    pub(crate) fn device_available(&mut self, device_id: &str) {
        let workers = self.workers_of(device_id);
        let rate = self.jobs.rates.get(device_id).copied().unwrap_or(RATE_HINT);
        let enabled = self
            .devices
            .get(device_id)
            .is_some_and(|d| d.record.enabled);
        if let Some((_, sched)) = self.jobs.active.as_mut() {
            sched.set_device(device_id, workers, rate);
            sched.set_enabled(device_id, enabled);
        }
    }

    /// A device left (disconnect, OFFLINE, removal): its leases go back to the queue.
    pub(crate) fn device_gone(&mut self, device_id: &str) {
        if let Some((_, sched)) = self.jobs.active.as_mut() {
            if let Some(rate) = sched.rate(device_id) {
                self.jobs.rates.insert(device_id.to_owned(), rate);
            }
            sched.remove_device(device_id);
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
            if let Some((_, sched)) = self.jobs.active.as_mut() {
                let withdrawn = sched.withdraw_all();
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
        let Some((job_id, sched)) = self.jobs.active.as_mut().filter(|_| running) else {
            return;
        };
        let job_id = job_id.clone();
        let leases = sched.poll_leases(now);
        let Some(spec) = self.jobs.jobs.get(&job_id).map(|j| j.spec.clone()) else {
            return;
        };
        for lease in leases {
            let Some(conn) = self.conn_of(&lease.device) else {
                continue;
            };
            let message = ToClient::Lease {
                lease_id: lease.id,
                job_id: job_id.clone(),
                work: spec.work(lease.lo, lease.hi),
                deadline_ms: lease.deadline_ms,
            };
            self.send(conn, &message);
        }
    }

    /// On each alarm: leases past their deadline go back to the queue (their holders are told
    /// to stop), then the freed work is handed out again.
    pub(crate) fn expire_leases(&mut self, now: Millis) {
        if let Some((_, sched)) = self.jobs.active.as_mut() {
            let expired = sched.expire(now);
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
        lease_id: LeaseId,
        result: WorkResult,
        compute_ms: Millis,
    ) {
        let Some((job_id, sched)) = self.jobs.active.as_mut() else {
            return;
        };
        let job_id = job_id.clone();
        match sched.complete(now, device_id, lease_id, compute_ms) {
            Completion::Accepted { lo, hi, cancelled } => {
                let finished = sched.is_finished();
                self.cancel_leases(&cancelled);
                let Some(job) = self.jobs.jobs.get_mut(&job_id) else {
                    return;
                };
                merge(&mut job.result, &result);
                job.add_done(lo, hi);
                if finished {
                    job.state = JobState::Done;
                    job.finished_ms = Some(now);
                }
                let record = job.clone();
                self.persist(StoreOp::PutJob(record.clone()));
                if finished {
                    let took = now.saturating_sub(record.created_ms) as f64 / 1000.0;
                    let text = format!(
                        "job {} done in {took:.1} s: {}",
                        short(&job_id),
                        describe_result(&record.result)
                    );
                    self.log(now, LogLevel::Info, text);
                    if let Some((_, sched)) = self.jobs.active.take() {
                        self.remember_rates(&sched);
                    }
                    self.start_next_job(now);
                }
                self.dispatch(now);
            }
            Completion::NotHolder => {
                let refusal = Refusal::new(
                    shared_protocol::ErrorCode::Forbidden,
                    "this lease belongs to another device",
                );
                self.reject(now, conn, refusal, None);
            }
            // A late result for an expired or cancelled lease, or a repeat: nothing to do.
            Completion::Unknown | Completion::Duplicate => {}
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

    pub fn job(&self, job_id: &str) -> Option<JobView> {
        self.jobs.jobs.get(job_id).map(|j| self.job_view(j))
    }

    fn job_view(&self, job: &JobRecord) -> JobView {
        let per_ms = match &self.jobs.active {
            Some((id, sched)) if *id == job.job_id => sched.throughput(),
            _ => 0.0,
        };
        let total = job.spec.units();
        let eta_ms = (per_ms > 0.0 && job.state == JobState::Running)
            .then(|| ((total - job.done_units) as f64 / per_ms) as u64);
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
            self.activate(now, job_id);
        }
    }

    /// Builds the scheduler of a running job from its stored progress and the devices online.
    fn activate(&mut self, now: Millis, job_id: String) {
        let Some(job) = self.jobs.jobs.get(&job_id) else {
            return;
        };
        let mut sched = Scheduler::new(SchedConfig::default());
        sched.add_work(job.spec.units());
        for (lo, hi) in &job.done_ranges {
            sched.mark_done(*lo, *hi);
        }
        self.jobs.active = Some((job_id, sched));
        self.capacity_changed(now);
    }

    fn remember_rates(&mut self, sched: &Scheduler) {
        let known: Vec<String> = self.devices.keys().cloned().collect();
        for device_id in known {
            if let Some(rate) = sched.rate(&device_id) {
                self.jobs.rates.insert(device_id, rate);
            }
        }
    }

    fn cancel_leases(&mut self, leases: &[Lease]) {
        for lease in leases {
            if let Some(conn) = self.conn_of(&lease.device) {
                self.send(conn, &ToClient::CancelLease { lease_id: lease.id });
            }
        }
    }

    fn conn_of(&self, device_id: &str) -> Option<ConnId> {
        self.devices.get(device_id).and_then(|d| d.conn)
    }

    /// Workers a device lends: the cores it lends (all unless it said otherwise) scaled by the
    /// swarm throttle (at least one while both are above zero).
    fn workers_of(&self, device_id: &str) -> u32 {
        let cores = self.devices.get(device_id).map_or(0, |d| {
            let cores = d.record.capabilities.cores;
            u32::from(d.lend.map_or(cores, |lend| lend.min(cores)))
        });
        let throttle = self
            .meta
            .as_ref()
            .map_or(100, |m| u32::from(m.throttle_percent));
        if throttle == 0 || cores == 0 {
            0
        } else {
            (cores * throttle / 100).max(1)
        }
    }
}

fn empty_result(spec: &JobSpec) -> JobResult {
    match spec {
        JobSpec::PrimeCount { .. } => JobResult::PrimeCount { count: 0 },
    }
}

fn merge(total: &mut JobResult, part: &WorkResult) {
    match (total, part) {
        (JobResult::PrimeCount { count }, WorkResult::PrimeCount { count: more }) => *count += more,
    }
}

fn describe(spec: &JobSpec) -> String {
    match spec {
        JobSpec::PrimeCount { lo, hi } => format!("count primes in [{lo}, {hi})"),
    }
}

fn describe_result(result: &JobResult) -> String {
    match result {
        JobResult::PrimeCount { count } => format!("{count} primes"),
    }
}
