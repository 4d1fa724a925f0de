//! Known-answer spot checks of prime counts, which no cheap rule can verify. After about one
//! accepted prime-count chunk in [`Config::spot_check_one_in`](crate::Config), the device is
//! leased a small range of the same job ([`CHECK_SPAN`] numbers) that the coordinator counts
//! itself. It comes as an ordinary lease of the job, like the small ones at a job's tail. A
//! wrong answer quarantines the device ([`SwarmCore::refuse_result`]); each right one adds to
//! its `checks_passed`. The answer is not merged into the job.
//!
//! Check leases use wire ids of epoch 0, like the benchmark ([`crate::bench`]), so the
//! scheduler never sees them.

use kernels::primes::try_count_primes;
use shared_protocol::{LogLevel, ToClient, Work};

use crate::bench::wrong_answer;
use crate::core::SwarmCore;
use crate::records::{PendingCheck, StoreOp};
use crate::Millis;

/// Numbers in a spot check: about a millisecond of sieving for the coordinator.
pub const CHECK_SPAN: u64 = 1 << 20;

/// How long a device has to answer a check (the deadline it is told). A check not answered by
/// then is forgotten, so that the device can be checked again.
const CHECK_DEADLINE_MS: Millis = 60_000;

impl SwarmCore {
    /// After an accepted chunk of the running job: now and then, a spot check for the device,
    /// unless it has one pending.
    pub(crate) fn maybe_spot_check(&mut self, now: Millis, device_id: &str) {
        let Some((job_id, lo, hi)) = self.running_prime_count() else {
            return;
        };
        let one_in = self.config.spot_check_one_in;
        let conn = match self.devices.get(device_id).and_then(|d| d.conn) {
            Some(conn) if self.link(conn).is_some_and(|l| l.check.is_none()) => Some(conn),
            _ => None,
        };
        let Some(conn) = conn.filter(|_| one_in > 0) else {
            return;
        };
        if self.rng.below(one_in) != 0 {
            return;
        }
        let size = hi.saturating_sub(lo);
        let span = CHECK_SPAN.min(size);
        // `span <= size`, so the checked range `[start, end)` stays inside `[lo, hi)`.
        let start = lo.saturating_add(self.rng.below(size.saturating_sub(span).saturating_add(1)));
        let end = start.saturating_add(span);
        // Job ranges are validated to the kernel's limit; should one not be, no check is sent.
        let Ok(expected) = try_count_primes(start, end) else {
            return;
        };
        let lease_id = self.rng.below(u64::from(u32::MAX - 1)).saturating_add(1);
        let deadline_ms = now.saturating_add(CHECK_DEADLINE_MS);
        self.update_link(conn, |link| {
            link.check = Some(PendingCheck {
                lease_id,
                expected,
                deadline_ms,
            });
        });
        self.send(
            conn,
            &ToClient::Lease {
                lease_id,
                job_id,
                work: Work::PrimeCount { lo: start, hi: end },
                deadline_ms,
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
        let Some(pending) = self
            .link(conn)
            .and_then(|link| link.check)
            .filter(|c| c.lease_id == lease_id)
        else {
            return false;
        };
        self.update_link(conn, |link| link.check = None);
        let Some(device) = self.devices.get_mut(device_id) else {
            return true;
        };
        let Some(why) = wrong_answer("spot check", answer, pending.expected) else {
            // Trust is stored (one write per passed check, about one accepted chunk in ten).
            device.record.checks_passed = device.record.checks_passed.saturating_add(1);
            let record = device.record.clone();
            self.persist(StoreOp::PutDevice(record));
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

    /// Checks past their deadline are forgotten (the device may be checked again).
    pub(crate) fn expire_checks(&mut self, now: Millis) {
        let late: Vec<crate::ConnId> = self
            .devices
            .values()
            .filter_map(|d| d.conn)
            .filter(|conn| {
                self.link(*conn)
                    .and_then(|l| l.check)
                    .is_some_and(|c| c.deadline_ms <= now)
            })
            .collect();
        for conn in late {
            self.update_link(conn, |link| link.check = None);
        }
    }
}
