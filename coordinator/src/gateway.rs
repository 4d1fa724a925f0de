//! A gateway object: holds some of a swarm's sockets for the swarm's object (see
//! `swarm_core::gateway` for when and why).
//!
//! Glue only, deciding nothing: it accepts the sockets the swarm's object hands it, lets the
//! platform answer their heartbeats, queues what happens on them and hands the queue to the
//! swarm's object in one call at a time (the events that arrive during a call go in the next),
//! and carries out what the swarm's object sends back. Each socket's attachment holds its
//! swarm, gateway and id, and the core's session for it, so that both this object and the
//! swarm's object can be evicted or restarted and find their sockets' state again.
//!
//! Internal routes, reached only from the swarm's object, except `/ws`: the Worker's router
//! takes an upgrade there when the swarm's object names this gateway for it (never on the
//! client's word):
//! - `GET /ws?swarm={id}&gateway={k}` — accept a WebSocket;
//! - `POST /deliver` — carry out a list of `GatewayOutput`s, in order;
//! - `GET /sessions` — every socket's `SocketAttachment` (for a restarted swarm object);
//! - `GET /pongs` — when the platform last answered each socket's heartbeat.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use shared_protocol::{close_code, ErrorCode};
use swarm_core::gateway::{GatewayBatch, GatewayEvent, GatewayOutput, GatewaySocket};
use swarm_core::{ConnId, Millis, SocketAttachment};
use worker::{
    durable_object, wasm_bindgen, Delay, DurableObject, Env, Request, Response, Result, State,
    WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

use crate::config::Config;

use crate::http::{error_response, json_response};
use crate::object::{arm_heartbeat_response, pong_of, random_bytes};

/// How many calls one event handler makes to the swarm's object before the rest go on
/// without it (so that no handler runs on without end under load).
const MAX_CALLS_PER_EVENT: usize = 64;

#[durable_object]
pub struct GatewayObject {
    state: State,
    relay: Rc<Relay>,
}

/// What the gateway's handlers share with the calls to the swarm's object, which may run on
/// after the handler that started them has answered (an accepted socket's `101` does not
/// wait for its swarm to hear of it).
struct Relay {
    env: Env,
    /// Open sockets by id and the swarm and index of this gateway, rebuilt from the
    /// attachments when the object starts.
    sockets: RefCell<Option<HashMap<ConnId, WebSocket>>>,
    home: RefCell<Option<(String, u32)>>,
    /// Events not yet handed to the swarm's object, and whether a call is under way.
    queue: RefCell<Vec<GatewayEvent>>,
    calling: Cell<bool>,
}

impl DurableObject for GatewayObject {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            relay: Rc::new(Relay {
                env,
                sockets: RefCell::new(None),
                home: RefCell::new(None),
                queue: RefCell::new(Vec::new()),
                calling: Cell::new(false),
            }),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        self.ensure_loaded()?;
        match req.path().as_str() {
            "/ws" => self.accept(&req).await,
            "/deliver" => {
                let mut req = req;
                let outputs: Vec<GatewayOutput> = req.json().await?;
                self.relay.deliver(outputs);
                Response::empty().map(|r| r.with_status(204))
            }
            "/sessions" => {
                let sessions: Vec<SocketAttachment> = self
                    .state
                    .get_websockets()
                    .iter()
                    .filter_map(|ws| attachment_of(ws)?.session)
                    .collect();
                json_response(200, &sessions)
            }
            "/pongs" => {
                let pongs: Vec<(ConnId, Millis)> = self
                    .relay
                    .with_sockets(|sockets| {
                        sockets
                            .iter()
                            .filter_map(|(conn, ws)| Some((*conn, pong_of(&self.state, ws)?)))
                            .collect()
                    })
                    .unwrap_or_default();
                json_response(200, &pongs)
            }
            _ => error_response(ErrorCode::NotFound, "no such endpoint"),
        }
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        self.ensure_loaded()?;
        let Some(conn) = attachment_of(&ws).map(|a| a.conn) else {
            return Ok(());
        };
        self.relay.queue.borrow_mut().push(match message {
            WebSocketIncomingMessage::String(text) => GatewayEvent::Text { conn, text },
            WebSocketIncomingMessage::Binary(bytes) => GatewayEvent::Binary { conn, bytes },
        });
        Relay::call_swarm(self.relay.clone()).await;
        Ok(())
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
}

impl GatewayObject {
    /// Rebuilds the socket table after the object (re)started, and has the platform answer
    /// heartbeats without waking it.
    fn ensure_loaded(&self) -> Result<()> {
        if self.relay.sockets.borrow().is_some() {
            return Ok(());
        }
        arm_heartbeat_response(&self.state)?;
        let mut sockets = HashMap::new();
        for ws in self.state.get_websockets() {
            match attachment_of(&ws) {
                Some(attachment) => {
                    self.relay
                        .home
                        .borrow_mut()
                        .get_or_insert((attachment.swarm_id, attachment.gateway));
                    sockets.insert(attachment.conn, ws);
                }
                None => {
                    let _ = ws.close(Some(close_code::SESSION_LOST), Some("session lost"));
                }
            }
        }
        *self.relay.sockets.borrow_mut() = Some(sockets);
        Ok(())
    }

    async fn accept(&self, req: &Request) -> Result<Response> {
        let url = req.url()?;
        let query = |name: &str| {
            url.query_pairs()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.into_owned())
        };
        let (Some(swarm_id), Some(gateway)) = (
            query("swarm"),
            query("gateway").and_then(|k| k.parse::<u32>().ok()),
        ) else {
            return error_response(ErrorCode::Malformed, "a gateway needs its swarm and index");
        };
        let pair = WebSocketPair::new()?;
        self.state.accept_web_socket(&pair.server);
        let conn = loop {
            let conn = ConnId::on_gateway(gateway, u32::from_le_bytes(random_bytes::<4>()?));
            if self
                .relay
                .with_sockets(|sockets| !sockets.contains_key(&conn))
                .unwrap_or(true)
            {
                break conn;
            }
        };
        pair.server.serialize_attachment(&GatewaySocket {
            swarm_id: swarm_id.clone(),
            gateway,
            conn,
            session: None,
        })?;
        self.relay
            .with_sockets(|sockets| sockets.insert(conn, pair.server));
        *self.relay.home.borrow_mut() = Some((swarm_id, gateway));
        let source = req.headers().get("cf-connecting-ip")?.unwrap_or_default();
        self.relay
            .queue
            .borrow_mut()
            .push(GatewayEvent::Open { conn, source });
        // The client has its socket at once; the swarm's object hears of it with the next
        // call. (Waiting for that call here doubled a join's time through a busy object.)
        wasm_bindgen_futures::spawn_local(Relay::call_swarm(self.relay.clone()));
        Response::from_websocket(pair.client)
    }

    async fn closed(&self, ws: WebSocket) -> Result<()> {
        self.ensure_loaded()?;
        let _ = ws.close(Some(1000), Some("closed"));
        let Some(conn) = attachment_of(&ws).map(|a| a.conn) else {
            return Ok(());
        };
        self.relay.with_sockets(|sockets| sockets.remove(&conn));
        self.relay
            .queue
            .borrow_mut()
            .push(GatewayEvent::Close { conn });
        Relay::call_swarm(self.relay.clone()).await;
        Ok(())
    }
}

