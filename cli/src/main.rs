//! `ostrich`: the owner's command line for own workloads (docs/WORKLOADS.md).
//!
//! ```sh
//! export OSTRICH_OWNER_KEY=…                      # from the swarm's owner link
//! export OSTRICH_SWARM=http://127.0.0.1:8787/s/<swarm id>
//! ostrich upload f.wasm
//! ostrich submit --module f.wasm --range 0..1000000 --out results.ndjson
//! ostrich submit --module f.wasm --inputs items.ndjson --out results.ndjson
//! ostrich status <job id>
//! ostrich results <job id> --from 5000 >> results.ndjson
//! ostrich cancel <job id>
//! ```
//!
//! `upload` checks a module against the workload ABI here, before anything is sent, and
//! stores it for the swarm unless it is stored already (modules are named by their SHA-256).
//! `submit` uploads what is missing, submits the job and writes its results in item order as
//! they are verified, following the results stream across answers and dropped connections
//! ([`follow::Follower`]), with its progress on stderr.

mod follow;

use std::io::{BufRead as _, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use follow::{AfterAnswer, Follower};
use sha2::{Digest, Sha256};
use shared_protocol::{
    is_id, HttpError, JobResult, JobSpec, JobView, ModuleInfo, OwnerCommand, OwnerReply,
};
use workload::module::{check, hex};

/// Answers of the results stream in a row that may end without their closing line (a lost
/// connection) and without a new item before `follow` gives up.
const MAX_DROPPED: u32 = 10;

#[derive(Parser, Debug)]
#[command(
    name = "ostrich",
    version,
    about = "Run your own WebAssembly workloads on an Ostrich Legs swarm"
)]
struct Cli {
    /// The swarm's dashboard URL: http(s)://host/s/<swarm id>
    #[arg(long, env = "OSTRICH_SWARM")]
    swarm: String,
    /// The swarm's owner key (the part after #owner= in its owner link)
    #[arg(long = "owner-key", env = "OSTRICH_OWNER_KEY", hide_env_values = true)]
    owner_key: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a module against the workload ABI and store it for the swarm, unless it is stored
    /// already; prints its SHA-256, the name jobs refer to it by
    Upload {
        /// The module (.wasm)
        module: PathBuf,
    },
    /// Upload the module unless the swarm has it, submit a job that runs it once per input,
    /// and write the results in item order as they are verified (NDJSON, one line per item)
    Submit {
        /// The module (.wasm)
        #[arg(long)]
        module: PathBuf,
        /// The inputs A..B: the integers A, A + step, … below B, each given to the module as
        /// its 8 little-endian bytes
        #[arg(long, value_parser = parse_range, required_unless_present = "inputs", conflicts_with = "inputs")]
        range: Option<(u64, u64)>,
        #[arg(long, default_value_t = 1)]
        step: u64,
        /// The inputs from a file: one JSON value per line (.ndjson or .jsonl: each line's
        /// text is an item), or any other file as length-prefixed items (each item's length
        /// as 4 little-endian bytes, then its bytes); at most 100,000 items and 256 MiB
        #[arg(long)]
        inputs: Option<PathBuf>,
        /// How long one item may run on a device, in milliseconds
        #[arg(long, default_value_t = 10_000)]
        time_limit_ms: u32,
        /// Write the results here instead of to stdout
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only submit: print the job's id and leave
        #[arg(long)]
        no_wait: bool,
    },
    /// Write a workload job's results in item order from an item on, waiting for those not
    /// verified yet
    Results {
        job: String,
        /// The first item to write
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Write the results here (appended) instead of to stdout
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show a job's progress
    Status { job: String },
    /// Cancel a job: its leases are withdrawn and the next job starts
    Cancel { job: String },
}

/// `A..B` with `A < B`.
fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (a, b) = text
        .split_once("..")
        .ok_or_else(|| format!("{text:?} is not a range like 0..1000"))?;
    let number = |t: &str| {
        t.trim()
            .replace('_', "")
            .parse::<u64>()
            .map_err(|err| format!("{t:?}: {err}"))
    };
    let (a, b) = (number(a)?, number(b)?);
    if a >= b {
        return Err(format!("the range {a}..{b} is empty"));
    }
    Ok((a, b))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ostrich: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let swarm = Swarm::from_url(&cli.swarm, &cli.owner_key)?;
    match &cli.command {
        Command::Upload { module } => {
            let (info, stored) = swarm.upload(module)?;
            let what = if stored { "stored" } else { "already stored" };
            println!(
                "{}  {what}  ({} bytes, memory {}..{} pages)",
                info.sha256, info.bytes, info.memory_pages[0], info.memory_pages[1]
            );
            Ok(())
        }
        Command::Submit {
            module,
            range,
            step,
            inputs,
            time_limit_ms,
            out,
            no_wait,
        } => {
            if *step == 0 {
                bail!("--step must be at least 1");
            }
            // The input file is read and checked before anything is sent.
            let pages = match inputs {
                Some(path) => Some(input_pages(path)?),
                None => None,
            };
            let (info, stored) = swarm.upload(module)?;
            if stored {
                eprintln!("module {} stored", info.sha256);
            }
            let job = match (range, pages) {
                (_, Some(pages)) => {
                    let inputs = swarm.upload_inputs(&pages)?;
                    JobSpec::Workload {
                        module: info.sha256,
                        start: 0,
                        step: 0,
                        items: inputs.iter().map(|p| p.items).sum(),
                        time_limit_ms: *time_limit_ms,
                        inputs: Some(inputs),
                    }
                }
                (Some((start, end)), None) => JobSpec::Workload {
                    module: info.sha256,
                    start: *start,
                    step: *step,
                    items: (end - start).div_ceil(*step),
                    time_limit_ms: *time_limit_ms,
                    inputs: None,
                },
                (None, None) => bail!("give --range or --inputs"),
            };
            let job_id = swarm.submit(job)?;
            if *no_wait {
                println!("{job_id}");
                return Ok(());
            }
            eprintln!("job {job_id} submitted; `ostrich results {job_id} --from N` resumes");
            match out {
                Some(path) => swarm.follow(&job_id, 0, &mut create(path, false)?),
                None => swarm.follow(&job_id, 0, &mut std::io::stdout().lock()),
            }
        }
        Command::Results { job, from, out } => match out {
            Some(path) => swarm.follow(job, *from, &mut create(path, true)?),
            None => swarm.follow(job, *from, &mut std::io::stdout().lock()),
        },
        Command::Status { job } => {
            let view = swarm.job(job)?;
            println!("{}", status_line(&view));
            Ok(())
        }
        Command::Cancel { job } => {
            swarm.owner(&OwnerCommand::CancelJob {
                job_id: job.clone(),
            })?;
            eprintln!("job {job} cancelled");
            Ok(())
        }
    }
}

