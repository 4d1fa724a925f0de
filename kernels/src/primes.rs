//! Prime counting over half-open ranges `[lo, hi)` with a segmented sieve of Eratosthenes.
//!
//! The sieve keeps one bit per odd number in a 32 KiB segment (262,144 odd numbers, a span of
//! 524,288 integers), so the working set stays in the L1/L2 cache of a browser or native core.
//! Every segment starts from a copy of a precomputed pattern that already has the multiples of
//! 3, 5, 7 and 11 struck out; the remaining base primes (up to `sqrt(hi)`) are crossed off one by
//! one and the survivors are counted with `count_ones`.
//!
//! Counts over adjacent ranges add up exactly, which is how the swarm splits a job:
//! `count_primes(a, b) + count_primes(b, c) == count_primes(a, c)`.

use std::fmt;

/// The largest range end `hi` that [`count_primes`] accepts (2^48, about 2.8 × 10^14).
///
/// The sieve holds every prime up to `sqrt(hi)`; at this bound that is about 1.08 million
/// primes, and a call briefly needs about 26 MiB, which still fits a browser worker.
pub const MAX_PRIME_RANGE_END: u64 = 1 << 48;

/// Why [`try_count_primes`] refused a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrimeRangeError {
    /// `hi` is above [`MAX_PRIME_RANGE_END`].
    EndTooLarge { hi: u64 },
}

impl fmt::Display for PrimeRangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EndTooLarge { hi } => write!(
                f,
                "range end {hi} is above the largest supported end {MAX_PRIME_RANGE_END}"
            ),
        }
    }
}

impl std::error::Error for PrimeRangeError {}

/// Bytes of sieve bitset per segment.
const SEGMENT_BYTES: usize = 32 * 1024;
/// 64-bit words per segment.
const SEGMENT_WORDS: usize = SEGMENT_BYTES / 8;
/// Odd numbers per segment (one bit each).
const SEGMENT_BITS: usize = SEGMENT_WORDS * 64;

/// The primes whose multiples are struck out by copying [`presieve_pattern`] instead of being
/// crossed off one at a time.
const PRESIEVED_PRIMES: [u64; 4] = [3, 5, 7, 11];
/// The product of [`PRESIEVED_PRIMES`]: the pattern repeats every this many odd numbers, so a
/// pattern of this many 64-bit words repeats at word granularity.
const PRESIEVE_PERIOD: usize = 3 * 5 * 7 * 11;
/// [`PRESIEVE_PERIOD`] as a `u64`, to reduce word indices with.
const PRESIEVE_PERIOD_WORDS: u64 = PRESIEVE_PERIOD as u64;

/// Counts the primes `p` with `lo <= p < hi`.
///
/// Returns 0 when `lo >= hi`.
///
/// Measured on one core of the 2-core AMD EPYC dev machine, built with the workspace's release
/// profile (`opt-level = "z"`): π(10^9) in 0.4–0.5 s (about 2 × 10^9 integers per second),
/// about 1.1 × 10^9 integers/s for ranges near 10^12 and 0.45 × 10^9 near 10^14, where there are
/// more sieving primes. The same code as WASM under Node 20 (V8, after warm-up) ran at about
/// 2 × 10^9 integers/s below 10^9 and 0.9 × 10^9 near 10^12. Each call first sieves the primes
/// up to `sqrt(hi)`: about 4 ms for a call near 10^12, so chunks should be much longer than that.
///
/// # Panics
///
/// Panics when `hi` is above [`MAX_PRIME_RANGE_END`]; use [`try_count_primes`] to get an error
/// instead.
// The documented panic of this convenience form: callers pass ends checked against the job
// limit (`shared_protocol::MAX_PRIME_END`, the same 2^48); anything else should call the `try_`
// form.
#[allow(clippy::panic)]
pub fn count_primes(lo: u64, hi: u64) -> u64 {
    match try_count_primes(lo, hi) {
        Ok(count) => count,
        Err(error) => panic!("{error}"),
    }
}

