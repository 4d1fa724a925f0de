//! The restart property, on the simulated clock: restarting the core from its stored records and
//! the attachments of the sockets still open, at random points of random runs, changes no
//! outcome. Every run computes jobs of all three kinds with honest devices beside a device that
//! never answers its benchmark and a stream of wrong code guesses and invite requests, and
//! restarts the core at random. Checked: the final answers equal the native ones; no more wrong
//! guesses are evaluated, and no more invites created, than the limits allow in any window;
//! the unbenchmarked device never gets job work.

mod sim;

use std::collections::BTreeMap;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use shared_protocol::{
    ErrorCode, JobResult, JobSpec, JobState, JoinProof, OwnerCommand, OwnerReply, ToClient,
    ToCoordinator, WorkResult,
};
use swarm_core::{Config, ConnId, Millis};

use sim::*;

/// Runs, each with its own seed; each run restarts the core several times.
const RUNS: u64 = 40;

fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    rng.next_u64() % n.max(1)
}

fn jobs() -> Vec<(JobSpec, JobResult)> {
    let view = kernels::mandelbrot::View {
        center_re: -0.6,
        center_im: 0.0,
        scale: 3.0,
        width: 96,
        height: 64,
        max_iter: 300,
    };
    let inside = (0..view.height)
        .flat_map(|y| (0..view.width).map(move |x| (x, y)))
        .filter(|&(x, y)| kernels::mandelbrot::pixel_escape_count(&view, x, y) == view.max_iter)
        .count() as u64;
    let prefix = "ostrich";
    // The 10 smallest of the range's qualifying nonces: the search stops early, once they are
    // found and everything below the 10th is searched.
    let nonces: Vec<u64> = (0..40_000)
        .filter(|n| kernels::sha256::meets_target(prefix.as_bytes(), *n, 9))
        .take(10)
        .collect();
    assert_eq!(nonces.len(), 10);
    vec![
        (
            JobSpec::PrimeCount {
                lo: 0,
                hi: 100_000_000,
            },
            JobResult::PrimeCount { count: 5_761_455 },
        ),
        (
            JobSpec::Mandelbrot {
                center_re: view.center_re,
                center_im: view.center_im,
                scale: view.scale,
                width: view.width,
                height: view.height,
                max_iter: view.max_iter,
            },
            JobResult::Mandelbrot {
                inside_pixels: inside,
            },
        ),
        (
            JobSpec::Sha256Search {
                prefix: prefix.into(),
                difficulty_bits: 9,
                lo: 0,
                hi: 40_000,
                want: 10,
            },
            JobResult::Sha256Search { nonces },
        ),
    ]
}

/// Times of the events in any window of `window` ms: at most `max` of them.
fn within_limit(times: &[Millis], window: Millis, max: usize) -> bool {
    times
        .iter()
        .enumerate()
        .all(|(i, t)| times[i..].iter().take_while(|u| **u < t + window).count() <= max)
}

