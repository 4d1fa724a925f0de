//! Own workloads: any deterministic WebAssembly function, run by the swarm over an input set.
//!
//! This crate holds what every party agrees on, so that a module behaves the same in a
//! browser worker, in the native agent and in the coordinator's checks:
//!
//! - [`module`]: the ABI a module follows (its exports and limits), the check an upload goes
//!   through, and the one change made to a module before it runs (its memory gets the
//!   ABI's maximum, so that `memory.grow` fails at the same size in every engine).
//! - [`outcome`]: what running one item gives: an output, or a failure of a named kind; and
//!   the digest that replicas of an item are compared by.
//! - [`inputs`]: the records a job's input set is uploaded and served in.
//! - [`outputs`]: the file a device uploads with the outcomes of a lease's items, whose
//!   SHA-256 replicas are compared by.
//! - `native` (feature `native`): the runner of the native agent, on wasmtime.
//!
//! docs/WORKLOADS.md is the ABI's reference for people writing modules.

// No panic reachable from input, by construction (as in the kernels): an uploaded module is
// hostile input, and the coordinator runs the check.
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

pub mod inputs;
pub mod module;
#[cfg(feature = "native")]
pub mod native;
pub mod outcome;
pub mod outputs;

pub use module::{Module, ModuleError};
pub use outcome::{Failure, FailureKind, Outcome};