/// Counts the primes `p` with `lo <= p < hi`, or says why the range is not supported.
pub fn try_count_primes(lo: u64, hi: u64) -> Result<u64, PrimeRangeError> {
    if hi > MAX_PRIME_RANGE_END {
        return Err(PrimeRangeError::EndTooLarge { hi });
    }
    if lo >= hi {
        return Ok(0);
    }
    let two = u64::from(lo <= 2 && 2 < hi);
    // The first odd number that is at least max(lo, 3).
    let first_odd = lo.max(3) | 1;
    let odd = if first_odd < hi {
        count_odd_primes(first_odd, hi)
    } else {
        0
    };
    // At most one prime per number below 2^48: the sum cannot saturate.
    Ok(two.saturating_add(odd))
}

/// Counts the primes among the odd numbers `first_odd, first_odd + 2, ...` below `hi`.
/// `first_odd` must be odd and at least 3, and below `hi`, which is at most
/// [`MAX_PRIME_RANGE_END`].
// Every number here is below hi <= 2^48 (checked by try_count_primes, the only caller) and
// every bit index below one segment, so nothing overflows even a 32-bit usize.
#[allow(clippy::arithmetic_side_effects)]
fn count_odd_primes(first_odd: u64, hi: u64) -> u64 {
    debug_assert!(first_odd % 2 == 1 && first_odd >= 3 && first_odd < hi);
    // Bit `i` of the range stands for the odd number `first_odd + 2 * i`.
    let odd_count = (hi - first_odd).div_ceil(2);

    // The presieve pattern strikes out the presieved primes themselves; add back those in range.
    let mut count = PRESIEVED_PRIMES
        .iter()
        .filter(|&&p| first_odd <= p && p < hi)
        .count() as u64;

    let largest_factor = (hi - 1).isqrt();
    let sieving_primes: Vec<u64> = odd_primes_up_to(largest_factor)
        .into_iter()
        .map(u64::from)
        .filter(|p| !PRESIEVED_PRIMES.contains(p))
        .collect();
    // For each sieving prime, the bit index of the next odd multiple to strike out.
    let mut next_multiple: Vec<u64> = sieving_primes
        .iter()
        .map(|&p| first_multiple_index(p, first_odd))
        .collect();

    let pattern = presieve_pattern(first_odd, odd_count.div_ceil(64));
    let mut segment = vec![0u64; SEGMENT_WORDS];
    let mut segment_start = 0u64;
    while segment_start < odd_count {
        let bits = (odd_count - segment_start).min(SEGMENT_BITS as u64) as usize;
        // Only the last segment of a range can be shorter than SEGMENT_WORDS words.
        segment.truncate(bits.div_ceil(64));
        let words = segment.as_mut_slice();
        fill_from_pattern(words, &pattern, segment_start);

        // Every segment but the last ends on a word boundary, so `next` is exact wherever it is
        // used again; in the last one, multiples past `bits` in its last word are cleared below
        // anyway.
        let segment_end = segment_start + bits as u64;
        for (&prime, next) in sieving_primes.iter().zip(next_multiple.iter_mut()) {
            if *next >= segment_end {
                continue;
            }
            let bit = cross_off(words, (*next - segment_start) as usize, prime as usize);
            *next = segment_start + bit as u64;
        }
        // Clear the bits past the end of the range in the last word.
        let bits_in_last_word = bits % 64;
        if let Some(last) = words.last_mut().filter(|_| bits_in_last_word != 0) {
            *last &= (1u64 << bits_in_last_word) - 1;
        }

        count += words.iter().map(|w| u64::from(w.count_ones())).sum::<u64>();
        segment_start = segment_end;
    }
    count
}

