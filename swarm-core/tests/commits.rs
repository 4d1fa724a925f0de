//! Commits and acknowledgements through the core on a simulated clock, with the client's own
//! [`Link`] keeping and re-sending results: a result is acknowledged only once committed, and
//! after a crash that lost what was not committed, the device's results sent again with their
//! tickets bring the job back to where it was — none lost, none counted twice.

mod sim;

use client::link::{Identity, Link, LinkEvent};
use shared_protocol::{
    JobSpec, JoinProof, OwnerCommand, OwnerReply, ToClient, ToCoordinator, Work,
};
use swarm_core::{Config, ConnId};

use sim::*;

/// A protocol 4 device as the browser and the agent run it: the client's [`Link`] on a socket
/// of the simulated object, computing every lease with the real kernels.
struct Device {
    link: Link,
    conn: ConnId,
    leases: Vec<(u64, Work)>,
    /// Acknowledged lease ids, in order.
    acked: Vec<u64>,
}

impl Device {
    fn join(sim: &mut Sim, name: &str) -> Self {
        let link = Link::new(Identity::Device {
            name: name.into(),
            capabilities: caps(),
            credential: None,
            invite: Some(JoinProof::OwnerKey {
                owner_key: OWNER_KEY.into(),
            }),
        });
        let conn = sim.connect();
        let mut device = Self {
            link,
            conn,
            leases: Vec::new(),
            acked: Vec::new(),
        };
        device.hello(sim);
        device
    }

    fn connect(&mut self, sim: &mut Sim) {
        self.conn = sim.connect();
        self.hello(sim);
    }

    fn hello(&mut self, sim: &mut Sim) {
        let hello = self.link.on_open();
        sim.send(self.conn, &hello);
        self.pump(sim);
    }

    /// Reads what arrived, and sends what the link wants sent again.
    fn pump(&mut self, sim: &mut Sim) {
        for message in sim.take(self.conn) {
            if let ToClient::Committed { lease_ids } = &message {
                self.acked.extend(lease_ids);
            }
            for event in self.link.on_message(sim.now, message) {
                if let LinkEvent::Lease { lease_id, work, .. } = event {
                    self.leases.push((lease_id, work));
                }
            }
        }
        for message in self.link.poll_resends(sim.now) {
            sim.send(self.conn, &message);
        }
    }

    /// Computes and answers every lease it holds.
    fn compute(&mut self, sim: &mut Sim) {
        for (lease_id, work) in std::mem::take(&mut self.leases) {
            let result = client_compute::compute(&work).expect("computable work");
            let message = self.link.chunk_result(sim.now, lease_id, result, 1);
            sim.send(self.conn, &message);
        }
        self.pump(sim);
    }
}

/// A simulated object committing every 2 s, with one device that benchmarks slowly (so that
/// its chunks stay small enough to compute natively at once).
fn sim_with_device() -> (Sim, Device) {
    let mut sim = sim();
    let mut device = Device::join(&mut sim, "d");
    sim.advance(20_000);
    device.compute(&mut sim); // the benchmark
    (sim, device)
}

fn sim() -> Sim {
    Sim::with_config(Config {
        commit_interval_ms: 2_000,
        ..Config::default()
    })
}

