//! The dashboard's velocity history, as plain data: what each snapshot adds, the rates between
//! snapshots per job kind (work units and chunks per second) and for the whole swarm (chunks
//! per second),
//! each device's speed over time, and the SVG polylines that draw them. Clock-free: the
//! coordinator's time comes in each snapshot.

use std::collections::{BTreeMap, VecDeque};

use shared_protocol::{JobSpec, SwarmSnapshot};

use crate::format::fixed;

/// How far back the charts look.
pub const WINDOW_MS: u64 = 10 * 60 * 1000;

/// Speed samples kept per device for its sparkline.
pub const SPARK_POINTS: usize = 60;

/// What one snapshot said, reduced to what the charts need.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    at_ms: u64,
    /// Each job's kind and progress.
    jobs: BTreeMap<String, JobSample>,
    /// Chunks accepted from the listed devices.
    chunks: u64,
}

/// A job's kind, done units and accepted chunks in one snapshot.
#[derive(Debug, Clone, PartialEq)]
struct JobSample {
    kind: Kind,
    units: u64,
    chunks: u64,
}

/// One line of the throughput panel: what it counts, its rate now, and its polyline.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub name: String,
    pub now: String,
    pub line: String,
}

/// A rate at a moment: `(coordinator time, per second)`.
pub type Point = (u64, f64);

/// A kind of job as the charts name it, with the unit its work is counted in.
pub type Kind = (&'static str, &'static str);

/// The kind of a job.
pub fn kind_of(spec: &JobSpec) -> Kind {
    let name = match spec {
        JobSpec::PrimeCount { .. } => "Count primes",
        JobSpec::Mandelbrot { .. } => "Mandelbrot",
        JobSpec::Sha256Search { .. } => "SHA-256 search",
        JobSpec::Workload { .. } => "Workload",
    };
    (name, crate::jobs::unit(spec))
}

/// The last ten minutes of snapshots.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Velocity {
    samples: VecDeque<Sample>,
    speeds: BTreeMap<String, VecDeque<f64>>,
}

impl Velocity {
    /// A snapshot arrived. Snapshots not newer than the last one are ignored.
    pub fn observe(&mut self, snapshot: &SwarmSnapshot) {
        if self
            .samples
            .back()
            .is_some_and(|last| last.at_ms >= snapshot.now_ms)
        {
            return;
        }
        self.samples.push_back(Sample {
            at_ms: snapshot.now_ms,
            jobs: snapshot
                .jobs
                .iter()
                .map(|job| {
                    let sample = JobSample {
                        kind: kind_of(&job.spec),
                        units: job.done_units,
                        chunks: job.chunks_done,
                    };
                    (job.job_id.clone(), sample)
                })
                .collect(),
            chunks: snapshot.devices.iter().map(|d| d.chunks_done).sum(),
        });
        while self
            .samples
            .front()
            .is_some_and(|first| first.at_ms + WINDOW_MS < snapshot.now_ms)
        {
            self.samples.pop_front();
        }
        for device in &snapshot.devices {
            let line = self.speeds.entry(device.id.clone()).or_default();
            line.push_back(device.speed.unwrap_or(0.0) * f64::from(device.in_flight.min(1)));
            if line.len() > SPARK_POINTS {
                line.pop_front();
            }
        }
        self.speeds
            .retain(|id, _| snapshot.devices.iter().any(|d| d.id == *id));
    }

    /// Pairs of consecutive samples with the seconds between them.
    fn steps(&self) -> impl Iterator<Item = (&Sample, &Sample, f64)> {
        self.samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .map(|(a, b)| (a, b, b.at_ms.saturating_sub(a.at_ms).max(1) as f64 / 1000.0))
    }

    /// Work units per second of each job kind that did any work in the window, between
    /// consecutive snapshots (a job counts only while it is in both).
    pub fn units_per_second(&self) -> BTreeMap<Kind, Vec<Point>> {
        self.per_kind(|job| job.units)
    }

    /// Accepted chunks per second of each job kind, as [`Self::units_per_second`].
    pub fn kind_chunks_per_second(&self) -> BTreeMap<Kind, Vec<Point>> {
        self.per_kind(|job| job.chunks)
    }

