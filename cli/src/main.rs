//! `ostrich`: the owner's command line for own workloads (docs/WORKLOADS.md).
//!
//! ```sh
//! export OSTRICH_OWNER_KEY=…                      # from the swarm's owner link
//! ostrich --swarm http://127.0.0.1:8787/s/<swarm id> upload f.wasm
//! ```
//!
//! `upload` checks a module against the workload ABI here, before anything is sent, and
//! stores it for the swarm unless it is stored already (modules are named by their SHA-256).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use shared_protocol::{is_id, HttpError, ModuleInfo};
use workload::module::{check, hex};

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
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
