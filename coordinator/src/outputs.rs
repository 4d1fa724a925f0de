//! Outputs of workload jobs (docs/WORKLOADS.md): uploaded by the device that ran a lease,
//! stored in R2, and streamed back to the owner in item order.
//!
//! - `PUT /api/swarms/{id}/outputs/{sha256}` — a lease's outputs file, with
//!   `Authorization: Lease <device id> <ticket>`. The swarm's object says what the ticket
//!   vouches for (`/lease`); here the file is checked against it (one record per item of the
//!   lease, each within the ABI's limits) and against its name, and stored under the job.
//! - `GET /api/swarms/{id}/jobs/{job_id}/results?from=K` — the owner's: NDJSON, one line per
//!   item from `K` on, in item order, waiting for items not settled yet; the last line says
//!   where to go on from (`{"next": …, "items": …, "state": …}`). An answer ends when every
//!   item is written, when the job ended, or when it has spent its share of the platform's
//!   subrequests ([`SUBREQUESTS`]); the client then asks again from `next`.
//!
//! Like module uploads this runs in the stateless Worker: the object is asked only what a
//! ticket vouches for and where the settled outputs are (`/outputs/{job_id}`).

use std::collections::VecDeque;

use base64::Engine as _;
use futures::stream;
use serde_json::{json, Value};
use shared_protocol::{is_id, is_sha256, ErrorCode, MAX_OUTPUTS_BYTES};
use swarm_core::{OutputsIndex, Vouched};
use worker::{Env, Method, Request, RequestInit, Response, Result};
use workload::{outputs, Failure, Outcome};

use crate::http::{error_response, json_response};
use crate::modules::{read_named, BUCKET_BINDING};
use crate::SWARM_BINDING;

/// How long the results stream waits before asking again for items not settled yet.
const POLL_MS: u64 = 1_000;

/// Subrequests (asks of the object, reads of R2) one answer of the results stream makes at
/// most: the platform allows a request 50 on its free plan, and the answer's own asks before
/// the stream starts take two.
const SUBREQUESTS: u32 = 40;

/// Where a job's outputs file is kept in the bucket.
fn key(swarm_id: &str, job_id: &str, sha256: &str) -> String {
    format!("swarms/{swarm_id}/jobs/{job_id}/outputs/{sha256}")
}

/// What the request's `Authorization: Lease <device id> <ticket>` vouches for, asked of the
/// swarm's object (with the receipt for the outputs file named `outputs.0` with `outputs.1`
/// unsettled items, when given); or the answer that refuses the request.
pub async fn vouched(
    req: &Request,
    env: &Env,
    swarm_id: &str,
    outputs: Option<(&str, u64)>,
) -> Result<std::result::Result<Vouched, Response>> {
    let header = req.headers().get("authorization")?.unwrap_or_default();
    let Some((device_id, ticket)) = header
        .strip_prefix("Lease ")
        .and_then(|rest| rest.split_once(' '))
    else {
        return error_response(
            ErrorCode::Forbidden,
            "a lease's ticket is required (Authorization: Lease <device id> <ticket>)",
        )
        .map(Err);
    };
    let body = serde_json::to_string(&json!({
        "device_id": device_id,
        "ticket": ticket,
        "outputs": outputs.map(|(name, _)| name),
        "unsettled": outputs.map_or(0, |(_, unsettled)| unsettled),
    }))?;
    let answer = ask(
        env,
        swarm_id,
        Method::Post,
        "https://swarm/lease",
        Some(&body),
    )
    .await?;
    if answer.status_code() != 200 {
        return Ok(Err(answer));
    }
    let mut answer = answer;
    Ok(Ok(answer.json::<Vouched>().await?))
}

