//! The owner's audit log: security events kept per kind, so that a flood of one kind (wrong
//! owner keys, bad hellos) is summarised in a count instead of pushing every other event out.

use std::collections::{BTreeMap, VecDeque};

use shared_protocol::{LogEntry, LogLevel};

/// The events of one kind: the newest few, and how many there were in all.
#[derive(Debug, Default)]
struct Kind {
    newest: VecDeque<LogEntry>,
    total: u64,
    first_ms: u64,
}

/// Security events by kind. Kinds are fixed names chosen by the code, never input, so the
/// number of kinds is bounded and so is the log.
#[derive(Debug)]
pub(crate) struct Audit {
    per_kind: usize,
    kinds: BTreeMap<&'static str, Kind>,
}

impl Audit {
    pub(crate) fn new(per_kind: usize) -> Self {
        Self {
            per_kind: per_kind.max(1),
            kinds: BTreeMap::new(),
        }
    }

    pub(crate) fn record(&mut self, kind: &'static str, entry: LogEntry) {
        let log = self.kinds.entry(kind).or_default();
        if log.total == 0 {
            log.first_ms = entry.at_ms;
        }
        log.total = log.total.saturating_add(1);
        if log.newest.len() >= self.per_kind {
            log.newest.pop_front();
        }
        log.newest.push_back(entry);
    }

    /// Every kept event, oldest first, each kind whose older events were dropped preceded by one
    /// line that counts them.
    pub(crate) fn entries(&self) -> Vec<LogEntry> {
        let mut out = Vec::new();
        for (kind, log) in &self.kinds {
            let kept = log.newest.len() as u64;
            if log.total > kept {
                out.push(LogEntry {
                    at_ms: log.first_ms,
                    level: LogLevel::Security,
                    text: format!(
                        "{} more event(s) of kind '{kind}' since then (only the newest {kept} are kept)",
                        log.total.saturating_sub(kept)
                    ),
                });
            }
            out.extend(log.newest.iter().cloned());
        }
        out.sort_by_key(|e| e.at_ms);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at_ms: u64, text: &str) -> LogEntry {
        LogEntry {
            at_ms,
            level: LogLevel::Security,
            text: text.into(),
        }
    }

    #[test]
    fn a_flood_of_one_kind_keeps_the_others() {
        let mut audit = Audit::new(3);
        audit.record("removal", event(1, "device removed"));
        for t in 2..202 {
            audit.record("owner key", event(t, "bad owner key"));
        }
        let entries = audit.entries();
        assert!(entries.iter().any(|e| e.text == "device removed"));
        assert_eq!(
            entries.iter().filter(|e| e.text == "bad owner key").count(),
            3
        );
        let summary = entries
            .iter()
            .find(|e| e.text.starts_with("197 more"))
            .expect("the flood is summarised");
        assert_eq!(summary.at_ms, 2, "dated from the first of the kind");
        assert_eq!(entries.len(), 5);
        assert!(entries.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    }
}
