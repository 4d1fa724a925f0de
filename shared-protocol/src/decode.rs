//! The single entry for inbound bytes: size cap, then serde, then garde.
//!
//! Nothing outside this module constructs a [`Validated`], so a function that takes one can rely
//! on every field having passed its rule.

use std::fmt;
use std::ops::Deref;

use garde::Validate;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::http::{CreateSwarmRequest, ResolveCodeRequest};
use crate::messages::OwnerCommand;
use crate::messages::{ErrorCode, ToCoordinator};

/// Size limits applied before any parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted message or request body, in bytes.
    pub max_message_bytes: usize,
    /// Largest accepted message of a bulk type ([`WireMessage::BULK_TYPES`]: a chunk result
    /// carrying pixels), in bytes.
    pub max_bulk_bytes: usize,
}

impl Default for Limits {
    /// 16 KiB: far above any legitimate message of this protocol version except a chunk
    /// result, far below the platform's 1 MiB WebSocket limit. 256 KiB for chunk results: a
    /// Mandelbrot chunk of [`crate::MAX_CHUNK_PIXELS`] pixels is 175 KiB of base64.
    fn default() -> Self {
        Self {
            max_message_bytes: 16 * 1024,
            max_bulk_bytes: 256 * 1024,
        }
    }
}

/// A message type that can arrive from outside, with the `type` tags it accepts.
pub trait WireMessage: DeserializeOwned + Validate<Context = ()> {
    /// The accepted values of the `type` field; empty for bodies without one.
    const TYPES: &'static [&'static str];
    /// The types that may be up to [`Limits::max_bulk_bytes`] long.
    const BULK_TYPES: &'static [&'static str] = &[];
}

impl WireMessage for ToCoordinator {
    const TYPES: &'static [&'static str] = &[
        "hello",
        "heartbeat",
        "chunk_result",
        "chunk_results",
        "set_lend",
        "owner",
    ];
    const BULK_TYPES: &'static [&'static str] = &["chunk_result", "chunk_results"];
}

impl WireMessage for OwnerCommand {
    const TYPES: &'static [&'static str] = &[];
}

impl WireMessage for ResolveCodeRequest {
    const TYPES: &'static [&'static str] = &[];
}

impl WireMessage for CreateSwarmRequest {
    const TYPES: &'static [&'static str] = &[];
}

/// A value that passed [`decode`].
#[derive(Debug, Clone, PartialEq)]
pub struct Validated<T>(T);

impl<T> Validated<T> {
    /// Gives up the guarantee and returns the plain value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Validated<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Why inbound bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input is longer than [`Limits::max_message_bytes`].
    TooLarge { size: usize, limit: usize },
    /// The input is not JSON or not the shape of the expected message.
    Malformed(String),
    /// The input's `type` is not one of the expected message's tags.
    UnknownType(String),
    /// The input parsed but a field broke its validation rule.
    Invalid(String),
}

