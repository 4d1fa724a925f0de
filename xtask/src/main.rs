//! `cargo xtask <command>`: the project's automation, in Rust instead of shell scripts.
//!
//! - `setup`  — install the toolchain pieces (idempotent, skips what is present)
//! - `build`  — build the client into `pages/pkg` and the coordinator into `coordinator/build`
//! - `dev`    — setup + build, then run the system locally with `wrangler dev`
//! - `test`   — setup + build + every check and test (what CI runs)
//! - `deploy [--env staging|production]` — setup + build, then `wrangler deploy`
//! - `examples` — build the example workloads in `examples/` into `target/examples/*.wasm`
//! - `e2e [FILE …]` — setup + build, then the browser tests alone (or only the named files)
//! - `bench`  — benchmark tables (scheduling simulator, scheduler throughput, verification,
//!   dashboard traffic, kernels native vs WASM in Chromium), measured on a release build;
//!   `bench sched` — the scheduler throughput table alone;
//!   `bench workload` — own workloads: the example `pi` on native agents against workerd,
//!   and on the native runner alone;
//!   `bench load [--cores C] [--rate R] [--warm-up S] [N …]` — the load table alone: N
//!   simulated devices against workerd
//!   (`SOCKETS_PER_GATEWAY=0` in the environment: a swarm without gateway objects)

mod bench;
mod build;
mod examples;
mod kernels_bench;
mod load;
mod tools;
mod workload_bench;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use runtime_tests::{free_port, short_timeouts, Wrangler, WranglerCommand};

const USAGE: &str =
    "usage: cargo xtask <setup|build|dev [--port N]|test|deploy [--env staging|production]|examples|e2e [FILE …]|bench [load [--cores C] [--rate R] [--warm-up S] [N …] | sched | workload]>";

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("setup") => tools::setup(true).map(drop),
        Some("build") => build::all(&tools::setup(false)?),
        Some("dev") => dev(&args[1..]),
        Some("test") => test(),
        Some("examples") => examples::build().map(drop),
        // `e2e [FILE …]`: the browser tests alone (all, or the named files of tests/e2e).
        Some("e2e") => {
            build::all(&tools::setup(true)?)?;
            browser_tests(&args[1..])
        }
        // Benchmarks measure the release build: a debug xtask runs its release self.
        Some("bench") if cfg!(debug_assertions) => run(cargo()
            .args(["run", "--release", "--quiet", "--package", "xtask", "--"])
            .args(&args)),
        // `bench load [--cores C] [--rate R] [--warm-up S] [N …]` runs only the load table, for
        // those device counts (see `load::Model`).
        Some("bench") => match args.get(1).map(String::as_str) {
            Some("load") => {
                let (model, counts) = load::Model::parse(&args[2..])?;
                let counts = if counts.is_empty() {
                    load::DEFAULT_COUNTS.to_vec()
                } else {
                    counts
                };
                load::table(&counts, model)
            }
            Some("sched") => {
                bench::scheduler_throughput();
                Ok(())
            }
            Some("workload") => workload_bench::table(),
            _ => bench::all(),
        },
        Some("deploy") => {
            // `--env staging|production` picks one of wrangler.toml's environments.
            let env = match &args[1..] {
                [] => None,
                [flag, env]
                    if flag == "--env" && ["staging", "production"].contains(&env.as_str()) =>
                {
                    Some(env.clone())
                }
                _ => bail!("usage: cargo xtask deploy [--env staging|production]"),
            };
            let tools = tools::setup(false)?;
            build::all(&tools)?;
            let mut deploy = Command::new("node");
            deploy.arg(wrangler_js()).arg("deploy").current_dir(root());
            if let Some(env) = env {
                deploy.args(["--env", &env]);
            }
            run(&mut deploy)
        }
        _ => bail!("{USAGE}"),
    }
}

/// The repository root.
pub fn root() -> PathBuf {
    runtime_tests::repo_root()
}

fn wrangler_js() -> PathBuf {
    root().join("node_modules/wrangler/bin/wrangler.js")
}

/// Runs a command to completion, failing unless it succeeds.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{:?} failed with {status}", cmd.get_program());
    }
    Ok(())
}

/// Every cargo command of the xtask, run from the repository root, with [`wasm_rustflags`].
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    wasm_rustflags(&mut cmd);
    cmd
}

