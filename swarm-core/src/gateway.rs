//! Gateway objects: how a swarm holds more sockets than one object should.
//!
//! The swarm's object holds up to [`crate::Config::sockets_per_gateway`] sockets itself. Past
//! that, each new socket is placed on a gateway object (`{swarm_id}:{k}`), which holds it,
//! answers its heartbeats by itself, and hands its events (opened, a frame, closed) to the
//! swarm's object in batches: one call carries every event that arrived while its last call
//! was under way. What the core says to those sockets (sends, closes, attachments) goes back
//! to the gateway the same way, in order. The core stays the one source of truth: a gateway
//! keeps nothing but its sockets and their attachments, so the core sees a gateway's socket
//! exactly as one of its own, under an id that names the gateway ([`ConnId::on_gateway`]).
//!
//! Placement fills the object, then gateway 0, then gateway 1, and so on, each up to the same
//! number of sockets; a gateway whose sockets closed is filled again first. Gateways hold no
//! device state, so a device gains nothing from returning to the same one, and filling in
//! order keeps every gateway that exists well used.

use serde::{Deserialize, Serialize};
use shared_protocol::close_code;

use crate::records::{SocketAttachment, StoreOp};
use crate::{ConnId, Millis, Output, SwarmCore};

/// A gateway socket's hibernation attachment: its swarm, gateway and id, beside the core's
/// session for it once the swarm's object has sent one. The platform caps an attachment at
/// 2,048 bytes; the largest fits (`the_largest_gateway_attachment_fits_the_platforms_cap`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewaySocket {
    pub swarm_id: String,
    pub gateway: u32,
    pub conn: ConnId,
    pub session: Option<SocketAttachment>,
}

/// Where the glue is to put a socket that is being opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The swarm's object accepts it itself.
    Here,
    /// Gateway object `k` of this swarm accepts it.
    Gateway(u32),
}

/// What happened on one of a gateway's sockets, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum GatewayEvent {
    /// The gateway accepted this socket from `source` (as [`SwarmCore::handle_connect`]).
    Open { conn: ConnId, source: String },
    /// A text frame arrived.
    Text { conn: ConnId, text: String },
    /// A binary frame arrived.
    Binary { conn: ConnId, bytes: Vec<u8> },
    /// The socket closed or failed.
    Close { conn: ConnId },
}

impl GatewayEvent {
    fn conn(&self) -> ConnId {
        match self {
            Self::Open { conn, .. }
            | Self::Text { conn, .. }
            | Self::Binary { conn, .. }
            | Self::Close { conn } => *conn,
        }
    }
}

/// One gateway's events since its last call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayBatch {
    pub gateway: u32,
    pub events: Vec<GatewayEvent>,
}

/// What a gateway is to do with one of its sockets: the socket [`Output`]s of the core, for a
/// socket the gateway holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "output", rename_all = "snake_case")]
pub enum GatewayOutput {
    Send {
        conn: ConnId,
        text: String,
    },
    Close {
        conn: ConnId,
        code: u16,
        reason: String,
    },
    Attach {
        conn: ConnId,
        attachment: SocketAttachment,
    },
}

impl GatewayOutput {
    /// The output as its gateway carries it out, with the gateway's index; `None` for an
    /// output that is not for a gateway's socket.
    pub fn of(output: &Output) -> Option<(u32, Self)> {
        match output {
            Output::Send { conn, text } => Some((
                conn.gateway()?,
                Self::Send {
                    conn: *conn,
                    text: text.to_string(),
                },
            )),
            Output::Close { conn, code, reason } => Some((
                conn.gateway()?,
                Self::Close {
                    conn: *conn,
                    code: *code,
                    reason: reason.clone(),
                },
            )),
            Output::Attach { conn, attachment } => Some((
                conn.gateway()?,
                Self::Attach {
                    conn: *conn,
                    attachment: attachment.clone(),
                },
            )),
            _ => None,
        }
    }
}

