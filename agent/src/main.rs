//! `ostrich-agent`: the native device agent. It joins a swarm from an invite link, keeps its
//! device credential in a state file, and computes the swarm's leases on worker threads with
//! the same kernels the browsers run.
//!
//! ```text
//! ostrich-agent http://127.0.0.1:8787/join/<swarm_id>#t=<token> [--cores N] [--name NAME] [--state FILE]
//! ostrich-agent http://127.0.0.1:8787/s/<swarm_id> --owner-key KEY
//! ```
//!
//! The connection logic (hello, heartbeats, backoff, refusals) is the browser client's own
//! [`client::link::Link`]; this binary adds the socket, the threads and the file.

mod args;
mod retry;
mod session;
mod state;
mod target;
mod work;
mod workloads;

use anyhow::{anyhow, bail, Context, Result};
use client::link::Identity;
use shared_protocol::{AgentClass, Capabilities, ErrorCode, JoinProof};

use args::{Args, Command};

fn main() {
    match run() {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("ostrich-agent: {err:#}");
            std::process::exit(1);
        }
    }
}

/// Runs the agent; the exit code is 2 when the coordinator refused the device for good.
fn run() -> Result<i32> {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            println!("{}", args::USAGE);
            return Ok(0);
        }
        Err(why) => {
            eprintln!("ostrich-agent: {why}\n\n{}", args::USAGE);
            return Ok(1);
        }
    };
    let config = configure(&args)?;
    let refusal = session::run(config)?;
    println!(
        "refused by the coordinator: {:?}: {}",
        refusal.code, refusal.message
    );
    if refusal.code == ErrorCode::BadResult {
        println!(
            "the device is quarantined after a wrong result; it gets no work until the \
             swarm's owner enables it again on the dashboard"
        );
    }
    if refusal.code == ErrorCode::BadCredential {
        println!(
            "the saved device credential no longer works (the device was removed?); \
             delete the state file to join anew with an invite"
        );
    }
    Ok(2)
}

/// Turns the command line into a session configuration: the target, the saved credential or
/// the join proof, the capabilities and the name.
fn configure(args: &Args) -> Result<session::Config> {
    let target =
        target::parse_link(&args.link, args.coordinator.as_deref()).map_err(|e| anyhow!(e))?;
    let state_path = args
        .state
        .clone()
        .unwrap_or_else(|| state::default_path(&target.swarm_id));
    let credential = state::load(&state_path, &target.swarm_id)?;
    let invite = match &args.owner_key {
        Some(owner_key) => Some(JoinProof::OwnerKey {
            owner_key: owner_key.clone(),
        }),
        None => target.proof.clone(),
    };
    match (&credential, &invite) {
        (Some(credential), _) => println!(
            "resuming device {} from {}",
            credential.device_id,
            state_path.display()
        ),
        (None, Some(_)) => println!(
            "joining swarm {} as a new device; the credential will be kept in {}",
            target.swarm_id,
            state_path.display()
        ),
        (None, None) => bail!(
            "the link carries no valid invite (#t=<token> or #c=<code>), no --owner-key was \
             given, and {} holds no saved credential",
            state_path.display()
        ),
    }
    let workers = match args.cores {
        Some(n) => usize::from(n),
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let cores = u16::try_from(workers.clamp(1, 1024)).context("core count")?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| args::default_name(hostname().as_deref()));
    Ok(session::Config {
        ws_url: target.ws_url,
        swarm_id: target.swarm_id,
        state_path,
        workers,
        ca_file: args.ca_file.clone(),
        identity: Identity::Device {
            name,
            capabilities: Capabilities {
                cores,
                memory_mb: None,
                gpu: false,
                agent: AgentClass::Native,
                workloads: true,
            },
            credential,
            invite,
        },
    })
}

/// This machine's name, where the platform tells it without a library.
fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}