/// Makes a command's wasm32 builds name source files by `/cargo-home/…` and `/ostrich-legs/…`
/// instead of by the builder's folders ([`builder_folders`]). Panic locations are kept in a
/// wasm's data, so without this every bundle shipped to browsers and the coordinator carry the
/// path of the builder's home, and so would a workload module that keeps a panic location (its
/// SHA-256, its name, would then differ from one machine to another; the pi example keeps
/// none). Native builds are left alone.
pub fn wasm_rustflags(cmd: &mut Command) {
    cmd.env(
        "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS",
        wasm_rustflag_list().join(" "),
    );
}

/// The flags of [`wasm_rustflags`], one per item.
pub fn wasm_rustflag_list() -> Vec<String> {
    builder_folders()
        .into_iter()
        .map(|(from, to)| format!("--remap-path-prefix={from}={to}"))
        .collect()
}

/// The folders of this machine that sources are compiled from (the cargo home, the rustup
/// home, the repository) with the name a wasm32 build gives each instead. A folder whose path
/// has a space is left out: cargo splits that variable at spaces (and so is the root folder,
/// which names nothing).
pub fn builder_folders() -> Vec<(String, &'static str)> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    // The rustup home holds the standard library's sources that the release browser bundles
    // are built from (`-Z build-std`).
    let rustup_home = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".rustup")));
    [
        (cargo_home, "/cargo-home"),
        (rustup_home, "/rustup-home"),
        (Some(root()), "/ostrich-legs"),
    ]
    .into_iter()
    .filter_map(|(from, to)| {
        let from = from?.to_str()?.to_owned();
        (from.len() > 1 && !from.contains(' ')).then_some((from, to))
    })
    .collect()
}

fn dev(args: &[String]) -> Result<()> {
    let port = match args {
        [] => 8787,
        [flag, port] if flag == "--port" => port.parse().context("--port takes a number")?,
        _ => bail!("{USAGE}"),
    };
    let tools = tools::setup(false)?;
    build::dev(&tools)?;
    let spec = WranglerCommand {
        port,
        persist_dir: root().join(".state/dev"),
        vars: vec![],
    };
    println!("\nOstrich Legs is starting on http://127.0.0.1:{port}/ — open it in a browser (Ctrl-C stops it)");
    println!("A change to the sources is rebuilt and reloaded by itself.\n");
    let mut wrangler = spec
        .command()?
        .spawn()
        .context("starting wrangler (is node on PATH?)")?;
    // Watch the sources: whatever changed is rebuilt (the dev profile) and wrangler reloads the
    // coordinator and serves the new client by itself. A build that fails is reported and
    // tried again on the next change; the running system keeps the last good build.
    let mut failed_at = None;
    loop {
        if let Some(status) = wrangler.try_wait()? {
            bail!("wrangler stopped: {status}");
        }
        std::thread::sleep(Duration::from_millis(500));
        if !build::dev_is_stale() {
            continue;
        }
        let changed = build::newest_source();
        if failed_at.is_some() && failed_at == changed {
            continue;
        }
        let started = Instant::now();
        match build::dev(&tools) {
            Ok(()) => {
                failed_at = None;
                println!(
                    "\nxtask: rebuilt in {:.1} s; wrangler reloads it\n",
                    started.elapsed().as_secs_f64()
                );
            }
            Err(err) => {
                failed_at = changed;
                eprintln!("\nxtask: the build failed ({err:#}); waiting for the next change\n");
            }
        }
    }
}