    fn per_kind(&self, count: impl Fn(&JobSample) -> u64) -> BTreeMap<Kind, Vec<Point>> {
        let mut kinds: BTreeMap<Kind, Vec<Point>> = BTreeMap::new();
        for (a, b, secs) in self.steps() {
            let mut step: BTreeMap<Kind, u64> = BTreeMap::new();
            for (id, job) in &b.jobs {
                if let Some(before) = a.jobs.get(id) {
                    *step.entry(job.kind).or_default() += count(job).saturating_sub(count(before));
                }
            }
            for (kind, done) in step {
                kinds
                    .entry(kind)
                    .or_default()
                    .push((b.at_ms, done as f64 / secs));
            }
        }
        kinds.retain(|_, points| points.iter().any(|(_, rate)| *rate > 0.0));
        kinds
    }

    /// Chunks per second accepted from the listed devices.
    pub fn chunks_per_second(&self) -> Vec<Point> {
        self.steps()
            .map(|(a, b, secs)| (b.at_ms, b.chunks.saturating_sub(a.chunks) as f64 / secs))
            .collect()
    }

    /// What the throughput panel draws: a line per job kind (units per second, labelled with
    /// its units/s and chunks/s now), then one for all chunks, in a `width` × `height` box.
    pub fn charts(&self, width: f64, height: f64) -> Vec<Chart> {
        let now = self.now_ms().unwrap_or(0);
        let last = |points: Option<&Vec<Point>>| {
            points
                .and_then(|points| points.last())
                .map_or(0.0, |(_, rate)| *rate)
        };
        let chunks_of = self.kind_chunks_per_second();
        let mut charts: Vec<Chart> = self
            .units_per_second()
            .into_iter()
            .map(|(kind, points)| {
                let (name, unit) = kind;
                Chart {
                    name: name.to_owned(),
                    now: format!(
                        "{} · {} chunks/s",
                        crate::format::rate(last(Some(&points)), unit),
                        fixed(last(chunks_of.get(&kind)), 1)
                    ),
                    line: polyline(&points, now, width, height),
                }
            })
            .collect();
        let chunks = self.chunks_per_second();
        charts.push(Chart {
            name: "Chunks".to_owned(),
            now: format!("{} chunks/s", fixed(last(Some(&chunks)), 1)),
            line: polyline(&chunks, now, width, height),
        });
        charts
    }

