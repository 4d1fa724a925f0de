//! Verification of results from untrusted devices: trust-adaptive replication with
//! credibility, after BOINC's adaptive replication and Sarmenta's credibility-based fault
//! tolerance.
//!
//! Every device has a [`Credibility`]. A device is *trusted* once its last
//! [`VerifyPolicy::trust_after`] replicated results in a row were confirmed by other devices.
//! A result of a device that is not trusted is always replicated; one of a trusted device with
//! probability 1 / [`VerifyPolicy::audit_one_in`], drawn when its lease is issued so that the
//! replica (an *audit*) can run alongside it. A device that joined with the owner key is
//! the owner's own machine: the owner vouches for it, and its results are not replicated (its
//! replicas of others' results count like anyone's). A replica is computed by another device
//! and compared by the canonical digest of the whole result ([`crate::kinds::digest`]). Two
//! equal digests from two devices settle a range. After a disagreement, more replicas are
//! asked for (from trusted devices while there are any) until one digest leads every other by
//! [`VerifyPolicy::dispute_lead`] votes (so that a few accomplices cannot outvote honest
//! devices), or two trusted devices agree on it and no trusted device answered otherwise, or
//! it is the answer of a device the owner vouches for; when nobody else can be asked, a lead
//! of one decides ([`Verifier::settle`]). Every device that answered otherwise loses. A device
//! contradicted in an open disagreement gathers no streak meanwhile; an expired lease breaks a
//! device's streak.
//!
//! An *unsettled* answer (an own workload's outputs with a failure that depends on the device:
//! an item ran out of time or stack there, [`Answer::unsettled`]) is always replicated, and
//! while any settled answer exists it neither votes, wins nor loses: a slow honest device is
//! not outvoted into quarantine by a fast one, nor does it dispute it. Answers that are all
//! unsettled are compared like any (two devices that both ran out of time on the same items
//! agree), and their devices gather no streak and never lose.
//!
//! This is a state machine of its own: the job board ([`crate::jobs`]) tells it what arrived
//! and does what its [`Verdict`]s say (queue a replica, quarantine a loser); it knows nothing of
//! sockets, storage or the scheduler. Time plays no part: a replica's deadline is the lease's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A device's record of verification, stored with the device (its row is written when it
/// changes), so it survives reconnects and restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credibility {
    /// Its replicated results confirmed in a row, since it last let a lease expire.
    #[serde(default)]
    pub streak: u32,
    /// Its results that a replica confirmed.
    #[serde(default)]
    pub confirmed: u64,
    /// Its results that were replicated (confirmed, disputed or still open).
    #[serde(default)]
    pub replicated: u64,
    /// Disagreements it was part of.
    #[serde(default)]
    pub disputed: u64,
    /// Leases it let expire.
    #[serde(default)]
    pub expired: u64,
    /// It joined with the owner key: the owner vouches for it.
    #[serde(default)]
    pub vouched: bool,
}

impl Credibility {
    pub fn trusted(&self, policy: &VerifyPolicy) -> bool {
        self.vouched || self.streak >= policy.trust_after
    }
}

/// How much verification costs and buys. See ARCHITECTURE.md (*Verification*) for how the
/// defaults follow from the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// Confirmed results in a row that make a device trusted.
    pub trust_after: u32,
    /// A trusted device's result is replicated with probability 1 / this.
    pub audit_one_in: u64,
    /// Once answers disagree, the votes one answer needs beyond every other before it wins
    /// (while other devices can still be asked): a group of colluders with identical wrong
    /// answers wins only if it has this many more members than there are honest devices left
    /// to ask.
    pub dispute_lead: u32,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        Self {
            trust_after: 110,
            audit_one_in: 16,
            dispute_lead: 6,
        }
    }
}

/// The canonical digest of a result (SHA-256).
pub type Digest = [u8; 32];

/// A range of a job's units.
pub type Range = (u64, u64);

