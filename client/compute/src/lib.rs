//! What a browser's Web Worker runs: one lease at a time with the shared kernels, off the
//! page's main thread. This crate is its own small wasm (`pages/worker.js` loads it), so the
//! page's UI wasm carries no kernel and a worker loads no UI; the native agent computes with
//! the same [`compute`].

use kernels::mandelbrot::{render_tile, Tile, View};
use shared_protocol::{encode_counts, Work, WorkResult};

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

/// Computes a lease given as the JSON of a [`Work`]; returns the JSON of its `WorkResult`, or
/// an empty string when the work cannot be read or computed.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn compute_work(work: &str) -> String {
    serde_json::from_str::<Work>(work)
        .map_err(|err| err.to_string())
        .and_then(|work| compute(&work))
        .map(|result| shared_protocol::encode(&result))
        .unwrap_or_default()
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
}
