//! Workload modules (docs/WORKLOADS.md): uploaded by a swarm's owner, checked against the ABI,
//! stored in R2 under the swarm.
//!
//! All of it runs in the stateless Worker, not in the swarm's object: hashing and validating
//! up to 8 MiB would hold up every device of the swarm, while Workers run side by side. The
//! object is asked only whether the bearer key is the owner's (`/authorize`).
//!
//! - `PUT  /api/swarms/{id}/modules/{sha256}` — the module's bytes; 201 with its
//!   `ModuleInfo` when stored, 200 when it was stored already, 400 when the bytes do not
//!   hash to the name or break the ABI (the message says how).
//! - `GET  /api/swarms/{id}/modules/{sha256}` — the bytes devices run (`application/wasm`).
//! - `HEAD /api/swarms/{id}/modules/{sha256}` — whether it is stored (200 or 404).

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use shared_protocol::{is_sha256, ErrorCode, Limits};
use worker::{Env, Method, Request, Response, Result};
use workload::module::{check, hex, MAX_MODULE_BYTES};

use crate::http::{bearer, error_response, json_response, read_body};

/// The R2 bucket binding in wrangler.toml.
pub const BUCKET_BINDING: &str = "STORE";

/// Where a swarm's module is kept in the bucket.
fn key(swarm_id: &str, sha256: &str) -> String {
    format!("swarms/{swarm_id}/modules/{sha256}")
}

/// Stores the module in the request body under its name.
pub async fn put(mut req: Request, env: &Env, swarm_id: &str, sha256: &str) -> Result<Response> {
    if let Some(refusal) = refuse(&req, env, swarm_id, sha256).await? {
        return Ok(refusal);
    }
    let body = match read_named(&mut req, MAX_MODULE_BYTES, sha256).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let module = match check(&body) {
        Ok(module) => module,
        Err(why) => return error_response(ErrorCode::Invalid, &why.to_string()),
    };
    let info = module.info();
    let bucket = env.bucket(BUCKET_BINDING)?;
    let key = key(swarm_id, sha256);
    // Content-addressed: a module stored already is the same module.
    if bucket.head(key.clone()).await?.is_some() {
        return json_response(200, &info);
    }
    let metadata: HashMap<String, String> =
        HashMap::from([("info".to_owned(), serde_json::to_string(&info)?)]);
    bucket
        .put(key, module.bytes)
        .custom_metadata(metadata)
        .execute()
        .await?;
    json_response(201, &info)
}

/// A body of at most `max` bytes whose SHA-256 is `sha256` (its name in the URL), or the
/// answer that refuses it.
pub(crate) async fn read_named(
    req: &mut Request,
    max: usize,
    sha256: &str,
) -> std::result::Result<Vec<u8>, Result<Response>> {
    let limits = Limits {
        max_message_bytes: max,
        ..Limits::default()
    };
    let body = read_body(req, &limits).await?;
    let hashed = hex(&Sha256::digest(&body).into());
    if hashed != sha256 {
        return Err(error_response(
            ErrorCode::Invalid,
            &format!("the body's SHA-256 is {hashed}, not the {sha256} the URL names"),
        ));
    }
    Ok(body)
}

/// The stored module's bytes (`GET`), or only whether it is stored (`HEAD`).
pub async fn get(req: Request, env: &Env, swarm_id: &str, sha256: &str) -> Result<Response> {
    if let Some(refusal) = refuse(&req, env, swarm_id, sha256).await? {
        return Ok(refusal);
    }
    let bucket = env.bucket(BUCKET_BINDING)?;
    let key = key(swarm_id, sha256);
    let missing = || {
        error_response(
            ErrorCode::NotFound,
            "no module with this SHA-256 is stored for this swarm",
        )
    };
    if req.method() == Method::Head {
        return match bucket.head(key).await? {
            Some(object) => Ok(Response::empty()?
                .with_status(200)
                .with_headers(module_headers(object.size())?)),
            None => missing(),
        };
    }
    let Some(object) = bucket.get(key).execute().await? else {
        return missing();
    };
    let Some(body) = object.body() else {
        return missing();
    };
    let bytes = body.bytes().await?;
    Ok(Response::from_bytes(bytes)?
        .with_status(200)
        .with_headers(module_headers(object.size())?))
}

fn module_headers(size: u64) -> Result<worker::Headers> {
    let headers = worker::Headers::new();
    headers.set("content-type", "application/wasm")?;
    headers.set("content-length", &size.to_string())?;
    // Named by its content: it never changes.
    headers.set("cache-control", "private, max-age=31536000, immutable")?;
    Ok(headers)
}

/// The answer that refuses the request, or `None` when the name is well formed and the
/// bearer key is the swarm's owner key (asked of the swarm's object).
async fn refuse(
    req: &Request,
    env: &Env,
    swarm_id: &str,
    sha256: &str,
) -> Result<Option<Response>> {
    if is_sha256(sha256, &()).is_err() {
        return error_response(
            ErrorCode::NotFound,
            "modules are named by their SHA-256 in 64 lowercase hex digits",
        )
        .map(Some);
    }
    // A device reads the running job's module with one of its leases' tickets.
    let lease = req
        .headers()
        .get("authorization")?
        .is_some_and(|value| value.starts_with("Lease "));
    if lease && req.method() != Method::Put {
        return Ok(
            match crate::outputs::vouched(req, env, swarm_id, None).await? {
                Ok(vouched) if vouched.module == sha256 => None,
                Ok(_) => Some(error_response(
                    ErrorCode::Forbidden,
                    "the ticket is for a lease of another module",
                )?),
                Err(refusal) => Some(refusal),
            },
        );
    }
    not_owner(req, env, swarm_id).await
}

/// The answer that refuses the request unless its bearer key is the swarm's owner key (asked
/// of the swarm's object, `/authorize`).
pub(crate) async fn not_owner(
    req: &Request,
    env: &Env,
    swarm_id: &str,
) -> Result<Option<Response>> {
    let headers = worker::Headers::new();
    headers.set("authorization", &format!("Bearer {}", bearer(req)))?;
    let answer = crate::outputs::ask_with(
        env,
        swarm_id,
        Method::Get,
        "https://swarm/authorize",
        None,
        headers,
    )
    .await?;
    Ok((answer.status_code() != 204).then_some(answer))
}
