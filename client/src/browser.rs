//! Browser glue: clock, randomness, timers, localStorage, `navigator`, the coordinator's
//! address, and the socket loop that drives a [`Link`]. No decisions are made here; they are
//! the link's and the [`Pacer`]'s.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;

use futures::channel::mpsc::{unbounded, UnboundedReceiver};
use futures::{select, FutureExt, SinkExt, StreamExt};
use gloo_net::websocket::{futures::WebSocket, Message};
use js_sys::Reflect;
use serde::de::IgnoredAny;
use serde::Deserialize;
use shared_protocol::{encode, TagFirstOf, ToClient, Work, WorkResult};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{MessageEvent, WorkerOptions, WorkerType};

use crate::device_info::Navigator;
use crate::link::{LeasePayload, Link, LinkEvent, SnapshotPayload};
use crate::pace::Pacer;
use crate::work::BENCH_JOB_ID;

pub fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

pub fn random() -> f64 {
    js_sys::Math::random()
}

/// Resolves after `ms` milliseconds.
pub async fn sleep(ms: u64) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let global = js_sys::global();
        if let Ok(set_timeout) = Reflect::get(&global, &"setTimeout".into()) {
            if let Some(set_timeout) = set_timeout.dyn_ref::<js_sys::Function>() {
                let _ = set_timeout.call2(
                    &global,
                    &resolve,
                    &JsValue::from_f64(ms.min(i32::MAX as u64) as f64),
                );
            }
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

pub fn storage_get(key: &str) -> Option<String> {
    local_storage()?.get_item(key).ok().flatten()
}

pub fn storage_set(key: &str, value: &str) {
    if let Some(storage) = local_storage() {
        let _ = storage.set_item(key, value);
    }
}

pub fn storage_remove(key: &str) {
    if let Some(storage) = local_storage() {
        let _ = storage.remove_item(key);
    }
}

pub fn navigator() -> Navigator {
    let Some(nav) = web_sys::window().map(|w| w.navigator()) else {
        return Navigator::default();
    };
    let device_memory = Reflect::get(&nav, &"deviceMemory".into())
        .ok()
        .and_then(|v| v.as_f64());
    let has_webgpu = Reflect::get(&nav, &"gpu".into())
        .map(|v| !v.is_undefined())
        .unwrap_or(false);
    Navigator {
        user_agent: nav.user_agent().unwrap_or_default(),
        hardware_concurrency: nav.hardware_concurrency(),
        device_memory_gb: device_memory,
        has_webgpu,
    }
}

pub fn location_path() -> String {
    web_sys::window()
        .and_then(|w| w.location().pathname().ok())
        .unwrap_or_default()
}

/// The URL fragment, with its `#`.
pub fn location_hash() -> String {
    web_sys::window()
        .and_then(|w| w.location().hash().ok())
        .unwrap_or_default()
}

/// Replaces the address bar's URL without loading (to drop a secret from the fragment).
pub fn replace_url(path: &str) {
    if let Some(history) = web_sys::window().and_then(|w| w.history().ok()) {
        let _ = history.replace_state_with_url(&JsValue::NULL, "", Some(path));
    }
}

/// The page's own origin, e.g. `https://swarm.example`.
pub fn page_origin() -> String {
    own_origin()
}

fn navigator_method(name: &str) -> Option<(JsValue, js_sys::Function)> {
    let nav: JsValue = web_sys::window()?.navigator().into();
    let target = if name == "writeText" {
        Reflect::get(&nav, &"clipboard".into()).ok()?
    } else {
        nav
    };
    let method = Reflect::get(&target, &name.into())
        .ok()?
        .dyn_into::<js_sys::Function>()
        .ok()?;
    Some((target, method))
}

/// Copies text to the clipboard (where the browser allows it).
pub fn copy_text(text: &str) {
    if let Some((clipboard, write)) = navigator_method("writeText") {
        let _ = write.call1(&clipboard, &text.into());
    }
}

/// Whether the Web Share API is available (phones mostly).
pub fn can_share() -> bool {
    navigator_method("share").is_some()
}

/// Opens the system share sheet for a link.
pub fn share(title: &str, url: &str) {
    if let Some((nav, share)) = navigator_method("share") {
        let data = js_sys::Object::new();
        let _ = Reflect::set(&data, &"title".into(), &title.into());
        let _ = Reflect::set(&data, &"url".into(), &url.into());
        let _ = share.call1(&nav, &data);
    }
}

pub fn navigate(path: &str) {
    if let Some(window) = web_sys::window() {
        let _ = window.location().set_href(path);
    }
}

fn own_origin() -> String {
    web_sys::window()
        .and_then(|w| w.location().origin().ok())
        .unwrap_or_default()
}

/// The optional runtime config file deployed next to the client.
#[derive(Deserialize)]
struct RuntimeConfig {
    coordinator: String,
}

/// The coordinator's HTTP origin: `coordinator` from `/ostrich-config.json` when that file
/// exists and parses, else the page's own origin. Decided at run time so that a wrong build
/// cannot strand the client.
pub async fn coordinator_origin() -> String {
    let configured = async {
        let resp = gloo_net::http::Request::get("/ostrich-config.json")
            .send()
            .await
            .ok()?;
        if !resp.ok() {
            return None;
        }
        let config: RuntimeConfig = resp.json().await.ok()?;
        let url = config.coordinator.trim_end_matches('/').to_owned();
        (url.starts_with("https://") || url.starts_with("http://")).then_some(url)
    };
    configured.await.unwrap_or_else(own_origin)
}

/// The WebSocket URL of a swarm on the coordinator at `origin`.
pub fn ws_url(origin: &str, swarm_id: &str) -> String {
    let ws_origin = origin
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    format!("{ws_origin}/api/swarms/{swarm_id}/ws")
}

/// A wall-clock time as this browser's local "HH:MM:SS".
pub fn clock(ms: u64) -> String {
    let date = js_sys::Date::new(&JsValue::from_f64(ms as f64));
    format!(
        "{:02}:{:02}:{:02}",
        date.get_hours(),
        date.get_minutes(),
        date.get_seconds()
    )
}

/// A GET answered with JSON, or `None` on any failure (the caller tries again later).
pub async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> Option<T> {
    let resp = gloo_net::http::Request::get(url).send().await.ok()?;
    if !resp.ok() {
        return None;
    }
    resp.json::<T>().await.ok()
}

/// A GET with the owner key, answered with its body's text, or why not.
pub async fn get_text_as_owner(url: &str, owner_key: &str) -> Result<String, String> {
    let resp = gloo_net::http::Request::get(url)
        .header("authorization", &format!("Bearer {owner_key}"))
        .send()
        .await
        .map_err(|e| format!("the coordinator is unreachable: {e}"))?;
    if !resp.ok() {
        return Err(format!("HTTP {}", resp.status()));
    }
    resp.text().await.map_err(|e| e.to_string())
}

/// Saves `text` as a file named `name` (the browser's download).
pub fn save_text(name: &str, text: &str, mime: &str) -> Option<()> {
    let parts = js_sys::Array::of1(&JsValue::from_str(text));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(mime);
    let blob = web_sys::Blob::new_with_str_sequence_and_options(&parts, &options).ok()?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).ok()?;
    let anchor: web_sys::HtmlAnchorElement = web_sys::window()?
        .document()?
        .create_element("a")
        .ok()?
        .dyn_into()
        .ok()?;
    anchor.set_href(&url);
    anchor.set_download(name);
    anchor.click();
    let _ = web_sys::Url::revoke_object_url(&url);
    Some(())
}

