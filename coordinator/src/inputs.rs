//! Input sets of workload jobs (docs/WORKLOADS.md, "Input sets"), stored in R2 under the swarm
//! and served to devices a lease at a time. Like modules, all of it runs in the stateless
//! Worker; the swarm's object only says whose key or ticket it is.
//!
//! - `PUT /api/swarms/{id}/inputs/{sha256}` (owner) — a page of the input set: records of at
//!   most 64 KiB each, at most 8 MiB in all. Stored with its *index* (the offset of every
//!   record), answered with `{sha256, items}` (201 stored, 200 stored already).
//! - `GET /api/swarms/{id}/inputs` (a lease's ticket) — the records of the lease's items, cut
//!   out of the pages with their indexes: two ranged reads per page the lease touches.

use shared_protocol::{is_sha256, ErrorCode, InputPage, MAX_INPUT_PAGE_BYTES};
use worker::{Env, Range, Request, Response, Result};
use workload::inputs;

use crate::http::{error_response, json_response};
use crate::modules::{not_owner, read_named, BUCKET_BINDING};

/// Where a swarm's input page is kept in the bucket, and its index.
fn key(swarm_id: &str, sha256: &str) -> String {
    format!("swarms/{swarm_id}/inputs/{sha256}")
}

fn index_key(swarm_id: &str, sha256: &str) -> String {
    format!("swarms/{swarm_id}/inputs/{sha256}.index")
}

/// Stores a page of an input set under its name.
pub async fn put(mut req: Request, env: &Env, swarm_id: &str, sha256: &str) -> Result<Response> {
    if is_sha256(sha256, &()).is_err() {
        return error_response(
            ErrorCode::NotFound,
            "input pages are named by their SHA-256 in 64 lowercase hex digits",
        );
    }
    if let Some(refusal) = not_owner(&req, env, swarm_id).await? {
        return Ok(refusal);
    }
    let page = match read_named(&mut req, MAX_INPUT_PAGE_BYTES, sha256).await {
        Ok(page) => page,
        Err(resp) => return resp,
    };
    let index = match inputs::index(&page) {
        Ok(index) => index,
        Err(why) => {
            return error_response(
                ErrorCode::Invalid,
                &format!("not a page of input records: {why}"),
            )
        }
    };
    let stored = InputPage {
        sha256: sha256.to_owned(),
        items: (index.len() / 4).saturating_sub(1) as u64,
    };
    let bucket = env.bucket(BUCKET_BINDING)?;
    // Content-addressed: a page stored already is the same page. Its index is written last,
    // so that a page whose index exists is whole.
    if bucket.head(index_key(swarm_id, sha256)).await?.is_some() {
        return json_response(200, &stored);
    }
    bucket.put(key(swarm_id, sha256), page).execute().await?;
    bucket
        .put(index_key(swarm_id, sha256), index)
        .execute()
        .await?;
    json_response(201, &stored)
}

/// The records of the items of the lease whose ticket comes with the request.
pub async fn of_lease(req: Request, env: &Env, swarm_id: &str) -> Result<Response> {
    let lease = match crate::outputs::vouched(&req, env, swarm_id, None).await? {
        Ok(lease) => lease,
        Err(refusal) => return Ok(refusal),
    };
    if lease.inputs.is_empty() {
        return error_response(
            ErrorCode::NotFound,
            "the running job runs over a range of integers, not an input set",
        );
    }
    let bucket = env.bucket(BUCKET_BINDING)?;
    let (from, to) = (
        lease.first_item,
        lease.first_item.saturating_add(lease.items),
    );
    let mut records = Vec::new();
    let mut first = 0u64;
    for page in &lease.inputs {
        let end = first.saturating_add(page.items);
        let (lo, hi) = (from.max(first), to.min(end));
        if lo < hi {
            let wanted = inputs::index_bytes(lo.saturating_sub(first), hi.saturating_sub(first));
            let index = read(&bucket, index_key(swarm_id, &page.sha256), wanted).await?;
            let Some(span) = index.as_deref().and_then(inputs::span) else {
                return missing(page);
            };
            let Some(bytes) = read(&bucket, key(swarm_id, &page.sha256), span).await? else {
                return missing(page);
            };
            records.extend_from_slice(&bytes);
        }
        first = end;
    }
    let headers = worker::Headers::new();
    headers.set("content-type", "application/octet-stream")?;
    headers.set("cache-control", "no-store")?;
    Ok(Response::from_bytes(records)?.with_headers(headers))
}

/// Bytes `range` of a stored object, or `None` when it is not stored.
async fn read(
    bucket: &worker::Bucket,
    key: String,
    range: std::ops::Range<u64>,
) -> Result<Option<Vec<u8>>> {
    let Some(object) = bucket
        .get(key)
        .range(Range::OffsetWithLength {
            offset: range.start,
            length: range.end.saturating_sub(range.start),
        })
        .execute()
        .await?
    else {
        return Ok(None);
    };
    match object.body() {
        Some(body) => Ok(Some(body.bytes().await?)),
        None => Ok(None),
    }
}

fn missing(page: &InputPage) -> Result<Response> {
    error_response(
        ErrorCode::NotFound,
        &format!(
            "the input page {} is not stored for this swarm: upload it (PUT …/inputs/{})",
            page.sha256, page.sha256
        ),
    )
}
