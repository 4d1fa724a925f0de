//! `cargo xtask bench`'s kernel table: each workload of `kernels-bench` timed natively and as
//! WASM in a dedicated Web Worker in headless Chromium on this machine, side by side.
//!
//! Both sides use the workspace release profile (`opt-level = "z"`, LTO; `sha2` at
//! `opt-level = 3`): natively as the agent is built, and as WASM through wasm-bindgen and
//! wasm-opt as `pages/pkg` is built. Each time is the best of [`REPS`] runs on one thread; the
//! native and WASM checksums must agree.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{cargo, root};

/// Runs per workload and side; the table shows the fastest.
const REPS: u32 = 5;
/// The goal for every workload: WASM at most this many times the native time.
const GOAL_RATIO: f64 = 1.3;
/// Builds both sides, runs them and prints the table.
pub fn table() -> Result<()> {
    let tools = crate::tools::setup(true)?;
    crate::build::web_wasm(
        &tools,
        &["kernels-bench"],
        &pkg_dir(),
        crate::build::Profile::Release,
    )?;
    eprintln!("xtask: timing the kernels natively (best of {REPS})");
    let native = native()?;
    eprintln!("xtask: timing the kernels as WASM in headless Chromium (best of {REPS})");
    let wasm = chromium()?;
    print_table(&native, &wasm)
}

fn pkg_dir() -> std::path::PathBuf {
    root().join("target/kernels-bench/pkg")
}

/// The native binary's JSON: `{"workloads": [{kernel, name, checksum, seconds}]}`.
fn native() -> Result<Value> {
    json_from(cargo().args([
        "run",
        "--quiet",
        "--release",
        "-p",
        "kernels-bench",
        "--",
        "--reps",
        &REPS.to_string(),
    ]))
}

/// The browser's JSON: `{browser, workloads: [{checksum, seconds}]}`, in the same order.
fn chromium() -> Result<Value> {
    json_from(
        Command::new("node")
            .arg(root().join("kernels-bench/chromium.mjs"))
            .arg(pkg_dir())
            .arg(REPS.to_string())
            .env("CHROMIUM_PATH", "/usr/bin/chromium")
            .current_dir(root()),
    )
}

/// Runs `cmd` (its stderr shown) and parses its stdout as JSON.
fn json_from(cmd: &mut Command) -> Result<Value> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{:?} failed with {}", cmd.get_program(), out.status);
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{:?} did not print JSON", cmd.get_program()))
}

/// One side's measurements of one workload.
struct Times {
    checksum: String,
    best: f64,
    first: f64,
}

fn times(workload: &Value) -> Result<Times> {
    let seconds: Vec<f64> = workload["seconds"]
        .as_array()
        .context("workload has seconds")?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    Ok(Times {
        checksum: workload["checksum"]
            .as_str()
            .context("workload has a checksum")?
            .to_owned(),
        best: seconds.iter().copied().fold(f64::INFINITY, f64::min),
        first: *seconds.first().context("workload has times")?,
    })
}

fn print_table(native: &Value, wasm: &Value) -> Result<()> {
    let native_rows = native["workloads"].as_array().context("native workloads")?;
    let wasm_rows = wasm["workloads"].as_array().context("WASM workloads")?;
    if native_rows.len() != wasm_rows.len() {
        bail!(
            "{} native workloads but {} WASM workloads",
            native_rows.len(),
            wasm_rows.len()
        );
    }
    println!(
        "\nKernels: native vs WASM in a Web Worker of headless {}, one thread, best of {REPS} \
         (goal: WASM/native ≤ {GOAL_RATIO})",
        wasm["browser"].as_str().unwrap_or("Chromium")
    );
    println!(
        "release profile on both sides (opt-level \"z\", LTO, sha2 at opt-level 3); the WASM also \
         through wasm-opt -Oz like pages/pkg\n"
    );
    println!(
        "| {:<10} | {:<50} | {:>8} | {:>8} | {:>11} | {:>19} |",
        "kernel", "workload", "native s", "WASM s", "WASM/native", "WASM first call s"
    );
    println!(
        "|{:-<12}|{:-<52}|{:->10}|{:->10}|{:->13}|{:->21}|",
        "", "", "", "", "", ""
    );
    for (native_row, wasm_row) in native_rows.iter().zip(wasm_rows) {
        let name = native_row["name"].as_str().unwrap_or("?");
        let (n, w) = (times(native_row)?, times(wasm_row)?);
        if n.checksum != w.checksum {
            bail!(
                "{name}: native checksum {} but WASM checksum {}",
                n.checksum,
                w.checksum
            );
        }
        println!(
            "| {:<10} | {:<50} | {:>8.3} | {:>8.3} | {:>11.2} | {:>19.3} |",
            native_row["kernel"].as_str().unwrap_or("?"),
            name,
            n.best,
            w.best,
            w.best / n.best,
            w.first,
        );
    }
    Ok(())
}
