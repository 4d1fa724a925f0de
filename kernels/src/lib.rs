//! The compute kernels of Ostrich Legs: the work a swarm job actually does.
//!
//! Three kernels, each a set of pure functions (no threads, clock, IO or randomness), so the
//! same code runs in browser workers (compiled to WASM), in the native agent, and in the
//! coordinator, which uses them to verify returned results cheaply instead of trusting them:
//!
//! - [`bench`]: the reference core that device speeds are measured in.
//! - [`primes`]: count the primes in `[lo, hi)` with a segmented sieve. Counts of adjacent
//!   ranges add up, so a job is split into chunks; the coordinator counts a device's benchmark
//!   range itself (chunks are verified by replication on other devices).
//! - [`mandelbrot`]: escape counts for a tile of a Mandelbrot view, plus a palette and a PNG
//!   encoder to show the assembled image. Counts are bit-identical across WASM and native, so a
//!   tile is verified by recomputing a few of its pixels.
//! - [`sha256`]: proof-of-work search for nonces whose SHA-256 (of a prefix followed by the
//!   nonce) has enough leading zero bits; a found nonce is verified with a single hash.

// No panic reachable from input, by construction: the constructs that can panic are denied
// outside tests, and each remaining one carries an `allow` saying why it cannot fire.
#![cfg_attr(
    not(test),
    deny(
        clippy::string_slice,
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::arithmetic_side_effects
    )
)]

pub mod bench;
pub mod mandelbrot;
pub mod primes;
pub mod sha256;