/// Stores a lease's outputs file.
pub async fn put(mut req: Request, env: &Env, swarm_id: &str, sha256: &str) -> Result<Response> {
    if is_sha256(sha256, &()).is_err() {
        return error_response(
            ErrorCode::NotFound,
            "outputs files are named by their SHA-256 in 64 lowercase hex digits",
        );
    }
    // Asked before the body is read, so that nobody without a ticket makes it read 32 MiB.
    let lease = match vouched(&req, env, swarm_id, None).await? {
        Ok(lease) => lease,
        Err(refusal) => return Ok(refusal),
    };
    let body = match read_named(&mut req, MAX_OUTPUTS_BYTES, sha256).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let unsettled = match outputs::decode(&body, lease.items) {
        Ok(outcomes) => outputs::unsettled(&outcomes),
        Err(why) => {
            return error_response(
                ErrorCode::Invalid,
                &format!("not the outputs of this lease: {why}"),
            )
        }
    };
    // The receipt vouches for what the file shows: its name and its unsettled items.
    let lease = match vouched(&req, env, swarm_id, Some((sha256, unsettled))).await? {
        Ok(lease) => lease,
        Err(refusal) => return Ok(refusal),
    };
    let bucket = env.bucket(BUCKET_BINDING)?;
    let key = key(swarm_id, &lease.job_id, sha256);
    // Content-addressed: replicas that agree upload the same file, stored once.
    let answer = json!({ "sha256": sha256, "receipt": lease.receipt });
    if bucket.head(key.clone()).await?.is_some() {
        return json_response(200, &answer);
    }
    bucket.put(key, body).execute().await?;
    json_response(201, &answer)
}

/// The job's results from item `from` on, streamed as NDJSON.
pub async fn results(req: Request, env: &Env, swarm_id: &str, job_id: &str) -> Result<Response> {
    if is_id(job_id, &()).is_err() {
        return error_response(ErrorCode::NotFound, "no such job");
    }
    let from = match req
        .url()?
        .query_pairs()
        .find(|(name, _)| name == "from")
        .map(|(_, value)| value.parse::<u64>())
    {
        None => 0,
        Some(Ok(from)) => from,
        Some(Err(_)) => {
            return error_response(ErrorCode::Invalid, "from: an item index (a whole number)")
        }
    };
    if let Some(refusal) = crate::modules::not_owner(&req, env, swarm_id).await? {
        return Ok(refusal);
    }
    // The first answer is read before the stream starts, so that an unknown job or one of
    // another kind is an error status, not an empty stream.
    let first = match index(env, swarm_id, job_id, from).await? {
        Ok(index) => index,
        Err(refusal) => return Ok(refusal),
    };
    let reader = Reader {
        env: env.clone(),
        swarm_id: swarm_id.to_owned(),
        job_id: job_id.to_owned(),
        next: from,
        index: Some(first),
        lines: VecDeque::new(),
        spent: 0,
        closed: false,
    };
    let body = stream::try_unfold(reader, |mut reader| async move {
        let chunk = reader.next_chunk().await?;
        Ok::<_, worker::Error>(chunk.map(|chunk| (chunk, reader)))
    });
    let resp = Response::from_stream(body)?;
    let headers = worker::Headers::new();
    headers.set("content-type", "application/x-ndjson")?;
    headers.set("cache-control", "no-store")?;
    Ok(resp.with_headers(headers))
}

/// The state of one results stream.
struct Reader {
    env: Env,
    swarm_id: String,
    job_id: String,
    /// The next item to write.
    next: u64,
    /// An index read and not used yet.
    index: Option<OutputsIndex>,
    lines: VecDeque<Vec<u8>>,
    /// Subrequests made by the stream so far.
    spent: u32,
    /// The closing line was queued.
    closed: bool,
}

