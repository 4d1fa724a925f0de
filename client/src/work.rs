//! What a device shows about its own work: its leases, its benchmark and its speed. Used by
//! the browser's device page and by the native agent; the computing itself is in the
//! `client-compute` crate.

use shared_protocol::Work;

/// The job id of the known-answer benchmark lease a device gets when it connects.
pub const BENCH_JOB_ID: &str = "benchmark";

/// Work units of a lease: numbers, pixels, or nonces.
pub fn units(work: &Work) -> u64 {
    match work {
        Work::PrimeCount { lo, hi } | Work::Sha256Search { lo, hi, .. } => hi.saturating_sub(*lo),
        Work::Mandelbrot { width, rows, .. } => u64::from(*width) * u64::from(*rows),
        Work::Workload { items, .. } => *items,
    }
}

/// What a lease's units are.
pub fn unit(work: &Work) -> &'static str {
    match work {
        Work::PrimeCount { .. } => "numbers",
        Work::Mandelbrot { .. } => "pixels",
        Work::Sha256Search { .. } => "hashes",
        Work::Workload { .. } => "items",
    }
}

/// One line about a lease, for the device page and the agent's output.
pub fn describe(work: &Work) -> String {
    match work {
        Work::PrimeCount { lo, hi } => format!("primes in [{lo}, {hi})"),
        Work::Mandelbrot {
            first_row, rows, ..
        } => format!("Mandelbrot rows {first_row}–{}", first_row + rows),
        Work::Sha256Search { lo, hi, .. } => format!("SHA-256 nonces [{lo}, {hi})"),
        Work::Workload {
            first_item, items, ..
        } => format!(
            "workload items {first_item}–{}",
            first_item.saturating_add(*items)
        ),
    }
}

/// A lease the device holds: its id, whether it is the benchmark, its units, and what it is.
#[derive(Debug, Clone, PartialEq)]
struct Held {
    lease_id: u64,
    bench: bool,
    units: u64,
    unit: &'static str,
    what: String,
}

/// What a device knows about its own work: its benchmark, the leases it holds, how many it
/// finished and how fast.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Its benchmark in reference cores per worker (see `kernels::bench`), once run.
    pub bench_score: Option<f64>,
    /// Job chunks finished (the benchmark not counted).
    pub chunks_done: u64,
    /// Work units per second of the last finished chunk, on one worker...
    pub units_per_second: Option<f64>,
    /// ...and what its units were ("numbers", "pixels", "hashes").
    pub unit: &'static str,
    /// Why the last lease it could not compute failed (a workload's module or upload).
    pub last_error: Option<String>,
    leases: Vec<Held>,
}

impl Tally {
    /// A lease arrived.
    pub fn leased(&mut self, lease_id: u64, job_id: &str, work: &Work) {
        let bench = job_id == BENCH_JOB_ID;
        let what = if bench {
            "benchmark".to_owned()
        } else {
            describe(work)
        };
        self.leases.retain(|held| held.lease_id != lease_id);
        self.leases.push(Held {
            lease_id,
            bench,
            units: units(work),
            unit: unit(work),
            what,
        });
        // A device holds a few leases at a time; a bound keeps a confused stream from piling up.
        if self.leases.len() > 256 {
            self.leases.remove(0);
        }
    }

    /// The oldest lease the device still holds, described (the one its first worker is on).
    pub fn current(&self) -> Option<&str> {
        self.leases.first().map(|held| held.what.as_str())
    }

    /// The coordinator withdrew a lease, or the connection dropped (`None`: all of them).
    pub fn withdrawn(&mut self, lease_id: Option<u64>) {
        self.leases
            .retain(|held| lease_id.is_some_and(|id| id != held.lease_id));
    }

    /// A lease could not be computed (it goes unanswered, to another device).
    pub fn failed(&mut self, lease_id: u64, error: String) {
        self.withdrawn(Some(lease_id));
        self.last_error = Some(error);
    }

    /// A lease's result was sent after `compute_ms` of work.
    pub fn computed(&mut self, lease_id: u64, compute_ms: u64) {
        let Some(at) = self
            .leases
            .iter()
            .position(|held| held.lease_id == lease_id)
        else {
            return;
        };
        let Held {
            bench, units, unit, ..
        } = self.leases.remove(at);
        if bench {
            self.bench_score = Some(kernels::bench::speed_factor(units, compute_ms));
        } else {
            self.chunks_done += 1;
            self.units_per_second = Some(units as f64 * 1000.0 / compute_ms.max(1) as f64);
            self.unit = unit;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_tells_the_benchmark_from_chunks() {
        let mut tally = Tally::default();
        tally.leased(
            7,
            BENCH_JOB_ID,
            &Work::PrimeCount {
                lo: 0,
                hi: 4_000_000,
            },
        );
        assert_eq!(tally.current(), Some("benchmark"));
        tally.computed(7, 2);
        assert_eq!(tally.bench_score, Some(1.0));
        assert_eq!(tally.chunks_done, 0);
        assert_eq!(tally.current(), None, "nothing held, nothing shown");
        tally.leased(8, "job", &Work::PrimeCount { lo: 0, hi: 1000 });
        tally.leased(9, "job", &Work::PrimeCount { lo: 1000, hi: 2000 });
        assert_eq!(tally.current(), Some("primes in [0, 1000)"));
        tally.computed(8, 4);
        tally.computed(8, 4);
        assert_eq!(tally.chunks_done, 1);
        assert_eq!(tally.units_per_second, Some(250_000.0));
        assert_eq!(tally.unit, "numbers");
        assert_eq!(tally.current(), Some("primes in [1000, 2000)"));
        tally.leased(10, "job", &Work::PrimeCount { lo: 2000, hi: 3000 });
        tally.withdrawn(Some(9));
        assert_eq!(tally.current(), Some("primes in [2000, 3000)"));
        tally.withdrawn(None);
        assert_eq!(
            tally.current(),
            None,
            "a dropped connection withdraws everything"
        );
        tally.leased(11, "job", &Work::PrimeCount { lo: 0, hi: 10 });
        tally.failed(11, "no module".into());
        assert_eq!(tally.current(), None);
        assert_eq!(tally.last_error.as_deref(), Some("no module"));
        assert_eq!(tally.chunks_done, 1, "a failed lease is not a chunk done");
    }
}
