//! The swarm's Durable Object: glue between the platform and [`SwarmCore`].
//!
//! Each event (HTTP request, WebSocket message or close, alarm) becomes one `handle_*` call on
//! the core with the current wall-clock time; then every output is carried out: sends and
//! closes on hibernatable WebSockets, attachments, SQLite writes, and the alarm. The core is
//! rebuilt from SQLite, the sockets' attachments and the armed alarm whenever the object starts.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use shared_protocol::{
    close_code, ErrorCode, JobSpec, OwnerCommand, RunState, SwarmInfo, SwarmStats, HEARTBEAT,
    HEARTBEAT_ACK,
};
use swarm_core::directory::CodeEntry;
use swarm_core::gateway::{GatewayBatch, GatewayOutput, Placement};
use swarm_core::{
    CommitRecord, ConnId, GuessRecord, Millis, Output, OutputsIndex, PartRecord, SocketAttachment,
    StoreOp, Stored, SwarmCore, SwarmMeta,
};
use worker::{
    durable_object, wasm_bindgen, DurableObject, Env, Headers, Request, Response, Result,
    SqlStorageValue, State, WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

use crate::config::Config;
use crate::http::{bearer, decode_body, error_response, json_response, refusal_response};
use worker::js_sys::{Date, Function, Reflect};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::worker_sys::WebSocketRequestResponsePair;

/// Body of the internal `POST /init` the Worker sends when it creates a swarm.
#[derive(Serialize, Deserialize)]
pub struct InitRequest {
    pub swarm_id: String,
    pub name: String,
    pub owner_key_hash: String,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS swarm (id INTEGER PRIMARY KEY CHECK (id = 1), record TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS devices (device_id TEXT PRIMARY KEY, record TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS invites (invite_id TEXT PRIMARY KEY, record TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, record TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS pixels (job_id TEXT NOT NULL, first_row INTEGER NOT NULL, \
     counts BLOB NOT NULL, PRIMARY KEY (job_id, first_row))",
    "CREATE TABLE IF NOT EXISTS parts (job_id TEXT NOT NULL, lo INTEGER NOT NULL, \
     record TEXT NOT NULL, PRIMARY KEY (job_id, lo))",
    "CREATE TABLE IF NOT EXISTS guesses (at_ms INTEGER NOT NULL, source TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS outputs (job_id TEXT NOT NULL, lo INTEGER NOT NULL, \
     hi INTEGER NOT NULL, outputs TEXT NOT NULL, PRIMARY KEY (job_id, lo))",
    "CREATE TABLE IF NOT EXISTS commits (job_id TEXT NOT NULL, seq INTEGER NOT NULL, \
     record TEXT NOT NULL, PRIMARY KEY (job_id, seq))",
];

#[derive(Deserialize)]
struct RecordRow {
    record: String,
}

#[durable_object]
pub struct SwarmObject {
    state: State,
    env: Env,
    /// `None` until the first event after the object starts.
    core: RefCell<Option<SwarmCore>>,
    /// Open sockets by connection id, rebuilt from attachments when the object starts.
    sockets: RefCell<HashMap<ConnId, WebSocket>>,
    /// The last image served: `(job id, done units, PNG)`, so that dashboards asking for the
    /// same progress do not encode it again.
    last_image: RefCell<Option<(String, u64, Vec<u8>)>>,
    /// What the core said to gateways' sockets and is not yet delivered, by gateway.
    outbox: Rc<RefCell<Outbox>>,
}

/// Outputs for gateways' sockets, waiting to be delivered. One delivery at a time goes to a
/// gateway, so that they arrive in the order the core made them.
#[derive(Default)]
struct Outbox {
    waiting: HashMap<u32, Vec<GatewayOutput>>,
    delivering: HashSet<u32>,
}

/// How many deliveries one event handler makes to a gateway before the rest go on without it
/// (so that none runs on without end under load).
const MAX_DELIVERIES_PER_EVENT: usize = 64;

impl DurableObject for SwarmObject {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            core: RefCell::new(None),
            sockets: RefCell::new(HashMap::new()),
            last_image: RefCell::new(None),
            outbox: Rc::new(RefCell::new(Outbox::default())),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        self.ensure_loaded().await?;
        match req.path().as_str() {
            "/init" => {
                let init: InitRequest = req.json().await?;
                let meta = SwarmMeta {
                    swarm_id: init.swarm_id,
                    name: init.name,
                    owner_key_hash: init.owner_key_hash,
                    created_ms: now(),
                    run_state: RunState::Running,
                    throttle_percent: 100,
                    lease_key: String::new(),
                    gateways: 0,
                };
                let created = self.with_core(|core| core.create(now(), meta).is_ok());
                self.drain().await?;
                if created {
                    Response::empty().map(|r| r.with_status(201))
                } else {
                    error_response(ErrorCode::Internal, "swarm id collision")
                }
            }
            "/info" => match self.with_core(|core| core.meta().cloned()) {
                Some(meta) => json_response(
                    200,
                    &SwarmInfo {
                        swarm_id: meta.swarm_id,
                        swarm_name: meta.name,
                        created_ms: meta.created_ms,
                    },
                ),
                None => error_response(ErrorCode::SwarmNotFound, "no such swarm"),
            },
            "/stats" => self.stats(&req).await,
            // Whether the bearer key is the owner's, for the Worker's module routes.
            "/authorize" => {
                if self.with_core(|core| core.meta().is_none()) {
                    return error_response(ErrorCode::SwarmNotFound, "no such swarm");
                }
                if self.with_core(|core| core.is_owner_key(&bearer(&req))) {
                    Response::empty().map(|r| r.with_status(204))
                } else {
                    error_response(
                        ErrorCode::BadOwnerKey,
                        "the owner key is required (Authorization: Bearer <owner key>)",
                    )
                }
            }
            // What a lease's ticket vouches for, for the Worker's module and outputs routes.
            "/lease" => {
                #[derive(Deserialize)]
                struct Asked {
                    device_id: String,
                    ticket: String,
                    outputs: Option<String>,
                    #[serde(default)]
                    unsettled: u64,
                }
                let asked: Asked = req.json().await?;
                let file = asked
                    .outputs
                    .as_deref()
                    .map(|name| swarm_core::StoredOutputs {
                        name,
                        unsettled: asked.unsettled,
                    });
                let vouched =
                    self.with_core(|core| core.vouch(&asked.device_id, &asked.ticket, file));
                match vouched {
                    Some(vouched) => json_response(200, &vouched),
                    None => error_response(
                        ErrorCode::Forbidden,
                        "the ticket is not one of a lease of this swarm's running workload job for this device",
                    ),
                }
            }
            path => {
                if let Some(job_id) = path.strip_prefix("/image/") {
                    return self.image(job_id);
                }
                if let Some(job_id) = path.strip_prefix("/bands/") {
                    return self.bands(&req, job_id);
                }
                if let Some(job_id) = path.strip_prefix("/outputs/") {
                    return self.outputs(&req, job_id);
                }
                if let Some(job_id) = path.strip_prefix("/jobs/") {
                    return match self.with_core(|core| core.job(job_id)) {
                        Some(job) => json_response(200, &job),
                        None => error_response(ErrorCode::NotFound, "no such job"),
                    };
                }
                match path {
                    "/owner" => self.owner(&mut req).await,
                    "/ws" => self.accept(&req).await,
                    "/gateway" => {
                        let batch: GatewayBatch = req.json().await?;
                        self.with_core(|core| core.handle_gateway_batch(now(), batch));
                        self.drain().await?;
                        Response::empty().map(|r| r.with_status(204))
                    }
                    _ => error_response(ErrorCode::NotFound, "no such endpoint"),
                }
            }
        }
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        self.ensure_loaded().await?;
        let Some(conn) = conn_of(&ws) else {
            return Ok(());
        };
        let bytes = match message {
            WebSocketIncomingMessage::String(text) => text.into_bytes(),
            WebSocketIncomingMessage::Binary(bytes) => bytes,
        };
        self.with_core(|core| core.handle_message(now(), conn, &bytes));
        self.drain().await
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        _code: usize,
        _reason: String,
        _clean: bool,
    ) -> Result<()> {
        self.closed(ws).await
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> Result<()> {
        self.closed(ws).await
    }

    async fn alarm(&self) -> Result<Response> {
        self.ensure_loaded().await?;
        // Heartbeats the platform answered by itself count as the devices being seen: those of
        // the object's own sockets, and those of every gateway that holds sockets.
        let mut pongs: Vec<(ConnId, Millis)> = self
            .sockets
            .borrow()
            .iter()
            .filter_map(|(conn, ws)| pong_of(&self.state, ws).map(|at| (*conn, at)))
            .collect();
        let busy = self.with_core(|core| core.gateways_in_use());
        pongs.extend(
            self.ask_gateways::<Vec<(ConnId, Millis)>>(&busy, "pongs")
                .await
                .into_iter()
                .flatten(),
        );
        self.with_core(|core| {
            core.handle_pongs(&pongs);
            core.handle_alarm(now());
        });
        self.drain().await?;
        Response::empty()
    }
}

impl SwarmObject {
    async fn accept(&self, req: &Request) -> Result<Response> {
        if self.with_core(|core| core.meta().is_none()) {
            return error_response(ErrorCode::SwarmNotFound, "no such swarm");
        }
        let upgrade = req.headers().get("upgrade")?.unwrap_or_default();
        if !upgrade.eq_ignore_ascii_case("websocket") {
            return Ok(
                error_response(ErrorCode::Malformed, "expected a WebSocket upgrade")?
                    .with_status(426),
            );
        }
        if let Placement::Gateway(k) = self.with_core(|core| core.place_socket(now())) {
            return self.send_to_gateway(k).await;
        }
        // The client's address, for the code-guessing limit (set by the platform in production).
        let source = req.headers().get("cf-connecting-ip")?.unwrap_or_default();
        let pair = WebSocketPair::new()?;
        self.state.accept_web_socket(&pair.server);
        let conn = ConnId::direct(u64::from_le_bytes(random_bytes::<8>()?));
        self.sockets.borrow_mut().insert(conn, pair.server);
        self.with_core(|core| core.handle_connect(now(), conn, &source));
        self.drain().await?;
        Response::from_websocket(pair.client)
    }

    /// This object's swarm id, once it holds a swarm.
    fn swarm_id(&self) -> Option<String> {
        self.with_core(|core| core.meta().map(|m| m.swarm_id.clone()))
    }

    /// Tells the Worker to take the socket being opened to gateway `k` itself (the platform
    /// creates an object on first use), so that this object neither waits for the gateway's
    /// answer nor stands between the client and its socket.
    async fn send_to_gateway(&self, k: u32) -> Result<Response> {
        // A gateway opened for the first time is stored before it holds any socket.
        self.drain().await?;
        let mut resp = Response::empty()?.with_status(307);
        resp.headers_mut().set(GATEWAY_HEADER, &k.to_string())?;
        Ok(resp)
    }

    /// Asks each of these gateways a question (`GET /{what}`) at once, and gives the answers
    /// of those that answered. One that does not answer is logged and left out.
    async fn ask_gateways<T: serde::de::DeserializeOwned>(
        &self,
        gateways: &[u32],
        what: &str,
    ) -> Vec<T> {
        let Some(swarm_id) = self.swarm_id() else {
            return Vec::new();
        };
        self.ask_gateways_of(&swarm_id, gateways, what).await
    }

    async fn ask_gateways_of<T: serde::de::DeserializeOwned>(
        &self,
        swarm_id: &str,
        gateways: &[u32],
        what: &str,
    ) -> Vec<T> {
        let asks = gateways.iter().map(|k| async move {
            let stub = gateway_stub(&self.env, swarm_id, *k)?;
            let mut resp = stub
                .fetch_with_str(&format!("https://gateway/{what}"))
                .await?;
            resp.json::<T>().await
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .zip(gateways)
            .filter_map(|(answer, k)| match answer {
                Ok(answer) => Some(answer),
                Err(err) => {
                    worker::console_error!("gateway {k} did not answer /{what}: {err}");
                    None
                }
            })
            .collect()
    }

    /// Delivers what waits for each gateway, one delivery at a time per gateway (a gateway
    /// that another handler is delivering to is left to it).
    async fn deliver(&self) {
        let gateways: Vec<u32> = {
            let outbox = self.outbox.borrow();
            outbox
                .waiting
                .keys()
                .filter(|k| !outbox.delivering.contains(k))
                .copied()
                .collect()
        };
        if gateways.is_empty() {
            return;
        }
        let Some(swarm_id) = self.swarm_id() else {
            return;
        };
        futures::future::join_all(
            gateways.into_iter().map(|k| {
                Self::deliver_to(self.env.clone(), self.outbox.clone(), swarm_id.clone(), k)
            }),
        )
        .await;
    }

    /// Delivers to gateway `k` until nothing waits for it. After
    /// [`MAX_DELIVERIES_PER_EVENT`] deliveries the handler that made them ends and they go on
    /// detached: what waits may be a welcome, and its socket then says nothing that would
    /// bring another event.
    async fn deliver_to(env: Env, outbox: Rc<RefCell<Outbox>>, swarm_id: String, k: u32) {
        if !outbox.borrow_mut().delivering.insert(k) {
            return;
        }
        let mut deliveries = 0;
        while deliveries < MAX_DELIVERIES_PER_EVENT {
            let Some(outputs) = outbox.borrow_mut().waiting.remove(&k) else {
                break;
            };
            deliveries = deliveries.saturating_add(1);
            let sent = async {
                let body = serde_json::to_string(&outputs)?;
                let resp = gateway_stub(&env, &swarm_id, k)?
                    .fetch_with_request(crate::post_json("https://gateway/deliver", &body)?)
                    .await?;
                match resp.status_code() {
                    200..=299 => Ok(()),
                    status => Err(worker::Error::RustError(format!("status {status}"))),
                }
            }
            .await;
            // Its sockets' clients find out by their own timeouts, and reconnect.
            if let Err(err) = sent {
                worker::console_error!(
                    "could not deliver {} outputs to gateway {k}: {err}",
                    outputs.len()
                );
            }
        }
        outbox.borrow_mut().delivering.remove(&k);
        if deliveries == MAX_DELIVERIES_PER_EVENT && outbox.borrow().waiting.contains_key(&k) {
            wasm_bindgen_futures::spawn_local(Box::pin(Self::deliver_to(env, outbox, swarm_id, k)));
        }
    }

    /// An owner command over HTTP; the core checks the owner key.
    async fn owner(&self, req: &mut Request) -> Result<Response> {
        if self.with_core(|core| core.meta().is_none()) {
            return error_response(ErrorCode::SwarmNotFound, "no such swarm");
        }
        let key = bearer(req);
        let command = match decode_body::<OwnerCommand>(req).await {
            Ok(command) => command,
            Err(resp) => return resp,
        };
        let result = self.with_core(|core| core.handle_owner_request(now(), &key, command));
        self.drain().await?;
        match result {
            Ok(reply) => json_response(200, &reply),
            Err(refusal) => refusal_response(&refusal),
        }
    }

    /// The PNG of a Mandelbrot job as far as it is computed (grey rows are still to come).
    fn image(&self, job_id: &str) -> Result<Response> {
        let Some(job) = self.with_core(|core| core.job(job_id)) else {
            return error_response(ErrorCode::NotFound, "no such job");
        };
        let cached = self
            .last_image
            .borrow()
            .as_ref()
            .filter(|(id, done, _)| id == job_id && *done == job.done_units)
            .map(|(_, _, png)| png.clone());
        if let Some(png) = cached {
            return png_response(png, job_id);
        }
        let sql = self.state.storage().sql();
        let mut bands = Vec::new();
        let rows = sql.exec(
            "SELECT first_row, counts FROM pixels WHERE job_id = ?",
            vec![job_id.into()],
        )?;
        for row in rows.raw() {
            if let [SqlStorageValue::Integer(first_row), SqlStorageValue::Blob(counts)] =
                row?.as_slice()
            {
                bands.push((
                    u32::try_from(*first_row).unwrap_or(u32::MAX),
                    counts.clone(),
                ));
            }
        }
        let Some(png) = swarm_core::kinds::render_png(&job.spec, &bands) else {
            return error_response(ErrorCode::NotFound, "this job has no image");
        };
        *self.last_image.borrow_mut() = Some((job_id.to_owned(), job.done_units, png.clone()));
        png_response(png, job_id)
    }

    /// The bands of a Mandelbrot job's image stored after `?after=` (a band's rowid: rows are
    /// never deleted, a band taken back is stored empty, so rowids only grow).
    /// Where a workload job's settled outputs are from item `from` on: the running job's from
    /// the core, an ended one's from the rows stored when it ended.
    fn outputs(&self, req: &Request, job_id: &str) -> Result<Response> {
        let from = req
            .url()?
            .query_pairs()
            .find(|(name, _)| name == "from")
            .and_then(|(_, value)| value.parse::<u64>().ok())
            .unwrap_or(0);
        let Some(mut index) = self.with_core(|core| core.outputs_index(job_id, from)) else {
            return error_response(ErrorCode::NotFound, "no workload job with this id");
        };
        if index.ended() {
            let limit = i64::try_from(OutputsIndex::MAX_PARTS).unwrap_or(64);
            let rows = self.state.storage().sql().exec(
                "SELECT lo, hi, outputs FROM outputs WHERE job_id = ? AND hi > ? \
                 ORDER BY lo LIMIT ?",
                vec![job_id.into(), sql_int(from).into(), limit.into()],
            )?;
            let mut stored = Vec::new();
            for row in rows.raw() {
                if let [SqlStorageValue::Integer(lo), SqlStorageValue::Integer(hi), SqlStorageValue::String(name)] =
                    row?.as_slice()
                {
                    stored.push((
                        u64::try_from(*lo).unwrap_or(0),
                        u64::try_from(*hi).unwrap_or(0),
                        name.clone(),
                    ));
                }
            }
            index.parts = OutputsIndex::chain(from, stored);
        }
        json_response(200, &index)
    }

    fn bands(&self, req: &Request, job_id: &str) -> Result<Response> {
        let Some(job) = self.with_core(|core| core.job(job_id)) else {
            return error_response(ErrorCode::NotFound, "no such job");
        };
        if !matches!(job.spec, JobSpec::Mandelbrot { .. }) {
            return error_response(ErrorCode::NotFound, "this job has no image");
        }
        let url = req.url()?;
        let after = match url.query_pairs().find(|(name, _)| name == "after") {
            None => 0,
            Some((_, value)) => match value.parse::<u64>() {
                Ok(after) => after,
                Err(_) => {
                    return error_response(
                        ErrorCode::Invalid,
                        "after: a band sequence number (a whole number from an earlier answer)",
                    )
                }
            },
        };
        let limit = i64::try_from(swarm_core::kinds::BANDS_PER_ANSWER).unwrap_or(64);
        let rows = self.state.storage().sql().exec(
            "SELECT rowid, first_row, counts FROM pixels WHERE job_id = ? AND rowid > ? \
             ORDER BY rowid LIMIT ?",
            vec![
                job_id.into(),
                sql_int(after).into(),
                limit.saturating_add(1).into(),
            ],
        )?;
        let mut stored = Vec::new();
        for row in rows.raw() {
            if let [SqlStorageValue::Integer(seq), SqlStorageValue::Integer(first_row), SqlStorageValue::Blob(counts)] =
                row?.as_slice()
            {
                stored.push((
                    u64::try_from(*seq).unwrap_or(0),
                    u32::try_from(*first_row).unwrap_or(u32::MAX),
                    counts.clone(),
                ));
            }
        }
        json_response(
            200,
            &swarm_core::kinds::image_bands(&job.spec, after, &stored),
        )
    }

    async fn stats(&self, req: &Request) -> Result<Response> {
        if self.with_core(|core| core.meta().is_none()) {
            return error_response(ErrorCode::SwarmNotFound, "no such swarm");
        }
        let key = bearer(req);
        if !self.with_core(|core| core.is_owner_key(&key)) {
            return error_response(
                ErrorCode::BadOwnerKey,
                "the owner key is required (Authorization: Bearer <owner key>)",
            );
        }
        let alarm_at_ms = self
            .state
            .storage()
            .get_alarm()
            .await?
            .map(|at| at.max(0) as u64);
        let (connections, counters, started_ms, gateways) = self.with_core(|core| {
            (
                core.connection_count(),
                core.counters(),
                core.started_ms(),
                core.sockets_per_place().gateways,
            )
        });
        json_response(
            200,
            &SwarmStats {
                connections: u32::try_from(connections).unwrap_or(u32::MAX),
                alarm_at_ms,
                counters,
                started_ms,
                gateways: gateways
                    .into_iter()
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
                    .collect(),
            },
        )
    }

    async fn closed(&self, ws: WebSocket) -> Result<()> {
        self.ensure_loaded().await?;
        // Complete the closing handshake; the socket may already be closed, which is fine.
        let _ = ws.close(Some(1000), Some("closed"));
        let Some(conn) = conn_of(&ws) else {
            return Ok(());
        };
        self.sockets.borrow_mut().remove(&conn);
        self.with_core(|core| core.handle_disconnect(now(), conn));
        self.drain().await
    }

    /// Runs `f` on the core. Every event handler calls `ensure_loaded` first, so the core is
    /// there; should it not be, `f` runs on a fresh empty core that is not kept (it answers as
    /// an object with no swarm), rather than the object panicking, and the next
    /// `ensure_loaded` still loads storage.
    fn with_core<T>(&self, f: impl FnOnce(&mut SwarmCore) -> T) -> T {
        let mut core = self.core.borrow_mut();
        match core.as_mut() {
            Some(core) => f(core),
            None => f(&mut SwarmCore::new(
                Config::from_env(&self.env).core,
                random_seed().unwrap_or([0; 32]),
            )),
        }
    }

    /// Rebuilds the core after the object (re)started. The platform's input gate holds other
    /// events back while storage calls are pending, but not while the gateways are asked for
    /// their sessions: an event arriving then loads too, and whichever load ends first builds
    /// the core (each checks again after its last await).
    async fn ensure_loaded(&self) -> Result<()> {
        if self.core.borrow().is_some() {
            return Ok(());
        }
        let sql = self.state.storage().sql();
        for statement in SCHEMA {
            sql.exec(statement, None)?;
        }
        arm_heartbeat_response(&self.state)?;
        let meta: Option<SwarmMeta> = load_records(&sql, "swarm")?.into_iter().next();
        // The sessions of the sockets gateways hold. A gateway that does not answer leaves its
        // sockets unknown: their next frame closes them and their clients reconnect.
        let gateway_sessions: Vec<SocketAttachment> = match &meta {
            Some(meta) if meta.gateways > 0 => {
                let gateways: Vec<u32> = (0..meta.gateways).collect();
                self.ask_gateways_of::<Vec<SocketAttachment>>(&meta.swarm_id, &gateways, "sessions")
                    .await
                    .into_iter()
                    .flatten()
                    .collect()
            }
            _ => Vec::new(),
        };
        let stored = Stored {
            meta,
            devices: load_records(&sql, "devices")?,
            invites: load_records(&sql, "invites")?,
            jobs: load_records(&sql, "jobs")?,
            parts: load_records::<PartRecord>(&sql, "parts")?,
            commits: load_records::<CommitRecord>(&sql, "commits")?,
            guesses: load_guesses(&sql)?,
        };
        let alarm_at = self
            .state
            .storage()
            .get_alarm()
            .await?
            .map(|at| at.max(0) as Millis);
        if self.core.borrow().is_some() {
            return Ok(());
        }
        let mut sockets = HashMap::new();
        let mut attachments = gateway_sessions;
        for ws in self.state.get_websockets() {
            match ws.deserialize_attachment::<SocketAttachment>() {
                Ok(Some(attachment)) => {
                    sockets.insert(attachment.conn, ws);
                    attachments.push(attachment);
                }
                // A socket whose session cannot be read is closed: the client reconnects.
                _ => {
                    let _ = ws.close(Some(close_code::SESSION_LOST), Some("session lost"));
                }
            }
        }
        let config = Config::from_env(&self.env);
        let mut core = SwarmCore::new(config.core, random_seed()?);
        core.restore(now(), stored, attachments, alarm_at);
        *self.sockets.borrow_mut() = sockets;
        *self.core.borrow_mut() = Some(core);
        self.drain().await
    }

    /// Carries out every pending output of the core. No borrow is held across an await.
    /// A failure of one output does not skip the others: the first error is returned after
    /// all are carried out, and the alarm is always armed as the core asked (if arming fails,
    /// the core forgets it, so the next event arms it again).
    async fn drain(&self) -> Result<()> {
        let mut alarm = None;
        let mut codes = Vec::new();
        let mut failed: Option<worker::Error> = None;
        while let Some(output) = self.with_core(SwarmCore::poll_output) {
            if let Some((k, output)) = GatewayOutput::of(&output) {
                let mut outbox = self.outbox.borrow_mut();
                outbox.waiting.entry(k).or_default().push(output);
                continue;
            }
            match output {
                Output::Send { conn, text } => {
                    if let Some(ws) = self.sockets.borrow().get(&conn) {
                        if let Err(err) = ws.send_with_str(&*text) {
                            worker::console_warn!("send failed: {err}");
                        }
                    }
                }
                Output::Close { conn, code, reason } => {
                    if let Some(ws) = self.sockets.borrow_mut().remove(&conn) {
                        let _ = ws.close(Some(code), Some(reason));
                    }
                }
                Output::Attach { conn, attachment } => {
                    if let Some(ws) = self.sockets.borrow().get(&conn) {
                        // Without it the socket's state would not survive a restart; the
                        // socket itself still works.
                        if let Err(err) = ws.serialize_attachment(&attachment) {
                            worker::console_error!("could not attach a socket's state: {err}");
                        }
                    }
                }
                Output::Persist(op) => {
                    if let Err(err) = self.persist(op) {
                        worker::console_error!("a storage write failed: {err}");
                        failed.get_or_insert(err);
                    }
                }
                Output::SetAlarm { at } => alarm = Some(Some(at)),
                Output::ClearAlarm => alarm = Some(None),
                Output::RegisterCode {
                    code_hash,
                    swarm_id,
                    expires_ms,
                } => codes.push(CodeEntry {
                    code_hash,
                    swarm_id,
                    expires_ms,
                }),
            }
        }
        for entry in codes {
            self.register_code(entry).await;
        }
        self.deliver().await;
        let armed = match alarm {
            Some(Some(at)) => {
                let offset = i64::try_from(at.saturating_sub(now())).unwrap_or(i64::MAX);
                self.state.storage().set_alarm(offset.max(0)).await
            }
            Some(None) => self.state.storage().delete_alarm().await,
            None => Ok(()),
        };
        if let Err(err) = armed {
            self.with_core(SwarmCore::forget_alarm);
            failed.get_or_insert(err);
        }
        failed.map_or(Ok(()), Err)
    }

    /// Tells the code's directory shard where the code belongs. Failing that, the invite still
    /// works by link and QR code; the failure is logged.
    async fn register_code(&self, entry: CodeEntry) {
        let result = async {
            let stub = crate::directory::stub_for_hash(&self.env, &entry.code_hash)?;
            let body = serde_json::to_string(&entry)?;
            stub.fetch_with_request(crate::post_json("https://codes/register", &body)?)
                .await
        }
        .await;
        if let Err(err) = result {
            worker::console_error!("could not register an invite code with the directory: {err}");
        }
    }

    fn persist(&self, op: StoreOp) -> Result<()> {
        let sql = self.state.storage().sql();
        match op {
            StoreOp::PutSwarm(meta) => put_record(&sql, "swarm", "id", "1", &meta),
            StoreOp::PutDevice(device) => {
                put_record(&sql, "devices", "device_id", &device.device_id, &device)
            }
            StoreOp::PutJob(job) => put_record(&sql, "jobs", "job_id", &job.job_id, &job),
            StoreOp::PutInvite(invite) => {
                put_record(&sql, "invites", "invite_id", &invite.invite_id, &invite)
            }
            StoreOp::PutPixels {
                job_id,
                first_row,
                counts,
            } => sql
                .exec(
                    "INSERT OR REPLACE INTO pixels (job_id, first_row, counts) VALUES (?, ?, ?)",
                    vec![job_id.into(), i64::from(first_row).into(), counts.into()],
                )
                .map(drop),
            // Stored empty rather than deleted: a new row takes a rowid above every other, so
            // a viewer following the bands by rowid learns of the retraction (and a deleted
            // newest row would let the next band reuse its rowid, unseen).
            StoreOp::DeletePixels { job_id, first_row } => sql
                .exec(
                    "INSERT OR REPLACE INTO pixels (job_id, first_row, counts) VALUES (?, ?, x'')",
                    vec![job_id.into(), i64::from(first_row).into()],
                )
                .map(drop),
            StoreOp::DeleteDevice { device_id } => sql
                .exec(
                    "DELETE FROM devices WHERE device_id = ?",
                    vec![device_id.into()],
                )
                .map(drop),
            StoreOp::PutPart(part) => sql
                .exec(
                    "INSERT OR REPLACE INTO parts (job_id, lo, record) VALUES (?, ?, ?)",
                    vec![
                        part.job_id.clone().into(),
                        sql_int(part.lo).into(),
                        serde_json::to_string(&part)?.into(),
                    ],
                )
                .map(drop),
            StoreOp::DeletePart { job_id, lo } => sql
                .exec(
                    "DELETE FROM parts WHERE job_id = ? AND lo = ?",
                    vec![job_id.into(), sql_int(lo).into()],
                )
                .map(drop),
            StoreOp::DeleteParts { job_id } => {
                sql.exec(
                    "DELETE FROM parts WHERE job_id = ?",
                    vec![job_id.clone().into()],
                )?;
                sql.exec("DELETE FROM commits WHERE job_id = ?", vec![job_id.into()])
                    .map(drop)
            }
            StoreOp::PutCommit(commit) => sql
                .exec(
                    "INSERT OR REPLACE INTO commits (job_id, seq, record) VALUES (?, ?, ?)",
                    vec![
                        commit.job_id.clone().into(),
                        sql_int(commit.seq).into(),
                        serde_json::to_string(&commit)?.into(),
                    ],
                )
                .map(drop),
            StoreOp::PutOutputs {
                job_id,
                lo,
                hi,
                outputs,
            } => sql
                .exec(
                    "INSERT OR REPLACE INTO outputs (job_id, lo, hi, outputs) VALUES (?, ?, ?, ?)",
                    vec![
                        job_id.into(),
                        sql_int(lo).into(),
                        sql_int(hi).into(),
                        outputs.into(),
                    ],
                )
                .map(drop),
            StoreOp::PutGuess(guess) => put_guess(&sql, &guess),
            StoreOp::PruneGuesses { before_ms } => prune_guesses(&sql, before_ms),
        }
    }
}

/// Inserts or replaces one JSON record keyed by `key` (the swarm table's key is the constant 1).
fn put_record<T: Serialize>(
    sql: &worker::SqlStorage,
    table: &str,
    key_column: &str,
    key: &str,
    record: &T,
) -> Result<()> {
    let query = format!("INSERT OR REPLACE INTO {table} ({key_column}, record) VALUES (?, ?)");
    sql.exec(
        &query,
        vec![key.into(), serde_json::to_string(record)?.into()],
    )
    .map(drop)
}

/// Every row of one of the object's tables: each holds one JSON record.
fn load_records<T: serde::de::DeserializeOwned>(
    sql: &worker::SqlStorage,
    table: &str,
) -> Result<Vec<T>> {
    sql.exec(&format!("SELECT record FROM {table}"), None)?
        .to_array::<RecordRow>()?
        .into_iter()
        .map(|row| serde_json::from_str::<T>(&row.record).map_err(worker::Error::from))
        .collect()
}

/// A u64 as SQLite's signed 64-bit integer (values here stay far below 2^63).
fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[derive(Deserialize)]
struct GuessRow {
    at_ms: f64,
    source: String,
}

/// The wrong code guesses stored by this object or a directory shard.
pub(crate) fn load_guesses(sql: &worker::SqlStorage) -> Result<Vec<GuessRecord>> {
    Ok(sql
        .exec("SELECT at_ms, source FROM guesses", None)?
        .to_array::<GuessRow>()?
        .into_iter()
        .map(|row| GuessRecord {
            at_ms: row.at_ms.max(0.0) as u64,
            source: row.source,
        })
        .collect())
}

pub(crate) fn put_guess(sql: &worker::SqlStorage, guess: &GuessRecord) -> Result<()> {
    sql.exec(
        "INSERT INTO guesses (at_ms, source) VALUES (?, ?)",
        vec![sql_int(guess.at_ms).into(), guess.source.clone().into()],
    )
    .map(drop)
}

pub(crate) fn prune_guesses(sql: &worker::SqlStorage, before_ms: u64) -> Result<()> {
    sql.exec(
        "DELETE FROM guesses WHERE at_ms < ?",
        vec![sql_int(before_ms).into()],
    )
    .map(drop)
}

/// The image, shown in place but saved under a name that says what it is.
fn png_response(png: Vec<u8>, job_id: &str) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "image/png")?;
    let short: String = job_id.chars().take(8).collect();
    headers.set(
        "content-disposition",
        &format!("inline; filename=\"mandelbrot-{short}.png\""),
    )?;
    headers.set("cache-control", "no-store")?;
    Ok(Response::from_bytes(png)?.with_headers(headers))
}

fn conn_of(ws: &WebSocket) -> Option<ConnId> {
    ws.deserialize_attachment::<SocketAttachment>()
        .ok()
        .flatten()
        .map(|a| a.conn)
}

fn now() -> Millis {
    worker::Date::now().as_millis()
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes)
        .map_err(|err| worker::Error::RustError(format!("no randomness: {err}")))?;
    Ok(bytes)
}

/// A fresh 32-byte seed from the platform CSPRNG.
pub fn random_seed() -> Result<[u8; 32]> {
    random_bytes::<32>()
}

/// The header of the swarm object's answer to an upgrade that names the gateway to take it
/// to (with status 307). Only the Worker reads it, and never passes the answer on.
pub(crate) const GATEWAY_HEADER: &str = "x-ostrich-gateway";

/// Gateway `k` of a swarm: the object named `{swarm_id}:{k}`.
pub(crate) fn gateway_stub(env: &Env, swarm_id: &str, k: u32) -> Result<worker::Stub> {
    env.durable_object(crate::GATEWAY_BINDING)?
        .id_from_name(&format!("{swarm_id}:{k}"))?
        .get_stub()
}

/// Has the platform answer a device's plain heartbeat without waking the object. (Called
/// through JavaScript: the workers-rs wrapper would panic on an exception.)
pub(crate) fn arm_heartbeat_response(state: &State) -> Result<()> {
    let pair = WebSocketRequestResponsePair::new(HEARTBEAT, HEARTBEAT_ACK)
        .map_err(|err| worker::Error::RustError(format!("{err:?}")))?;
    let state: &JsValue = state.as_raw();
    let armed = Reflect::get(state, &JsValue::from_str("setWebSocketAutoResponse"))
        .and_then(|f| f.dyn_into::<Function>())
        .and_then(|f| f.call1(state, &pair));
    if let Err(err) = armed {
        worker::console_warn!("heartbeats will wake the object: {err:?}");
    }
    Ok(())
}

/// When the platform last answered this socket's heartbeat by itself (the hibernation
/// API's `getWebSocketAutoResponseTimestamp`, which workers-rs does not wrap), if it has.
pub(crate) fn pong_of(state: &State, ws: &WebSocket) -> Option<Millis> {
    let state: &JsValue = state.as_raw();
    let getter = Reflect::get(
        state,
        &JsValue::from_str("getWebSocketAutoResponseTimestamp"),
    )
    .ok()?
    .dyn_into::<Function>()
    .ok()?;
    let socket: &worker::web_sys::WebSocket = ws.as_ref();
    let date = getter.call1(state, socket).ok()?.dyn_into::<Date>().ok()?;
    let ms = date.get_time();
    (ms.is_finite() && ms >= 0.0).then_some(ms as Millis)
}
