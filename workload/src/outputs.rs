//! The outputs file of a lease: what a device uploads for the items it ran, and what the
//! coordinator stores and streams back in item order (docs/WORKLOADS.md, "Outputs file").
//!
//! One record per item, in item order: a tag byte, the payload's length as 4 little-endian
//! bytes, then the payload.
//!
//! - tag 0: the output's bytes (at most [`MAX_OUTPUT_BYTES`]);
//! - tag 1: a failure: its kind's name, and for `module_error` a 0 byte and the module's
//!   message (at most [`MAX_ERROR_BYTES`] of UTF-8). Engines word other failures differently,
//!   so only the kind is kept.
//!
//! The file holds exactly what replicas are compared by, so its SHA-256 is the lease's
//! digest: two devices that agree upload byte-identical files, stored once under that name.

use crate::module::{MAX_ERROR_BYTES, MAX_OUTPUT_BYTES};
use crate::outcome::{Failure, FailureKind, Outcome};

const OUTPUT: u8 = 0;
const FAILED: u8 = 1;
const HEADER_BYTES: usize = 5;

/// The outputs file of these outcomes, in their order.
pub fn encode(outcomes: &[Outcome]) -> Vec<u8> {
    let mut file = Vec::new();
    for outcome in outcomes {
        push(&mut file, outcome);
    }
    file
}

/// How many of these outcomes are failures that depend on the device (out of time or stack
/// there, or an engine failure): a result's `unsettled` count, which its upload's receipt
/// vouches for.
pub fn unsettled(outcomes: &[Outcome]) -> u64 {
    outcomes.iter().filter(|o| is_unsettled(o)).count() as u64
}

/// Whether an outcome is a failure that depends on the device.
pub fn is_unsettled(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Failed(failure) if failure.kind.depends_on_device())
}

/// Appends the record of one item's outcome to a file (or to an empty one: the record alone).
pub fn push(file: &mut Vec<u8>, outcome: &Outcome) {
    let failure;
    let (tag, payload) = match outcome {
        Outcome::Output(bytes) => (OUTPUT, bytes.as_slice()),
        Outcome::Failed(failed) => {
            failure = failure_payload(failed);
            (FAILED, failure.as_slice())
        }
    };
    file.push(tag);
    // Outputs are at most 256 KiB and failure payloads about 1 KiB.
    file.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    file.extend_from_slice(payload);
}

fn failure_payload(failure: &Failure) -> Vec<u8> {
    let mut payload = failure.kind.name().as_bytes().to_vec();
    if failure.kind == FailureKind::ModuleError {
        payload.push(0);
        let message = failure.message.as_bytes();
        payload.extend_from_slice(message.get(..MAX_ERROR_BYTES).unwrap_or(message));
    }
    payload
}

/// Reads an outputs file that must hold exactly `items` records, each within the ABI's
/// limits; says what is wrong with the first record that is not.
pub fn decode(file: &[u8], items: u64) -> Result<Vec<Outcome>, String> {
    let mut outcomes = Vec::new();
    let mut rest = file;
    while !rest.is_empty() {
        let index = outcomes.len();
        let (Some(&tag), Some(len)) = (rest.first(), rest.get(1..HEADER_BYTES)) else {
            return Err(format!("record {index} is cut off in its header"));
        };
        let len = u32::from_le_bytes(len.try_into().map_err(|_| "a header is cut off")?);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let Some(payload) = HEADER_BYTES
            .checked_add(len)
            .and_then(|end| rest.get(HEADER_BYTES..end))
        else {
            return Err(format!(
                "record {index} claims {len} bytes the file does not have"
            ));
        };
        outcomes.push(match tag {
            OUTPUT if len <= MAX_OUTPUT_BYTES => Outcome::Output(payload.to_vec()),
            OUTPUT => {
                return Err(format!(
                    "record {index} is an output of {len} bytes; the limit is {MAX_OUTPUT_BYTES}"
                ))
            }
            FAILED => Outcome::Failed(
                read_failure(payload).map_err(|why| format!("record {index}: {why}"))?,
            ),
            other => return Err(format!("record {index} has tag {other}; tags are 0 and 1")),
        });
        if outcomes.len() as u64 > items {
            return Err(format!(
                "the file holds more than the lease's {items} items"
            ));
        }
        rest = rest
            .get(HEADER_BYTES.saturating_add(len)..)
            .unwrap_or_default();
    }
    if outcomes.len() as u64 != items {
        return Err(format!(
            "the file holds {} items; the lease has {items}",
            outcomes.len()
        ));
    }
    Ok(outcomes)
}

