//! Rate limiters, driven by the caller's clock like everything in the core.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use crate::Millis;

/// At most `max` events in any `window_ms`: a log of the recent event times. Exact, and small
/// because `max` is small wherever it is used.
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    window_ms: Millis,
    max: usize,
    times: VecDeque<Millis>,
}

impl SlidingWindow {
    pub fn new(max: usize, window_ms: Millis) -> Self {
        Self {
            window_ms,
            max,
            times: VecDeque::with_capacity(max),
        }
    }

    fn expire(&mut self, now: Millis) {
        while self
            .times
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= self.window_ms)
        {
            self.times.pop_front();
        }
    }

    /// `Ok` if one more event fits now; otherwise how long until one does.
    pub fn check(&mut self, now: Millis) -> Result<(), Millis> {
        self.expire(now);
        if self.times.len() < self.max {
            Ok(())
        } else {
            let oldest = self.times.front().copied().unwrap_or(now);
            Err(oldest
                .saturating_add(self.window_ms)
                .saturating_sub(now)
                .max(1))
        }
    }

    /// Records an event (whether or not it fitted).
    pub fn record(&mut self, now: Millis) {
        self.expire(now);
        if self.times.len() == self.max {
            self.times.pop_front();
        }
        self.times.push_back(now);
    }

    /// [`check`](Self::check) and, if it fits, [`record`](Self::record).
    pub fn try_acquire(&mut self, now: Millis) -> Result<(), Millis> {
        self.check(now)?;
        self.record(now);
        Ok(())
    }
}

/// A [`SlidingWindow`] per key (for example per client address), holding at most `max_keys`
/// keys: when full, keys whose windows have emptied are dropped, and failing that the least
/// recently used one.
#[derive(Debug, Clone)]
pub struct KeyedWindows<K> {
    max: usize,
    window_ms: Millis,
    max_keys: usize,
    windows: HashMap<K, (Millis, SlidingWindow)>,
}

impl<K: Hash + Eq + Clone> KeyedWindows<K> {
    pub fn new(max: usize, window_ms: Millis, max_keys: usize) -> Self {
        Self {
            max,
            window_ms,
            max_keys,
            windows: HashMap::new(),
        }
    }

    pub fn check(&mut self, now: Millis, key: &K) -> Result<(), Millis> {
        match self.windows.get_mut(key) {
            Some((_, window)) => window.check(now),
            None => Ok(()),
        }
    }

    pub fn record(&mut self, now: Millis, key: &K) {
        if !self.windows.contains_key(key) && self.windows.len() >= self.max_keys {
            self.make_room(now);
        }
        let (max, window_ms) = (self.max, self.window_ms);
        let (used, window) = self
            .windows
            .entry(key.clone())
            .or_insert_with(|| (now, SlidingWindow::new(max, window_ms)));
        *used = now;
        window.record(now);
    }

    fn make_room(&mut self, now: Millis) {
        let window_ms = self.window_ms;
        self.windows
            .retain(|_, (used, _)| now.saturating_sub(*used) < window_ms);
        if self.windows.len() >= self.max_keys {
            if let Some(stalest) = self
                .windows
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(k, _)| k.clone())
            {
                self.windows.remove(&stalest);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

/// The key a client address is limited under: a short hash, so that no address is kept
/// (`""`, an unknown address, stays `""`).
pub fn source_key(address: &str) -> String {
    if address.is_empty() {
        String::new()
    } else {
        crate::hash_secret(address).chars().take(16).collect()
    }
}

/// Limits on wrong guesses of a secret that is short enough to guess (an invite's short code):
/// a [`SlidingWindow`] per source address, and for everyone together a [`TokenBucket`] that
/// slows guessing down (a refusal with a retry of a second or two) rather than locking every
/// honest user out for a minute. Only wrong guesses count; a right one costs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuessLimits {
    /// Wrong guesses per source address per window.
    pub per_source: usize,
    /// Wrong guesses that may come at once from everyone together, and the sustained number per
    /// window.
    pub burst: u32,
    pub per_window: u32,
    pub window_ms: Millis,
}

/// The state of [`GuessLimits`]. It is rebuilt after a restart by replaying the wrong guesses of
/// the last window ([`GuessLimiter::replay`]), which gives exactly the state it had.
#[derive(Debug, Clone)]
pub struct GuessLimiter {
    limits: GuessLimits,
    per_source: KeyedWindows<String>,
    everyone: TokenBucket,
    last_prune_ms: Millis,
}

/// Why a guess may not be tried now, and when it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuessRefusal {
    /// This source guessed wrong too often.
    Source { retry_after_ms: Millis },
    /// Everyone together guessed wrong too often: try again shortly.
    Everyone { retry_after_ms: Millis },
}

impl GuessLimiter {
    pub fn new(limits: GuessLimits) -> Self {
        Self {
            limits,
            per_source: KeyedWindows::new(limits.per_source, limits.window_ms, 10_000),
            everyone: TokenBucket::per_window(0, limits.burst, limits.per_window, limits.window_ms),
            last_prune_ms: 0,
        }
    }

