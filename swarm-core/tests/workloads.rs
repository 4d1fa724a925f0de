//! Workload jobs through the core on a simulated clock: item runs leased only to devices that
//! run workloads, tickets that vouch for one lease's module and items, results that name
//! outputs files, replicas that catch a device naming the wrong file, and where the outputs
//! are (while the job runs, and in the rows written when it ends).

mod sim;

use sha2::{Digest, Sha256};
use shared_protocol::{
    Hello, HelloRole, JobResult, JobSpec, JobState, JoinProof, OwnerCommand, OwnerReply, ToClient,
    ToCoordinator, Work, WorkResult, MAX_LEASE_ITEMS, PROTOCOL_VERSION,
};
use swarm_core::{ConnId, OutputsIndex, StoredOutputs, Vouched};

use sim::*;

const MODULE: &str = "5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e";

/// A lease as a device sees it: id, work and ticket.
type Held = (u64, Work, String);

fn leases(sim: &mut Sim, conn: ConnId) -> Vec<Held> {
    sim.take(conn)
        .into_iter()
        .filter_map(|m| match m {
            ToClient::Lease {
                lease_id,
                work,
                ticket,
                ..
            } => Some((
                lease_id,
                work,
                ticket.expect("protocol 4 leases carry tickets"),
            )),
            _ => None,
        })
        .collect()
}

/// The name of the outputs file an honest device uploads for items `[first, first + items)`:
/// a stand-in for the SHA-256 of the file (the core never sees the file, only its name).
fn honest_name(work: &Work) -> String {
    let Work::Workload {
        first_item, items, ..
    } = work
    else {
        panic!("not a workload lease: {work:?}")
    };
    let name = Sha256::digest(format!("outputs of {first_item}+{items}"));
    name.iter().map(|b| format!("{b:02x}")).collect()
}

/// One failed item in ten (3, 13, 23, …).
fn failed_in(work: &Work) -> u64 {
    let Work::Workload {
        first_item, items, ..
    } = work
    else {
        return 0;
    };
    (*first_item..first_item + items)
        .filter(|i| *i % 10 == 3)
        .count() as u64
}

/// The result naming `outputs` for a lease, with the receipt the upload of that file would be
/// answered with (`None` once no ticket vouches for the lease: the job ended).
fn uploaded(
    sim: &Sim,
    device_id: &str,
    ticket: &str,
    work: &Work,
    outputs: &str,
) -> Option<WorkResult> {
    uploaded_unsettled(sim, device_id, ticket, work, outputs, 0)
}

/// As [`uploaded`], for a file where `unsettled` of the failed items ran out of time or stack
/// on this device.
fn uploaded_unsettled(
    sim: &Sim,
    device_id: &str,
    ticket: &str,
    work: &Work,
    outputs: &str,
    unsettled: u64,
) -> Option<WorkResult> {
    let file = StoredOutputs {
        name: outputs,
        unsettled,
    };
    let vouched = sim.core.vouch(device_id, ticket, Some(file))?;
    Some(WorkResult::Workload {
        outputs: outputs.to_owned(),
        failed: failed_in(work).max(unsettled),
        unsettled,
        receipt: vouched.receipt?,
    })
}

fn submit(sim: &mut Sim, items: u64) -> String {
    let job = JobSpec::Workload {
        module: MODULE.into(),
        start: 1_000,
        step: 2,
        items,
        time_limit_ms: 1_000,
        inputs: None,
    };
    match sim.owner(OwnerCommand::SubmitJob { job }).unwrap() {
        OwnerReply::JobSubmitted { job_id } => job_id,
        other => panic!("{other:?}"),
    }
}

fn answer(sim: &mut Sim, conn: ConnId, lease_id: u64, result: WorkResult) {
    sim.send(
        conn,
        &ToCoordinator::ChunkResult {
            lease_id,
            result,
            compute_ms: 50,
            ticket: None,
        },
    );
}

/// Whether the coordinator told the device on `conn` that its result was bad.
fn refused_as_bad(sim: &mut Sim, conn: ConnId) -> bool {
    sim.take(conn).into_iter().any(|m| {
        matches!(
            m,
            ToClient::Error {
                code: shared_protocol::ErrorCode::BadResult,
                ..
            }
        )
    })
}