impl Relay {
    fn with_sockets<T>(&self, f: impl FnOnce(&mut HashMap<ConnId, WebSocket>) -> T) -> Option<T> {
        self.sockets.borrow_mut().as_mut().map(f)
    }

    /// Hands the queued events to the swarm's object, unless a call is under way (it will
    /// take them next). Each call waits `GATEWAY_BATCH_MS` first, gathering the events that
    /// arrive meanwhile. A call that fails closes the sockets its events came from, so that
    /// their clients reconnect and resend what was not acknowledged. After
    /// [`MAX_CALLS_PER_EVENT`] calls the handler that made them ends, and the calls go on
    /// detached: events queued meanwhile may be the last for a long time (a hello, whose
    /// socket then says nothing until it is welcomed), and must not wait for another.
    async fn call_swarm(self: Rc<Self>) {
        if self.calling.replace(true) {
            return;
        }
        let pause = Duration::from_millis(Config::from_env(&self.env).gateway_batch_ms);
        let mut calls = 0;
        while calls < MAX_CALLS_PER_EVENT && !self.queue.borrow().is_empty() {
            // Set by the first socket accepted, before any event of it is queued.
            let Some((swarm_id, gateway)) = self.home.borrow().clone() else {
                break;
            };
            calls = calls.saturating_add(1);
            if !pause.is_zero() {
                Delay::from(pause).await;
            }
            let events = std::mem::take(&mut *self.queue.borrow_mut());
            let conns: Vec<ConnId> = events
                .iter()
                .filter_map(|event| match event {
                    GatewayEvent::Close { .. } => None,
                    GatewayEvent::Open { conn, .. }
                    | GatewayEvent::Text { conn, .. }
                    | GatewayEvent::Binary { conn, .. } => Some(*conn),
                })
                .collect();
            let batch = GatewayBatch { gateway, events };
            if let Err(err) = self.post_batch(&swarm_id, &batch).await {
                worker::console_error!("a gateway could not reach its swarm: {err}");
                self.deliver(
                    conns
                        .into_iter()
                        .map(|conn| GatewayOutput::Close {
                            conn,
                            code: close_code::SESSION_LOST,
                            reason: "coordinator unreachable".into(),
                        })
                        .collect(),
                );
            }
        }
        self.calling.set(false);
        if calls == MAX_CALLS_PER_EVENT && !self.queue.borrow().is_empty() {
            wasm_bindgen_futures::spawn_local(Box::pin(Self::call_swarm(self)));
        }
    }