#[test]
fn restarts_at_random_points_change_no_outcome() {
    let expected = jobs();
    let config = Config::default();
    let mut restarts = 0;
    for seed in 0..RUNS {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut sim = Sim::with_config(config.clone());
        // Slow devices (a hundredth of a reference core), so that a job takes many leases.
        let mut honest: Vec<(ConnId, shared_protocol::DeviceCredential)> = (0..3)
            .map(|i| {
                let proof = JoinProof::Token {
                    token: sim.token.clone(),
                };
                let joined = sim.join_with(&format!("honest {i}"), proof).expect("joins");
                sim.answer_benchmark(joined.0, 1_700);
                // One core lent: fewer leases at a time, so a job spans many steps.
                sim.send(joined.0, &ToCoordinator::SetLend { cores: 1 });
                joined
            })
            .collect();
        let mute = sim
            .join_with(
                "mute",
                JoinProof::Token {
                    token: sim.token.clone(),
                },
            )
            .expect("the mute device joins")
            .0;
        let job_ids: Vec<String> = expected
            .iter()
            .map(|(spec, _)| {
                match sim
                    .owner(OwnerCommand::SubmitJob { job: spec.clone() })
                    .expect("submitted")
                {
                    OwnerReply::JobSubmitted { job_id } => job_id,
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        let mut evaluated: BTreeMap<String, Vec<Millis>> = BTreeMap::new();
        let mut invites: Vec<Millis> = vec![sim.now];
        for step in 0..20_000 {
            // The honest devices answer, right, some of what they hold: each lease "takes 2 s".
            for (conn, _) in &honest {
                let held: Vec<ToClient> = sim.take(*conn);
                let mut later = Vec::new();
                for message in held {
                    match message {
                        ToClient::Lease { lease_id, work, .. } if below(&mut rng, 2) == 0 => {
                            let result: WorkResult =
                                client_compute::compute(&work).expect("computable work");
                            sim.send(
                                *conn,
                                &ToCoordinator::ChunkResult {
                                    lease_id,
                                    result,
                                    compute_ms: 2_000,
                                    ticket: None,
                                },
                            );
                        }
                        lease @ ToClient::Lease { .. } => later.push(lease),
                        _ => {}
                    }
                }
                sim.inbox.entry(*conn).or_default().extend(later);
            }
            for message in sim.take(mute) {
                if let ToClient::Lease { job_id, .. } = message {
                    assert_eq!(
                        job_id, "benchmark",
                        "run {seed}: an unbenchmarked device got job work"
                    );
                }
            }
            if job_ids
                .iter()
                .all(|id| sim.core.job(id).is_some_and(|j| j.state == JobState::Done))
            {
                break;
            }
            match below(&mut rng, 100) {
                0..=29 => {
                    restarts += 1;
                    let mut seed_bytes = [0u8; 32];
                    rng.fill_bytes(&mut seed_bytes);
                    sim.restart_with_seed(seed_bytes);
                }
                30..=34 => {
                    // A device drops and comes back with its credential.
                    let at = below(&mut rng, honest.len() as u64) as usize;
                    let (conn, cred) = honest[at].clone();
                    sim.disconnect(conn);
                    let back = sim.connect();
                    // Its benchmark is answered with its other leases below.
                    sim.send(back, &device_hello("back", Some(cred.clone())));
                    honest[at] = (back, cred);
                }
                35..=59 => {
                    let source = format!("10.0.0.{}", below(&mut rng, 2));
                    let conn = sim.connect_from(&source);
                    let code = format!("ZZZZZ-{:05}", below(&mut rng, 100_000));
                    sim.send(
                        conn,
                        &new_device_hello("guess", Some(JoinProof::Code { code })),
                    );
                    if let Some(ToClient::Error {
                        code: ErrorCode::InviteInvalid,
                        ..
                    }) = sim.take(conn).pop()
                    {
                        evaluated.entry(source).or_default().push(sim.now);
                    }
                }
                60..=64 => {
                    if sim.create_invite(None, None).is_ok() {
                        invites.push(sim.now);
                    }
                }
                _ => sim.advance(below(&mut rng, 1_500)),
            }
            // Heartbeats keep the honest devices online through long runs.
            if step % 50 == 0 {
                for (conn, _) in &honest {
                    sim.send(*conn, &ToCoordinator::Heartbeat { seen: None });
                }
                // The mute device stays connected too, so that the check below keeps checking.
                sim.send(mute, &ToCoordinator::Heartbeat { seen: None });
            }
        }
        assert!(
            !sim.closed.contains_key(&mute),
            "run {seed}: the unbenchmarked device stayed connected throughout"
        );
        for ((_, want), job_id) in expected.iter().zip(&job_ids) {
            let job = sim.core.job(job_id).expect("the job is known");
            assert_eq!(job.state, JobState::Done, "run {seed}: {job:?}");
            assert_eq!(&job.result, want, "run {seed}");
        }
        let window = config.rate_window_ms;
        for (source, times) in &evaluated {
            assert!(
                within_limit(times, window, config.code_guesses_per_source),
                "run {seed}: {source} had more guesses evaluated than the limit"
            );
        }
        let mut all: Vec<Millis> = evaluated.values().flatten().copied().collect();
        all.sort_unstable();
        assert!(
            within_limit(&all, window, 2 * config.code_guesses_per_minute as usize),
            "run {seed}: more guesses than the shared budget allows"
        );
        assert!(
            within_limit(&invites, window, config.invites_per_minute),
            "run {seed}: more invites than the limit"
        );
    }
    println!("restart property: {RUNS} runs, {restarts} restarts");
    assert!(
        restarts >= RUNS * 3 / 2,
        "too few restarts to mean anything"
    );
}