impl SwarmCore {
    /// Where to put a socket that is being opened (see the module docs). Opening a gateway
    /// for the first time is recorded in the swarm's record, so that a restarted object knows
    /// which gateways to ask for their sessions ([`crate::SwarmMeta::gateways`]).
    ///
    /// A gateway's count includes the sockets placed on it that it has not said are open yet
    /// (during a join storm, thousands are placed before the first opens), for at most the
    /// hello timeout in force (longer while the object is busy): one whose upgrade failed
    /// stops counting then.
    pub fn place_socket(&mut self, now: Millis) -> Placement {
        let per = self.config.sockets_per_gateway;
        let horizon = now.saturating_sub(self.hello_timeout());
        for placed in self.placing.values_mut() {
            while placed.front().is_some_and(|at| *at < horizon) {
                placed.pop_front();
            }
        }
        self.placing.retain(|_, placed| !placed.is_empty());
        let mut counts = self.sockets_per_place();
        for (k, placed) in &self.placing {
            let Ok(k) = usize::try_from(*k) else { continue };
            if counts.gateways.len() <= k {
                counts.gateways.resize(k.saturating_add(1), 0);
            }
            if let Some(n) = counts.gateways.get_mut(k) {
                *n = n.saturating_add(placed.len());
            }
        }
        if per == 0 || counts.here < per {
            return Placement::Here;
        }
        let free = counts.gateways.iter().position(|n| *n < per);
        let k = free
            .and_then(|k| u32::try_from(k).ok())
            .unwrap_or_else(|| u32::try_from(counts.gateways.len()).unwrap_or(u32::MAX))
            .min(ConnId::MAX_GATEWAYS.saturating_sub(1));
        if let Some(meta) = self.meta.as_mut().filter(|meta| meta.gateways <= k) {
            meta.gateways = k.saturating_add(1);
            let meta = meta.clone();
            self.persist(StoreOp::PutSwarm(meta));
        }
        self.placing.entry(k).or_default().push_back(now);
        Placement::Gateway(k)
    }

    /// Open sockets held by the object itself and by each gateway it has opened.
    pub fn sockets_per_place(&self) -> SocketCounts {
        let opened = self.meta.as_ref().map_or(0, |meta| meta.gateways);
        let mut gateways = vec![0usize; usize::try_from(opened).unwrap_or(0)];
        let mut here = 0usize;
        for conn in self.conns.keys() {
            match conn.gateway().and_then(|k| usize::try_from(k).ok()) {
                None => here = here.saturating_add(1),
                Some(k) => {
                    if gateways.len() <= k {
                        gateways.resize(k.saturating_add(1), 0);
                    }
                    if let Some(n) = gateways.get_mut(k) {
                        *n = n.saturating_add(1);
                    }
                }
            }
        }
        SocketCounts { here, gateways }
    }

    /// The gateways that hold sockets now: those to ask when the platform last answered their
    /// sockets' heartbeats.
    pub fn gateways_in_use(&self) -> Vec<u32> {
        (0u32..)
            .zip(self.sockets_per_place().gateways)
            .filter(|(_, n)| *n > 0)
            .map(|(k, _)| k)
            .collect()
    }

    /// A gateway's events since its last call, in order. An event for a socket of another
    /// gateway is ignored; a frame on a socket the core does not know (its session was lost
    /// when the object restarted and could not be had from the gateway) closes it, so that the
    /// client reconnects rather than waiting on a session nobody holds.
    pub fn handle_gateway_batch(&mut self, now: Millis, batch: GatewayBatch) {
        self.counters.gateway_calls = self.counters.gateway_calls.saturating_add(1);
        for event in batch.events {
            let conn = event.conn();
            if conn.gateway() != Some(batch.gateway) {
                continue;
            }
            match event {
                GatewayEvent::Open { conn, source } => {
                    if let Some(placed) = self.placing.get_mut(&batch.gateway) {
                        placed.pop_front();
                    }
                    self.handle_connect(now, conn, &source);
                }
                GatewayEvent::Text { conn, .. } | GatewayEvent::Binary { conn, .. }
                    if !self.conns.contains_key(&conn) =>
                {
                    // Received all the same, as a frame racing its socket's close is.
                    self.count_gateway_message();
                    self.counters.messages_in = self.counters.messages_in.saturating_add(1);
                    self.emit(Output::Close {
                        conn,
                        code: close_code::SESSION_LOST,
                        reason: "session lost".into(),
                    });
                }
                GatewayEvent::Text { conn, text } => {
                    self.count_gateway_message();
                    self.handle_message(now, conn, text.as_bytes());
                }
                GatewayEvent::Binary { conn, bytes } => {
                    self.count_gateway_message();
                    self.handle_message(now, conn, &bytes);
                }
                GatewayEvent::Close { conn } => self.handle_disconnect(now, conn),
            }
        }
    }
}

impl SwarmCore {
    fn count_gateway_message(&mut self) {
        self.counters.gateway_messages = self.counters.gateway_messages.saturating_add(1);
    }
}