/// What the job board must do after a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing: the range is settled (or was not open).
    Settled,
    /// Queue a replica of the range for a device other than these.
    Replicate { exclude: Vec<String> },
    /// The range is settled: these devices answered otherwise and lost (quarantine them, take
    /// their parts out). `winners` agreed.
    Decided {
        winners: Vec<String>,
        losers: Vec<String>,
    },
}

/// A device's answer for a range: its digest, and whether it is unsettled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub digest: Digest,
    /// It holds a failure that depends on the device (see the module's docs).
    pub unsettled: bool,
}

impl From<Digest> for Answer {
    fn from(digest: Digest) -> Self {
        Self {
            digest,
            unsettled: false,
        }
    }
}

/// The answers given for an open range, first (the one merged into the job) first.
#[derive(Debug, Clone, Default)]
struct Open {
    answers: Vec<(String, Digest)>,
    /// The devices whose answers are unsettled.
    unsettled: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Verifier {
    policy: VerifyPolicy,
    credibility: BTreeMap<String, Credibility>,
    /// Ranges of the running job waiting for a replica to agree.
    open: BTreeMap<Range, Open>,
}

impl Verifier {
    pub fn new(policy: VerifyPolicy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    pub fn policy(&self) -> &VerifyPolicy {
        &self.policy
    }

    /// A device's credibility as stored (when it registers, and after a restart).
    pub fn load(&mut self, device: &str, credibility: Credibility) {
        self.credibility.insert(device.to_owned(), credibility);
    }

    pub fn credibility(&self, device: &str) -> Credibility {
        self.credibility.get(device).copied().unwrap_or_default()
    }

    /// Whether a device's results are trusted: it is vouched for, or has earned it.
    pub fn trusted(&self, device: &str) -> bool {
        self.credibility(device).trusted(&self.policy)
    }

    /// Whether the device answered an open range on which the answers disagree.
    fn disputed_now(&self, device: &str) -> bool {
        self.open.values().any(|o| {
            o.answers.iter().any(|(d, _)| d == device)
                && o.answers
                    .iter()
                    .any(|(_, digest)| Some(digest) != o.answers.first().map(|(_, d)| d))
        })
    }

    /// The device is gone for good (removed).
    pub fn forget_device(&mut self, device: &str) {
        self.credibility.remove(device);
    }

    /// A new job starts (or the running one ended): no range is open.
    pub fn clear(&mut self) {
        self.open.clear();
    }

    /// Open ranges whose first answer came from this device.
    pub fn open_of(&self, device: &str) -> usize {
        self.open
            .values()
            .filter(|o| o.answers.first().is_some_and(|(d, _)| d == device))
            .count()
    }

    /// The ranges that wait for a replica.
    pub fn open_ranges(&self) -> impl Iterator<Item = Range> + '_ {
        self.open.keys().copied()
    }

    /// Whether no range waits for a replica.
    pub fn is_settled(&self) -> bool {
        self.open.is_empty()
    }

    /// Units of the ranges that wait for a replica (only they are visited, not every part).
    pub fn open_units(&self) -> u64 {
        self.open
            .keys()
            .map(|(lo, hi)| hi.saturating_sub(*lo))
            .fold(0, u64::saturating_add)
    }

    /// Whether a range waits for a replica.
    pub fn is_open(&self, range: Range) -> bool {
        self.open.contains_key(&range)
    }

    /// Whether a lease about to be issued to `device` gets a replica leased alongside it, to
    /// another device: a trusted device's when `draw` (uniform below
    /// [`VerifyPolicy::audit_one_in`]) is 0. Drawn when the lease is issued rather than when
    /// its result arrives, so that the audit runs at the same time and a job does not wait
    /// for its last audits after its last results. (An untrusted device's results are all
    /// replicated once they arrive: a device caught lying wastes no replicas of work it had
    /// not yet returned.)
    pub fn replicate_on_issue(&self, device: &str, draw: u64) -> bool {
        self.audited_on_issue(device) && draw == 0
    }

