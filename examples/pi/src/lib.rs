//! An example workload in Rust: a Monte Carlo estimate of π from one seed.
//!
//! Input: the seed as 8 little-endian bytes (what an integer-range job gives each item).
//! Output: `{"seed":S,"samples":N,"inside":K}`, where K of N points drawn from the seed fell
//! inside the quarter circle; π ≈ 4·ΣK / ΣN over all items. Integer arithmetic only, so the
//! output is the same in every engine.
//!
//! Built as a workload with `cargo xtask examples` (wasm32-unknown-unknown, release).

/// Points drawn per item.
pub const SAMPLES: u32 = 100_000;

/// The output of one item.
pub fn estimate(seed: u64) -> String {
    let mut state = seed;
    let mut inside = 0u32;
    for _ in 0..SAMPLES {
        let bits = splitmix64(&mut state);
        let (x, y) = (u128::from(bits >> 32), u128::from(bits & 0xffff_ffff));
        // (x, y) in [0, 2^32)²: inside when x² + y² < (2^32)².
        if x * x + y * y < 1 << 64 {
            inside += 1;
        }
    }
    format!(r#"{{"seed":{seed},"samples":{SAMPLES},"inside":{inside}}}"#)
}

/// The output of one item from its input bytes, or the error the module reports.
pub fn run(input: &[u8]) -> Result<String, &'static str> {
    let seed: [u8; 8] = input.try_into().map_err(|_| "the input must be 8 bytes")?;
    Ok(estimate(u64::from_le_bytes(seed)))
}

/// SplitMix64 (Steele, Lea and Flood): a small, well-mixed generator, enough for sampling.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The workload ABI (docs/WORKLOADS.md): `alloc` and `run`, over the module's own memory.
/// Each item runs in a fresh instance, so nothing here is ever freed.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod abi {
    /// `len` bytes for the input.
    #[no_mangle]
    pub extern "C" fn alloc(len: usize) -> *mut u8 {
        Box::leak(vec![0u8; len].into_boxed_slice()).as_mut_ptr()
    }

    /// The item's output, or its error, as the ABI packs a range of memory.
    #[no_mangle]
    pub extern "C" fn run(ptr: *const u8, len: usize) -> i64 {
        // SAFETY: the host wrote `len` bytes at the address `alloc(len)` returned.
        let input = unsafe { core::slice::from_raw_parts(ptr, len) };
        match super::run(input) {
            Ok(output) => pack(output.into_bytes().leak(), false),
            Err(message) => pack(message.as_bytes(), true),
        }
    }

    fn pack(bytes: &[u8], error: bool) -> i64 {
        let range = ((bytes.as_ptr() as u64) << 32) | bytes.len() as u64;
        (range | (u64::from(error) << 63)) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimates_of_many_seeds_approach_pi() {
        let (mut inside, mut samples) = (0u64, 0u64);
        for seed in 0..20 {
            let out = estimate(seed);
            let k: u64 = out
                .split("\"inside\":")
                .nth(1)
                .and_then(|rest| rest.trim_end_matches('}').parse().ok())
                .unwrap();
            inside += k;
            samples += u64::from(SAMPLES);
        }
        let pi = 4.0 * inside as f64 / samples as f64;
        assert!((pi - std::f64::consts::PI).abs() < 0.01, "{pi}");
    }

    #[test]
    fn an_input_that_is_not_a_seed_is_refused() {
        assert_eq!(run(b"1234"), Err("the input must be 8 bytes"));
        assert!(run(&7u64.to_le_bytes())
            .unwrap()
            .starts_with(r#"{"seed":7,"#));
    }
}
