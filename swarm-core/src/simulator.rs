//! A deterministic swarm simulator: the real [`Scheduler`] (or the predecessor's fixed-weight
//! batch policy) against simulated devices with heterogeneous speeds, churn and slowdowns, on a
//! virtual clock. It is the home of the scheduling benchmarks (`cargo xtask bench`) and of the
//! scheduler's property tests.
//!
//! Time is in milliseconds; work in abstract units of equal cost; a device worker computes
//! `speed` units per millisecond. Every message takes `latency_ms` each way.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use crate::sched::{Completion, LeaseId, SchedConfig, Scheduler};
use crate::Millis;

/// One simulated device.
#[derive(Debug, Clone, PartialEq)]
pub struct SimDevice {
    pub workers: u32,
    /// Units per ms per worker.
    pub speed: f64,
    pub gpu: bool,
    pub joins_ms: Millis,
    pub leaves_ms: Option<Millis>,
    /// From this time on, the device computes at `speed × factor` (a throttled phone, a
    /// background tab).
    pub slowdown: Option<(Millis, f64)>,
}

impl SimDevice {
    pub fn new(workers: u32, speed: f64) -> Self {
        Self {
            workers,
            speed,
            gpu: false,
            joins_ms: 0,
            leaves_ms: None,
            slowdown: None,
        }
    }

    fn speed_at(&self, t: Millis) -> f64 {
        match self.slowdown {
            Some((at, factor)) if t >= at => self.speed * factor,
            _ => self.speed,
        }
    }
}

/// A scheduling scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub total_units: u64,
    pub devices: Vec<SimDevice>,
    pub latency_ms: Millis,
    /// The benchmark's error: a device's initial rate estimate is off by up to this fraction.
    pub benchmark_error: f64,
    pub seed: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// When the last unit was completed, or `None` if the run did not finish by its time limit.
    pub makespan_ms: Option<Millis>,
    /// The earliest possible finish: total work over the capacity present over time.
    pub ideal_ms: Millis,
    /// Units computed more than once (speculation, expiry, churn).
    pub wasted_units: u64,
}

impl Outcome {
    pub fn ratio(&self) -> Option<f64> {
        self.makespan_ms.map(|m| m as f64 / self.ideal_ms as f64)
    }
}

/// The policy under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Ours: [`Scheduler`].
    Ours,
    /// The predecessor's: fixed weights `cores*10 + (gpu?50:0) + min(score/1000,100)`, batches of
    /// `max(1, ⌊w/Σw × 30⌋)` fixed-size chunks handed to a device when it has none. Generously,
    /// a departing device's chunks are re-queued (the predecessor lost them). Its spec gives
    /// neither the chunk size nor the score a device reports; [`Baseline`] chooses them.
    Predecessor(Baseline),
}

/// The two modelling choices behind the predecessor's baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Baseline {
    /// The job is cut into this many fixed chunks.
    pub chunks: u64,
    /// The score each device reports. `None`: its operations per second over all cores as
    /// the simulated speed gives them (most devices then reach the weight's cap of 100);
    /// `Some(p)`: scores proportional to speed × cores, the fastest device at `p` % of the cap.
    pub score_cap_percent: Option<u32>,
}

impl Baseline {
    /// The choice the headline comparison uses.
    pub const HEADLINE: Baseline = Baseline {
        chunks: 600,
        score_cap_percent: None,
    };
}

/// The earliest time at which the devices present could have done all the work.
pub fn ideal_ms(scenario: &Scenario) -> Millis {
    let mut edges: Vec<Millis> = vec![0];
    for d in &scenario.devices {
        edges.push(d.joins_ms);
        edges.extend(d.leaves_ms);
        edges.extend(d.slowdown.map(|(t, _)| t));
    }
    edges.sort_unstable();
    edges.dedup();
    let capacity = |t: Millis| -> f64 {
        scenario
            .devices
            .iter()
            .filter(|d| d.joins_ms <= t && d.leaves_ms.is_none_or(|l| t < l))
            .map(|d| d.speed_at(t) * f64::from(d.workers))
            .sum()
    };
    let mut left = scenario.total_units as f64;
    for (i, &start) in edges.iter().enumerate() {
        let cap = capacity(start);
        let end = edges.get(i + 1).copied();
        match end {
            Some(end) if cap * (end - start) as f64 >= left => {
                return start + (left / cap).ceil() as Millis
            }
            Some(end) => left -= cap * (end - start) as f64,
            None => return start + (left / cap.max(f64::MIN_POSITIVE)).ceil() as Millis,
        }
    }
    unreachable!("the last edge returns")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Join(usize),
    Leave(usize),
    /// A lease (or batch chunk) reaches the device.
    Arrive(usize, LeaseId),
    /// A worker finishes a chunk; the result reaches the coordinator `latency` later.
    Finish(usize, LeaseId),
    Report(usize, LeaseId, Millis),
    Cancel(usize, LeaseId),
    Timer,
}