    /// A device's recent speeds (0 while it held no lease), oldest first.
    pub fn speeds_of(&self, device_id: &str) -> Vec<f64> {
        self.speeds
            .get(device_id)
            .map(|line| line.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The newest sample's time.
    pub fn now_ms(&self) -> Option<u64> {
        self.samples.back().map(|s| s.at_ms)
    }
}

/// The `points` attribute of an SVG polyline drawing `points` in a `width` × `height` box: time
/// runs over the last [`WINDOW_MS`] up to `now_ms`, rates from 0 (bottom) to their maximum.
pub fn polyline(points: &[Point], now_ms: u64, width: f64, height: f64) -> String {
    let top = points.iter().map(|(_, r)| *r).fold(0.0, f64::max);
    let start = now_ms.saturating_sub(WINDOW_MS);
    points
        .iter()
        .filter(|(at, _)| *at >= start)
        .map(|(at, rate)| {
            let x = (at - start) as f64 / WINDOW_MS as f64 * width;
            let y = if top > 0.0 {
                height - rate / top * height
            } else {
                height
            };
            format!("{},{}", fixed(x, 1), fixed(y, 1))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `points` of a sparkline: `values` spread evenly over the width, 0 at the bottom.
pub fn sparkline(values: &[f64], width: f64, height: f64) -> String {
    let top = values.iter().copied().fold(0.0, f64::max);
    let step = width / (SPARK_POINTS.max(2) - 1) as f64;
    let offset = width - step * values.len().saturating_sub(1) as f64;
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let y = if top > 0.0 {
                height - v / top * height
            } else {
                height
            };
            format!("{},{}", fixed(offset + step * i as f64, 1), fixed(y, 1))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_protocol::{
        AgentClass, Capabilities, Counters, DeviceStatus, DeviceView, JobResult, JobState, JobView,
        RunState,
    };

    fn job(id: &str, spec: JobSpec, done: u64) -> JobView {
        JobView {
            job_id: id.into(),
            spec,
            state: JobState::Running,
            done_units: done,
            total_units: 1_000_000,
            units_per_second: 0.0,
            eta_ms: None,
            created_ms: 0,
            started_ms: None,
            finished_ms: None,
            result: JobResult::PrimeCount { count: 0 },
            verify_units: 0,
            unverified_units: 0,
            chunks_done: done / 1_000,
        }
    }

    fn device(id: &str, speed: f64, chunks: u64) -> DeviceView {
        DeviceView {
            id: id.into(),
            name: id.into(),
            status: DeviceStatus::Online,
            enabled: true,
            quarantined: false,
            capabilities: Capabilities {
                cores: 2,
                memory_mb: None,
                gpu: false,
                agent: AgentClass::Native,
                workloads: false,
            },
            last_seen_ms: 0,
            registered_ms: 0,
            score: Some(speed),
            speed: Some(speed),
            weight_percent: 100.0,
            in_flight: 1,
            chunks_done: chunks,
            trusted: true,
            confirmed: 0,
            replicated: 0,
            disputed: 0,
        }
    }

    fn snapshot(now_ms: u64, jobs: Vec<JobView>, devices: Vec<DeviceView>) -> SwarmSnapshot {
        SwarmSnapshot {
            swarm_id: "s".into(),
            swarm_name: "s".into(),
            now_ms,
            seq: now_ms / 2000,
            device_total: devices.len() as u32,
            online: devices.len() as u32,
            run_state: RunState::Running,
            throttle_percent: 100,
            jobs,
            devices,
            log: vec![],
            counters: Counters::default(),
        }
    }

    const PRIMES: JobSpec = JobSpec::PrimeCount {
        lo: 0,
        hi: 1_000_000,
    };

    #[test]
    fn rates_come_from_consecutive_snapshots_per_kind_and_for_chunks() {
        let mut v = Velocity::default();
        v.observe(&snapshot(
            0,
            vec![job("a", PRIMES, 0)],
            vec![device("d", 1.0, 0)],
        ));
        v.observe(&snapshot(
            2_000,
            vec![job("a", PRIMES, 10_000)],
            vec![device("d", 1.5, 4)],
        ));
        v.observe(&snapshot(2_000, vec![job("a", PRIMES, 99_999)], vec![]));
        v.observe(&snapshot(
            4_000,
            vec![job("a", PRIMES, 30_000), job("b", PRIMES, 5)],
            vec![device("d", 2.0, 6)],
        ));
        let units = v.units_per_second();
        assert_eq!(
            units[&("Count primes", "numbers")],
            vec![(2_000, 5_000.0), (4_000, 10_000.0)],
            "b was not in the snapshot before"
        );
        assert_eq!(
            v.kind_chunks_per_second()[&("Count primes", "numbers")],
            vec![(2_000, 5.0), (4_000, 10.0)]
        );
        assert_eq!(v.chunks_per_second(), vec![(2_000, 2.0), (4_000, 1.0)]);
        let charts = v.charts(100.0, 10.0);
        assert_eq!(
            charts
                .iter()
                .map(|c| (c.name.as_str(), c.now.as_str()))
                .collect::<Vec<_>>(),
            vec![
                ("Count primes", "10.0 k numbers/s · 10.0 chunks/s"),
                ("Chunks", "1.0 chunks/s")
            ]
        );
        assert_eq!(v.speeds_of("d"), vec![1.0, 1.5, 2.0]);
        assert_eq!(v.now_ms(), Some(4_000));
        // Ten minutes later the old samples are gone, and so is a device no longer listed.
        v.observe(&snapshot(
            WINDOW_MS + 3_000,
            vec![job("a", PRIMES, 30_000)],
            vec![],
        ));
        assert_eq!(v.chunks_per_second(), vec![(WINDOW_MS + 3_000, 0.0)]);
        assert!(
            v.units_per_second().is_empty(),
            "a kind that did nothing has no line"
        );
        assert!(v.speeds_of("d").is_empty());
    }

    #[test]
    fn lines_fill_their_box() {
        let now = WINDOW_MS;
        assert_eq!(
            polyline(&[(0, 0.0), (now / 2, 5.0), (now, 10.0)], now, 100.0, 20.0),
            "0.0,20.0 50.0,10.0 100.0,0.0"
        );
        assert_eq!(
            polyline(&[(now, 0.0)], now, 100.0, 20.0),
            "100.0,20.0",
            "all zero: along the bottom"
        );
        let spark = sparkline(&[1.0, 2.0], 59.0, 10.0);
        assert_eq!(spark, "58.0,5.0 59.0,0.0", "newest at the right edge");
    }
}
