//! What changed in the swarm since the last snapshot a dashboard received ([`SnapshotDelta`]),
//! and how a dashboard applies it ([`SwarmSnapshot::apply`]). A dashboard speaking protocol 3
//! gets one full [`SwarmSnapshot`] and then only these, one per broadcast interval.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Counters, DeviceView, JobView, LogEntry, RunState, SwarmSnapshot};

/// How far behind an online device's last-seen time a dashboard may hold it after a delta:
/// `seen_since_ms` is the delta's `now_ms` minus this. More than two heartbeat intervals
/// (10 s each), so that a device that keeps its heartbeats is never listed in `seen`.
pub const SEEN_LAG_MS: u64 = 25_000;

/// The changes between two consecutive broadcasts. Every field is always present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotDelta {
    /// The snapshot this makes: exactly one more than the `seq` the dashboard holds.
    pub seq: u64,
    pub now_ms: u64,
    pub device_total: u32,
    pub online: u32,
    pub run_state: RunState,
    pub throttle_percent: u8,
    /// The whole jobs list when anything in it changed, else `null`.
    pub jobs: Option<Vec<JobView>>,
    /// Device rows added or changed, whole.
    pub devices: Vec<DeviceView>,
    /// Every online device was seen at or after this time, except those in `seen`: an online
    /// row's `last_seen_ms` is raised to it.
    pub seen_since_ms: u64,
    /// Rows whose `last_seen_ms` is exactly this (after the raise): device id → the value.
    pub seen: BTreeMap<String, u64>,
    /// Ids of rows that left the list (the device was removed, or fell past the row cap).
    pub removed: Vec<String>,
    /// Log entries added since, oldest first.
    pub log: Vec<LogEntry>,
    /// How many log entries the dashboard keeps: the oldest past this many are dropped.
    pub log_kept: u32,
    pub counters: Counters,
}

/// A delta that does not follow the snapshot it was applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaGap {
    /// The `seq` the dashboard holds.
    pub have: u64,
    /// The delta's `seq`.
    pub got: u64,
}

impl SwarmSnapshot {
    /// Applies the next delta. A delta that does not follow this snapshot (`seq` not one
    /// more) changes nothing and is an error: the dashboard should reconnect, which brings a
    /// full snapshot.
    pub fn apply(&mut self, delta: SnapshotDelta) -> Result<(), DeltaGap> {
        if Some(delta.seq) != self.seq.checked_add(1) {
            return Err(DeltaGap {
                have: self.seq,
                got: delta.seq,
            });
        }
        self.seq = delta.seq;
        self.now_ms = delta.now_ms;
        self.device_total = delta.device_total;
        self.online = delta.online;
        self.run_state = delta.run_state;
        self.throttle_percent = delta.throttle_percent;
        self.counters = delta.counters;
        if let Some(jobs) = delta.jobs {
            self.jobs = jobs;
        }
        self.devices.retain(|d| !delta.removed.contains(&d.id));
        for row in delta.devices {
            match self.devices.iter_mut().find(|d| d.id == row.id) {
                Some(held) => *held = row,
                None => self.devices.push(row),
            }
        }
        for device in &mut self.devices {
            if let Some(seen) = delta.seen.get(&device.id) {
                device.last_seen_ms = *seen;
            } else if device.status == crate::DeviceStatus::Online {
                device.last_seen_ms = device.last_seen_ms.max(delta.seen_since_ms);
            }
        }
        sort_rows(&mut self.devices);
        self.log.extend(delta.log);
        let kept = usize::try_from(delta.log_kept).unwrap_or(usize::MAX);
        let extra = self.log.len().saturating_sub(kept);
        self.log.drain(..extra);
        Ok(())
    }
}