/// A canvas's 2D context.
pub fn canvas_2d(canvas: &web_sys::HtmlCanvasElement) -> Option<web_sys::CanvasRenderingContext2d> {
    canvas.get_context("2d").ok()??.dyn_into().ok()
}

/// The grey of rows not computed yet (the coordinator's PNGs use the same).
const PENDING: &str = "rgb(48, 48, 48)";

/// Paints `rows` rows from `first_row` as not computed yet.
pub fn clear_rows(ctx: &web_sys::CanvasRenderingContext2d, width: u32, first_row: u32, rows: u32) {
    ctx.set_fill_style_str(PENDING);
    ctx.fill_rect(0.0, f64::from(first_row), f64::from(width), f64::from(rows));
}

/// Draws a PNG (base64) with its top-left corner at row `first_row`; the rows it covered.
pub async fn draw_png(
    ctx: &web_sys::CanvasRenderingContext2d,
    png: &str,
    first_row: u32,
) -> Option<u32> {
    let img = web_sys::HtmlImageElement::new().ok()?;
    img.set_src(&format!("data:image/png;base64,{png}"));
    wasm_bindgen_futures::JsFuture::from(img.decode())
        .await
        .ok()?;
    ctx.draw_image_with_html_image_element(&img, 0.0, f64::from(first_row))
        .ok()?;
    Some(img.natural_height())
}

