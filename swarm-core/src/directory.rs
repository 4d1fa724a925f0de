//! The short-code directory: which swarm an invite code belongs to, with the rate limits that
//! make guessing codes hopeless. One directory object serves one shard of the code space (the
//! first digit of the code's hash); this is its pure core. Wrong guesses are limited per client
//! address and slowed for everyone ([`GuessLimiter`]); each one the limits let through is
//! stored, so that a restart of the object does not reset the limits.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use shared_protocol::ErrorCode;

use crate::core::Refusal;
use crate::limits::{GuessLimiter, GuessLimits};
use crate::records::{GuessRecord, StoreOp};
use crate::Millis;

/// A code's routing entry: only the code's hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeEntry {
    pub code_hash: String,
    pub swarm_id: String,
    pub expires_ms: Millis,
}

/// Failed lookups allowed per client (address) per minute, and per shard per minute (beyond
/// which lookups are slowed to that rate, not refused for the rest of the minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectoryLimits {
    pub failures_per_client_per_minute: usize,
    pub failures_per_shard_per_minute: u32,
}

impl Default for DirectoryLimits {
    fn default() -> Self {
        Self {
            failures_per_client_per_minute: 10,
            failures_per_shard_per_minute: 100,
        }
    }
}

pub struct CodeDirectory {
    entries: HashMap<String, CodeEntry>,
    guesses: GuessLimiter,
    writes: Vec<StoreOp>,
}

impl CodeDirectory {
    /// The directory as stored: its entries, and the wrong guesses of the last minute (older
    /// ones are ignored).
    pub fn new(
        limits: DirectoryLimits,
        entries: Vec<CodeEntry>,
        now: Millis,
        guesses: Vec<GuessRecord>,
    ) -> Self {
        let mut limiter = GuessLimiter::new(GuessLimits {
            per_source: limits.failures_per_client_per_minute,
            burst: limits.failures_per_shard_per_minute,
            per_window: limits.failures_per_shard_per_minute,
            window_ms: 60_000,
        });
        let stale = guesses
            .iter()
            .any(|g| now.saturating_sub(g.at_ms) >= 60_000);
        limiter.replay(
            guesses
                .into_iter()
                .filter(|g| now.saturating_sub(g.at_ms) < 60_000)
                .map(|g| (g.at_ms, g.source))
                .collect(),
        );
        let writes = if stale {
            vec![StoreOp::PruneGuesses {
                before_ms: now.saturating_sub(60_000),
            }]
        } else {
            Vec::new()
        };
        Self {
            entries: entries
                .into_iter()
                .map(|e| (e.code_hash.clone(), e))
                .collect(),
            guesses: limiter,
            writes,
        }
    }

    /// Storage writes to carry out (only [`StoreOp::PutGuess`] and [`StoreOp::PruneGuesses`]).
    pub fn take_writes(&mut self) -> Vec<StoreOp> {
        std::mem::take(&mut self.writes)
    }

    pub fn register(&mut self, entry: CodeEntry) {
        self.entries.insert(entry.code_hash.clone(), entry);
    }

    /// The swarm a code hash belongs to. Every miss counts against the client (refused for the
    /// rest of the minute past its limit) and the shard (slowed past its limit).
    pub fn resolve(
        &mut self,
        now: Millis,
        code_hash: &str,
        client: &str,
    ) -> Result<String, Refusal> {
        let client = crate::limits::source_key(client);
        self.guesses.check(now, &client).map_err(Refusal::from)?;
        match self.entries.get(code_hash) {
            Some(entry) if now < entry.expires_ms => Ok(entry.swarm_id.clone()),
            _ => {
                self.guesses.record_miss(now, &client);
                self.writes.push(StoreOp::PutGuess(GuessRecord {
                    at_ms: now,
                    source: client,
                }));
                if let Some(before_ms) = self.guesses.prune_before(now) {
                    self.writes.push(StoreOp::PruneGuesses { before_ms });
                }
                Err(Refusal::new(
                    ErrorCode::InviteInvalid,
                    "no such invite code (or it has expired)",
                ))
            }
        }
    }

    /// Removes and returns the hashes of entries that expired before `now`, to delete from
    /// storage.
    pub fn take_expired(&mut self, now: Millis) -> Vec<String> {
        let expired: Vec<String> = self
            .entries
            .values()
            .filter(|e| now >= e.expires_ms)
            .map(|e| e.code_hash.clone())
            .collect();
        for hash in &expired {
            self.entries.remove(hash);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(hash: &str, expires_ms: Millis) -> CodeEntry {
        CodeEntry {
            code_hash: hash.into(),
            swarm_id: format!("swarm-of-{hash}"),
            expires_ms,
        }
    }

    #[test]
    fn resolves_live_codes_only() {
        let mut dir = CodeDirectory::new(
            DirectoryLimits::default(),
            vec![entry("a", 1_000)],
            0,
            vec![],
        );
        dir.register(entry("b", 5_000));
        assert_eq!(dir.resolve(0, "a", "ip").unwrap(), "swarm-of-a");
        assert_eq!(
            dir.resolve(1_000, "a", "ip").unwrap_err().code,
            ErrorCode::InviteInvalid
        );
        assert_eq!(dir.take_expired(1_000), vec!["a".to_owned()]);
        assert_eq!(dir.resolve(1_000, "b", "ip").unwrap(), "swarm-of-b");
    }

    #[test]
    fn misses_are_limited_per_client_and_slowed_per_shard() {
        let limits = DirectoryLimits {
            failures_per_client_per_minute: 3,
            failures_per_shard_per_minute: 5,
        };
        let mut dir = CodeDirectory::new(limits, vec![entry("good", u64::MAX)], 0, vec![]);
        for _ in 0..3 {
            assert_eq!(
                dir.resolve(0, "guess", "attacker").unwrap_err().code,
                ErrorCode::InviteInvalid
            );
        }
        let refused = dir.resolve(10, "good", "attacker").unwrap_err();
        assert_eq!(
            (refused.code, refused.retry_after_ms),
            (ErrorCode::RateLimited, Some(59_990))
        );
        assert!(
            dir.resolve(10, "good", "honest").is_ok(),
            "other clients are unaffected"
        );
        for _ in 0..2 {
            let _ = dir.resolve(20, "guess", "botnet-member");
        }
        let slowed = dir.resolve(30, "good", "honest").unwrap_err();
        assert_eq!(slowed.code, ErrorCode::RateLimited, "shard-wide budget");
        let wait = slowed.retry_after_ms.unwrap_or(u64::MAX);
        assert!(wait <= 12_000, "slowed, not locked out: {wait} ms");
        assert!(dir.resolve(30 + wait, "good", "honest").is_ok());

        // The misses were stored; a directory rebuilt from them refuses the attacker still.
        let stored: Vec<GuessRecord> = dir
            .take_writes()
            .into_iter()
            .filter_map(|w| match w {
                StoreOp::PutGuess(g) => Some(g),
                _ => None,
            })
            .collect();
        assert_eq!(stored.len(), 5);
        let mut again = CodeDirectory::new(limits, vec![entry("good", u64::MAX)], 40, stored);
        assert_eq!(
            again.resolve(40, "good", "attacker").unwrap_err().code,
            ErrorCode::RateLimited,
            "the limit holds across a restart"
        );
        assert!(
            again.resolve(60_000, "good", "attacker").is_ok(),
            "the window frees"
        );
    }
}
