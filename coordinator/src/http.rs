//! HTTP helpers shared by the Worker and the Durable Objects: JSON answers, the one mapping
//! from wire error codes to HTTP statuses, capped body reads, the owner's bearer key, and the
//! Origin rules (refusal and CORS).

use futures::{Stream, StreamExt};
use serde::Serialize;
use shared_protocol::{decode, ErrorCode, HttpError, Limits, Validated, WireMessage};
use swarm_core::Refusal;
use worker::js_sys::{Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys::ReadableStreamDefaultReader;
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

/// Reads a request body of at most `limits.max_message_bytes`. One declared longer by its
/// `Content-Length` is refused before any of it is read; one that turns out longer as it
/// streams in (chunked, or a lying header) is refused at the chunk that passes the cap: nothing
/// past the cap is kept, what follows is read and dropped up to [`DRAIN_BYTES`], and then the
/// stream is cancelled through its reader. (A body left half read and merely dropped made
/// workerd hold the next request to the same swarm for 15 s.)
pub async fn read_body(
    req: &mut Request,
    limits: &Limits,
) -> std::result::Result<Vec<u8>, Result<Response>> {
    let cap = limits.max_message_bytes;
    let too_large = || error_response(ErrorCode::TooLarge, "request body too large");
    let unreadable = || error_response(ErrorCode::Malformed, "unreadable request body");
    let declared = req
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > u64::try_from(cap).unwrap_or(u64::MAX)) {
        return Err(too_large());
    }
    // A request without a body (a bodiless POST) reads as empty.
    let Some(stream) = req.inner().body() else {
        return Ok(Vec::new());
    };
    let reader: ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let chunks = futures::stream::unfold(&reader, |reader| async move {
        read_chunk(reader)
            .await
            .transpose()
            .map(|chunk| (chunk, reader))
    });
    let result = collect_capped(chunks, cap, DRAIN_BYTES).await;
    if result.is_err() {
        // Whatever is left is not wanted: tell the runtime to stop reading it.
        let _ = JsFuture::from(reader.cancel()).await;
    }
    match result {
        Ok(body) => Ok(body),
        Err(BodyError::TooLarge) => Err(too_large()),
        Err(BodyError::Unreadable(_)) => Err(unreadable()),
    }
}

/// The next chunk of a body through its JavaScript reader: `None` at its end.
async fn read_chunk(
    reader: &ReadableStreamDefaultReader,
) -> std::result::Result<Option<Vec<u8>>, JsValue> {
    let result = JsFuture::from(reader.read()).await?;
    let done = Reflect::get(&result, &JsValue::from_str("done"))?;
    if done.as_bool().unwrap_or(true) {
        return Ok(None);
    }
    let value = Reflect::get(&result, &JsValue::from_str("value"))?;
    Ok(Some(Uint8Array::new(&value).to_vec()))
}

/// Why [`collect_capped`] stopped short.
#[derive(Debug, PartialEq, Eq)]
enum BodyError<E> {
    /// The chunks add up to more than the cap.
    TooLarge,
    /// The stream failed.
    Unreadable(E),
}

/// How much of an over-long body is read (and dropped) before its stream is cancelled.
pub const DRAIN_BYTES: usize = 1 << 20;

/// Collects `chunks` while their total stays within `cap` bytes. Past the cap it keeps
/// nothing: it reads on (dropping each chunk) until the stream ends or `drain` bytes in all
/// were read, and answers [`BodyError::TooLarge`]. At most `cap` bytes are kept, besides the
/// one chunk in hand.
async fn collect_capped<S, E>(
    chunks: S,
    cap: usize,
    drain: usize,
) -> std::result::Result<Vec<u8>, BodyError<E>>
where
    S: Stream<Item = std::result::Result<Vec<u8>, E>>,
{
    let mut chunks = std::pin::pin!(chunks);
    let mut body = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(BodyError::Unreadable)?;
        if chunk.len() > cap.saturating_sub(body.len()) {
            let mut read = body.len().saturating_add(chunk.len());
            drop(body);
            while read < drain {
                match chunks.next().await {
                    Some(Ok(more)) => read = read.saturating_add(more.len()),
                    _ => break,
                }
            }
            return Err(BodyError::TooLarge);
        }
        if body.is_empty() {
            body = chunk;
        } else {
            body.extend_from_slice(&chunk);
        }
    }
    Ok(body)
}