/// A device that says it does not run workloads (a browser before its workload runner).
fn join_without_workloads(sim: &mut Sim, name: &str) -> ConnId {
    let conn = sim.connect();
    let mut caps = caps();
    caps.workloads = false;
    sim.send(
        conn,
        &ToCoordinator::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            role: HelloRole::Device {
                name: name.into(),
                capabilities: caps,
                credential: None,
                invite: Some(JoinProof::OwnerKey {
                    owner_key: OWNER_KEY.into(),
                }),
            },
        }),
    );
    sim.answer_benchmark(conn, 2);
    conn
}

#[test]
fn item_runs_go_to_devices_that_run_workloads_and_their_tickets_vouch_for_them_alone() {
    let mut sim = Sim::new();
    let (a, cred_a) = sim.join_device("a");
    let (b, cred_b) = sim.join_device("b");
    let browser = join_without_workloads(&mut sim, "browser");
    let job = submit(&mut sim, 2_000);
    for _ in 0..400 {
        assert!(
            leases(&mut sim, browser).is_empty(),
            "a device that does not run workloads gets no item"
        );
        for (conn, cred) in [(a, &cred_a), (b, &cred_b)] {
            for (lease_id, work, ticket) in leases(&mut sim, conn) {
                let Work::Workload {
                    module,
                    first_item,
                    items,
                    start,
                    step,
                    time_limit_ms,
                    inputs,
                } = &work
                else {
                    panic!("{work:?}")
                };
                assert_eq!(
                    (module.as_str(), *start, *step, *time_limit_ms, *inputs),
                    (MODULE, 1_000, 2, 1_000, false)
                );
                assert!((1..=MAX_LEASE_ITEMS).contains(items), "{items} items");
                if sim.core.job(&job).unwrap().state != JobState::Running {
                    // The last run came back from another device first (a tail lease given
                    // twice): the job ended, and no ticket vouches for anything now.
                    assert_eq!(sim.core.vouch(&cred.device_id, &ticket, None), None);
                    continue;
                }
                assert_eq!(
                    sim.core.vouch(&cred.device_id, &ticket, None),
                    Some(Vouched {
                        job_id: job.clone(),
                        module: MODULE.into(),
                        inputs: Vec::new(),
                        first_item: *first_item,
                        items: *items,
                        receipt: None,
                    })
                );
                let other = if conn == a { &cred_b } else { &cred_a };
                assert_eq!(
                    sim.core.vouch(&other.device_id, &ticket, None),
                    None,
                    "a ticket is its holder's"
                );
                let result = uploaded(&sim, &cred.device_id, &ticket, &work, &honest_name(&work));
                answer(&mut sim, conn, lease_id, result.unwrap());
            }
        }
        if sim.core.job(&job).unwrap().state == JobState::Done {
            break;
        }
        sim.advance(100);
    }
    let view = sim.core.job(&job).unwrap();
    assert_eq!(view.state, JobState::Done);
    // One item in ten failed (3, 13, 23, …), counted once each.
    assert_eq!(view.result, JobResult::Workload { failed: 200 });

    // Once it ended, no ticket vouches for anything, and the outputs are in stored rows that
    // chain from item 0 to the last, each naming what its device uploaded.
    let index = sim.core.outputs_index(&job, 0).unwrap();
    assert!(index.ended() && index.parts.is_empty());
    assert_eq!((index.start, index.step, index.items), (1_000, 2, 2_000));
    let rows: Vec<(u64, u64, String)> = sim
        .store
        .outputs
        .iter()
        .filter(|((j, _), _)| *j == job)
        .map(|((_, lo), (hi, name))| (*lo, *hi, name.clone()))
        .collect();
    let mut next = 0;
    for (lo, hi, name) in &rows {
        assert_eq!(*lo, next, "rows chain without a gap");
        let work = Work::Workload {
            module: MODULE.into(),
            start: 1_000,
            step: 2,
            first_item: *lo,
            items: hi - lo,
            time_limit_ms: 1_000,
            inputs: false,
        };
        assert_eq!(honest_name(&work), *name);
        next = *hi;
    }
    assert_eq!(next, 2_000);
    let chained = OutputsIndex::chain(5, rows.clone());
    assert_eq!(
        chained.first().map(|p| p.0),
        Some(0),
        "the part holding item 5"
    );
    assert_eq!(chained.len(), rows.len().min(OutputsIndex::MAX_PARTS));
}

