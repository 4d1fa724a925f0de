//! Jobs on the wire: what the owner submits, what a device is leased, what it returns, and
//! what dashboards see.

use serde::{Deserialize, Serialize};

/// The largest end of a prime-count range (the kernels' sieve limit).
pub const MAX_PRIME_END: u64 = 1 << 48;

/// A job the owner submits. Checked by [`valid_job`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobSpec {
    /// Count the primes p with `lo <= p < hi`; `lo < hi <= 2^48`.
    PrimeCount { lo: u64, hi: u64 },
}

/// The rule of a [`JobSpec`] (a garde custom validator).
pub fn valid_job(spec: &JobSpec, _ctx: &()) -> garde::Result {
    match spec {
        JobSpec::PrimeCount { lo, hi } if lo >= hi => {
            Err(garde::Error::new("hi must be greater than lo"))
        }
        JobSpec::PrimeCount { hi, .. } if *hi > MAX_PRIME_END => Err(garde::Error::new(format!(
            "hi must be at most {MAX_PRIME_END}"
        ))),
        JobSpec::PrimeCount { .. } => Ok(()),
    }
}

impl JobSpec {
    /// The job's size in work units of roughly equal cost (numbers to sieve).
    pub fn units(&self) -> u64 {
        match self {
            JobSpec::PrimeCount { lo, hi } => hi - lo,
        }
    }

    /// The work of units `[from, to)` of this job.
    pub fn work(&self, from: u64, to: u64) -> Work {
        match self {
            JobSpec::PrimeCount { lo, .. } => Work::PrimeCount {
                lo: lo + from,
                hi: lo + to,
            },
        }
    }
}

/// A leased piece of a job, to compute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Work {
    /// Count the primes in `[lo, hi)`.
    PrimeCount { lo: u64, hi: u64 },
}

/// A device's answer to a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WorkResult {
    PrimeCount { count: u64 },
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for the jobs before it.
    Queued,
    Running,
    Done,
    Cancelled,
}

/// A job's merged result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobResult {
    PrimeCount { count: u64 },
}

/// A job as dashboards and the results endpoint show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobView {
    pub job_id: String,
    pub spec: JobSpec,
    pub state: JobState,
    pub done_units: u64,
    pub total_units: u64,
    /// The swarm's measured rate on this job, units per second (0 when idle).
    pub units_per_second: f64,
    /// Estimated time to completion at that rate.
    pub eta_ms: Option<u64>,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
    /// The merged result so far (partial while running; final when done).
    pub result: JobResult,
}
