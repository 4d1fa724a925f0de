//! Builds the two wasm artefacts: the browser client into `pages/pkg/` (cargo, wasm-bindgen,
//! wasm-opt) and the coordinator into `coordinator/build/` (worker-build).

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::tools::Tools;
use crate::{cargo, root, run, sizes};

/// Features the Rust wasm32 target emits by default, which wasm-opt must accept.
const WASM_FEATURES: &[&str] = &[
    "--enable-bulk-memory",
    "--enable-nontrapping-float-to-int",
    "--enable-sign-ext",
    "--enable-mutable-globals",
    "--enable-reference-types",
    "--enable-multivalue",
];

pub fn all(tools: &Tools) -> Result<()> {
    client(tools)?;
    coordinator(tools)?;
    report()
}

pub fn client(tools: &Tools) -> Result<()> {
    web_wasm(tools, "client", &root().join("pages/pkg"))
}

/// Builds a workspace cdylib for the browser as the product ships it: cargo release for
/// wasm32, wasm-bindgen `--target web` into `out` (as `<crate>.js` and `<crate>_bg.wasm`),
/// then `wasm-opt -Oz`.
pub fn web_wasm(tools: &Tools, package: &str, out: &Path) -> Result<()> {
    run(cargo().args([
        "build",
        "-p",
        package,
        "--lib",
        "--release",
        "--target",
        "wasm32-unknown-unknown",
    ]))?;
    let name = package.replace('-', "_");
    run(Command::new(&tools.wasm_bindgen)
        .args([
            "--target",
            "web",
            "--no-typescript",
            "--out-name",
            &name,
            "--out-dir",
        ])
        .arg(out)
        .arg(
            root()
                .join("target/wasm32-unknown-unknown/release")
                .join(format!("{name}.wasm")),
        ))?;
    let wasm = out.join(format!("{name}_bg.wasm"));
    run(Command::new(&tools.wasm_opt)
        .arg("-Oz")
        .args(WASM_FEATURES)
        .arg(&wasm)
        .arg("-o")
        .arg(&wasm))
}

pub fn coordinator(tools: &Tools) -> Result<()> {
    let mut cmd = Command::new(&tools.worker_build);
    cmd.arg("--release").current_dir(root().join("coordinator"));
    tools.worker_build_env(&mut cmd);
    run(&mut cmd)
}

fn report() -> Result<()> {
    println!("\nxtask: wasm sizes (raw / gzip -9)");
    for (name, path) in [
        ("client", "pages/pkg/client_bg.wasm"),
        ("coordinator", "coordinator/build/index_bg.wasm"),
    ] {
        let (raw, gz) = sizes(&root().join(path))?;
        println!(
            "  {name:<12} {:>8.1} KiB / {:>7.1} KiB",
            raw as f64 / 1024.0,
            gz as f64 / 1024.0
        );
    }
    Ok(())
}
