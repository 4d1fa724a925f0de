//! Tag-first decoding of the internally tagged enums that only the coordinator writes.
//!
//! serde's derive reads an internally tagged enum (`{"type": "lease", …}`) without knowing
//! where in the object the tag is, so it first copies the whole object into a private tree
//! and then decodes the variant a second time from that tree. Every such enum then carries two
//! decoders of each variant plus the tree's own, which in a browser bundle is most of its
//! decoding code. The coordinator writes the tag as the first key of every object it sends
//! (docs/PROTOCOL.md), so its readers here take the tag first and decode the rest of the object
//! straight from the input. An object whose first key is not the tag is refused, with an error
//! that says so; what the coordinator reads from clients (whose key order is theirs) keeps
//! serde's order-free decoding.
//!
//! [`tag_first!`] implements [`TagFirst`] for a plain enum of struct variants, from its wire
//! names and its fields; [`ToClient`](crate::ToClient), generic, implements it by hand.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, value::MapAccessDeserializer, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// An internally tagged enum that can be read with its tag first.
pub trait TagFirst<'de>: Sized {
    /// The tag's key.
    const TAG: &'static str;
    /// The tag's values, for the error naming an unknown one.
    const VARIANTS: &'static [&'static str];
    /// The variant that `tag` names, from the rest of its object.
    fn variant<A: MapAccess<'de>>(tag: &str, rest: A) -> Result<Self, A::Error>;
}

/// Reads a `T` whose tag is its object's first key (usable as `deserialize_with`).
pub fn deserialize<'de, T: TagFirst<'de>, D: Deserializer<'de>>(input: D) -> Result<T, D::Error> {
    input.deserialize_map(TagFirstVisitor(PhantomData))
}

/// Reads `T` from the rest of an object whose tag was read.
pub fn rest<'de, T: Deserialize<'de>, A: MapAccess<'de>>(rest: A) -> Result<T, A::Error> {
    T::deserialize(MapAccessDeserializer::new(rest))
}

/// A `T` read tag first: for an enum whose own `Deserialize` stays order-free because the
/// coordinator reads it from clients, where a client reads what only the coordinator wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct TagFirstOf<T>(pub T);

impl<'de, T: TagFirst<'de>> Deserialize<'de> for TagFirstOf<T> {
    fn deserialize<D: Deserializer<'de>>(input: D) -> Result<Self, D::Error> {
        deserialize(input).map(TagFirstOf)
    }
}

struct TagFirstVisitor<T>(PhantomData<T>);

impl<'de, T: TagFirst<'de>> Visitor<'de> for TagFirstVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an object whose first key is `{}`", T::TAG)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        match map.next_key_seed(KeyIs(T::TAG))? {
            Some(true) => {}
            Some(false) => {
                return Err(de::Error::custom(format_args!(
                    "`{}` must be the object's first key",
                    T::TAG
                )))
            }
            None => return Err(de::Error::missing_field(T::TAG)),
        }
        let tag: String = map.next_value()?;
        T::variant(&tag, map)
    }
}

