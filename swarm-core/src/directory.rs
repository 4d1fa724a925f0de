//! The short-code directory: which swarm an invite code belongs to, with the rate limits that
//! make guessing codes hopeless. One directory object serves one shard of the code space (the
//! first digit of the code); this is its pure core.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use shared_protocol::ErrorCode;

use crate::core::Refusal;
use crate::limits::{KeyedWindows, SlidingWindow};
use crate::Millis;

/// A code's routing entry: only the code's hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeEntry {
    pub code_hash: String,
    pub swarm_id: String,
    pub expires_ms: Millis,
}

/// Failed lookups allowed per client (address) per minute, and per shard per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectoryLimits {
    pub failures_per_client_per_minute: usize,
    pub failures_per_shard_per_minute: usize,
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
    per_client: KeyedWindows<String>,
    per_shard: SlidingWindow,
}

impl CodeDirectory {
    pub fn new(limits: DirectoryLimits, entries: Vec<CodeEntry>) -> Self {
        Self {
            entries: entries
                .into_iter()
                .map(|e| (e.code_hash.clone(), e))
                .collect(),
            per_client: KeyedWindows::new(limits.failures_per_client_per_minute, 60_000, 10_000),
            per_shard: SlidingWindow::new(limits.failures_per_shard_per_minute, 60_000),
        }
    }

    pub fn register(&mut self, entry: CodeEntry) {
        self.entries.insert(entry.code_hash.clone(), entry);
    }

    /// The swarm a code hash belongs to. Every miss counts against the client and the shard;
    /// past either limit every lookup is refused until the window frees.
    pub fn resolve(
        &mut self,
        now: Millis,
        code_hash: &str,
        client: &str,
    ) -> Result<String, Refusal> {
        let client = client.to_owned();
        if let Err(retry) = self.per_client.check(now, &client) {
            return Err(Refusal::rate_limited(
                "too many wrong codes from this address",
                retry,
            ));
        }
        if let Err(retry) = self.per_shard.check(now) {
            return Err(Refusal::rate_limited(
                "too many wrong codes are being tried",
                retry,
            ));
        }
        match self.entries.get(code_hash) {
            Some(entry) if now < entry.expires_ms => Ok(entry.swarm_id.clone()),
            _ => {
                self.per_client.record(now, &client);
                self.per_shard.record(now);
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
        let mut dir = CodeDirectory::new(DirectoryLimits::default(), vec![entry("a", 1_000)]);
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
    fn misses_are_limited_per_client_and_per_shard() {
        let limits = DirectoryLimits {
            failures_per_client_per_minute: 3,
            failures_per_shard_per_minute: 5,
        };
        let mut dir = CodeDirectory::new(limits, vec![entry("good", u64::MAX)]);
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
        assert_eq!(
            dir.resolve(30, "good", "honest").unwrap_err().code,
            ErrorCode::RateLimited,
            "shard-wide cap"
        );
        assert!(
            dir.resolve(60_000, "good", "attacker").is_ok(),
            "the window frees"
        );
    }
}