/// The items of an input file, in pages to upload: the lines of an `.ndjson` or `.jsonl` file
/// (each must be one JSON value; an empty line is skipped), or the length-prefixed items of
/// any other file.
fn input_pages(path: &Path) -> Result<Vec<Vec<u8>>> {
    const MAX_BYTES: u64 = 256 * 1024 * 1024;
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size > MAX_BYTES {
        bail!("{}: an input file is at most 256 MiB", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let ndjson = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("ndjson" | "jsonl")
    );
    let items: Vec<&[u8]> = if ndjson {
        let mut items = Vec::new();
        for (number, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            serde_json::from_slice::<serde::de::IgnoredAny>(line).with_context(|| {
                format!("{} line {}: not one JSON value", path.display(), number + 1)
            })?;
            if line.len() > workload::module::MAX_INPUT_BYTES {
                bail!(
                    "{} line {}: an item is at most {} bytes",
                    path.display(),
                    number + 1,
                    workload::module::MAX_INPUT_BYTES
                );
            }
            items.push(line);
        }
        items
    } else {
        workload::inputs::ranges(&bytes)
            .map_err(|why| anyhow!("{}: {why}", path.display()))?
            .into_iter()
            .filter_map(|range| bytes.get(range))
            .collect()
    };
    if items.is_empty() || items.len() as u64 > shared_protocol::MAX_INPUT_SET_ITEMS {
        bail!(
            "{}: {} items; an input set has 1 to {}",
            path.display(),
            items.len(),
            shared_protocol::MAX_INPUT_SET_ITEMS
        );
    }
    Ok(workload::inputs::pages(
        items,
        shared_protocol::MAX_INPUT_PAGE_BYTES,
    ))
}

/// The results file: created (or truncated), or appended to.
fn create(path: &Path, append: bool) -> Result<std::io::BufWriter<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(std::io::BufWriter::new(file))
}

/// One line about a job: `running: 1,234 of 10,000 items, 3 failed, 512 items/s, about 17 s
/// left`.
fn status_line(job: &JobView) -> String {
    let state = serde_json::to_value(job.state).unwrap_or_default();
    let mut line = format!(
        "{}: {} of {} items",
        state.as_str().unwrap_or("?"),
        job.done_units,
        job.total_units
    );
    if let JobResult::Workload { failed } = job.result {
        line.push_str(&format!(", {failed} failed"));
    }
    if job.unverified_units > 0 {
        line.push_str(&format!(
            ", {} waiting for a second device",
            job.unverified_units
        ));
    }
    if job.units_per_second > 0.0 {
        line.push_str(&format!(", {:.0} items/s", job.units_per_second));
    }
    if let Some(eta) = job.eta_ms {
        line.push_str(&format!(", about {} s left", eta.div_ceil(1000)));
    }
    line
}

