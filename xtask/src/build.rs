//! Builds the two wasm artefacts: the browser client into `pages/pkg/` (cargo, wasm-bindgen,
//! wasm-opt) and the coordinator into `coordinator/build/` (worker-build).

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

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

/// The folders and files a wasm artefact is built from, besides its own crate: a change in any
/// of them (by modification time) rebuilds it.
const SHARED_INPUTS: &[&str] = &["Cargo.toml", "Cargo.lock", "shared-protocol", "kernels"];

pub fn all(tools: &Tools) -> Result<()> {
    client(tools)?;
    coordinator(tools)?;
    report()
}

pub fn client(tools: &Tools) -> Result<()> {
    let out = root().join("pages/pkg");
    let inputs = Inputs::of(&["client"]);
    let wasm = out.join("client_bg.wasm");
    if inputs.built_into(&wasm) {
        println!("xtask: client is up to date");
        return Ok(());
    }
    web_wasm(tools, "client", &out)?;
    inputs.record(&wasm)
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
    let inputs = Inputs::of(&["coordinator", "swarm-core"]);
    let built = root().join("coordinator/build/index.js");
    if inputs.built_into(&built) {
        println!("xtask: coordinator is up to date");
        return Ok(());
    }
    let mut cmd = Command::new(&tools.worker_build);
    cmd.arg("--release").current_dir(root().join("coordinator"));
    tools.worker_build_env(&mut cmd);
    run(&mut cmd)?;
    inputs.record(&built)
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

/// What an artefact is built from, as of the start of its build: the newest modification
/// time of the files of these crates and of the shared inputs. It is recorded beside the
/// artefact once the build succeeds, so a file changed while a build ran (newer than what was
/// recorded) makes the next build run again. The build tools are pinned, so they do not count.
struct Inputs(Option<SystemTime>);

impl Inputs {
    fn of(crates: &[&str]) -> Self {
        let root = root();
        let newest = crates
            .iter()
            .chain(SHARED_INPUTS)
            .map(|input| newest(&root.join(input)))
            .try_fold(SystemTime::UNIX_EPOCH, |acc, t| t.map(|t| acc.max(t)));
        Self(newest)
    }

    /// Where the inputs an artefact was built from are recorded: under `target/`, not beside
    /// the artefact (`pages/` is deployed as it is).
    fn stamp(artefact: &Path) -> std::path::PathBuf {
        let name = artefact
            .strip_prefix(root())
            .unwrap_or(artefact)
            .to_string_lossy()
            .replace(['/', '\\'], "_");
        root()
            .join("target/xtask-stamps")
            .join(format!("{name}.inputs"))
    }

    /// Whether `artefact` exists and was built from exactly these inputs.
    fn built_into(&self, artefact: &Path) -> bool {
        let Some(newest) = self.0 else {
            return false;
        };
        artefact.exists()
            && std::fs::read_to_string(Self::stamp(artefact))
                .is_ok_and(|recorded| recorded.trim() == nanos(newest).to_string())
    }

    fn record(&self, artefact: &Path) -> Result<()> {
        match self.0 {
            Some(newest) => {
                let stamp = Self::stamp(artefact);
                if let Some(folder) = stamp.parent() {
                    std::fs::create_dir_all(folder)?;
                }
                Ok(std::fs::write(stamp, nanos(newest).to_string())?)
            }
            None => Ok(()),
        }
    }
}

fn nanos(time: SystemTime) -> u128 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The newest modification time of a file or of any file below a folder (`target`-like build
/// folders and hidden files excluded); `None` if something cannot be read, which counts as
/// changed.
fn newest(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    let mut latest = meta.modified().ok()?;
    for entry in std::fs::read_dir(path).ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" || name == "build" || name == "pkg" {
            continue;
        }
        latest = latest.max(newest(&entry.path())?);
    }
    Some(latest)
}