    /// `Ok` if a guess from `source` may be tried now.
    pub fn check(&mut self, now: Millis, source: &str) -> Result<(), GuessRefusal> {
        if let Err(retry_after_ms) = self.per_source.check(now, &source.to_owned()) {
            return Err(GuessRefusal::Source { retry_after_ms });
        }
        self.everyone
            .peek(now)
            .map_err(|retry_after_ms| GuessRefusal::Everyone { retry_after_ms })
    }

    /// Counts a wrong guess.
    pub fn record_miss(&mut self, now: Millis, source: &str) {
        self.per_source.record(now, &source.to_owned());
        self.everyone.take(now);
    }

    /// Replays stored wrong guesses (any order) into a fresh limiter.
    pub fn replay(&mut self, mut misses: Vec<(Millis, String)>) {
        misses.sort();
        for (at, source) in misses {
            self.record_miss(at, &source);
        }
    }

    /// Once per window: the time before which stored guesses no longer count (to delete them).
    pub fn prune_before(&mut self, now: Millis) -> Option<Millis> {
        let window = self.limits.window_ms;
        if self.last_prune_ms == 0 {
            // The first guess this limiter saw: a window from now, nothing is old yet.
            self.last_prune_ms = now;
            return None;
        }
        if now.saturating_sub(self.last_prune_ms) < window {
            return None;
        }
        self.last_prune_ms = now;
        Some(now.saturating_sub(window))
    }
}

/// A token bucket: `capacity` messages at once, refilled at `per_second`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Millis,
}

impl TokenBucket {
    pub fn new(now: Millis, capacity: u32, per_second: u32) -> Self {
        Self {
            capacity: f64::from(capacity),
            per_second: f64::from(per_second),
            tokens: f64::from(capacity),
            last: now,
        }
    }

    /// `capacity` at once, refilled at `per_window` tokens per `window_ms`.
    pub fn per_window(now: Millis, capacity: u32, per_window: u32, window_ms: Millis) -> Self {
        Self {
            capacity: f64::from(capacity),
            per_second: f64::from(per_window) * 1000.0 / (window_ms.max(1) as f64),
            tokens: f64::from(capacity),
            last: now,
        }
    }

    fn refill(&mut self, now: Millis) {
        let elapsed = now.saturating_sub(self.last) as f64 / 1000.0;
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Millis) -> bool {
        self.take_n(now, 1)
    }