fn submit(sim: &mut Sim, hi: u64) -> String {
    match sim
        .owner(OwnerCommand::SubmitJob {
            job: JobSpec::PrimeCount { lo: 0, hi },
        })
        .unwrap()
    {
        OwnerReply::JobSubmitted { job_id } => job_id,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_result_is_acknowledged_once_its_commit_is_written_not_before() {
    let (mut sim, mut device) = sim_with_device();
    submit(&mut sim, 1 << 40);
    device.pump(&mut sim);
    let sent: Vec<u64> = device.leases.iter().map(|(id, _)| *id).collect();
    assert!(!sent.is_empty(), "leases out");
    let commits = sim.store.commits.len();
    device.compute(&mut sim);
    assert!(device.acked.is_empty(), "acknowledged before the commit");
    assert_eq!(device.link.unacknowledged(), sent.len());
    assert_eq!(sim.core.uncommitted(), sent.len(), "one part each, waiting");
    sim.advance(2_000);
    device.pump(&mut sim);
    assert_eq!(sim.core.uncommitted(), 0);
    assert_eq!(
        sim.store.commits.len(),
        commits + 1,
        "one row for all of them"
    );
    let committed = sim.store.commits.values().last().unwrap();
    assert_eq!(committed.entries.len(), sent.len());
    assert_eq!(
        device.acked, sent,
        "acknowledged together, after the commit"
    );
    assert_eq!(device.link.unacknowledged(), 0);
}

#[test]
fn after_a_crash_results_sent_again_restore_the_job_and_none_is_lost_or_counted_twice() {
    let (mut sim, mut device) = sim_with_device();
    let hi = 50_000_000;
    let job = submit(&mut sim, hi);
    // Two results are committed and acknowledged, two more are sent but not yet committed.
    device.pump(&mut sim);
    sim.advance(500);
    let mut held = std::mem::take(&mut device.leases);
    assert!(held.len() >= 4, "a lease per worker and one more: {held:?}");
    let mut answer = |sim: &mut Sim, device: &mut Device, n: usize| {
        device.leases = held.drain(..n).collect();
        device.compute(sim);
    };
    answer(&mut sim, &mut device, 2);
    sim.advance(2_000);
    device.pump(&mut sim);
    assert_eq!(device.acked.len(), 2);
    answer(&mut sim, &mut device, 2);
    device.pump(&mut sim);
    let kept = device.link.unacknowledged();
    let before = sim.core.job(&job).unwrap();
    assert!(
        before.done_units < before.total_units,
        "the job is not done yet"
    );
    assert!(sim.core.uncommitted() > 0, "some results are not committed");
    let first_acked = device.acked[0];

    // The runtime dies: what was not committed is lost with the sockets.
    sim.crash();
    let lost = sim.core.job(&job).unwrap();
    assert!(
        lost.done_units < before.done_units,
        "the crash lost the uncommitted results: {} of {}",
        lost.done_units,
        before.done_units
    );
    device.link.on_close(sim.now, 0.5);
    sim.advance(1_000);
    // It reconnects; after the welcome it sends everything not acknowledged again, with the
    // tickets, before it has even answered its new benchmark.
    device.connect(&mut sim);
    let again = sim.core.job(&job).unwrap();
    assert_eq!(
        (again.done_units, again.chunks_done, &again.result),
        (before.done_units, before.chunks_done, &before.result),
        "the {kept} results sent again restored exactly what was accepted before the crash"
    );
    // An old result, sent again although it was committed long ago, changes nothing and is
    // acknowledged at once.
    let acked_before = device.acked.len();
    let stale = ToCoordinator::ChunkResult {
        lease_id: first_acked,
        result: shared_protocol::WorkResult::PrimeCount { count: 0 },
        compute_ms: 1,
        ticket: Some("A".repeat(43)),
    };
    sim.send(device.conn, &stale);
    device.pump(&mut sim);
    assert_eq!(device.acked.get(acked_before), Some(&first_acked));
    assert_eq!(sim.core.job(&job).unwrap().done_units, again.done_units);

    // The job finishes with the exact count: nothing counted twice, nothing missing.
    let mut rounds = 0;
    while sim.core.job(&job).unwrap().state != shared_protocol::JobState::Done {
        device.pump(&mut sim);
        sim.advance(500);
        device.compute(&mut sim);
        rounds += 1;
        assert!(rounds < 400, "the job did not finish");
    }
    let done = sim.core.job(&job).unwrap();
    assert_eq!(
        done.result,
        shared_protocol::JobResult::PrimeCount {
            count: kernels::primes::count_primes(0, hi)
        }
    );
    device.pump(&mut sim);
    assert_eq!(
        device.link.unacknowledged(),
        0,
        "everything acknowledged in the end"
    );
}

#[test]
fn a_result_that_waited_in_the_objects_queue_past_its_deadline_still_counts() {
    let (mut sim, mut device) = sim_with_device();
    let job = submit(&mut sim, 1 << 40);
    device.pump(&mut sim);
    let held = std::mem::take(&mut device.leases);
    assert!(held.len() >= 2, "{held:?}");
    // The device computes every lease and sends the results at once, but the object is slow:
    // they wait in its queue while the leases' deadlines pass (the device heartbeats).
    let queued: Vec<(Work, ToCoordinator)> = held
        .iter()
        .map(|(lease_id, work)| {
            let result = client_compute::compute(work).expect("computable work");
            let message = device.link.chunk_result(sim.now, *lease_id, result, 1);
            (work.clone(), message)
        })
        .collect();
    // 30 s: past every deadline, before the device would send them again.
    for _ in 0..3 {
        sim.advance(10_000);
        sim.send(device.conn, &ToCoordinator::Heartbeat { seen: None });
    }
    // The leases expired; the device, on probation, was given one lease again.
    device.pump(&mut sim);
    let range = |work: &Work| match work {
        Work::PrimeCount { lo, hi } => (*lo, *hi),
        other => panic!("{other:?}"),
    };
    // On probation it holds one lease at a time: the last one it was given (an earlier one
    // given while the results waited expired too).
    let again: Vec<(u64, (u64, u64))> = std::mem::take(&mut device.leases)
        .last()
        .map(|(id, w)| (*id, range(w)))
        .into_iter()
        .collect();
    assert!(!again.is_empty(), "the device works again");
    // Out again: a range goes out again whole or in part (from its start, as the device's
    // halved rate now sizes it), so the new lease lies within one late result.
    let within = |work: &Work| {
        let (lo, hi) = range(work);
        again
            .iter()
            .filter(move |(_, (a, b))| lo <= *a && *b <= hi)
            .map(|(id, _)| *id)
    };
    let replaced: Vec<u64> = queued.iter().flat_map(|(w, _)| within(w)).collect();
    assert_eq!(
        replaced.len(),
        again.len(),
        "{again:?} lies within the late work"
    );
    let units = |work: &Work| range(work).1 - range(work).0;
    let expected = (
        queued.iter().map(|(w, _)| units(w)).sum::<u64>(),
        queued.len() as u64,
    );
    let before = sim.core.job(&job).unwrap();
    assert_eq!(before.done_units, 0, "nothing counted yet");
    for (_, message) in &queued {
        sim.send(device.conn, message);
    }
    let after = sim.core.job(&job).unwrap();
    assert_eq!(
        (after.done_units, after.chunks_done),
        expected,
        "every late result counts, the one whose work went out again too"
    );
    let cancelled = cancelled(&mut sim, &device);
    assert_eq!(
        cancelled, replaced,
        "the lease given out again is withdrawn"
    );
    assert_eq!(sim.core.counters().results_unused, 0);
    // The same result again changes nothing, and is counted as unused.
    sim.send(device.conn, &queued[0].1);
    assert_eq!(sim.core.job(&job).unwrap().chunks_done, expected.1);
    assert_eq!(sim.core.counters().results_unused, 1);
    sim.advance(2_000);
    device.pump(&mut sim);
    assert_eq!(device.link.unacknowledged(), 0, "all acknowledged");
}

/// The lease ids a device was told to stop, from what it was sent since it last read.
fn cancelled(sim: &mut Sim, device: &Device) -> Vec<u64> {
    sim.take(device.conn)
        .into_iter()
        .filter_map(|m| match m {
            ToClient::CancelLease { lease_id } => Some(lease_id),
            _ => None,
        })
        .collect()
}

#[test]
fn while_the_object_is_busy_a_lease_outlives_its_deadline_by_the_queueing_grace() {
    for busy in [false, true] {
        // Busy: as many messages in the last second as the budget (here 5).
        let mut sim = Sim::with_config(Config {
            commit_interval_ms: 2_000,
            results_per_second_budget: 5,
            ..Config::default()
        });
        let mut device = Device::join(&mut sim, "d");
        sim.advance(20_000);
        device.compute(&mut sim); // the benchmark
        submit(&mut sim, 1 << 40);
        device.pump(&mut sim);
        let held: Vec<u64> = std::mem::take(&mut device.leases)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert!(!held.is_empty());
        // 20 s, past every deadline (at most 12 s here), heartbeating: 6.7 a second while
        // busy, every 5 s otherwise.
        let step = if busy { 150 } else { 5_000 };
        for _ in 0..20_000 / step {
            sim.advance(step);
            sim.send(device.conn, &ToCoordinator::Heartbeat { seen: None });
        }
        let stopped = cancelled(&mut sim, &device);
        let expired = sim.core.counters().leases_expired;
        if !busy {
            assert!(
                held.iter().all(|id| stopped.contains(id)),
                "a quiet object expires leases at their deadline: {held:?}, {stopped:?}"
            );
            assert!(expired >= held.len() as u64, "{expired} counted");
            continue;
        }
        assert!(stopped.is_empty(), "busy: {stopped:?}");
        assert_eq!(expired, 0);
        assert_eq!(sim.core.queue_grace(), 50_000);
        // Quiet again: the grace shrinks at an alarm, and the leases, never answered, expire.
        for _ in 0..7 {
            sim.advance(10_000);
            sim.send(device.conn, &ToCoordinator::Heartbeat { seen: None });
        }
        let stopped = cancelled(&mut sim, &device);
        assert!(
            held.iter().all(|id| stopped.contains(id)),
            "{held:?}, {stopped:?}"
        );
        assert_eq!(sim.core.queue_grace(), 0);
    }
}
