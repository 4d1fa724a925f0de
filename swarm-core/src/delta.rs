//! What a dashboard speaking protocol 3 is sent after its first snapshot: the changes since the
//! previous broadcast ([`diff`]). Pure: the core keeps the snapshot its dashboards hold (the
//! base) and calls this each broadcast.
//!
//! A device's `last_seen_ms` moves with every heartbeat the platform answers, so an idle swarm
//! would resend every row every few ticks. Instead a delta says once that every online device
//! was seen within the last [`SEEN_LAG_MS`] (`seen_since_ms`), and gives exact times only for
//! the devices that were not (they missed heartbeats) and for offline ones.

use std::collections::{BTreeMap, BTreeSet};

use shared_protocol::{DeviceStatus, SnapshotDelta, SwarmSnapshot};

pub use shared_protocol::SEEN_LAG_MS;

/// The delta from `base` (what the dashboards hold, the previous broadcast) to `new`, given
/// that `log_added` entries were logged in between and dashboards keep `log_kept`.
pub fn diff(
    base: &SwarmSnapshot,
    new: &SwarmSnapshot,
    log_added: u64,
    log_kept: usize,
) -> SnapshotDelta {
    let seen_since_ms = new.now_ms.saturating_sub(SEEN_LAG_MS);
    let held: BTreeMap<&str, &shared_protocol::DeviceView> =
        base.devices.iter().map(|d| (d.id.as_str(), d)).collect();
    let mut devices = Vec::new();
    let mut seen = BTreeMap::new();
    for row in &new.devices {
        // What the dashboard's row says after the whole rows are applied...
        let applied = match held.get(row.id.as_str()) {
            Some(old) => {
                let mut same_but_seen = row.clone();
                same_but_seen.last_seen_ms = old.last_seen_ms;
                if same_but_seen == **old {
                    old.last_seen_ms
                } else {
                    devices.push(row.clone());
                    row.last_seen_ms
                }
            }
            None => {
                devices.push(row.clone());
                row.last_seen_ms
            }
        };
        // ...and after the raise to `seen_since_ms`: close enough, or listed exactly.
        let online = row.status == DeviceStatus::Online;
        let raised = if online {
            applied.max(seen_since_ms)
        } else {
            applied
        };
        let close_enough = raised == row.last_seen_ms
            || (online && row.last_seen_ms >= seen_since_ms && raised <= row.last_seen_ms);
        if !close_enough {
            seen.insert(row.id.clone(), row.last_seen_ms);
        }
    }
    let present: BTreeSet<&str> = new.devices.iter().map(|d| d.id.as_str()).collect();
    let removed = base
        .devices
        .iter()
        .filter(|d| !present.contains(d.id.as_str()))
        .map(|d| d.id.clone())
        .collect();
    let added = usize::try_from(log_added)
        .unwrap_or(usize::MAX)
        .min(new.log.len());
    SnapshotDelta {
        seq: new.seq,
        now_ms: new.now_ms,
        device_total: new.device_total,
        online: new.online,
        run_state: new.run_state,
        throttle_percent: new.throttle_percent,
        jobs: (new.jobs != base.jobs).then(|| new.jobs.clone()),
        devices,
        seen_since_ms,
        seen,
        removed,
        log: new
            .log
            .iter()
            .skip(new.log.len().saturating_sub(added))
            .cloned()
            .collect(),
        log_kept: u32::try_from(log_kept).unwrap_or(u32::MAX),
        counters: new.counters,
    }
}