impl DecodeError {
    /// The wire error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge { .. } => ErrorCode::TooLarge,
            DecodeError::Malformed(_) => ErrorCode::Malformed,
            DecodeError::UnknownType(_) => ErrorCode::UnknownType,
            DecodeError::Invalid(_) => ErrorCode::Invalid,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge { size, limit } => {
                write!(
                    f,
                    "message of {size} bytes exceeds the limit of {limit} bytes"
                )
            }
            DecodeError::Malformed(why) => write!(f, "malformed message: {why}"),
            DecodeError::UnknownType(kind) => write!(f, "unknown message type '{kind}'"),
            DecodeError::Invalid(why) => write!(f, "invalid message: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Only the `type` tag, to tell an unknown type from a malformed known one.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
}

/// Decodes and validates inbound bytes. The size is checked before anything is parsed (for a
/// message between the two limits, only its `type` is read first).
pub fn decode<T: WireMessage>(bytes: &[u8], limits: &Limits) -> Result<Validated<T>, DecodeError> {
    let too_large = |limit| DecodeError::TooLarge {
        size: bytes.len(),
        limit,
    };
    if bytes.len() > limits.max_message_bytes {
        if bytes.len() > limits.max_bulk_bytes.max(limits.max_message_bytes) {
            return Err(too_large(limits.max_bulk_bytes));
        }
        let bulk = serde_json::from_slice::<Envelope>(bytes)
            .is_ok_and(|envelope| T::BULK_TYPES.contains(&envelope.kind.as_ref()));
        if !bulk {
            return Err(too_large(limits.max_message_bytes));
        }
    }
    let value: T = serde_json::from_slice(bytes).map_err(|err| classify::<T>(bytes, err))?;
    value
        .validate()
        .map_err(|report| DecodeError::Invalid(one_line(&report.to_string())))?;
    Ok(Validated(value))
}

/// The most bytes of an unknown `type` tag that an error echoes back.
const MAX_ECHOED_TYPE_BYTES: usize = 64;

/// The most bytes of error text that a [`DecodeError`] carries.
const MAX_ERROR_TEXT_BYTES: usize = 300;

fn classify<T: WireMessage>(bytes: &[u8], err: serde_json::Error) -> DecodeError {
    if !T::TYPES.is_empty() {
        if let Ok(envelope) = serde_json::from_slice::<Envelope>(bytes) {
            if !T::TYPES.contains(&envelope.kind.as_ref()) {
                let mut kind = envelope.kind.into_owned();
                truncate_at_char_boundary(&mut kind, MAX_ECHOED_TYPE_BYTES);
                return DecodeError::UnknownType(kind);
            }
        }
    }
    DecodeError::Malformed(one_line(&err.to_string()))
}

/// `text` on one line (runs of whitespace become one space), at most [`MAX_ERROR_TEXT_BYTES`]
/// long. Error texts echo parts of the input (an unknown field or variant name), so they are
/// client-chosen and may hold any characters.
fn one_line(text: &str) -> String {
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    truncate_at_char_boundary(&mut line, MAX_ERROR_TEXT_BYTES);
    line
}

/// Shortens `text` to at most `max_bytes` bytes, dropping a character that would be cut in two
/// rather than splitting it (`String::truncate` panics on a cut inside a character).
fn truncate_at_char_boundary(text: &mut String, max_bytes: usize) {
    if text.len() <= max_bytes {
        return;
    }
    // A character is at most 4 bytes, so a boundary is at most 3 bytes back; 0 always is one.
    let cut = (0..=max_bytes)
        .rev()
        .find(|&at| text.is_char_boundary(at))
        .unwrap_or(0);
    text.truncate(cut);
}

/// Encodes an outbound message as JSON text.
// Serialising these types cannot fail: every map key is a string and no type has a fallible
// Serialize impl (serde_json writes non-finite floats as null rather than failing).
#[allow(clippy::expect_used)]
pub fn encode<T: Serialize>(message: &T) -> String {
    serde_json::to_string(message).expect("protocol types always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::*;
    use crate::PROTOCOL_VERSION;

    const LIMITS: Limits = Limits {
        max_message_bytes: 1024,
        max_bulk_bytes: 4096,
    };

    fn device_hello(name: &str, cores: u16) -> ToCoordinator {
        ToCoordinator::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            role: HelloRole::Device {
                name: name.to_owned(),
                capabilities: Capabilities {
                    cores,
                    memory_mb: Some(8192),
                    gpu: false,
                    agent: AgentClass::BrowserDesktop,
                    workloads: false,
                },
                credential: None,
                invite: None,
            },
        })
    }

    fn decode_str(text: &str) -> Result<Validated<ToCoordinator>, DecodeError> {
        decode::<ToCoordinator>(text.as_bytes(), &LIMITS)
    }

    #[test]
    fn hello_and_heartbeat_round_trip() {
        for msg in [
            device_hello("laptop", 8),
            ToCoordinator::Heartbeat { seen: None },
            ToCoordinator::Hello(Hello {
                protocol: PROTOCOL_VERSION,
                role: HelloRole::Dashboard {
                    owner_key: Some("k".repeat(43)),
                },
            }),
        ] {
            let text = encode(&msg);
            assert_eq!(decode_str(&text).unwrap().into_inner(), msg, "{text}");
        }
    }