impl Reader {
    /// The next piece of the body, or `None` after the closing line.
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some(line) = self.lines.pop_front() {
                return Ok(Some(line));
            }
            if self.closed {
                return Ok(None);
            }
            let index = match self.index.take() {
                Some(index) => index,
                None => {
                    self.spent = self.spent.saturating_add(1);
                    match index(&self.env, &self.swarm_id, &self.job_id, self.next).await? {
                        Ok(index) => index,
                        Err(_) => return Ok(None),
                    }
                }
            };
            let out_of_budget = self.spent >= SUBREQUESTS;
            if self.next >= index.items
                || (index.parts.is_empty() && index.ended())
                || out_of_budget
            {
                self.close(&index)?;
                continue;
            }
            if index.parts.is_empty() {
                worker::Delay::from(std::time::Duration::from_millis(POLL_MS)).await;
                continue;
            }
            for (lo, hi, name) in &index.parts {
                if self.spent >= SUBREQUESTS {
                    break;
                }
                self.spent = self.spent.saturating_add(1);
                let outcomes = self.read(name, hi.saturating_sub(*lo)).await;
                for (i, item) in (*lo..*hi).enumerate() {
                    if item < self.next {
                        continue;
                    }
                    // A job over an input set (step 0) has no integer input to show.
                    let input = (index.step != 0)
                        .then(|| index.step.checked_mul(item))
                        .flatten()
                        .and_then(|n| n.checked_add(index.start));
                    let line = match &outcomes {
                        Ok(outcomes) => line(item, input, outcomes.get(i)),
                        Err(why) => without_absent_input(
                            json!({
                                "item": item,
                                "input": input,
                                "error": { "kind": "missing", "message": why },
                            }),
                            input,
                        ),
                    };
                    let mut bytes = serde_json::to_vec(&line)?;
                    bytes.push(b'\n');
                    self.lines.push_back(bytes);
                }
                self.next = self.next.max(*hi);
            }
        }
    }

    /// Queues the closing line: where to ask from next, of how many items, and the job's
    /// state.
    fn close(&mut self, index: &OutputsIndex) -> Result<()> {
        let mut line = serde_json::to_vec(&json!({
            "next": self.next,
            "items": index.items,
            "state": index.state,
        }))?;
        line.push(b'\n');
        self.lines.push_back(line);
        self.closed = true;
        Ok(())
    }

    /// The outcomes in a stored outputs file.
    async fn read(&self, name: &str, items: u64) -> std::result::Result<Vec<Outcome>, String> {
        let bucket = self.env.bucket(BUCKET_BINDING).map_err(|e| e.to_string())?;
        let object = bucket
            .get(key(&self.swarm_id, &self.job_id, name))
            .execute()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the outputs file was never uploaded")?;
        let bytes = object
            .body()
            .ok_or("the outputs file has no body")?
            .bytes()
            .await
            .map_err(|e| e.to_string())?;
        outputs::decode(&bytes, items)
    }
}

/// One item's line: its output in base64 (and as JSON when it is a JSON text), or its error;
/// `input` only for a job over a range.
fn line(item: u64, input: Option<u64>, outcome: Option<&Outcome>) -> Value {
    without_absent_input(item_line(item, input, outcome), input)
}

fn without_absent_input(mut line: Value, input: Option<u64>) -> Value {
    if input.is_none() {
        if let Some(fields) = line.as_object_mut() {
            fields.remove("input");
        }
    }
    line
}

fn item_line(item: u64, input: Option<u64>, outcome: Option<&Outcome>) -> Value {
    match outcome {
        Some(Outcome::Output(bytes)) => {
            let output = base64::engine::general_purpose::STANDARD.encode(bytes);
            match serde_json::from_slice::<Value>(bytes) {
                Ok(value) => {
                    json!({ "item": item, "input": input, "output": output, "json": value })
                }
                Err(_) => json!({ "item": item, "input": input, "output": output }),
            }
        }
        Some(Outcome::Failed(Failure { kind, message })) => json!({
            "item": item,
            "input": input,
            "error": { "kind": kind.name(), "message": message },
        }),
        None => json!({
            "item": item,
            "input": input,
            "error": { "kind": "missing", "message": "the outputs file lacks this item" },
        }),
    }
}

/// Where the job's settled outputs are from `from` on, or the object's refusal.
async fn index(
    env: &Env,
    swarm_id: &str,
    job_id: &str,
    from: u64,
) -> Result<std::result::Result<OutputsIndex, Response>> {
    let url = format!("https://swarm/outputs/{job_id}?from={from}");
    let mut answer = ask(env, swarm_id, Method::Get, &url, None).await?;
    if answer.status_code() != 200 {
        return Ok(Err(answer));
    }
    Ok(Ok(answer.json::<OutputsIndex>().await?))
}

async fn ask(
    env: &Env,
    swarm_id: &str,
    method: Method,
    url: &str,
    body: Option<&str>,
) -> Result<Response> {
    ask_with(env, swarm_id, method, url, body, worker::Headers::new()).await
}

/// A request to the swarm's object (its internal routes), answered.
pub(crate) async fn ask_with(
    env: &Env,
    swarm_id: &str,
    method: Method,
    url: &str,
    body: Option<&str>,
    headers: worker::Headers,
) -> Result<Response> {
    let mut init = RequestInit::new();
    init.with_method(method).with_headers(headers);
    if let Some(body) = body {
        init.with_body(Some(body.into()));
    }
    let request = Request::new_with_init(url, &init)?;
    env.durable_object(SWARM_BINDING)?
        .id_from_name(swarm_id)?
        .get_stub()?
        .fetch_with_request(request)
        .await
}