/// A swarm's API, as its owner.
struct Swarm {
    /// `http(s)://host[:port]/api/swarms/<id>`
    api: String,
    owner_key: String,
    http: ureq::Agent,
}

impl Swarm {
    /// From the dashboard URL (`http(s)://host[:port]/s/<id>`, any fragment ignored).
    fn from_url(swarm_url: &str, owner_key: &str) -> Result<Self> {
        let url = url::Url::parse(swarm_url).with_context(|| format!("--swarm {swarm_url:?}"))?;
        let id = match url
            .path_segments()
            .map(|s| s.collect::<Vec<_>>())
            .as_deref()
        {
            Some(["s", id]) if is_id(id, &()).is_ok() => (*id).to_owned(),
            _ => bail!("--swarm must be a swarm's dashboard URL, http(s)://host/s/<swarm id>"),
        };
        if !matches!(url.scheme(), "http" | "https") {
            bail!("--swarm must be an http or https URL");
        }
        let origin = url.origin().ascii_serialization();
        Ok(Self {
            api: format!("{origin}/api/swarms/{id}"),
            owner_key: owner_key.to_owned(),
            http: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(60))
                .build(),
        })
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.owner_key)
    }

    /// An owner command, answered.
    fn owner(&self, command: &OwnerCommand) -> Result<OwnerReply> {
        let resp = self
            .http
            .post(&format!("{}/owner", self.api))
            .set("authorization", &self.bearer())
            .set("content-type", "application/json")
            .send_string(&shared_protocol::encode(command))
            .map_err(refused)?;
        Ok(resp.into_json()?)
    }

    /// Submits a job; its id.
    fn submit(&self, job: JobSpec) -> Result<String> {
        match self.owner(&OwnerCommand::SubmitJob { job })? {
            OwnerReply::JobSubmitted { job_id } => Ok(job_id),
            other => bail!("the swarm answered {other:?}"),
        }
    }

    fn job(&self, job_id: &str) -> Result<JobView> {
        let resp = self
            .http
            .get(&format!("{}/jobs/{job_id}", self.api))
            .call()
            .map_err(refused)?;
        Ok(resp.into_json()?)
    }

    /// Writes the job's results from item `from` on to `out`, one line per item in item
    /// order, following the stream across answers and lost connections until every item is
    /// written; progress goes to stderr.
    fn follow(&self, job_id: &str, from: u64, out: &mut dyn Write) -> Result<()> {
        let mut follower = Follower::new(from);
        let mut dropped = 0u32;
        let started = Instant::now();
        let mut reported = Instant::now();
        loop {
            follower.start_answer();
            let before = follower.next();
            let url = format!(
                "{}/jobs/{job_id}/results?from={}",
                self.api,
                follower.next()
            );
            match self
                .http
                .get(&url)
                .set("authorization", &self.bearer())
                .call()
            {
                Ok(resp) => {
                    // Only whole lines count: a read that fails or ends mid-line is a lost
                    // connection, like an answer that ends without its closing line.
                    let mut reader = BufReader::new(resp.into_reader());
                    let mut line = Vec::new();
                    while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0)
                        && line.last() == Some(&b'\n')
                    {
                        let text = String::from_utf8_lossy(&line);
                        let text = text.trim_end();
                        if follower.line(text).map_err(|why| anyhow!(why))? {
                            writeln!(out, "{text}")?;
                        }
                        line.clear();
                        if reported.elapsed() >= Duration::from_secs(2) {
                            eprintln!("{}", progress(&follower, from, started));
                            reported = Instant::now();
                        }
                    }
                }
                Err(err @ ureq::Error::Status(..)) => return Err(refused(err)),
                Err(ureq::Error::Transport(_)) => {}
            }
            out.flush()?;
            match follower.end_answer() {
                AfterAnswer::Complete => {
                    eprintln!("{}", progress(&follower, from, started));
                    return Ok(());
                }
                AfterAnswer::Cancelled { next } => {
                    bail!("the job was cancelled: items from {next} on were never computed")
                }
                AfterAnswer::Resume { dropped: false, .. } => dropped = 0,
                AfterAnswer::Resume { from, .. } => {
                    // Given up only after answers in a row that brought nothing.
                    dropped = if from > before { 1 } else { dropped + 1 };
                    if dropped > MAX_DROPPED {
                        bail!("the results stream was lost {MAX_DROPPED} times in a row; `ostrich results {job_id} --from {from}` goes on");
                    }
                    eprintln!("the results stream was lost; resuming from item {from}");
                    std::thread::sleep(Duration::from_millis(250 << dropped.min(5)));
                }
            }
        }
    }

    /// Stores the pages of an input set that the swarm does not have yet; the job's list of
    /// them.
    fn upload_inputs(&self, pages: &[Vec<u8>]) -> Result<Vec<shared_protocol::InputPage>> {
        let mut uploaded = Vec::new();
        for page in pages {
            let sha256 = hex(&Sha256::digest(page).into());
            let resp = self
                .http
                .put(&format!("{}/inputs/{sha256}", self.api))
                .set("authorization", &self.bearer())
                .set("content-type", "application/octet-stream")
                .send_bytes(page)
                .map_err(refused)?;
            let stored: shared_protocol::InputPage = resp.into_json()?;
            uploaded.push(stored);
        }
        eprintln!(
            "{} input pages stored ({} items)",
            uploaded.len(),
            uploaded.iter().map(|p| p.items).sum::<u64>()
        );
        Ok(uploaded)
    }

    /// Checks the module at `path`, then stores it unless the swarm has it already. Returns
    /// its description and whether this call stored it.
    fn upload(&self, path: &PathBuf) -> Result<(ModuleInfo, bool)> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let module = check(&bytes).map_err(|why| anyhow!("{}: {why}", path.display()))?;
        let sha256 = hex(&module.digest);
        let url = format!("{}/modules/{sha256}", self.api);
        let stored_already = match self
            .http
            .head(&url)
            .set("authorization", &self.bearer())
            .call()
        {
            Ok(_) => true,
            Err(ureq::Error::Status(404, _)) => false,
            Err(ureq::Error::Status(401, _)) => {
                bail!("the swarm refused the owner key (bad_owner_key)")
            }
            Err(err) => return Err(refused(err)),
        };
        if stored_already {
            return Ok((module.info(), false));
        }
        let resp = self
            .http
            .put(&url)
            .set("authorization", &self.bearer())
            .set("content-type", "application/wasm")
            .send_bytes(&bytes)
            .map_err(refused)?;
        let stored = resp.status() == 201;
        Ok((resp.into_json()?, stored))
    }
}