/// A lease waiting for a worker.
#[derive(Clone)]
struct Queued {
    lease_id: u64,
    work: Work,
    bench: bool,
    /// For a workload lease, `Lease <device id> <ticket>`: its module's fetch and its
    /// outputs' upload present it.
    auth: Option<String>,
}

/// A pool of module Web Workers (`/worker.js`), one per core, each running one lease at a time
/// with the shared kernels (or, for own workloads, the lease's module in a runner worker of its
/// own), so the page stays responsive. Which worker may start a lease when is the [`Pacer`]'s
/// to say (lent cores, the swarm's share, duty-cycle rests).
pub struct WorkerPool {
    workers: Vec<web_sys::Worker>,
    /// `…/api/swarms/<id>`: where workload leases fetch modules and upload outputs.
    api: String,
    pacer: Pacer,
    /// Leases waiting for a worker, oldest first.
    queue: VecDeque<Queued>,
    running: HashMap<usize, (u64, bool)>,
    /// Leases whose results no longer count (withdrawn while disconnected, or cancelled).
    stale: HashSet<u64>,
    /// `(worker, lease_id, the result's JSON or why there is none, compute ms)`
    results: UnboundedReceiver<(usize, u64, Result<String, String>, f64)>,
    _handlers: Vec<Closure<dyn FnMut(MessageEvent)>>,
}

impl WorkerPool {
    /// Starts `size` workers for the swarm API at `api`; `None` if the browser cannot run
    /// module workers.
    pub fn new(size: usize, api: String) -> Option<Self> {
        let (tx, results) = unbounded();
        let options = WorkerOptions::new();
        options.set_type(WorkerType::Module);
        let mut workers = Vec::new();
        let mut handlers = Vec::new();
        for index in 0..size.max(1) {
            let worker = web_sys::Worker::new_with_options("/worker.js", &options).ok()?;
            let tx = tx.clone();
            let handler = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                let data = event.data();
                let field = |name: &str| Reflect::get(&data, &name.into()).ok();
                let number = |name: &str| field(name).and_then(|v| v.as_f64()).unwrap_or(-1.0);
                let text = |name: &str| field(name).and_then(|v| v.as_string()).unwrap_or_default();
                let (result, error) = (text("result"), text("error"));
                let result = if !result.is_empty() {
                    Ok(result)
                } else if !error.is_empty() {
                    Err(error)
                } else {
                    Err("the worker could not compute it".to_owned())
                };
                let _ = tx.unbounded_send((index, number("lease_id") as u64, result, number("ms")));
            });
            worker.set_onmessage(Some(handler.as_ref().unchecked_ref()));
            workers.push(worker);
            handlers.push(handler);
        }
        let pacer = Pacer::new(workers.len());
        Some(Self {
            workers,
            api,
            pacer,
            queue: VecDeque::new(),
            running: HashMap::new(),
            stale: HashSet::new(),
            results,
            _handlers: handlers,
        })
    }
}

