//! The agent's work: a queue of leases ([`Queue`], plain bookkeeping) and the worker threads
//! that compute them with the shared kernels ([`Pool`]). Which thread may start a lease when is
//! the shared [`Pacer`]'s to say (the coordinator's share: workers and duty-cycle rests).
//!
//! Every connection is an *epoch*. A reconnect starts a new one and forgets the old one's
//! queued and running leases (the coordinator re-queues them), so a result computed for an
//! older connection is never sent on a newer one. Results also pass through
//! [`Queue::finish`] on the socket thread, which handles `cancel_lease` too, so a cancelled
//! lease's result is never sent.

use std::collections::{HashSet, VecDeque};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use client::pace::Pacer;
use shared_protocol::{Work, WorkResult};

use crate::workloads::Workloads;

/// A lease handed to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub epoch: u64,
    pub lease_id: u64,
    pub work: Work,
    /// The benchmark lease: it runs at once and leaves no rest.
    pub bench: bool,
}

/// What `cancel_lease` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// It was waiting: dropped before any work was spent on it.
    Queued,
    /// A worker is on it: its result will not be sent.
    Running,
    /// Not held (already answered, or from an earlier connection).
    Unknown,
}

/// The leases of the current connection: waiting, and running on a worker.
#[derive(Debug, Default)]
pub struct Queue {
    epoch: u64,
    pending: VecDeque<(u64, Work, bool)>,
    running: HashSet<u64>,
    cancelled: HashSet<u64>,
}

impl Queue {
    /// Leases waiting for a worker.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Leases a worker is computing (and whose result is still wanted).
    pub fn running(&self) -> usize {
        self.running.len() - self.cancelled.len()
    }

    /// Queues a lease (`bench`: the benchmark). A lease already held is not queued twice
    /// (returns false).
    pub fn push(&mut self, lease_id: u64, work: Work, bench: bool) -> bool {
        if self.running.contains(&lease_id) || self.pending.iter().any(|(id, _, _)| *id == lease_id)
        {
            return false;
        }
        self.pending.push_back((lease_id, work, bench));
        true
    }

    /// Whether the oldest waiting lease is the benchmark (`None`: nothing waits).
    pub fn next_is_bench(&self) -> Option<bool> {
        self.pending.front().map(|(_, _, bench)| *bench)
    }

    /// The oldest waiting lease, now running.
    pub fn take(&mut self) -> Option<Task> {
        let (lease_id, work, bench) = self.pending.pop_front()?;
        self.running.insert(lease_id);
        Some(Task {
            epoch: self.epoch,
            lease_id,
            work,
            bench,
        })
    }

    /// The coordinator withdrew a lease.
    pub fn cancel(&mut self, lease_id: u64) -> Cancelled {
        if let Some(at) = self.pending.iter().position(|(id, _, _)| *id == lease_id) {
            self.pending.remove(at);
            Cancelled::Queued
        } else if self.running.contains(&lease_id) && self.cancelled.insert(lease_id) {
            Cancelled::Running
        } else {
            Cancelled::Unknown
        }
    }

    /// A worker finished `lease_id` (taken in `epoch`). True when its result should be sent:
    /// it was neither cancelled nor taken on an earlier connection.
    pub fn finish(&mut self, epoch: u64, lease_id: u64) -> bool {
        if epoch != self.epoch || !self.running.remove(&lease_id) {
            return false;
        }
        !self.cancelled.remove(&lease_id)
    }

    /// A new connection: forgets every lease of the old one. Returns how many were dropped
    /// (waiting plus running).
    pub fn reset(&mut self) -> usize {
        let dropped = self.pending.len() + self.running();
        self.epoch += 1;
        self.pending.clear();
        self.running.clear();
        self.cancelled.clear();
        dropped
    }
}

/// Computes one lease with the shared kernels. `None` for work they refuse (a range beyond
/// their limit), which the coordinator never hands out.
pub fn compute(work: &Work) -> Option<WorkResult> {
    client_compute::compute(work).ok()
}

/// A computed lease, on its way to the socket thread.
#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    pub epoch: u64,
    pub lease_id: u64,
    pub work: Work,
    /// `None` when the kernel refused the work.
    pub result: Option<WorkResult>,
    pub compute_ms: u64,
}

