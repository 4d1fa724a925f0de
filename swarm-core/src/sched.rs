//! Weighted lease scheduling of a job's work units across devices.
//!
//! A job is a range of work units (numbers to sieve, image rows, nonces) of roughly equal cost.
//! Devices pull leases: each device may hold as many as its lent workers plus a prefetch, so no
//! worker idles between chunks. A chunk's size follows the device's measured per-worker rate so
//! that every chunk takes about `target_chunk_ms` everywhere, and shrinks at the tail so the
//! last chunks finish together. Faster devices are served first and, being faster, come back
//! sooner: work flows to devices in proportion to their measured speed.
//!
//! A lease has a deadline; an expired lease, or one whose device left, returns its range to the
//! front of the queue. A completion counts only from the lease holder and only once. When the
//! queue is empty, idle devices take speculative copies of the outstanding leases expected to
//! finish last; the first completion wins and the twin is cancelled.
//!
//! A range can be queued again as a *replica* ([`Scheduler::replicate`]), for the verifier
//! ([`crate::verify`]): an ordinary lease of the same range, served before new work, never to
//! a device that already answered it. A replica may be queued as soon as the range's first
//! lease goes out, and then runs alongside it: whichever answers first completes the range,
//! and the other answer is the replica's ([`Completion::Replica`]), which does not count as
//! progress. The job is finished only when no replica of a completed range is queued or out.
//!
//! A device's chunks take at least its workers ÷ its allowance of results per second
//! ([`SchedConfig::results_per_second`], plus [`SchedConfig::results_per_second_per_worker`]
//! for each of its workers), so that its results stay within its socket's message limit however
//! many cores it lends; and
//! every chunk takes at least all devices' workers ÷ [`SchedConfig::swarm_results_per_second`]
//! seconds, so that the swarm's results stay within what the object can handle however many
//! devices join: past that point chunks grow instead of messages.
//!
//! A device's rate is what the scheduler sees, never what the device says: the time from the
//! moment a lease could start (it was issued, and one of the device's workers was free) to its
//! result, and it may grow by at most [`MAX_RATE_GROWTH`] per result.
//!
//! Like the rest of the core, this never reads a clock: `now` is passed in.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::Millis;

/// Tuning of the scheduler. The defaults are the product's.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedConfig {
    /// Wall time a chunk should take on any device.
    pub target_chunk_ms: f64,
    pub min_chunk_units: u64,
    pub max_chunk_units: u64,
    /// Leases a device may hold beyond one per worker.
    pub prefetch: u32,
    /// A lease's deadline is this many times its expected duration (including the wait behind
    /// the device's other leases), and at least `min_deadline_ms`.
    pub deadline_factor: f64,
    pub min_deadline_ms: Millis,
    /// Weight of a new observation in the moving average of a device's rate.
    pub ewma_alpha: f64,
    /// Whether idle devices take speculative copies of the last outstanding leases.
    pub speculate: bool,
    /// Results a device may send per second (each worker's chunks take at least workers ÷
    /// this many seconds): below its socket's message limit.
    pub results_per_second: f64,
    /// How many more a device may send per second for each of its workers, up to
    /// `allowance_workers` workers: its socket's limit grows with the cores it lends.
    pub results_per_second_per_worker: f64,
    pub allowance_workers: u32,
    /// Results all devices together may send per second (each chunk takes at least the
    /// workers of all devices ÷ this many seconds): the object's own message budget.
    pub swarm_results_per_second: f64,
}

impl Default for SchedConfig {
    fn default() -> Self {
        Self {
            target_chunk_ms: 2_000.0,
            min_chunk_units: 1,
            max_chunk_units: u64::MAX,
            prefetch: 1,
            deadline_factor: 3.0,
            min_deadline_ms: 10_000,
            ewma_alpha: 0.3,
            speculate: true,
            results_per_second: 16.0,
            results_per_second_per_worker: 0.0,
            allowance_workers: 0,
            swarm_results_per_second: f64::INFINITY,
        }
    }
}

pub type LeaseId = u64;

/// One result may raise a device's estimated rate by at most this factor (the moving average
/// of an observation capped at [`OBSERVATION_CAP`] × the estimate): a device that answers
/// instantly gains speed, and with it larger chunks, only step by step.
pub const MAX_RATE_GROWTH: f64 = 1.0 + 0.3 * (OBSERVATION_CAP - 1.0);

/// The tail's chunks are at least this fraction (1 / it) of a chunk-time.
const TAIL_FLOOR: f64 = 8.0;

/// An observed rate counts for at most this many times the current estimate.
const OBSERVATION_CAP: f64 = 2.0;

/// A range of work units leased to a device until `deadline_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub id: LeaseId,
    pub device: String,
    pub lo: u64,
    pub hi: u64,
    pub issued_ms: Millis,
    pub deadline_ms: Millis,
    /// A copy of a lease another device still holds.
    pub speculative: bool,
    /// A replica of a range (see [`Scheduler::replicate`]).
    pub replica: bool,
    /// The caller drew whether to replicate it when it went out
    /// ([`Scheduler::mark_drawn`]); a lease restored after a restart was not.
    pub drawn: bool,
}

impl Lease {
    pub fn units(&self) -> u64 {
        self.hi.saturating_sub(self.lo)
    }
}

/// The outcome of [`Scheduler::complete`].
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// The first result for this range: keep it. `cancelled` are twins to withdraw.
    Accepted {
        lo: u64,
        hi: u64,
        cancelled: Vec<Lease>,
    },
    /// A replica's result: the range was completed before; the caller compares the answers.
    Replica { lo: u64, hi: u64 },
    /// The range was already completed (a twin won, or the same completion again).
    Duplicate,
    /// The lease exists but belongs to another device.
    NotHolder,
    /// No such lease (expired, cancelled, or never issued).
    Unknown,
}

#[derive(Debug, Clone)]
struct DeviceState {
    /// The device's id, shared with its entry in [`Scheduler::room`].
    name: Arc<str>,
    workers: u32,
    /// Measured units per millisecond per worker (moving average).
    rate: f64,
    enabled: bool,
    leases: BTreeSet<LeaseId>,
    /// Deadlines missed since the device last completed a lease. While non-zero the device is
    /// on probation: one lease at a time, served after everyone else.
    missed: u32,
    /// The device's entry in [`Scheduler::room`], while it has room.
    place: Option<Place>,
    /// What the device adds to [`Scheduler::throughput`] (nothing while disabled).
    counted: f64,
    /// Held back by the caller (too much of its work awaits verification): no new work, only
    /// replicas of others' results.
    held: bool,
    /// Its results are trusted (see [`Scheduler::set_trusted`]).
    trusted: bool,
    /// When its most recent results arrived (up to one per worker), newest last: a lease
    /// could start no earlier than the oldest of them, when a worker became free.
    done_at: VecDeque<Millis>,
}

impl DeviceState {
    fn quota(&self, prefetch: u32) -> u32 {
        if self.missed > 0 {
            1
        } else {
            self.workers.saturating_add(prefetch)
        }
    }

    fn has_room(&self, prefetch: u32) -> bool {
        self.enabled && self.workers > 0 && (self.leases.len() as u32) < self.quota(prefetch)
    }

    fn throughput(&self) -> f64 {
        if self.enabled {
            self.rate * f64::from(self.workers)
        } else {
            0.0
        }
    }

    /// Re-files the device after its workers, rate, leases, probation or enabled flag changed:
    /// moves its entry in `room` (the devices with room) and returns the change in its
    /// throughput, for [`Scheduler::recount`].
    fn refile(&mut self, room: &mut BTreeSet<Place>, prefetch: u32) -> f64 {
        let place = self.has_room(prefetch).then(|| Place {
            probation: self.missed > 0,
            load: self.leases.len() as f64 / f64::from(self.workers),
            rate: self.rate,
            device: Arc::clone(&self.name),
        });
        if place != self.place {
            if let Some(old) = &self.place {
                room.remove(old);
            }
            if let Some(new) = &place {
                room.insert(new.clone());
            }
            self.place = place;
        }
        let counted = self.throughput();
        counted - std::mem::replace(&mut self.counted, counted)
    }
}

/// A device with room, ordered as it is served: devices on probation last, then the least
/// loaded (leases per worker), then the fastest, then by id.
#[derive(Debug, Clone)]
struct Place {
    probation: bool,
    load: f64,
    rate: f64,
    device: Arc<str>,
}

impl Ord for Place {
    fn cmp(&self, other: &Self) -> Ordering {
        self.probation
            .cmp(&other.probation)
            .then(self.load.total_cmp(&other.load))
            .then(other.rate.total_cmp(&self.rate))
            .then_with(|| self.device.cmp(&other.device))
    }
}

impl PartialOrd for Place {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Place {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Place {}

/// A completed range waiting for a replica, the devices that may not take it (those that
/// answered it), and those passed over while others can take it (they let a replica of it
/// expire). It is for one device drawn at random (`pick`) among the others — trusted ones,
/// while any is there — so that whoever asks first (a fast liar) cannot choose which results
/// it confirms.
#[derive(Debug, Clone)]
struct Replica {
    lo: u64,
    hi: u64,
    exclude: Vec<String>,
    skipped: Vec<String>,
    pick: u64,
}

/// The ranges waiting for a lease, in the order they are handed out, and their total size.
#[derive(Debug, Clone, Default)]
struct Queue {
    ranges: VecDeque<(u64, u64)>,
    units: u64,
}

impl Queue {
    fn push_front(&mut self, (lo, hi): (u64, u64)) {
        self.units = self.units.saturating_add(hi.saturating_sub(lo));
        self.ranges.push_front((lo, hi));
    }

    fn push_back(&mut self, (lo, hi): (u64, u64)) {
        self.units = self.units.saturating_add(hi.saturating_sub(lo));
        self.ranges.push_back((lo, hi));
    }

    fn pop_front(&mut self) -> Option<(u64, u64)> {
        let (lo, hi) = self.ranges.pop_front()?;
        self.units = self.units.saturating_sub(hi.saturating_sub(lo));
        Some((lo, hi))
    }

    fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    #[cfg(test)]
    fn iter(&self) -> impl Iterator<Item = &(u64, u64)> {
        self.ranges.iter()
    }
}

/// The leases a speculative copy may be made of, ranked for one poll (see
/// `Scheduler::copyable`), and the fewest units among them.
struct Copyable {
    leases: Vec<Candidate>,
    least_units: u64,
}

struct Candidate {
    id: LeaseId,
    lo: u64,
    hi: u64,
    expected_end: f64,
}

impl Candidate {
    fn units(&self) -> u64 {
        self.hi.saturating_sub(self.lo)
    }
}

/// The scheduler of one job (or of a queue of jobs' units laid end to end).
///
/// Besides the devices and leases it keeps what each operation would otherwise recompute from
/// all of them, so that leasing and completing cost O(log n) in devices and leases: the
/// devices with room in serving order, the swarm's throughput as a running sum, the queued
/// units, and the leases by range (to find twins) and by deadline.
#[derive(Debug, Clone)]
pub struct Scheduler {
    config: SchedConfig,
    devices: BTreeMap<String, DeviceState>,
    /// The devices that may take another lease, in the order they are served.
    room: BTreeSet<Place>,
    /// Σ rate × workers over the enabled devices.
    throughput: f64,
    /// Changes added to `throughput` since it was last summed afresh, and the largest it has
    /// been since.
    recounts: usize,
    peak_throughput: f64,
    pending: Queue,
    leases: BTreeMap<LeaseId, Lease>,
    /// Outstanding leases by `(lo, hi, id)`: a lease's twins are its neighbours.
    by_range: BTreeSet<(u64, u64, LeaseId)>,
    by_deadline: BTreeSet<(Millis, LeaseId)>,
    completed: BTreeSet<(u64, u64)>,
    /// Replicas waiting, by the device drawn for each when it was queued (`None`: no device
    /// may take it now), served before new work; the device each queued range waits for; and
    /// the replicas out (by lease).
    replicas: BTreeMap<Option<String>, VecDeque<Replica>>,
    replica_for: BTreeMap<(u64, u64), Option<String>>,
    replicas_out: BTreeMap<LeaseId, Replica>,
    /// The replicas out, by `(lo, hi, id)`.
    out_by_range: BTreeSet<(u64, u64, LeaseId)>,
    total_units: u64,
    done_units: u64,
    next_lease: LeaseId,
    /// Σ workers over the devices known, enabled or not.
    total_workers: u64,
}

impl Scheduler {
    pub fn new(config: SchedConfig) -> Self {
        Self {
            config,
            devices: BTreeMap::new(),
            room: BTreeSet::new(),
            throughput: 0.0,
            recounts: 0,
            peak_throughput: 0.0,
            pending: Queue::default(),
            leases: BTreeMap::new(),
            by_range: BTreeSet::new(),
            by_deadline: BTreeSet::new(),
            completed: BTreeSet::new(),
            replicas: BTreeMap::new(),
            replica_for: BTreeMap::new(),
            replicas_out: BTreeMap::new(),
            out_by_range: BTreeSet::new(),
            total_units: 0,
            done_units: 0,
            next_lease: 1,
            total_workers: 0,
        }
    }

    /// Adds a device, or updates its workers (lent cores × throttle). `rate_hint` (units per ms
    /// per worker, from the benchmark) seeds the rate of a new device only.
    pub fn set_device(&mut self, device: &str, workers: u32, rate_hint: f64) {
        let rate = rate_hint.max(f64::MIN_POSITIVE);
        let before = self.devices.get(device).map_or(0, |d| d.workers);
        self.total_workers = self
            .total_workers
            .saturating_sub(u64::from(before))
            .saturating_add(u64::from(workers));
        let state = self
            .devices
            .entry(device.to_owned())
            .and_modify(|d| d.workers = workers)
            .or_insert_with(|| DeviceState {
                name: device.into(),
                workers,
                rate,
                enabled: true,
                leases: BTreeSet::new(),
                missed: 0,
                place: None,
                counted: 0.0,
                held: false,
                trusted: false,
                done_at: VecDeque::new(),
            });
        let change = state.refile(&mut self.room, self.config.prefetch);
        self.recount(change);
        // Replicas nobody could take may now have a device; a device lending no workers has
        // its replicas drawn again.
        self.replan(None);
        if workers == 0 {
            self.replan(Some(device.to_owned()));
        }
    }

    /// A disabled device keeps its leases but gets no new ones.
    pub fn set_enabled(&mut self, device: &str, enabled: bool) {
        if let Some(state) = self.devices.get_mut(device) {
            state.enabled = enabled;
            let change = state.refile(&mut self.room, self.config.prefetch);
            self.recount(change);
            self.replan(if enabled {
                None
            } else {
                Some(device.to_owned())
            });
        }
    }

    /// Holds a device back (no new work, only replicas) or lets it go on; it keeps the leases
    /// it has.
    pub fn set_held(&mut self, device: &str, held: bool) {
        if let Some(state) = self.devices.get_mut(device) {
            state.held = held;
            let change = state.refile(&mut self.room, self.config.prefetch);
            self.recount(change);
        }
    }

    /// Marks a device as trusted (or not): replicas go to trusted devices while any can take
    /// them.
    pub fn set_trusted(&mut self, device: &str, trusted: bool) {
        if let Some(state) = self.devices.get_mut(device) {
            state.trusted = trusted;
        }
    }

    /// Queues a replica of the range `[lo, hi)`, completed or still leased: an ordinary lease
    /// of it for a device not in `exclude` (the devices whose answers for it stand), drawn
    /// with the random number `pick`. `exclude` replaces what a replica of the range already
    /// queued or out excluded: answers dropped since (their range was computed again) no
    /// longer bar their devices. A replica out to a device not in `exclude` is kept, and none
    /// is queued.
    ///
    /// A replica of a range not completed yet runs alongside its first lease: whichever
    /// answers first completes the range ([`Completion::Accepted`]) and the other becomes its
    /// replica ([`Completion::Replica`]).
    pub fn replicate(&mut self, lo: u64, hi: u64, exclude: Vec<String>, pick: u64) {
        let out: Vec<LeaseId> = self
            .out_by_range
            .range((lo, hi, LeaseId::MIN)..=(lo, hi, LeaseId::MAX))
            .map(|(_, _, id)| *id)
            .collect();
        let mut kept = false;
        for id in out {
            if let Some(replica) = self.replicas_out.get_mut(&id) {
                replica.exclude.clone_from(&exclude);
            }
            kept |= self
                .leases
                .get(&id)
                .is_some_and(|lease| !exclude.contains(&lease.device));
        }
        if kept {
            return;
        }
        let same = |r: &Replica| {
            r.exclude.len() == exclude.len() && exclude.iter().all(|x| r.exclude.contains(x))
        };
        let queued = self
            .replica_for
            .get(&(lo, hi))
            .and_then(|device| self.replicas.get(device))
            .and_then(|queue| queue.iter().find(|r| (r.lo, r.hi) == (lo, hi)));
        if queued.is_some_and(same) {
            return; // it keeps its place in the queue
        }
        let replica = match self.take_queued_replica((lo, hi)) {
            Some(queued) => Replica { exclude, ..queued },
            None => Replica {
                lo,
                hi,
                exclude,
                skipped: Vec::new(),
                pick,
            },
        };
        self.place(replica);
    }

    /// Queues a replica for the device drawn for it now (or for none). If one is queued for
    /// the same range already, that one stays (with both lists of devices that let it expire).
    fn place(&mut self, mut replica: Replica) {
        if let Some(mut queued) = self.take_queued_replica((replica.lo, replica.hi)) {
            for device in replica.skipped {
                if !queued.skipped.contains(&device) {
                    queued.skipped.push(device);
                }
            }
            replica = queued;
        }
        let mut device = self.designated(&replica).map(str::to_owned);
        if device.is_none() && !replica.skipped.is_empty() {
            // Nobody else can take it: those that let it expire get another chance.
            replica.skipped.clear();
            device = self.designated(&replica).map(str::to_owned);
        }
        self.replica_for
            .insert((replica.lo, replica.hi), device.clone());
        self.replicas.entry(device).or_default().push_back(replica);
    }

    /// Takes a range's queued replica out of the queues.
    fn take_queued_replica(&mut self, range: (u64, u64)) -> Option<Replica> {
        let device = self.replica_for.remove(&range)?;
        let queue = self.replicas.get_mut(&device)?;
        let at = queue.iter().position(|r| (r.lo, r.hi) == range)?;
        let replica = queue.remove(at);
        if queue.is_empty() {
            self.replicas.remove(&device);
        }
        replica
    }

    /// Draws a device again for every replica queued for `device` (or for none).
    fn replan(&mut self, device: Option<String>) {
        let Some(queue) = self.replicas.remove(&device) else {
            return;
        };
        for replica in queue {
            self.replica_for.remove(&(replica.lo, replica.hi));
            self.place(replica);
        }
    }

    /// In the tail (nothing new to lease), replicas waiting for a device without an idle
    /// worker are drawn again, so that a trusted device with an idle worker may take them now
    /// rather than they wait behind another device's leases.
    fn replan_waiting(&mut self) {
        let idle = |d: &DeviceState| d.trusted && (d.leases.len() as u64) < u64::from(d.workers);
        if !self.devices.values().any(idle) {
            return;
        }
        let waiting: Vec<Option<String>> = self
            .replicas
            .keys()
            .filter(|device| {
                device
                    .as_ref()
                    .and_then(|d| self.devices.get(d))
                    .is_some_and(|d| !idle(d))
            })
            .cloned()
            .collect();
        for device in waiting {
            self.replan(device);
        }
    }

    /// The device a replica is for: drawn by its `pick` among the devices that may take it (not
    /// excluded, enabled, lending workers), the trusted ones while there are any.
    fn designated(&self, replica: &Replica) -> Option<&str> {
        let eligible = || {
            self.devices.iter().filter(|(name, d)| {
                d.enabled
                    && d.workers > 0
                    && !replica.exclude.iter().any(|x| x == *name)
                    && !replica.skipped.iter().any(|x| x == *name)
            })
        };
        // Trusted devices with an idle worker (the replica starts at once), else trusted ones,
        // else any. Untrusted devices are not preferred for being idle: a fast liar always is.
        let tiers: [fn(&DeviceState) -> bool; 3] = [
            |d| d.trusted && (d.leases.len() as u64) < u64::from(d.workers),
            |d| d.trusted,
            |_| true,
        ];
        let tier = tiers
            .into_iter()
            .find(|tier| eligible().any(|(_, d)| tier(d)))?;
        let count = eligible().filter(|(_, d)| tier(d)).count();
        let at = usize::try_from(replica.pick.checked_rem(count as u64)?).ok()?;
        eligible()
            .filter(|(_, d)| tier(d))
            .nth(at)
            .map(|(name, _)| name.as_str())
    }