    /// Whether `device`'s leases are drawn for when they go out (it is trusted, and not
    /// vouched for).
    pub fn audited_on_issue(&self, device: &str) -> bool {
        let cred = self.credibility(device);
        !cred.vouched && cred.trusted(&self.policy)
    }

    /// Whether a first answer from `device` is replicated, given whether its lease was drawn
    /// for when it was issued (`drawn`, [`Verifier::replicate_on_issue`]): an untrusted
    /// device's always, a trusted device's when it was not drawn for then and `draw` is 0
    /// now, a vouched device's never. A replica drawn at issue is the caller's to know of.
    pub fn replicate_on_answer(&self, device: &str, drawn: bool, draw: u64) -> bool {
        let cred = self.credibility(device);
        !cred.vouched && (!cred.trusted(&self.policy) || (!drawn && draw == 0))
    }

    /// The first result for a range, merged into the job by the caller. `audited` says that a
    /// replica was drawn for it ([`Verifier::replicate_on_issue`]) and is still to answer: a
    /// trusted device's result is replicated only then, an untrusted device's always, a
    /// vouched device's never.
    pub fn first(
        &mut self,
        device: &str,
        range: Range,
        answer: impl Into<Answer>,
        audited: bool,
    ) -> Verdict {
        let answer = answer.into();
        if !answer.unsettled
            && (self.credibility(device).vouched || (self.trusted(device) && !audited))
        {
            return Verdict::Settled;
        }
        let cred = self.credibility.entry(device.to_owned()).or_default();
        cred.replicated = cred.replicated.saturating_add(1);
        self.reopen(device, range, answer)
    }

    /// Opens a range whose merged answer came from `device`, so that a replica must agree
    /// with it: a first result (counted in its `replicated` by [`Verifier::first`]), or one
    /// restored after a restart or whose confirmation was withdrawn (already counted).
    pub fn reopen(&mut self, device: &str, range: Range, answer: impl Into<Answer>) -> Verdict {
        let answer = answer.into();
        self.open.insert(
            range,
            Open {
                answers: vec![(device.to_owned(), answer.digest)],
                unsettled: answer
                    .unsettled
                    .then(|| device.to_owned())
                    .into_iter()
                    .collect(),
            },
        );
        Verdict::Replicate {
            exclude: vec![device.to_owned()],
        }
    }

    /// The devices that answered an open range.
    pub fn answerers(&self, range: Range) -> Vec<String> {
        self.open
            .get(&range)
            .map(|o| o.answers.iter().map(|(d, _)| d.clone()).collect())
            .unwrap_or_default()
    }

