//! HTTP helpers shared by the Worker and the Durable Object: JSON answers, the one mapping
//! from wire error codes to HTTP statuses, capped body reads, and the Origin check.

use serde::Serialize;
use shared_protocol::{ErrorCode, HttpError, Limits};
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
        ErrorCode::BadCredential | ErrorCode::BadOwnerKey => 401,
        ErrorCode::Forbidden => 403,
        ErrorCode::SwarmNotFound | ErrorCode::NotFound => 404,
        ErrorCode::RateLimited => 429,
        ErrorCode::Internal => 500,
    }
}

pub fn json_response<T: Serialize>(status: u16, body: &T) -> Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}

pub fn error_response(code: ErrorCode, message: &str) -> Result<Response> {
    json_response(
        status_for(code),
        &HttpError {
            code,
            message: message.to_owned(),
        },
    )
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

/// Allows a WebSocket upgrade without an Origin (native agents), from the request's own
/// origin, or from one listed in `ALLOWED_ORIGINS`.
pub fn check_origin(req: &Request, allowed: &[String]) -> std::result::Result<(), String> {
    let Some(origin) = req.headers().get("origin").ok().flatten() else {
        return Ok(());
    };
    let own = req
        .url()
        .map(|url| url.origin().ascii_serialization())
        .unwrap_or_default();
    if origin == own || allowed.iter().any(|a| a == &origin) {
        Ok(())
    } else {
        Err(format!("origin {origin} is not allowed"))
    }
}
