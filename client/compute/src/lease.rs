//! A workload lease in a browser (docs/WORKLOADS.md): its items run one after another in a
//! *runner*, a Web Worker the lease's worker starts and, when an item runs past the owner's
//! time limit, terminates and replaces. The runner posts each item's record of the outputs
//! file as it finishes; this machine keeps them in order, says when the item running now is
//! out of time and where a new runner goes on from, and gives the file and the result at the
//! end. Pure: time comes in as milliseconds, and the wake-up it needs goes out
//! ([`ItemRun::poll`]); `pages/worker.js` is the glue.

use sha2::{Digest, Sha256};
use shared_protocol::{Work, WorkResult};
use workload::{outputs, Failure, FailureKind, Outcome};

/// How long a runner may take to start (load its wasm) before its first item, on top of the
/// time limit: a runner that never starts is replaced like one that never finishes.
pub const START_GRACE_MS: u64 = 30_000;

/// What the glue does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Terminate the runner (`kill`), then have a runner (a new one if killed) run the items
    /// `from..end`, and call [`ItemRun::poll`] again at `wake_at`.
    Run {
        kill: bool,
        from: u64,
        end: u64,
        wake_at: u64,
    },
    /// Wait for the runner, and call [`ItemRun::poll`] again at `wake_at`.
    Wait { wake_at: u64 },
    /// Every item has its record: upload [`ItemRun::file`]. `kill`: the runner was on an
    /// item out of time.
    Done { kill: bool },
}

/// The items of one workload lease, as a browser runs them.
#[derive(Debug, Clone)]
pub struct ItemRun {
    module: String,
    /// The lease's inputs are its job's input set's, fetched with its ticket.
    inputs: bool,
    first: u64,
    next: u64,
    end: u64,
    limit_ms: u64,
    file: Vec<u8>,
    failed: u64,
    unsettled: u64,
    /// When the runner's current item (or its start) is out of time; `None` while no runner
    /// has been told to run.
    deadline: Option<u64>,
}

impl ItemRun {
    /// The run of a workload lease; `Err` for any other work.
    pub fn new(work: &Work) -> Result<Self, String> {
        let Work::Workload {
            module,
            first_item,
            items,
            time_limit_ms,
            inputs,
            ..
        } = work
        else {
            return Err("not a workload lease".into());
        };
        if *items > shared_protocol::MAX_LEASE_ITEMS {
            return Err(format!("a lease of {items} items"));
        }
        Ok(Self {
            module: module.clone(),
            inputs: *inputs,
            first: *first_item,
            next: *first_item,
            end: first_item.saturating_add(*items),
            limit_ms: u64::from(*time_limit_ms),
            file: Vec::new(),
            failed: 0,
            unsettled: 0,
            deadline: None,
        })
    }

    /// The SHA-256 of the lease's module (the name it is fetched and cached by).
    pub fn module(&self) -> &str {
        &self.module
    }

    /// Whether the lease's inputs must be fetched (`GET …/inputs` with its ticket).
    pub fn fetches_inputs(&self) -> bool {
        self.inputs
    }

    /// The inputs of the lease's items, from the records fetched: exactly one per item.
    pub fn split_inputs<'a>(&self, records: &'a [u8]) -> Result<Vec<&'a [u8]>, String> {
        workload::inputs::split(records, self.end.saturating_sub(self.first))
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: u64) -> Step {
        let mut kill = false;
        if let Some(deadline) = self.deadline {
            if now < deadline {
                return Step::Wait { wake_at: deadline };
            }
            // The runner is stuck on item `next` (or never started): that item ran out of
            // time here, and a new runner goes on after it.
            self.push(&Outcome::Failed(Failure::new(
                FailureKind::TimeLimit,
                format!("the item ran past its time limit of {} ms", self.limit_ms),
            )));
            self.deadline = None;
            kill = true;
        }
        if self.next >= self.end {
            return Step::Done { kill };
        }
        let wake_at = now
            .saturating_add(START_GRACE_MS)
            .saturating_add(self.limit_ms);
        self.deadline = Some(wake_at);
        Step::Run {
            kill,
            from: self.next,
            end: self.end,
            wake_at,
        }
    }

    /// The runner began item `item` at `now` (after loading, before its first item).
    pub fn begun(&mut self, now: u64, item: u64) {
        if item == self.next && self.deadline.is_some() {
            self.deadline = Some(now.saturating_add(self.limit_ms));
        }
    }

    /// The runner finished item `item` at `now` with this record, and began the next. A record
    /// of another item (from a runner told to stop) is ignored; a malformed one is an error
    /// and the item is not counted.
    pub fn finished(&mut self, now: u64, item: u64, record: &[u8]) -> Result<(), String> {
        if item != self.next || self.deadline.is_none() {
            return Ok(());
        }
        let outcome = outputs::decode(record, 1)?.pop().ok_or("an empty record")?;
        self.push(&outcome);
        self.deadline = (self.next < self.end).then(|| now.saturating_add(self.limit_ms));
        Ok(())
    }

    fn push(&mut self, outcome: &Outcome) {
        outputs::push(&mut self.file, outcome);
        if matches!(outcome, Outcome::Failed(_)) {
            self.failed += 1;
        }
        if outputs::is_unsettled(outcome) {
            self.unsettled += 1;
        }
        self.next += 1;
    }

    /// The outputs file so far (all of it once [`Step::Done`]).
    pub fn file(&self) -> &[u8] {
        &self.file
    }

    /// The file's name: its SHA-256 in hex.
    pub fn name(&self) -> String {
        workload::module::hex(&Sha256::digest(&self.file).into())
    }

    /// The lease's result, once the file is uploaded and `receipt` is the upload's answer.
    pub fn result(&self, receipt: String) -> WorkResult {
        WorkResult::Workload {
            outputs: self.name(),
            failed: self.failed,
            unsettled: self.unsettled,
            receipt,
        }
    }
}