    async fn post_batch(&self, swarm_id: &str, batch: &GatewayBatch) -> Result<()> {
        let stub = self
            .env
            .durable_object(crate::SWARM_BINDING)?
            .id_from_name(swarm_id)?
            .get_stub()?;
        let body = serde_json::to_string(batch)?;
        let resp = stub
            .fetch_with_request(crate::post_json("https://swarm/gateway", &body)?)
            .await?;
        match resp.status_code() {
            200..=299 => Ok(()),
            status => Err(worker::Error::RustError(format!(
                "the swarm answered a batch with {status}"
            ))),
        }
    }

    /// Carries out what the swarm's object said to this gateway's sockets, in order.
    fn deliver(&self, outputs: Vec<GatewayOutput>) {
        for output in outputs {
            match output {
                GatewayOutput::Send { conn, text } => {
                    self.with_sockets(|sockets| {
                        if let Some(ws) = sockets.get(&conn) {
                            if let Err(err) = ws.send_with_str(&text) {
                                worker::console_warn!("send failed: {err}");
                            }
                        }
                    });
                }
                GatewayOutput::Close { conn, code, reason } => {
                    if let Some(Some(ws)) = self.with_sockets(|sockets| sockets.remove(&conn)) {
                        let _ = ws.close(Some(code), Some(reason));
                    }
                }
                GatewayOutput::Attach { conn, attachment } => {
                    self.with_sockets(|sockets| {
                        let Some(ws) = sockets.get(&conn) else {
                            return;
                        };
                        let Some(mut socket) = attachment_of(ws) else {
                            return;
                        };
                        socket.session = Some(attachment);
                        if let Err(err) = ws.serialize_attachment(&socket) {
                            worker::console_error!("could not attach a socket's state: {err}");
                        }
                    });
                }
            }
        }
    }
}

fn attachment_of(ws: &WebSocket) -> Option<GatewaySocket> {
    ws.deserialize_attachment::<GatewaySocket>().ok().flatten()
}