/// Clears bits `first`, `first + step`, `first + 2 * step`, ... of `words` (bit `i` is bit
/// `i % 64` of word `i / 64`) up to the end of the last word, and returns the first index past
/// it: crossing off the odd multiples of one prime. This is the sieve's inner loop.
// The index stays below 64 · words.len() + step: under 2^25 for the sieve's segments (2^18
// bits, steps below 2^24) and the presieve pattern, so it cannot overflow even a 32-bit usize.
#[allow(clippy::arithmetic_side_effects)]
#[inline(always)]
fn cross_off(words: &mut [u64], first: usize, step: usize) -> usize {
    let mut bit = first;
    while let Some(word) = words.get_mut(bit / 64) {
        *word &= !(1u64 << (bit % 64));
        bit += step;
    }
    bit
}

/// The bit index (relative to `first_odd`) of the first odd multiple of `prime` that must be
/// struck out: the smallest odd multiple that is at least both `first_odd` and `prime * prime`.
fn first_multiple_index(prime: u64, first_odd: u64) -> u64 {
    // Multiples below the square have a smaller prime factor, so they are struck out already.
    let from_square = prime.saturating_mul(prime).saturating_sub(first_odd) / 2;
    odd_multiple_index(prime, first_odd).max(from_square)
}

/// The bit index (relative to `first_odd`) of the smallest odd multiple of `prime` that is at
/// least `first_odd`.
// That multiple is below first_odd + 2 * prime, far from overflowing for the sieve's numbers
// (below 2^48), and not below first_odd, so the difference is not negative.
#[allow(clippy::arithmetic_side_effects)]
fn odd_multiple_index(prime: u64, first_odd: u64) -> u64 {
    // Rounding the factor up to odd keeps the multiple odd.
    let factor = first_odd.div_ceil(prime) | 1;
    (factor * prime - first_odd) / 2
}

/// The presieve pattern for a range starting at `first_odd`: bit `i` (counting across words)
/// is set unless `first_odd + 2 * i` is a multiple of 3, 5, 7 or 11.
/// Since `PRESIEVE_PERIOD` words hold `64 * PRESIEVE_PERIOD` bits, a whole multiple of the
/// pattern's period, the words repeat: word `w` of the range equals word `w % PRESIEVE_PERIOD`.
/// So one period is all a range ever needs, and a range of `range_words` words, if shorter,
/// needs only that many.
fn presieve_pattern(first_odd: u64, range_words: u64) -> Vec<u64> {
    let words = range_words.min(PRESIEVE_PERIOD as u64) as usize;
    let mut pattern = vec![u64::MAX; words];
    for &prime in &PRESIEVED_PRIMES {
        let first = odd_multiple_index(prime, first_odd);
        cross_off(&mut pattern, first as usize, prime as usize);
    }
    pattern
}

/// Fills `words` (a segment whose first bit is range bit `segment_start`, a multiple of 64)
/// with the matching words of the presieve pattern, repeating it. A pattern shorter than a
/// period is only ever asked for words it holds (the whole range fits in it), so it never
/// repeats.
fn fill_from_pattern(words: &mut [u64], pattern: &[u64], segment_start: u64) {
    let phase = (segment_start / 64) % PRESIEVE_PERIOD_WORDS;
    let source = pattern.iter().cycle().skip(phase as usize);
    for (word, &value) in words.iter_mut().zip(source) {
        *word = value;
    }
}

