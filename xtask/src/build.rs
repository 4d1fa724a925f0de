//! Builds the wasm artefacts: the browser client's three bundles into `pages/pkg/` (cargo,
//! wasm-bindgen, wasm-opt) and the coordinator into `coordinator/build/` (worker-build), then
//! reports their sizes and what each page loads first.
//!
//! Two kinds of build: [`Profile::Release`], what ships and what tests and benchmarks run, and
//! [`Profile::Dev`] for `cargo xtask dev`, which compiles in parallel and incrementally and
//! skips wasm-opt, so that a change reaches the running system in seconds.

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use anyhow::{bail, ensure, Context, Result};

use crate::tools::{Tools, SIZE_TOOLCHAIN};
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
const SHARED_INPUTS: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    "shared-protocol",
    "kernels",
    "workload",
];

/// Which cargo profile the artefacts are built with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Profile {
    /// `release`: LTO, one codegen unit, wasm-opt. What ships, and what tests measure.
    Release,
    /// `dev-fast` (see Cargo.toml): the same optimisation level, without LTO, in 16 codegen
    /// units, incremental, and no wasm-opt pass.
    Dev,
}

impl Profile {
    fn cargo_name(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Dev => "dev-fast",
        }
    }
}

pub fn all(tools: &Tools) -> Result<()> {
    client(tools, Profile::Release)?;
    coordinator(tools, Profile::Release)?;
    report()
}

/// Builds what is out of date for `cargo xtask dev`; the sizes of such a build say nothing
/// about what ships, so they are not reported.
pub fn dev(tools: &Tools) -> Result<()> {
    client(tools, Profile::Dev)?;
    coordinator(tools, Profile::Dev)
}

/// The newest modification time of any file a build reads: which change a failed build saw.
pub fn newest_source() -> Option<SystemTime> {
    Inputs::of(&[CLIENT_INPUTS, COORDINATOR_INPUTS].concat()).0
}

/// Whether a dev build would rebuild anything: the inputs of an artefact changed since it was
/// built, or it was built with the other profile.
pub fn dev_is_stale() -> bool {
    !Inputs::of(CLIENT_INPUTS).built_into(&client_artefact(), Profile::Dev)
        || !Inputs::of(COORDINATOR_INPUTS).built_into(&coordinator_artefact(), Profile::Dev)
}

/// The browser bundles, each a cdylib under `client/`: the dashboard (landing page and
/// dashboard), the device page, and the kernels the Web Workers run.
const CLIENT_BUNDLES: &[&str] = &["client-dashboard", "client-device", "client-compute"];

const CLIENT_INPUTS: &[&str] = &["client"];
const COORDINATOR_INPUTS: &[&str] = &["coordinator", "swarm-core"];

/// The last client bundle written, which stands for all of them.
fn client_artefact() -> std::path::PathBuf {
    root()
        .join("pages/pkg")
        .join(format!("{}_bg.wasm", crate_name(CLIENT_BUNDLES[2])))
}

fn coordinator_artefact() -> std::path::PathBuf {
    root().join("coordinator/build/index.js")
}

pub fn client(tools: &Tools, profile: Profile) -> Result<()> {
    let out = root().join("pages/pkg");
    let inputs = Inputs::of(CLIENT_INPUTS);
    let last = client_artefact();
    if inputs.built_into(&last, profile) {
        println!("xtask: client is up to date");
        return Ok(());
    }
    Inputs::forget(&last)?;
    // Start from an empty folder, so that no bundle of an older build is deployed with it.
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    web_wasm(tools, CLIENT_BUNDLES, &out, profile)?;
    inputs.record(&last, profile)
}

fn crate_name(package: &str) -> String {
    package.replace('-', "_")
}