    /// The holder of the oldest lease of exactly this range (for a speculative copy: the
    /// device it copies).
    pub fn first_holder(&self, range: (u64, u64)) -> Option<&str> {
        self.twins(range)
            .next()
            .and_then(|id| self.leases.get(&id))
            .map(|lease| lease.device.as_str())
    }

    /// Records that the caller drew, as the lease went out, whether to replicate it.
    pub fn mark_drawn(&mut self, id: LeaseId) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.drawn = true;
        }
    }

    /// The holders of a range's replicas out.
    fn replicas_out_of(&self, (lo, hi): (u64, u64)) -> impl Iterator<Item = &str> + '_ {
        self.out_by_range
            .range((lo, hi, LeaseId::MIN)..=(lo, hi, LeaseId::MAX))
            .filter_map(|(_, _, id)| self.leases.get(id))
            .map(|lease| lease.device.as_str())
    }

    /// Whether a replica of the range is queued, or out to a device other than those that
    /// `answered` it: their answers will be compared with another.
    pub fn is_replicated(&self, range: (u64, u64), answered: &[String]) -> bool {
        self.replica_for.contains_key(&range)
            || self
                .replicas_out_of(range)
                .any(|holder| !answered.iter().any(|a| a == holder))
    }

    /// Before `device` completes a range it holds: another device's twin of it (a lease of the
    /// same range, still running) becomes the range's replica instead of being cancelled, so
    /// that the answer is compared without a new lease. `false` if there is none.
    pub fn adopt_twin(&mut self, (lo, hi): (u64, u64), device: &str, pick: u64) -> bool {
        let twin = self
            .twins((lo, hi))
            .find(|id| self.leases.get(id).is_some_and(|l| l.device != device));
        let Some(id) = twin else {
            return false;
        };
        self.turn_into_replica(id, (lo, hi), device, pick);
        true
    }

    /// A lease of `range` still running becomes the range's replica, answering `device`'s
    /// answer: it leaves the twins and is recorded as a replica out.
    fn turn_into_replica(&mut self, id: LeaseId, (lo, hi): (u64, u64), device: &str, pick: u64) {
        self.by_range.remove(&(lo, hi, id));
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.replica = true;
        }
        self.send_out(
            id,
            Replica {
                lo,
                hi,
                exclude: vec![device.to_owned()],
                skipped: Vec::new(),
                pick,
            },
        );
    }

    /// Whether a replica of the range is on its way to a device that has not `answered` it:
    /// out to one, queued for one, or queued for none because no such device could take it.
    pub fn replica_on_its_way(&self, range: (u64, u64), answered: &[String]) -> bool {
        let fresh = |device: &str| !answered.iter().any(|a| a == device);
        if self.replicas_out_of(range).any(fresh) {
            return true;
        }
        match self.replica_for.get(&range) {
            Some(Some(device)) => fresh(device),
            Some(None) => !self
                .devices
                .iter()
                .any(|(name, d)| d.enabled && d.workers > 0 && fresh(name)),
            None => false,
        }
    }

    /// Records a replica as out under this lease.
    fn send_out(&mut self, id: LeaseId, replica: Replica) {
        self.out_by_range.insert((replica.lo, replica.hi, id));
        self.replicas_out.insert(id, replica);
    }

    /// Takes the replica out under this lease, if it is one.
    fn take_out(&mut self, id: LeaseId) -> Option<Replica> {
        let replica = self.replicas_out.remove(&id)?;
        self.out_by_range.remove(&(replica.lo, replica.hi, id));
        Some(replica)
    }

    /// Ranges whose replica no device can take now (every device that could has answered
    /// them), among the completed ones.
    pub fn stranded(&self) -> Vec<(u64, u64)> {
        self.replicas
            .get(&None)
            .map(|queue| {
                queue
                    .iter()
                    .map(|r| (r.lo, r.hi))
                    .filter(|range| self.completed.contains(range))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drops a range's queued replica (its question was settled otherwise).
    pub fn drop_replica(&mut self, lo: u64, hi: u64) {
        self.take_queued_replica((lo, hi));
    }

    /// Replicas of completed ranges, queued or out: answers that wait for comparison.
    /// (Replicas of ranges not completed yet are work like any lease; a job that needs no
    /// more of its units does not wait for them.)
    pub fn replicas_pending(&self) -> usize {
        let queued = self
            .replica_for
            .keys()
            .filter(|range| self.completed.contains(range));
        let out = self
            .out_by_range
            .iter()
            .filter(|(lo, hi, _)| self.completed.contains(&(*lo, *hi)));
        queued.count().saturating_add(out.count())
    }

    /// The device left (disconnect, OFFLINE, removal): its leases are withdrawn and their ranges
    /// go back to the front of the queue.
    pub fn remove_device(&mut self, device: &str) -> Vec<Lease> {
        let Some(state) = self.devices.remove(device) else {
            return Vec::new();
        };
        self.total_workers = self.total_workers.saturating_sub(u64::from(state.workers));
        if let Some(place) = &state.place {
            self.room.remove(place);
        }
        self.recount(-state.counted);
        let withdrawn = state
            .leases
            .iter()
            .filter_map(|id| self.withdraw(*id))
            .collect();
        self.replan(Some(device.to_owned()));
        withdrawn
    }

    /// Appends `units` more work units to the queue.
    pub fn add_work(&mut self, units: u64) {
        if units > 0 {
            let end = self.total_units.saturating_add(units);
            self.pending.push_back((self.total_units, end));
            self.total_units = end;
        }
    }

    /// Marks units `[lo, hi)` as already done (restoring a job after a restart): they leave
    /// the queue and count as completed (and can be [`redone`](Scheduler::redo) as a whole).
    pub fn mark_done(&mut self, lo: u64, hi: u64) {
        if lo < hi {
            self.completed.insert((lo, hi));
        }
        let mut kept = Queue::default();
        for (a, b) in std::mem::take(&mut self.pending).ranges {
            let (cut_lo, cut_hi) = (a.max(lo), b.min(hi));
            if cut_lo >= cut_hi {
                kept.push_back((a, b));
                continue;
            }
            self.done_units = self
                .done_units
                .saturating_add(cut_hi.saturating_sub(cut_lo));
            if a < cut_lo {
                kept.push_back((a, cut_lo));
            }
            if cut_hi < b {
                kept.push_back((cut_hi, b));
            }
        }
        self.pending = kept;
    }

    /// A completed range turned out untrustworthy (its device was quarantined): it counts as
    /// not done again and goes to the front of the queue. `false` if it was not completed.
    pub fn redo(&mut self, lo: u64, hi: u64) -> bool {
        if !self.completed.remove(&(lo, hi)) {
            return false;
        }
        // A queued replica of it is moot now; one already out may answer it first again.
        self.take_queued_replica((lo, hi));
        self.done_units = self.done_units.saturating_sub(hi.saturating_sub(lo));
        self.pending.push_front((lo, hi));
        true
    }

    /// Gives back a lease issued before the object restarted (its holder's connection kept
    /// it): units `[lo, hi)` leave the queue and are leased to `device` again under a new id
    /// (returned), or — when another restored lease has exactly this range — become its
    /// speculative twin. `None` (nothing changes) when the device is unknown or the units are
    /// not all queued (done, or leased otherwise).
    pub fn restore_lease(
        &mut self,
        device: &str,
        lo: u64,
        hi: u64,
        issued_ms: Millis,
        deadline_ms: Millis,
    ) -> Option<LeaseId> {
        if lo >= hi || !self.devices.contains_key(device) {
            return None;
        }
        let speculative = if self.take_queued(lo, hi) {
            false
        } else if self.twins((lo, hi)).next().is_some() && !self.completed.contains(&(lo, hi)) {
            true
        } else {
            return None;
        };
        self.file(device, lo, hi, issued_ms, deadline_ms, speculative)
            .map(|lease| lease.id)
    }

    /// Completes units `[lo, hi)` without a lease: the result of a lease this scheduler no
    /// longer holds — issued before the object restarted, or withdrawn at its deadline while
    /// the result waited in the object's queue — whose issue the caller has checked (its
    /// ticket). Taken when no unit of it is done: each is queued, or out in a lease lying
    /// within it, which is withdrawn and returned, its holder to be told to stop (as when a
    /// twin wins). `None` (nothing changes) otherwise. No rate is observed: nobody knows when
    /// the work started.
    pub fn claim(&mut self, lo: u64, hi: u64) -> Option<Vec<Lease>> {
        let within = self.claimable(lo, hi)?;
        self.take_queued_within(lo, hi);
        let cancelled = within
            .into_iter()
            .filter_map(|id| self.drop_lease(id))
            .collect();
        self.completed.insert((lo, hi));
        self.done_units = self.done_units.saturating_add(hi.saturating_sub(lo));
        Some(cancelled)
    }

    /// Whether [`Self::claim`] would take `[lo, hi)` now.
    pub fn can_claim(&self, lo: u64, hi: u64) -> bool {
        self.claimable(lo, hi).is_some()
    }

    /// The leases out within `[lo, hi)`, if every unit of it is queued or in one of them.
    /// Completed ranges are disjoint, and so are leases other than twins (which share their
    /// range), so a range overlapping `lo` from below is the last one starting before it.
    fn claimable(&self, lo: u64, hi: u64) -> Option<Vec<LeaseId>> {
        if lo >= hi {
            return None;
        }
        let overlaps_from_below = |set: &BTreeSet<(u64, u64)>| {
            set.range(..(lo, 0))
                .next_back()
                .is_some_and(|&(_, end)| end > lo)
        };
        if overlaps_from_below(&self.completed)
            || self.completed.range((lo, 0)..(hi, 0)).next().is_some()
        {
            return None;
        }
        if self
            .by_range
            .range(..(lo, 0, 0))
            .next_back()
            .is_some_and(|&(_, end, _)| end > lo)
        {
            return None;
        }
        let mut within = Vec::new();
        let mut leased = 0u64;
        let mut last = None;
        for &(a, b, id) in self.by_range.range((lo, 0, 0)..(hi, 0, 0)) {
            if b > hi {
                return None;
            }
            if last != Some((a, b)) {
                leased = leased.saturating_add(b.saturating_sub(a));
                last = Some((a, b));
            }
            within.push(id);
        }
        let queued: u64 = self
            .pending
            .ranges
            .iter()
            .map(|&(a, b)| b.min(hi).saturating_sub(a.max(lo)))
            .sum();
        (leased.saturating_add(queued) == hi.saturating_sub(lo)).then_some(within)
    }

    /// Takes whatever of `[lo, hi)` is queued out of the queue, leaving the rest of each range.
    fn take_queued_within(&mut self, lo: u64, hi: u64) {
        let mut kept = VecDeque::with_capacity(self.pending.ranges.len().saturating_add(1));
        for (a, b) in self.pending.ranges.drain(..) {
            if b <= lo || hi <= a {
                kept.push_back((a, b));
                continue;
            }
            if a < lo {
                kept.push_back((a, lo));
            }
            if hi < b {
                kept.push_back((hi, b));
            }
        }
        self.pending.ranges = kept;
        self.pending.units = self
            .pending
            .ranges
            .iter()
            .map(|&(a, b)| b.saturating_sub(a))
            .sum();
    }

    /// Takes units `[lo, hi)` out of the queue if one queued range holds them all.
    fn take_queued(&mut self, lo: u64, hi: u64) -> bool {
        let Some(at) = self
            .pending
            .ranges
            .iter()
            .position(|&(a, b)| a <= lo && hi <= b)
        else {
            return false;
        };
        let Some((a, b)) = self.pending.ranges.remove(at) else {
            return false;
        };
        self.pending.units = self.pending.units.saturating_sub(hi.saturating_sub(lo));
        if hi < b {
            self.pending.ranges.insert(at, (hi, b));
        }
        if a < lo {
            self.pending.ranges.insert(at, (a, lo));
        }
        true
    }

    /// The leases a device holds, oldest first.
    pub fn leases_of<'a>(&'a self, device: &str) -> impl Iterator<Item = &'a Lease> + 'a {
        self.devices
            .get(device)
            .into_iter()
            .flat_map(|state| state.leases.iter())
            .filter_map(|id| self.leases.get(id))
    }

    /// The devices the scheduler knows.
    pub fn devices(&self) -> Vec<String> {
        self.devices.keys().cloned().collect()
    }

    /// Withdraws every lease (the job was stopped or cancelled); their ranges go back to the
    /// queue.
    pub fn withdraw_all(&mut self) -> Vec<Lease> {
        let ids: Vec<LeaseId> = self.leases.keys().copied().collect();
        ids.into_iter().filter_map(|id| self.withdraw(id)).collect()
    }

    /// `(completed units, total units)`.
    pub fn progress(&self) -> (u64, u64) {
        (self.done_units, self.total_units)
    }

    /// Units waiting to be leased (not counting replicas); none means the job is in its tail.
    pub fn queued_units(&self) -> u64 {
        self.pending.units
    }

    /// Every unit completed, and no replica queued or out.
    pub fn is_finished(&self) -> bool {
        self.done_units == self.total_units && self.replicas_pending() == 0
    }

    /// A device's measured rate, units per ms per worker.
    pub fn rate(&self, device: &str) -> Option<f64> {
        self.devices.get(device).map(|d| d.rate)
    }

    /// The lease with this id, while it is out.
    pub fn lease(&self, id: LeaseId) -> Option<&Lease> {
        self.leases.get(&id)
    }

    /// How many leases a device holds.
    pub fn in_flight(&self, device: &str) -> u32 {
        self.devices
            .get(device)
            .map_or(0, |d| u32::try_from(d.leases.len()).unwrap_or(u32::MAX))
    }

    /// A device's part of [`Scheduler::throughput`]: its rate times its workers while enabled.
    pub fn weight(&self, device: &str) -> f64 {
        self.devices
            .get(device)
            .map_or(0.0, DeviceState::throughput)
    }

    /// The devices' measured throughput (units per ms), for ETA and display.
    pub fn throughput(&self) -> f64 {
        self.throughput
    }

    /// The earliest lease deadline, for the caller's timer.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.by_deadline.first().map(|(deadline, _)| *deadline)
    }

    /// Hands out every lease that devices have room for now. Each pass offers one lease to
    /// every device with room, least loaded first (the fastest among equals); passes repeat
    /// until one grants nothing.
    pub fn poll_leases(&mut self, now: Millis) -> Vec<Lease> {
        if self.pending.is_empty() && !self.replicas.is_empty() {
            self.replan_waiting();
        }
        let mut issued = Vec::new();
        // What may be copied, ranked once for all the devices of this poll; a new lease or
        // replica out changes it, and the ranking is made afresh.
        let mut copyable = None;
        loop {
            let before = issued.len();
            // The order is fixed when the pass starts: a device served in it moves back in
            // `room` but waits for the next pass.
            // With nothing queued, only a device with an idle worker may get a lease (a
            // speculative copy); `room` lists those first.
            let nothing_queued = self.pending.is_empty() && self.replica_for.is_empty();
            let pass: Vec<Arc<str>> = self
                .room
                .iter()
                .filter(|p| !(nothing_queued && p.load >= 1.0))
                .map(|p| Arc::clone(&p.device))
                .collect();
            for device in pass {
                let lease = match self.next_chunk(now, &device) {
                    Some(lease) => {
                        copyable = None;
                        Some(lease)
                    }
                    None => self.speculative_copy(now, &device, &mut copyable),
                };
                issued.extend(lease);
            }
            if issued.len() == before {
                return issued;
            }
        }
    }

    /// A device reports a lease done. Its rate is updated from the time the lease took as the
    /// scheduler saw it (see the module docs).
    pub fn complete(&mut self, now: Millis, device: &str, lease_id: LeaseId) -> Completion {
        let Some(lease) = self.leases.get(&lease_id) else {
            return Completion::Unknown;
        };
        if lease.device != device {
            return Completion::NotHolder;
        }
        let Some(lease) = self.unlist(lease_id) else {
            return Completion::Unknown;
        };
        if let Some(state) = self.devices.get_mut(device) {
            state.leases.remove(&lease_id);
            state.missed = 0;
            // The lease could start when it was issued and a worker was free: when the
            // device's `workers`-th most recent result arrived.
            let workers = state.workers.max(1) as usize;
            let free_at = if state.done_at.len() >= workers {
                state.done_at.front().copied().unwrap_or(0)
            } else {
                0
            };
            let started = lease.issued_ms.max(free_at);
            let elapsed = now.saturating_sub(started).max(1) as f64;
            state.done_at.push_back(now);
            while state.done_at.len() > workers {
                state.done_at.pop_front();
            }
            let observed = (lease.units() as f64 / elapsed).min(state.rate * OBSERVATION_CAP);
            let alpha = self.config.ewma_alpha;
            state.rate = alpha * observed + (1.0 - alpha) * state.rate;
            let change = state.refile(&mut self.room, self.config.prefetch);
            self.recount(change);
        }
        let range = (lease.lo, lease.hi);
        let mut twins: Vec<LeaseId> = self.twins(range).collect();
        if let Some(replica) = self.take_out(lease_id) {
            if self.completed.contains(&range) {
                return Completion::Replica {
                    lo: range.0,
                    hi: range.1,
                };
            }
            // A replica that answers before its range's first lease completes the range, if
            // the range is still whole: queued, or leased as exactly this range (a range split
            // since is in other hands). That first lease becomes the replica.
            if !self.take_queued(range.0, range.1) && twins.is_empty() {
                return Completion::Duplicate;
            }
            if !twins.is_empty() {
                let first = twins.remove(0);
                self.turn_into_replica(first, range, device, replica.pick);
            }
        }
        if !self.completed.insert(range) {
            return Completion::Duplicate;
        }
        self.done_units = self.done_units.saturating_add(lease.units());
        let cancelled = twins
            .into_iter()
            .filter_map(|id| self.drop_lease(id))
            .collect();
        Completion::Accepted {
            lo: range.0,
            hi: range.1,
            cancelled,
        }
    }

    /// Withdraws leases past their deadline (their ranges go back to the queue), halves the
    /// rate of the devices that missed them and puts those devices on probation (one lease at a
    /// time, served last) until they complete one.
    pub fn expire(&mut self, now: Millis) -> Vec<Lease> {
        let mut late: Vec<LeaseId> = self
            .by_deadline
            .range(..=(now, LeaseId::MAX))
            .map(|(_, id)| *id)
            .collect();
        // Oldest lease first, so the ranges go back to the queue in a fixed order.
        late.sort_unstable();
        let expired: Vec<Lease> = late
            .into_iter()
            .filter_map(|id| self.withdraw_as(id, true))
            .collect();
        for lease in &expired {
            if let Some(state) = self.devices.get_mut(&lease.device) {
                state.rate /= 2.0;
                state.missed = state.missed.saturating_add(1);
                let change = state.refile(&mut self.room, self.config.prefetch);
                self.recount(change);
            }
        }
        expired
    }

    /// Adds a change of one device's throughput to the running sum. Each change may leave a
    /// rounding error of about ε × the peak sum; the sum is taken afresh once there have been as
    /// many changes as devices, and whenever it falls to half its peak (a large term leaving),
    /// so the error stays below about 2 × devices × ε of the sum.
    fn recount(&mut self, change: f64) {
        if change == 0.0 {
            return;
        }
        self.throughput += change;
        self.recounts = self.recounts.saturating_add(1);
        self.peak_throughput = self.peak_throughput.max(self.throughput);
        if self.recounts > self.devices.len()
            || self.throughput <= self.peak_throughput / 2.0
            || self.throughput.is_nan()
        {
            self.throughput = self.devices.values().map(|d| d.counted).sum();
            self.recounts = 0;
            self.peak_throughput = self.throughput;
        }
    }

    /// A queued replica drawn for this device, if any.
    fn next_replica(&mut self, now: Millis, device: &str) -> Option<Lease> {
        // Most polls find no replica queued: no key is built for them.
        if self.replica_for.is_empty() {
            return None;
        }
        let key = Some(device.to_owned());
        let replica = self.replicas.get_mut(&key)?.pop_front()?;
        if self.replicas.get(&key).is_some_and(VecDeque::is_empty) {
            self.replicas.remove(&key);
        }
        self.replica_for.remove(&(replica.lo, replica.hi));
        let holds_first = self
            .twins((replica.lo, replica.hi))
            .any(|id| self.leases.get(&id).is_some_and(|l| l.device == device));
        if holds_first {
            // It computes that range already (leased again after the first holder left).
            let mut replica = replica;
            replica.exclude.push(device.to_owned());
            self.place(replica);
            return None;
        }
        let Some(lease) = self.issue(now, device, replica.lo, replica.hi, false) else {
            self.place(replica);
            return None;
        };
        self.by_range.remove(&(lease.lo, lease.hi, lease.id));
        if let Some(l) = self.leases.get_mut(&lease.id) {
            l.replica = true;
        }
        self.send_out(lease.id, replica);
        Some(Lease {
            replica: true,
            ..lease
        })
    }

    fn next_chunk(&mut self, now: Millis, device: &str) -> Option<Lease> {
        if let Some(lease) = self.next_replica(now, device) {
            return Some(lease);
        }
        let state = self.devices.get(device).filter(|d| !d.held)?;
        let remaining = self.pending.units;
        let (lo, hi) = self.pending.pop_front()?;
        let workers = f64::from(state.workers.max(1));
        let share = state.rate * workers / self.throughput.max(f64::MIN_POSITIVE);
        // A device of many workers gets longer chunks, so that its results stay within its
        // socket's message budget; and everyone's chunks grow with the swarm's workers, so that
        // all results together stay within the object's.
        let allowed = self.config.results_per_second
            + self.config.results_per_second_per_worker
                * f64::from(state.workers.min(self.config.allowance_workers));
        let least_ms = (workers * 1_000.0 / allowed.max(f64::MIN_POSITIVE)).max(
            self.total_workers as f64 * 1_000.0 / self.config.swarm_results_per_second.max(1.0),
        );
        // About target_chunk_ms of this device's work. In the tail (less than two chunk-times
        // of the whole swarm left) no more than its share of what is left, spread over the
        // leases it holds at once (a new one waits behind the others), so the last chunks end
        // together — but never below an eighth of a chunk-time, so that one device's stale
        // rate cannot shrink everyone's chunks to nothing.
        let by_time = state.rate * self.config.target_chunk_ms.max(least_ms);
        let tail = (remaining as f64) < self.throughput * self.config.target_chunk_ms * 2.0;
        let by_tail = if tail {
            let held_at_once = workers + f64::from(self.config.prefetch);
            let floor = state.rate * (self.config.target_chunk_ms / TAIL_FLOOR).max(least_ms);
            (remaining as f64 * share / held_at_once).max(floor)
        } else {
            f64::INFINITY
        };
        // `max` then `min` rather than `clamp`, which panics on a config with min above max.
        let size = (by_time.min(by_tail).max(1.0) as u64)
            .max(self.config.min_chunk_units)
            .min(self.config.max_chunk_units)
            .min(hi.saturating_sub(lo));
        // `size <= hi - lo`, so the chunk ends at or before `hi`.
        let end = lo.saturating_add(size);
        if end < hi {
            self.pending.push_front((end, hi));
        }
        self.issue(now, device, lo, end, false)
    }

    /// When nothing is queued: a copy of the outstanding lease expected to finish last, if this
    /// device would finish it sooner than its holder. `copyable` is the ranking of
    /// [`Self::copyable`], made on first use and kept by the caller while no other lease is
    /// issued, so that a poll in the tail costs one ranking rather than one scan of every lease
    /// per idle device.
    fn speculative_copy(
        &mut self,
        now: Millis,
        device: &str,
        copyable: &mut Option<Copyable>,
    ) -> Option<Lease> {
        if !self.config.speculate || !self.pending.is_empty() {
            return None;
        }
        let state = self.devices.get(device).filter(|d| !d.held)?;
        if state.leases.len() as u32 >= state.workers {
            return None; // no idle worker: speculation would only queue
        }
        let my_rate = state.rate;
        let ranked = copyable.get_or_insert_with(|| self.copyable(now));
        let mine = &state.leases;
        // No lease ending sooner than this device would finish the smallest can qualify: the
        // ranking is by expected end, latest first, so the search stops there.
        let hopeless = now as f64 + ranked.least_units as f64 / my_rate;
        let (lo, hi) = ranked
            .leases
            .iter()
            .take_while(|c| c.expected_end > hopeless)
            .find(|c| {
                !mine.contains(&c.id) && now as f64 + c.units() as f64 / my_rate < c.expected_end
            })
            .map(|c| (c.lo, c.hi))?;
        let copy = self.issue(now, device, lo, hi, true)?;
        // The range has its copy now: none of its leases may be copied again.
        ranked.leases.retain(|c| (c.lo, c.hi) != (lo, hi));
        Some(copy)
    }

    /// The ranges a speculative copy is out for.
    fn copied_ranges(&self) -> BTreeSet<(u64, u64)> {
        self.leases
            .values()
            .filter(|l| l.speculative)
            .map(|l| (l.lo, l.hi))
            .collect()
    }

    /// The outstanding leases a speculative copy may be made of (first leases, not copies or
    /// replicas, of ranges with no copy and no replica out), by expected end, latest first;
    /// among equal ends, the newest lease first.
    fn copyable(&self, now: Millis) -> Copyable {
        let twinned = self.copied_ranges();
        // By holder, so that each holder's rate is looked up once.
        let mut leases: Vec<Candidate> = self
            .devices
            .values()
            .flat_map(|holder| {
                holder
                    .leases
                    .iter()
                    .filter_map(|id| self.leases.get(id))
                    .map(move |l| (holder.rate, l))
            })
            .filter(|(_, l)| {
                !l.speculative
                    && !l.replica
                    && !twinned.contains(&(l.lo, l.hi))
                    && self.replicas_out_of((l.lo, l.hi)).next().is_none()
            })
            .map(|(holder_rate, l)| {
                // A lease running longer than expected is assumed to need at least as long again.
                let estimate = l.issued_ms as f64 + l.units() as f64 / holder_rate;
                let running_for = now.saturating_sub(l.issued_ms) as f64;
                Candidate {
                    id: l.id,
                    lo: l.lo,
                    hi: l.hi,
                    expected_end: estimate.max(now as f64 + running_for),
                }
            })
            .collect();
        leases.sort_unstable_by(|a, b| {
            b.expected_end
                .total_cmp(&a.expected_end)
                .then(b.id.cmp(&a.id))
        });
        let least_units = leases.iter().map(Candidate::units).min().unwrap_or(0);
        Copyable {
            leases,
            least_units,
        }
    }

    /// Leases `[lo, hi)` to a device; `None` (nothing changes) if the device is unknown, which
    /// its callers have already ruled out.
    fn issue(
        &mut self,
        now: Millis,
        device: &str,
        lo: u64,
        hi: u64,
        speculative: bool,
    ) -> Option<Lease> {
        let state = self.devices.get(device)?;
        let queued_ahead = state.leases.len() as f64 / f64::from(state.workers.max(1));
        let expected = hi.saturating_sub(lo) as f64 / state.rate * (1.0 + queued_ahead);
        let window =
            (expected * self.config.deadline_factor).max(self.config.min_deadline_ms as f64);
        let deadline_ms = now.saturating_add(window.min(u64::MAX as f64 / 2.0) as u64);
        self.file(device, lo, hi, now, deadline_ms, speculative)
    }

    /// Records a lease under the next id in every table (its holder's set, by range, by
    /// deadline) and refiles its holder; `None` if the device is unknown.
    fn file(
        &mut self,
        device: &str,
        lo: u64,
        hi: u64,
        issued_ms: Millis,
        deadline_ms: Millis,
        speculative: bool,
    ) -> Option<Lease> {
        let state = self.devices.get_mut(device)?;
        let id = self.next_lease;
        self.next_lease = self.next_lease.saturating_add(1);
        let lease = Lease {
            id,
            device: device.to_owned(),
            lo,
            hi,
            issued_ms,
            deadline_ms,
            speculative,
            replica: false,
            drawn: false,
        };
        state.leases.insert(id);
        self.by_range.insert((lo, hi, id));
        self.by_deadline.insert((deadline_ms, id));
        self.leases.insert(id, lease.clone());
        let change = state.refile(&mut self.room, self.config.prefetch);
        self.recount(change);
        Some(lease)
    }

    /// The outstanding leases of exactly this range, oldest first.
    fn twins(&self, (lo, hi): (u64, u64)) -> impl Iterator<Item = LeaseId> + '_ {
        self.by_range
            .range((lo, hi, LeaseId::MIN)..=(lo, hi, LeaseId::MAX))
            .map(|(_, _, id)| *id)
    }

    /// Removes a lease; returns its range to the queue unless it is done or a twin still runs.
    /// A replica goes back to the replica queue (its holder excluded from it if it let the
    /// lease expire: `exclude_holder`).
    fn withdraw(&mut self, id: LeaseId) -> Option<Lease> {
        self.withdraw_as(id, false)
    }

    fn withdraw_as(&mut self, id: LeaseId, exclude_holder: bool) -> Option<Lease> {
        let lease = self.drop_lease(id)?;
        let range = (lease.lo, lease.hi);
        if let Some(mut replica) = self.take_out(id) {
            if exclude_holder {
                replica.skipped.push(lease.device.clone());
            }
            self.place(replica);
            return Some(lease);
        }
        let twin_running = self.twins(range).next().is_some();
        if !self.completed.contains(&range) && !twin_running {
            self.pending.push_front(range);
        }
        Some(lease)
    }

    fn drop_lease(&mut self, id: LeaseId) -> Option<Lease> {
        let lease = self.unlist(id)?;
        if let Some(state) = self.devices.get_mut(&lease.device) {
            state.leases.remove(&id);
            let change = state.refile(&mut self.room, self.config.prefetch);
            self.recount(change);
        }
        Some(lease)
    }

    /// Takes a lease out of the lease tables; its holder's set is the caller's to update.
    fn unlist(&mut self, id: LeaseId) -> Option<Lease> {
        let lease = self.leases.remove(&id)?;
        self.by_range.remove(&(lease.lo, lease.hi, id));
        self.by_deadline.remove(&(lease.deadline_ms, id));
        Some(lease)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched() -> Scheduler {
        Scheduler::new(SchedConfig {
            min_deadline_ms: 1_000,
            ..SchedConfig::default()
        })
    }

    /// Without prefetch: a small job goes out as one lease per worker.
    fn sched_without_prefetch() -> Scheduler {
        Scheduler::new(SchedConfig {
            min_deadline_ms: 1_000,
            prefetch: 0,
            ..SchedConfig::default()
        })
    }

    #[test]
    fn chunks_take_the_target_time_on_every_device() {
        let mut s = sched();
        s.set_device("slow", 1, 1.0); // 1 unit/ms: 2,000 units per 2 s chunk
        s.set_device("fast", 1, 8.0);
        s.add_work(1_000_000);
        let leases = s.poll_leases(0);
        let size = |d: &str| leases.iter().find(|l| l.device == d).unwrap().units();
        assert_eq!((size("fast"), size("slow")), (16_000, 2_000));
        assert_eq!(leases.len(), 4, "one per worker plus one prefetched each");
    }

    #[test]
    fn leases_given_back_after_a_restart_complete_once() {
        let mut before = sched();
        before.set_device("a", 2, 1.0);
        before.add_work(100_000);
        let leases = before.poll_leases(0);
        assert_eq!(leases.len(), 3);

        // A fresh scheduler of the same job gets the leases back from their holder, under
        // ids of its own.
        let mut after = sched();
        after.set_device("a", 2, 1.0);
        after.add_work(100_000);
        let ids: Vec<LeaseId> = leases
            .iter()
            .filter_map(|l| after.restore_lease("a", l.lo, l.hi, l.issued_ms, l.deadline_ms))
            .collect();
        assert_eq!(ids.len(), 3);
        let l = &leases[0];
        assert_eq!(
            after.restore_lease("b", l.lo, l.hi, 0, 1),
            None,
            "unknown device"
        );
        assert_eq!(after.restore_lease("a", 5, 5, 0, 1), None, "an empty range");
        assert!(after.poll_leases(0).is_empty(), "the quota is full again");
        let queued: u64 = after.pending.iter().map(|(a, b)| b - a).sum();
        assert_eq!(
            queued,
            100_000 - leases.iter().map(Lease::units).sum::<u64>()
        );
        assert!(matches!(
            after.complete(1_000, "a", ids[0]),
            Completion::Accepted { .. }
        ));
        assert_eq!(after.complete(1_000, "a", ids[0]), Completion::Unknown);
        let fresh = after.poll_leases(1_000);
        assert!(fresh.iter().all(|f| !ids.contains(&f.id)));
        assert!(fresh
            .iter()
            .all(|f| leases.iter().all(|l| f.hi <= l.lo || l.hi <= f.lo)));
    }

    #[test]
    fn quotas_follow_workers_and_prefetch() {
        let mut s = sched();
        s.set_device("phone", 2, 1.0);
        s.add_work(1_000_000);
        assert_eq!(s.poll_leases(0).len(), 3);
        assert!(s.poll_leases(0).is_empty(), "the quota is full");
        s.set_device("phone", 0, 1.0); // throttled to nothing
        let lease = s.leases.keys().next().copied().unwrap();
        assert!(matches!(
            s.complete(2_000, "phone", lease),
            Completion::Accepted { .. }
        ));
        assert!(
            s.poll_leases(2_000).is_empty(),
            "no new leases at zero workers"
        );
    }

    #[test]
    fn only_the_holder_completes_and_only_once() {
        let mut s = sched();
        s.set_device("a", 1, 1.0);
        s.set_device("b", 1, 1.0);
        s.add_work(10_000);
        let leases = s.poll_leases(0);
        let a = leases.iter().find(|l| l.device == "a").unwrap().clone();
        assert_eq!(s.complete(100, "b", a.id), Completion::NotHolder);
        assert!(matches!(
            s.complete(2_000, "a", a.id),
            Completion::Accepted { .. }
        ));
        assert_eq!(
            s.complete(2_000, "a", a.id),
            Completion::Unknown,
            "a repeat changes nothing"
        );
        assert_eq!(s.progress().0, a.units());
        assert_eq!(s.complete(0, "a", 999), Completion::Unknown);
    }

    #[test]
    fn expired_and_orphaned_leases_return_to_the_queue() {
        let mut s = sched();
        s.set_device("a", 1, 1.0);
        s.add_work(8_000);
        let first = s.poll_leases(0);
        assert_eq!(first.len(), 2);
        let deadline = s.next_deadline().unwrap();
        assert!(s.expire(deadline - 1).is_empty());
        let expired = s.expire(deadline);
        assert_eq!(expired.len(), 1, "the first lease expired");
        assert!(
            (s.rate("a").unwrap() - 0.5).abs() < 1e-9,
            "a missed deadline halves the rate"
        );
        s.set_device("b", 1, 1.0);
        let again = s.poll_leases(deadline);
        assert!(
            again.iter().any(|l| l.lo == expired[0].lo),
            "re-issued first (possibly resized)"
        );
        let held_by_a = s.devices["a"].leases.len();
        assert_eq!(s.remove_device("a").len(), held_by_a);
        s.poll_leases(deadline + 1);
        assert!(s.leases.values().all(|l| l.device == "b"));
        // Nothing is lost: queued plus leased units still cover the whole job exactly.
        let mut ranges: Vec<(u64, u64)> = s
            .pending
            .iter()
            .copied()
            .chain(s.leases.values().map(|l| (l.lo, l.hi)))
            .collect();
        ranges.sort_unstable();
        let mut next = 0;
        for (lo, hi) in ranges {
            assert_eq!(lo, next, "no gap and no overlap");
            next = hi;
        }
        assert_eq!(next, 8_000);
    }

    #[test]
    fn a_replica_goes_to_another_device_and_holds_the_job_open_until_answered() {
        let mut s = sched_without_prefetch();
        s.set_device("a", 1, 1.0);
        s.add_work(1_000);
        let first = s.poll_leases(0);
        let lease = first.iter().find(|l| l.lo == 0).unwrap().clone();
        for l in &first {
            s.complete(l.hi, "a", l.id);
        }
        assert!(s.is_finished(), "{:?}", s.progress());
        s.replicate(lease.lo, lease.hi, vec!["a".into()], 0);
        assert!(!s.is_finished(), "a queued replica keeps the job open");
        assert!(
            s.poll_leases(2_000).is_empty(),
            "never to the device that answered"
        );
        s.set_device("b", 1, 1.0);
        let replica = s.poll_leases(2_000);
        assert_eq!(replica.len(), 1);
        let r = &replica[0];
        assert_eq!(
            (r.device.as_str(), r.lo, r.hi, r.replica),
            ("b", lease.lo, lease.hi, true)
        );
        // It expires: back in the queue, for another device while there is one (b alone would
        // get it again).
        s.set_device("c", 1, 1.0);
        assert!(
            s.poll_leases(r.deadline_ms - 1).is_empty(),
            "c has nothing to do yet"
        );
        assert_eq!(s.expire(r.deadline_ms).len(), 1);
        let again = s.poll_leases(r.deadline_ms);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].device, "c");
        assert_eq!(
            s.complete(r.deadline_ms + 10, "c", again[0].id),
            Completion::Replica {
                lo: lease.lo,
                hi: lease.hi
            }
        );
        assert!(s.is_finished());
        assert_eq!(s.progress(), (1_000, 1_000), "a replica is not progress");
    }

    #[test]
    fn instant_answers_raise_a_rate_only_step_by_step() {
        let mut s = sched();
        s.set_device("liar", 1, 1.0);
        s.add_work(u64::MAX / 4);
        let mut now = 0;
        let mut rate = 1.0;
        for _ in 0..10 {
            for lease in s.poll_leases(now) {
                now += 1;
                s.complete(now, "liar", lease.id);
                let next = s.rate("liar").unwrap();
                assert!(
                    next <= rate * MAX_RATE_GROWTH * (1.0 + 1e-12),
                    "{rate} -> {next}"
                );
                rate = next;
            }
        }
    }

    #[test]
    fn a_replica_drawn_as_its_lease_goes_out_runs_alongside_and_either_answer_completes_it() {
        for replica_first in [false, true] {
            let mut s = sched_without_prefetch();
            s.set_device("a", 1, 1.0);
            s.add_work(1_000);
            let first = s.poll_leases(0).remove(0);
            s.replicate(first.lo, first.hi, vec!["a".into()], 0);
            assert!(s.is_replicated((first.lo, first.hi), &["a".to_owned()]));
            assert_eq!(s.replicas_pending(), 0, "not an answer waiting yet");
            s.set_device("b", 1, 1.0);
            let replica = s.poll_leases(0).remove(0);
            assert!(replica.replica && replica.device == "b");
            assert_eq!((replica.lo, replica.hi), (first.lo, first.hi));
            s.replicate(first.lo, first.hi, vec!["a".into()], 7);
            assert!(s.poll_leases(1).is_empty(), "the replica out is kept");
            let (early, late) = if replica_first {
                (&replica, &first)
            } else {
                (&first, &replica)
            };
            assert!(matches!(
                s.complete(500, &early.device, early.id),
                Completion::Accepted { ref cancelled, .. } if cancelled.is_empty()
            ));
            assert_eq!(s.progress(), (1_000, 1_000));
            assert!(!s.is_finished(), "the other answer is awaited");
            assert_eq!(s.replicas_pending(), 1);
            assert_eq!(
                s.complete(900, &late.device, late.id),
                Completion::Replica { lo: 0, hi: 1_000 }
            );
            assert!(s.is_finished());
        }
    }

    #[test]
    fn a_replica_out_never_goes_back_to_a_device_that_answered_its_range_since() {
        let mut s = sched_without_prefetch();
        s.set_device("a", 1, 1.0);
        s.add_work(1_000);
        let first = s.poll_leases(0).remove(0);
        s.replicate(first.lo, first.hi, vec!["a".into()], 0);
        s.set_device("b", 1, 1.0);
        let replica = s.poll_leases(0).remove(0);
        assert!(replica.replica && replica.device == "b");
        s.complete(500, "a", first.id);
        // a is caught: its range is computed again, by c, while b's replica is still out (b,
        // disabled meanwhile, keeps it).
        s.remove_device("a");
        assert!(s.redo(first.lo, first.hi));
        s.set_enabled("b", false);
        s.set_device("c", 1, 1.0);
        let again = s.poll_leases(600).remove(0);
        assert_eq!((again.device.as_str(), again.lo), ("c", first.lo));
        s.replicate(first.lo, first.hi, vec!["c".into()], 0);
        s.complete(900, "c", again.id);
        // b leaves: its replica goes back to the queue, but not to c, which answered.
        s.remove_device("b");
        assert!(s.poll_leases(1_000).is_empty());
        assert_eq!(s.stranded(), vec![(first.lo, first.hi)]);
        assert_indexes_agree(&s);
    }

    #[test]
    fn a_replica_excludes_only_the_devices_whose_answers_stand() {
        let mut s = sched_without_prefetch();
        s.set_device("a", 1, 1.0);
        s.add_work(1_000);
        let first = s.poll_leases(0).remove(0);
        s.complete(500, "a", first.id);
        s.set_device("b", 1, 1.0);
        // a and b answered; nobody else may take the replica.
        s.replicate(first.lo, first.hi, vec!["a".into(), "b".into()], 0);
        assert!(s.poll_leases(600).is_empty());
        assert!(s.replica_on_its_way((first.lo, first.hi), &["a".into(), "b".into()]));
        // The range was computed again and only b's new answer stands: a may take it now.
        s.replicate(first.lo, first.hi, vec!["b".into()], 0);
        let replica = s.poll_leases(700).remove(0);
        assert_eq!((replica.device.as_str(), replica.replica), ("a", true));
        assert_indexes_agree(&s);
    }

    #[test]
    fn a_replica_of_a_range_split_since_completes_nothing() {
        let mut s = sched_without_prefetch();
        s.set_device("a", 1, 1.0);
        s.add_work(4_000);
        let first = s.poll_leases(0).remove(0);
        s.replicate(first.lo, first.hi, vec!["a".into()], 0);
        s.set_device("b", 1, 1.0);
        let replica = s
            .poll_leases(0)
            .into_iter()
            .find(|l| l.replica)
            .expect("the replica");
        // a leaves: its range goes back to the queue and is leased again in smaller parts.
        s.remove_device("a");
        s.set_device("c", 4, 1.0);
        let parts = s.poll_leases(10);
        assert!(parts.iter().any(|l| l.lo == first.lo && l.hi < first.hi));
        let before = s.progress();
        assert_eq!(s.complete(2_000, "b", replica.id), Completion::Duplicate);
        assert_eq!(s.progress(), before, "no unit counted twice");
        assert_indexes_agree(&s);
    }

    #[test]
    fn a_device_of_many_workers_gets_chunks_that_keep_its_results_within_its_message_budget() {
        let mut s = sched();
        s.set_device("big", 64, 1.0);
        s.set_device("small", 4, 1.0);
        s.add_work(u64::MAX / 4);
        let leases = s.poll_leases(0);
        let size = |d: &str| leases.iter().find(|l| l.device == d).unwrap().units();
        assert_eq!(size("small"), 2_000, "the target time");
        // 64 workers at 16 results per second: each chunk takes at least 4 s.
        assert_eq!(size("big"), 4_000);
    }

    /// Devices of one worker at 1 unit/ms answer every lease as soon as they have computed it
    /// (one at a time, in the order issued); the results per second the object receives over
    /// simulated minutes 1 to 11, and the units per ms computed. The devices start together and
    /// stay in step, so a window of 10 minutes keeps the count's rounding within 3 %.
    fn steady_results_per_second(devices: usize, budget: f64) -> (f64, f64) {
        queued_results_per_second(devices, budget, f64::INFINITY)
    }

    /// As [`steady_results_per_second`], with the object handling at most `capacity` results
    /// per second, one after another in order of arrival: a result is handled (and its rate
    /// measured) only once those before it are.
    fn queued_results_per_second(devices: usize, budget: f64, capacity: f64) -> (f64, f64) {
        let mut s = Scheduler::new(SchedConfig {
            swarm_results_per_second: budget,
            ..SchedConfig::default()
        });
        let names: Vec<String> = (0..devices).map(|i| format!("d{i}")).collect();
        for name in &names {
            s.set_device(name, 1, 1.0);
        }
        s.add_work(u64::MAX / 4);
        // (finish time, device, lease), and when each device's worker is next free.
        let mut running: BTreeSet<(Millis, String, LeaseId)> = BTreeSet::new();
        let mut free_at: BTreeMap<String, Millis> = BTreeMap::new();
        let (mut results, mut units) = (0u64, 0u64);
        let mut now = 0;
        let service_ms = 1_000.0 / capacity;
        let mut handled_until = 0.0f64;
        let mut queued: BTreeSet<LeaseId> = BTreeSet::new();
        while now < 660_000 {
            for lease in s.poll_leases(now) {
                let start = free_at.get(&lease.device).copied().unwrap_or(0).max(now);
                let end = start + lease.units();
                free_at.insert(lease.device.clone(), end);
                running.insert((end, lease.device, lease.id));
            }
            let Some((end, device, id)) = running.pop_first() else {
                break;
            };
            // Handled when the object is through the results that came before it.
            if !queued.remove(&id) {
                handled_until = handled_until.max(end as f64) + service_ms;
                let handled = (handled_until as Millis).max(end);
                if handled > end {
                    queued.insert(id);
                    running.insert((handled, device, id));
                    continue;
                }
            }
            now = end;
            let size = s.lease(id).map_or(0, Lease::units);
            assert!(matches!(
                s.complete(now, &device, id),
                Completion::Accepted { .. }
            ));
            if now >= 60_000 {
                results += 1;
                units += size;
            }
        }
        (results as f64 / 600.0, units as f64 / 600_000.0)
    }

    #[test]
    fn rates_measured_through_a_busy_objects_queue_do_not_push_results_past_its_budget() {
        // The object handles at most 52 to 60 results/s, one after another: a device's rate is
        // measured when its result is handled, so queueing makes devices look slower. Their
        // chunks must not shrink below the budget's length for it: results stay within 50/s,
        // and every worker stays busy.
        for (devices, capacity) in [(100, 60.0), (400, 60.0), (800, 52.0), (1600, 55.0)] {
            let (results, work) = queued_results_per_second(devices, 50.0, capacity);
            assert!(
                results <= 50.0 * 1.04,
                "{devices} devices: {results:.1} results/s"
            );
            assert!(
                (work - devices as f64).abs() / (devices as f64) < 0.04,
                "{devices} devices computed {work:.1} units/ms"
            );
        }
    }

    #[test]
    fn past_the_objects_budget_chunks_grow_and_results_per_second_stay_within_it() {
        // 2 s chunks: 10 devices send 5 results/s, and 100 send 50, the budget; from there on
        // chunks grow with the swarm.
        let mut rows = Vec::new();
        for devices in [10, 100, 200, 400, 800] {
            let (results, work) = steady_results_per_second(devices, 50.0);
            rows.push((devices, results, work));
        }
        for (devices, results, work) in rows {
            let offered = devices as f64 / 2.0;
            assert!(
                results <= 50.0 * 1.04 && results >= offered.min(50.0) * 0.96,
                "{devices} devices: {results:.1} results/s"
            );
            // Every worker stays busy: a unit per ms each.
            assert!(
                (work - devices as f64).abs() / (devices as f64) < 0.04,
                "{devices} devices computed {work:.1} units/ms"
            );
        }
    }

    #[test]
    fn a_held_device_gets_no_new_work_but_takes_replicas() {
        let mut s = sched();
        s.set_device("a", 2, 1.0);
        s.add_work(1_000_000);
        s.set_held("a", true);
        assert!(s.poll_leases(0).is_empty());
        s.set_held("a", false);
        let leases = s.poll_leases(0);
        assert_eq!(leases.len(), 3);
        for l in &leases {
            s.complete(10, "a", l.id);
        }
        s.set_device("b", 1, 1.0);
        s.set_held("a", true);
        let theirs: Vec<Lease> = s.poll_leases(10);
        assert!(theirs.iter().all(|l| l.device == "b"), "{theirs:?}");
        s.complete(20, "b", theirs[0].id);
        s.replicate(theirs[0].lo, theirs[0].hi, vec!["b".into()], 0);
        s.set_held("a", true);
        let replica = s.poll_leases(20);
        assert!(
            replica.iter().any(|l| l.device == "a" && l.replica),
            "a held device still takes replicas: {replica:?}"
        );
        assert!(replica.iter().all(|l| l.device != "a" || l.replica));
    }

    #[test]
    fn rates_follow_observed_throughput() {
        let mut s = sched();
        s.set_device("liar", 1, 100.0); // its benchmark said 100 units/ms
        s.add_work(10_000_000);
        let mut now = 0;
        for _ in 0..12 {
            for lease in s.poll_leases(now) {
                // Really 1 unit/ms, one lease after the other on its one worker.
                now += lease.units();
                s.complete(now, "liar", lease.id);
            }
        }
        let rate = s.rate("liar").unwrap();
        assert!(
            rate < 2.0,
            "re-weighted to its real speed within a few chunks: {rate}"
        );
    }

    #[test]
    fn idle_fast_devices_copy_the_last_straggling_lease_and_the_first_result_wins() {
        let mut s = sched_without_prefetch();
        s.set_device("slow", 1, 0.1);
        s.add_work(200);
        let slow = s.poll_leases(0);
        assert_eq!(slow.len(), 1);
        s.set_device("fast", 1, 10.0);
        let spec = s.poll_leases(10);
        assert_eq!(spec.len(), 1);
        assert!(spec[0].speculative && (spec[0].lo, spec[0].hi) == (slow[0].lo, slow[0].hi));
        assert!(s.poll_leases(11).is_empty(), "one twin per lease");
        match s.complete(40, "fast", spec[0].id) {
            Completion::Accepted { cancelled, .. } => assert_eq!(cancelled[0].id, slow[0].id),
            other => panic!("{other:?}"),
        }
        assert!(s.is_finished());
        assert_eq!(
            s.complete(2_000, "slow", slow[0].id),
            Completion::Unknown,
            "the loser's lease is gone"
        );
    }

    /// The copy the rule names, found by scanning every lease: of the first leases not yet
    /// copied (and with no replica out) held by others, the one expected to end last that
    /// `device` would finish sooner; the newest among equal ends.
    fn copy_by_scan(
        s: &Scheduler,
        now: Millis,
        device: &str,
        copied: &BTreeSet<(u64, u64)>,
    ) -> Option<(u64, u64)> {
        let my_rate = s.devices[device].rate;
        s.leases
            .values()
            .filter(|l| {
                !l.speculative
                    && !l.replica
                    && l.device != device
                    && !copied.contains(&(l.lo, l.hi))
                    && s.replicas_out_of((l.lo, l.hi)).next().is_none()
            })
            .map(|l| {
                let holder = s.devices[&l.device].rate;
                let end = (l.issued_ms as f64 + l.units() as f64 / holder)
                    .max(now as f64 + now.saturating_sub(l.issued_ms) as f64);
                (l, end)
            })
            .filter(|(l, end)| (now as f64 + l.units() as f64 / my_rate) < *end)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(l, _)| (l.lo, l.hi))
    }

    #[test]
    fn in_the_tail_each_copy_is_the_one_a_scan_of_every_lease_names() {
        let mut s = sched();
        let speed =
            |d: u64| [0.05, 1.0, 3.0, 8.0][(d % 4) as usize] * (1.0 + (d % 7) as f64 / 10.0);
        for d in 0..60 {
            s.set_device(&format!("d{d}"), 1 + (d % 3) as u32, speed(d));
        }
        s.add_work(400_000);
        let mut due = std::collections::BinaryHeap::new();
        let mut now = 0;
        let mut checked = 0;
        while !s.is_finished() {
            let nothing_queued = s.queued_units() == 0 && s.replica_for.is_empty();
            let copied_before = s.copied_ranges();
            let before = s.clone();
            let issued = s.poll_leases(now);
            if nothing_queued {
                // Replay the poll in the order it issued: each copy is what the scan names for
                // its device, given the copies made before it.
                let mut copied = copied_before;
                for lease in &issued {
                    assert!(lease.speculative, "nothing is queued: {lease:?}");
                    assert_eq!(
                        copy_by_scan(&before, now, &lease.device, &copied),
                        Some((lease.lo, lease.hi)),
                        "at {now} ms, {lease:?}"
                    );
                    copied.insert((lease.lo, lease.hi));
                    checked += 1;
                }
            }
            for lease in issued {
                let d: u64 = lease.device[1..].parse().unwrap();
                let took = (lease.units() as f64 / speed(d)).ceil() as u64;
                due.push(std::cmp::Reverse((now + took, lease.id, lease.device)));
            }
            let std::cmp::Reverse((at, id, device)) = due.pop().expect("leases out");
            now = at;
            s.complete(now, &device, id);
        }
        assert!(checked >= 20, "only {checked} copies were made");
    }

    #[test]
    fn a_late_result_takes_its_work_back_from_the_queue_and_from_leases_within_it_only() {
        let mut s = sched_without_prefetch();
        s.set_device("a", 1, 1.0);
        s.add_work(10_000);
        let first = s.poll_leases(0);
        let (lo, hi) = (first[0].lo, first[0].hi);
        assert_eq!(s.expire(100_000).len(), 1, "the lease expires");
        // The expired range goes out again in part (the device's rate was halved); the rest
        // of it is queued.
        let again = s.poll_leases(100_000);
        let within: Vec<&Lease> = again.iter().filter(|l| lo <= l.lo && l.hi <= hi).collect();
        assert!(
            within.len() == 1 && within[0].hi < hi,
            "{first:?} then {again:?}"
        );
        let snapshot = format!("{s:?}");
        // Not taken, and nothing changes: a range straddling a lease, or one partly done.
        assert!(s.claim(lo + 1, hi + 1).is_none());
        assert_eq!(format!("{s:?}"), snapshot);
        let cancelled = s.claim(lo, hi).expect("queued or within leases");
        let mut ids: Vec<LeaseId> = cancelled.iter().map(|l| l.id).collect();
        ids.sort_unstable();
        let mut expected: Vec<LeaseId> = within.iter().map(|l| l.id).collect();
        expected.sort_unstable();
        assert_eq!(ids, expected, "the leases within are withdrawn");
        assert!(expected.iter().all(|id| s.lease(*id).is_none()));
        assert_eq!(s.progress().0, hi - lo);
        assert!(s.claim(lo, hi).is_none(), "once");
        let snapshot = format!("{s:?}");
        assert!(s.claim(lo, hi + 1).is_none(), "holds the work done");
        assert!(s.claim(hi - 1, hi + 1).is_none(), "overlaps the work done");
        assert_eq!(format!("{s:?}"), snapshot);
        // The queue lost exactly that range: the job still completes, each unit once.
        let mut now = 100_000;
        while !s.is_finished() {
            let leases = s.poll_leases(now);
            now += 1;
            for lease in s.leases.values().cloned().collect::<Vec<_>>() {
                assert!(
                    lease.hi <= lo || hi <= lease.lo,
                    "{lease:?} overlaps the taken range"
                );
                assert!(matches!(
                    s.complete(now, &lease.device, lease.id),
                    Completion::Accepted { .. }
                ));
            }
            assert!(!leases.is_empty() || s.is_finished(), "stuck");
        }
        assert_eq!(s.progress(), (10_000, 10_000));
    }

    #[test]
    fn restored_progress_is_not_scheduled_again() {
        let mut s = sched();
        s.add_work(10_000);
        s.mark_done(0, 2_000);
        s.mark_done(5_000, 6_000);
        assert_eq!(s.progress(), (3_000, 10_000));
        assert_eq!(
            s.pending.iter().copied().collect::<Vec<_>>(),
            vec![(2_000, 5_000), (6_000, 10_000)]
        );
    }

    #[test]
    fn a_departed_twin_does_not_requeue_a_range_still_running() {
        let mut s = sched_without_prefetch();
        s.set_device("slow", 1, 0.1);
        s.add_work(200);
        s.poll_leases(0);
        s.set_device("fast", 1, 10.0);
        s.poll_leases(10);
        s.remove_device("fast");
        assert!(
            s.pending.is_empty(),
            "the slow device still holds the range"
        );
        s.remove_device("slow");
        assert_eq!(s.pending.iter().map(|(a, b)| b - a).sum::<u64>(), 200);
    }

    /// What the scheduler's indexes must hold, worked out afresh the slow way.
    fn assert_indexes_agree(s: &Scheduler) {
        let load = |d: &DeviceState| d.leases.len() as f64 / f64::from(d.workers);
        let mut room: Vec<(&String, &DeviceState)> = s
            .devices
            .iter()
            .filter(|(_, d)| d.has_room(s.config.prefetch))
            .collect();
        room.sort_by(|(_, a), (_, b)| {
            (a.missed > 0)
                .cmp(&(b.missed > 0))
                .then(load(a).total_cmp(&load(b)))
                .then(b.rate.total_cmp(&a.rate))
        });
        let filed: Vec<&str> = s.room.iter().map(|p| &*p.device).collect();
        let sorted: Vec<&str> = room.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(filed, sorted, "devices with room, in serving order");
        let fresh: f64 = s
            .devices
            .values()
            .filter(|d| d.enabled)
            .map(|d| d.rate * f64::from(d.workers))
            .sum();
        assert!(
            (s.throughput - fresh).abs() <= fresh * 1e-9,
            "running throughput {} against {fresh}",
            s.throughput
        );
        let queued: u64 = s.pending.iter().map(|(a, b)| b - a).sum();
        assert_eq!(s.pending.units, queued);
        let by_range: BTreeSet<_> = s
            .leases
            .values()
            .filter(|l| !l.replica)
            .map(|l| (l.lo, l.hi, l.id))
            .collect();
        assert_eq!(s.by_range, by_range);
        let replicas: BTreeSet<LeaseId> = s
            .leases
            .values()
            .filter(|l| l.replica)
            .map(|l| l.id)
            .collect();
        assert_eq!(
            replicas,
            s.replicas_out.keys().copied().collect::<BTreeSet<_>>()
        );
        let out: BTreeSet<_> = s
            .replicas_out
            .iter()
            .map(|(id, r)| (r.lo, r.hi, *id))
            .collect();
        assert_eq!(s.out_by_range, out);
        // (One out may outlive its range's redo: its result then finds nothing to compare.)
        let mut queued = 0;
        for (device, queue) in &s.replicas {
            assert!(!queue.is_empty(), "no empty queue is kept");
            for r in queue {
                queued += 1;
                assert_eq!(s.replica_for.get(&(r.lo, r.hi)), Some(device));
                if let Some(device) = device {
                    let d = &s.devices[device];
                    assert!(
                        d.enabled
                            && d.workers > 0
                            && !r.exclude.contains(device)
                            && !r.skipped.contains(device),
                        "a replica waits for a device that may take it"
                    );
                }
            }
        }
        assert_eq!(queued, s.replica_for.len());
        let by_deadline: BTreeSet<_> = s.leases.values().map(|l| (l.deadline_ms, l.id)).collect();
        assert_eq!(s.by_deadline, by_deadline);
        for (id, d) in &s.devices {
            let held: BTreeSet<LeaseId> = s
                .leases
                .values()
                .filter(|l| &l.device == id)
                .map(|l| l.id)
                .collect();
            assert_eq!(d.leases, held, "{id}'s leases");
        }
    }

    #[test]
    fn indexes_agree_with_a_fresh_count_after_any_operation() {
        let mut s = sched();
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut below = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n.max(1)
        };
        let mut now = 0;
        for _ in 0..20_000 {
            now += below(300);
            let device = format!("d{}", below(12));
            match below(10) {
                0 => {
                    let rate = [0.01, 1.0, 7.5, 1e6][below(4) as usize];
                    s.set_device(&device, below(5) as u32, rate);
                }
                1 => s.set_enabled(&device, below(3) > 0),
                2 if below(8) == 0 => drop(s.remove_device(&device)),
                2 if below(2) == 0 => {
                    let nth = below(s.completed.len() as u64) as usize;
                    if let Some(&(lo, hi)) = s.completed.iter().nth(nth) {
                        s.replicate(lo, hi, vec![device.clone()], below(u64::MAX));
                    }
                }
                2 if below(2) == 0 => {
                    s.set_held(&device, below(2) == 0);
                    s.set_trusted(&device, below(2) == 0);
                }
                2 => {
                    let nth = below(s.completed.len() as u64) as usize;
                    if let Some(&(lo, hi)) = s.completed.iter().nth(nth) {
                        s.redo(lo, hi);
                    }
                }
                3 => s.add_work(below(50_000)),
                4 => drop(s.expire(now)),
                5 | 6 => drop(s.poll_leases(now)),
                _ => {
                    // Some outstanding lease completes, now and then reported by the wrong device.
                    let nth = below(s.leases.len() as u64) as usize;
                    if let Some(lease) = s.leases.values().nth(nth).cloned() {
                        let from = if below(10) == 0 { device } else { lease.device };
                        s.complete(now + 10, &from, lease.id);
                    }
                }
            }
            assert_indexes_agree(&s);
        }
        assert!(s.progress().0 > 0, "the random run got some work done");
    }
}

#[cfg(test)]
mod starvation {
    use super::*;

    #[test]
    fn a_device_that_never_answers_cannot_hold_up_the_job() {
        let mut s = Scheduler::new(SchedConfig::default());
        s.set_device("silent", 4, 100_000.0);
        s.set_device("fast", 4, 100_000.0);
        s.add_work(1_000_000);
        let mut now = 0;
        for _ in 0..200 {
            now += 1_000;
            s.expire(now);
            let mut fast: Vec<Lease> = s
                .poll_leases(now)
                .into_iter()
                .filter(|l| l.device == "fast")
                .collect();
            fast.extend(s.leases.values().filter(|l| l.device == "fast").cloned());
            fast.dedup_by_key(|l| l.id);
            for lease in fast {
                s.complete(now, "fast", lease.id);
            }
            if s.is_finished() {
                break;
            }
        }
        let held: Vec<_> = s
            .leases
            .values()
            .map(|l| (l.device.clone(), l.lo, l.hi, l.speculative, l.deadline_ms))
            .collect();
        assert!(
            s.is_finished(),
            "progress {:?} at {now}, leases {held:?}, pending {:?}",
            s.progress(),
            s.pending
        );
    }
}
