//! Real `ostrich-agent` processes for the runtime tests: built with the cargo that runs the
//! test, spawned with their output collected, killed when dropped.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

/// One `ostrich-agent` process and everything it printed (stdout and stderr, in order of
/// arrival). Killed when dropped, so no agent outlives the test.
pub struct AgentProcess {
    pub label: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl AgentProcess {
    pub fn spawn(bin: &Path, label: &str, args: &[String]) -> Result<Self> {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take(), &lines);
        collect(child.stderr.take(), &lines);
        Ok(Self {
            label: label.to_owned(),
            child,
            lines,
        })
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn output(&self) -> String {
        format!(
            "--- output of agent {} ---\n{}",
            self.label,
            self.lines().join("\n")
        )
    }

    /// The first printed line that `pick` accepts, waiting up to `timeout`.
    pub fn wait_for_line(
        &mut self,
        timeout: Duration,
        pick: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| pick(l)) {
                return Ok(line);
            }
            if let Some(status) = self.child.try_wait()? {
                // Give the pipe readers a moment to deliver the last lines.
                std::thread::sleep(Duration::from_millis(200));
                if let Some(line) = self.lines().into_iter().find(|l| pick(l)) {
                    return Ok(line);
                }
                bail!(
                    "agent {} exited with {status}\n{}",
                    self.label,
                    self.output()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "agent {} did not print the awaited line within {timeout:?}\n{}",
                    self.label,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                std::thread::sleep(Duration::from_millis(200));
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "agent {} still runs after {timeout:?}\n{}",
                    self.label,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the process where it stands (SIGSTOP): it reads, computes and sends nothing more,
    /// but its socket stays open, so the coordinator still counts it as connected.
    pub fn pause(&self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-s", "STOP", &self.child.id().to_string()])
            .status()
            .context("running kill -s STOP")?;
        ensure!(status.success(), "kill -s STOP {}: {status}", self.label);
        Ok(())
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn collect(stream: Option<impl Read + Send + 'static>, lines: &Arc<Mutex<Vec<String>>>) {
    if let Some(stream) = stream {
        let lines = Arc::clone(lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stream)
                .lines()
                .map_while(std::result::Result::ok)
            {
                lines
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
    }
}

/// Builds the agent with the cargo that runs this test; returns the binary's path.
pub fn build_agent(root: &Path) -> Result<PathBuf> {
    build_binary(root, "agent", "ostrich-agent")
}

/// Builds `package` (debug) with the cargo that runs this test; returns the path of its
/// binary `bin`.
pub fn build_binary(root: &Path, package: &str, bin: &str) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", package])
        .current_dir(root)
        .status()
        .with_context(|| format!("running cargo build -p {package}"))?;
    ensure!(status.success(), "cargo build -p {package}: {status}");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(|| root.join("target"), |dir| root.join(dir));
    let path = target
        .join("debug")
        .join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    ensure!(
        path.exists(),
        "{} is missing after the build",
        path.display()
    );
    Ok(path)
}