/// Builds workspace cdylibs for the browser as the product ships them: one cargo build for
/// wasm32 (and one more for each bundle to split), then for each wasm-bindgen `--target web` into `out` (as `<crate>.js` and
/// `<crate>_bg.wasm`), `wasm-opt -Oz` (release only) and the JS glue minified by esbuild (a
/// quarter smaller gzipped). In a release build the bundles of [`SPLIT_BUNDLES`] are first
/// split ([`split`]).
pub fn web_wasm(tools: &Tools, packages: &[&str], out: &Path, profile: Profile) -> Result<()> {
    let release = profile == Profile::Release;
    let splits = |package: &str| release && SPLIT_BUNDLES.contains(&package);
    let cargo = || {
        if release && tools.size_toolchain {
            size_cargo()
        } else {
            cargo()
        }
    };
    let target = [
        "--lib",
        "--profile",
        profile.cargo_name(),
        "--target",
        "wasm32-unknown-unknown",
    ];
    let whole: Vec<&str> = packages.iter().copied().filter(|p| !splits(p)).collect();
    if !whole.is_empty() {
        let mut build = cargo();
        build.arg("build").args(target);
        for package in whole {
            build.args(["-p", package]);
        }
        run(&mut build)?;
    }
    // A bundle to split is built on its own: with its parts compiled as `#[lazy]` (the
    // client's `split` feature, whose exports would pull every part into any bundle linking
    // the client), and linked with its relocations, by which the splitter moves code out.
    for package in packages.iter().copied().filter(|p| splits(p)) {
        run(cargo()
            .arg("rustc")
            .args(target)
            .args(["-p", package, "--features", "client/split", "--"])
            .args(["-C", "link-arg=--emit-relocs"]))?;
    }
    for package in packages {
        let name = crate_name(package);
        let built = root()
            .join("target/wasm32-unknown-unknown")
            .join(profile.cargo_name())
            .join(format!("{name}.wasm"));
        let split_parts = splits(package);
        let (input, parts) = if split_parts {
            split(tools, &name, &built, out)?
        } else {
            (built, Vec::new())
        };
        let mut bindgen = Command::new(&tools.wasm_bindgen);
        bindgen.args(["--target", "web", "--no-typescript"]);
        if split_parts {
            // The splitter's loader takes the function table from the main module's exports.
            bindgen.arg("--keep-lld-exports");
        }
        run(bindgen
            .args(["--out-name", &name, "--out-dir"])
            .arg(out)
            .arg(&input))?;
        if release {
            let main = out.join(format!("{name}_bg.wasm"));
            for wasm in std::iter::once(&main).chain(parts.iter().filter(|p| is_wasm(p))) {
                run(Command::new(&tools.wasm_opt)
                    .arg("-Oz")
                    .args(WASM_FEATURES)
                    .arg(wasm)
                    .arg("-o")
                    .arg(wasm))?;
            }
        }
        let glue = out.join(format!("{name}.js"));
        for js in std::iter::once(&glue).chain(parts.iter().filter(|p| !is_wasm(p))) {
            run(Command::new(&tools.esbuild)
                .arg(js)
                .args([
                    "--minify",
                    "--format=esm",
                    "--log-level=warning",
                    "--allow-overwrite",
                    // A split bundle's glue names the loader once per imported item, each
                    // time the same module.
                    "--log-override:duplicate-object-key=silent",
                ])
                .arg(format!("--outfile={}", js.display())))?;
        }
    }
    Ok(())
}

/// The bundles whose `#[lazy]` parts a release build splits off: the dashboard's (the client's
/// `app::parts`).
const SPLIT_BUNDLES: &[&str] = &["client-dashboard"];

/// The name of the splitter's loader, which the main module's JS glue imports.
const SPLIT_LOADER: &str = "__wasm_split.js";

/// Splits the cargo output `built` of bundle `name` with the splitter: its `#[lazy]` parts, the
/// code only they reach, and the code several of them share go to wasm modules of their own in
/// `out` (`split_*.wasm`, `chunk_*.wasm`) with the loader that fetches them
/// ([`SPLIT_LOADER`]). Returns the main module, for wasm-bindgen, and the files written to
/// `out`.
fn split(
    tools: &Tools,
    name: &str,
    built: &Path,
    out: &Path,
) -> Result<(std::path::PathBuf, Vec<std::path::PathBuf>)> {
    let work = root()
        .join("target/wasm32-unknown-unknown/split")
        .join(name);
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    run(Command::new(&tools.wasm_split)
        .args(["--target", "web", "--out-name", name])
        .arg(built)
        .arg(&work))?;
    let main = work.join(format!("{name}.wasm"));
    std::fs::create_dir_all(out)?;
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(&work)? {
        let path = entry?.path();
        if path == main {
            continue;
        }
        let file = path.file_name().context("a file of the splitter")?;
        let is_part = file.to_string_lossy() == SPLIT_LOADER || is_wasm(&path);
        ensure!(
            is_part,
            "the splitter wrote an unexpected file: {}",
            path.display()
        );
        let to = out.join(file);
        std::fs::copy(&path, &to)?;
        parts.push(to);
    }
    ensure!(
        parts.iter().any(|p| p.ends_with(SPLIT_LOADER)),
        "the splitter wrote no {SPLIT_LOADER} for {name}"
    );
    parts.sort();
    Ok((main, parts))
}