/// Reads a key and tells whether it is the expected one.
struct KeyIs(&'static str);

impl<'de> DeserializeSeed<'de> for KeyIs {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, input: D) -> Result<bool, D::Error> {
        input.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyIs {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

/// Implements [`TagFirst`] for an enum of struct variants; with `deserialize` first, its
/// `Deserialize` too. Each variant is listed with its wire name and every field, with the serde
/// attributes its decoding needs: a field missing from the list, or one the variant does not
/// have, does not compile, and the round-trip tests catch a wrong wire name.
macro_rules! tag_first {
    (deserialize $name:ident, $($rest:tt)*) => {
        $crate::tagged::tag_first!($name, $($rest)*);

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(input: D) -> Result<Self, D::Error> {
                $crate::tagged::deserialize(input)
            }
        }
    };
    ($name:ident, tag $tag:literal {
        $($wire:literal => $variant:ident {
            $($(#[$attr:meta])* $field:ident: $ty:ty),* $(,)?
        }),* $(,)?
    }) => {
        impl<'de> $crate::tagged::TagFirst<'de> for $name {
            const TAG: &'static str = $tag;
            const VARIANTS: &'static [&'static str] = &[$($wire),*];

            fn variant<A: serde::de::MapAccess<'de>>(
                tag: &str,
                rest: A,
            ) -> Result<Self, A::Error> {
                $(if tag == $wire {
                    #[derive(serde::Deserialize)]
                    #[serde(deny_unknown_fields)]
                    struct Fields {
                        $($(#[$attr])* $field: $ty),*
                    }
                    let Fields { $($field),* } = $crate::tagged::rest(rest)?;
                    return Ok($name::$variant { $($field),* });
                })*
                Err(serde::de::Error::unknown_variant(tag, Self::VARIANTS))
            }
        }
    };
}

pub(crate) use tag_first;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fmt::Debug;

    use serde::Serialize;

    use super::{TagFirst, TagFirstOf};
    use crate::*;

    /// Written by serde's derive (as the coordinator writes it) and read back.
    fn reads_back<T>(values: Vec<T>)
    where
        T: Serialize + for<'de> TagFirst<'de> + PartialEq + Debug,
    {
        for value in values {
            let text = serde_json::to_string(&value).unwrap();
            let TagFirstOf(read) = serde_json::from_str::<TagFirstOf<T>>(&text)
                .unwrap_or_else(|err| panic!("{text}: {err}"));
            assert_eq!(read, value, "{text}");
        }
    }

    fn job_view(spec: JobSpec, result: JobResult) -> JobView {
        JobView {
            job_id: "j".into(),
            spec,
            state: JobState::Running,
            done_units: 1,
            total_units: 2,
            units_per_second: 0.5,
            eta_ms: None,
            created_ms: 1,
            started_ms: Some(2),
            finished_ms: None,
            result,
            verify_units: 0,
            unverified_units: 0,
            chunks_done: 1,
        }
    }

    fn job_specs() -> Vec<JobSpec> {
        vec![
            JobSpec::PrimeCount { lo: 0, hi: 10 },
            JobSpec::Mandelbrot {
                center_re: -0.5,
                center_im: 0.25,
                scale: 3.0,
                width: 64,
                height: 48,
                max_iter: 500,
            },
            JobSpec::Sha256Search {
                prefix: "p".into(),
                difficulty_bits: 12,
                lo: 0,
                hi: 99,
                want: 3,
            },
            JobSpec::Workload {
                module: "ab".repeat(32),
                start: 5,
                step: 2,
                items: 10,
                time_limit_ms: 1_000,
                inputs: None,
            },
            JobSpec::Workload {
                module: "cd".repeat(32),
                start: 0,
                step: 0,
                items: 7,
                time_limit_ms: 1_000,
                inputs: Some(vec![InputPage {
                    sha256: "ef".repeat(32),
                    items: 7,
                }]),
            },
        ]
    }

    fn job_results() -> Vec<JobResult> {
        vec![
            JobResult::PrimeCount { count: 4 },
            JobResult::Mandelbrot { inside_pixels: 9 },
            JobResult::Sha256Search { nonces: vec![1, 2] },
            JobResult::Workload { failed: 1 },
        ]
    }

    fn works() -> Vec<Work> {
        vec![
            Work::PrimeCount { lo: 0, hi: 10 },
            Work::Mandelbrot {
                center_re: -0.5,
                center_im: 0.0,
                scale: 3.0,
                width: 64,
                height: 48,
                max_iter: 500,
                first_row: 8,
                rows: 4,
            },
            Work::Sha256Search {
                prefix: "p".into(),
                difficulty_bits: 12,
                lo: 0,
                hi: 99,
                max_found: 3,
            },
            Work::Workload {
                module: "ab".repeat(32),
                start: 5,
                step: 2,
                first_item: 0,
                items: 10,
                time_limit_ms: 1_000,
                inputs: false,
            },
            Work::Workload {
                module: "ab".repeat(32),
                start: 0,
                step: 0,
                first_item: 3,
                items: 4,
                time_limit_ms: 1_000,
                inputs: true,
            },
        ]
    }

    fn snapshot() -> SwarmSnapshot {
        SwarmSnapshot {
            swarm_id: "s".into(),
            swarm_name: "Lab".into(),
            now_ms: 5,
            seq: 1,
            device_total: 0,
            online: 0,
            run_state: RunState::Paused,
            throttle_percent: 50,
            jobs: job_specs()
                .into_iter()
                .zip(job_results().into_iter().cycle())
                .map(|(spec, result)| job_view(spec, result))
                .collect(),
            devices: Vec::new(),
            log: Vec::new(),
            counters: Counters::default(),
        }
    }

    fn to_clients() -> Vec<ToClient> {
        let lease = LeaseOffer {
            lease_id: 3,
            job_id: "j".into(),
            work: Work::PrimeCount { lo: 0, hi: 10 },
            deadline_ms: 60_000,
            ticket: Some("t".into()),
        };
        let mut messages = vec![
            ToClient::Welcome {
                protocol: PROTOCOL_VERSION,
                swarm_id: "s".into(),
                swarm_name: "Lab".into(),
                role: WelcomeRole::Device {
                    device_id: "d".into(),
                    credential: Some(DeviceCredential {
                        device_id: "d".into(),
                        secret: "x".into(),
                    }),
                },
                heartbeat_interval_ms: 10_000,
                offline_after_ms: 30_000,
            },
            ToClient::Welcome {
                protocol: PROTOCOL_VERSION,
                swarm_id: "s".into(),
                swarm_name: "Lab".into(),
                role: WelcomeRole::Dashboard { owner: true },
                heartbeat_interval_ms: 10_000,
                offline_after_ms: 30_000,
            },
            ToClient::HeartbeatAck {
                server_time_ms: None,
            },
            ToClient::HeartbeatAck {
                server_time_ms: Some(9),
            },
            ToClient::Snapshot(snapshot()),
            ToClient::SnapshotDelta(Box::new(SnapshotDelta {
                seq: 2,
                now_ms: 7,
                device_total: 0,
                online: 0,
                run_state: RunState::Stopped,
                throttle_percent: 10,
                jobs: Some(snapshot().jobs),
                devices: Vec::new(),
                seen_since_ms: 0,
                seen: BTreeMap::new(),
                removed: Vec::new(),
                log: Vec::new(),
                log_kept: 10,
                counters: Counters::default(),
            })),
            ToClient::Share(DeviceShare {
                workers: 2,
                duty_percent: 50,
                lent_cores: 4,
                throttle_percent: 25,
                run_state: RunState::Running,
                enabled: true,
            }),
            lease.clone().into_lease(),
            ToClient::Leases {
                leases: vec![
                    lease.clone(),
                    LeaseOffer {
                        ticket: None,
                        ..lease.clone()
                    },
                ],
            },
            ToClient::CancelLease { lease_id: 3 },
            ToClient::Committed {
                lease_ids: vec![3, 4],
            },
            ToClient::Error {
                code: ErrorCode::RateLimited,
                message: "slow down".into(),
                request: Some(2),
                retry_after_ms: Some(1_000),
            },
            ToClient::Error {
                code: ErrorCode::Malformed,
                message: "no".into(),
                request: None,
                retry_after_ms: None,
            },
        ];
        let invite = InviteView {
            invite_id: "i".into(),
            created_ms: 1,
            expires_ms: 2,
            max_uses: Some(3),
            uses: 0,
            revoked: false,
        };
        let replies = [
            OwnerReply::InviteCreated {
                invite: invite.clone(),
                token: "t".into(),
                code: "c".into(),
            },
            OwnerReply::Invites {
                invites: vec![invite],
            },
            OwnerReply::Audit {
                entries: vec![LogEntry {
                    at_ms: 1,
                    level: LogLevel::Security,
                    text: "x".into(),
                }],
            },
            OwnerReply::JobSubmitted { job_id: "j".into() },
            OwnerReply::Done {},
        ];
        messages.extend(
            replies
                .into_iter()
                .zip(1..)
                .map(|(result, request)| ToClient::OwnerResult { request, result }),
        );
        messages.extend(works().into_iter().map(|work| {
            LeaseOffer {
                work,
                ..lease.clone()
            }
            .into_lease()
        }));
        messages
    }

    #[test]
    fn every_variant_of_every_tag_first_enum_reads_back_as_the_coordinator_writes_it() {
        let messages = to_clients();
        let tags: std::collections::BTreeSet<String> = messages
            .iter()
            .map(|m| {
                serde_json::to_value(m).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            tags.len(),
            <ToClient as TagFirst>::VARIANTS.len(),
            "every variant is exercised: {tags:?}"
        );
        reads_back(messages);
        reads_back(works());
        reads_back(job_specs());
        reads_back(job_results());
        reads_back(vec![
            WorkResult::PrimeCount { count: 3 },
            WorkResult::Mandelbrot {
                counts: encode_counts(&[1, 2]),
            },
            WorkResult::Sha256Search { nonces: vec![5] },
            WorkResult::Workload {
                outputs: "ab".repeat(32),
                failed: 1,
                unsettled: 1,
                receipt: "r".into(),
            },
        ]);
    }

    #[test]
    fn a_tag_that_is_not_the_first_key_is_refused_and_says_so() {
        let err = serde_json::from_str::<ToClient>(r#"{"lease_id":3,"type":"cancel_lease"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`type` must be the object's first key"),
            "{err}"
        );
        let err = serde_json::from_str::<Work>(r#"{"lo":0,"hi":1,"kind":"prime_count"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`kind` must be the object's first key"),
            "{err}"
        );
        // What the coordinator reads from people and devices keeps any order.
        let spec: JobSpec =
            serde_json::from_str(r#"{"lo":0,"hi":1,"kind":"prime_count"}"#).unwrap();
        assert_eq!(spec, JobSpec::PrimeCount { lo: 0, hi: 1 });
        let result: WorkResult =
            serde_json::from_str(r#"{"count":1,"kind":"prime_count"}"#).unwrap();
        assert_eq!(result, WorkResult::PrimeCount { count: 1 });
    }

    #[test]
    fn unknown_tags_missing_tags_unknown_and_missing_fields_are_refused() {
        for (text, says) in [
            (r#"{"type":"lease_all"}"#, "unknown variant `lease_all`"),
            (r#"{}"#, "missing field `type`"),
            (r#"[]"#, "an object whose first key is `type`"),
            (r#"{"type":7}"#, "invalid type: integer `7`"),
            (
                r#"{"type":"cancel_lease","lease_id":3,"extra":1}"#,
                "unknown field `extra`",
            ),
            (r#"{"type":"cancel_lease"}"#, "missing field `lease_id`"),
            (
                r#"{"type":"cancel_lease","lease_id":3,"type":"committed"}"#,
                "unknown field `type`",
            ),
            (r#"{"type":"snapshot","swarm_id":"s"}"#, "missing field"),
        ] {
            let err = serde_json::from_str::<ToClient>(text)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
        let err = serde_json::from_str::<Work>(r#"{"kind":"prime_count","lo":0}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `hi`"), "{err}");
    }

    #[test]
    fn fields_the_coordinator_leaves_out_read_as_their_defaults() {
        let ack: ToClient = serde_json::from_str(r#"{"type":"heartbeat_ack"}"#).unwrap();
        assert_eq!(
            ack,
            ToClient::HeartbeatAck {
                server_time_ms: None
            }
        );
        let role: WelcomeRole =
            serde_json::from_str(r#"{"kind":"device","device_id":"d"}"#).unwrap();
        assert_eq!(
            role,
            WelcomeRole::Device {
                device_id: "d".into(),
                credential: None
            }
        );
        let work: Work = serde_json::from_str(
            r#"{"kind":"workload","module":"m","start":1,"step":1,"first_item":0,"items":1,"time_limit_ms":5}"#,
        )
        .unwrap();
        assert!(matches!(work, Work::Workload { inputs: false, .. }));
    }
}
