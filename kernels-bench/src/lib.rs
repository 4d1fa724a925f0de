//! The kernel benchmark's workloads: fixed inputs for each kernel, run the same way natively
//! (`src/main.rs`) and as WASM in a Web Worker in headless Chromium (`src/wasm.rs`,
//! `worker.js`), so `cargo xtask bench` can put the two times side by side.
//!
//! Each workload returns a checksum of its result. Returning it keeps the work from being
//! optimised away, and comparing the native and WASM checksums checks that both ran the same
//! computation (the kernels promise identical results on both).

use kernels::mandelbrot::{render_tile, tiles, View};
use kernels::primes::count_primes;
use kernels::sha256::search;

#[cfg(target_arch = "wasm32")]
mod wasm;

/// One benchmark workload: a kernel called on fixed inputs.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// The kernel's module in `kernels`.
    pub kernel: &'static str,
    /// What is computed, for the table.
    pub name: &'static str,
    run: fn() -> u64,
}

impl Workload {
    /// Runs the workload once and returns its checksum.
    pub fn run(&self) -> u64 {
        (self.run)()
    }
}

/// Every workload, in table order. Each takes roughly 0.15–1 s natively on one core of the
/// development machine.
pub const WORKLOADS: [Workload; 5] = [
    Workload {
        kernel: "primes",
        name: "π(10⁹)",
        run: primes_below_1e9,
    },
    Workload {
        kernel: "primes",
        name: "primes in [10¹², 10¹² + 10⁹)",
        run: primes_near_1e12,
    },
    Workload {
        kernel: "mandelbrot",
        name: "whole set 1600×1200, 1,000 iterations",
        run: mandelbrot_whole_set,
    },
    Workload {
        kernel: "mandelbrot",
        name: "seahorse valley zoom 1600×1200, 1,000 iterations",
        run: mandelbrot_seahorse_valley,
    },
    Workload {
        kernel: "sha256",
        name: "search 10⁷ nonces, 16 zero bits",
        run: sha256_search,
    },
];

/// Runs workload `index` of [`WORKLOADS`] once; `None` when there is no such workload.
pub fn run(index: usize) -> Option<u64> {
    WORKLOADS.get(index).map(Workload::run)
}

fn primes_below_1e9() -> u64 {
    count_primes(0, 1_000_000_000)
}

fn primes_near_1e12() -> u64 {
    count_primes(1_000_000_000_000, 1_001_000_000_000)
}

/// The whole set: the interior shortcut (main cardioid, period-2 bulb) skips most of it.
fn mandelbrot_whole_set() -> u64 {
    mandelbrot_checksum(&View {
        center_re: -0.5,
        center_im: 0.0,
        scale: 3.0,
        width: 1600,
        height: 1200,
        max_iter: 1_000,
    })
}

/// A zoom on the boundary, where almost every pixel iterates long and few are shortcut.
fn mandelbrot_seahorse_valley() -> u64 {
    mandelbrot_checksum(&View {
        center_re: -0.743_643_887,
        center_im: 0.131_825_904,
        scale: 5e-4,
        width: 1600,
        height: 1200,
        max_iter: 1_000,
    })
}

/// Renders the view in 256-pixel tiles, as a job's leases would, and sums the escape counts.
fn mandelbrot_checksum(view: &View) -> u64 {
    tiles(view, 256)
        .iter()
        .flat_map(|tile| render_tile(view, tile))
        .map(u64::from)
        .sum()
}

/// The number of nonces found plus their sum.
fn sha256_search() -> u64 {
    let found = search(
        b"ostrich legs kernel benchmark",
        16,
        0,
        10_000_000,
        usize::MAX,
    );
    found.len() as u64 + found.iter().sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_are_named_and_indexed() {
        assert!(run(WORKLOADS.len()).is_none());
        for workload in WORKLOADS {
            assert!(["primes", "mandelbrot", "sha256"].contains(&workload.kernel));
            assert!(!workload.name.is_empty());
        }
    }

    #[test]
    fn mandelbrot_checksum_sums_every_pixel_once() {
        // 300×200 in 256-pixel tiles: four tiles, two of them partial.
        let view = View {
            center_re: -0.5,
            center_im: 0.0,
            scale: 3.0,
            width: 300,
            height: 200,
            max_iter: 50,
        };
        let mut expected = 0u64;
        for py in 0..view.height {
            for px in 0..view.width {
                expected += u64::from(kernels::mandelbrot::pixel_escape_count(&view, px, py));
            }
        }
        assert_eq!(mandelbrot_checksum(&view), expected);
    }
}