#[test]
fn while_a_job_runs_its_outputs_are_known_up_to_the_first_unsettled_item() {
    let mut sim = Sim::new();
    let (a, cred) = sim.join_device("a");
    let job = submit(&mut sim, 1_000);
    let mut held = leases(&mut sim, a);
    held.sort_by_key(|(_, work, _)| match work {
        Work::Workload { first_item, .. } => *first_item,
        _ => u64::MAX,
    });
    assert!(held.len() >= 2, "{} leases", held.len());
    // The second run is answered first: nothing is settled from item 0 yet.
    let (second_id, second, ticket) = held[1].clone();
    let result = uploaded(
        &sim,
        &cred.device_id,
        &ticket,
        &second,
        &honest_name(&second),
    );
    answer(&mut sim, a, second_id, result.unwrap());
    let index = sim.core.outputs_index(&job, 0).unwrap();
    assert_eq!(index.state, JobState::Running);
    assert!(index.parts.is_empty(), "{:?}", index.parts);
    let (first_id, first, ticket) = held[0].clone();
    let result = uploaded(&sim, &cred.device_id, &ticket, &first, &honest_name(&first));
    answer(&mut sim, a, first_id, result.unwrap());
    let index = sim.core.outputs_index(&job, 0).unwrap();
    let end = |w: &Work| match w {
        Work::Workload {
            first_item, items, ..
        } => first_item + items,
        _ => 0,
    };
    assert_eq!(index.parts.len(), 2);
    assert_eq!(index.parts[0].1, end(&first));
    assert_eq!(index.parts[1].1, end(&second));
    // Asked from inside the second run, only it is given.
    let index = sim.core.outputs_index(&job, end(&first)).unwrap();
    assert_eq!(index.parts.len(), 1);
    // Another kind of job has no outputs index.
    let primes = match sim
        .owner(OwnerCommand::SubmitJob {
            job: JobSpec::PrimeCount { lo: 0, hi: 100 },
        })
        .unwrap()
    {
        OwnerReply::JobSubmitted { job_id } => job_id,
        other => panic!("{other:?}"),
    };
    assert_eq!(sim.core.outputs_index(&primes, 0), None);
    assert_eq!(sim.core.outputs_index("nope", 0), None);
}

/// Four invited devices run a job of 600 items to its end; `result` says what the device
/// (its id) answers for a lease (`None`: nothing); each step advances the clock by 100 ms.
fn run_four(
    sim: &mut Sim,
    mut result: impl FnMut(&Sim, &str, &Held) -> Option<WorkResult>,
) -> (String, Vec<String>) {
    let devices: Vec<(ConnId, String)> = (0..4)
        .map(|i| {
            let (conn, cred) = sim.join_invited(&format!("d{i}"));
            (conn, cred.device_id)
        })
        .collect();
    let job = submit(sim, 600);
    for _ in 0..600 {
        for (conn, device_id) in &devices {
            for held in leases(sim, *conn) {
                if let Some(answered) = result(sim, device_id, &held) {
                    answer(sim, *conn, held.0, answered);
                }
            }
        }
        if sim.core.job(&job).unwrap().state == JobState::Done {
            break;
        }
        sim.advance(100);
    }
    assert_eq!(sim.core.job(&job).unwrap().state, JobState::Done);
    (job, devices.into_iter().map(|(_, id)| id).collect())
}

/// The names in the outputs rows written when `job` ended, which cover its 600 items.
fn stored_rows(sim: &Sim, job: &str) -> Vec<String> {
    let rows: Vec<_> = sim
        .store
        .outputs
        .iter()
        .filter(|((j, _), _)| *j == job)
        .collect();
    assert_eq!(
        rows.iter().map(|((_, lo), (hi, _))| hi - lo).sum::<u64>(),
        600
    );
    rows.into_iter()
        .map(|(_, (_, name))| name.clone())
        .collect()
}

