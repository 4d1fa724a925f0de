//! The benchmark's unit: a *reference core*. A device's speed is kept as a factor of it, measured
//! on the benchmark lease it gets when it connects: counting the primes of a range the
//! coordinator draws (and counts itself), see the coordinator's `swarm-core/src/bench.rs`.

/// Benchmark numbers per millisecond of a *reference core*, the unit device speeds are given
/// in (a current desktop core natively is about 1.2 reference cores).
pub const BENCH_REFERENCE_RATE: f64 = 2_000_000.0;

/// The speed, in reference cores, of a worker that counted a benchmark range of `units`
/// numbers in `compute_ms` milliseconds.
pub fn speed_factor(units: u64, compute_ms: u64) -> f64 {
    units as f64 / compute_ms.max(1) as f64 / BENCH_REFERENCE_RATE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_core_is_one() {
        assert_eq!(speed_factor(2_000_000, 1), 1.0);
        assert_eq!(
            speed_factor(1 << 22, 0),
            (1u64 << 22) as f64 / BENCH_REFERENCE_RATE
        );
    }
}
