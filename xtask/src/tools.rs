//! Idempotent installation of everything the build and the tests need, into the project's
//! ignored `.tools/` and `node_modules/` where possible. Nothing is downloaded from anywhere but
//! the package registries (crates.io, npm, Debian).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{root, run};

/// The wasm-bindgen CLI must equal the workspace's pinned `wasm-bindgen` crate.
pub const WASM_BINDGEN_VERSION: &str = "0.2.130";
pub const WORKER_BUILD_VERSION: &str = "0.8.7";
/// The splitter that makes the dashboard's `#[lazy]` parts wasm modules of their own (see
/// `build::split`). It must know this wasm-bindgen's internals: releases from 0.2.3 on read
/// those of wasm-bindgen 0.2.128 and later.
pub const WASM_SPLIT_VERSION: &str = "0.2.4";
/// The toolchain that builds the browser bundles for release: a pinned nightly, for
/// `-Z build-std` with `panic=immediate-abort`. Linked against a standard library built for
/// size, with no panic machinery (a panic in a browser bundle prints nothing either way: the
/// wasm32 target has no stderr), the bundles are 8–17 % smaller gzipped (measured in
/// docs/BENCHMARKS.md). Everything else builds with the stable toolchain.
pub const SIZE_TOOLCHAIN: &str = "nightly-2026-05-20";
/// Oldest Node that the pinned wrangler (package.json) accepts.
const NODE_MIN: (u32, u32) = (20, 3);

/// Paths of the installed tools.
pub struct Tools {
    pub wasm_bindgen: PathBuf,
    pub worker_build: PathBuf,
    /// npm binaryen's wasm-opt; Debian's older one produces broken modules.
    pub wasm_opt: PathBuf,
    pub esbuild: PathBuf,
    /// `wasm-split-cli`, of `wasm_split_cli_support`.
    pub wasm_split: PathBuf,
    /// Whether [`SIZE_TOOLCHAIN`] is installed; without it the bundles build with the stable
    /// toolchain, larger.
    pub size_toolchain: bool,
}

/// Installs what is missing. `browser` also installs Chromium for the browser tests.
pub fn setup(browser: bool) -> Result<Tools> {
    let root = root();
    check_node()?;
    rust_target()?;
    let size_toolchain = size_toolchain();
    let wasm_bindgen = cargo_tool("wasm-bindgen-cli", "wasm-bindgen", WASM_BINDGEN_VERSION)?;
    let worker_build = cargo_tool("worker-build", "worker-build", WORKER_BUILD_VERSION)?;
    let wasm_split = wasm_split()?;
    npm_packages(&root)?;
    if browser {
        chromium()?;
    }
    let bin = root.join("node_modules/.bin");
    Ok(Tools {
        wasm_bindgen,
        worker_build,
        wasm_opt: bin.join("wasm-opt"),
        esbuild: bin.join("esbuild"),
        wasm_split,
        size_toolchain,
    })
}

fn check_node() -> Result<()> {
    let out = Command::new("node").arg("--version").output().context(
        "node is not installed: install Node.js 20.3 or newer (e.g. `apt-get install nodejs npm`)",
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text
        .trim()
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if version < NODE_MIN {
        bail!(
            "node {} is too old: wrangler needs {}.{} or newer",
            text.trim(),
            NODE_MIN.0,
            NODE_MIN.1
        );
    }
    Ok(())
}

fn rust_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is needed to add the wasm32 target")?;
    if !String::from_utf8_lossy(&installed.stdout).contains("wasm32-unknown-unknown") {
        run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
    }
    let components = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .output()?;
    let components = String::from_utf8_lossy(&components.stdout);
    for component in ["rustfmt", "clippy"] {
        if !components.lines().any(|l| l.starts_with(component)) {
            run(Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    Ok(())
}

/// [`SIZE_TOOLCHAIN`] with the standard library's sources and the wasm32 target, installed
/// through rustup (its minimal profile) when anything is missing. Whether it is there: a
/// machine that cannot install it builds the same bundles with the stable toolchain, and says
/// so, rather than not at all.
fn size_toolchain() -> bool {
    let installed = || -> Result<bool> {
        let out = Command::new("rustup")
            .args([
                "component",
                "list",
                "--installed",
                "--toolchain",
                SIZE_TOOLCHAIN,
            ])
            .output()
            .context("running rustup")?;
        let out = String::from_utf8_lossy(&out.stdout);
        let has = |component: &str| out.lines().any(|l| l.trim() == component);
        Ok(has("rust-src") && has("rust-std-wasm32-unknown-unknown"))
    };
    let install = || -> Result<()> {
        eprintln!("xtask: installing the Rust toolchain {SIZE_TOOLCHAIN} (once)");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            SIZE_TOOLCHAIN,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
            "--target",
            "wasm32-unknown-unknown",
        ]))
    };
    match installed() {
        Ok(true) => return true,
        Ok(false) => {}
        Err(err) => eprintln!("xtask: {err:#}"),
    }
    match install().and_then(|()| installed()) {
        Ok(true) => true,
        outcome => {
            let why = match outcome {
                Err(err) => format!("{err:#}"),
                _ => "its rust-src or wasm32 target is still missing".into(),
            };
            eprintln!(
                "xtask: WARNING: {SIZE_TOOLCHAIN} could not be installed ({why}); the browser \
                 bundles build with the stable toolchain, 8–17 % larger"
            );
            false
        }
    }
}

