//! The Cloudflare Worker: HTTP routing in front of one Durable Object per swarm and the
//! short-code directory.
//!
//! Routes (all under `/api`; everything else is the static client served from assets):
//! - `GET  /api/health`
//! - `POST /api/swarms` — creates a swarm: draws its id and owner key, initialises the object
//!   named by the swarm id
//! - `POST /api/join` — which swarm an invite short code belongs to
//! - `GET  /api/swarms/{id}` — public facts about a swarm
//! - `GET  /api/swarms/{id}/stats` — the object's cost counters and alarm (owner only)
//! - `POST /api/swarms/{id}/owner` — an owner command (owner only)
//! - `GET  /api/swarms/{id}/jobs/{job_id}` — a job's progress and result (JSON)
//! - `GET  /api/swarms/{id}/jobs/{job_id}/image.png` — a Mandelbrot job's image so far (PNG)
//! - `GET  /api/swarms/{id}/jobs/{job_id}/bands?after=N` — its bands stored since (JSON)
//! - `PUT|GET|HEAD /api/swarms/{id}/modules/{sha256}` — a workload module (the owner's; a
//!   device reads the running job's with a lease ticket; see `modules`)
//! - `PUT  /api/swarms/{id}/inputs/{sha256}` — a page of a workload job's input set (owner
//!   only), and `GET /api/swarms/{id}/inputs` — a lease's inputs (with its ticket; see
//!   `inputs`)
//! - `PUT  /api/swarms/{id}/outputs/{sha256}` — a lease's outputs file (with its ticket)
//! - `GET  /api/swarms/{id}/jobs/{job_id}/results?from=K` — a workload job's results as NDJSON
//!   (owner only; see `outputs`)
//! - `GET  /api/swarms/{id}/ws` — WebSocket upgrade, forwarded to the swarm's object, which
//!   accepts it or names the gateway object to take it to
//!
//! Requests from a browser page on a foreign origin are refused; listed origins
//! (`ALLOWED_ORIGINS`) get CORS headers. This file is glue: validation lives in
//! `shared-protocol`, decisions in `swarm-core`.

// No panic reachable from input, by construction: the constructs that can panic are denied
// outside tests, and each remaining one carries an `allow` saying why it cannot fire. (A
// panic would reset the Wasm instance that every object of this isolate shares.)
#![cfg_attr(
    not(test),
    deny(
        clippy::string_slice,
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::arithmetic_side_effects
    )
)]

mod config;
mod directory;
mod gateway;
mod http;
mod inputs;
mod modules;
mod object;
mod outputs;

use shared_protocol::{
    is_id, normalize_code, CreateSwarmRequest, CreateSwarmResponse, ErrorCode, HealthResponse,
    Limits, ResolveCodeRequest, PROTOCOL_VERSION,
};
use swarm_core::{hash_secret, Rng};
use worker::{event, Context, Env, Method, Request, RequestInit, Response, Result};

use crate::config::Config;
use crate::http::{
    decode_body, error_response, json_response, origin_of, read_body, with_cors, Origin,
};
pub use directory::CodeDirectoryObject;
pub use gateway::GatewayObject;
pub use object::SwarmObject;

/// The Durable Object bindings in wrangler.toml.
pub(crate) const SWARM_BINDING: &str = "SWARM";
pub(crate) const GATEWAY_BINDING: &str = "GATEWAY";
const CODES_BINDING: &str = "CODES";

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let config = Config::from_env(&env);
    let origin = origin_of(&req, &config.allowed_origins);
    if let Origin::Foreign(foreign) = &origin {
        return error_response(
            ErrorCode::Forbidden,
            &format!("origin {foreign} is not allowed"),
        );
    }
    if req.method() == Method::Options {
        return with_cors(Response::empty()?.with_status(204), &origin);
    }
    let path = req.path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let resp = match (req.method(), segments.as_slice()) {
        (Method::Get, ["api", "health"]) => json_response(
            200,
            &HealthResponse {
                ok: true,
                protocol: PROTOCOL_VERSION,
            },
        ),
        (Method::Post, ["api", "swarms"]) => create_swarm(req, &env).await,
        (Method::Post, ["api", "join"]) => resolve_code(req, &env).await,
        (Method::Get, ["api", "swarms", id]) => forward(req, &env, id, "/info").await,
        (Method::Get, ["api", "swarms", id, "stats"]) => forward(req, &env, id, "/stats").await,
        (Method::Post, ["api", "swarms", id, "owner"]) => forward(req, &env, id, "/owner").await,
        (Method::Get, ["api", "swarms", id, "jobs", job_id]) if is_id(job_id, &()).is_ok() => {
            let route = format!("/jobs/{job_id}");
            forward(req, &env, id, &route).await
        }
        (Method::Get, ["api", "swarms", id, "jobs", job_id, "image.png"])
            if is_id(job_id, &()).is_ok() =>
        {
            let route = format!("/image/{job_id}");
            forward(req, &env, id, &route).await
        }
        (Method::Get, ["api", "swarms", id, "jobs", job_id, "bands"])
            if is_id(job_id, &()).is_ok() =>
        {
            let route = format!("/bands/{job_id}");
            forward(req, &env, id, &route).await
        }
        (Method::Put | Method::Get | Method::Head, ["api", "swarms", id, "modules", sha256]) => {
            if is_id(id, &()).is_err() {
                error_response(
                    ErrorCode::SwarmNotFound,
                    "swarm ids are 32 lowercase hex digits",
                )
            } else if req.method() == Method::Put {
                modules::put(req, &env, id, sha256).await
            } else {
                modules::get(req, &env, id, sha256).await
            }
        }
        (Method::Put, ["api", "swarms", id, "inputs", sha256]) if is_id(id, &()).is_ok() => {
            inputs::put(req, &env, id, sha256).await
        }
        (Method::Get, ["api", "swarms", id, "inputs"]) if is_id(id, &()).is_ok() => {
            inputs::of_lease(req, &env, id).await
        }
        (Method::Put, ["api", "swarms", id, "outputs", sha256]) if is_id(id, &()).is_ok() => {
            outputs::put(req, &env, id, sha256).await
        }
        (Method::Get, ["api", "swarms", id, "jobs", job_id, "results"])
            if is_id(id, &()).is_ok() =>
        {
            outputs::results(req, &env, id, job_id).await
        }
        // WebSocket answers carry no CORS headers: browsers check Origin, which is done above.
        (Method::Get, ["api", "swarms", id, "ws"]) => return upgrade(req, &env, id).await,
        _ => error_response(ErrorCode::NotFound, "no such endpoint"),
    }?;
    with_cors(resp, &origin)
}