/// An HTTP failure as the coordinator explained it (its error code and message).
fn refused(err: ureq::Error) -> anyhow::Error {
    match err {
        ureq::Error::Status(status, resp) => match resp.into_json::<HttpError>() {
            Ok(e) => {
                let code = serde_json::to_value(e.code).unwrap_or_default();
                anyhow!(
                    "the swarm refused ({status} {}): {}",
                    code.as_str().unwrap_or("?"),
                    e.message
                )
            }
            Err(_) => anyhow!("the swarm answered {status}"),
        },
        other => anyhow!("could not reach the swarm: {other}"),
    }
}

/// `1,234 of 10,000 items written, 512 items/s, about 17 s left`.
fn progress(follower: &Follower, from: u64, started: Instant) -> String {
    let written = follower.next().saturating_sub(from);
    let rate = written as f64 / started.elapsed().as_secs_f64().max(0.001);
    let mut line = match follower.items() {
        Some(items) => format!("{} of {items} items written", follower.next()),
        None => format!("{} items written", follower.next()),
    };
    line.push_str(&format!(", {rate:.0} items/s"));
    if let (Some(items), true) = (follower.items(), rate > 0.0) {
        let left = items.saturating_sub(follower.next()) as f64 / rate;
        line.push_str(&format!(", about {left:.0} s left"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_a_below_b() {
        assert_eq!(parse_range("0..1_000"), Ok((0, 1000)));
        assert_eq!(parse_range(" 5 .. 6"), Ok((5, 6)));
        for bad in ["5..5", "6..5", "1-5", "a..b", "..5"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_swarm_is_named_by_its_dashboard_url() {
        let id = "45efa814ffe6315a10063ca3f8f44f38";
        let swarm =
            Swarm::from_url(&format!("https://example.org:8443/s/{id}#owner=x"), "k").unwrap();
        assert_eq!(
            swarm.api,
            format!("https://example.org:8443/api/swarms/{id}")
        );
        for bad in [
            "https://example.org/join/abc",
            "ftp://example.org/s/45efa814ffe6315a10063ca3f8f44f38",
            "not a url",
        ] {
            assert!(Swarm::from_url(bad, "k").is_err(), "{bad}");
        }
    }
}