/// The order of a snapshot's device rows: online first, then the most recently seen, then by
/// id.
pub fn sort_rows(rows: &mut [DeviceView]) {
    rows.sort_by(|a, b| {
        let online = |d: &DeviceView| d.status == crate::DeviceStatus::Online;
        (online(b), b.last_seen_ms)
            .cmp(&(online(a), a.last_seen_ms))
            .then_with(|| a.id.cmp(&b.id))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode, AgentClass, Capabilities, DeviceStatus, LogLevel, ToClient};

    fn row(id: &str, status: DeviceStatus, last_seen_ms: u64) -> DeviceView {
        DeviceView {
            id: id.to_owned(),
            name: format!("device {id}"),
            status,
            enabled: true,
            quarantined: false,
            capabilities: Capabilities {
                cores: 2,
                memory_mb: None,
                gpu: false,
                agent: AgentClass::Native,
                workloads: false,
            },
            last_seen_ms,
            registered_ms: 0,
            score: None,
            speed: None,
            weight_percent: 0.0,
            in_flight: 0,
            chunks_done: 0,
            trusted: true,
            confirmed: 0,
            replicated: 0,
            disputed: 0,
        }
    }

    fn line(at_ms: u64) -> LogEntry {
        LogEntry {
            at_ms,
            level: LogLevel::Info,
            text: format!("at {at_ms}"),
        }
    }

    fn held() -> SwarmSnapshot {
        SwarmSnapshot {
            swarm_id: "s".into(),
            swarm_name: "Lab".into(),
            now_ms: 100_000,
            seq: 7,
            device_total: 3,
            online: 2,
            run_state: RunState::Running,
            throttle_percent: 100,
            jobs: Vec::new(),
            devices: vec![
                row("a", DeviceStatus::Online, 90_000),
                row("b", DeviceStatus::Online, 95_000),
                row("c", DeviceStatus::Offline, 10_000),
            ],
            log: vec![line(1), line(2)],
            counters: Counters::default(),
        }
    }

    fn delta() -> SnapshotDelta {
        SnapshotDelta {
            seq: 8,
            now_ms: 102_000,
            device_total: 3,
            online: 2,
            run_state: RunState::Paused,
            throttle_percent: 50,
            jobs: None,
            devices: vec![row("d", DeviceStatus::Online, 101_000)],
            seen_since_ms: 92_000,
            seen: BTreeMap::from([("b".to_owned(), 60_000)]),
            removed: vec!["c".to_owned()],
            log: vec![line(3), line(4)],
            log_kept: 3,
            counters: Counters {
                messages_out: 9,
                ..Counters::default()
            },
        }
    }

    #[test]
    fn a_delta_replaces_adds_removes_raises_and_trims_in_the_documented_order() {
        let mut snapshot = held();
        snapshot.apply(delta()).unwrap();
        let seen: Vec<(&str, u64)> = snapshot
            .devices
            .iter()
            .map(|d| (d.id.as_str(), d.last_seen_ms))
            .collect();
        // "a" raised to seen_since, "b" exactly as listed, "c" removed, "d" added; sorted.
        assert_eq!(seen, [("d", 101_000), ("a", 92_000), ("b", 60_000)]);
        assert_eq!(snapshot.log, [line(2), line(3), line(4)]);
        assert_eq!(
            (snapshot.seq, snapshot.run_state, snapshot.throttle_percent),
            (8, RunState::Paused, 50)
        );
        assert_eq!(snapshot.counters.messages_out, 9);
    }

    #[test]
    fn a_delta_that_does_not_follow_changes_nothing() {
        let mut snapshot = held();
        let mut late = delta();
        late.seq = 9;
        assert_eq!(snapshot.apply(late), Err(DeltaGap { have: 7, got: 9 }));
        assert_eq!(snapshot, held());
    }

    #[test]
    fn every_field_of_a_delta_is_on_the_wire() {
        let mut empty = delta();
        empty.devices.clear();
        empty.seen.clear();
        empty.removed.clear();
        empty.log.clear();
        let text = encode::<ToClient>(&ToClient::SnapshotDelta(Box::new(empty)));
        assert_eq!(
            text,
            r#"{"type":"snapshot_delta","seq":8,"now_ms":102000,"device_total":3,"online":2,"run_state":"paused","throttle_percent":50,"jobs":null,"devices":[],"seen_since_ms":92000,"seen":{},"removed":[],"log":[],"log_kept":3,"counters":{"messages_in":0,"messages_out":9,"storage_writes":0,"alarm_writes":0,"alarms":0,"rejected":0,"results_unused":0,"leases_expired":0,"gateway_calls":0,"gateway_messages":0}}"#
        );
    }
}