fn is_wasm(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
}

/// Cargo of [`SIZE_TOOLCHAIN`], for a release build of browser bundles: it builds the standard
/// library for size along with them, and a panic aborts on the spot (`panic=immediate-abort`)
/// instead of formatting a message that the wasm32 target cannot print, and names no source
/// location (`-Z location-detail=none`).
fn size_cargo() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", SIZE_TOOLCHAIN, "cargo"])
        .args(["-Z", "build-std=std,panic_abort"])
        .args(["-Z", "build-std-features=optimize_for_size"])
        .current_dir(root());
    let mut flags = crate::wasm_rustflag_list();
    flags.extend(
        ["-Z", "unstable-options", "-C", "panic=immediate-abort"]
            .into_iter()
            .chain(["-Z", "location-detail=none"])
            .map(String::from),
    );
    cmd.env(
        "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS",
        flags.join(" "),
    );
    cmd
}

pub fn coordinator(tools: &Tools, profile: Profile) -> Result<()> {
    let inputs = Inputs::of(COORDINATOR_INPUTS);
    let built = coordinator_artefact();
    if inputs.built_into(&built, profile) {
        println!("xtask: coordinator is up to date");
        return Ok(());
    }
    Inputs::forget(&built)?;
    let mut cmd = Command::new(&tools.worker_build);
    match profile {
        Profile::Release => cmd.arg("--release"),
        Profile::Dev => cmd.args(["--profile", profile.cargo_name(), "--no-opt"]),
    };
    cmd.current_dir(root().join("coordinator"));
    tools.worker_build_env(&mut cmd);
    run(&mut cmd)?;
    inputs.record(&built, profile)
}

/// What a page makes the browser fetch before it works, beside its bundle's JS and wasm.
const PAGE_SHELL: &[&str] = &["pages/index.html", "pages/style.css"];

fn report() -> Result<()> {
    println!("\nxtask: wasm sizes (raw / gzip -9)");
    let mut artefacts: Vec<(String, String)> = CLIENT_BUNDLES
        .iter()
        .map(|package| {
            let name = crate_name(package);
            (name.clone(), format!("pages/pkg/{name}_bg.wasm"))
        })
        .collect();
    artefacts.push((
        "coordinator".into(),
        "coordinator/build/index_bg.wasm".into(),
    ));
    // The parts split off a bundle (`split_*.wasm`, `chunk_*.wasm`), fetched after first paint.
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(root().join("pages/pkg"))? {
        let path = entry?.path();
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        if is_wasm(&path) && (file.starts_with("split_") || file.starts_with("chunk_")) {
            parts.push(path);
        }
    }
    parts.sort();
    for (name, path) in &artefacts {
        let path = root().join(path);
        names_no_builder_folder(&path)?;
        let (raw, gz) = sizes(&path)?;
        println!("  {name:<17} {:>8.1} KiB / {:>7.1} KiB", kib(raw), kib(gz));
    }
    let mut parts_gz = 0;
    for path in &parts {
        names_no_builder_folder(path)?;
        let (raw, gz) = sizes(path)?;
        parts_gz += gz;
        let name = path.file_stem().unwrap_or_default().to_string_lossy();
        println!(
            "  part {name:<40} {:>8.1} KiB / {:>7.1} KiB",
            kib(raw),
            kib(gz)
        );
    }
    println!("\nxtask: first load, gzip -9 (HTML, CSS, the bundle's JS and wasm)");
    println!("  {:<32} {:>9} {:>6}", "page", "bytes", "goal");
    let device = first_load(&["client_device"])?;
    let workers = first_load(&["client_device", "client_compute"])?
        + sizes(&root().join("pages/worker.js"))?.1;
    // The dashboard's JS glue imports the splitter's loader when its bundle was split.
    let loader = root().join("pages/pkg").join(SPLIT_LOADER);
    let dashboard = first_load(&["client_dashboard"])?
        + if loader.exists() {
            sizes(&loader)?.1
        } else {
            0
        };
    for (page, bytes, goal) in [
        ("device page", device, "120 KB"),
        ("device page + its compute worker", workers, ""),
        ("landing page and dashboard", dashboard, "200 KB"),
        ("  + all its parts, after paint", dashboard + parts_gz, ""),
    ] {
        println!("  {page:<32} {bytes:>9} {goal:>6}");
    }
    Ok(())
}

