//! `cargo xtask examples`: the example workloads, built into `target/examples/`.
//!
//! `examples/pi` is a Rust crate built for wasm32-unknown-unknown; the `.wat` files are
//! assembled. Each module is checked against the workload ABI, and its size and name (the
//! SHA-256 a job refers to it by) are printed.

use std::path::PathBuf;

use anyhow::{Context, Result};

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
    let mut modules = vec![("pi", std::fs::read(&pi).with_context(|| format!("{pi:?}"))?)];
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
