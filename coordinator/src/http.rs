//! HTTP helpers shared by the Worker and the Durable Objects: JSON answers, the one mapping
//! from wire error codes to HTTP statuses, capped body reads, the owner's bearer key, and the
//! Origin rules (refusal and CORS).

use serde::Serialize;
use shared_protocol::{decode, ErrorCode, HttpError, Limits, Validated, WireMessage};
use swarm_core::Refusal;
use worker::{Request, Response, Result};

/// The HTTP status for each wire error code. The only place this mapping lives.
pub fn status_for(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::TooLarge => 413,
        ErrorCode::Malformed
        | ErrorCode::UnknownType
        | ErrorCode::Invalid
        | ErrorCode::ProtocolMismatch
        | ErrorCode::HelloRequired
        | ErrorCode::AlreadyIntroduced => 400,
        ErrorCode::BadResult => 422,
        ErrorCode::BadCredential | ErrorCode::BadOwnerKey | ErrorCode::InviteRequired => 401,
        ErrorCode::Forbidden => 403,
        ErrorCode::SwarmNotFound
        | ErrorCode::NotFound
        | ErrorCode::InviteInvalid
        | ErrorCode::DeviceNotFound => 404,
        ErrorCode::InviteExpired | ErrorCode::InviteRevoked | ErrorCode::InviteExhausted => 410,
        ErrorCode::RateLimited => 429,
        ErrorCode::Internal => 500,
    }
}

pub fn json_response<T: Serialize>(status: u16, body: &T) -> Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}

pub fn error_response(code: ErrorCode, message: &str) -> Result<Response> {
    refusal_response(&Refusal::new(code, message))
}

/// A refusal as an HTTP answer; rate limits carry `Retry-After` (whole seconds).
pub fn refusal_response(refusal: &Refusal) -> Result<Response> {
    let body = HttpError {
        code: refusal.code,
        message: refusal.message.clone(),
        retry_after_ms: refusal.retry_after_ms,
    };
    let mut resp = json_response(status_for(refusal.code), &body)?;
    if let Some(ms) = refusal.retry_after_ms {
        resp.headers_mut()
            .set("retry-after", &ms.div_ceil(1000).to_string())?;
    }
    Ok(resp)
}

/// Reads a request body, refusing it before reading when its declared length is over the cap.
pub async fn read_body(
    req: &mut Request,
    limits: &Limits,
) -> std::result::Result<Vec<u8>, Result<Response>> {
    let declared = req
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limits.max_message_bytes) {
        return Err(error_response(
            ErrorCode::TooLarge,
            "request body too large",
        ));
    }
    req.bytes()
        .await
        .map_err(|_| error_response(ErrorCode::Malformed, "unreadable request body"))
}

/// Reads and validates a JSON body through the protocol's one decode entry; a refusal comes
/// back as the HTTP answer to return.
pub async fn decode_body<T: WireMessage>(
    req: &mut Request,
) -> std::result::Result<T, Result<Response>> {
    let limits = Limits::default();
    let body = read_body(req, &limits).await?;
    decode::<T>(&body, &limits)
        .map(Validated::into_inner)
        .map_err(|err| error_response(err.code(), &err.to_string()))
}

/// The owner key from `Authorization: Bearer <key>`, or "" when absent.
pub fn bearer(req: &Request) -> String {
    req.headers()
        .get("authorization")
        .ok()
        .flatten()
        .and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned))
        .unwrap_or_default()
}

/// Where a request comes from, as far as the Origin rules care.
pub enum Origin {
    /// No `Origin` header: not a browser (native agents, curl).
    None,
    /// The coordinator's own origin.
    Own,
    /// A listed origin (for example the Cloudflare Pages site of the client).
    Allowed(String),
    /// Anything else: refused.
    Foreign(String),
}

pub fn origin_of(req: &Request, allowed: &[String]) -> Origin {
    let Some(origin) = req.headers().get("origin").ok().flatten() else {
        return Origin::None;
    };
    let own = req
        .url()
        .map(|url| url.origin().ascii_serialization())
        .unwrap_or_default();
    if origin == own {
        Origin::Own
    } else if allowed.iter().any(|a| a == &origin) {
        Origin::Allowed(origin)
    } else {
        Origin::Foreign(origin)
    }
}

/// Adds CORS headers for a listed cross origin; same-origin and non-browser answers need none.
pub fn with_cors(mut resp: Response, origin: &Origin) -> Result<Response> {
    if let Origin::Allowed(origin) = origin {
        let headers = resp.headers_mut();
        headers.set("access-control-allow-origin", origin)?;
        headers.set(
            "access-control-allow-headers",
            "authorization, content-type",
        )?;
        headers.set("access-control-allow-methods", "GET, POST, OPTIONS")?;
        headers.set("access-control-expose-headers", "retry-after")?;
        headers.set("vary", "origin")?;
    }
    Ok(resp)
}
