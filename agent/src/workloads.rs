//! Items of own workloads (docs/WORKLOADS.md) on the native runner (`workload::native`, on
//! wasmtime): the module is fetched once with a lease's ticket and kept compiled by its
//! SHA-256; each item runs in a fresh instance; the lease's outputs file is uploaded with the
//! same ticket before the result, which names the file, is sent. A lease over an input set
//! fetches its items' inputs with the ticket too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};
use shared_protocol::{HttpError, Work, WorkResult, MAX_OUTPUTS_BYTES};
use workload::module::{hex, MAX_MODULE_BYTES};
use workload::native::{Compiled, Runner};
use workload::{outputs, Outcome};

/// Compiled modules kept, at most (a swarm runs one job at a time).
const KEPT_MODULES: usize = 4;

/// What lets this device fetch a lease's module and upload its outputs: its id and the
/// lease's ticket, sent as `Authorization: Lease <device id> <ticket>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    pub device_id: String,
    pub ticket: String,
}

impl Pass {
    fn header(&self) -> String {
        format!("Lease {} {}", self.device_id, self.ticket)
    }
}

/// The agent's workload runner, shared by its worker threads.
pub struct Workloads {
    /// `http(s)://host[:port]/api/swarms/<id>`
    api: String,
    http: ureq::Agent,
    runner: OnceLock<Result<Runner, String>>,
    compiled: Mutex<Vec<(String, Arc<Compiled>)>>,
    passes: Mutex<HashMap<u64, Pass>>,
}

impl Workloads {
    /// For the swarm API at `api`; `https://` with the agent's TLS settings.
    pub fn new(api: String, tls: Arc<rustls::ClientConfig>) -> Self {
        Self {
            api,
            http: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(60))
                .tls_config(tls)
                .build(),
            runner: OnceLock::new(),
            compiled: Mutex::new(Vec::new()),
            passes: Mutex::new(HashMap::new()),
        }
    }

    /// A workload lease arrived with its pass.
    pub fn admit(&self, lease_id: u64, pass: Pass) {
        let mut passes = self.passes.lock().unwrap_or_else(PoisonError::into_inner);
        // Leases of a lost connection are never answered; a bound keeps them from piling up.
        if passes.len() >= 256 {
            passes.clear();
        }
        passes.insert(lease_id, pass);
    }

    /// Runs the lease's items, uploads their outputs file and gives the result naming it.
    pub fn run(&self, lease_id: u64, work: &Work) -> Result<WorkResult, String> {
        let pass = self
            .passes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&lease_id)
            .ok_or("the lease came without a ticket")?;
        let Work::Workload {
            module,
            first_item,
            items,
            time_limit_ms,
            inputs,
            ..
        } = work
        else {
            return Err("not a workload lease".into());
        };
        let runner = self
            .runner
            .get_or_init(Runner::new)
            .as_ref()
            .map_err(Clone::clone)?;
        let compiled = self.module(runner, module, &pass)?;
        let limit = Duration::from_millis(u64::from(*time_limit_ms));
        let mut outcomes = Vec::new();
        if *inputs {
            let records = self.inputs(&pass)?;
            for input in workload::inputs::split(&records, *items)? {
                outcomes.push(runner.run(&compiled, input, limit));
            }
        } else {
            for index in *first_item..first_item.saturating_add(*items) {
                let input = work
                    .item_input(index)
                    .ok_or_else(|| format!("item {index}'s input does not fit in 64 bits"))?;
                outcomes.push(runner.run(&compiled, &input, limit));
            }
        }
        let failed = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, Outcome::Failed(_)))
            .count() as u64;
        let unsettled = outputs::unsettled(&outcomes);
        let file = outputs::encode(&outcomes);
        let name = hex(&Sha256::digest(&file).into());
        let receipt = self.upload(&name, &file, &pass)?;
        Ok(WorkResult::Workload {
            outputs: name,
            failed,
            unsettled,
            receipt,
        })
    }

    /// The module, compiled: kept from an earlier lease, or fetched and compiled now.
    fn module(&self, runner: &Runner, sha256: &str, pass: &Pass) -> Result<Arc<Compiled>, String> {
        let kept = self
            .compiled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(name, _)| name == sha256)
            .map(|(_, compiled)| Arc::clone(compiled));
        if let Some(compiled) = kept {
            return Ok(compiled);
        }
        let url = format!("{}/modules/{sha256}", self.api);
        let response = self
            .http
            .get(&url)
            .set("authorization", &pass.header())
            .call()
            .map_err(|err| refused("fetching the module", err))?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(response.into_reader(), MAX_MODULE_BYTES as u64 + 1),
            &mut bytes,
        )
        .map_err(|err| format!("fetching the module: {err}"))?;
        // The coordinator serves the module prepared (its memory's maximum set), so the bytes
        // do not hash to the name, which is the upload's; they pass the ABI's check here again.
        let compiled = Arc::new(runner.compile(&bytes).map_err(|err| err.to_string())?);
        let mut kept = self.compiled.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() >= KEPT_MODULES {
            kept.remove(0);
        }
        kept.push((sha256.to_owned(), Arc::clone(&compiled)));
        Ok(compiled)
    }

    /// The records of the lease's inputs, from the job's input set.
    fn inputs(&self, pass: &Pass) -> Result<Vec<u8>, String> {
        let response = self
            .http
            .get(&format!("{}/inputs", self.api))
            .set("authorization", &pass.header())
            .call()
            .map_err(|err| refused("fetching the inputs", err))?;
        let mut records = Vec::new();
        // A lease's inputs are at most 128 records of at most 64 KiB.
        let most =
            shared_protocol::MAX_LEASE_ITEMS * (workload::module::MAX_INPUT_BYTES as u64 + 4);
        std::io::Read::read_to_end(
            &mut std::io::Read::take(response.into_reader(), most + 1),
            &mut records,
        )
        .map_err(|err| format!("fetching the inputs: {err}"))?;
        Ok(records)
    }

    /// Uploads the outputs file; the receipt the result must carry.
    fn upload(&self, name: &str, file: &[u8], pass: &Pass) -> Result<String, String> {
        #[derive(serde::Deserialize)]
        struct Stored {
            receipt: String,
        }
        if file.len() > MAX_OUTPUTS_BYTES {
            return Err(format!("the outputs file is {} bytes", file.len()));
        }
        self.http
            .put(&format!("{}/outputs/{name}", self.api))
            .set("authorization", &pass.header())
            .set("content-type", "application/octet-stream")
            .send_bytes(file)
            .map_err(|err| refused("uploading the outputs", err))?
            .into_json::<Stored>()
            .map(|stored| stored.receipt)
            .map_err(|err| format!("uploading the outputs: the answer: {err}"))
    }
}

/// A failed request, with the coordinator's code and message when it gave them.
fn refused(what: &str, err: ureq::Error) -> String {
    match err {
        ureq::Error::Status(status, response) => match response.into_json::<HttpError>() {
            Ok(error) => format!("{what}: {status} {:?}: {}", error.code, error.message),
            Err(_) => format!("{what}: HTTP {status}"),
        },
        other => format!("{what}: {other}"),
    }
}