/// Fails if a built artefact holds the path of a folder of this machine (see
/// [`crate::wasm_rustflags`]).
fn names_no_builder_folder(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    holds_no_builder_folder(&bytes).with_context(|| path.display().to_string())
}

/// Fails if these bytes of a wasm32 build hold the path of a folder of this machine.
pub fn holds_no_builder_folder(bytes: &[u8]) -> Result<()> {
    for (folder, _) in crate::builder_folders() {
        let folder = folder.as_bytes();
        if bytes.windows(folder.len()).any(|window| window == folder) {
            bail!(
                "the build holds the path of a folder of the machine that built it (RUSTFLAGS \
                 and CARGO_ENCODED_RUSTFLAGS, when set, replace the flags that rename them)"
            );
        }
    }
    Ok(())
}

/// Bytes (gzip) of the page shell and these bundles' JS and wasm.
fn first_load(bundles: &[&str]) -> Result<u64> {
    let mut files: Vec<String> = PAGE_SHELL.iter().map(|f| f.to_string()).collect();
    for bundle in bundles {
        files.push(format!("pages/pkg/{bundle}.js"));
        files.push(format!("pages/pkg/{bundle}_bg.wasm"));
    }
    files
        .iter()
        .map(|file| sizes(&root().join(file)).map(|(_, gz)| gz))
        .sum()
}

fn kib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0
}

/// What an artefact is built from, as of the start of its build: the newest modification
/// time of the files of these crates and of the shared inputs. It is recorded with the profile
/// beside the artefact once the build succeeds, so a file changed while a build ran (newer than
/// what was recorded) makes the next build run again, and so does asking for the other profile
/// (a test never runs a dev build). The build tools are pinned, so they do not count.
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

    /// What is recorded for an artefact built from these inputs with `profile`.
    fn recorded(&self, profile: Profile) -> Option<String> {
        self.0
            .map(|newest| format!("{} {}", profile.cargo_name(), nanos(newest)))
    }

    /// Whether `artefact` exists and was built from exactly these inputs with `profile`.
    fn built_into(&self, artefact: &Path, profile: Profile) -> bool {
        let Some(expected) = self.recorded(profile) else {
            return false;
        };
        artefact.exists()
            && std::fs::read_to_string(Self::stamp(artefact))
                .is_ok_and(|recorded| recorded.trim() == expected)
    }

    /// Drops what was recorded for `artefact`, before it is rebuilt: a build that fails half-way
    /// must not leave its half-written artefact looking up to date.
    fn forget(artefact: &Path) -> Result<()> {
        match std::fs::remove_file(Self::stamp(artefact)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn record(&self, artefact: &Path, profile: Profile) -> Result<()> {
        match self.recorded(profile) {
            Some(recorded) => {
                let stamp = Self::stamp(artefact);
                if let Some(folder) = stamp.parent() {
                    std::fs::create_dir_all(folder)?;
                }
                Ok(std::fs::write(stamp, recorded)?)
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
/// changed. A folder's own time counts too (a file deleted from it changes it), except at the
/// top: a crate's folder also changes when its build recreates `build/` or `pkg/` inside it.
fn newest(path: &Path) -> Option<SystemTime> {
    newest_below(path, false)
}

fn newest_below(path: &Path, count_folder: bool) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    let mut latest = if count_folder {
        meta.modified().ok()?
    } else {
        SystemTime::UNIX_EPOCH
    };
    for entry in std::fs::read_dir(path).ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" || name == "build" || name == "pkg" {
            continue;
        }
        latest = latest.max(newest_below(&entry.path(), true)?);
    }
    Some(latest)
}