/// The odd primes up to and including `limit` (which must fit the sieve's memory: it is at most
/// `sqrt(MAX_PRIME_RANGE_END)` = 2^24 here), by a plain sieve over odd numbers.
// With limit <= 2^24, every number and index here is below 2^25.
#[allow(clippy::arithmetic_side_effects)]
fn odd_primes_up_to(limit: u64) -> Vec<u32> {
    if limit < 3 {
        return Vec::new();
    }
    let limit = limit as usize;
    // is_composite[i] stands for the odd number 2 * i + 1, up to the last odd number <= limit.
    let mut is_composite = vec![false; limit.div_ceil(2)];
    if let Some(one) = is_composite.first_mut() {
        *one = true; // 1 is not prime
    }
    let mut index = 1;
    while (2 * index + 1) * (2 * index + 1) <= limit {
        if is_composite.get(index) == Some(&false) {
            let prime = 2 * index + 1;
            // The odd multiples from prime * prime on are `prime` entries apart.
            for composite in is_composite
                .iter_mut()
                .skip(prime * prime / 2)
                .step_by(prime)
            {
                *composite = true;
            }
        }
        index += 1;
    }
    is_composite
        .iter()
        .enumerate()
        .filter(|(_, &composite)| !composite)
        .map(|(index, _)| (2 * index + 1) as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Primality by trial division: slow, obviously right, and shares no code with the sieve.
    fn is_prime_by_trial_division(n: u64) -> bool {
        if n < 2 {
            return false;
        }
        if n.is_multiple_of(2) {
            return n == 2;
        }
        let mut divisor = 3;
        while divisor * divisor <= n {
            if n.is_multiple_of(divisor) {
                return false;
            }
            divisor += 2;
        }
        true
    }

    fn count_by_trial_division(lo: u64, hi: u64) -> u64 {
        (lo..hi).filter(|&n| is_prime_by_trial_division(n)).count() as u64
    }

    /// A small deterministic generator (xorshift64) for "arbitrary" chunk boundaries.
    struct Xorshift(u64);
    impl Xorshift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn published_pi_values_up_to_ten_million() {
        // π(10^n) from the published table of the prime-counting function.
        assert_eq!(count_primes(0, 10), 4);
        assert_eq!(count_primes(0, 100), 25);
        assert_eq!(count_primes(0, 1_000), 168);
        assert_eq!(count_primes(0, 10_000), 1_229);
        assert_eq!(count_primes(0, 100_000), 9_592);
        assert_eq!(count_primes(0, 1_000_000), 78_498);
        assert_eq!(count_primes(0, 10_000_000), 664_579);
    }

    #[test]
    fn published_pi_of_ten_to_the_eight() {
        // Split in chunks as the swarm would; the chunk sums must match the published value.
        let chunk = 25_000_000;
        let total: u64 = (0..4)
            .map(|i| count_primes(i * chunk, (i + 1) * chunk))
            .sum();
        assert_eq!(total, 5_761_455);
    }

    #[test]
    #[ignore = "slow in debug builds: run with `cargo test -p kernels --release -- --ignored`"]
    fn published_pi_of_ten_to_the_nine() {
        assert_eq!(count_primes(0, 1_000_000_000), 50_847_534);
    }

    #[test]
    #[ignore = "slow in debug builds: run with `cargo test -p kernels --release -- --ignored`"]
    fn published_pi_of_ten_to_the_ten() {
        assert_eq!(count_primes(0, 10_000_000_000), 455_052_511);
    }

    #[test]
    fn tiny_and_empty_ranges() {
        assert_eq!(count_primes(0, 0), 0);
        assert_eq!(count_primes(5, 5), 0);
        assert_eq!(count_primes(10, 3), 0);
        assert_eq!(count_primes(u64::MAX, 0), 0);
        assert_eq!(count_primes(0, 1), 0);
        assert_eq!(count_primes(0, 2), 0);
        assert_eq!(count_primes(0, 3), 1);
        assert_eq!(count_primes(1, 3), 1);
        assert_eq!(count_primes(2, 3), 1);
        assert_eq!(count_primes(2, 4), 2);
        assert_eq!(count_primes(3, 4), 1);
        assert_eq!(count_primes(4, 5), 0);
        assert_eq!(count_primes(4, 6), 1);
        assert_eq!(count_primes(9, 10), 0);
        assert_eq!(count_primes(11, 12), 1);
        assert_eq!(count_primes(12, 13), 0);
    }

    #[test]
    fn every_small_range_matches_trial_division() {
        let limit = 400;
        let is_prime: Vec<bool> = (0..limit).map(is_prime_by_trial_division).collect();
        for lo in 0..limit {
            let mut expected = 0;
            for hi in lo..=limit {
                assert_eq!(count_primes(lo, hi), expected, "range [{lo}, {hi})");
                if hi < limit && is_prime[hi as usize] {
                    expected += 1;
                }
            }
        }
    }

    #[test]
    fn ranges_near_a_trillion_match_trial_division() {
        let windows = [
            (1_000_000_000_000 - 1_000, 1_000_000_000_000 + 1_000),
            // 1,000,003 is prime: the window straddles its square, the first number that
            // needs it as a sieving prime.
            (1_000_003 * 1_000_003 - 700, 1_000_003 * 1_000_003 + 700),
            (999_999_999_000, 999_999_999_999),
        ];
        for (lo, hi) in windows {
            assert_eq!(
                count_primes(lo, hi),
                count_by_trial_division(lo, hi),
                "range [{lo}, {hi})"
            );
        }
    }

    #[test]
    fn ranges_around_prime_squares_match_trial_division() {
        for prime in [13u64, 17, 101, 1_009, 10_007] {
            let square = prime * prime;
            for (lo, hi) in [
                (square - 30, square),
                (square - 30, square + 1),
                (square, square + 1),
                (square, square + 40),
                (square + 1, square + 40),
            ] {
                assert_eq!(
                    count_primes(lo, hi),
                    count_by_trial_division(lo, hi),
                    "range [{lo}, {hi})"
                );
            }
        }
    }

    #[test]
    fn ranges_spanning_several_segments_match_trial_division() {
        // Segments hold 2^19 integers; cover a few boundaries with odd and even ends.
        let span = (SEGMENT_BITS * 2) as u64;
        for (lo, hi) in [
            (0, 3 * span + 17),
            (span - 5, 2 * span + 6),
            (7 * span + 3, 9 * span),
        ] {
            assert_eq!(
                count_primes(lo, hi),
                count_by_trial_division(lo, hi),
                "range [{lo}, {hi})"
            );
        }
    }

    #[test]
    fn chunked_counts_add_up_to_one_call() {
        let mut random = Xorshift(0x9E37_79B9_7F4A_7C15);
        for (lo, hi) in [
            (0u64, 3_000_000u64),
            (1, 2_000_001),
            (123_456_789, 125_000_000),
            (999_999_000_000, 1_000_001_000_000),
        ] {
            let whole = count_primes(lo, hi);
            // Arbitrary cut points, including empty and one-number chunks.
            let mut cuts: Vec<u64> = (0..40).map(|_| lo + random.next() % (hi - lo)).collect();
            cuts.extend([lo, hi, lo + 1, lo + 2, hi - 1]);
            cuts.sort_unstable();
            let chunked: u64 = cuts.windows(2).map(|w| count_primes(w[0], w[1])).sum();
            assert_eq!(chunked, whole, "range [{lo}, {hi})");
        }
    }

    #[test]
    fn largest_supported_end_is_accepted_and_beyond_is_refused() {
        let hi = MAX_PRIME_RANGE_END;
        assert_eq!(
            try_count_primes(hi - 200, hi),
            Ok(count_by_trial_division(hi - 200, hi))
        );
        assert_eq!(
            try_count_primes(0, hi + 1),
            Err(PrimeRangeError::EndTooLarge { hi: hi + 1 })
        );
        assert_eq!(
            try_count_primes(u64::MAX - 1, u64::MAX),
            Err(PrimeRangeError::EndTooLarge { hi: u64::MAX })
        );
        assert_eq!(
            PrimeRangeError::EndTooLarge { hi: 7 }.to_string(),
            "range end 7 is above the largest supported end 281474976710656"
        );
    }

    #[test]
    #[should_panic(expected = "above the largest supported end")]
    fn count_primes_panics_beyond_the_supported_end() {
        count_primes(0, u64::MAX);
    }

    #[test]
    fn base_primes_are_the_odd_primes() {
        for limit in 0..200u64 {
            let expected: Vec<u32> = (3..=limit)
                .filter(|&n| is_prime_by_trial_division(n))
                .map(|n| n as u32)
                .collect();
            assert_eq!(odd_primes_up_to(limit), expected, "limit {limit}");
        }
    }
}