/// Reads and validates a JSON body through the protocol's one decode entry; a refusal comes
/// back as the HTTP answer to return.
pub async fn decode_body<T: WireMessage>(
    req: &mut Request,
) -> std::result::Result<Validated<T>, Result<Response>> {
    let limits = Limits::default();
    let body = read_body(req, &limits).await?;
    decode::<T>(&body, &limits).map_err(|err| error_response(err.code(), &err.to_string()))
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
/// They go on a copy of the headers: those of a response forwarded from a Durable Object are
/// immutable (setting them threw, and every cross-origin API call was a 500).
pub fn with_cors(resp: Response, origin: &Origin) -> Result<Response> {
    if let Origin::Allowed(origin) = origin {
        let headers = resp.headers().clone();
        headers.set("access-control-allow-origin", origin)?;
        headers.set(
            "access-control-allow-headers",
            "authorization, content-type",
        )?;
        headers.set(
            "access-control-allow-methods",
            "GET, HEAD, POST, PUT, OPTIONS",
        )?;
        headers.set("access-control-expose-headers", "retry-after")?;
        headers.set("vary", "origin")?;
        return Ok(resp.with_headers(headers));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::stream;
    use std::cell::Cell;

    /// Chunks of these sizes, counting how many were read.
    fn chunks<'a>(
        sizes: &'a [usize],
        read: &'a Cell<usize>,
    ) -> impl Stream<Item = std::result::Result<Vec<u8>, String>> + 'a {
        stream::iter(sizes).map(move |&size| {
            read.set(read.get() + 1);
            Ok(vec![7; size])
        })
    }

    #[test]
    fn a_body_within_the_cap_is_read_whole() {
        let read = Cell::new(0);
        let body = block_on(collect_capped(chunks(&[4, 0, 6], &read), 10, 100)).unwrap();
        assert_eq!(body, vec![7; 10]);
        assert_eq!(read.get(), 3);
        let empty = block_on(collect_capped(chunks(&[], &read), 10, 100)).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn past_the_cap_nothing_is_kept_and_reading_stops_at_the_drain_limit() {
        let read = Cell::new(0);
        // 32 MiB in 64 KiB chunks against a 16 KiB cap: refused, and no more than the 1 MiB
        // drain limit is read.
        let sizes = vec![64 * 1024; 512];
        let err = block_on(collect_capped(
            chunks(&sizes, &read),
            16 * 1024,
            DRAIN_BYTES,
        ))
        .unwrap_err();
        assert_eq!(err, BodyError::TooLarge);
        assert_eq!(read.get(), 16, "1 MiB read, the other 31 MiB never");

        let read = Cell::new(0);
        let err = block_on(collect_capped(chunks(&[6, 4, 1, 100, 5], &read), 10, 0)).unwrap_err();
        assert_eq!(err, BodyError::TooLarge);
        assert_eq!(
            read.get(),
            3,
            "one byte over is over; without a drain, nothing more is read"
        );

        let read = Cell::new(0);
        let err = block_on(collect_capped(chunks(&[6, 5, 3, 3], &read), 10, 100)).unwrap_err();
        assert_eq!(err, BodyError::TooLarge);
        assert_eq!(read.get(), 4, "a short rest is read to its end");
    }

    #[test]
    fn a_failing_stream_is_unreadable() {
        let failing = stream::iter([Ok(vec![1, 2]), Err("reset"), Ok(vec![3])]);
        assert_eq!(
            block_on(collect_capped(failing, 10, 100)),
            Err(BodyError::Unreadable("reset"))
        );
    }
}
