//! A cheating device for the runtime tests: it speaks the protocol as docs/PROTOCOL.md
//! describes it, joins through an invite, answers its benchmark right (so that it gets work)
//! and then lies about job results by one of the saboteur models. It is part of the tests
//! only; the shipped agent has no such mode.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use shared_protocol::{
    decode_counts, encode_counts, AgentClass, Capabilities, Hello, HelloRole, JoinProof, ToClient,
    ToCoordinator, Work, WorkResult, PROTOCOL_VERSION,
};

use crate::{Received, WsClient};

/// How a cheat lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// Every answer wrong: a prime count plus one, 1 % of a band's pixels off by one, no
    /// nonces.
    Naive,
    /// Right on the leases it guesses are checks (smaller than its usual ones, or arriving
    /// right after it answered), wrong on the rest.
    Smart,
    /// Wrong on every answer, and no answer at all to the leases it guesses are checks.
    IgnoresChecks,
    /// Answers at once without computing: a made-up count, a band of zeros, no nonces.
    FastLiar,
    /// Wrong on one answer in ten, at random.
    Random10,
    /// Like [`Model::Naive`]; two of them give the same wrong answers.
    Colluding,
}

pub const MODELS: [Model; 6] = [
    Model::Naive,
    Model::Smart,
    Model::IgnoresChecks,
    Model::FastLiar,
    Model::Random10,
    Model::Colluding,
];

/// What a cheat did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub answered: usize,
    pub lies: usize,
    /// Lies about leases the coordinator cancelled before it read them (another device's
    /// answer came first, or the job ended): the coordinator ignored those.
    pub void: usize,
    /// The close code, when the coordinator closed it.
    pub closed: Option<u16>,
}

/// The wrong answer a lying device gives for `work` whose right answer is `truth`.
fn wrong(work: &Work, truth: &WorkResult) -> WorkResult {
    match (work, truth) {
        (_, WorkResult::PrimeCount { count }) => WorkResult::PrimeCount { count: count + 1 },
        (Work::Mandelbrot { max_iter, .. }, WorkResult::Mandelbrot { counts }) => {
            let mut decoded = decode_counts(counts).unwrap_or_default();
            for (i, count) in decoded.iter_mut().enumerate() {
                if i % 100 == 7 {
                    *count = if *count == 0 { 1 } else { *count - 1 }.min(*max_iter as u16);
                }
            }
            let widened: Vec<u32> = decoded.iter().map(|&c| u32::from(c)).collect();
            WorkResult::Mandelbrot {
                counts: encode_counts(&widened),
            }
        }
        (_, WorkResult::Sha256Search { .. }) => WorkResult::Sha256Search { nonces: Vec::new() },
        (_, other) => other.clone(),
    }
}

/// An instant made-up answer of the right shape.
fn made_up(work: &Work) -> WorkResult {
    match work {
        Work::PrimeCount { lo, hi } => WorkResult::PrimeCount {
            count: (hi - lo) / 20,
        },
        Work::Mandelbrot { width, rows, .. } => WorkResult::Mandelbrot {
            counts: encode_counts(&vec![0; (*width as usize) * (*rows as usize)]),
        },
        Work::Sha256Search { .. } => WorkResult::Sha256Search { nonces: Vec::new() },
        // Names an outputs file it never uploaded.
        Work::Workload { .. } => WorkResult::Workload {
            outputs: "0".repeat(64),
            failed: 0,
            unsettled: 0,
            receipt: String::new(),
        },
    }
}

/// Joins the swarm at `ws_url` with the invite `token` and cheats by `model` until `stop` is
/// set or the coordinator closes the socket.
pub fn run(
    ws_url: &str,
    token: &str,
    name: &str,
    model: Model,
    seed: u64,
    stop: &AtomicBool,
) -> Result<Report> {
    let mut ws = WsClient::connect(ws_url)?;
    ws.send(&ToCoordinator::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        role: HelloRole::Device {
            name: name.into(),
            capabilities: Capabilities {
                cores: 2,
                memory_mb: None,
                gpu: false,
                agent: AgentClass::Native,
                // It claims to run workloads too, to lie about them.
                workloads: true,
            },
            credential: None,
            invite: Some(JoinProof::Token {
                token: token.to_owned(),
            }),
        },
    }))?;
    anyhow::ensure!(
        matches!(
            ws.recv_message(Duration::from_secs(5))?,
            ToClient::Welcome { .. }
        ),
        "{name} was not welcomed"
    );
    let mut report = Report::default();
    // Leases it lied about: a `cancel_lease` for one of them makes that lie void.
    let mut lied_on = std::collections::BTreeSet::new();
    let mut rng = seed | 1;
    let mut random = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut usual = 0u64;
    let mut last_answer: Option<Instant> = None;
    let mut beat = Instant::now();
    // After the stop, it reads what is left for a moment (the cancellations of a finished job).
    let mut draining: Option<Instant> = None;
    loop {
        if draining.is_none() && stop.load(Ordering::Relaxed) {
            draining = Some(Instant::now());
        }
        if draining.is_some_and(|at| at.elapsed() > Duration::from_millis(500)) {
            break;
        }
        if beat.elapsed() >= Duration::from_secs(1) {
            ws.send(&ToCoordinator::Heartbeat { seen: None })?;
            beat = Instant::now();
        }
        let (lease_id, job_id, work) = match ws.recv(Duration::from_millis(100)) {
            Ok(Received::Message(ToClient::Lease {
                lease_id,
                job_id,
                work,
                ..
            })) => (lease_id, job_id, work),
            Ok(Received::Message(ToClient::CancelLease { lease_id })) => {
                report.void += usize::from(lied_on.remove(&lease_id));
                continue;
            }
            Ok(Received::Closed(code)) => {
                report.closed = code;
                return Ok(report);
            }
            Ok(Received::Message(_)) | Err(_) => continue,
        };
        if draining.is_some() {
            continue;
        }
        let units = client::work::units(&work);
        let looks_like_check = units * 2 < usual
            || last_answer.is_some_and(|at| at.elapsed() < Duration::from_millis(50));
        usual = usual.max(units);
        let honest = job_id == "benchmark";
        let (result, lied) = if honest {
            let truth = client_compute::compute(&work).map_err(anyhow::Error::msg)?;
            (Some(truth), false)
        } else if model == Model::FastLiar {
            (Some(made_up(&work)), true)
        } else {
            let truth = client_compute::compute(&work).map_err(anyhow::Error::msg)?;
            let lie = match model {
                Model::Naive | Model::Colluding | Model::IgnoresChecks | Model::FastLiar => true,
                Model::Smart => !looks_like_check,
                Model::Random10 => random() % 10 == 0,
            };
            if model == Model::IgnoresChecks && looks_like_check {
                (None, false)
            } else if lie {
                let told = wrong(&work, &truth);
                let lied = told != truth;
                (Some(told), lied)
            } else {
                (Some(truth), false)
            }
        };
        let Some(result) = result else {
            continue;
        };
        if !honest {
            report.answered += 1;
            report.lies += usize::from(lied);
            if lied {
                lied_on.insert(lease_id);
            }
        }
        ws.send(&ToCoordinator::ChunkResult {
            lease_id,
            result,
            compute_ms: 1,
            ticket: None,
        })
        .context("sending a result")?;
        last_answer = Some(Instant::now());
    }
    Ok(report)
}