struct Worker {
    running: Vec<(LeaseId, Millis)>,
    queue: VecDeque<LeaseId>,
    present: bool,
}

struct Sim<'a> {
    scenario: &'a Scenario,
    now: Millis,
    events: BinaryHeap<Reverse<(Millis, u64, Event)>>,
    seq: u64,
    workers: Vec<Worker>,
    chunk_units: BTreeMap<LeaseId, u64>,
    computed_units: u64,
}

impl<'a> Sim<'a> {
    fn new(scenario: &'a Scenario) -> Self {
        let mut sim = Self {
            scenario,
            now: 0,
            events: BinaryHeap::new(),
            seq: 0,
            workers: scenario
                .devices
                .iter()
                .map(|_| Worker {
                    running: Vec::new(),
                    queue: VecDeque::new(),
                    present: false,
                })
                .collect(),
            chunk_units: BTreeMap::new(),
            computed_units: 0,
        };
        for (i, d) in scenario.devices.iter().enumerate() {
            sim.at(d.joins_ms, Event::Join(i));
            if let Some(t) = d.leaves_ms {
                sim.at(t, Event::Leave(i));
            }
        }
        sim
    }

    fn at(&mut self, t: Millis, event: Event) {
        self.seq += 1;
        self.events.push(Reverse((t, self.seq, event)));
    }

    /// Starts queued chunks on free workers.
    fn start_work(&mut self, i: usize) {
        let device = &self.scenario.devices[i];
        let speed = device.speed_at(self.now);
        let mut finishes = Vec::new();
        let w = &mut self.workers[i];
        while w.present && (w.running.len() as u32) < device.workers {
            let Some(id) = w.queue.pop_front() else { break };
            let units = self.chunk_units[&id];
            let took = (units as f64 / speed).ceil().max(1.0) as Millis;
            w.running.push((id, self.now));
            finishes.push((self.now + took, id));
        }
        for (t, id) in finishes {
            self.at(t, Event::Finish(i, id));
        }
    }
}

fn device_name(i: usize) -> String {
    format!("d{i}")
}

/// A small deterministic generator (xorshift64*).
struct Rand(u64);

