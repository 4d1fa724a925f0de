//! Known-answer spot checks of prime counts, which no cheap rule can verify. After about one
//! accepted prime-count chunk in [`Config::spot_check_one_in`](crate::Config), the device is
//! leased a small range of the same job ([`CHECK_SPAN`] numbers) that the coordinator counts
//! itself. It comes as an ordinary lease of the job, like the small ones at a job's tail. A
//! wrong answer quarantines the device ([`SwarmCore::refuse_result`]); each right one adds to
//! its `checks_passed`. The answer is not merged into the job.
//!
//! Check leases use wire ids of epoch 0, like the benchmark ([`crate::bench`]), so the
//! scheduler never sees them.

use kernels::primes::count_primes;
use shared_protocol::{LogLevel, ToClient, Work};

use crate::bench::wrong_answer;
use crate::core::SwarmCore;
use crate::Millis;

/// Numbers in a spot check: about a millisecond of sieving for the coordinator.
pub const CHECK_SPAN: u64 = 1 << 20;

/// How long a device has to answer a check (the deadline it is told).
const CHECK_DEADLINE_MS: Millis = 60_000;

/// A spot check a device has not answered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PendingCheck {
    pub(crate) lease_id: u64,
    pub(crate) expected: u64,
}

impl SwarmCore {
    /// After an accepted chunk of the running job: now and then, a spot check for the device,
    /// unless it has one pending.
    pub(crate) fn maybe_spot_check(&mut self, now: Millis, device_id: &str) {
        let Some((job_id, lo, hi)) = self.running_prime_count() else {
            return;
        };
        let one_in = self.config.spot_check_one_in;
        let conn = match self.devices.get(device_id) {
            Some(device) if device.check.is_none() => device.conn,
            _ => None,
        };
        let Some(conn) = conn.filter(|_| one_in > 0) else {
            return;
        };
        if self.rng.below(one_in) != 0 {
            return;
        }
        let span = CHECK_SPAN.min(hi - lo);
        let start = lo + self.rng.below(hi - lo - span + 1);
        let expected = count_primes(start, start + span);
        let lease_id = 1 + self.rng.below(u64::from(u32::MAX) - 1);
        if let Some(device) = self.devices.get_mut(device_id) {
            device.check = Some(PendingCheck { lease_id, expected });
        }
        self.send(
            conn,
            &ToClient::Lease {
                lease_id,
                job_id,
                work: Work::PrimeCount {
                    lo: start,
                    hi: start + span,
                },
                deadline_ms: now + CHECK_DEADLINE_MS,
            },
        );
    }

    /// A result for the device's pending spot check: `true` if it was one (handled here).
    pub(crate) fn handle_check_result(
        &mut self,
        now: Millis,
        conn: crate::ConnId,
        device_id: &str,
        lease_id: u64,
        answer: Option<u64>,
    ) -> bool {
        let Some(device) = self.devices.get_mut(device_id) else {
            return false;
        };
        let Some(pending) = device.check.filter(|c| c.lease_id == lease_id) else {
            return false;
        };
        device.check = None;
        let Some(why) = wrong_answer("spot check", answer, pending.expected) else {
            device.checks_passed += 1;
            return true;
        };
        let name = device.record.name.clone();
        self.log(
            now,
            LogLevel::Warn,
            format!("device '{name}' failed a spot check of a prime count"),
        );
        self.refuse_result(now, conn, device_id, &why);
        true
    }
}
