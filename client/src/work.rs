//! Running leased work with the shared kernels, and what a device shows about its own work.
//! Used by the browser's Web Workers (through `compute`) and by the native agent.

use kernels::mandelbrot::{render_tile, Tile, View};
use shared_protocol::{encode_counts, Work, WorkResult};

/// The job id of the known-answer benchmark lease a device gets when it connects.
pub const BENCH_JOB_ID: &str = "benchmark";

/// Computes a lease, or says why it cannot be computed.
pub fn compute(work: &Work) -> Result<WorkResult, String> {
    match work {
        Work::PrimeCount { lo, hi } => kernels::primes::try_count_primes(*lo, *hi)
            .map(|count| WorkResult::PrimeCount { count })
            .map_err(|err| err.to_string()),
        Work::Mandelbrot {
            center_re,
            center_im,
            scale,
            width,
            height,
            max_iter,
            first_row,
            rows,
        } => {
            if u64::from(*width) * u64::from(*rows) > 4 * shared_protocol::MAX_CHUNK_PIXELS {
                return Err("band too large".into());
            }
            let view = View {
                center_re: *center_re,
                center_im: *center_im,
                scale: *scale,
                width: *width,
                height: *height,
                max_iter: *max_iter,
            };
            let tile = Tile {
                x: 0,
                y: *first_row,
                width: *width,
                height: *rows,
            };
            Ok(WorkResult::Mandelbrot {
                counts: encode_counts(&render_tile(&view, &tile)),
            })
        }
        Work::Sha256Search {
            prefix,
            difficulty_bits,
            lo,
            hi,
            max_found,
        } => Ok(WorkResult::Sha256Search {
            nonces: kernels::sha256::search(
                prefix.as_bytes(),
                *difficulty_bits,
                *lo,
                *hi,
                *max_found as usize,
            ),
        }),
    }
}

/// Work units of a lease: numbers, pixels, or nonces.
pub fn units(work: &Work) -> u64 {
    match work {
        Work::PrimeCount { lo, hi } | Work::Sha256Search { lo, hi, .. } => hi.saturating_sub(*lo),
        Work::Mandelbrot { width, rows, .. } => u64::from(*width) * u64::from(*rows),
    }
}

/// What a lease's units are.
pub fn unit(work: &Work) -> &'static str {
    match work {
        Work::PrimeCount { .. } => "numbers",
        Work::Mandelbrot { .. } => "pixels",
        Work::Sha256Search { .. } => "hashes",
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
    use shared_protocol::decode_counts;

    #[test]
    fn every_kind_of_work_is_computed_with_the_kernels() {
        assert_eq!(
            compute(&Work::PrimeCount { lo: 0, hi: 100 }),
            Ok(WorkResult::PrimeCount { count: 25 })
        );
        let band = Work::Mandelbrot {
            center_re: -0.5,
            center_im: 0.0,
            scale: 3.0,
            width: 40,
            height: 30,
            max_iter: 200,
            first_row: 14,
            rows: 2,
        };
        let Ok(WorkResult::Mandelbrot { counts }) = compute(&band) else {
            panic!("no counts")
        };
        let counts = decode_counts(&counts).unwrap();
        assert_eq!(counts.len(), 80);
        // The middle rows cross the set: some pixels are inside, some escape at once.
        assert!(counts.contains(&200) && counts.iter().any(|&c| c < 3));
        let search = Work::Sha256Search {
            prefix: "ostrich".into(),
            difficulty_bits: 8,
            lo: 0,
            hi: 5000,
            max_found: 3,
        };
        let Ok(WorkResult::Sha256Search { nonces }) = compute(&search) else {
            panic!("no nonces")
        };
        assert_eq!(nonces.len(), 3);
        assert!(nonces
            .iter()
            .all(|&n| kernels::sha256::meets_target(b"ostrich", n, 8)));
        assert!(compute(&Work::PrimeCount { lo: 0, hi: 1 << 60 }).is_err());
    }

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
    }
}