/// What computes a link's leases: a device's [`WorkerPool`], or nothing on a dashboard
/// ([`NoCompute`]).
pub trait Compute {
    /// The user lends this many cores.
    fn set_limit(&mut self, limit: usize);
    /// The coordinator's share changed.
    fn set_share(&mut self, workers: usize, duty_percent: u8);
    /// A lease to compute, with its `auth` (see [`Link::lease_authorization`]), which only a
    /// workload lease uses.
    fn submit(&mut self, lease_id: u64, work: Work, bench: bool, auth: Option<String>);
    fn cancel(&mut self, lease_id: u64);
    /// Forgets all work (the connection dropped: the coordinator has withdrawn the leases).
    fn clear(&mut self);
    /// When [`Self::pump`] should next run.
    fn wake_at(&self) -> Option<u64>;
    /// Starts what may start now.
    fn pump(&mut self);
    /// The next finished lease that still counts: `(lease_id, result or why there is none,
    /// compute_ms)`.
    fn next_result(&mut self) -> impl Future<Output = (u64, Result<WorkResult, String>, u64)>;
}

/// A dashboard's computing: no value of this type exists, so a `drive` given
/// `Option<NoCompute>` has none, and the compiler leaves out every computing path with what
/// only they use (the decoder of workers' results among them).
pub enum NoCompute {}

impl Compute for NoCompute {
    fn set_limit(&mut self, _: usize) {
        match *self {}
    }
    fn set_share(&mut self, _: usize, _: u8) {
        match *self {}
    }
    fn submit(&mut self, _: u64, _: Work, _: bool, _: Option<String>) {
        match *self {}
    }
    fn cancel(&mut self, _: u64) {
        match *self {}
    }
    fn clear(&mut self) {
        match *self {}
    }
    fn wake_at(&self) -> Option<u64> {
        match *self {}
    }
    fn pump(&mut self) {
        match *self {}
    }
    async fn next_result(&mut self) -> (u64, Result<WorkResult, String>, u64) {
        match *self {}
    }
}

impl Compute for WorkerPool {
    fn set_limit(&mut self, limit: usize) {
        self.pacer.set_lend(limit);
        self.pump();
    }

    fn set_share(&mut self, workers: usize, duty_percent: u8) {
        self.pacer.set_share(workers, duty_percent);
        self.pump();
    }

    /// A lease to compute, with its `auth` (see [`Link::lease_authorization`]), which only a
    /// workload lease uses: the worker runs a lease that comes with one as a workload.
    fn submit(&mut self, lease_id: u64, work: Work, bench: bool, auth: Option<String>) {
        let auth = auth.filter(|_| matches!(work, Work::Workload { .. }));
        self.queue.push_back(Queued {
            lease_id,
            work,
            bench,
            auth,
        });
        self.pump();
    }

    fn cancel(&mut self, lease_id: u64) {
        self.queue.retain(|queued| queued.lease_id != lease_id);
        let running = self.running.iter().find(|(_, (id, _))| *id == lease_id);
        if let Some((&index, _)) = running {
            self.stale.insert(lease_id);
            // A workload lease stops at once (its runner is terminated); a kernel's lease
            // runs out, its result unread.
            let message = js_sys::Object::new();
            let _ = Reflect::set(
                &message,
                &"cancel".into(),
                &JsValue::from_f64(lease_id as f64),
            );
            let _ = self.workers[index].post_message(&message);
        }
    }

    fn clear(&mut self) {
        self.queue.clear();
        self.stale.extend(self.running.values().map(|(id, _)| *id));
    }

    /// When a resting worker may take the next waiting lease ([`Self::pump`] then).
    fn wake_at(&self) -> Option<u64> {
        if self.queue.is_empty() {
            return None;
        }
        self.pacer.wake_at(now_ms())
    }