fn test() -> Result<()> {
    let started = Instant::now();
    let tools = tools::setup(true)?;
    step("format", || {
        run(cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    step("clippy (native)", || {
        run(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))
    })?;
    // The coordinator and every crate it runs: they deny the constructs that can panic, so
    // that no input can reset the object (see ARCHITECTURE.md, "Failure and restart").
    step("clippy (wasm32)", || {
        run(cargo().args([
            "clippy",
            "-p",
            "shared-protocol",
            "-p",
            "swarm-core",
            "-p",
            "kernels",
            "-p",
            "coordinator",
            "-p",
            "client",
            "-p",
            "client-dashboard",
            "-p",
            "client-device",
            "-p",
            "client-compute",
            "-p",
            "kernels-bench",
            "-p",
            "example-pi",
            // The dashboard's parts as a release build compiles them (`#[lazy]`).
            "--features",
            "client/split",
            "--target",
            "wasm32-unknown-unknown",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    step("clippy (runtime tests)", || {
        run(cargo().args([
            "clippy",
            "-p",
            "runtime-tests",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    // The fuzzer runs on its own, with its output shown: it prints the inputs it executed.
    let fuzz_test = "the_whole_core_keeps_its_invariants_under_a_seeded_fuzz";
    step("unit and core tests", || {
        run(cargo().args(["test", "--", "--skip", fuzz_test]))
    })?;
    step("core fuzzer (50,000 inputs)", || {
        run(cargo().args([
            "test",
            "-p",
            "swarm-core",
            "--test",
            "fuzz",
            "--",
            "--nocapture",
            fuzz_test,
        ]))
    })?;
    // The example workloads too: the agent tests run them on the swarm.
    step("build", || {
        build::all(&tools)?;
        examples::build().map(drop)
    })?;
    step("runtime tests (workerd)", || {
        run(cargo().args(["test", "-p", "runtime-tests"]))
    })?;
    step("browser tests (chromium)", || browser_tests(&[]))?;
    println!("\nxtask: all checks passed in {:.0?}", started.elapsed());
    Ok(())
}

fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("\n=== {name}");
    let started = Instant::now();
    f().with_context(|| format!("step '{name}' failed"))?;
    println!("=== {name}: ok ({:.1?})", started.elapsed());
    Ok(())
}

/// Runs the Playwright tests in `tests/e2e` against a fresh system with shortened timeouts.
/// The coordinator also allows the origin of a second port, where `pages.test.mjs` serves the
/// client as Cloudflare Pages would.
fn browser_tests(files: &[String]) -> Result<()> {
    let persist = tempdir("e2e")?;
    let pages_port = free_port()?;
    let mut vars = short_timeouts();
    vars.push((
        "ALLOWED_ORIGINS".to_owned(),
        format!("http://127.0.0.1:{pages_port}"),
    ));
    let reference = mandelbrot_reference(&persist)?;
    let workloads = examples::browser_reference(&persist)?;
    // The native agent joins a browser on a swarm in `workload.test.mjs`.
    run(cargo().args(["build", "-p", "agent"]))?;
    let agent = root().join("target/debug/ostrich-agent");
    let mut wrangler = Wrangler::start_anywhere(&persist, vars)?;
    let mut node = Command::new("node");
    node.args(["--test", "--test-concurrency=1"]);
    if files.is_empty() {
        node.arg(root().join("tests/e2e"));
    } else {
        node.args(files.iter().map(|f| root().join("tests/e2e").join(f)));
    }
    let result = run(node
        .env("OSTRICH_BASE_URL", &wrangler.base)
        .env("OSTRICH_MANDELBROT_REFERENCE", &reference)
        .env("OSTRICH_WORKLOAD_REFERENCE", &workloads)
        .env("OSTRICH_AGENT", &agent)
        .env("OSTRICH_PAGES_PORT", pages_port.to_string())
        .env("CHROMIUM_PATH", "/usr/bin/chromium")
        .current_dir(root()));
    if result.is_err() {
        eprintln!("--- wrangler output ---\n{}", wrangler.log());
    }
    wrangler.stop();
    let _ = std::fs::remove_dir_all(persist);
    result
}

/// The Mandelbrot job the browser test submits, with the PNG the native kernels render for
/// it: writes `{ "job": <job spec>, "png": <path> }` into `dir` and returns that file's path.
fn mandelbrot_reference(dir: &Path) -> Result<PathBuf> {
    let view = kernels::mandelbrot::View {
        center_re: -0.75,
        center_im: 0.05,
        scale: 2.75,
        width: 360,
        height: 240,
        max_iter: 500,
    };
    let job = shared_protocol::JobSpec::Mandelbrot {
        center_re: view.center_re,
        center_im: view.center_im,
        scale: view.scale,
        width: view.width,
        height: view.height,
        max_iter: view.max_iter,
    };
    let png = dir.join("mandelbrot-reference.png");
    std::fs::write(&png, kernels::mandelbrot::render_png(&view))?;
    let path = dir.join("mandelbrot-reference.json");
    let text = serde_json::json!({ "job": job, "png": png });
    std::fs::write(&path, text.to_string())?;
    Ok(path)
}

/// A fresh folder under `target/` (ignored) for one run's state.
fn tempdir(name: &str) -> Result<PathBuf> {
    let dir = root()
        .join("target/tmp")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Size of a file, raw and gzip-compressed, for the build report.
pub fn sizes(path: &Path) -> Result<(u64, u64)> {
    let raw = std::fs::metadata(path)?.len();
    let gz = Command::new("gzip")
        .args(["-9", "-c"])
        .arg(path)
        .output()?
        .stdout
        .len() as u64;
    Ok((raw, gz))
}
