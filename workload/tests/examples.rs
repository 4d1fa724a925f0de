//! The example workloads in `examples/`, run by the native runner: their outputs match the
//! functions they were written from, and the broken module fails each item with the kind
//! its input asks for, without disturbing the next item.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use workload::module::{self, MAX_ERROR_BYTES};
use workload::native::{Compiled, Runner};
use workload::{FailureKind, Outcome};

const LIMIT: Duration = Duration::from_secs(5);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn wat_module(runner: &Runner, name: &str) -> Compiled {
    let bytes = wat::parse_file(root().join("examples").join(name)).unwrap();
    runner.compile(&bytes).unwrap()
}

/// Builds `examples/pi` for wasm32 with the cargo that runs this test, as `cargo xtask
/// examples` does, and returns the module's bytes.
fn pi_module() -> Vec<u8> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "example-pi",
            "--target",
            "wasm32-unknown-unknown",
        ])
        .current_dir(root())
        .status()
        .unwrap();
    assert!(status.success(), "building examples/pi for wasm32 failed");
    std::fs::read(root().join("target/wasm32-unknown-unknown/release/example_pi.wasm")).unwrap()
}

fn failure_kind(outcome: &Outcome) -> Option<FailureKind> {
    match outcome {
        Outcome::Failed(failure) => Some(failure.kind),
        Outcome::Output(_) => None,
    }
}

#[test]
fn the_rust_example_gives_what_its_function_gives_natively() {
    let runner = Runner::new().unwrap();
    let compiled = runner.compile(&pi_module()).unwrap();
    for seed in [0u64, 1, 42, u64::MAX] {
        let outcome = runner.run(&compiled, &seed.to_le_bytes(), LIMIT);
        assert_eq!(
            outcome,
            Outcome::Output(example_pi::estimate(seed).into_bytes()),
            "seed {seed}"
        );
    }
    assert_eq!(
        module_error(&runner, &compiled, b"short"),
        "the input must be 8 bytes"
    );
}

/// The Collatz step count, computed in Rust: what the hand-written module must agree with.
fn collatz_steps(mut n: u64) -> Option<u64> {
    let mut steps = 0;
    while n != 1 {
        n = if n % 2 == 1 {
            n.checked_mul(3)?.checked_add(1)?
        } else {
            n / 2
        };
        steps += 1;
    }
    Some(steps)
}

#[test]
fn the_hand_written_example_agrees_with_rust_and_reports_its_own_errors() {
    let runner = Runner::new().unwrap();
    let compiled = wat_module(&runner, "collatz.wat");
    for n in (1..2_000u64).chain([27, 837_799, 1 << 40]) {
        let expected = collatz_steps(n).unwrap().to_string().into_bytes();
        assert_eq!(
            runner.run(&compiled, &n.to_le_bytes(), LIMIT),
            Outcome::Output(expected),
            "n = {n}"
        );
    }
    let error = |input: &[u8]| module_error(&runner, &compiled, input);
    assert_eq!(error(&0u64.to_le_bytes()), "n must be at least 1");
    assert_eq!(error(b"seven"), "the input must be 8 bytes");
    assert_eq!(collatz_steps(u64::MAX), None);
    assert_eq!(error(&u64::MAX.to_le_bytes()), "the sequence leaves u64");
}

#[test]
fn each_way_of_breaking_fails_its_item_with_a_named_kind_and_the_next_item_still_runs() {
    let runner = Runner::new().unwrap();
    let compiled = wat_module(&runner, "broken.wat");
    let cases = [
        (0u8, FailureKind::Unreachable),
        (1, FailureKind::TimeLimit),
        (2, FailureKind::MemoryOutOfBounds),
        (3, FailureKind::OutputOutOfBounds),
        (4, FailureKind::OutputTooLarge),
        (5, FailureKind::StackOverflow),
        (6, FailureKind::DivideByZero),
        (7, FailureKind::ModuleError),
        (8, FailureKind::ModuleError),
        (9, FailureKind::IntegerOverflow),
        (10, FailureKind::IntegerOverflow),
        (11, FailureKind::IntegerOverflow),
        (12, FailureKind::IndirectCall),
        (13, FailureKind::ModuleError),
    ];
    for (how, kind) in cases {
        let started = Instant::now();
        let limit = Duration::from_millis(200);
        let outcome = runner.run(&compiled, &[how], limit);
        assert_eq!(failure_kind(&outcome), Some(kind), "{how}: {outcome:?}");
        assert_eq!(
            outcome.digest().is_none(),
            kind.depends_on_device(),
            "{how}"
        );
        if kind == FailureKind::TimeLimit {
            // Stopped by the epoch, not left running: well within ten times its limit.
            assert!(started.elapsed() < limit * 10, "{:?}", started.elapsed());
        }
        // The next item gets a fresh instance and echoes its input.
        assert_eq!(
            runner.run(&compiled, &[99, how], LIMIT),
            Outcome::Output(vec![99, how])
        );
    }
    for refused in [&[1u8, 2, 3][..], &[1, 2, 3, 4, 5]] {
        let outcome = runner.run(&compiled, refused, LIMIT);
        assert_eq!(failure_kind(&outcome), Some(FailureKind::AllocRefused));
    }
    assert_eq!(
        module_error(&runner, &compiled, &[7]),
        "memory.grow refused"
    );
    assert_eq!(
        module_error(&runner, &compiled, &[13]),
        "table.grow refused"
    );
    assert_eq!(
        module_error(&runner, &compiled, &[8]).len(),
        MAX_ERROR_BYTES
    );
}

/// The message of the module's own error for `input`; panics on any other outcome.
fn module_error(runner: &Runner, compiled: &Compiled, input: &[u8]) -> String {
    match runner.run(compiled, input, LIMIT) {
        Outcome::Failed(f) if f.kind == FailureKind::ModuleError => f.message,
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_memory_maximum_is_the_abis_whatever_the_module_declares() {
    let bytes = wat::parse_file(root().join("examples/broken.wat")).unwrap();
    let checked = module::check(&bytes).unwrap();
    assert_eq!(checked.memory_pages, (5, module::MAX_MEMORY_PAGES));
}