    /// Starts waiting leases on the workers the pacer allows.
    fn pump(&mut self) {
        let now = now_ms();
        while let Some(bench) = self.queue.front().map(|queued| queued.bench) {
            let Some(index) = self.pacer.free_slot(now, bench) else {
                break;
            };
            let Some(Queued {
                lease_id,
                work,
                auth,
                ..
            }) = self.queue.pop_front()
            else {
                break;
            };
            let message = js_sys::Object::new();
            let _ = Reflect::set(
                &message,
                &"lease_id".into(),
                &JsValue::from_f64(lease_id as f64),
            );
            let _ = Reflect::set(&message, &"work".into(), &encode(&work).into());
            if let Some(auth) = auth {
                let _ = Reflect::set(&message, &"auth".into(), &auth.into());
                let _ = Reflect::set(&message, &"api".into(), &self.api.as_str().into());
            }
            let _ = self.workers[index].post_message(&message);
            self.pacer.start(index);
            self.running.insert(index, (lease_id, bench));
        }
    }

    async fn next_result(&mut self) -> (u64, Result<WorkResult, String>, u64) {
        loop {
            let Some((index, lease_id, result, ms)) = self.results.next().await else {
                return futures::future::pending().await;
            };
            let ms = ms.max(0.0) as u64;
            let bench = self.running.remove(&index).is_some_and(|(_, bench)| bench);
            self.pacer.finish(index, now_ms(), ms, bench);
            self.pump();
            if self.stale.remove(&lease_id) {
                continue;
            }
            // Our own worker wrote it with serde, tag first.
            let result = result.and_then(|json| {
                serde_json::from_str::<TagFirstOf<WorkResult>>(&json)
                    .map(|TagFirstOf(result)| result)
                    .map_err(|err| err.to_string())
            });
            return (lease_id, result, ms);
        }
    }
}

impl Drop for WorkerPool {
    /// Stops the workers with the pool: a worker still computing would otherwise post its
    /// result to a handler that no longer exists ("closure invoked … after being dropped").
    fn drop(&mut self) {
        for worker in &self.workers {
            worker.set_onmessage(None);
            worker.terminate();
        }
    }
}

/// What woke the socket loop.
enum Wake {
    Incoming(Option<Result<Message, gloo_net::websocket::WebSocketError>>),
    Lend(u16),
    Computed(u64, Result<WorkResult, String>, u64),
    Timer,
}