struct Shared {
    queue: Queue,
    pacer: Pacer,
    /// The pacer's clock: milliseconds since the pool started.
    epoch: Instant,
    shutdown: bool,
}

impl Shared {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Worker threads fed from one [`Queue`]; thread `i` is the pacer's worker `i`.
pub struct Pool {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `workers` threads; each computed lease is sent on `done`. Workload leases run
    /// on `workloads`.
    pub fn start(workers: usize, done: mpsc::Sender<Done>, workloads: Arc<Workloads>) -> Self {
        let workers = workers.max(1);
        let shared = Arc::new((
            Mutex::new(Shared {
                queue: Queue::default(),
                pacer: Pacer::new(workers),
                epoch: Instant::now(),
                shutdown: false,
            }),
            Condvar::new(),
        ));
        let workers = (0..workers)
            .map(|i| {
                let shared = Arc::clone(&shared);
                let done = done.clone();
                let workloads = Arc::clone(&workloads);
                std::thread::Builder::new()
                    .name(format!("worker-{i}"))
                    .spawn(move || work_loop(i, &shared, &done, &workloads))
                    .expect("spawning a worker thread")
            })
            .collect();
        Self { shared, workers }
    }

    /// The coordinator's share changed: at most `workers` threads compute, each `duty_percent`
    /// of the time.
    pub fn set_share(&self, workers: usize, duty_percent: u8) {
        self.lock().pacer.set_share(workers, duty_percent);
        self.shared.1.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn push(&self, lease_id: u64, work: Work, bench: bool) -> bool {
        let queued = self.lock().queue.push(lease_id, work, bench);
        // Only the pacer's chosen worker may take it: wake them all to ask.
        self.shared.1.notify_all();
        queued
    }

    pub fn cancel(&self, lease_id: u64) -> Cancelled {
        self.lock().queue.cancel(lease_id)
    }

    pub fn finish(&self, epoch: u64, lease_id: u64) -> bool {
        self.lock().queue.finish(epoch, lease_id)
    }

    pub fn reset(&self) -> usize {
        self.lock().queue.reset()
    }

    /// (waiting, running) leases.
    pub fn load(&self) -> (usize, usize) {
        let shared = self.lock();
        (shared.queue.pending(), shared.queue.running())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.lock().shutdown = true;
        self.shared.1.notify_all();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn work_loop(
    index: usize,
    shared: &(Mutex<Shared>, Condvar),
    done: &mpsc::Sender<Done>,
    workloads: &Workloads,
) {
    let (lock, wake) = shared;
    loop {
        let task = {
            let mut state = lock.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if state.shutdown {
                    return;
                }
                let now = state.now();
                let ready = state
                    .queue
                    .next_is_bench()
                    .is_some_and(|bench| state.pacer.may_start(index, now, bench));
                if ready {
                    if let Some(task) = state.queue.take() {
                        state.pacer.start(index);
                        break task;
                    }
                }
                // Asleep until a lease arrives or the share changes, or a rest ends.
                state = match state.pacer.wake_at(now) {
                    Some(at) => {
                        let rest = std::time::Duration::from_millis(at.saturating_sub(now));
                        wake.wait_timeout(state, rest)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                    None => wake.wait(state).unwrap_or_else(PoisonError::into_inner),
                };
            }
        };
        let started = Instant::now();
        let result = match &task.work {
            Work::Workload { .. } => workloads
                .run(task.lease_id, &task.work)
                .map_err(|why| println!("lease {}: {why}", task.lease_id))
                .ok(),
            _ => compute(&task.work),
        };
        let compute_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        {
            let mut state = lock.lock().unwrap_or_else(PoisonError::into_inner);
            let now = state.now();
            state.pacer.finish(index, now, compute_ms, task.bench);
        }
        wake.notify_all();
        let sent = done.send(Done {
            epoch: task.epoch,
            lease_id: task.lease_id,
            work: task.work,
            result,
            compute_ms,
        });
        if sent.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn test_workloads() -> Arc<Workloads> {
        let tls = crate::session::tls_config(None).unwrap();
        Arc::new(Workloads::new(
            "http://127.0.0.1:9/api/swarms/none".into(),
            tls,
        ))
    }

    fn primes(lo: u64, hi: u64) -> Work {
        Work::PrimeCount { lo, hi }
    }

    #[test]
    fn leases_run_in_order_and_are_answered_once() {
        let mut q = Queue::default();
        assert!(q.push(1, primes(0, 10), false));
        assert!(q.push(2, primes(10, 20), false));
        assert!(!q.push(1, primes(0, 10), false), "a lease is held once");
        let task = q.take().unwrap();
        assert_eq!((task.lease_id, task.epoch), (1, 0));
        assert!(!q.push(1, primes(0, 10), false), "nor while it runs");
        assert_eq!((q.pending(), q.running()), (1, 1));
        assert!(q.finish(0, 1));
        assert!(!q.finish(0, 1), "only once");
        assert_eq!(q.take().unwrap().lease_id, 2);
        assert_eq!(q.take(), None);
    }

    #[test]
    fn a_cancelled_lease_is_dropped_or_its_result_withheld() {
        let mut q = Queue::default();
        q.push(1, primes(0, 10), false);
        q.push(2, primes(10, 20), false);
        q.take();
        assert_eq!(q.cancel(2), Cancelled::Queued);
        assert_eq!(q.take(), None, "the queued lease is gone");
        assert_eq!(q.cancel(1), Cancelled::Running);
        assert_eq!(q.cancel(1), Cancelled::Unknown);
        assert_eq!(q.running(), 0);
        assert!(!q.finish(0, 1), "a cancelled result is not sent");
        assert_eq!(q.cancel(7), Cancelled::Unknown);
        assert_eq!((q.pending(), q.running()), (0, 0));
    }

    #[test]
    fn a_reconnect_forgets_the_old_connections_work() {
        let mut q = Queue::default();
        q.push(1, primes(0, 10), false);
        q.push(2, primes(10, 20), false);
        q.push(3, primes(20, 30), false);
        let old = q.take().unwrap();
        q.cancel(3);
        assert_eq!(q.reset(), 2);
        assert_eq!(q.take(), None);
        assert!(!q.finish(old.epoch, old.lease_id), "stale result dropped");
        // The same lease may be handed out again on the new connection.
        assert!(q.push(1, primes(0, 10), false));
        let again = q.take().unwrap();
        assert_eq!(again.epoch, 1);
        assert!(!q.finish(old.epoch, 1));
        assert!(q.finish(again.epoch, 1));
    }

    #[test]
    fn the_kernel_answers_leases() {
        assert_eq!(
            compute(&primes(0, 100)),
            Some(WorkResult::PrimeCount { count: 25 })
        );
        assert_eq!(compute(&primes(0, u64::MAX)), None);
    }

    #[test]
    fn the_pool_computes_on_worker_threads() {
        let (tx, rx) = mpsc::channel();
        let pool = Pool::start(2, tx, test_workloads());
        for (id, (lo, hi)) in [(1, (0, 1000)), (2, (1000, 2000)), (3, (2000, 3000))] {
            assert!(pool.push(id, primes(lo, hi), false));
        }
        let mut total = 0;
        for _ in 0..3 {
            let done = rx.recv_timeout(Duration::from_secs(30)).unwrap();
            assert!(pool.finish(done.epoch, done.lease_id));
            let Some(WorkResult::PrimeCount { count }) = done.result else {
                panic!("{done:?}")
            };
            total += count;
        }
        assert_eq!(total, 430, "π(3000)");
        assert_eq!(pool.load(), (0, 0));
        drop(pool);
    }

    #[test]
    fn the_pool_computes_only_what_its_share_allows_but_always_the_benchmark() {
        let (tx, rx) = mpsc::channel();
        let pool = Pool::start(2, tx, test_workloads());
        pool.set_share(0, 100);
        assert!(pool.push(1, primes(0, 100), true));
        let bench = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(bench.lease_id, 1, "the benchmark runs whatever the share");
        assert!(pool.finish(bench.epoch, 1));
        assert!(pool.push(2, primes(0, 1000), false));
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "a share of nothing starts no job lease"
        );
        assert_eq!(pool.load(), (1, 0));
        pool.set_share(1, 100);
        let job = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(job.lease_id, 2);
        assert!(pool.finish(job.epoch, 2));
    }
}