fn read_failure(payload: &[u8]) -> Result<Failure, String> {
    let (name, message) = match payload.iter().position(|&b| b == 0) {
        Some(at) => (
            payload.get(..at).unwrap_or_default(),
            Some(payload.get(at.saturating_add(1)..).unwrap_or_default()),
        ),
        None => (payload, None),
    };
    let kind = FailureKind::ALL
        .into_iter()
        .find(|kind| kind.name().as_bytes() == name)
        .ok_or_else(|| format!("{:?} is not a failure kind", String::from_utf8_lossy(name)))?;
    match (kind, message) {
        (FailureKind::ModuleError, Some(message)) if message.len() <= MAX_ERROR_BYTES => {
            let message = std::str::from_utf8(message)
                .map_err(|_| "a module error's message is not UTF-8".to_owned())?;
            Ok(Failure::new(kind, message))
        }
        (FailureKind::ModuleError, Some(_)) => Err(format!(
            "a module error's message is over {MAX_ERROR_BYTES} bytes"
        )),
        (FailureKind::ModuleError, None) => Err("a module error without its message".into()),
        (_, Some(_)) => Err(format!("a {} failure carries a message", kind.name())),
        (_, None) => Ok(Failure::new(kind, "")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(kind: FailureKind, message: &str) -> Outcome {
        Outcome::Failed(Failure::new(kind, message))
    }

    #[test]
    fn a_file_reads_back_as_what_replicas_compare() {
        let outcomes = vec![
            Outcome::Output(b"3.14".to_vec()),
            Outcome::Output(Vec::new()),
            failed(FailureKind::ModuleError, "bad input ✗"),
            failed(FailureKind::Unreachable, "wasm trap: unreachable"),
            failed(FailureKind::TimeLimit, "ran past 200 ms"),
        ];
        let file = encode(&outcomes);
        let read = decode(&file, 5).unwrap();
        // Engine wordings are dropped; the module's own message is kept.
        assert_eq!(read.get(..3), outcomes.get(..3));
        assert_eq!(read.get(3), Some(&failed(FailureKind::Unreachable, "")));
        assert_eq!(read.get(4), Some(&failed(FailureKind::TimeLimit, "")));
        // A wording that differs between engines does not change the file.
        let other_engine = vec![
            outcomes[0].clone(),
            outcomes[1].clone(),
            outcomes[2].clone(),
            failed(FailureKind::Unreachable, "RuntimeError: unreachable"),
            failed(FailureKind::TimeLimit, "terminated"),
        ];
        assert_eq!(encode(&other_engine), file);
        assert_eq!(decode(&[], 0).unwrap(), Vec::new());
    }

    #[test]
    fn a_file_that_breaks_the_format_or_the_limits_is_refused_with_why() {
        let one = encode(&[Outcome::Output(b"x".to_vec())]);
        let record = |tag: u8, payload: &[u8]| {
            let mut file = vec![tag];
            file.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            file.extend_from_slice(payload);
            file
        };
        let mut too_large = vec![OUTPUT];
        too_large.extend_from_slice(&((MAX_OUTPUT_BYTES + 1) as u32).to_le_bytes());
        too_large.resize(HEADER_BYTES + MAX_OUTPUT_BYTES + 1, 7);
        let cases: Vec<(Vec<u8>, u64, &str)> = vec![
            (one.clone(), 2, "holds 1 items; the lease has 2"),
            (
                [one.clone(), one.clone()].concat(),
                1,
                "more than the lease's 1",
            ),
            (one[..3].to_vec(), 1, "cut off in its header"),
            (one[..5].to_vec(), 1, "claims 1 bytes"),
            (record(2, b"x"), 1, "tag 2"),
            (too_large, 1, "the limit is 262144"),
            (
                record(FAILED, b"melted"),
                1,
                "\"melted\" is not a failure kind",
            ),
            (record(FAILED, b"module_error"), 1, "without its message"),
            (record(FAILED, b"module_error\0\xff"), 1, "not UTF-8"),
            (
                record(
                    FAILED,
                    &[b"module_error\0".as_slice(), &[b'a'; MAX_ERROR_BYTES + 1]].concat(),
                ),
                1,
                "over 1024 bytes",
            ),
            (record(FAILED, b"unreachable\0why"), 1, "carries a message"),
        ];
        for (file, items, why) in cases {
            let err = decode(&file, items).unwrap_err();
            assert!(err.contains(why), "{err:?} should say {why:?}");
        }
    }
}
