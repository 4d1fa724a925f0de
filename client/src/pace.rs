//! How much a device computes, as a plain, clock-free type: which of its workers may start a
//! lease and when, from the cores the user lends and the coordinator's share
//! ([`shared_protocol::ToClient::Share`]). Used by the browser's worker pool and by the native
//! agent's threads; both hand in the time.
//!
//! A share is `workers` leases at once, each worker busy `duty_percent` of the time: after a
//! lease that took `t` ms, a worker rests `t × (100 − duty) ÷ duty` ms, and a resting worker
//! counts as busy, so that another one does not take its turn. The benchmark lease is exempt:
//! it runs at once, at full speed, because the coordinator measures it.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Free once `rested_at` has passed.
    Free {
        rested_at: u64,
    },
    Busy,
}

/// The workers of one device and whose turn it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Pacer {
    slots: Vec<Slot>,
    /// Cores the user lends (the page's slider, the agent's `--cores`).
    lend: usize,
    /// From the coordinator's share; until one arrives, every lent core at full speed.
    share_workers: Option<usize>,
    duty_percent: u8,
}

impl Pacer {
    /// A device with `slots` workers, all lent, at full speed.
    pub fn new(slots: usize) -> Self {
        Self {
            slots: vec![Slot::Free { rested_at: 0 }; slots],
            lend: slots,
            share_workers: None,
            duty_percent: 100,
        }
    }

    /// The user lends this many cores.
    pub fn set_lend(&mut self, cores: usize) {
        self.lend = cores;
    }

    /// The coordinator's share arrived.
    pub fn set_share(&mut self, workers: usize, duty_percent: u8) {
        self.share_workers = Some(workers);
        self.duty_percent = duty_percent.clamp(1, 100);
    }

    /// Workers that may be busy or resting at once.
    pub fn workers(&self) -> usize {
        let lent = self.lend.min(self.slots.len());
        self.share_workers.map_or(lent, |share| share.min(lent))
    }

    /// Percent of the time each worker computes.
    pub fn duty_percent(&self) -> u8 {
        self.duty_percent
    }

    fn occupied(&self, now: u64) -> usize {
        self.slots
            .iter()
            .filter(|slot| match slot {
                Slot::Busy => true,
                Slot::Free { rested_at } => *rested_at > now,
            })
            .count()
    }

    /// Whether worker `slot` may start a lease at `now` (`bench`: the benchmark lease).
    pub fn may_start(&self, slot: usize, now: u64, bench: bool) -> bool {
        match self.slots.get(slot) {
            Some(Slot::Free { .. }) if bench => true,
            Some(Slot::Free { rested_at }) => {
                *rested_at <= now && self.occupied(now) < self.workers()
            }
            _ => false,
        }
    }

    /// A worker that may start a lease at `now`, if any.
    pub fn free_slot(&self, now: u64, bench: bool) -> Option<usize> {
        (0..self.slots.len()).find(|&slot| self.may_start(slot, now, bench))
    }

    /// Worker `slot` started a lease.
    pub fn start(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            *s = Slot::Busy;
        }
    }

    /// Worker `slot` finished a lease at `now` after `compute_ms` of work; it rests in
    /// proportion (not after the benchmark).
    pub fn finish(&mut self, slot: usize, now: u64, compute_ms: u64, bench: bool) {
        let rest = if bench {
            0
        } else {
            rest_ms(compute_ms, self.duty_percent)
        };
        if let Some(s) = self.slots.get_mut(slot) {
            *s = Slot::Free {
                rested_at: now.saturating_add(rest),
            };
        }
    }

    /// When a worker's rest ends after `now`: the next moment a waiting lease may start.
    pub fn wake_at(&self, now: u64) -> Option<u64> {
        self.slots
            .iter()
            .filter_map(|slot| match slot {
                Slot::Free { rested_at } if *rested_at > now => Some(*rested_at),
                _ => None,
            })
            .min()
    }
}

/// How long a worker rests after `compute_ms` of work at `duty_percent`.
pub fn rest_ms(compute_ms: u64, duty_percent: u8) -> u64 {
    let duty = u64::from(duty_percent.clamp(1, 100));
    compute_ms.saturating_mul(100 - duty) / duty
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_share_every_lent_core_computes_back_to_back() {
        let mut p = Pacer::new(4);
        p.set_lend(2);
        assert_eq!(p.workers(), 2);
        assert_eq!(p.free_slot(0, false), Some(0));
        p.start(0);
        assert_eq!(p.free_slot(0, false), Some(1));
        p.start(1);
        assert_eq!(p.free_slot(0, false), None, "two lent, two busy");
        p.finish(0, 1000, 1000, false);
        assert_eq!(p.free_slot(1000, false), Some(0), "no rest at 100 %");
        assert_eq!(p.wake_at(1000), None);
    }

    #[test]
    fn below_one_worker_a_worker_rests_in_proportion() {
        let mut p = Pacer::new(2);
        p.set_share(1, 20);
        assert_eq!(p.workers(), 1);
        p.start(0);
        assert_eq!(p.free_slot(0, false), None, "one worker at a time");
        p.finish(0, 1000, 1000, false);
        // 1 s of work at 20 % → 4 s of rest, and the other worker may not take its turn.
        assert_eq!(p.free_slot(1000, false), None);
        assert_eq!(p.free_slot(4999, false), None);
        assert_eq!(p.wake_at(1000), Some(5000));
        assert_eq!(p.free_slot(5000, false), Some(0));
        // Over a long run, the worker computes a fifth of the time.
        let (mut now, mut busy) = (5000, 0);
        for _ in 0..100 {
            let slot = p.free_slot(now, false).unwrap();
            p.start(slot);
            now += 700;
            busy += 700;
            p.finish(slot, now, 700, false);
            now = p.wake_at(now).unwrap_or(now);
        }
        assert_eq!(busy * 100 / (now - 5000), 20);
    }

    #[test]
    fn the_benchmark_runs_at_once_and_leaves_no_rest() {
        let mut p = Pacer::new(1);
        p.set_share(0, 100);
        assert_eq!(
            p.free_slot(0, false),
            None,
            "a share of nothing computes nothing"
        );
        assert_eq!(p.free_slot(0, true), Some(0));
        p.start(0);
        assert_eq!(p.free_slot(0, true), None, "a busy worker is busy");
        p.finish(0, 2000, 2000, true);
        p.set_share(1, 10);
        assert_eq!(p.free_slot(2000, false), Some(0));
        p.start(0);
        p.finish(0, 3000, 1000, false);
        assert_eq!(
            p.free_slot(3000, true),
            Some(0),
            "a resting worker still benchmarks"
        );
    }

    #[test]
    fn the_lent_cores_and_the_share_both_bound_the_workers() {
        let mut p = Pacer::new(8);
        p.set_share(3, 77);
        assert_eq!(p.workers(), 3);
        p.set_lend(2);
        assert_eq!(p.workers(), 2, "the user lent fewer since");
        p.set_share(8, 100);
        p.set_lend(20);
        assert_eq!(p.workers(), 8, "never more than the device's workers");
        p.set_lend(0);
        assert_eq!(p.free_slot(0, false), None);
    }

    #[test]
    fn rests_are_in_proportion_to_the_work() {
        assert_eq!(rest_ms(1000, 100), 0);
        assert_eq!(rest_ms(1000, 50), 1000);
        assert_eq!(rest_ms(1000, 10), 9000);
        assert_eq!(rest_ms(1000, 0), 99_000, "duty is at least 1 %");
        assert_eq!(rest_ms(u64::MAX, 1), u64::MAX);
    }
}
