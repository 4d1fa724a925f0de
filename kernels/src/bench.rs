//! The known-answer benchmark a device runs when it connects.
//!
//! The coordinator picks one of [`BENCH_RANGES`] ranges of [`BENCH_SPAN`] integers starting at
//! [`BENCH_BASE`] and leases "count the primes in it" to the device. The answer is checked
//! against [`BENCH_COUNTS`], and the device's measured rate on it seeds its weight. One range
//! takes about 15 ms on one desktop core natively and some 100 ms on a phone: long enough to
//! measure, short enough not to delay the first real chunk.

use crate::primes::count_primes;

/// The first integer of the first benchmark range.
pub const BENCH_BASE: u64 = 1_000_000_000;

/// Integers per benchmark range.
pub const BENCH_SPAN: u64 = 1 << 25;

/// How many benchmark ranges there are.
pub const BENCH_RANGES: usize = 16;

/// `BENCH_COUNTS[i]` is the number of primes in `[BENCH_BASE + i·BENCH_SPAN, BENCH_BASE +
/// (i+1)·BENCH_SPAN)`; a test recomputes every entry with the sieve.
pub const BENCH_COUNTS: [u64; BENCH_RANGES] = [
    1_617_948, 1_615_292, 1_613_404, 1_610_109, 1_608_074, 1_605_715, 1_603_507, 1_602_171,
    1_599_582, 1_597_927, 1_596_420, 1_593_592, 1_592_128, 1_590_215, 1_589_693, 1_587_191,
];

/// Benchmark numbers per millisecond of a *reference core*, the unit device speeds are given
/// in (a current desktop core natively is about 1.2 reference cores).
pub const BENCH_REFERENCE_RATE: f64 = 2_000_000.0;

/// The speed, in reference cores, of a worker that counted a benchmark range of `units`
/// numbers in `compute_ms` milliseconds.
pub fn speed_factor(units: u64, compute_ms: u64) -> f64 {
    units as f64 / compute_ms.max(1) as f64 / BENCH_REFERENCE_RATE
}

/// Benchmark range `index` (modulo [`BENCH_RANGES`]) as `(lo, hi, expected count)`.
// Reduced modulo BENCH_RANGES, `index` is within BENCH_COUNTS and hi is below 2^31.
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
pub fn bench_range(index: usize) -> (u64, u64, u64) {
    let index = index % BENCH_RANGES;
    let lo = BENCH_BASE + index as u64 * BENCH_SPAN;
    (lo, lo + BENCH_SPAN, BENCH_COUNTS[index])
}

/// Recounts a benchmark range with the sieve (what the table was made from).
pub fn recount(index: usize) -> u64 {
    let (lo, hi, _) = bench_range(index);
    count_primes(lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_answer_matches_the_sieve() {
        for (index, &count) in BENCH_COUNTS.iter().enumerate() {
            assert_eq!(recount(index), count, "range {index}");
        }
    }

    #[test]
    fn ranges_are_adjacent_and_wrap_around() {
        assert_eq!(bench_range(0).0, BENCH_BASE);
        assert_eq!(bench_range(1).0, bench_range(0).1);
        assert_eq!(bench_range(BENCH_RANGES), bench_range(0));
    }
}
