//! The Cloudflare Worker: HTTP routing in front of one Durable Object per swarm.
//!
//! Routes (all under `/api`, everything else is the static client served from assets):
//! - `GET  /api/health`
//! - `POST /api/swarms` — creates a swarm: draws its id and owner key, initialises the object
//!   named by the swarm id
//! - `GET  /api/swarms/{id}` — public facts about a swarm
//! - `GET  /api/swarms/{id}/stats` — the object's cost counters and alarm (owner only)
//! - `GET  /api/swarms/{id}/ws` — WebSocket upgrade, forwarded to the swarm's object
//!
//! This file is glue: validation lives in `shared-protocol`, swarm logic in `swarm-core`.

mod config;
mod http;
mod object;

use shared_protocol::{
    decode, is_id, CreateSwarmRequest, CreateSwarmResponse, ErrorCode, HealthResponse, Limits,
    PROTOCOL_VERSION,
};
use swarm_core::{hash_secret, Rng};
use worker::{event, Context, Env, Method, Request, RequestInit, Response, Result};

use crate::http::{error_response, json_response, read_body};
pub use object::SwarmObject;

/// The Durable Object binding in wrangler.toml.
const SWARM_BINDING: &str = "SWARM";

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let path = req.path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (Method::Get, ["api", "health"]) => json_response(
            200,
            &HealthResponse {
                ok: true,
                protocol: PROTOCOL_VERSION,
            },
        ),
        (Method::Post, ["api", "swarms"]) => create_swarm(req, &env).await,
        (Method::Get, ["api", "swarms", id]) => forward(req, &env, id, "/info").await,
        (Method::Get, ["api", "swarms", id, "stats"]) => forward(req, &env, id, "/stats").await,
        (Method::Get, ["api", "swarms", id, "ws"]) => {
            let config = config::Config::from_env(&env);
            if let Err(why) = http::check_origin(&req, &config.allowed_origins) {
                return error_response(ErrorCode::Forbidden, &why);
            }
            forward(req, &env, id, "/ws").await
        }
        // Paths outside /api never reach the worker: the static assets answer them.
        _ => error_response(ErrorCode::NotFound, "no such endpoint"),
    }
}

async fn create_swarm(mut req: Request, env: &Env) -> Result<Response> {
    let limits = Limits::default();
    let body = match read_body(&mut req, &limits).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let request = match decode::<CreateSwarmRequest>(&body, &limits) {
        Ok(request) => request.into_inner(),
        Err(err) => return error_response(err.code(), &err.to_string()),
    };
    let mut rng = Rng::from_seed(object::random_seed()?);
    let swarm_id = rng.id();
    let owner_key = rng.secret();
    let init = object::InitRequest {
        swarm_id: swarm_id.clone(),
        name: request.name,
        owner_key_hash: hash_secret(&owner_key),
    };
    let mut init_req = RequestInit::new();
    init_req
        .with_method(Method::Post)
        .with_body(Some(serde_json::to_string(&init)?.into()));
    let inner = Request::new_with_init("https://swarm/init", &init_req)?;
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

/// Hands a request to the object of swarm `id` (the object is named by the swarm id, never by
/// anything else the client sends), rewriting the path to the object's own route.
async fn forward(req: Request, env: &Env, id: &str, route: &str) -> Result<Response> {
    if is_id(id, &()).is_err() {
        return error_response(
            ErrorCode::SwarmNotFound,
            "swarm ids are 32 lowercase hex digits",
        );
    }
    let mut url = req.url()?;
    url.set_path(route);
    let inner = Request::new_with_init(url.as_str(), &clone_init(&req)?)?;
    let stub = env
        .durable_object(SWARM_BINDING)?
        .id_from_name(id)?
        .get_stub()?;
    stub.fetch_with_request(inner).await
}

fn clone_init(req: &Request) -> Result<RequestInit> {
    let mut init = RequestInit::new();
    init.with_method(req.method())
        .with_headers(req.headers().clone());
    Ok(init)
}