    /// A replica's result for a range. The range is decided once one digest leads every other
    /// by two votes — or by one, when `more_devices` says no other device could be asked (so
    /// that a small swarm is not stuck); until then every answer so far is excluded from the
    /// next replica.
    pub fn replica(
        &mut self,
        device: &str,
        range: Range,
        answer: impl Into<Answer>,
        more_devices: bool,
    ) -> Verdict {
        let Answer { digest, unsettled } = answer.into();
        let Some(open) = self.open.get_mut(&range) else {
            return Verdict::Settled;
        };
        if open.answers.iter().any(|(d, _)| d == device) {
            return Verdict::Settled;
        }
        open.answers.push((device.to_owned(), digest));
        if unsettled && !open.unsettled.iter().any(|d| d == device) {
            open.unsettled.push(device.to_owned());
        }
        let dispute_lead = usize::try_from(self.policy.dispute_lead).unwrap_or(usize::MAX);
        let credibility = &self.credibility;
        let policy = &self.policy;
        // The answers that vote: the settled ones, or all when every answer is unsettled.
        let is_unsettled = |device: &String| open.unsettled.contains(device);
        let all_unsettled = open.answers.iter().all(|(d, _)| is_unsettled(d));
        let voting: Vec<&(String, Digest)> = open
            .answers
            .iter()
            .filter(|(d, _)| all_unsettled || !is_unsettled(d))
            .collect();
        let vouched = |device: &String| credibility.get(device).is_some_and(|c| c.vouched);
        let trusted = |device: &String| credibility.get(device).is_some_and(|c| c.trusted(policy));
        // Votes of trusted devices for a digest, and against it.
        let trusted_votes = |digest: &Digest| {
            let (mine, others): (Vec<&&(String, Digest)>, Vec<_>) = voting
                .iter()
                .filter(|(device, _)| trusted(device))
                .partition(|(_, d)| d == digest);
            (mine.len(), others.len())
        };
        let votes = |digest: &Digest| voting.iter().filter(|(_, d)| d == digest).count();
        // How far a digest leads the best other one.
        let lead = |digest: &Digest| {
            let others = voting
                .iter()
                .filter(|(_, d)| d != digest)
                .map(|(_, d)| votes(d))
                .max()
                .unwrap_or(0);
            votes(digest).saturating_sub(others)
        };
        let winner = voting
            .iter()
            .find(|(device, _)| vouched(device))
            .map(|(_, d)| *d)
            .or_else(|| {
                let agreed = voting
                    .iter()
                    .all(|(_, d)| Some(d) == voting.first().map(|(_, f)| f));
                let needed = match (agreed, more_devices) {
                    (true, _) => 2,
                    (false, true) => dispute_lead,
                    (false, false) => 1,
                };
                voting.iter().map(|(_, d)| *d).find(|d| {
                    (votes(d) >= 2 && lead(d) >= needed)
                        || trusted_votes(d).0 >= 2 && trusted_votes(d).1 == 0
                })
            });
        let Some(winner) = winner else {
            let exclude: Vec<String> = open.answers.iter().map(|(d, _)| d.clone()).collect();
            return Verdict::Replicate { exclude };
        };
        let Some(open) = self.open.remove(&range) else {
            return Verdict::Settled;
        };
        // An unsettled answer neither wins nor loses while settled ones vote; when all are
        // unsettled, those with the winning digest win, but gather no streak.
        let (winners, others): (Vec<_>, Vec<_>) = open
            .answers
            .into_iter()
            .filter(|(d, _)| all_unsettled || !open.unsettled.contains(d))
            .partition(|(_, d)| *d == winner);
        let losers: Vec<_> = others
            .into_iter()
            .filter(|(d, _)| !open.unsettled.contains(d))
            .collect();
        if !losers.is_empty() {
            for (device, _) in winners.iter().chain(&losers) {
                let cred = self.credibility.entry(device.clone()).or_default();
                cred.disputed = cred.disputed.saturating_add(1);
            }
        }
        // A device that some other device contradicts elsewhere gathers no streak until that
        // is settled: colluders cannot confirm each other into trust while honest devices
        // dispute them.
        let frozen: Vec<bool> = winners
            .iter()
            .map(|(device, _)| self.disputed_now(device) || open.unsettled.contains(device))
            .collect();
        for ((device, _), frozen) in winners.iter().zip(frozen) {
            let cred = self.credibility.entry(device.clone()).or_default();
            if !frozen {
                cred.streak = cred.streak.saturating_add(1);
            }
            cred.confirmed = cred.confirmed.saturating_add(1);
        }
        Verdict::Decided {
            winners: winners.into_iter().map(|(d, _)| d).collect(),
            losers: losers.into_iter().map(|(d, _)| d).collect(),
        }
    }

    /// Decides an open range with the answers it has, because no other device can be asked: a
    /// lead of one is enough (a tie, or a single answer, stays open).
    pub fn settle(&mut self, range: Range) -> Verdict {
        let Some(open) = self.open.get_mut(&range) else {
            return Verdict::Settled;
        };
        // The last answer is given again as if it had just arrived, with nobody left to ask.
        let Some((device, digest)) = open.answers.pop() else {
            return Verdict::Settled;
        };
        if open.answers.is_empty() {
            open.answers.push((device, digest));
            return Verdict::Settled;
        }
        let unsettled = open.unsettled.contains(&device);
        match self.replica(&device, range, Answer { digest, unsettled }, false) {
            Verdict::Decided { winners, losers } => Verdict::Decided { winners, losers },
            _ => Verdict::Settled,
        }
    }