/// Drives `link` over real sockets until the coordinator refuses its identity, computing
/// leases on `pool` (devices). Calls `update` after every change with the link and the event
/// (if any) that caused it. `S` is how snapshots are decoded and `W` a lease's work: a
/// dashboard reads [`SwarmSnapshot`] and skips work unread, a device the other way round, and
/// a dashboard's `P` is [`NoCompute`]; owners' replies come over HTTP, so they are skipped here.
///
/// [`SwarmSnapshot`]: shared_protocol::SwarmSnapshot
pub async fn drive<S, W, P>(
    mut link: Link,
    url: String,
    mut pool: Option<P>,
    mut lend: Option<UnboundedReceiver<u16>>,
    mut update: impl FnMut(&Link, Option<LinkEvent>),
) -> Link
where
    S: SnapshotPayload + serde::de::DeserializeOwned,
    S::Delta: serde::de::DeserializeOwned,
    W: LeasePayload + serde::de::DeserializeOwned,
    P: Compute,
{
    // The cores the user chose to lend, re-sent after every welcome.
    let mut lending: Option<u16> = None;
    loop {
        update(&link, None);
        if let Ok(ws) = WebSocket::open(&url) {
            let (mut tx, rx) = ws.split();
            let mut rx = rx.fuse();
            let hello = link.on_open();
            update(&link, None);
            if tx.send(Message::Text(encode(&hello))).await.is_ok() {
                loop {
                    let wake_at = [link.next_heartbeat_at(), pool.as_ref().and_then(P::wake_at)]
                        .into_iter()
                        .flatten()
                        .min();
                    let wait = wake_at.map_or(60_000, |at| at.saturating_sub(now_ms()));
                    // Decide what woke us inside the select; act after it, when no future
                    // borrows the pool any more.
                    let wake = {
                        let computed = async {
                            match pool.as_mut() {
                                Some(pool) => pool.next_result().await,
                                None => futures::future::pending().await,
                            }
                        };
                        let lend_change = async {
                            match lend.as_mut() {
                                Some(lend) => lend.next().await,
                                None => None,
                            }
                        };
                        let lend_change = async {
                            match lend_change.await {
                                Some(cores) => cores,
                                None => futures::future::pending().await,
                            }
                        };
                        select! {
                            incoming = rx.next() => Wake::Incoming(incoming),
                            cores = lend_change.fuse() => Wake::Lend(cores),
                            (lease_id, result, ms) = computed.fuse() => Wake::Computed(lease_id, result, ms),
                            _ = sleep(wait).fuse() => Wake::Timer,
                        }
                    };
                    let outgoing = match wake {
                        Wake::Incoming(Some(Ok(Message::Text(text)))) => {
                            let Ok(message) =
                                serde_json::from_str::<ToClient<S, IgnoredAny, S::Delta, W>>(&text)
                            else {
                                continue;
                            };
                            let events = link.on_message(now_ms(), message);
                            let resend_lend = events
                                .iter()
                                .any(|event| matches!(event, LinkEvent::Welcomed { .. }))
                                .then_some(lending)
                                .flatten();
                            for event in events {
                                if let Some(pool) = pool.as_mut() {
                                    match &event {
                                        LinkEvent::Lease {
                                            lease_id,
                                            work,
                                            job_id,
                                        } => pool.submit(
                                            *lease_id,
                                            work.clone(),
                                            job_id == BENCH_JOB_ID,
                                            link.lease_authorization(*lease_id),
                                        ),
                                        LinkEvent::Share(share) => pool.set_share(
                                            usize::from(share.workers),
                                            share.duty_percent,
                                        ),
                                        LinkEvent::CancelLease { lease_id } => {
                                            pool.cancel(*lease_id)
                                        }
                                        _ => {}
                                    }
                                }
                                update(&link, Some(event));
                            }
                            if link.must_reconnect() {
                                // Out of step with the deltas: a new connection starts with a
                                // whole snapshot.
                                break;
                            }
                            resend_lend.map(|cores| link.lend_message(cores))
                        }
                        Wake::Lend(cores) => {
                            lending = Some(cores);
                            if let Some(pool) = pool.as_mut() {
                                pool.set_limit(usize::from(cores));
                            }
                            Some(link.lend_message(cores))
                        }
                        Wake::Incoming(Some(Ok(Message::Bytes(_)))) => None,
                        Wake::Incoming(Some(Err(_)) | None) => break,
                        Wake::Computed(lease_id, Ok(result), ms) => {
                            update(
                                &link,
                                Some(LinkEvent::Computed {
                                    lease_id,
                                    compute_ms: ms,
                                }),
                            );
                            Some(link.chunk_result(now_ms(), lease_id, result, ms))
                        }
                        // Not answered: the coordinator gives the lease to another device
                        // when its deadline passes.
                        Wake::Computed(lease_id, Err(error), _) => {
                            update(&link, Some(LinkEvent::Failed { lease_id, error }));
                            None
                        }
                        Wake::Timer => {
                            if let Some(pool) = pool.as_mut() {
                                pool.pump();
                            }
                            link.poll_heartbeat(now_ms())
                        }
                    };
                    // Results not acknowledged go again after a welcome and after a minute.
                    let resends = link.poll_resends(now_ms());
                    let mut lost = false;
                    for message in outgoing.into_iter().chain(resends) {
                        if tx.send(Message::Text(encode(&message))).await.is_err() {
                            lost = true;
                            break;
                        }
                    }
                    if lost {
                        break;
                    }
                }
            }
            let _ = tx.close().await;
        }
        if let Some(pool) = pool.as_mut() {
            pool.clear();
        }
        let delay = link.on_close(now_ms(), random());
        update(&link, None);
        match delay {
            Some(delay) => sleep(delay).await,
            None => return link,
        }
    }
}