    #[test]
    fn wire_shape_is_the_documented_one() {
        assert_eq!(
            encode(&ToCoordinator::Heartbeat { seen: None }),
            r#"{"type":"heartbeat"}"#
        );
        let text = encode(&device_hello("a", 2));
        assert_eq!(
            text,
            r#"{"type":"hello","protocol":5,"role":{"kind":"device","name":"a","capabilities":{"cores":2,"memory_mb":8192,"gpu":false,"agent":"browser_desktop"},"credential":null,"invite":null}}"#
        );
        let ack = encode::<ToClient>(&ToClient::HeartbeatAck {
            server_time_ms: Some(5),
        });
        assert_eq!(ack, r#"{"type":"heartbeat_ack","server_time_ms":5}"#);
        let committed = encode::<ToClient>(&ToClient::Committed {
            lease_ids: vec![4294967297, 7],
        });
        assert_eq!(
            committed,
            r#"{"type":"committed","lease_ids":[4294967297,7]}"#
        );
        // A result sent the first time has no ticket; one sent again carries it.
        let result = |ticket: Option<&str>| {
            encode(&ToCoordinator::ChunkResult {
                lease_id: 9,
                result: crate::WorkResult::PrimeCount { count: 4 },
                compute_ms: 10,
                ticket: ticket.map(str::to_owned),
            })
        };
        assert_eq!(
            result(None),
            r#"{"type":"chunk_result","lease_id":9,"result":{"kind":"prime_count","count":4},"compute_ms":10}"#
        );
        assert_eq!(
            result(Some("T")),
            r#"{"type":"chunk_result","lease_id":9,"result":{"kind":"prime_count","count":4},"compute_ms":10,"ticket":"T"}"#
        );
        // Protocol 5: results and leases in frames, each entry with a lone message's fields.
        let answer = |lease_id| ChunkAnswer {
            lease_id,
            result: crate::WorkResult::PrimeCount { count: 4 },
            compute_ms: 10,
            ticket: Some("T".into()),
        };
        assert_eq!(
            encode(&ToCoordinator::ChunkResults {
                results: vec![answer(9), answer(10)]
            }),
            r#"{"type":"chunk_results","results":[{"lease_id":9,"result":{"kind":"prime_count","count":4},"compute_ms":10,"ticket":"T"},{"lease_id":10,"result":{"kind":"prime_count","count":4},"compute_ms":10,"ticket":"T"}]}"#
        );
        let leases = encode::<ToClient>(&ToClient::Leases {
            leases: vec![LeaseOffer {
                lease_id: 9,
                job_id: "j".into(),
                work: crate::Work::PrimeCount { lo: 2, hi: 5 },
                deadline_ms: 70,
                ticket: Some("T".into()),
            }],
        });
        assert_eq!(
            leases,
            r#"{"type":"leases","leases":[{"lease_id":9,"job_id":"j","work":{"kind":"prime_count","lo":2,"hi":5},"deadline_ms":70,"ticket":"T"}]}"#
        );
    }

    #[test]
    fn a_frame_of_results_holds_one_to_the_limit_each_checked_as_alone() {
        let answer = |ticket: &str| {
            format!(
                r#"{{"lease_id":9,"result":{{"kind":"prime_count","count":4}},"compute_ms":10,"ticket":"{ticket}"}}"#
            )
        };
        let frame = |entries: Vec<String>| {
            format!(
                r#"{{"type":"chunk_results","results":[{}]}}"#,
                entries.join(",")
            )
        };
        let limits = Limits {
            max_message_bytes: 1024,
            max_bulk_bytes: 64 * 1024,
        };
        let decode_frame =
            |text: &str| decode::<ToCoordinator>(text.as_bytes(), &limits).map(|v| v.into_inner());
        let full = frame(vec![answer("T"); crate::MAX_RESULTS_PER_FRAME]);
        assert!(
            full.len() > limits.max_message_bytes,
            "a frame may use the bulk limit"
        );
        assert!(matches!(
            decode_frame(&full),
            Ok(ToCoordinator::ChunkResults { results }) if results.len() == crate::MAX_RESULTS_PER_FRAME
        ));
        for bad in [
            frame(vec![]),
            frame(vec![answer("T"); crate::MAX_RESULTS_PER_FRAME + 1]),
            // One entry breaking a rule a lone result has (a ticket of 65 characters).
            frame(vec![answer("T"), answer(&"T".repeat(65))]),
        ] {
            assert!(
                matches!(decode_frame(&bad), Err(DecodeError::Invalid(_))),
                "{}",
                &bad[..bad.len().min(120)]
            );
        }
        assert!(matches!(
            decode_frame(r#"{"type":"chunk_results","results":[{"lease_id":9}]}"#),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn outbound_messages_round_trip() {
        let msgs = [
            ToClient::Error {
                code: ErrorCode::BadCredential,
                message: "no".into(),
                request: None,
                retry_after_ms: None,
            },
            ToClient::Error {
                code: ErrorCode::RateLimited,
                message: "slow down".into(),
                request: Some(7),
                retry_after_ms: Some(1500),
            },
            ToClient::OwnerResult {
                request: 3,
                result: OwnerReply::InviteCreated {
                    invite: InviteView {
                        invite_id: "i".into(),
                        created_ms: 1,
                        expires_ms: 2,
                        max_uses: Some(3),
                        uses: 0,
                        revoked: false,
                    },
                    token: "t".into(),
                    code: "c".into(),
                },
            },
            ToClient::Welcome {
                protocol: 2,
                swarm_id: "s".into(),
                swarm_name: "n".into(),
                role: WelcomeRole::Device {
                    device_id: "d".into(),
                    credential: None,
                },
                heartbeat_interval_ms: 10_000,
                offline_after_ms: 60_000,
            },
            ToClient::Snapshot(SwarmSnapshot {
                swarm_id: "s".into(),
                swarm_name: "n".into(),
                now_ms: 1,
                seq: 2,
                device_total: 0,
                online: 0,
                run_state: RunState::Running,
                throttle_percent: 100,
                jobs: vec![],
                devices: vec![],
                log: vec![LogEntry {
                    at_ms: 1,
                    level: LogLevel::Security,
                    text: "x".into(),
                }],
                counters: Counters::default(),
            }),
        ];
        for msg in msgs {
            let text = encode(&msg);
            assert_eq!(serde_json::from_str::<ToClient>(&text).unwrap(), msg);
        }
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let big = format!(
            "{{\"type\":\"heartbeat\",\"pad\":\"{}\"}}",
            "x".repeat(2000)
        );
        let err = decode_str(&big).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooLarge {
                size: big.len(),
                limit: 1024
            }
        );
        assert_eq!(err.code(), ErrorCode::TooLarge);
    }

    #[test]
    fn only_chunk_results_may_use_the_bulk_limit() {
        let result = |pad: usize| {
            format!(
                r#"{{"type":"chunk_result","lease_id":1,"result":{{"kind":"prime_count","count":{}}},"compute_ms":1}}"#,
                "1".repeat(pad)
            )
        };
        // Between the limits: a chunk result is parsed (here it fails on its number, not its
        // size); any other type is refused for its size.
        let err = decode_str(&result(2000)).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Malformed, "{err}");
        let other = format!(
            "{{\"type\":\"heartbeat\",\"pad\":\"{}\"}}",
            "x".repeat(2000)
        );
        assert_eq!(
            decode_str(&other).unwrap_err(),
            DecodeError::TooLarge {
                size: other.len(),
                limit: 1024
            }
        );
        let huge = result(5000);
        assert_eq!(
            decode_str(&huge).unwrap_err(),
            DecodeError::TooLarge {
                size: huge.len(),
                limit: 4096
            }
        );
    }

    #[test]
    fn bad_inputs_get_their_codes() {
        let cases: &[(&str, ErrorCode)] = &[
            ("", ErrorCode::Malformed),
            ("not json", ErrorCode::Malformed),
            ("[]", ErrorCode::Malformed),
            ("{}", ErrorCode::Malformed),
            (r#"{"type":"launch_missiles"}"#, ErrorCode::UnknownType),
            (r#"{"type":"heartbeat","extra":1}"#, ErrorCode::Malformed),
            (r#"{"type":"hello","protocol":2}"#, ErrorCode::Malformed),
            (
                r#"{"type":"hello","protocol":2,"role":{"kind":"device","name":"","capabilities":{"cores":2,"memory_mb":null,"gpu":false,"agent":"native"},"credential":null,"invite":null}}"#,
                ErrorCode::Invalid,
            ),
            (
                r#"{"type":"hello","protocol":2,"role":{"kind":"device","name":"a","capabilities":{"cores":0,"memory_mb":null,"gpu":false,"agent":"native"},"credential":null,"invite":null}}"#,
                ErrorCode::Invalid,
            ),
            (
                r#"{"type":"hello","protocol":2,"role":{"kind":"device","name":"a","capabilities":{"cores":70000,"memory_mb":null,"gpu":false,"agent":"native"},"credential":null,"invite":null}}"#,
                ErrorCode::Malformed,
            ),
            (
                r#"{"type":"hello","protocol":2,"role":{"kind":"device","name":"a","capabilities":{"cores":2,"memory_mb":null,"gpu":false,"agent":"native"},"credential":{"device_id":"XYZ","secret":"short"},"invite":null}}"#,
                ErrorCode::Invalid,
            ),
            (
                r#"{"type":"hello","protocol":2,"role":{"kind":"dashboard","owner_key":"bad key"}}"#,
                ErrorCode::Invalid,
            ),
            (
                r#"{"type":"hello","protocol":2,"role":{"kind":"admin"}}"#,
                ErrorCode::Malformed,
            ),
        ];
        for (input, code) in cases {
            let err = decode_str(input).expect_err(input);
            assert_eq!(err.code(), *code, "{input}: {err}");
        }
    }

    #[test]
    fn error_text_is_one_short_line() {
        let err = decode_str(&format!("{{\"type\":\"{}\"}}", "z".repeat(500))).unwrap_err();
        let DecodeError::UnknownType(kind) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(kind.len(), MAX_ECHOED_TYPE_BYTES);
        assert!(!err.to_string().contains('\n'));
    }

    /// Characters of every UTF-8 length above one byte: 2 (é), 3 (€) and 4 (𝄞) bytes.
    const WIDE_CHARS: [char; 3] = ['é', '€', '𝄞'];

    /// The longest run of whole characters at the start of `text` that fits in `max_bytes`:
    /// what a cut at a character boundary keeps, counted character by character.
    fn whole_chars_within(text: &str, max_bytes: usize) -> &str {
        let mut end = 0;
        for c in text.chars() {
            if end + c.len_utf8() > max_bytes {
                break;
            }
            end += c.len_utf8();
        }
        &text[..end]
    }

    /// Every start, in bytes, that puts a character of `width` bytes on byte `limit - 1`,
    /// `limit` or `limit + 1`, plus one start just before and one just after those.
    fn starts_around(limit: usize, width: usize) -> std::ops::RangeInclusive<usize> {
        limit - width - 1..=limit + 2
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        for wide in WIDE_CHARS {
            for limit in [0, 1, 5, 64] {
                for start in starts_around(limit.max(wide.len_utf8() + 1), wide.len_utf8()) {
                    for tail in ["", "bcd"] {
                        let text = format!("{}{wide}{tail}", "a".repeat(start));
                        let mut cut = text.clone();
                        truncate_at_char_boundary(&mut cut, limit);
                        assert_eq!(cut, whole_chars_within(&text, limit), "{text:?} to {limit}");
                    }
                }
            }
        }
        let mut only_wide = "𝄞𝄞".to_owned();
        truncate_at_char_boundary(&mut only_wide, 3);
        assert_eq!(only_wide, "");
    }

    #[test]
    fn long_unknown_type_is_cut_between_characters() {
        // The frame from the security report: the cut at 64 bytes fell inside the `é`.
        let frame = format!(r#"{{"type":"{}é"}}"#, "a".repeat(63));
        assert_eq!(
            decode_str(&frame).unwrap_err(),
            DecodeError::UnknownType("a".repeat(63))
        );
        let limit = MAX_ECHOED_TYPE_BYTES;
        for wide in WIDE_CHARS {
            for start in starts_around(limit, wide.len_utf8()) {
                for tail in ["", "bcd"] {
                    let kind = format!("{}{wide}{tail}", "a".repeat(start));
                    let err = decode_str(&format!(r#"{{"type":"{kind}"}}"#)).unwrap_err();
                    let expected = whole_chars_within(&kind, limit).to_owned();
                    assert_eq!(
                        err,
                        DecodeError::UnknownType(expected),
                        "{wide} at byte {start}"
                    );
                }
            }
        }
    }

    /// Builds inputs whose serde error echoes a client-chosen name, puts a wide character at
    /// every byte of the error line around [`MAX_ERROR_TEXT_BYTES`], and checks that the
    /// line is cut between characters.
    fn check_echoed_name_is_cut_between_characters(input_with: impl Fn(&str) -> String) {
        let limit = MAX_ERROR_TEXT_BYTES;
        // Where the name starts in the error line, found with an ASCII name.
        let probe = "x".repeat(limit);
        let Err(DecodeError::Malformed(line)) = decode_str(&input_with(&probe)) else {
            panic!("{} is not malformed", input_with(&probe))
        };
        let name_at = line.find("xxxx").expect("the error echoes the name");
        for wide in WIDE_CHARS {
            for start in starts_around(limit, wide.len_utf8()) {
                let name = format!("{}{wide}{}", "a".repeat(start - name_at), "b".repeat(20));
                let input = input_with(&name);
                let serde_text = serde_json::from_str::<ToCoordinator>(&input)
                    .unwrap_err()
                    .to_string();
                assert!(serde_text.contains(&name), "{serde_text}");
                let full_line = serde_text.split_whitespace().collect::<Vec<_>>().join(" ");
                let err = decode_str(&input).unwrap_err();
                let expected = whole_chars_within(&full_line, limit).to_owned();
                assert_eq!(
                    err,
                    DecodeError::Malformed(expected),
                    "{wide} at byte {start}"
                );
            }
        }
    }

    #[test]
    fn long_unknown_variant_in_error_text_is_cut_between_characters() {
        check_echoed_name_is_cut_between_characters(|name| {
            format!(r#"{{"type":"hello","protocol":2,"role":{{"kind":"{name}"}}}}"#)
        });
    }

    #[test]
    fn long_unknown_field_in_error_text_is_cut_between_characters() {
        check_echoed_name_is_cut_between_characters(|name| {
            format!(r#"{{"type":"heartbeat","{name}":1}}"#)
        });
        check_echoed_name_is_cut_between_characters(|name| {
            format!(r#"{{"type":"set_lend","cores":1,"{name}":true}}"#)
        });
    }

    #[test]
    fn long_string_of_the_wrong_type_in_error_text_is_cut_between_characters() {
        check_echoed_name_is_cut_between_characters(|name| {
            format!(r#"{{"type":"hello","protocol":"{name}","role":{{"kind":"dashboard"}}}}"#)
        });
    }

    #[test]
    fn http_bodies_validate() {
        let ok = decode::<CreateSwarmRequest>(br#"{"name":"lab"}"#, &LIMITS).unwrap();
        assert_eq!(ok.name, "lab");
        let err = decode::<CreateSwarmRequest>(br#"{"name":""}"#, &LIMITS).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Invalid);
        let err = decode::<CreateSwarmRequest>(br#"{"name":"a","x":1}"#, &LIMITS).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Malformed);
    }
}
