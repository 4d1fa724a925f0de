//! `cargo xtask examples`: the example workloads, built into `target/examples/`.
//!
//! `examples/pi` is a Rust crate built for wasm32-unknown-unknown; the `.wat` files are
//! assembled. Each module is checked against the workload ABI, and its size and name (the
//! SHA-256 a job refers to it by) are printed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::json;

use crate::{cargo, root, run};

/// Builds every example; returns the paths of the modules.
pub fn build() -> Result<Vec<PathBuf>> {
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "example-pi",
        "--target",
        "wasm32-unknown-unknown",
    ]))?;
    let out = root().join("target/examples");
    std::fs::create_dir_all(&out)?;
    let mut built = Vec::new();
    let pi = root().join("target/wasm32-unknown-unknown/release/example_pi.wasm");
    let pi_bytes = std::fs::read(&pi).with_context(|| format!("{pi:?}"))?;
    crate::build::holds_no_builder_folder(&pi_bytes).context("examples/pi")?;
    let mut modules = vec![("pi", pi_bytes)];
    for name in ["collatz", "broken"] {
        let source = root().join("examples").join(format!("{name}.wat"));
        let bytes = wat::parse_file(&source).with_context(|| format!("assembling {source:?}"))?;
        modules.push((name, bytes));
    }
    for (name, bytes) in modules {
        let checked =
            workload::module::check(&bytes).with_context(|| format!("examples/{name}"))?;
        let path = out.join(format!("{name}.wasm"));
        std::fs::write(&path, &bytes)?;
        println!(
            "{:>9} bytes  {}  {}",
            bytes.len(),
            workload::module::hex(&checked.digest),
            path.strip_prefix(root()).unwrap_or(&path).display()
        );
        built.push(path);
    }
    Ok(built)
}

/// The items the browser test runs in Chromium, with the outcomes the native runner gives
/// them: writes `{ "modules": {name: [prepared bytes]}, "cases": [{module, input, outcome,
/// digest}] }` into `dir` and returns the file's path. Every breakage of `broken.wat` but the
/// endless loop is there (a browser stops that by terminating the worker, which is the
/// page's part, not the engine's).
pub fn browser_reference(dir: &Path) -> Result<PathBuf> {
    build()?;
    let runner = workload::native::Runner::new().map_err(|e| anyhow!(e))?;
    let limit = Duration::from_secs(10);
    let mut modules = serde_json::Map::new();
    let mut cases = Vec::new();
    let mut inputs: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("pi", (0u64..20).map(|s| s.to_le_bytes().to_vec()).collect()),
        (
            "collatz",
            (0u64..300).map(|n| n.to_le_bytes().to_vec()).collect(),
        ),
        (
            "broken",
            (0u8..=13)
                .filter(|&how| how != 1)
                .map(|how| vec![how])
                .collect(),
        ),
    ];
    inputs[0].1.push(b"short".to_vec());
    inputs[1]
        .1
        .extend([u64::MAX.to_le_bytes().to_vec(), b"seven".to_vec()]);
    inputs[2]
        .1
        .extend([vec![1, 2, 3], vec![1, 2, 3, 4, 5], vec![99, 1]]);
    for (name, items) in inputs {
        let bytes = std::fs::read(root().join("target/examples").join(format!("{name}.wasm")))?;
        let prepared = workload::module::check(&bytes)?.bytes;
        let compiled = runner.compile(&bytes)?;
        for input in items {
            let outcome = runner.run(&compiled, &input, limit);
            let digest = outcome.digest().map(|d| workload::module::hex(&d));
            cases.push(
                json!({ "module": name, "input": input, "outcome": outcome, "digest": digest }),
            );
        }
        modules.insert(name.to_owned(), json!(prepared));
    }
    let path = dir.join("workload-reference.json");
    let document = json!({ "modules": modules, "cases": cases, "jobs": swarm_jobs(&runner)? });
    std::fs::write(&path, document.to_string())?;
    Ok(path)
}

/// The jobs the browser test runs on a swarm of a browser and a native agent, each with its
/// module's file (to upload) and every item's outcome on the native runner: `pi` over 10,000
/// seeds, and `broken` over inputs 0–15 (every way it breaks, the endless loop included, and
/// two echoes).
fn swarm_jobs(runner: &workload::native::Runner) -> Result<serde_json::Value> {
    let mut jobs = serde_json::Map::new();
    for (name, start, step, items, time_limit_ms) in [
        ("pi", 1_000u64, 3u64, 10_000u64, 10_000u32),
        ("broken", 0, 1, 16, 1_000),
    ] {
        let file = root().join("target/examples").join(format!("{name}.wasm"));
        let compiled = runner.compile(&std::fs::read(&file)?)?;
        let limit = Duration::from_millis(u64::from(time_limit_ms));
        let outcomes: Vec<_> = (0..items)
            .map(|i| runner.run(&compiled, &(start + i * step).to_le_bytes(), limit))
            .collect();
        jobs.insert(
            name.to_owned(),
            json!({
                "file": file,
                "spec": { "kind": "workload", "start": start, "step": step, "items": items,
                          "time_limit_ms": time_limit_ms },
                "outcomes": outcomes,
            }),
        );
    }
    Ok(jobs.into())
}
