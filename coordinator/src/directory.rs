//! The short-code directory's Durable Object: glue around
//! [`swarm_core::directory::CodeDirectory`]. One object per shard of the code space, named
//! `codes-<first hex digit of the code's hash>`, so that the Worker (which hashes the typed
//! code) and the swarm (which only ever holds the hash) find the same shard. Swarm objects register their invites' code hashes here; the Worker
//! asks it where a typed code belongs.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};
use shared_protocol::{ErrorCode, ResolveCodeResponse};
use swarm_core::directory::{CodeDirectory, CodeEntry, DirectoryLimits};
use swarm_core::StoreOp;
use worker::{
    durable_object, wasm_bindgen, DurableObject, Env, Request, Response, Result, State, Stub,
};

use crate::http::{error_response, json_response, refusal_response};
use crate::CODES_BINDING;

/// Body of the internal `POST /resolve`.
#[derive(Serialize, Deserialize)]
pub struct ResolveRequest {
    pub code_hash: String,
    /// The caller's address (`CF-Connecting-IP`), for the per-client limit.
    pub client: String,
}

/// The directory shard responsible for a code, by its hash.
pub fn stub_for_hash(env: &Env, code_hash: &str) -> Result<Stub> {
    let shard = code_hash.get(..1).unwrap_or("0");
    env.durable_object(CODES_BINDING)?
        .id_from_name(&format!("codes-{shard}"))?
        .get_stub()
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS codes (code_hash TEXT PRIMARY KEY, swarm_id TEXT NOT NULL, expires_ms INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS guesses (at_ms INTEGER NOT NULL, source TEXT NOT NULL)",
];

#[derive(Deserialize)]
struct Row {
    code_hash: String,
    swarm_id: String,
    expires_ms: f64,
}

#[durable_object]
pub struct CodeDirectoryObject {
    state: State,
    directory: RefCell<Option<CodeDirectory>>,
}

impl DurableObject for CodeDirectoryObject {
    fn new(state: State, _env: Env) -> Self {
        Self {
            state,
            directory: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        self.ensure_loaded()?;
        let sql = self.state.storage().sql();
        let now = worker::Date::now().as_millis();
        match req.path().as_str() {
            "/register" => {
                let entry: CodeEntry = req.json().await?;
                sql.exec(
                    "INSERT OR REPLACE INTO codes (code_hash, swarm_id, expires_ms) VALUES (?, ?, ?)",
                    vec![entry.code_hash.clone().into(), entry.swarm_id.clone().into(), (entry.expires_ms as f64).into()],
                )?;
                self.with(|d| d.register(entry));
                Response::empty()
            }
            "/resolve" => {
                let lookup: ResolveRequest = req.json().await?;
                for hash in self.with(|d| d.take_expired(now)) {
                    sql.exec("DELETE FROM codes WHERE code_hash = ?", vec![hash.into()])?;
                }
                let result = self.with(|d| d.resolve(now, &lookup.code_hash, &lookup.client));
                // Wrong guesses are stored before the answer, so the limit survives a restart.
                for write in self.with(CodeDirectory::take_writes) {
                    match write {
                        StoreOp::PutGuess(guess) => crate::object::put_guess(&sql, &guess)?,
                        StoreOp::PruneGuesses { before_ms } => {
                            crate::object::prune_guesses(&sql, before_ms)?
                        }
                        _ => {}
                    }
                }
                match result {
                    Ok(swarm_id) => json_response(200, &ResolveCodeResponse { swarm_id }),
                    Err(refusal) => refusal_response(&refusal),
                }
            }
            _ => error_response(ErrorCode::NotFound, "no such endpoint"),
        }
    }
}

impl CodeDirectoryObject {
    /// Runs `f` on the directory (loaded by `ensure_loaded` before every request; should it
    /// not be, an empty one that is not kept stands in, rather than a panic).
    fn with<T>(&self, f: impl FnOnce(&mut CodeDirectory) -> T) -> T {
        let mut directory = self.directory.borrow_mut();
        match directory.as_mut() {
            Some(directory) => f(directory),
            None => f(&mut CodeDirectory::new(
                DirectoryLimits::default(),
                Vec::new(),
                0,
                Vec::new(),
            )),
        }
    }

    fn ensure_loaded(&self) -> Result<()> {
        if self.directory.borrow().is_some() {
            return Ok(());
        }
        let sql = self.state.storage().sql();
        for statement in SCHEMA {
            sql.exec(statement, None)?;
        }
        let entries = sql
            .exec("SELECT code_hash, swarm_id, expires_ms FROM codes", None)?
            .to_array::<Row>()?
            .into_iter()
            .map(|row| CodeEntry {
                code_hash: row.code_hash,
                swarm_id: row.swarm_id,
                expires_ms: row.expires_ms as u64,
            })
            .collect();
        let guesses = crate::object::load_guesses(&sql)?;
        let now = worker::Date::now().as_millis();
        *self.directory.borrow_mut() = Some(CodeDirectory::new(
            DirectoryLimits::default(),
            entries,
            now,
            guesses,
        ));
        Ok(())
    }
}