/// Where a swarm's open sockets are ([`SwarmCore::sockets_per_place`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketCounts {
    /// Held by the swarm's object.
    pub here: usize,
    /// Held by gateway `k`, for every gateway opened so far.
    pub gateways: Vec<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, SwarmMeta};
    use shared_protocol::RunState;

    fn core(per: usize) -> SwarmCore {
        let mut core = SwarmCore::new(
            Config {
                sockets_per_gateway: per,
                ..Config::default()
            },
            [7; 32],
        );
        core.create(
            0,
            SwarmMeta {
                swarm_id: "s".into(),
                name: "s".into(),
                owner_key_hash: String::new(),
                created_ms: 0,
                run_state: RunState::Running,
                throttle_percent: 100,
                lease_key: String::new(),
                gateways: 0,
            },
        )
        .unwrap();
        while core.poll_output().is_some() {}
        core
    }

    /// Opens a socket wherever the core places it, as the glue would.
    fn open(core: &mut SwarmCore, local: &mut u32) -> (Placement, ConnId) {
        let placement = core.place_socket(0);
        *local += 1;
        let conn = match placement {
            Placement::Here => ConnId::direct(u64::from(*local)),
            Placement::Gateway(k) => ConnId::on_gateway(k, *local),
        };
        match placement {
            Placement::Here => core.handle_connect(0, conn, ""),
            Placement::Gateway(k) => core.handle_gateway_batch(
                0,
                GatewayBatch {
                    gateway: k,
                    events: vec![GatewayEvent::Open {
                        conn,
                        source: String::new(),
                    }],
                },
            ),
        }
        (placement, conn)
    }

    fn stored_gateways(core: &mut SwarmCore) -> Option<u32> {
        let mut last = None;
        while let Some(output) = core.poll_output() {
            if let Output::Persist(StoreOp::PutSwarm(meta)) = output {
                last = Some(meta.gateways);
            }
        }
        last
    }

    /// The largest session a device's socket can have — a pending benchmark, a lend, the most
    /// leases kept, every number at the largest a JavaScript number holds exactly (2^53 − 1;
    /// attachments are JavaScript values) — in a gateway's attachment, measured as JSON: the
    /// platform's structured clone of the same value is no larger (the same keys and strings,
    /// and a number takes at most 9 bytes there against 16 digits here).
    #[test]
    fn the_largest_gateway_attachment_fits_the_platforms_cap() {
        use crate::records::{DeviceLink, HeldLease, PendingBench, Session};
        const MAX: u64 = (1 << 53) - 1;
        let link = DeviceLink {
            bench: Some(PendingBench {
                lease_id: MAX,
                units: MAX,
                expected: MAX,
                sent_ms: MAX,
            }),
            lend: Some(u16::MAX),
            leases: vec![HeldLease(MAX, MAX, MAX, MAX, MAX); crate::MAX_ATTACHED_LEASES],
            lease_job: "f".repeat(8),
            acks: true,
            batches: true,
        };
        let largest = GatewaySocket {
            swarm_id: "f".repeat(32),
            gateway: ConnId::MAX_GATEWAYS - 1,
            conn: ConnId::on_gateway(ConnId::MAX_GATEWAYS - 1, u32::MAX),
            session: Some(SocketAttachment {
                conn: ConnId::on_gateway(ConnId::MAX_GATEWAYS - 1, u32::MAX),
                session: Session::Device {
                    device_id: "f".repeat(32),
                    link,
                },
            }),
        };
        let bytes = serde_json::to_string(&largest).unwrap().len();
        assert!(bytes <= 2_048, "{bytes} bytes");
    }

    #[test]
    fn ids_name_their_gateway_and_never_collide_with_direct_ones() {
        assert_eq!(ConnId::direct(u64::MAX).gateway(), None);
        assert!(ConnId::direct(u64::MAX).0 < 1 << 53);
        let conn = ConnId::on_gateway(ConnId::MAX_GATEWAYS - 1, u32::MAX);
        assert_eq!(conn.gateway(), Some(ConnId::MAX_GATEWAYS - 1));
        assert!(conn.0 < 1 << 53, "attachments hold 53 bits exactly");
        assert_ne!(ConnId::on_gateway(1, 5), ConnId::on_gateway(2, 5));
        assert_eq!(ConnId::on_gateway(3, 0).gateway(), Some(3));
    }

    #[test]
    fn sockets_fill_the_object_then_each_gateway_in_turn() {
        let mut core = core(2);
        let mut local = 0;
        let placed: Vec<Placement> = (0..7).map(|_| open(&mut core, &mut local).0).collect();
        assert_eq!(
            placed,
            [
                Placement::Here,
                Placement::Here,
                Placement::Gateway(0),
                Placement::Gateway(0),
                Placement::Gateway(1),
                Placement::Gateway(1),
                Placement::Gateway(2),
            ]
        );
        assert_eq!(
            core.sockets_per_place(),
            SocketCounts {
                here: 2,
                gateways: vec![2, 2, 1]
            }
        );
        assert_eq!(core.meta().unwrap().gateways, 3);
        assert_eq!(core.gateways_in_use(), vec![0, 1, 2]);
    }

    #[test]
    fn opening_a_gateway_is_stored_once_and_a_gateway_with_room_is_filled_first() {
        let mut core = core(1);
        let mut local = 0;
        open(&mut core, &mut local);
        assert_eq!(stored_gateways(&mut core), None, "the object's own place");
        let (_, first) = open(&mut core, &mut local);
        assert_eq!(stored_gateways(&mut core), Some(1));
        open(&mut core, &mut local);
        assert_eq!(stored_gateways(&mut core), Some(2));
        core.handle_gateway_batch(
            0,
            GatewayBatch {
                gateway: 0,
                events: vec![GatewayEvent::Close { conn: first }],
            },
        );
        while core.poll_output().is_some() {}
        assert_eq!(core.gateways_in_use(), vec![1], "gateway 0 is empty");
        let (placement, _) = open(&mut core, &mut local);
        assert_eq!(placement, Placement::Gateway(0), "the gap is filled first");
        assert_eq!(stored_gateways(&mut core), None, "no gateway was opened");
    }

    #[test]
    fn sockets_placed_but_not_yet_open_count_until_the_hello_timeout() {
        let mut core = core(2);
        let mut local = 0;
        open(&mut core, &mut local);
        open(&mut core, &mut local);
        // A storm: five upgrades placed before any gateway says a socket opened.
        let placed: Vec<Placement> = (0..5).map(|_| core.place_socket(1_000)).collect();
        assert_eq!(
            placed,
            [
                Placement::Gateway(0),
                Placement::Gateway(0),
                Placement::Gateway(1),
                Placement::Gateway(1),
                Placement::Gateway(2),
            ]
        );
        // Gateway 0 opens one of its two; the other still holds its place.
        local += 1;
        core.handle_gateway_batch(
            1_000,
            GatewayBatch {
                gateway: 0,
                events: vec![GatewayEvent::Open {
                    conn: ConnId::on_gateway(0, local),
                    source: String::new(),
                }],
            },
        );
        assert_eq!(core.place_socket(1_000), Placement::Gateway(2));
        // Past the hello timeout the places of upgrades that never opened are free again.
        let later = 1_001 + core.hello_timeout();
        assert_eq!(core.place_socket(later), Placement::Gateway(0));
        assert_eq!(core.place_socket(later), Placement::Gateway(1));
    }

    #[test]
    fn without_gateways_everything_stays_here() {
        let mut core = core(0);
        let mut local = 0;
        for _ in 0..5 {
            assert_eq!(open(&mut core, &mut local).0, Placement::Here);
        }
        assert_eq!(core.meta().unwrap().gateways, 0);
    }

    #[test]
    fn a_batch_speaks_only_for_its_own_gateways_sockets_and_unknown_ones_are_closed() {
        let mut core = core(1);
        let mut local = 0;
        open(&mut core, &mut local);
        let (_, on_zero) = open(&mut core, &mut local);
        while core.poll_output().is_some() {}
        // Gateway 1 cannot close gateway 0's socket.
        core.handle_gateway_batch(
            0,
            GatewayBatch {
                gateway: 1,
                events: vec![GatewayEvent::Close { conn: on_zero }],
            },
        );
        assert_eq!(core.sockets_per_place().gateways, vec![1]);
        // A frame on a socket the core never saw open is answered by closing it.
        let stranger = ConnId::on_gateway(0, 999);
        core.handle_gateway_batch(
            0,
            GatewayBatch {
                gateway: 0,
                events: vec![GatewayEvent::Text {
                    conn: stranger,
                    text: r#"{"type":"heartbeat"}"#.into(),
                }],
            },
        );
        let outputs: Vec<Output> = std::iter::from_fn(|| core.poll_output()).collect();
        assert!(
            outputs.iter().any(|o| matches!(
                o,
                Output::Close { conn, code, .. } if *conn == stranger && *code == close_code::SESSION_LOST
            )),
            "{outputs:?}"
        );
        // The open on gateway 0, the refused close and the stranger's frame, which was
        // received but not handled.
        assert_eq!(core.counters().gateway_calls, 3);
        assert_eq!(core.counters().gateway_messages, 1);
    }

    #[test]
    fn socket_outputs_for_a_gateway_are_split_off_with_its_index() {
        let conn = ConnId::on_gateway(4, 9);
        let (k, out) = GatewayOutput::of(&Output::Send {
            conn,
            text: "x".into(),
        })
        .unwrap();
        assert_eq!(
            (k, out),
            (
                4,
                GatewayOutput::Send {
                    conn,
                    text: "x".into()
                }
            )
        );
        let here = Output::Send {
            conn: ConnId::direct(9),
            text: "x".into(),
        };
        assert_eq!(GatewayOutput::of(&here), None);
        assert_eq!(GatewayOutput::of(&Output::ClearAlarm), None);
    }
}