impl Rand {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Runs a scenario under a policy until the work is done or `limit_ms` passes.
pub fn run(scenario: &Scenario, policy: Policy, limit_ms: Millis) -> Outcome {
    let ideal_ms = ideal_ms(scenario);
    let mut rand = Rand(scenario.seed.max(1));
    let mut sim = Sim::new(scenario);
    let latency = scenario.latency_ms;
    let mut sched = Scheduler::new(SchedConfig::default());
    let baseline = match policy {
        Policy::Predecessor(baseline) => baseline,
        Policy::Ours => Baseline::HEADLINE,
    };
    let mut pred = Predecessor::new(scenario, baseline);
    sched.add_work(scenario.total_units);
    let mut makespan = None;
    while let Some(Reverse((t, _, event))) = sim.events.pop() {
        if t > limit_ms {
            break;
        }
        sim.now = t;
        match event {
            Event::Join(i) => {
                sim.workers[i].present = true;
                let d = &scenario.devices[i];
                let measured =
                    d.speed * (1.0 + scenario.benchmark_error * (2.0 * rand.unit() - 1.0));
                match policy {
                    Policy::Ours => sched.set_device(&device_name(i), d.workers, measured),
                    Policy::Predecessor(_) => pred.join(i, d, measured),
                }
            }
            Event::Leave(i) => {
                let w = &mut sim.workers[i];
                w.present = false;
                w.running.clear();
                w.queue.clear();
                match policy {
                    Policy::Ours => {
                        sched.remove_device(&device_name(i));
                    }
                    Policy::Predecessor(_) => pred.leave(i),
                }
            }
            Event::Arrive(i, id) => {
                if sim.workers[i].present {
                    sim.workers[i].queue.push_back(id);
                    sim.start_work(i);
                }
            }
            Event::Finish(i, id) => {
                let w = &mut sim.workers[i];
                if let Some(pos) = w.running.iter().position(|(r, _)| *r == id) {
                    let (_, started) = w.running.remove(pos);
                    sim.computed_units += sim.chunk_units[&id];
                    sim.at(t + latency, Event::Report(i, id, t - started));
                    sim.start_work(i);
                }
            }
            Event::Report(i, id, _) => match policy {
                Policy::Ours => {
                    if let Completion::Accepted { cancelled, .. } =
                        sched.complete(t, &device_name(i), id)
                    {
                        for lease in cancelled {
                            let holder = lease.device[1..]
                                .parse::<usize>()
                                .expect("simulated device name");
                            sim.at(t + latency, Event::Cancel(holder, lease.id));
                        }
                    }
                }
                Policy::Predecessor(_) => pred.complete(i, id),
            },
            Event::Cancel(i, id) => {
                let w = &mut sim.workers[i];
                w.queue.retain(|q| *q != id);
                if let Some(pos) = w.running.iter().position(|(r, _)| *r == id) {
                    w.running.remove(pos);
                    sim.start_work(i);
                }
            }
            Event::Timer => {}
        }
        let finished = match policy {
            Policy::Ours => sched.is_finished(),
            Policy::Predecessor(_) => pred.is_finished(),
        };
        if finished {
            makespan = Some(t);
            break;
        }
        // The coordinator's turn: expire late leases, hand out new ones.
        let issued: Vec<(usize, LeaseId, u64)> = match policy {
            Policy::Ours => {
                sched.expire(t);
                let leases = sched.poll_leases(t);
                if let Some(deadline) = sched.next_deadline() {
                    if !sim
                        .events
                        .iter()
                        .any(|Reverse((at, _, e))| *e == Event::Timer && *at == deadline)
                    {
                        sim.at(deadline, Event::Timer);
                    }
                }
                leases
                    .into_iter()
                    .map(|l| (l.device[1..].parse().expect("device name"), l.id, l.units()))
                    .collect()
            }
            Policy::Predecessor(_) => pred.dispatch(),
        };
        for (i, id, units) in issued {
            sim.chunk_units.insert(id, units);
            sim.at(t + latency, Event::Arrive(i, id));
        }
    }
    Outcome {
        makespan_ms: makespan,
        ideal_ms,
        wasted_units: sim.computed_units.saturating_sub(scenario.total_units),
    }
}

/// The predecessor's dispatcher (see [`Policy::Predecessor`]).
struct Predecessor {
    /// Multiplies the reported score (see [`Baseline::score_cap_percent`]).
    score_scale: f64,
    pending: VecDeque<(u64, u64)>,
    weights: BTreeMap<usize, f64>,
    outstanding: BTreeMap<usize, Vec<LeaseId>>,
    chunks: BTreeMap<LeaseId, (u64, u64)>,
    done: u64,
    total: u64,
    next: LeaseId,
}

impl Predecessor {
    fn new(scenario: &Scenario, baseline: Baseline) -> Self {
        let chunk = (scenario.total_units / baseline.chunks.max(1)).max(1);
        // As specified, a score is speed × cores × 10,000, its term in the weight score/1000
        // capped at 100; spread, the fastest device's term is the given share of the cap.
        let fastest = scenario
            .devices
            .iter()
            .map(|d| d.speed * f64::from(d.workers) * 10.0)
            .fold(f64::MIN_POSITIVE, f64::max);
        let score_scale = baseline
            .score_cap_percent
            .map_or(1.0, |p| f64::from(p) / fastest);
        let mut pending = VecDeque::new();
        let mut lo = 0;
        while lo < scenario.total_units {
            let hi = (lo + chunk).min(scenario.total_units);
            pending.push_back((lo, hi));
            lo = hi;
        }
        Self {
            score_scale,
            pending,
            weights: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            chunks: BTreeMap::new(),
            done: 0,
            total: scenario.total_units,
            next: 1,
        }
    }

    fn join(&mut self, i: usize, d: &SimDevice, measured_speed: f64) {
        // Its self-reported benchmark score: operations per second over all cores.
        let score = measured_speed * f64::from(d.workers) * 1_000.0 * 10.0 * self.score_scale;
        let weight = f64::from(d.workers) * 10.0
            + if d.gpu { 50.0 } else { 0.0 }
            + (score / 1000.0).min(100.0);
        self.weights.insert(i, weight);
        self.outstanding.insert(i, Vec::new());
    }

    fn leave(&mut self, i: usize) {
        self.weights.remove(&i);
        for id in self.outstanding.remove(&i).unwrap_or_default() {
            if let Some(range) = self.chunks.remove(&id) {
                self.pending.push_front(range);
            }
        }
    }

    fn complete(&mut self, i: usize, id: LeaseId) {
        if let Some(list) = self.outstanding.get_mut(&i) {
            list.retain(|x| *x != id);
        }
        if let Some((lo, hi)) = self.chunks.remove(&id) {
            self.done += hi - lo;
        }
    }

    fn is_finished(&self) -> bool {
        self.done >= self.total
    }