/// The record of the outputs file for one item's outcome.
pub fn record(outcome: &Outcome) -> Vec<u8> {
    let mut record = Vec::new();
    outputs::push(&mut record, outcome);
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(first_item: u64, items: u64, time_limit_ms: u32) -> Work {
        Work::Workload {
            module: "ab".repeat(32),
            start: 0,
            step: 1,
            first_item,
            items,
            time_limit_ms,
            inputs: false,
        }
    }

    fn output(byte: u8) -> Outcome {
        Outcome::Output(vec![byte; 3])
    }

    #[test]
    fn records_in_item_order_make_the_file_of_the_lease() {
        let mut run = ItemRun::new(&lease(10, 3, 100)).unwrap();
        assert_eq!(
            run.poll(0),
            Step::Run {
                kill: false,
                from: 10,
                end: 13,
                wake_at: START_GRACE_MS + 100
            }
        );
        run.begun(50, 10);
        assert_eq!(run.poll(60), Step::Wait { wake_at: 150 });
        run.finished(70, 10, &record(&output(1))).unwrap();
        // A record of an item not running now changes nothing.
        run.finished(71, 12, &record(&output(9))).unwrap();
        run.finished(72, 10, &record(&output(9))).unwrap();
        assert_eq!(run.poll(80), Step::Wait { wake_at: 170 });
        let module_error = Outcome::Failed(Failure::module_error(b"no"));
        run.finished(90, 11, &record(&module_error)).unwrap();
        run.finished(95, 12, &record(&output(3))).unwrap();
        assert_eq!(run.poll(100), Step::Done { kill: false });
        let want = [output(1), module_error, output(3)];
        assert_eq!(run.file(), outputs::encode(&want));
        assert_eq!(outputs::decode(run.file(), 3).unwrap(), want);
        let WorkResult::Workload {
            outputs: name,
            failed,
            unsettled,
            receipt,
        } = run.result("r".into())
        else {
            panic!("not a workload result")
        };
        assert_eq!(
            name,
            workload::module::hex(&Sha256::digest(outputs::encode(&want)).into())
        );
        assert_eq!((failed, unsettled, receipt.as_str()), (1, 0, "r"));
    }

    #[test]
    fn an_item_out_of_time_fails_and_a_new_runner_goes_on_after_it() {
        let mut run = ItemRun::new(&lease(0, 3, 100)).unwrap();
        run.poll(0);
        run.begun(10, 0);
        run.finished(60, 0, &record(&output(1))).unwrap();
        // Item 1 began at 60: out of time at 160, not before.
        assert_eq!(run.poll(159), Step::Wait { wake_at: 160 });
        assert_eq!(
            run.poll(160),
            Step::Run {
                kill: true,
                from: 2,
                end: 3,
                wake_at: 160 + START_GRACE_MS + 100
            }
        );
        // The terminated runner's late record of item 1 is not taken.
        run.finished(161, 1, &record(&output(7))).unwrap();
        run.begun(300, 2);
        // The last item runs out of time too: done, and that runner is terminated as well.
        assert_eq!(run.poll(400), Step::Done { kill: true });
        let outcomes = outputs::decode(run.file(), 3).unwrap();
        assert_eq!(outcomes[0], output(1));
        for at in [1, 2] {
            let Outcome::Failed(failure) = &outcomes[at] else {
                panic!("item {at} did not fail")
            };
            assert_eq!(failure.kind, FailureKind::TimeLimit);
        }
        assert!(matches!(
            run.result(String::new()),
            WorkResult::Workload {
                failed: 2,
                unsettled: 2,
                ..
            }
        ));
    }

    #[test]
    fn a_runner_that_never_starts_is_replaced() {
        let mut run = ItemRun::new(&lease(0, 2, 5)).unwrap();
        run.poll(0);
        assert_eq!(
            run.poll(START_GRACE_MS + 4),
            Step::Wait {
                wake_at: START_GRACE_MS + 5
            }
        );
        assert!(matches!(
            run.poll(START_GRACE_MS + 5),
            Step::Run {
                kill: true,
                from: 1,
                ..
            }
        ));
    }

    #[test]
    fn a_lease_over_an_input_set_takes_exactly_its_items_inputs() {
        let mut work = lease(4, 2, 100);
        assert!(!ItemRun::new(&work).unwrap().fetches_inputs());
        if let Work::Workload { inputs, .. } = &mut work {
            *inputs = true;
        }
        let run = ItemRun::new(&work).unwrap();
        assert!(run.fetches_inputs());
        let records = workload::inputs::encode([b"a".as_slice(), b"bc"]);
        assert_eq!(
            run.split_inputs(&records).unwrap(),
            [b"a".as_slice(), b"bc"]
        );
        let three = workload::inputs::encode([b"a".as_slice(), b"b", b"c"]);
        assert!(run.split_inputs(&three).is_err());
    }

    #[test]
    fn malformed_records_and_other_work_are_refused() {
        let mut run = ItemRun::new(&lease(0, 2, 5)).unwrap();
        run.poll(0);
        assert!(run.finished(1, 0, &[0, 9, 0, 0, 0]).is_err());
        let mut two = record(&output(1));
        two.extend(record(&output(2)));
        assert!(run.finished(1, 0, &two).is_err());
        assert!(run.file().is_empty(), "nothing was taken");
        assert!(ItemRun::new(&Work::PrimeCount { lo: 0, hi: 10 }).is_err());
        assert!(ItemRun::new(&lease(0, shared_protocol::MAX_LEASE_ITEMS + 1, 5)).is_err());
    }
}