/// A cargo-installed binary at an exact version: the project's `.tools/cargo/bin`, else one on
/// PATH with the same version, else installed into `.tools/cargo`.
fn cargo_tool(krate: &str, binary: &str, version: &str) -> Result<PathBuf> {
    let local = root().join(".tools/cargo/bin").join(binary);
    for candidate in [local.clone(), PathBuf::from(binary)] {
        if reports_version(&candidate, version) {
            return Ok(candidate);
        }
    }
    eprintln!("xtask: installing {krate} {version} (a few minutes, once)");
    run(Command::new("cargo")
        .args(["install", krate, "--version", version, "--root"])
        .arg(root().join(".tools/cargo"))
        .env_remove("CARGO_TARGET_DIR"))?;
    if !reports_version(&local, version) {
        bail!(
            "{} does not report version {version} after installing",
            local.display()
        );
    }
    Ok(local)
}

/// `wasm-split-cli` at [`WASM_SPLIT_VERSION`] in `.tools/cargo`. It prints no version, so the
/// record cargo keeps of what it installed there tells which one it is.
fn wasm_split() -> Result<PathBuf> {
    let tools = root().join(".tools/cargo");
    let binary = tools.join("bin/wasm-split-cli");
    let installed = || {
        let record = std::fs::read_to_string(tools.join(".crates.toml")).unwrap_or_default();
        binary.exists() && record.contains(&format!("wasm_split_cli_support {WASM_SPLIT_VERSION} "))
    };
    if !installed() {
        eprintln!(
            "xtask: installing wasm_split_cli_support {WASM_SPLIT_VERSION} (a few minutes, once)"
        );
        run(Command::new("cargo")
            .args(["install", "--locked", "wasm_split_cli_support", "--version"])
            .arg(WASM_SPLIT_VERSION)
            .args(["--features", "build-binary", "--root"])
            .arg(&tools)
            .env_remove("CARGO_TARGET_DIR"))?;
        if !installed() {
            bail!("{} is not there after installing", binary.display());
        }
    }
    Ok(binary)
}

fn reports_version(binary: &Path, version: &str) -> bool {
    Command::new(binary)
        .arg("--version")
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .any(|w| w == version)
        })
        .unwrap_or(false)
}

/// `npm ci` when any package pinned in package.json is missing or at another version.
fn npm_packages(root: &Path) -> Result<()> {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("package.json"))?)?;
    let pinned = manifest["devDependencies"]
        .as_object()
        .context("package.json has devDependencies")?;
    let all_present = pinned.iter().all(|(name, version)| {
        let path = root.join("node_modules").join(name).join("package.json");
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .is_some_and(|pkg| pkg["version"] == *version)
    });
    if !all_present {
        eprintln!(
            "xtask: installing npm packages (wrangler, binaryen, playwright-core, jsqr, pngjs, axe-core)"
        );
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(root))?;
    }
    Ok(())
}

/// Debian's Chromium and ChromeDriver (a test tool's own browser download cannot work here).
fn chromium() -> Result<()> {
    if Path::new("/usr/bin/chromium").exists() {
        return Ok(());
    }
    eprintln!("xtask: installing chromium from the Debian packages");
    let sudo = !is_root();
    let apt = |args: &[&str]| {
        let mut cmd = if sudo {
            Command::new("sudo")
        } else {
            Command::new("apt-get")
        };
        if sudo {
            cmd.arg("apt-get");
        }
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    run(&mut apt(&["update", "-q"]))?;
    run(&mut apt(&[
        "install",
        "-y",
        "-q",
        "chromium",
        "chromium-driver",
    ]))?;
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

impl Tools {
    /// Environment that keeps worker-build from downloading its own wasm-bindgen, wasm-opt and
    /// esbuild.
    pub fn worker_build_env(&self, cmd: &mut Command) {
        cmd.env("WASM_BINDGEN_BIN", &self.wasm_bindgen)
            .env("WASM_OPT_BIN", &self.wasm_opt)
            .env("ESBUILD_BIN", &self.esbuild);
        crate::wasm_rustflags(cmd);
    }
}
