//! The benchmark: when a device connects, its first lease counts the primes of a range of
//! [`BENCH_UNITS`] numbers starting anywhere in `[2^30, 2^34)` — 1.6 × 10^10 possible ranges, too
//! many to tabulate — whose answer the coordinator computes itself when it sends the lease
//! (about 2 ms of sieving natively). The answer is checked; the time from sending the lease to
//! the answer, as the coordinator measures it, seeds the device's speed (the device's own claim
//! is not used), and the device gets no job work until it has answered. A wrong answer
//! disconnects and quarantines it.
//!
//! Benchmark leases are ordinary [`ToClient::Lease`]s with job id [`BENCH_JOB_ID`] and wire
//! lease ids below 2^32 (epoch 0, see [`crate::jobs`]).

use kernels::primes::try_count_primes;
use shared_protocol::{LogLevel, ToClient, Work, WorkResult};

/// Numbers in a benchmark range.
pub const BENCH_UNITS: u64 = 1 << 22;

/// Benchmark ranges start in `[BENCH_LO, BENCH_LO + BENCH_STARTS)`.
const BENCH_LO: u64 = 1 << 30;
const BENCH_STARTS: u64 = (1 << 34) - (1 << 30);

/// The count a known-answer lease's result gives (`None` for a result of another kind).
pub(crate) fn known_answer(result: &WorkResult) -> Option<u64> {
    match result {
        WorkResult::PrimeCount { count } => Some(*count),
        _ => None,
    }
}

/// Why the answer to a known-answer lease (`what`) is refused, if it is.
pub(crate) fn wrong_answer(what: &str, answer: Option<u64>, expected: u64) -> Option<String> {
    match answer {
        Some(count) if count == expected => None,
        Some(count) => Some(format!("{what} answer {count} is wrong")),
        None => Some(format!("the {what} answer is of another kind")),
    }
}

use crate::core::SwarmCore;
use crate::kinds::bench_speed;
use crate::records::{PendingBench, StoreOp};
use crate::{ConnId, Millis};

/// The job id benchmark leases carry.
pub const BENCH_JOB_ID: &str = "benchmark";

/// How long a device has to answer its benchmark lease (the deadline it is told).
const BENCH_DEADLINE_MS: Millis = 60_000;

impl SwarmCore {
    /// Leases the benchmark to a device that just said hello.
    pub(crate) fn start_benchmark(&mut self, now: Millis, conn: ConnId, device_id: &str) {
        let lo = BENCH_LO.saturating_add(self.rng.below(BENCH_STARTS));
        let hi = lo.saturating_add(BENCH_UNITS);
        // Within the sieve's limits by construction; were it not, the device stays gated.
        let Ok(expected) = try_count_primes(lo, hi) else {
            return;
        };
        // Any id below 2^32 but 0; one per connection is enough to tell answers apart.
        let lease_id = self.rng.below(u64::from(u32::MAX - 1)).saturating_add(1);
        if !self.devices.contains_key(device_id) {
            return;
        }
        // Kept with the connection: after a restart the device is still gated until it answers.
        self.update_link(conn, |link| {
            link.bench = Some(PendingBench {
                lease_id,
                units: hi.saturating_sub(lo),
                expected,
                sent_ms: now,
            });
        });
        self.send(
            conn,
            &ToClient::Lease {
                lease_id,
                job_id: BENCH_JOB_ID.to_owned(),
                work: Work::PrimeCount { lo, hi },
                deadline_ms: now.saturating_add(BENCH_DEADLINE_MS),
                ticket: None,
            },
        );
    }

    /// A result for a lease of epoch 0: the device's benchmark answer, if it is the one pending.
    pub(crate) fn handle_bench_result(
        &mut self,
        now: Millis,
        conn: ConnId,
        device_id: &str,
        lease_id: u64,
        answer: Option<u64>,
    ) {
        let Some(pending) = self
            .link(conn)
            .and_then(|link| link.bench)
            .filter(|p| p.lease_id == lease_id)
        else {
            // Not this connection's benchmark (a repeat, or a stray id).
            return;
        };
        if let Some(why) = wrong_answer("benchmark", answer, pending.expected) {
            return self.refuse_result(now, conn, device_id, &why);
        }
        self.update_link(conn, |link| link.bench = None);
        let Some(device) = self.devices.get_mut(device_id) else {
            return;
        };
        // The time the coordinator saw, round trip included: a device cannot claim a speed,
        // and the network only makes it look slower (its chunks' rates correct that).
        let wall_ms = now.saturating_sub(pending.sent_ms);
        let speed = bench_speed(pending.units, wall_ms);
        device.record.score = Some(speed);
        let record = device.record.clone();
        self.jobs.speeds.insert(device_id.to_owned(), speed);
        self.persist(StoreOp::PutDevice(record.clone()));
        self.log(
            now,
            LogLevel::Info,
            format!(
                "device '{}' benchmarked at {speed:.2}× a reference core ({wall_ms} ms)",
                record.name
            ),
        );
        self.device_available(device_id);
        self.dispatch(now);
    }
}