    /// A device let a lease expire: its streak starts again.
    pub fn expired(&mut self, device: &str) {
        let cred = self.credibility.entry(device.to_owned()).or_default();
        cred.streak = 0;
        cred.expired = cred.expired.saturating_add(1);
    }

    /// A device was caught (quarantined): its answers leave every open range. Ranges it
    /// answered first are closed (the caller takes its parts out and computes them again);
    /// returns the ranges where it was a replica and which now need another.
    pub fn caught(&mut self, device: &str) -> Vec<(Range, Vec<String>)> {
        if let Some(cred) = self.credibility.get_mut(device) {
            cred.streak = 0;
        }
        self.open
            .retain(|_, o| o.answers.first().is_none_or(|(d, _)| d != device));
        let mut again = Vec::new();
        for (range, open) in &mut self.open {
            let before = open.answers.len();
            open.answers.retain(|(d, _)| d != device);
            if open.answers.len() != before {
                let mut exclude: Vec<String> =
                    open.answers.iter().map(|(d, _)| d.clone()).collect();
                exclude.push(device.to_owned());
                again.push((*range, exclude));
            }
        }
        again
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RIGHT: Digest = [1; 32];
    const WRONG: Digest = [2; 32];

    fn trusted(v: &mut Verifier, device: &str) {
        v.load(
            device,
            Credibility {
                streak: v.policy().trust_after,
                ..Credibility::default()
            },
        );
    }

    #[test]
    fn an_untrusted_result_is_always_replicated_and_agreement_builds_trust() {
        let mut v = Verifier::new(VerifyPolicy {
            trust_after: 2,
            ..VerifyPolicy::default()
        });
        for round in 0..2u64 {
            let range = (round * 10, round * 10 + 10);
            assert!(!v.trusted("a"));
            assert_eq!(
                v.first("a", range, RIGHT, false),
                Verdict::Replicate {
                    exclude: vec!["a".into()]
                }
            );
            assert_eq!(
                v.replica("b", range, RIGHT, true),
                Verdict::Decided {
                    winners: vec!["a".into(), "b".into()],
                    losers: vec![]
                }
            );
        }
        assert!(v.trusted("a"));
        assert!(!v.replicate_on_issue("a", 5));
        assert!(v.replicate_on_issue("a", 0), "drawn");
        assert!(
            !v.replicate_on_issue("c", 0),
            "c is not trusted: replicated on answer"
        );
        assert!(v.replicate_on_answer("c", true, 5));
        assert!(
            !v.replicate_on_answer("a", true, 0),
            "drawn for at issue already"
        );
        assert!(v.replicate_on_answer("a", false, 0));
        assert!(!v.replicate_on_answer("a", false, 5));
        assert_eq!(v.first("a", (50, 60), RIGHT, false), Verdict::Settled);
        assert_ne!(
            v.first("a", (60, 70), RIGHT, true),
            Verdict::Settled,
            "drawn"
        );
        let cred = v.credibility("a");
        assert_eq!((cred.confirmed, cred.replicated), (2, 3));
    }

    #[test]
    fn a_disagreement_asks_more_devices_until_one_answer_leads_by_two() {
        let mut v = Verifier::new(VerifyPolicy {
            dispute_lead: 2,
            ..VerifyPolicy::default()
        });
        v.first("liar", (0, 10), WRONG, true);
        assert_eq!(
            v.replica("honest", (0, 10), RIGHT, true),
            Verdict::Replicate {
                exclude: vec!["liar".into(), "honest".into()]
            }
        );
        assert_eq!(
            v.replica("honest", (0, 10), RIGHT, true),
            Verdict::Settled,
            "no double vote"
        );
        // Two against one is not enough: the second might be the liar's accomplice.
        assert!(matches!(
            v.replica("third", (0, 10), RIGHT, true),
            Verdict::Replicate { .. }
        ));
        assert_eq!(
            v.replica("fourth", (0, 10), RIGHT, true),
            Verdict::Decided {
                winners: vec!["honest".into(), "third".into(), "fourth".into()],
                losers: vec!["liar".into()]
            }
        );
        assert_eq!(v.credibility("liar").disputed, 1);
        assert_eq!(v.credibility("fourth").disputed, 1);
        assert!(!v.is_open((0, 10)));
    }

    #[test]
    fn the_owners_own_devices_are_not_replicated() {
        let mut v = Verifier::new(VerifyPolicy::default());
        v.load(
            "mine",
            Credibility {
                vouched: true,
                ..Credibility::default()
            },
        );
        assert_eq!(v.first("mine", (0, 10), RIGHT, true), Verdict::Settled);
    }

    #[test]
    fn the_owners_device_settles_a_disagreement_alone() {
        let mut v = Verifier::new(VerifyPolicy::default());
        v.load(
            "mine",
            Credibility {
                vouched: true,
                ..Credibility::default()
            },
        );
        v.first("liar", (0, 10), WRONG, true);
        assert_eq!(
            v.replica("mine", (0, 10), RIGHT, true),
            Verdict::Decided {
                winners: vec!["mine".into()],
                losers: vec!["liar".into()]
            }
        );
    }

    #[test]
    fn an_accomplice_cannot_outvote_one_honest_device() {
        let mut v = Verifier::new(VerifyPolicy {
            dispute_lead: 2,
            ..VerifyPolicy::default()
        });
        v.first("liar", (0, 10), WRONG, true);
        v.replica("honest", (0, 10), RIGHT, true);
        // The accomplice agrees with the liar: 2 against 1, undecided.
        assert!(matches!(
            v.replica("accomplice", (0, 10), WRONG, true),
            Verdict::Replicate { .. }
        ));
        v.replica("second", (0, 10), RIGHT, true);
        // 3 against 2: still undecided.
        assert!(matches!(
            v.replica("third", (0, 10), RIGHT, true),
            Verdict::Replicate { .. }
        ));
        assert_eq!(
            v.replica("fourth", (0, 10), RIGHT, true),
            Verdict::Decided {
                winners: vec![
                    "honest".into(),
                    "second".into(),
                    "third".into(),
                    "fourth".into()
                ],
                losers: vec!["liar".into(), "accomplice".into()]
            }
        );
    }

    #[test]
    fn with_nobody_else_to_ask_a_majority_of_one_decides() {
        let mut v = Verifier::new(VerifyPolicy::default());
        v.first("liar", (0, 10), WRONG, true);
        v.replica("honest", (0, 10), RIGHT, false);
        assert_eq!(
            v.replica("third", (0, 10), RIGHT, false),
            Verdict::Decided {
                winners: vec!["honest".into(), "third".into()],
                losers: vec!["liar".into()]
            }
        );
    }

    #[test]
    fn a_device_contradicted_elsewhere_gathers_no_streak() {
        let mut v = Verifier::new(VerifyPolicy::default());
        v.first("liar", (0, 10), WRONG, true);
        v.replica("honest", (0, 10), RIGHT, true);
        // Meanwhile an accomplice confirms another of the liar's results.
        v.first("liar", (10, 20), WRONG, true);
        v.replica("accomplice", (10, 20), WRONG, true);
        assert_eq!(v.credibility("liar").streak, 0, "frozen while disputed");
        assert_eq!(v.credibility("accomplice").streak, 1);
    }

    #[test]
    fn two_trusted_devices_settle_a_dispute_with_untrusted_ones() {
        let mut v = Verifier::new(VerifyPolicy::default());
        trusted(&mut v, "t1");
        trusted(&mut v, "t2");
        v.first("liar", (0, 10), WRONG, true);
        assert!(matches!(
            v.replica("t1", (0, 10), RIGHT, true),
            Verdict::Replicate { .. }
        ));
        assert_eq!(
            v.replica("t2", (0, 10), RIGHT, true),
            Verdict::Decided {
                winners: vec!["t1".into(), "t2".into()],
                losers: vec!["liar".into()]
            }
        );
    }

    fn unsettled(digest: Digest) -> Answer {
        Answer {
            digest,
            unsettled: true,
        }
    }

    #[test]
    fn an_unsettled_answer_neither_votes_nor_loses_while_a_settled_one_exists() {
        let mut v = Verifier::new(VerifyPolicy {
            trust_after: 1,
            ..VerifyPolicy::default()
        });
        v.first("fast", (0, 10), RIGHT, false);
        // The slow device ran out of time on an item: no dispute, more replicas.
        assert_eq!(
            v.replica("slow", (0, 10), unsettled(WRONG), true),
            Verdict::Replicate {
                exclude: vec!["fast".into(), "slow".into()]
            }
        );
        // Nobody else to ask: the settled answer alone does not decide, nor does a lead of
        // one over an answer that does not vote.
        assert_eq!(v.settle((0, 10)), Verdict::Settled);
        assert!(v.is_open((0, 10)));
        // A second settled answer agrees: decided as if the slow device had not answered.
        assert_eq!(
            v.replica("other", (0, 10), RIGHT, true),
            Verdict::Decided {
                winners: vec!["fast".into(), "other".into()],
                losers: vec![]
            }
        );
        assert_eq!(v.credibility("slow").disputed, 0);
        assert_eq!(v.credibility("fast").disputed, 0);
        assert!(v.trusted("fast"));
        assert!(!v.trusted("slow"));
    }

    #[test]
    fn unsettled_answers_alone_are_compared_and_earn_no_trust() {
        let mut v = Verifier::new(VerifyPolicy {
            trust_after: 1,
            ..VerifyPolicy::default()
        });
        v.load(
            "mine",
            Credibility {
                vouched: true,
                ..Credibility::default()
            },
        );
        trusted(&mut v, "old");
        // Not even the owner's device or a trusted one settles an item that ran out of time
        // there: another device may finish it.
        for device in ["mine", "old"] {
            assert!(matches!(
                v.first(device, (0, 10), unsettled(RIGHT), false),
                Verdict::Replicate { .. }
            ));
        }
        assert!(matches!(
            v.first("a", (10, 20), unsettled(RIGHT), false),
            Verdict::Replicate { .. }
        ));
        // Two that ran out of time alike agree; one that differs does not lose.
        assert!(matches!(
            v.replica("b", (10, 20), unsettled(WRONG), true),
            Verdict::Replicate { .. }
        ));
        assert_eq!(
            v.replica("c", (10, 20), unsettled(RIGHT), true),
            Verdict::Replicate {
                exclude: vec!["a".into(), "b".into(), "c".into()]
            },
            "a disagreement among them asks for a lead"
        );
        assert_eq!(
            v.settle((10, 20)),
            Verdict::Decided {
                winners: vec!["a".into(), "c".into()],
                losers: vec![]
            }
        );
        for device in ["a", "b", "c"] {
            let cred = v.credibility(device);
            assert_eq!((cred.streak, cred.disputed), (0, 0), "{device}");
        }
    }

    #[test]
    fn an_expired_lease_breaks_the_streak() {
        let mut v = Verifier::new(VerifyPolicy::default());
        trusted(&mut v, "a");
        assert!(v.trusted("a"));
        v.expired("a");
        assert!(!v.trusted("a"));
        assert_eq!(v.credibility("a").expired, 1);
    }

    #[test]
    fn a_caught_device_leaves_every_open_range() {
        let mut v = Verifier::new(VerifyPolicy::default());
        v.first("cheat", (0, 10), WRONG, true);
        v.first("a", (10, 20), RIGHT, true);
        v.first("b", (20, 30), RIGHT, true);
        v.replica("cheat", (10, 20), WRONG, true);
        let again = v.caught("cheat");
        assert!(!v.is_open((0, 10)), "its own first answers are closed");
        assert_eq!(
            again,
            vec![((10, 20), vec!["a".to_string(), "cheat".to_string()])]
        );
        assert!(v.is_open((10, 20)) && v.is_open((20, 30)));
        assert_eq!(v.open_of("a"), 1);
    }
}