    /// Takes `n` tokens if there are that many; otherwise takes none.
    pub fn take_n(&mut self, now: Millis, n: usize) -> bool {
        self.refill(now);
        let n = n as f64;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Changes the capacity and the rate from now on; the tokens held so far stay (up to the
    /// new capacity).
    pub fn set_limit(&mut self, now: Millis, capacity: u32, per_second: u32) {
        self.refill(now);
        self.capacity = f64::from(capacity);
        self.per_second = f64::from(per_second);
        self.tokens = self.tokens.min(self.capacity);
    }

    /// `Ok` if a token is there now (without taking it); otherwise how long until one is.
    pub fn peek(&mut self, now: Millis) -> Result<(), Millis> {
        self.refill(now);
        if self.tokens >= 1.0 {
            Ok(())
        } else if self.per_second > 0.0 {
            Err((((1.0 - self.tokens) / self.per_second * 1000.0).ceil() as Millis).max(1))
        } else {
            Err(Millis::MAX)
        }
    }
}

/// How long the object itself keeps a joining device waiting: the time from accepting a
/// socket to handling its hello, which a device sends as soon as the socket opens. Under load
/// both the upgrade and the hello wait in the object's input queue, so this is the queue's
/// delay as the object sees it. The median of the last [`HelloWaits::KEPT`] waits within
/// [`HelloWaits::WINDOW_MS`]: a few devices that hold back their hello on purpose do not move
/// it, and what they could move is capped by the caller.
#[derive(Debug, Clone, Default)]
pub struct HelloWaits {
    /// `(when the hello was handled, how long it waited)`, oldest first.
    waits: VecDeque<(Millis, Millis)>,
}

impl HelloWaits {
    pub const KEPT: usize = 31;
    pub const WINDOW_MS: Millis = 60_000;

    pub fn record(&mut self, now: Millis, waited: Millis) {
        if self.waits.len() == Self::KEPT {
            self.waits.pop_front();
        }
        self.waits.push_back((now, waited));
    }

    /// The median wait of the recent hellos; 0 when none is recent.
    pub fn median(&self, now: Millis) -> Millis {
        let mut recent: Vec<Millis> = self
            .waits
            .iter()
            .filter(|(at, _)| now.saturating_sub(*at) < Self::WINDOW_MS)
            .map(|(_, waited)| *waited)
            .collect();
        recent.sort_unstable();
        recent.get(recent.len() / 2).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_allows_max_per_window_and_says_when() {
        let mut w = SlidingWindow::new(5, 60_000);
        for i in 0..5 {
            assert_eq!(w.try_acquire(1_000 + i * 1_000), Ok(()));
        }
        assert_eq!(
            w.try_acquire(10_000),
            Err(51_000),
            "the first frees at 61 s"
        );
        assert_eq!(w.try_acquire(60_999), Err(1));
        assert_eq!(w.try_acquire(61_000), Ok(()));
        assert_eq!(w.try_acquire(61_001), Err(999));
    }

    #[test]
    fn keyed_windows_are_independent_and_bounded() {
        let mut k = KeyedWindows::new(2, 1_000, 3);
        k.record(0, &"a");
        k.record(0, &"a");
        assert!(k.check(10, &"a").is_err());
        assert!(k.check(10, &"b").is_ok());
        for key in ["b", "c", "d", "e"] {
            k.record(20, &key);
        }
        assert!(k.len() <= 3);
        assert!(k.check(2_000, &"a").is_ok(), "windows empty out");
    }

    #[test]
    fn guesses_are_limited_per_source_and_slowed_for_everyone() {
        let limits = GuessLimits {
            per_source: 3,
            burst: 5,
            per_window: 5,
            window_ms: 10_000,
        };
        let mut g = GuessLimiter::new(limits);
        for _ in 0..3 {
            assert_eq!(g.check(0, "a"), Ok(()));
            g.record_miss(0, "a");
        }
        assert_eq!(
            g.check(1, "a"),
            Err(GuessRefusal::Source {
                retry_after_ms: 9_999
            })
        );
        assert_eq!(g.check(1, "b"), Ok(()), "other sources are unaffected");
        g.record_miss(1, "b");
        g.record_miss(1, "c");
        // Five wrong guesses in all: everyone waits for the next token, two seconds at most.
        let Err(GuessRefusal::Everyone { retry_after_ms }) = g.check(1, "d") else {
            panic!("the shared budget is spent");
        };
        assert!((1..=2_000).contains(&retry_after_ms), "{retry_after_ms}");

        // A replay of the same misses gives the same state.
        let mut again = GuessLimiter::new(limits);
        again.replay(vec![
            (1, "c".into()),
            (0, "a".into()),
            (0, "a".into()),
            (1, "b".into()),
            (0, "a".into()),
        ]);
        assert_eq!(again.check(1, "a"), g.check(1, "a"));
        assert_eq!(again.check(1, "d"), g.check(1, "d"));
        assert_eq!(g.check(1 + retry_after_ms, "d"), Ok(()));
    }

    #[test]
    fn token_bucket_bursts_then_refills() {
        let mut b = TokenBucket::new(0, 3, 2);
        assert!(b.take(0) && b.take(0) && b.take(0));
        assert!(!b.take(0));
        assert!(!b.take(400));
        assert!(b.take(500), "one token after half a second at 2/s");
        assert!(!b.take(500));
        assert!(b.take(10_000) && b.take(10_000) && b.take(10_000));
        assert!(!b.take(10_000), "capacity caps the refill");
    }

    #[test]
    fn the_hello_wait_is_the_median_of_recent_hellos() {
        let mut waits = HelloWaits::default();
        assert_eq!(waits.median(0), 0, "nothing measured");
        for i in 0..20 {
            waits.record(1_000 + i, 8_000);
        }
        // A few hellos held back on purpose do not move it.
        for i in 0..5 {
            waits.record(2_000 + i, 60_000);
        }
        assert_eq!(waits.median(3_000), 8_000);
        // Only the last KEPT count: newer quick hellos replace them.
        for i in 0..30 {
            waits.record(4_000 + i, 100);
        }
        assert_eq!(waits.median(5_000), 100);
        // A minute later nothing recent is left.
        assert_eq!(waits.median(4_029 + HelloWaits::WINDOW_MS), 0);
    }
}