async fn create_swarm(mut req: Request, env: &Env) -> Result<Response> {
    let request = match decode_body::<CreateSwarmRequest>(&mut req).await {
        Ok(request) => request.into_inner(),
        Err(resp) => return resp,
    };
    let mut rng = Rng::from_seed(object::random_seed()?);
    let swarm_id = rng.id();
    let owner_key = rng.secret();
    let init = object::InitRequest {
        swarm_id: swarm_id.clone(),
        name: request.name,
        owner_key_hash: hash_secret(&owner_key),
    };
    let inner = post_json("https://swarm/init", &serde_json::to_string(&init)?)?;
    let stub = env
        .durable_object(SWARM_BINDING)?
        .id_from_name(&swarm_id)?
        .get_stub()?;
    let resp = stub.fetch_with_request(inner).await?;
    if resp.status_code() != 201 {
        return Ok(resp);
    }
    json_response(
        201,
        &CreateSwarmResponse {
            swarm_id,
            owner_key,
        },
    )
}

/// Routes a typed short code to its directory shard (by its hash), which answers with the
/// swarm id or a rate-limited refusal.
async fn resolve_code(mut req: Request, env: &Env) -> Result<Response> {
    let request = match decode_body::<ResolveCodeRequest>(&mut req).await {
        Ok(request) => request.into_inner(),
        Err(resp) => return resp,
    };
    let Some(canonical) = normalize_code(&request.code) else {
        return error_response(ErrorCode::Invalid, "not an invite code");
    };
    let client = req.headers().get("cf-connecting-ip")?.unwrap_or_default();
    let code_hash = hash_secret(&canonical);
    let stub = directory::stub_for_hash(env, &code_hash)?;
    let lookup = directory::ResolveRequest { code_hash, client };
    stub.fetch_with_request(post_json(
        "https://codes/resolve",
        &serde_json::to_string(&lookup)?,
    )?)
    .await
}

/// Hands a request to the object of swarm `id` (the object is named by the swarm id, never by
/// anything else the client sends), rewriting the path to the object's own route.
async fn forward(mut req: Request, env: &Env, id: &str, route: &str) -> Result<Response> {
    if is_id(id, &()).is_err() {
        return error_response(
            ErrorCode::SwarmNotFound,
            "swarm ids are 32 lowercase hex digits",
        );
    }
    let mut url = req.url()?;
    url.set_path(route);
    let mut init = RequestInit::new();
    init.with_method(req.method())
        .with_headers(req.headers().clone());
    if req.method() == Method::Post {
        let body = match read_body(&mut req, &Limits::default()).await {
            Ok(body) => body,
            Err(resp) => return resp,
        };
        init.with_body(Some(js_bytes(&body)));
    }
    let inner = Request::new_with_init(url.as_str(), &init)?;
    let stub = env
        .durable_object(SWARM_BINDING)?
        .id_from_name(id)?
        .get_stub()?;
    stub.fetch_with_request(inner).await
}

/// A WebSocket upgrade: the swarm's object accepts it, or names the gateway object that is to
/// (`object::GATEWAY_HEADER`), and the upgrade goes there from here.
async fn upgrade(req: Request, env: &Env, id: &str) -> Result<Response> {
    let headers = req.headers().clone();
    let resp = forward(req, env, id, "/ws").await?;
    // A 307 is the object's own answer, never passed on: it must name the gateway.
    if resp.status_code() != 307 {
        return Ok(resp);
    }
    let gateway = resp.headers().get(object::GATEWAY_HEADER)?;
    let Some(k) = gateway.and_then(|k| k.parse::<u32>().ok()) else {
        return error_response(ErrorCode::Internal, "the swarm named no gateway");
    };
    let mut url = worker::Url::parse("https://gateway/ws")?;
    url.query_pairs_mut()
        .append_pair("swarm", id)
        .append_pair("gateway", &k.to_string());
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    object::gateway_stub(env, id, k)?
        .fetch_with_request(Request::new_with_init(url.as_str(), &init)?)
        .await
}

/// An internal POST with a JSON body, for object-to-object calls.
pub(crate) fn post_json(url: &str, body: &str) -> Result<Request> {
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(body.into()));
    Request::new_with_init(url, &init)
}

fn js_bytes(bytes: &[u8]) -> wasm_bindgen::JsValue {
    js_sys::Uint8Array::from(bytes).into()
}
