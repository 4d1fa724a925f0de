//! A workload job's results read back over HTTP, and the lines they must hold, computed with
//! the native runner.

use std::time::Duration;

use anyhow::{ensure, Context, Result};

/// Where a swarm's results are read from: its coordinator's base URL, its id and the owner
/// key.
pub struct ResultsOf {
    pub base: String,
    pub swarm_id: String,
    pub owner_key: String,
}

/// Every item line of a job's results from item `from` on, asking again from the closing
/// line's `next` until every item is written (each answer ends after its share of
/// subrequests); the number of answers it took.
pub fn all_results(swarm: &ResultsOf, job_id: &str, from: u64) -> Result<(Vec<String>, usize)> {
    let (mut items, mut answers, mut next) = (Vec::new(), 0, from);
    loop {
        answers += 1;
        ensure!(answers < 1_000, "no end after 1,000 answers");
        let mut closing = None;
        for line in results(swarm, job_id, next)? {
            let value: serde_json::Value = serde_json::from_str(&line)?;
            if value.get("item").is_some() {
                ensure!(closing.is_none(), "a line after the closing line: {line}");
                items.push(line);
            } else {
                closing = Some(value);
            }
        }
        let closing = closing.context("an answer without its closing line")?;
        next = closing["next"].as_u64().context("no next")?;
        ensure!(
            next == from + items.len() as u64,
            "{closing} after {} items",
            items.len()
        );
        if next == closing["items"].as_u64().context("no items")? {
            return Ok((items, answers));
        }
        ensure!(closing["state"] != "cancelled", "{closing}");
    }
}

/// The results stream of a job from item `from` on; its lines as they arrive.
pub fn results(swarm: &ResultsOf, job_id: &str, from: u64) -> Result<impl Iterator<Item = String>> {
    use std::io::BufRead;
    // An answer waiting for items sends nothing for up to about 40 s (docs/PROTOCOL.md): the
    // usual 10 s timeout of the test client would cut it.
    let resp = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build()
        .get(&format!(
            "{}/api/swarms/{}/jobs/{job_id}/results?from={from}",
            swarm.base, swarm.swarm_id
        ))
        .set("authorization", &format!("Bearer {}", swarm.owner_key))
        .call()
        .context("opening the results")?;
    ensure!(
        resp.content_type() == "application/x-ndjson",
        "{}",
        resp.content_type()
    );
    Ok(std::io::BufReader::new(resp.into_reader())
        .lines()
        .map_while(std::result::Result::ok))
}

/// The line the results stream must have for item `item` with input `input`, computed with
/// the native runner: the output's base64 (and JSON when it is JSON), or the failure's kind
/// (and a module error's message).
pub fn expected_line(
    runner: &workload::native::Runner,
    compiled: &workload::native::Compiled,
    item: u64,
    input: u64,
    limit: Duration,
) -> serde_json::Value {
    use base64::Engine as _;
    match runner.run(compiled, &input.to_le_bytes(), limit) {
        workload::Outcome::Output(bytes) => {
            let output = base64::engine::general_purpose::STANDARD.encode(&bytes);
            match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(json) => {
                    serde_json::json!({"item": item, "input": input, "output": output, "json": json})
                }
                Err(_) => serde_json::json!({"item": item, "input": input, "output": output}),
            }
        }
        workload::Outcome::Failed(failure) => {
            let message = match failure.kind {
                workload::FailureKind::ModuleError => failure.message,
                _ => String::new(),
            };
            serde_json::json!({"item": item, "input": input,
                "error": {"kind": failure.kind.name(), "message": message}})
        }
    }
}