    fn dispatch(&mut self) -> Vec<(usize, LeaseId, u64)> {
        let sum: f64 = self.weights.values().sum();
        let mut out = Vec::new();
        let idle: Vec<usize> = self
            .outstanding
            .iter()
            .filter(|(_, l)| l.is_empty())
            .map(|(i, _)| *i)
            .collect();
        for i in idle {
            let batch = ((self.weights[&i] / sum * 30.0).floor() as usize).max(1);
            for _ in 0..batch {
                let Some(range) = self.pending.pop_front() else {
                    break;
                };
                let id = self.next;
                self.next += 1;
                self.chunks.insert(id, range);
                self.outstanding.get_mut(&i).expect("present").push(id);
                out.push((i, id, range.1 - range.0));
            }
        }
        out
    }
}

/// The benchmark scenarios: ≥ 4, including churn and stragglers.
pub fn scenarios() -> Vec<Scenario> {
    let hetero = || -> Vec<SimDevice> {
        (1..=16)
            .map(|i| SimDevice::new([2, 4, 8][i % 3], i as f64))
            .collect()
    };
    let capacity = |ds: &[SimDevice]| {
        ds.iter()
            .map(|d| d.speed * f64::from(d.workers))
            .sum::<f64>()
    };
    // About ten minutes of ideal work for every scenario.
    let work_for = |ds: &[SimDevice]| (capacity(ds) * 600_000.0) as u64;
    let uniform: Vec<SimDevice> = (0..8).map(|_| SimDevice::new(4, 1.0)).collect();
    let mixed: Vec<SimDevice> = (0..20)
        .map(|_| SimDevice::new(4, 1.0))
        .chain((0..4).map(|_| SimDevice {
            gpu: true,
            ..SimDevice::new(8, 8.0)
        }))
        .collect();
    let mut churn = hetero();
    let mut rand = Rand(0xC0FFEE);
    for d in churn.iter_mut() {
        if rand.unit() < 0.4 {
            d.leaves_ms = Some(60_000 + (rand.unit() * 300_000.0) as Millis);
        }
    }
    let replacements: Vec<SimDevice> = (0..6)
        .map(|k| SimDevice {
            joins_ms: 90_000 + 40_000 * k,
            ..SimDevice::new(4, 1.0 + 3.0 * k as f64)
        })
        .collect();
    churn.extend(replacements);
    let mut stragglers = hetero();
    for d in stragglers.iter_mut().rev().take(3) {
        d.slowdown = Some((200_000, 0.125));
    }
    let base = |name, devices: Vec<SimDevice>, work| Scenario {
        name,
        total_units: work,
        devices,
        latency_ms: 20,
        benchmark_error: 0.3,
        seed: 42,
    };
    let hetero_work = work_for(&hetero());
    vec![
        base("uniform: 8 × 4 cores", uniform.clone(), work_for(&uniform)),
        base("1×–16× speeds, 16 devices", hetero(), hetero_work),
        base("20 phones + 4 GPU laptops", mixed.clone(), work_for(&mixed)),
        base("churn: 40 % leave, 6 join", churn, hetero_work),
        base("stragglers: fastest 3 slow 8×", stragglers, hetero_work),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ideal_accounts_for_joins_leaves_and_slowdowns() {
        let mut s = Scenario {
            name: "t",
            total_units: 1_000,
            devices: vec![SimDevice::new(1, 1.0)],
            latency_ms: 0,
            benchmark_error: 0.0,
            seed: 1,
        };
        assert_eq!(ideal_ms(&s), 1_000);
        s.devices.push(SimDevice {
            joins_ms: 500,
            ..SimDevice::new(1, 1.0)
        });
        assert_eq!(ideal_ms(&s), 750, "500 alone, then 250 at double speed");
        s.devices[0].slowdown = Some((500, 0.0));
        assert_eq!(ideal_ms(&s), 1_000);
    }

    #[test]
    fn every_scenario_finishes_with_every_unit_and_close_to_ideal() {
        for scenario in scenarios() {
            let ours = run(&scenario, Policy::Ours, 3_600_000);
            let ratio = ours
                .ratio()
                .unwrap_or_else(|| panic!("{} did not finish", scenario.name));
            assert!(
                ratio >= 1.0,
                "{}: faster than ideal ({ratio}) means the simulator is wrong",
                scenario.name
            );
            assert!(
                ratio <= 1.10,
                "{}: makespan ÷ ideal = {ratio:.3}",
                scenario.name
            );
        }
    }

    #[test]
    fn runs_are_deterministic() {
        let scenario = &scenarios()[3];
        assert_eq!(
            run(scenario, Policy::Ours, 3_600_000),
            run(scenario, Policy::Ours, 3_600_000)
        );
    }

    #[test]
    fn the_predecessor_policy_also_completes_its_work() {
        let scenario = &scenarios()[0];
        let outcome = run(scenario, Policy::Predecessor(Baseline::HEADLINE), 3_600_000);
        assert!(outcome.ratio().is_some_and(|r| r >= 1.0));
    }
}