#[test]
fn a_device_naming_other_outputs_than_its_replicas_is_quarantined_and_its_runs_redone() {
    let mut sim = Sim::new();
    // The first device to get a lease lies: it uploads files of made-up outputs (and gets
    // their receipts).
    let mut liar = None;
    let (job, _) = run_four(&mut sim, |sim, device_id, (_, work, ticket)| {
        let liar = liar.get_or_insert_with(|| device_id.to_owned());
        let name = if device_id == liar {
            "0".repeat(64)
        } else {
            honest_name(work)
        };
        uploaded(sim, device_id, ticket, work, &name)
    });
    let liar = liar.unwrap();
    let liar_view = sim
        .snapshot()
        .devices
        .into_iter()
        .find(|d| d.id == liar)
        .unwrap();
    assert!(liar_view.quarantined, "the liar is quarantined");
    let zero = "0".repeat(64);
    let rows = stored_rows(&sim, &job);
    assert!(
        rows.iter().all(|name| *name != zero),
        "no stored row names the liar's file"
    );
}

#[test]
fn a_device_whose_items_run_out_of_time_is_outvoted_by_none_and_quarantined_never() {
    let mut sim = Sim::new();
    // The first device to get a lease runs out of time on one item of every run: its files
    // differ from everyone else's, and their receipts say one item is unsettled.
    let mut slow = None;
    let mut slow_names = Vec::new();
    let (job, _) = run_four(&mut sim, |sim, device_id, (_, work, ticket)| {
        if slow.get_or_insert_with(|| device_id.to_owned()) == device_id {
            let name = format!("{:0>64}", slow_names.len() + 1);
            slow_names.push(name.clone());
            uploaded_unsettled(sim, device_id, ticket, work, &name, 1)
        } else {
            uploaded(sim, device_id, ticket, work, &honest_name(work))
        }
    });
    assert!(!slow_names.is_empty(), "the slow device computed runs");
    assert_eq!(
        sim.core.job(&job).unwrap().result,
        JobResult::Workload { failed: 60 },
        "the failures counted are those of the winning files"
    );
    let snapshot = sim.snapshot();
    assert!(
        snapshot.devices.iter().all(|d| !d.quarantined),
        "nobody was quarantined: {:?}",
        snapshot.devices
    );
    let rows = stored_rows(&sim, &job);
    assert!(
        rows.iter().all(|name| !slow_names.contains(name)),
        "where others finished the items, their outputs stand"
    );
}

#[test]
fn a_result_that_says_fewer_items_ran_out_of_time_than_its_upload_showed_is_refused() {
    let mut sim = Sim::new();
    let (a, cred) = sim.join_invited("a");
    submit(&mut sim, 50);
    let (lease_id, work, ticket) = leases(&mut sim, a).remove(0);
    let Some(WorkResult::Workload { receipt, .. }) = uploaded_unsettled(
        &sim,
        &cred.device_id,
        &ticket,
        &work,
        &honest_name(&work),
        2,
    ) else {
        panic!("the ticket vouches for the lease")
    };
    let result = WorkResult::Workload {
        outputs: honest_name(&work),
        failed: 2,
        unsettled: 0,
        receipt,
    };
    answer(&mut sim, a, lease_id, result);
    let refused = refused_as_bad(&mut sim, a);
    assert!(refused, "refused with bad_result");
}

#[test]
fn a_result_without_the_receipt_of_its_upload_is_refused_and_its_device_quarantined() {
    let mut sim = Sim::new();
    let (a, cred) = sim.join_device("a");
    let job = submit(&mut sim, 300);
    let (lease_id, work, ticket) = leases(&mut sim, a).remove(0);
    // It names the honest file with the receipt of another file it uploaded.
    let Some(WorkResult::Workload { receipt, .. }) =
        uploaded(&sim, &cred.device_id, &ticket, &work, &"1".repeat(64))
    else {
        panic!("the ticket vouches for the lease")
    };
    let result = WorkResult::Workload {
        outputs: honest_name(&work),
        failed: failed_in(&work),
        unsettled: 0,
        receipt,
    };
    answer(&mut sim, a, lease_id, result);
    let refused = refused_as_bad(&mut sim, a);
    assert!(refused, "the result is refused");
    let view = sim
        .snapshot()
        .devices
        .into_iter()
        .find(|d| d.id == cred.device_id)
        .unwrap();
    assert!(view.quarantined);
    assert_eq!(
        sim.core.job(&job).unwrap().done_units,
        0,
        "nothing of it was taken"
    );
}
