//! The whole-core fuzzer: seeded, structure-aware sequences of inputs through every entry of
//! [`swarm_core::SwarmCore`] — device, viewer and owner sockets, owner commands over HTTP,
//! joins by link token, short code and owner key, hellos with real and forged credentials,
//! results for real, foreign and invented leases, results sent again with their own, other
//! devices' and mangled tickets, the clock and its alarms, restarts of the object — with text drawn from hostile strings and numbers at their edges, and raw byte
//! mutations of valid messages on top.
//!
//! A small oracle ([`Model`]) is kept next to the simulated glue: which sockets are owner
//! dashboards, viewers or devices, which credentials, invites, leases and benchmarks exist,
//! what each input was. After every step ([`Fuzzer::check`]) the fuzzer compares the core
//! with it: the cost counters match what the glue saw, nothing is sent to a socket that is
//! gone, sessions agree with their welcomes, a device registers only with a live invite or
//! the owner key, owner state changes only with the owner key, a job progresses only by an
//! accepted first result for a lease its sender holds (never by a replica's), an untrusted
//! device's result waits for a replica, an unbenchmarked device holds no job lease, an honest
//! answer is never refused on the spot and a provably wrong one always is, a device is
//! quarantined only for a wrong answer of its own or a vote it lost, a job's result is right
//! unless a wrong answer could have got past replication, a restart keeps every job's
//! committed progress (all of it when nothing waited to be committed), and an acknowledgement
//! names only results its device sent.
//!
//! `cargo test` runs a fixed budget of [`DEFAULT_INPUTS`] inputs (every `handle_*` call, every
//! restart); `OSTRICH_FUZZ_INPUTS=N` runs more (`cargo xtask bench`), `OSTRICH_FUZZ_SEED=S`
//! starts from another seed, and `OSTRICH_FUZZ_ONLY=S` replays the one sequence whose seed a
//! failure printed (with `OSTRICH_FUZZ_TRACE=1`, action by action). An ignored variant also
//! hands the core owner commands that the glue's decoder would refuse; what it found is at the
//! end of the file.

mod sim;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::Instant;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use shared_protocol::{
    close_code, decode, decode_counts, encode, encode_counts, normalize_code, request_of,
    AgentClass, Capabilities, ChunkAnswer, DeviceCredential, DeviceShare, DeviceStatus, DeviceView,
    ErrorCode, Hello, HelloRole, JobResult, JobSpec, JobState, JobView, JoinProof, OwnerCommand,
    OwnerReply, RunState, SwarmSnapshot, ToClient, ToCoordinator, WelcomeRole, Work, WorkResult,
    MAX_NONCE_END, MAX_PRIME_END, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use swarm_core::delta::SEEN_LAG_MS;
use swarm_core::{hash_secret, Config, ConnId, DeviceRecord, InviteRecord, Session, BENCH_JOB_ID};

use sim::{caps, Sim, OWNER_KEY};
use swarm_core::verify::Credibility;

/// Inputs the test command runs (at least; sequences are never cut short).
const DEFAULT_INPUTS: u64 = 50_000;

/// The seed of the first sequence when `OSTRICH_FUZZ_SEED` is not set.
const DEFAULT_SEED: u64 = 0x0057_121C_4000_0001;

/// Wire lease ids of job leases carry their job's epoch above this bit (see `jobs.rs`).
const EPOCH_SHIFT: u32 = 32;

// ---------------------------------------------------------------------------------------------
// The entry points.

#[test]
fn the_whole_core_keeps_its_invariants_under_a_seeded_fuzz() {
    fuzz();
}

/// Runs sequences until the input budget is spent (see the module docs for the variables).
fn fuzz() {
    let only = env_u64("OSTRICH_FUZZ_ONLY");
    let budget = env_u64("OSTRICH_FUZZ_INPUTS").map_or(DEFAULT_INPUTS, |n| n.max(DEFAULT_INPUTS));
    let seed = env_u64("OSTRICH_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let trace = std::env::var_os("OSTRICH_FUZZ_TRACE").is_some();
    let hostile = hostile_strings();
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut sequences: u64 = 0;
    if let Some(seq_seed) = only {
        run_sequence(seq_seed, &hostile, &mut tally, trace);
        println!(
            "fuzz: replayed sequence {seq_seed:#x}: {} inputs",
            tally.inputs
        );
        return;
    }
    while tally.inputs < budget {
        let seq_seed = splitmix(seed.wrapping_add(sequences));
        run_sequence(seq_seed, &hostile, &mut tally, trace);
        sequences += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz: {} inputs over {} sequences in {secs:.1} s ({} inputs/s)",
        thousands(tally.inputs),
        thousands(sequences),
        thousands((tally.inputs as f64 / secs.max(1e-9)) as u64),
    );
    println!("fuzz: reached {}", tally.describe());
    assert!(
        tally.inputs >= budget,
        "ran {} of {budget} inputs",
        tally.inputs
    );
    // The generator must keep reaching the deep states, or the invariants check nothing.
    if budget == DEFAULT_INPUTS && seed == DEFAULT_SEED {
        assert!(
            tally.registered > 100,
            "devices registered: {}",
            tally.registered
        );
        assert!(tally.resumed > 10, "devices resumed: {}", tally.resumed);
        assert!(
            tally.owner_ok > 100,
            "owner commands done: {}",
            tally.owner_ok
        );
        assert!(tally.progress > 100, "results accepted: {}", tally.progress);
        assert!(tally.jobs_done > 10, "jobs done: {}", tally.jobs_done);
        assert!(
            tally.quarantined > 10,
            "devices quarantined: {}",
            tally.quarantined
        );
        assert!(tally.restarts > 20, "restarts: {}", tally.restarts);
        assert!(
            tally.gateway_events > 1_000,
            "socket events through gateways: {}",
            tally.gateway_events
        );
        assert!(
            tally.acknowledged > 100,
            "results acknowledged: {}",
            tally.acknowledged
        );
        assert!(
            tally.resent_taken >= 3,
            "results sent again taken: {}",
            tally.resent_taken
        );
        assert!(
            tally.deltas_compared > 100,
            "dashboard states from deltas compared: {}",
            tally.deltas_compared
        );
        assert!(
            tally.replicas > 20,
            "replica answers taken: {}",
            tally.replicas
        );
        assert!(
            tally.outvoted > 2,
            "devices quarantined for a lost vote: {}",
            tally.outvoted
        );
        assert!(
            tally.healed > 0,
            "jobs right despite a wrong answer: {}",
            tally.healed
        );
    }
}

/// What the fuzzer reached, summed over sequences (printed so that a weakened generator shows).
#[derive(Debug, Default)]
struct Tally {
    inputs: u64,
    steps: u64,
    registered: u64,
    resumed: u64,
    leases: u64,
    /// Steps in which a job's replica units grew (a replica's answer was taken).
    replicas: u64,
    owner_ok: u64,
    owner_refused: u64,
    progress: u64,
    jobs_done: u64,
    quarantined: u64,
    /// Quarantines of a device whose answer lost a vote (not refused on the spot).
    outvoted: u64,
    /// Steps in which a quarantine took progress back out of a job.
    caught_later: u64,
    /// Jobs done with the right result although handed a wrong answer the cheap check passes.
    healed: u64,
    restarts: u64,
    /// Socket events (opened, a frame, closed) the core took in gateway batches.
    gateway_events: u64,
    /// Results that protocol 4 devices were told are stored (or not needed).
    acknowledged: u64,
    /// Steps in which a result sent again with its ticket, for a lease the core no longer
    /// held, made progress.
    resent_taken: u64,
    /// Checks in which a dashboard's deltas were compared with a full snapshot of that `seq`.
    deltas_compared: u64,
    closes: BTreeMap<u16, u64>,
    /// Results handed to the core on device sockets, by what they answered and how well.
    answers: BTreeMap<String, u64>,
}

impl Tally {
    fn describe(&self) -> String {
        let closes: Vec<String> = self
            .closes
            .iter()
            .map(|(code, n)| format!("{code}×{n}"))
            .collect();
        let answers: Vec<String> = self
            .answers
            .iter()
            .map(|(what, n)| format!("{what}×{n}"))
            .collect();
        format!(
            "{} steps, {} registrations, {} resumes, {} job leases, {} replica answers taken, \
             {} owner commands done and {} refused, \
             {} results accepted, {} jobs done ({} right despite a wrong answer), \
             {} quarantines ({} outvoted), {} times progress taken back, {} restarts, \
             {} socket events through gateways, {} delta states compared, {} results acknowledged, {} results sent again taken; \
             answers {}; closes {}",
            thousands(self.steps),
            self.registered,
            self.resumed,
            self.leases,
            self.replicas,
            self.owner_ok,
            self.owner_refused,
            self.progress,
            self.jobs_done,
            self.healed,
            self.quarantined,
            self.outvoted,
            self.caught_later,
            self.restarts,
            self.gateway_events,
            self.deltas_compared,
            self.acknowledged,
            self.resent_taken,
            answers.join(" "),
            closes.join(" ")
        )
    }
}

fn run_sequence(seq_seed: u64, hostile: &[String], tally: &mut Tally, trace: bool) {
    let mut fuzzer = Fuzzer::new(seq_seed, hostile, trace);
    let steps = 60 + fuzzer.g.below(240) as usize;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        for _ in 0..steps {
            fuzzer.step();
        }
    }));
    if let Err(panic) = outcome {
        eprintln!(
            "fuzz: sequence {seq_seed:#x} failed at step {} (replay: OSTRICH_FUZZ_ONLY={seq_seed:#x} \
             OSTRICH_FUZZ_TRACE=1); its last actions:",
            fuzzer.step
        );
        for line in &fuzzer.recent {
            eprintln!("  {line}");
        }
        resume_unwind(panic);
    }
    tally.inputs += fuzzer.inputs;
    tally.steps += fuzzer.step as u64;
    tally.registered += fuzzer.tally.registered;
    tally.resumed += fuzzer.tally.resumed;
    tally.leases += fuzzer.tally.leases;
    tally.replicas += fuzzer.tally.replicas;
    tally.owner_ok += fuzzer.tally.owner_ok;
    tally.owner_refused += fuzzer.tally.owner_refused;
    tally.progress += fuzzer.tally.progress;
    tally.jobs_done += fuzzer.tally.jobs_done;
    tally.quarantined += fuzzer.tally.quarantined;
    tally.outvoted += fuzzer.tally.outvoted;
    tally.caught_later += fuzzer.tally.caught_later;
    tally.healed += fuzzer.tally.healed;
    tally.restarts += fuzzer.tally.restarts;
    tally.gateway_events += fuzzer.sim.gateway_events;
    tally.deltas_compared += fuzzer.tally.deltas_compared;
    tally.acknowledged += fuzzer.tally.acknowledged;
    tally.resent_taken += fuzzer.tally.resent_taken;
    for (code, n) in &fuzzer.tally.closes {
        *tally.closes.entry(*code).or_default() += n;
    }
    for (what, n) in &fuzzer.tally.answers {
        *tally.answers.entry(what.clone()).or_default() += n;
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim().replace(['_', ','], "");
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|group| std::str::from_utf8(group).unwrap_or_default())
        .collect();
    groups.join(",")
}

// ---------------------------------------------------------------------------------------------
// Randomness and hostile values.

/// The seeded generator of one sequence.
struct Gen(ChaCha8Rng);

impl Gen {
    fn u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.u64() % n
        }
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.index(items.len())].clone()
    }

    /// An index drawn with these weights (at least one must be positive).
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let mut at = self.below(total);
        for (i, w) in weights.iter().enumerate() {
            if at < u64::from(*w) {
                return i;
            }
            at -= u64::from(*w);
        }
        weights.len() - 1
    }

    fn seed32(&mut self) -> [u8; 32] {
        let mut seed = [0; 32];
        self.0.fill_bytes(&mut seed);
        seed
    }

    fn hex_id(&mut self) -> String {
        format!("{:016x}{:016x}", self.u64(), self.u64())
    }

    /// A well-formed secret nobody was given.
    fn secret(&mut self) -> String {
        const URL_SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        (0..43)
            .map(|_| URL_SAFE[self.index(URL_SAFE.len())] as char)
            .collect()
    }

    /// A well-formed short code (almost surely no invite's).
    fn code(&mut self) -> String {
        let alphabet = shared_protocol::CODE_ALPHABET;
        let digits: String = (0..10)
            .map(|_| alphabet[self.index(alphabet.len())] as char)
            .collect();
        format!("{}-{}", &digits[..5], &digits[5..])
    }

    /// One of the numbers where u8/u16/u32/u64, JavaScript and the protocol's ranges end.
    fn edge_u64(&mut self) -> u64 {
        self.pick(&[
            0,
            1,
            2,
            63,
            64,
            255,
            256,
            65_535,
            65_536,
            u64::from(u32::MAX),
            1 << 32,
            (1 << 32) + 1,
            (1 << 48) - 1,
            1 << 48,
            (1 << 53) - 1,
            1 << 53,
            (1 << 53) + 1,
            i64::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ])
    }
}

/// Strings that have broken text handling somewhere: multi-byte characters (2, 3 and 4 bytes)
/// ending at and straddling every byte length where a limit lives (±1), label-length runs of
/// them, zero-width and right-to-left characters, combining marks, controls, quotes and
/// escapes, look-alikes of codes and keys, and very long text.
fn hostile_strings() -> Vec<String> {
    let mut out: Vec<String> = [
        "",
        " ",
        "a",
        "\u{200B}",
        "\u{200B}\u{200B}\u{200B}",
        "\u{200D}",
        "\u{202E}evil\u{202C}",
        "\u{202E}",
        "\u{2066}\u{2069}",
        "\u{FEFF}",
        "e\u{301}",
        "\u{301}",
        "\u{301}\u{302}\u{303}\u{304}",
        "\0",
        "\u{1}",
        "\n",
        "\r\n",
        "\t",
        "\u{7F}",
        "\u{85}",
        "\u{2028}",
        "\"",
        "\\",
        "'",
        "\"},{\"type\":\"owner\"",
        "</script><script>alert(1)</script>",
        "%s%n%x",
        "${jndi:ldap://x}",
        "../../etc/passwd",
        "👩‍👩‍👧‍👦",
        "\u{10FFFF}",
        "\u{FFFD}",
        "\u{FFFF}",
        "ＡＢＣＤＥ－ＦＧＨＪＫ",
        "abcde\u{2010}fghjk",
        "ABCDE-FGHJK\u{200B}",
        "İıßﬀ",
        "NaN",
        "null",
        "-0",
        "0x10",
        "1e400",
        "00000000000000000000000000000000",
        "ffffffffffffffffffffffffffffffff",
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
    ]
    .map(String::from)
    .into();
    out.push(format!("{OWNER_KEY}\u{200B}"));
    out.push(format!("\u{202E}{OWNER_KEY}"));
    out.push(format!("{}é", &OWNER_KEY[..OWNER_KEY.len() - 2]));
    out.push(OWNER_KEY.to_uppercase());
    out.push(format!(" {OWNER_KEY}"));
    out.push("e\u{301}".repeat(64));
    for boundary in [
        31usize, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 299, 300, 301, 16_383, 16_384, 16_385,
    ] {
        for ch in ['é', '€', '𝄞'] {
            let width = ch.len_utf8();
            for len in [boundary - 1, boundary, boundary + 1] {
                // Ending exactly at the length, and starting one byte before it.
                out.push(format!("{}{ch}", "x".repeat(len - width)));
                out.push(format!("{}{ch}x", "x".repeat(len - 1)));
            }
            let fit = boundary / width;
            for count in [fit - 1, fit, fit + 1] {
                out.push(ch.to_string().repeat(count));
            }
        }
    }
    for count in [1usize, 63, 64, 65] {
        for ch in ['x', 'é', '€', '𝄞', '\u{200B}', '\u{202E}', '\u{301}'] {
            out.push(ch.to_string().repeat(count));
        }
    }
    out.push("x".repeat(100_000));
    out.push("€".repeat(100_000));
    out
}

/// Raw JSON string content that no Rust `String` can carry: lone surrogates, invalid UTF-8,
/// overlong and CESU-8 encodings, escapes.
const RAW_STRING_BITS: &[&[u8]] = &[
    b"\\ud800",
    b"\\udfff",
    b"\\ud800\\udc00",
    b"\\udbff\\udfff",
    b"\\udc00\\ud800",
    b"\\u0000",
    b"\\u200b",
    b"\\u202e",
    b"\\u00",
    b"\\\"",
    b"\\\\",
    b"\\/",
    b"\\x41",
    b"\\",
    b"\xff",
    b"\xfe\xff",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xe2\x80",
    b"\xf0\x9d\x84",
];

/// Number literals at the edges of every integer type, of JavaScript's exact range, and of
/// what JSON allows.
const EDGE_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "100",
    "101",
    "255",
    "256",
    "1024",
    "1025",
    "65535",
    "65536",
    "86400000",
    "86400001",
    "4294967295",
    "4294967296",
    "9007199254740991",
    "9007199254740992",
    "9007199254740993",
    "281474976710656",
    "281474976710657",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "1e3",
    "1.5",
    "1.0",
    "-0",
    "1e400",
    "-1e400",
    "1e-400",
    "0.0000001",
    "00",
    "01",
    "NaN",
    "Infinity",
    "null",
    "true",
    "\"1\"",
    "[]",
    "{}",
];

// ---------------------------------------------------------------------------------------------
// The oracle.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Awaiting,
    Device,
    Viewer,
    Owner,
}

/// A lease a device socket was sent and has neither answered nor had cancelled.
#[derive(Debug, Clone)]
struct Held {
    job_id: String,
    work: Work,
    deadline_ms: u64,
    /// Its ticket (protocol 4).
    ticket: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Bench {
    lease_id: u64,
    expected: u64,
}

/// One socket as the oracle sees it.
#[derive(Debug)]
struct Sock {
    conn: ConnId,
    role: Role,
    device_id: Option<String>,
    /// Neither closed by the core nor disconnected by the glue.
    open: bool,
    welcomed: bool,
    bench: Option<Bench>,
    /// It sent the right answer to its benchmark.
    benchmarked: bool,
    /// The `seq` of the last snapshot it received (what a client puts in `seen`), and of the
    /// last one the current core sent (seq starts again when the object restarts).
    last_snapshot: Option<u64>,
    last_seq_this_core: Option<u64>,
    leases: BTreeMap<u64, Held>,
    /// A dashboard speaking protocol 3: the snapshot it holds, its first one with every delta
    /// since applied.
    deltas: bool,
    /// A device speaking protocol 4: its leases carry tickets, its results are acknowledged.
    acks: bool,
    /// A device speaking protocol 5: the leases of one pass come in one frame.
    batches: bool,
    held: Option<SwarmSnapshot>,
}

/// An invite whose secrets the oracle saw.
#[derive(Debug, Clone)]
struct KnownInvite {
    invite_id: String,
    token: String,
    /// Canonical short code (unknown for the sim's first invite).
    code: Option<String>,
}

#[derive(Debug, Default)]
struct Model {
    socks: Vec<Sock>,
    by_conn: BTreeMap<ConnId, usize>,
    creds: BTreeMap<String, DeviceCredential>,
    invites: Vec<KnownInvite>,
    /// Jobs that a wrong answer may have got into unchecked (a trusted device's first result,
    /// or two devices with the same wrong answer): their final result is not compared with the
    /// truth.
    tainted: BTreeSet<String>,
    /// Jobs that were handed a wrong answer that passed the cheap check (or an unknown one).
    wrong: BTreeSet<String>,
    /// Lease ids answered already, with the answer (for duplicates).
    answered: VecDeque<(u64, WorkResult)>,
    /// Leases issued with a ticket, by device and lease id: a result may be sent again with
    /// its ticket long after, on another socket and after restarts.
    issued: BTreeMap<(String, u64), Held>,
    /// Results sent by each device (`(device, lease)`), which acknowledgements may name.
    results_sent: BTreeSet<(String, u64)>,
    /// Every answer not provably wrong handed to the core for a job lease its sender held, by
    /// job and range (a first result or a replica alike): the votes the verifier may have
    /// counted.
    votes: BTreeMap<(String, String), Vec<Vote>>,
    /// A device was named with the owner key in it (so a log line may quote it).
    owner_key_named: bool,
}

/// How a result compares with the truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quality {
    Right,
    /// Wrong by a rule the core documents checking: it must be refused.
    Refutable,
    /// Wrong or unknown, in a way the core cannot be expected to notice.
    Unknown,
}

/// One device's answer for a range of a job, as the verifier compares them.
#[derive(Debug, Clone)]
struct Vote {
    device_id: String,
    /// The answer in the form the core's digest covers (see [`answer_key`]).
    key: String,
    quality: Quality,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkKind {
    Bench,
    Job,
    /// A result for a lease this socket does not hold (as far as the oracle knows).
    Stray,
}

/// A result the core was handed on a device socket, as the oracle classified it.
#[derive(Debug, Clone)]
struct ChunkSent {
    sock: usize,
    device_id: String,
    kind: ChunkKind,
    quality: Quality,
    job_id: Option<String>,
    /// Job units the lease covers.
    units: u64,
    /// The lease's range (`{work:?}`), for job leases.
    range: Option<String>,
    /// The answer as the core's digest covers it, for job leases.
    key: Option<String>,
    /// The lease is held by another open device socket: the job it is of.
    foreign: Option<String>,
    /// Sent again with the ticket of a lease this device no longer holds.
    resent: bool,
}

/// What the oracle knows about one hello before the core sees it.
#[derive(Debug, Clone)]
struct HelloSent {
    sock: usize,
    hello: Hello,
    /// The invite its proof names, if any, and whether it is live.
    invite: Option<(String, bool)>,
    /// It must register a device (a live link or the owner key on a fresh socket).
    must_register: bool,
    /// It must register a device unless the code-guessing limit refuses it.
    must_register_unless_limited: bool,
    /// It may register a device.
    may_register: bool,
}

/// What happened in one step, for the checks after it.
#[derive(Debug, Default)]
struct StepInfo {
    owner_authorized: bool,
    /// The clock when the step began (alarms move it during the step).
    started_ms: u64,
    /// Sockets that may receive messages in this step.
    may_receive: BTreeSet<ConnId>,
    hellos: Vec<HelloSent>,
    /// `(socket, request)` of owner commands sent on sockets.
    owner_requests: Vec<(usize, u32)>,
    chunks: Vec<ChunkSent>,
    errors: Vec<(usize, ErrorCode)>,
    /// Snapshot before a restart, to compare with after it.
    before_restart: Option<SwarmSnapshot>,
    /// Changes the core had accepted but not committed when it restarted: a restart loses
    /// them (the devices send those results again).
    lost_in_restart: usize,
    /// Alarms the core handled in this step.
    alarms: u64,
}

/// The state the checks compare before and after a step.
#[derive(Debug, Clone)]
struct Obs {
    meta: (RunState, u8),
    devices: BTreeMap<String, DeviceRecord>,
    invites: BTreeMap<String, InviteRecord>,
    jobs: BTreeMap<String, JobView>,
    writes: usize,
    /// Verification counts in memory (confirmed, replicated, disputed), by device.
    counts: BTreeMap<String, (u64, u64, u64)>,
    /// Devices trusted in memory.
    trusted: BTreeSet<String>,
}

// ---------------------------------------------------------------------------------------------
// The fuzzer.

struct Fuzzer<'t> {
    sim: Sim,
    g: Gen,
    hostile: &'t [String],
    m: Model,
    info: StepInfo,
    tally: Tally,
    trace: bool,
    /// Inputs handed to any core of this sequence.
    inputs: u64,
    /// Inputs the current core was handed since it was built, as its counters count them.
    core_in: u64,
    core_alarms: u64,
    core_out: u64,
    core_http: u64,
    base_writes: usize,
    base_alarm_writes: usize,
    step: usize,
    recent: VecDeque<String>,
    /// The full snapshots this core sent, by `seq`, to compare with what dashboards hold
    /// after applying deltas.
    fulls: BTreeMap<u64, SwarmSnapshot>,
    /// Since when someone has been waiting on the swarm without a break (a socket's hello, a
    /// dashboard or a running job), as seen at the checks: the 2 s ticks run meanwhile.
    waited_since: Option<u64>,
}

impl<'t> Fuzzer<'t> {
    fn new(seq_seed: u64, hostile: &'t [String], trace: bool) -> Self {
        let mut g = Gen(ChaCha8Rng::seed_from_u64(seq_seed));
        let mut config = gen_config(&mut g);
        // Half the sequences put every socket past the first one, two or five on gateways,
        // each event in a batch of its own. Drawn from the sequence's seed, not from `g`, so
        // that a sequence runs the same steps either way: the same inputs must keep the
        // same invariants through gateways.
        config.sockets_per_gateway = match seq_seed.rotate_left(17) % 6 {
            0 => 1,
            1 => 2,
            2 => 5,
            _ => 0,
        };
        let mut sim = Sim::with_config(config);
        // Every message counts here, shares included.
        sim.shares_in_inbox = true;
        sim.deltas_in_inbox = true;
        let mut m = Model::default();
        let first = sim.store.invites.keys().next().cloned().unwrap_or_default();
        m.invites.push(KnownInvite {
            invite_id: first,
            token: sim.token.clone(),
            code: None,
        });
        let mut fuzzer = Self {
            sim,
            g,
            hostile,
            m,
            info: StepInfo::default(),
            tally: Tally::default(),
            trace,
            inputs: 2, // the sim's `create` and its first invite
            core_in: 0,
            core_alarms: 0,
            core_out: 0,
            core_http: 1,
            base_writes: 0,
            base_alarm_writes: 0,
            step: 0,
            recent: VecDeque::new(),
            waited_since: None,
            fulls: BTreeMap::new(),
        };
        // Every sequence starts from its own core seed (ids, secrets, epochs differ).
        let seed = fuzzer.g.seed32();
        fuzzer.restart(seed);
        fuzzer.absorb();
        fuzzer
    }

    fn now(&self) -> u64 {
        self.sim.now
    }

    fn note(&mut self, line: String) {
        let mut line = line;
        if line.len() > 240 {
            let mut cut = 240;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        if self.trace {
            println!("step {}: {line}", self.step);
        }
        if self.recent.len() == 30 {
            self.recent.pop_front();
        }
        self.recent.push_back(format!("step {}: {line}", self.step));
    }

    // -- inputs ----------------------------------------------------------------------------

    fn connect(&mut self, source: String) -> usize {
        let conn = self.sim.place();
        self.info.may_receive.insert(conn);
        self.sim.open(conn, &source);
        self.inputs += 1;
        let idx = self.m.socks.len();
        self.m.socks.push(Sock {
            conn,
            role: Role::Awaiting,
            device_id: None,
            open: true,
            welcomed: false,
            bench: None,
            benchmarked: false,
            last_snapshot: None,
            last_seq_this_core: None,
            leases: BTreeMap::new(),
            deltas: false,
            acks: false,
            batches: false,
            held: None,
        });
        self.m.by_conn.insert(conn, idx);
        idx
    }

    fn disconnect(&mut self, idx: usize) {
        let conn = self.m.socks[idx].conn;
        self.info.may_receive.remove(&conn);
        self.sim.disconnect(conn);
        self.inputs += 1;
        self.m.socks[idx].open = false;
    }

    /// Hands bytes to the core on a socket, after noting what the core will make of them.
    fn send_bytes(&mut self, idx: usize, bytes: &[u8]) {
        let decoded = decode::<ToCoordinator>(bytes, &self.sim.config.limits)
            .ok()
            .map(shared_protocol::Validated::into_inner);
        if let Some(request) = request_of(bytes) {
            self.info.owner_requests.push((idx, request));
        }
        if self.m.socks[idx].open {
            if self.m.socks[idx].role == Role::Owner {
                self.info.owner_authorized = true;
            }
            if let Some(message) = &decoded {
                self.expect(idx, message);
            }
        }
        let conn = self.m.socks[idx].conn;
        self.sim.send_raw(conn, bytes);
        self.inputs += 1;
        self.core_in += 1;
    }

    fn send(&mut self, idx: usize, message: &ToCoordinator) {
        self.send_bytes(idx, encode(message).as_bytes());
    }

    /// Moves the clock, firing the alarm whenever it comes due (as the glue's platform does).
    fn advance(&mut self, ms: u64) {
        let end = self.sim.now.saturating_add(ms);
        while let Some(at) = self.sim.alarm.filter(|at| *at <= end) {
            self.sim.now = self.sim.now.max(at);
            self.sim.alarm = None;
            self.sim.core.handle_alarm(self.sim.now);
            self.inputs += 1;
            self.core_alarms += 1;
            self.info.alarms += 1;
            self.sim.drain();
        }
        self.sim.now = end;
    }

    fn restart(&mut self, seed: [u8; 32]) {
        // Leases beyond the attachment's cap are forgotten by a restart (the device is not
        // told); the oracle forgets them too.
        self.fulls.clear();
        for sock in self.m.socks.iter_mut().filter(|s| s.open) {
            sock.last_seq_this_core = None;
            let kept: BTreeSet<u64> = match self.sim.attachments.get(&sock.conn).map(|a| &a.session)
            {
                Some(Session::Device { link, .. }) => link.leases.iter().map(|l| l.0).collect(),
                _ => BTreeSet::new(),
            };
            sock.leases.retain(|id, _| kept.contains(id));
        }
        let (base, base_alarm) = (self.sim.writes, self.sim.alarm_writes);
        self.sim.restart_with_seed(seed);
        self.inputs += 1;
        self.core_in = 0;
        self.core_alarms = 0;
        self.core_out = 0;
        self.core_http = 0;
        self.base_writes = base;
        self.base_alarm_writes = base_alarm;
        self.tally.restarts += 1;
    }

    /// An owner command over HTTP: the glue decodes the body through the protocol's entry and
    /// hands the core only what passes (`handle_owner_request` takes only a `Validated`
    /// command), with the bearer key.
    fn http(&mut self, key: &str, body: &[u8], _made_from: OwnerCommand) {
        let validated = match decode::<OwnerCommand>(body, &shared_protocol::Limits::default()) {
            Ok(command) => command,
            Err(_) => return, // refused by the glue with 4xx; the core never sees it
        };
        let command: OwnerCommand = validated.clone().into_inner();
        let right = key == OWNER_KEY;
        self.info.owner_authorized |= right;
        let before = self.observe();
        let result = self
            .sim
            .core
            .handle_owner_request(self.sim.now, key, validated);
        self.inputs += 1;
        self.core_http += 1;
        self.sim.drain();
        if !right {
            assert_eq!(
                result.as_ref().map_err(|r| r.code),
                Err(ErrorCode::BadOwnerKey),
                "an owner request without the owner key"
            );
            assert_eq!(
                self.sim.writes, before.writes,
                "a refused owner request wrote"
            );
            return;
        }
        match result {
            Ok(reply) => {
                self.tally.owner_ok += 1;
                self.record_reply(&reply);
                self.check_owner_effect(&before, &command, &reply);
            }
            Err(refusal) => {
                self.tally.owner_refused += 1;
                assert_ne!(
                    refusal.code,
                    ErrorCode::BadOwnerKey,
                    "the owner key was refused"
                );
            }
        }
    }

    // -- generation ------------------------------------------------------------------------

    fn hostile(&mut self) -> String {
        let table = self.hostile;
        table[self.g.index(table.len())].clone()
    }

    fn or_hostile(&mut self, percent: u64, good: String) -> String {
        if self.g.chance(percent) {
            self.hostile()
        } else {
            good
        }
    }

    fn open_socks(&self, role: Option<Role>) -> Vec<usize> {
        (0..self.m.socks.len())
            .filter(|&i| self.m.socks[i].open && role.is_none_or(|r| self.m.socks[i].role == r))
            .collect()
    }

    fn source(&mut self) -> String {
        match self.g.weighted(&[30, 50, 10, 10]) {
            0 => String::new(),
            1 => self
                .g
                .pick(&["10.0.0.1", "10.0.0.2", "2001:db8::1", "192.0.2.7"])
                .to_owned(),
            2 => format!("10.1.{}.{}", self.g.below(4), self.g.below(250)),
            _ => self.hostile(),
        }
    }

    fn gen_caps(&mut self) -> Capabilities {
        if self.g.chance(85) {
            let mut c = caps();
            c.cores = self.g.pick(&[1, 2, 4, 4, 4, 8]);
            return c;
        }
        Capabilities {
            cores: self.g.pick(&[0, 1, 2, 4, 1024, 1025, u16::MAX]),
            memory_mb: self.g.pick(&[
                None,
                Some(0),
                Some(1),
                Some(16_777_216),
                Some(16_777_217),
                Some(u32::MAX),
            ]),
            gpu: self.g.chance(50),
            workloads: self.g.chance(50),
            agent: self.g.pick(&[
                AgentClass::BrowserDesktop,
                AgentClass::BrowserMobile,
                AgentClass::Native,
            ]),
        }
    }

    fn gen_credential(&mut self) -> DeviceCredential {
        let known: Vec<DeviceCredential> = self.m.creds.values().cloned().collect();
        let which = self
            .g
            .weighted(&[if known.is_empty() { 0 } else { 70 }, 10, 10, 10]);
        match which {
            0 => self.g.pick(&known),
            1 if !known.is_empty() => {
                let real = self.g.pick(&known);
                let mut secret = real.secret.clone().into_bytes();
                let at = self.g.index(secret.len());
                secret[at] = if secret[at] == b'A' { b'B' } else { b'A' };
                DeviceCredential {
                    device_id: real.device_id,
                    secret: String::from_utf8(secret).unwrap_or_default(),
                }
            }
            2 | 1 => DeviceCredential {
                device_id: self.g.hex_id(),
                secret: self.g.secret(),
            },
            _ => {
                let known_id = known.first().map(|c| c.device_id.clone());
                let id = known_id.unwrap_or_else(|| self.g.hex_id());
                DeviceCredential {
                    device_id: self.or_hostile(50, id),
                    secret: self.hostile(),
                }
            }
        }
    }

    /// A short code as someone might type it.
    fn typed(&mut self, canonical: &str) -> String {
        let display = format!("{}-{}", &canonical[..5], &canonical[5..]);
        match self.g.below(7) {
            0 => display,
            1 => display.to_lowercase(),
            2 => display.replace('-', " "),
            3 => canonical.to_owned(),
            4 => format!("  {display}  "),
            5 => display.replace('1', "l").replace('0', "O"),
            _ => format!("{}{display}", " ".repeat(21)), // 32 bytes: the longest accepted
        }
    }

    fn gen_proof(&mut self) -> JoinProof {
        let coded: Vec<String> = self
            .m
            .invites
            .iter()
            .filter_map(|i| i.code.clone())
            .collect();
        let which = self
            .g
            .weighted(&[35, if coded.is_empty() { 0 } else { 15 }, 15, 8, 8, 5, 14]);
        match which {
            0 => {
                let invite = self.g.pick(&self.m.invites);
                JoinProof::Token {
                    token: invite.token,
                }
            }
            1 => {
                let code = self.g.pick(&coded);
                JoinProof::Code {
                    code: self.typed(&code),
                }
            }
            2 => JoinProof::OwnerKey {
                owner_key: OWNER_KEY.into(),
            },
            3 => JoinProof::Token {
                token: self.g.secret(),
            },
            4 => JoinProof::Code {
                code: self.g.code(),
            },
            5 => JoinProof::OwnerKey {
                owner_key: self.g.secret(),
            },
            _ => match self.g.below(3) {
                0 => JoinProof::Token {
                    token: self.hostile(),
                },
                1 => JoinProof::Code {
                    code: self.hostile(),
                },
                _ => JoinProof::OwnerKey {
                    owner_key: self.hostile(),
                },
            },
        }
    }

    fn gen_protocol(&mut self) -> u16 {
        if self.g.chance(94) {
            self.g.pick(&[OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION])
        } else {
            self.g.pick(&[
                0,
                OLDEST_PROTOCOL_VERSION - 1,
                PROTOCOL_VERSION + 1,
                u16::MAX,
            ])
        }
    }

    fn gen_device_hello(&mut self) -> ToCoordinator {
        let protocol = self.gen_protocol();
        let n = self.g.below(1_000);
        let name = self.or_hostile(20, format!("dev-{n}"));
        let capabilities = self.gen_caps();
        let (credential, invite) = match self.g.weighted(&[30, 62, 8]) {
            0 => {
                let credential = self.gen_credential();
                let invite = self.g.chance(20).then(|| self.gen_proof());
                (Some(credential), invite)
            }
            1 => (None, Some(self.gen_proof())),
            _ => (None, None),
        };
        ToCoordinator::Hello(Hello {
            protocol,
            role: HelloRole::Device {
                name,
                capabilities,
                credential,
                invite,
            },
        })
    }

    fn gen_dashboard_hello(&mut self) -> ToCoordinator {
        let owner_key = match self.g.weighted(&[40, 40, 10, 10]) {
            0 => None,
            1 => Some(OWNER_KEY.to_owned()),
            2 => Some(self.g.secret()),
            _ => Some(self.hostile()),
        };
        ToCoordinator::Hello(Hello {
            protocol: self.gen_protocol(),
            role: HelloRole::Dashboard { owner_key },
        })
    }

    fn gen_set_lend(&mut self, idx: usize) -> ToCoordinator {
        let cores = self.m.socks[idx]
            .device_id
            .as_ref()
            .and_then(|id| self.sim.store.devices.get(id))
            .map_or(4, |d| d.capabilities.cores);
        let cores = self.g.pick(&[
            0,
            1,
            cores.saturating_sub(1),
            cores,
            cores,
            cores.saturating_add(1),
            1024,
            1025,
            u16::MAX,
        ]);
        ToCoordinator::SetLend { cores }
    }

    /// A heartbeat; a dashboard's says which snapshot it read last (or lies about it).
    fn gen_heartbeat(&mut self, idx: usize) -> ToCoordinator {
        let last = self.m.socks[idx].last_snapshot;
        let seen = match self.g.weighted(&[60, 20, 20]) {
            0 => last,
            1 => None,
            _ => Some(self.g.edge_u64()),
        };
        ToCoordinator::Heartbeat { seen }
    }

    fn gen_compute_ms(&mut self, units: u64) -> u64 {
        if self.g.chance(90) {
            (units / 1_000).clamp(1, 60_000)
        } else {
            self.g.pick(&[0, 1, 86_400_000, 86_400_001, u64::MAX])
        }
    }

    /// A result for this work: the right one (when it is cheap to compute), a wrong one the
    /// core must refuse, or a wrong one it cannot tell.
    fn gen_result(&mut self, work: &Work) -> WorkResult {
        match self.g.weighted(&[78, 11, 11]) {
            0 => right_answer(work).unwrap_or_else(|| self.plausible(work)),
            1 => self.refutable(work),
            _ => self.plausible(work),
        }
    }

    fn refutable(&mut self, work: &Work) -> WorkResult {
        if self.g.chance(15) {
            return other_kind(work);
        }
        match work {
            Work::PrimeCount { lo, hi } => WorkResult::PrimeCount {
                count: self.g.pick(&[hi - lo + 1, hi - lo + 2, u64::MAX]),
            },
            Work::Mandelbrot {
                width,
                rows,
                max_iter,
                ..
            } => {
                let pixels = (u64::from(*width) * u64::from(*rows)) as usize;
                let counts = match self.g.below(4) {
                    0 => encode_counts(&vec![0; pixels - 1]),
                    1 => encode_counts(&vec![0; pixels + 1]),
                    2 if *max_iter < 65_535 => encode_counts(&vec![max_iter + 1; pixels]),
                    _ => "not base64!".to_owned(),
                };
                WorkResult::Mandelbrot { counts }
            }
            Work::Sha256Search {
                prefix,
                difficulty_bits,
                lo,
                hi,
                max_found,
            } => {
                let nonces = match self.g.below(4) {
                    0 => vec![*hi],
                    1 => vec![*lo, *lo],
                    2 => (*lo..).take(*max_found as usize + 1).collect(),
                    _ => {
                        let miss = (*lo..*hi).take(64).find(|n| {
                            !kernels::sha256::meets_target(prefix.as_bytes(), *n, *difficulty_bits)
                        });
                        vec![miss.unwrap_or(*hi)]
                    }
                };
                WorkResult::Sha256Search { nonces }
            }
            Work::Workload { items, .. } => WorkResult::Workload {
                outputs: self.g.pick(&["not hex".to_owned(), "A".repeat(64)]),
                failed: items + 1,
                unsettled: 0,
                receipt: String::new(),
            },
        }
    }

    fn plausible(&mut self, work: &Work) -> WorkResult {
        match work {
            Work::PrimeCount { lo, hi } => {
                let truth = right_answer(work).and_then(|r| match r {
                    WorkResult::PrimeCount { count } => Some(count),
                    _ => None,
                });
                let units = hi - lo;
                let count = match truth {
                    Some(t) if t < units && self.g.chance(50) => t + 1,
                    Some(t) if t > 0 => t - 1,
                    _ => self.g.below(units + 1),
                };
                WorkResult::PrimeCount { count }
            }
            Work::Mandelbrot { .. } => match right_answer(work) {
                Some(WorkResult::Mandelbrot { counts }) => {
                    let mut pixels = decode_counts(&counts).unwrap_or_default();
                    let at = self.g.index(pixels.len());
                    if let Some(p) = pixels.get_mut(at) {
                        *p = if *p == 0 { 1 } else { *p - 1 };
                    }
                    let wide: Vec<u32> = pixels.into_iter().map(u32::from).collect();
                    WorkResult::Mandelbrot {
                        counts: encode_counts(&wide),
                    }
                }
                _ => WorkResult::Mandelbrot {
                    counts: String::new(),
                },
            },
            Work::Sha256Search { .. } => WorkResult::Sha256Search { nonces: Vec::new() },
            Work::Workload { items, .. } => WorkResult::Workload {
                outputs: "e".repeat(64),
                failed: self.g.below(items + 1),
                unsettled: 0,
                receipt: String::new(),
            },
        }
    }

    /// A result message for a lease this socket holds, its benchmark, someone else's lease,
    /// an answered one or an invented one.
    /// Several results in one frame (protocol 5), each generated as [`Self::gen_chunk`] does.
    fn gen_chunk_frame(&mut self, idx: usize) -> ToCoordinator {
        let n = 2 + self.g.index(3);
        let results = (0..n)
            .filter_map(|_| match self.gen_chunk(idx) {
                ToCoordinator::ChunkResult {
                    lease_id,
                    result,
                    compute_ms,
                    ticket,
                } => Some(ChunkAnswer {
                    lease_id,
                    result,
                    compute_ms,
                    ticket,
                }),
                _ => None,
            })
            .collect();
        ToCoordinator::ChunkResults { results }
    }

    fn gen_chunk(&mut self, idx: usize) -> ToCoordinator {
        let sock = &self.m.socks[idx];
        let bench = sock.bench.filter(|_| !sock.benchmarked);
        let held: Vec<(u64, Work)> = sock
            .leases
            .iter()
            .map(|(id, h)| (*id, h.work.clone()))
            .collect();
        let foreign: Vec<(u64, Work)> = self
            .m
            .socks
            .iter()
            .enumerate()
            .filter(|(i, s)| *i != idx && s.open)
            .flat_map(|(_, s)| s.leases.iter().map(|(id, h)| (*id, h.work.clone())))
            .collect();
        // Tickets of leases issued to this device, and to others.
        let device_id = sock.device_id.clone().unwrap_or_default();
        let (mine, theirs): (Vec<_>, Vec<_>) = self
            .m
            .issued
            .iter()
            .map(|((device, id), h)| (device == &device_id, (*id, h.clone())))
            .partition(|(own, _)| *own);
        let mine: Vec<(u64, Held)> = mine.into_iter().map(|(_, x)| x).collect();
        let theirs: Vec<(u64, Held)> = theirs.into_iter().map(|(_, x)| x).collect();
        let which = self.g.weighted(&[
            if bench.is_some() { 40 } else { 0 },
            if held.is_empty() { 0 } else { 40 },
            if foreign.is_empty() { 0 } else { 6 },
            if self.m.answered.is_empty() { 0 } else { 5 },
            6,
            if mine.is_empty() { 0 } else { 12 },
            if theirs.is_empty() { 0 } else { 3 },
        ]);
        if which >= 5 {
            // A result sent again with a ticket: its own (after a restart or reconnect), or
            // another device's, or its own with a forged one.
            // Mostly one of its newest leases: the work most likely still to do.
            let (lease_id, held) = if which == 5 {
                let newest = &mine[mine.len().saturating_sub(4)..];
                self.g.pick(newest)
            } else {
                self.g.pick(&theirs)
            };
            let result = self.gen_result(&held.work);
            let mut ticket = held.ticket.unwrap_or_default();
            if self.g.chance(10) {
                ticket = self.or_hostile(100, ticket);
            }
            return ToCoordinator::ChunkResult {
                lease_id,
                result,
                compute_ms: self.gen_compute_ms(job_units(&held.work)),
                ticket: Some(ticket),
            };
        }
        let (lease_id, result, units) = match which {
            0 => {
                let b = bench.expect("weighted in only with a benchmark");
                let count = if self.g.chance(85) {
                    b.expected
                } else {
                    self.g
                        .pick(&[b.expected + 1, b.expected.saturating_sub(1), 0, u64::MAX])
                };
                // The claimed time is ignored: the core measures the wall time from the lease
                // to the answer (the clock this fuzzer advances between them), so devices that
                // answer late are slow and get small chunks.
                let ms = self
                    .g
                    .pick(&[17, 15, 100, 5_000, 5_000, 9_000, 60_000, 0, 1, 86_400_000]);
                (b.lease_id, WorkResult::PrimeCount { count }, Some(ms))
            }
            1 => {
                let (id, work) = self.g.pick(&held);
                let result = self.gen_result(&work);
                (id, result, Some(self.gen_compute_ms(job_units(&work))))
            }
            2 => {
                let (id, work) = self.g.pick(&foreign);
                let result = self.gen_result(&work);
                (id, result, None)
            }
            3 => {
                let at = self.g.index(self.m.answered.len());
                let (id, result) = self.m.answered[at].clone();
                (id, result, None)
            }
            _ => {
                let known_epochs: Vec<u64> = foreign
                    .iter()
                    .chain(held.iter())
                    .map(|(id, _)| id >> EPOCH_SHIFT)
                    .collect();
                let id = if !known_epochs.is_empty() && self.g.chance(40) {
                    let epoch = self.g.pick(&known_epochs);
                    (epoch << EPOCH_SHIFT) | self.g.below(64)
                } else {
                    self.g.edge_u64()
                };
                let result = match self.g.below(3) {
                    0 => WorkResult::PrimeCount {
                        count: self.g.edge_u64(),
                    },
                    1 => WorkResult::Sha256Search {
                        nonces: vec![self.g.edge_u64()],
                    },
                    _ => WorkResult::Mandelbrot {
                        counts: self.or_hostile(50, "AAAA".into()),
                    },
                };
                (id, result, None)
            }
        };
        let compute_ms = units.unwrap_or_else(|| self.g.pick(&[0, 10, 1_000, 86_400_000]));
        ToCoordinator::ChunkResult {
            lease_id,
            result,
            compute_ms,
            ticket: None,
        }
    }

    fn pick_device_id(&mut self) -> String {
        let known: Vec<String> = self.sim.store.devices.keys().cloned().collect();
        match self
            .g
            .weighted(&[if known.is_empty() { 0 } else { 75 }, 12, 13])
        {
            0 => self.g.pick(&known),
            1 => self.g.hex_id(),
            _ => self.hostile(),
        }
    }

    fn gen_job(&mut self) -> JobSpec {
        match self.g.weighted(&[36, 22, 22, 10, 6, 4]) {
            0 => {
                let lo = self.g.below(2_000_000);
                let span = if self.g.chance(35) {
                    1 + self.g.below(400_000)
                } else {
                    2_000_000 + self.g.below(10_000_000)
                };
                JobSpec::PrimeCount { lo, hi: lo + span }
            }
            1 => JobSpec::Mandelbrot {
                center_re: self.g.pick(&[-0.5, 0.0, 0.25, -0.75, -4.0, 4.0]),
                center_im: self.g.pick(&[0.0, 0.1, 0.5, -4.0, 4.0]),
                scale: self.g.pick(&[3.0, 2.5, 1e-12, 16.0, 0.01]),
                width: self.g.pick(&[1, 2, 7, 24, 64, 200]),
                height: self.g.pick(&[1, 2, 9, 24, 64, 150]),
                max_iter: self.g.pick(&[1, 2, 30, 100, 255]),
            },
            2 => {
                let lo = self.g.below(1 << 20);
                let prefix = self.or_hostile(10, "ostrich".into());
                JobSpec::Sha256Search {
                    prefix,
                    difficulty_bits: 1 + self.g.below(10) as u32,
                    lo,
                    hi: lo + 1 + self.g.below(40_000),
                    want: 1 + self.g.below(5) as u32,
                }
            }
            3 => self.g.pick(&[
                JobSpec::PrimeCount { lo: 0, hi: 1 },
                JobSpec::PrimeCount { lo: 0, hi: 2 },
                JobSpec::PrimeCount { lo: 2, hi: 3 },
                JobSpec::PrimeCount {
                    lo: MAX_PRIME_END - 1,
                    hi: MAX_PRIME_END,
                },
                JobSpec::PrimeCount {
                    lo: MAX_PRIME_END - 5_000,
                    hi: MAX_PRIME_END,
                },
                JobSpec::PrimeCount {
                    lo: 0,
                    hi: MAX_PRIME_END,
                },
                mandelbrot(4096, 1, 1),
                mandelbrot(1, 4096, 1),
                mandelbrot(2048, 64, 2),
                JobSpec::Sha256Search {
                    prefix: "x".repeat(64),
                    difficulty_bits: 2,
                    lo: MAX_NONCE_END - 300,
                    hi: MAX_NONCE_END,
                    want: 100,
                },
                JobSpec::Sha256Search {
                    prefix: "é".repeat(32),
                    difficulty_bits: 64,
                    lo: 0,
                    hi: MAX_NONCE_END,
                    want: 1,
                },
            ]),
            4 => self.g.pick(&[
                JobSpec::PrimeCount { lo: 5, hi: 5 },
                JobSpec::PrimeCount { lo: 6, hi: 5 },
                JobSpec::PrimeCount {
                    lo: 0,
                    hi: MAX_PRIME_END + 1,
                },
                JobSpec::PrimeCount {
                    lo: u64::MAX - 1,
                    hi: u64::MAX,
                },
                mandelbrot(0, 10, 10),
                mandelbrot(4097, 1, 10),
                mandelbrot(4096, 2048, 10),
                mandelbrot(10, 10, 0),
                mandelbrot(10, 10, 65_536),
                JobSpec::Mandelbrot {
                    center_re: 4.000_001,
                    center_im: 0.0,
                    scale: 3.0,
                    width: 4,
                    height: 4,
                    max_iter: 10,
                },
                JobSpec::Mandelbrot {
                    center_re: 0.0,
                    center_im: 0.0,
                    scale: 16.000_001,
                    width: 4,
                    height: 4,
                    max_iter: 10,
                },
                sha("", 8, 0, 10, 1),
                sha(&"x".repeat(65), 8, 0, 10, 1),
                sha("a\u{0}b", 8, 0, 10, 1),
                sha("a", 0, 0, 10, 1),
                sha("a", 65, 0, 10, 1),
                sha("a", 8, 10, 10, 1),
                sha("a", 8, 0, MAX_NONCE_END + 1, 1),
                sha("a", 8, 0, 10, 0),
                sha("a", 8, 0, 10, 101),
                // Not even JSON (encoded as null): only a caller that skips the decoder can
                // hand these to the core.
                JobSpec::Mandelbrot {
                    center_re: f64::NAN,
                    center_im: 0.0,
                    scale: 3.0,
                    width: 4,
                    height: 4,
                    max_iter: 10,
                },
                JobSpec::Mandelbrot {
                    center_re: 0.0,
                    center_im: f64::NEG_INFINITY,
                    scale: f64::INFINITY,
                    width: 4,
                    height: 4,
                    max_iter: 10,
                },
            ]),
            _ => {
                let prefix = self.hostile();
                sha(
                    &prefix,
                    1 + self.g.below(6) as u32,
                    0,
                    1 + self.g.below(2_000),
                    3,
                )
            }
        }
    }

    fn gen_owner_command(&mut self) -> OwnerCommand {
        let running = self
            .sim
            .store
            .jobs
            .values()
            .any(|j| matches!(j.state, JobState::Running | JobState::Queued));
        let which = self.g.weighted(&[
            12,
            4,
            6,
            10,
            3,
            8,
            8,
            3,
            if running { 10 } else { 30 },
            5,
            4,
        ]);
        match which {
            0 => OwnerCommand::CreateInvite {
                ttl_ms: self.g.pick(&[
                    None,
                    None,
                    Some(60_000),
                    Some(604_800_000),
                    Some(120_000),
                    Some(59_999),
                    Some(604_800_001),
                    Some(0),
                    Some(u64::MAX),
                ]),
                max_uses: self.g.pick(&[
                    None,
                    None,
                    Some(1),
                    Some(2),
                    Some(10_000),
                    Some(0),
                    Some(10_001),
                    Some(u32::MAX),
                ]),
            },
            1 => OwnerCommand::ListInvites {},
            2 => {
                let known: Vec<String> = self.sim.store.invites.keys().cloned().collect();
                let invite_id = match self.g.below(10) {
                    0 => self.g.hex_id(),
                    1 => self.hostile(),
                    _ => self.g.pick(&known),
                };
                OwnerCommand::RevokeInvite { invite_id }
            }
            3 => OwnerCommand::SetDeviceEnabled {
                device_id: self.pick_device_id(),
                enabled: self.g.chance(70),
            },
            4 => OwnerCommand::RemoveDevice {
                device_id: self.pick_device_id(),
            },
            5 => OwnerCommand::SetRunState {
                state: self.g.pick(&[
                    RunState::Running,
                    RunState::Running,
                    RunState::Paused,
                    RunState::Stopped,
                ]),
            },
            6 => OwnerCommand::SetThrottle {
                percent: self
                    .g
                    .pick(&[0, 1, 25, 50, 99, 100, 100, 100, 101, u8::MAX]),
            },
            7 => OwnerCommand::AuditLog {},
            8 => OwnerCommand::SubmitJob {
                job: self.gen_job(),
            },
            10 => OwnerCommand::RenameDevice {
                device_id: self.pick_device_id(),
                name: if self.g.chance(50) {
                    self.hostile()
                } else {
                    format!("renamed {}", self.g.below(100))
                },
            },
            _ => {
                let known: Vec<String> = self.sim.store.jobs.keys().cloned().collect();
                let job_id = match self
                    .g
                    .weighted(&[if known.is_empty() { 0 } else { 80 }, 10, 10])
                {
                    0 => self.g.pick(&known),
                    1 => self.g.hex_id(),
                    _ => self.hostile(),
                };
                OwnerCommand::CancelJob { job_id }
            }
        }
    }

    fn gen_owner_message(&mut self) -> ToCoordinator {
        let request = if self.g.chance(80) {
            self.g.below(1_000) as u32
        } else {
            self.g.pick(&[0, 1, u32::MAX - 1, u32::MAX])
        };
        ToCoordinator::Owner {
            request,
            command: self.gen_owner_command(),
        }
    }

    /// Any message, shaped for what the socket is.
    fn gen_message(&mut self, idx: usize) -> ToCoordinator {
        let role = self.m.socks[idx].role;
        let weights: [u32; 6] = match role {
            Role::Awaiting => [50, 25, 8, 6, 5, 6],
            Role::Device => [4, 3, 20, 10, 58, 5],
            Role::Viewer => [4, 4, 40, 8, 14, 30],
            Role::Owner => [3, 3, 15, 5, 4, 70],
        };
        match self.g.weighted(&weights) {
            0 => self.gen_device_hello(),
            1 => self.gen_dashboard_hello(),
            2 => self.gen_heartbeat(idx),
            3 => self.gen_set_lend(idx),
            4 => self.gen_chunk(idx),
            _ => self.gen_owner_message(),
        }
    }

    /// Byte-level and JSON-level mutations of an encoded message.
    fn mutate(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut bytes = bytes.to_vec();
        for _ in 0..=self.g.below(3) {
            if bytes.is_empty() {
                break;
            }
            let at = self.g.index(bytes.len());
            match self.g.below(11) {
                0 => bytes[at] = self.g.u64() as u8,
                1 => bytes.truncate(at),
                2 => bytes.insert(at, b"{}[]\",:0-9eE\\ \x00"[self.g.index(15)]),
                3 => {
                    let tail = bytes[at..].to_vec();
                    bytes.extend_from_slice(&tail[..tail.len().min(64)]);
                }
                4 => {
                    bytes.remove(at);
                }
                5 | 6 => {
                    // A number replaced by an edge literal.
                    let runs = spans(&bytes, |b| b.is_ascii_digit());
                    if !runs.is_empty() {
                        let (lo, hi) = runs[self.g.index(runs.len())];
                        let edge = self.g.pick(EDGE_NUMBERS);
                        bytes.splice(lo..hi, edge.bytes());
                    }
                }
                7 | 8 => {
                    // A string's content replaced by hostile text, raw or escaped.
                    let strings = string_spans(&bytes);
                    if !strings.is_empty() {
                        let (lo, hi) = strings[self.g.index(strings.len())];
                        let text: Vec<u8> = if self.g.chance(50) {
                            self.g.pick(RAW_STRING_BITS).to_vec()
                        } else {
                            let json = serde_json::to_string(&self.hostile()).unwrap_or_default();
                            json.as_bytes()[1..json.len() - 1].to_vec()
                        };
                        bytes.splice(lo..hi, text);
                    }
                }
                9 => {
                    // A field more: unknown, or a duplicate of a real one.
                    if let Some(end) = bytes.iter().rposition(|b| *b == b'}') {
                        let extra: &[u8] = self.g.pick(&[
                            &b",\"zz\":1"[..],
                            b",\"type\":\"heartbeat\"",
                            b",\"request\":7",
                            b",\"lease_id\":1",
                            b",\"owner_key\":null",
                        ]);
                        bytes.splice(end..end, extra.iter().copied());
                    }
                }
                _ => {
                    let depth = self.g.pick(&[2usize, 127, 128, 129, 2_000]);
                    let mut nested = vec![b'['; depth];
                    nested.extend_from_slice(&bytes);
                    nested.extend(std::iter::repeat_n(b']', depth));
                    bytes = nested;
                }
            }
        }
        bytes
    }

    /// A message padded with whitespace to a size limit, one byte under, at or over it.
    fn pad_to_limit(&mut self, bytes: &[u8]) -> Vec<u8> {
        let limits = self.sim.config.limits;
        let limit = if self.g.chance(70) {
            limits.max_message_bytes
        } else {
            limits.max_bulk_bytes
        };
        let target = (limit + self.g.index(3)).saturating_sub(1).max(bytes.len());
        let mut padded = bytes.to_vec();
        padded.resize(target, b' ');
        padded
    }

    fn junk(&mut self) -> Vec<u8> {
        match self.g.below(6) {
            0 => (0..self.g.below(64)).map(|_| self.g.u64() as u8).collect(),
            1 => Vec::new(),
            2 => b"null".to_vec(),
            3 => self.g.pick(&[
                &b"{\"type\":\"hello\"}"[..],
                b"{\"type\":\"HELLO\",\"protocol\":1}",
                b"{\"type\":\"owner\",\"request\":4294967296,\"command\":{\"command\":\"audit_log\"}}",
                b"{\"type\":\"chunk_result\",\"lease_id\":-1,\"result\":{\"kind\":\"prime_count\",\"count\":1},\"compute_ms\":1}",
                b"{\"type\":\"set_lend\",\"cores\":65536}",
                b"[{\"type\":\"heartbeat\"}]",
                b"\xef\xbb\xbf{\"type\":\"heartbeat\"}",
                b"{\"type\":\"heartbeat\"}\x00",
                b"{\"type\":\"heartbeat\"}{\"type\":\"heartbeat\"}",
            ])
            .to_vec(),
            4 => {
                let hostile = self.hostile();
                encode(&serde_json::json!({ "type": hostile })).into_bytes()
            }
            _ => {
                let depth = self.g.pick(&[128usize, 129, 10_000]);
                let mut nested = vec![b'{'; 1];
                nested.extend(b"\"type\":".iter());
                nested.extend(std::iter::repeat_n(b'[', depth));
                nested
            }
        }
    }

    // -- one step --------------------------------------------------------------------------

    fn step(&mut self) {
        self.info = StepInfo {
            started_ms: self.sim.now,
            may_receive: self
                .m
                .socks
                .iter()
                .filter(|s| s.open)
                .map(|s| s.conn)
                .collect(),
            ..StepInfo::default()
        };
        let before = self.observe();
        self.act();
        self.absorb();
        self.check(&before);
        self.step += 1;
    }

    fn act(&mut self) {
        let open = self.open_socks(None);
        let awaiting = self.open_socks(Some(Role::Awaiting));
        let devices = self.open_socks(Some(Role::Device));
        let owners = self.open_socks(Some(Role::Owner));
        let benching: Vec<usize> = devices
            .iter()
            .copied()
            .filter(|&i| self.m.socks[i].bench.is_some() && !self.m.socks[i].benchmarked)
            .collect();
        let holding: Vec<usize> = devices
            .iter()
            .copied()
            .filter(|&i| !self.m.socks[i].leases.is_empty())
            .collect();
        let gone: Vec<usize> = (0..self.m.socks.len())
            .filter(|&i| !self.m.socks[i].open)
            .collect();
        let idle = !self
            .sim
            .store
            .jobs
            .values()
            .any(|j| matches!(j.state, JobState::Running | JobState::Queued));
        let few = |n: usize, w: u32| if n < 2 { w * 3 } else { w };
        // A replica needs another device than the one that answered first (a disagreement a
        // third): while results wait for one, more devices join.
        let benched = devices
            .iter()
            .filter(|&&i| self.m.socks[i].benchmarked)
            .count();
        let waiting = self.sim.store.jobs.values().any(|j| {
            j.state == JobState::Running
                && self
                    .sim
                    .core
                    .job(&j.job_id)
                    .is_some_and(|v| v.unverified_units > 0)
        });
        let more = |w: u32| if waiting && benched < 3 { w * 3 } else { w };
        let weights = [
            more(few(open.len(), 6)), // 0 connect
            if awaiting.is_empty() {
                0
            } else {
                more(few(devices.len(), 12))
            }, // 1 device hello
            if awaiting.is_empty() { 0 } else { 5 }, // 2 dashboard hello
            if open.is_empty() { 0 } else { 5 }, // 3 heartbeat
            if devices.is_empty() { 0 } else { 3 }, // 4 set_lend
            if benching.is_empty() { 0 } else { 16 }, // 5 benchmark answer
            if holding.is_empty() { 0 } else { 30 }, // 6 lease answer
            if devices.is_empty() { 0 } else { 5 }, // 7 any result
            if open.is_empty() { 0 } else { 7 }, // 8 owner on a socket
            10,                       // 9 owner over HTTP
            9,                        // 10 advance
            2,                        // 11 restart
            if open.is_empty() { 0 } else { 3 }, // 12 disconnect
            if open.is_empty() { 0 } else { 6 }, // 13 mutated message
            if open.is_empty() { 0 } else { 2 }, // 14 junk or size edge
            if gone.is_empty() { 0 } else { 2 }, // 15 on a gone socket
            if open.is_empty() { 0 } else { 1 }, // 16 flood
            if idle && !devices.is_empty() { 12 } else { 1 }, // 17 submit a job
        ];
        match self.g.weighted(&weights) {
            0 => {
                let source = self.source();
                self.note(format!("connect from {source:?}"));
                self.connect(source);
            }
            1 | 2 => {
                let idx = self.g.pick(&awaiting);
                let hello = if self.g.chance(70) {
                    self.gen_device_hello()
                } else {
                    self.gen_dashboard_hello()
                };
                self.send_message(idx, &hello, 8);
            }
            3 => {
                let idx = self.g.pick(&open);
                let message = self.gen_heartbeat(idx);
                self.send_message(idx, &message, 3);
            }
            4 => {
                let idx = self.g.pick(&devices);
                let message = self.gen_set_lend(idx);
                self.send_message(idx, &message, 5);
            }
            5..=7 => {
                let pool = match self.g.below(3) {
                    0 if !benching.is_empty() => &benching,
                    1 if !holding.is_empty() => &holding,
                    _ if !holding.is_empty() && self.g.chance(70) => &holding,
                    _ => &devices,
                };
                let idx = self.g.pick(pool);
                let message = if self.g.chance(25) {
                    self.gen_chunk_frame(idx)
                } else {
                    self.gen_chunk(idx)
                };
                self.send_message(idx, &message, 4);
            }
            8 => {
                let idx = if !owners.is_empty() && self.g.chance(80) {
                    self.g.pick(&owners)
                } else {
                    self.g.pick(&open)
                };
                let message = self.gen_owner_message();
                self.send_message(idx, &message, 6);
            }
            9 => {
                let key = match self.g.weighted(&[75, 10, 5, 10]) {
                    0 => OWNER_KEY.to_owned(),
                    1 => self.g.secret(),
                    2 => String::new(),
                    _ => self.hostile(),
                };
                let command = self.gen_owner_command();
                let mut body = encode(&command).into_bytes();
                if self.g.chance(8) {
                    body = self.mutate(&body);
                }
                let right = key == OWNER_KEY;
                self.note(format!(
                    "http owner (key {}): {}",
                    if right { "right" } else { "wrong" },
                    String::from_utf8_lossy(&body)
                ));
                self.http(&key, &body, command);
            }
            10 => {
                let ms = self.gen_advance();
                self.note(format!("advance {ms} ms"));
                self.advance(ms);
            }
            11 => {
                self.note("restart".into());
                self.info.before_restart = Some(self.sim.snapshot());
                self.info.lost_in_restart = self.sim.core.uncommitted();
                let seed = self.g.seed32();
                self.restart(seed);
            }
            12 => {
                let idx = self.g.index(self.m.socks.len());
                self.note(format!("disconnect socket {idx}"));
                self.disconnect(idx);
            }
            13 => {
                let idx = self.g.pick(&open);
                let message = self.gen_message(idx);
                let bytes = self.mutate(encode(&message).as_bytes());
                self.note(format!(
                    "mutated on socket {idx}: {}",
                    String::from_utf8_lossy(&bytes)
                ));
                self.send_bytes(idx, &bytes);
            }
            14 => {
                let idx = self.g.pick(&open);
                let bytes = if self.g.chance(50) {
                    let message = self.gen_message(idx);
                    self.pad_to_limit(encode(&message).as_bytes())
                } else {
                    self.junk()
                };
                self.note(format!(
                    "junk of {} bytes on socket {idx}: {}",
                    bytes.len(),
                    String::from_utf8_lossy(&bytes)
                ));
                self.send_bytes(idx, &bytes);
            }
            15 => {
                let idx = self.g.pick(&gone);
                let message = self.gen_message(idx);
                self.send_message(idx, &message, 0);
            }
            17 => {
                let command = OwnerCommand::SubmitJob {
                    job: self.gen_job(),
                };
                let body = encode(&command).into_bytes();
                self.note(format!(
                    "http owner (key right): {}",
                    String::from_utf8_lossy(&body)
                ));
                self.http(OWNER_KEY, &body, command);
            }
            _ => {
                let idx = self.g.pick(&open);
                let count = self.sim.config.message_burst as usize + 1 + self.g.index(2);
                self.note(format!("flood socket {idx} with {count} heartbeats"));
                for _ in 0..count {
                    let message = self.gen_heartbeat(idx);
                    self.send(idx, &message);
                }
            }
        }
    }

    /// Sends a message, sometimes mutated (`mutate_percent`).
    fn send_message(&mut self, idx: usize, message: &ToCoordinator, mutate_percent: u64) {
        let mut bytes = encode(message).into_bytes();
        let mutated = self.g.chance(mutate_percent);
        if mutated {
            bytes = self.mutate(&bytes);
        }
        let role = self.m.socks[idx].role;
        let state = if self.m.socks[idx].open { "" } else { "gone " };
        self.note(format!(
            "{}on {state}{role:?} socket {idx}: {}",
            if mutated { "mutated " } else { "" },
            String::from_utf8_lossy(&bytes)
        ));
        self.send_bytes(idx, &bytes);
    }

    fn gen_advance(&mut self) -> u64 {
        let now = self.now();
        let alarm = self.sim.alarm.map(|at| at.saturating_sub(now));
        let hello_due = self
            .sim
            .attachments
            .iter()
            .filter(|(conn, _)| !self.sim.closed.contains_key(conn))
            .filter_map(|(_, a)| match a.session {
                Session::AwaitingHello { since_ms, .. } => {
                    Some((since_ms + self.sim.config.hello_timeout_ms).saturating_sub(now))
                }
                _ => None,
            })
            .min();
        let deadline = self
            .m
            .socks
            .iter()
            .filter(|s| s.open)
            .flat_map(|s| s.leases.values().map(|h| h.deadline_ms))
            .min()
            .map(|d| d.saturating_sub(now));
        match self.g.weighted(&[10, 8, 30, 10, 5, 6, 6, 6, 4, 3]) {
            0 => 0,
            1 => 1,
            2 => self.g.below(2_000),
            3 => alarm.unwrap_or(0),
            4 => alarm.unwrap_or(1).saturating_sub(1),
            5 => hello_due.unwrap_or(10_000),
            6 => deadline.unwrap_or(5_000),
            7 => deadline.map_or(5_001, |d| d + 1),
            8 => self.sim.config.offline_after_ms + self.g.below(3_000),
            _ => self.g.below(180_000),
        }
    }

    // -- what the oracle expects of an input -----------------------------------------------

    /// Notes what a decoded message on an open socket must or may do.
    fn expect(&mut self, idx: usize, message: &ToCoordinator) {
        let role = self.m.socks[idx].role;
        match (role, message) {
            (Role::Awaiting, ToCoordinator::Hello(hello)) => {
                if let HelloRole::Device { name, .. } = &hello.role {
                    self.m.owner_key_named |= name.contains(OWNER_KEY);
                }
                let sent = self.judge_hello(idx, hello);
                self.info.hellos.push(sent);
            }
            (_, ToCoordinator::Owner { request, .. }) => {
                self.info.owner_requests.push((idx, *request));
            }
            (
                Role::Device,
                ToCoordinator::ChunkResult {
                    lease_id,
                    result,
                    ticket,
                    ..
                },
            ) => self.expect_chunk(idx, *lease_id, result, ticket.as_deref()),
            (Role::Device, ToCoordinator::ChunkResults { results }) => {
                for answer in results {
                    self.expect_chunk(
                        idx,
                        answer.lease_id,
                        &answer.result,
                        answer.ticket.as_deref(),
                    );
                }
            }
            _ => {}
        }
    }

    /// What a result, alone or in a frame, must or may do.
    fn expect_chunk(
        &mut self,
        idx: usize,
        lease_id: u64,
        result: &WorkResult,
        ticket: Option<&str>,
    ) {
        let sent = self.judge_chunk(idx, lease_id, result, ticket);
        if self.m.results_sent.len() >= 4_096 {
            self.m.results_sent.pop_first();
        }
        self.m
            .results_sent
            .insert((sent.device_id.clone(), lease_id));
        let what = format!("{:?}/{:?}", sent.kind, sent.quality).to_lowercase();
        *self.tally.answers.entry(what).or_default() += 1;
        self.info.chunks.push(sent);
        if self.m.answered.len() == 64 {
            self.m.answered.pop_front();
        }
        self.m.answered.push_back((lease_id, result.clone()));
    }

    fn judge_hello(&self, idx: usize, hello: &Hello) -> HelloSent {
        let mut sent = HelloSent {
            sock: idx,
            hello: hello.clone(),
            invite: None,
            must_register: false,
            must_register_unless_limited: false,
            may_register: false,
        };
        let HelloRole::Device {
            credential: None,
            invite: Some(proof),
            ..
        } = &hello.role
        else {
            return sent;
        };
        let now = self.now();
        let live = |id: &str| {
            self.sim.store.invites.get(id).is_some_and(|r| {
                !r.revoked && now < r.expires_ms && r.max_uses.is_none_or(|max| r.uses < max)
            })
        };
        let fresh = (OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.protocol);
        match proof {
            JoinProof::OwnerKey { owner_key } => {
                sent.may_register = owner_key == OWNER_KEY;
                sent.must_register = sent.may_register && fresh;
            }
            JoinProof::Token { token } => {
                if let Some(i) = self.m.invites.iter().find(|i| &i.token == token) {
                    let ok = live(&i.invite_id);
                    sent.invite = Some((i.invite_id.clone(), ok));
                    sent.may_register = ok;
                    sent.must_register = ok && fresh;
                }
            }
            JoinProof::Code { code } => {
                let canonical = normalize_code(code);
                let found = self
                    .m
                    .invites
                    .iter()
                    .find(|i| i.code.is_some() && i.code == canonical);
                if let Some(i) = found {
                    let ok = live(&i.invite_id);
                    sent.invite = Some((i.invite_id.clone(), ok));
                    sent.may_register = ok;
                    sent.must_register_unless_limited = ok && fresh;
                }
            }
        }
        sent
    }

    fn judge_chunk(
        &mut self,
        idx: usize,
        lease_id: u64,
        result: &WorkResult,
        ticket: Option<&str>,
    ) -> ChunkSent {
        let device_id = self.m.socks[idx].device_id.clone().unwrap_or_default();
        // A result sent again with the ticket of a lease issued to this device: the core may
        // take it as that work's first answer (when nobody holds or did the work since).
        let resent = ticket.and_then(|ticket| {
            self.m
                .issued
                .get(&(device_id.clone(), lease_id))
                .filter(|h| h.ticket.as_deref() == Some(ticket))
                .cloned()
        });
        let mut sent = ChunkSent {
            sock: idx,
            device_id: device_id.clone(),
            kind: ChunkKind::Stray,
            quality: Quality::Unknown,
            job_id: None,
            units: 0,
            range: None,
            key: None,
            foreign: None,
            resent: false,
        };
        let sock = &mut self.m.socks[idx];
        if let Some(bench) = sock
            .bench
            .filter(|b| b.lease_id == lease_id && !sock.benchmarked)
        {
            sent.kind = ChunkKind::Bench;
            sent.quality = if *result
                == (WorkResult::PrimeCount {
                    count: bench.expected,
                }) {
                sock.benchmarked = true;
                Quality::Right
            } else {
                Quality::Refutable
            };
            return sent;
        }
        let holds = sock.leases.remove(&lease_id);
        sent.resent = holds.is_none() && resent.is_some();
        if let Some(held) = holds.or(resent) {
            sent.job_id = Some(held.job_id.clone());
            sent.kind = ChunkKind::Job;
            sent.units = job_units(&held.work);
            sent.quality = if right_answer(&held.work).as_ref() == Some(result) {
                Quality::Right
            } else if refutable(&held.work, result) {
                Quality::Refutable
            } else {
                Quality::Unknown
            };
            if sent.quality == Quality::Refutable {
                return sent; // refused: no vote
            }
            let range = format!("{:?}", held.work);
            let key = answer_key(result);
            let votes = self
                .m
                .votes
                .entry((held.job_id.clone(), range.clone()))
                .or_default();
            // Two devices with the same wrong answer outvote an honest one: the job's result
            // may then be wrong. (A wrong answer of one device is caught by its replica, and a
            // wrong first answer of a trusted device may not be replicated: see `check_jobs`.)
            if sent.quality != Quality::Right
                && votes
                    .iter()
                    .any(|v| v.device_id != device_id && v.key == key)
            {
                self.m.tainted.insert(held.job_id.clone());
            }
            if sent.quality != Quality::Right {
                self.m.wrong.insert(held.job_id.clone());
            }
            votes.push(Vote {
                device_id,
                key: key.clone(),
                quality: sent.quality,
            });
            sent.range = Some(range);
            sent.key = Some(key);
            return sent;
        }
        sent.foreign = self
            .m
            .socks
            .iter()
            .enumerate()
            .filter(|(i, s)| *i != idx && s.open && s.device_id.as_ref() != Some(&device_id))
            .find_map(|(_, s)| s.leases.get(&lease_id).map(|h| h.job_id.clone()));
        sent
    }

    /// Whether a device's quarantine in this step is explained by a vote it lost: a device
    /// answered a range in this step (a replica, or a further answer after a disagreement),
    /// the quarantined device had answered the same range (possibly in this step), and another
    /// answer to it than the device's either had the votes of two other devices or came from
    /// a device that joined with the owner key (the owner vouches for its answers). This is
    /// what every rule of deciding a disagreement needs (`verify.rs`: two votes, a lead of
    /// two votes while more devices could answer, a vouched device's word), whatever the lead.
    ///
    /// Returns the job and whether the losing answer was the right one and could only have
    /// lost to two devices that gave the same wrong answer (not to a vouched device's).
    fn lost_a_vote(&self, loser: &str) -> Option<(String, bool)> {
        self.info.chunks.iter().find_map(|c| {
            let (Some(job_id), Some(range)) = (&c.job_id, &c.range) else {
                return None;
            };
            let votes = self.m.votes.get(&(job_id.clone(), range.clone()))?;
            // A device may have answered a range more than once (a lease of it again after
            // its part was taken out, or after a restart): any of its answers may be the one
            // the verifier holds.
            votes
                .iter()
                .filter(|lost| lost.device_id == loser)
                .find_map(|lost| {
                    let rivals: Vec<&Vote> = votes
                        .iter()
                        .filter(|w| w.device_id != loser && w.key != lost.key)
                        .collect();
                    let by_vouched = rivals.iter().any(|w| self.vouched(&w.device_id));
                    let by_votes = rivals.iter().any(|w| {
                        rivals
                            .iter()
                            .any(|v| v.key == w.key && v.device_id != w.device_id)
                    });
                    (by_vouched || by_votes).then(|| {
                        (
                            job_id.clone(),
                            lost.quality == Quality::Right && !by_vouched,
                        )
                    })
                })
        })
    }

    /// Devices whose answer may have lost a vote in this step (see [`Fuzzer::lost_a_vote`]).
    fn outvoted_this_step(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for c in &self.info.chunks {
            let (Some(job_id), Some(range)) = (&c.job_id, &c.range) else {
                continue;
            };
            let Some(votes) = self.m.votes.get(&(job_id.clone(), range.clone())) else {
                continue;
            };
            for v in votes {
                if self.lost_a_vote(&v.device_id).is_some() {
                    out.insert(v.device_id.clone());
                }
            }
        }
        out
    }

    /// The device joined with the owner key (as stored).
    fn vouched(&self, device_id: &str) -> bool {
        self.sim
            .store
            .devices
            .get(device_id)
            .is_some_and(|d| d.credibility.vouched)
    }

    // -- what came out ---------------------------------------------------------------------

    /// Takes every message the core sent this step and checks it against the oracle.
    fn absorb(&mut self) {
        let inbox = std::mem::take(&mut self.sim.inbox);
        for (conn, messages) in inbox {
            self.core_out += messages.len() as u64;
            let Some(&idx) = self.m.by_conn.get(&conn) else {
                panic!("a message to a socket that was never connected: {conn:?}");
            };
            assert!(
                self.info.may_receive.contains(&conn),
                "a message to socket {idx}, which was gone before this step: {messages:?}"
            );
            for message in messages {
                self.absorb_one(idx, message);
            }
        }
        for sock in &mut self.m.socks {
            if sock.open {
                if let Some(code) = self.sim.closed.get(&sock.conn) {
                    sock.open = false;
                    *self.tally.closes.entry(*code).or_default() += 1;
                }
            }
        }
    }

    fn absorb_one(&mut self, idx: usize, message: ToClient) {
        let now = self.now();
        let sock = &self.m.socks[idx];
        let (role, welcomed) = (sock.role, sock.welcomed);
        if !welcomed {
            assert!(
                matches!(message, ToClient::Welcome { .. } | ToClient::Error { .. }),
                "socket {idx} got {message:?} before its welcome"
            );
        }
        match message {
            ToClient::Welcome {
                protocol,
                role: granted,
                ..
            } => {
                assert!(
                    role == Role::Awaiting && !welcomed,
                    "a second welcome on socket {idx}"
                );
                let hello = self
                    .info
                    .hellos
                    .iter()
                    .find(|h| h.sock == idx)
                    .unwrap_or_else(|| panic!("a welcome on socket {idx} without a hello"))
                    .clone();
                assert!(
                    (OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.hello.protocol),
                    "welcomed version {}",
                    hello.hello.protocol
                );
                assert_eq!(protocol, hello.hello.protocol, "the welcome's version");
                self.m.socks[idx].deltas = hello.hello.protocol >= 3;
                self.m.socks[idx].acks = hello.hello.protocol >= 4;
                self.m.socks[idx].batches = hello.hello.protocol >= 5;
                self.welcome(idx, &hello, granted);
            }
            ToClient::Leases { leases } => {
                assert_eq!(role, Role::Device, "leases for a {role:?} socket");
                assert!(
                    self.m.socks[idx].batches,
                    "a frame of leases for a device below protocol 5"
                );
                assert!(leases.len() >= 2, "a frame of {} lease(s)", leases.len());
                for lease in leases {
                    self.absorb_one(idx, lease.into_lease());
                }
            }
            ToClient::Lease {
                lease_id,
                job_id,
                work,
                deadline_ms,
                ticket,
            } => {
                assert_eq!(role, Role::Device, "a lease for a {role:?} socket");
                let sock = &mut self.m.socks[idx];
                assert_eq!(
                    ticket.is_some(),
                    sock.acks && job_id != BENCH_JOB_ID,
                    "a ticket with exactly the job leases of a protocol 4 device"
                );
                if job_id == BENCH_JOB_ID {
                    assert!(
                        (1..1 << 32).contains(&lease_id),
                        "benchmark lease id {lease_id}"
                    );
                    assert!(sock.bench.is_none(), "a second benchmark on one connection");
                    let Work::PrimeCount { lo, hi } = work else {
                        panic!("a benchmark of another kind: {work:?}");
                    };
                    assert!(
                        hi.checked_sub(lo) == Some(1 << 22),
                        "a benchmark of another size: [{lo}, {hi})"
                    );
                    assert!(
                        lo >= 1 << 30 && hi <= (1 << 34) + (1 << 22),
                        "a benchmark outside [2^30, 2^34): [{lo}, {hi})"
                    );
                    let expected = kernels::primes::count_primes(lo, hi);
                    sock.bench = Some(Bench { lease_id, expected });
                } else {
                    assert!(
                        lease_id >> EPOCH_SHIFT != 0,
                        "lease {lease_id} of epoch 0 (the benchmark's) for job {job_id}"
                    );
                    assert!(
                        sock.benchmarked,
                        "socket {idx} was leased job work before answering its benchmark"
                    );
                    assert!(
                        lease_id < 1 << 53,
                        "lease id {lease_id} is not exact in JavaScript"
                    );
                    assert!(
                        deadline_ms > self.info.started_ms,
                        "a lease already past its deadline"
                    );
                    assert!(
                        self.sim.store.jobs.contains_key(&job_id),
                        "a lease of an unknown job"
                    );
                    let units = job_units(&work);
                    assert!(units > 0, "an empty lease: {work:?}");
                    self.tally.leases += 1;
                    let held = Held {
                        job_id,
                        work,
                        deadline_ms,
                        ticket,
                    };
                    if let (Some(device_id), Some(_)) = (&sock.device_id, &held.ticket) {
                        if self.m.issued.len() >= 256 {
                            self.m.issued.pop_first();
                        }
                        self.m
                            .issued
                            .insert((device_id.clone(), lease_id), held.clone());
                    }
                    sock.leases.insert(lease_id, held);
                }
            }
            ToClient::CancelLease { lease_id } => {
                assert_eq!(role, Role::Device, "a lease cancelled on a {role:?} socket");
                self.m.socks[idx].leases.remove(&lease_id);
            }
            ToClient::Committed { lease_ids } => {
                let sock = &self.m.socks[idx];
                assert!(
                    role == Role::Device && sock.acks,
                    "an acknowledgement on a {role:?} socket (protocol 4: {})",
                    sock.acks
                );
                let device_id = sock.device_id.clone().unwrap_or_default();
                for lease_id in lease_ids {
                    assert!(
                        self.m.results_sent.contains(&(device_id.clone(), lease_id)),
                        "device {device_id} was told lease {lease_id}'s result is stored, \
                         and it never sent one"
                    );
                    self.tally.acknowledged += 1;
                }
            }
            ToClient::Snapshot(snapshot) => {
                assert!(
                    matches!(role, Role::Viewer | Role::Owner),
                    "a snapshot for a {role:?} socket"
                );
                assert!(snapshot.now_ms <= now);
                let sock = &mut self.m.socks[idx];
                assert!(
                    sock.last_seq_this_core
                        .is_none_or(|last| last < snapshot.seq),
                    "snapshot seq went back on socket {idx}"
                );
                if sock.deltas {
                    assert_eq!(
                        sock.last_seq_this_core, None,
                        "a second full snapshot for a delta dashboard on socket {idx}"
                    );
                    sock.held = Some(snapshot.clone());
                }
                sock.last_snapshot = Some(snapshot.seq);
                sock.last_seq_this_core = Some(snapshot.seq);
                self.check_no_secrets(snapshot.log.iter().map(|e| e.text.as_str()));
                self.fulls.insert(snapshot.seq, snapshot);
            }
            ToClient::SnapshotDelta(delta) => {
                let sock = &mut self.m.socks[idx];
                assert!(
                    sock.deltas && matches!(role, Role::Viewer | Role::Owner),
                    "a delta for socket {idx}, a {role:?} that did not ask for deltas"
                );
                assert_eq!(
                    sock.last_seq_this_core,
                    delta.seq.checked_sub(1),
                    "a delta that does not follow the last snapshot on socket {idx}"
                );
                let texts: Vec<String> = delta.log.iter().map(|e| e.text.clone()).collect();
                let held = sock
                    .held
                    .as_mut()
                    .unwrap_or_else(|| panic!("a delta before any snapshot on socket {idx}"));
                held.apply((*delta).clone())
                    .unwrap_or_else(|gap| panic!("socket {idx}: {gap:?}"));
                sock.last_snapshot = Some(delta.seq);
                sock.last_seq_this_core = Some(delta.seq);
                self.check_no_secrets(texts.iter().map(String::as_str));
            }
            ToClient::OwnerResult { request, result } => {
                assert_eq!(role, Role::Owner, "an owner result on a {role:?} socket");
                assert!(
                    self.info.owner_requests.contains(&(idx, request)),
                    "an owner result for request {request}, which socket {idx} did not send"
                );
                self.tally.owner_ok += 1;
                self.record_reply(&result);
            }
            ToClient::Error { code, request, .. } => {
                if let Some(request) = request {
                    assert!(
                        self.info.owner_requests.contains(&(idx, request)),
                        "an error for request {request}, which socket {idx} did not send"
                    );
                    if role == Role::Owner {
                        self.tally.owner_refused += 1;
                    }
                }
                self.info.errors.push((idx, code));
            }
            ToClient::HeartbeatAck { server_time_ms } => {
                assert_eq!(server_time_ms, Some(now));
            }
            ToClient::Share(DeviceShare {
                workers,
                duty_percent,
                lent_cores,
                throttle_percent,
                ..
            }) => {
                assert_eq!(role, Role::Device, "a share for a {role:?} socket");
                assert!((1..=100).contains(&duty_percent), "duty {duty_percent} %");
                assert!(throttle_percent <= 100);
                let asked = u32::from(lent_cores) * u32::from(throttle_percent);
                let given = u32::from(workers) * u32::from(duty_percent);
                assert!(
                    given <= asked && (workers == 0) == (asked == 0),
                    "{workers} workers at {duty_percent} % for {lent_cores} cores at {throttle_percent} %"
                );
            }
        }
    }

    fn welcome(&mut self, idx: usize, hello: &HelloSent, granted: WelcomeRole) {
        let sock = &mut self.m.socks[idx];
        sock.welcomed = true;
        match (granted, &hello.hello.role) {
            (WelcomeRole::Dashboard { owner }, HelloRole::Dashboard { owner_key }) => {
                if owner {
                    assert_eq!(
                        owner_key.as_deref(),
                        Some(OWNER_KEY),
                        "an owner dashboard without the key"
                    );
                    sock.role = Role::Owner;
                } else {
                    assert_eq!(owner_key, &None, "a dashboard with a wrong key was let in");
                    sock.role = Role::Viewer;
                }
            }
            (
                WelcomeRole::Device {
                    device_id,
                    credential: Some(credential),
                },
                HelloRole::Device {
                    credential: None, ..
                },
            ) => {
                assert!(
                    hello.may_register,
                    "a device registered without a live invite or the owner key: {hello:?}"
                );
                assert_eq!(credential.device_id, device_id);
                // Only a device the owner's key brought in is trusted from the start.
                let vouched = matches!(
                    &hello.hello.role,
                    HelloRole::Device {
                        invite: Some(JoinProof::OwnerKey { .. }),
                        ..
                    }
                );
                assert_eq!(
                    self.sim
                        .store
                        .devices
                        .get(&device_id)
                        .map(|d| d.credibility),
                    Some(Credibility {
                        vouched,
                        ..Credibility::default()
                    }),
                    "the credibility of device {device_id}, just registered"
                );
                sock.role = Role::Device;
                sock.device_id = Some(device_id.clone());
                self.m.creds.insert(device_id, credential);
                self.tally.registered += 1;
            }
            (
                WelcomeRole::Device {
                    device_id,
                    credential: None,
                },
                HelloRole::Device {
                    credential: Some(presented),
                    ..
                },
            ) => {
                assert_eq!(presented.device_id, device_id);
                assert_eq!(
                    self.m.creds.get(&device_id),
                    Some(presented),
                    "a device resumed with a credential it was never given"
                );
                sock.role = Role::Device;
                sock.device_id = Some(device_id);
                self.tally.resumed += 1;
            }
            (granted, role) => panic!("welcomed as {granted:?} after a hello as {role:?}"),
        }
    }

    /// No invite token, device secret or owner key is ever shown in a log (unless someone
    /// typed the owner key into a device name).
    fn check_no_secrets<'a>(&self, lines: impl Iterator<Item = &'a str>) {
        let secrets: Vec<&str> = self
            .m
            .invites
            .iter()
            .map(|i| i.token.as_str())
            .chain(self.m.creds.values().map(|c| c.secret.as_str()))
            .chain((!self.m.owner_key_named).then_some(OWNER_KEY))
            .collect();
        for line in lines {
            for secret in &secrets {
                assert!(!line.contains(secret), "a secret in a log line: {line}");
            }
        }
    }

    /// Learns secrets and ids from an owner reply.
    fn record_reply(&mut self, reply: &OwnerReply) {
        if let OwnerReply::Audit { entries } = reply {
            self.check_no_secrets(entries.iter().map(|e| e.text.as_str()));
        }
        if let OwnerReply::InviteCreated {
            invite,
            token,
            code,
        } = reply
        {
            let canonical = normalize_code(code);
            assert!(
                canonical.is_some(),
                "an invite code that does not normalise: {code}"
            );
            self.m.invites.push(KnownInvite {
                invite_id: invite.invite_id.clone(),
                token: token.clone(),
                code: canonical,
            });
        }
    }

    // -- invariants ------------------------------------------------------------------------

    fn observe(&self) -> Obs {
        let meta = self.sim.core.meta().map_or((RunState::Running, 100), |m| {
            (m.run_state, m.throttle_percent)
        });
        let jobs = self
            .sim
            .store
            .jobs
            .keys()
            .map(|id| {
                let view = self
                    .sim
                    .core
                    .job(id)
                    .unwrap_or_else(|| panic!("stored job {id} is not in memory"));
                (id.clone(), view)
            })
            .collect();
        // Storage as a restarted object would read it: the device rows with the credibility
        // changes of later commits applied.
        let mut stored = self.sim.store.load();
        stored.fold_commits();
        let devices = stored
            .devices
            .into_iter()
            .map(|d| (d.device_id.clone(), d))
            .collect();
        let rows = self.sim.core.snapshot(self.now()).devices;
        let trusted = rows
            .iter()
            .filter(|d| d.trusted)
            .map(|d| d.id.clone())
            .collect();
        let counts = rows
            .into_iter()
            .map(|d| (d.id, (d.confirmed, d.replicated, d.disputed)))
            .collect();
        Obs {
            counts,
            trusted,
            meta,
            devices,
            invites: self.sim.store.invites.clone(),
            jobs,
            writes: self.sim.writes,
        }
    }

    fn check(&mut self, before: &Obs) {
        let after = self.observe();
        self.waited_since = if self.waited_on(&after) {
            Some(self.waited_since.unwrap_or(self.now()))
        } else {
            None
        };
        self.check_counters();
        self.check_deltas();
        self.check_sockets(&after);
        self.check_registry(before, &after);
        self.check_owner_state(before, &after);
        self.check_results(before, &after);
        self.check_credibility(before, &after);
        self.check_jobs(before, &after);
        if let Some(snapshot) = self.info.before_restart.take() {
            self.check_restart(&snapshot);
        }
    }

    /// The core's cost counters count exactly what the glue handed it and carried out.
    fn check_counters(&self) {
        let c = self.sim.core.counters();
        assert_eq!(
            c.storage_writes as usize,
            self.sim.writes - self.base_writes,
            "storage writes counted vs carried out"
        );
        assert_eq!(
            c.alarm_writes as usize,
            self.sim.alarm_writes - self.base_alarm_writes,
            "alarm writes counted vs carried out"
        );
        assert_eq!(c.messages_in, self.core_in, "messages in");
        assert_eq!(c.alarms, self.core_alarms, "alarms");
        assert_eq!(c.messages_out, self.core_out, "messages out");
        assert!(
            c.rejected <= self.core_in + self.core_http,
            "more refusals than inputs"
        );
    }

    /// A dashboard that applied deltas holds what a full snapshot of the same `seq` says,
    /// except that an online device's last-seen time may lag by up to
    /// [`SEEN_LAG_MS`].
    fn check_deltas(&mut self) {
        for (idx, sock) in self.m.socks.iter().enumerate().filter(|(_, s)| s.open) {
            let Some(held) = &sock.held else { continue };
            let Some(full) = self.fulls.get(&held.seq) else {
                continue;
            };
            self.tally.deltas_compared += 1;
            let mut rows: BTreeMap<&str, DeviceView> = BTreeMap::new();
            for row in &held.devices {
                let exact = full
                    .devices
                    .iter()
                    .find(|d| d.id == row.id)
                    .unwrap_or_else(|| {
                        panic!("socket {idx} holds device {} not in {}", row.id, full.seq)
                    });
                let lag = exact.last_seen_ms.checked_sub(row.last_seen_ms);
                let ok = match exact.status {
                    DeviceStatus::Online => lag.is_some_and(|l| l <= SEEN_LAG_MS),
                    DeviceStatus::Offline => lag == Some(0),
                };
                assert!(
                    ok,
                    "socket {idx}: device {} last seen {} held, {} exact",
                    row.id, row.last_seen_ms, exact.last_seen_ms
                );
                let mut row = row.clone();
                row.last_seen_ms = exact.last_seen_ms;
                rows.insert(&exact.id, row);
            }
            let exact: BTreeMap<&str, DeviceView> = full
                .devices
                .iter()
                .map(|d| (d.id.as_str(), d.clone()))
                .collect();
            assert_eq!(rows, exact, "socket {idx}: device rows at seq {}", full.seq);
            let mut same = held.clone();
            same.devices = full.devices.clone();
            assert_eq!(&same, full, "socket {idx}: snapshot at seq {}", full.seq);
        }
        // Only the newest snapshots can still be compared.
        let newest = self.fulls.keys().next_back().copied().unwrap_or(0);
        self.fulls.retain(|seq, _| seq + 4 >= newest);
    }

    /// Whether anyone waits on the swarm: a socket that has not said hello yet, a dashboard, or
    /// a running job.
    fn waited_on(&self, after: &Obs) -> bool {
        let job_running = after.meta.0 == RunState::Running
            && after.jobs.values().any(|j| j.state == JobState::Running);
        job_running
            || self.sim.core.uncommitted() > 0
            || self
                .m
                .socks
                .iter()
                .any(|s| s.open && s.role != Role::Device)
    }

    /// Sessions agree with the welcomes, devices are online once, the benchmark gate holds, the
    /// alarm is armed exactly while someone waits on it (a socket's hello, a dashboard, a
    /// running job), and silent sockets are closed in time.
    fn check_sockets(&self, after: &Obs) {
        let now = self.now();
        let config = &self.sim.config;
        let mut online = BTreeSet::new();
        let mut open = 0;
        let waited_on = self.waited_on(after);
        for (idx, sock) in self.m.socks.iter().enumerate().filter(|(_, s)| s.open) {
            open += 1;
            let attachment = self
                .sim
                .attachments
                .get(&sock.conn)
                .unwrap_or_else(|| panic!("open socket {idx} has no attachment"));
            match (&attachment.session, sock.role) {
                (Session::AwaitingHello { since_ms, .. }, Role::Awaiting) => {
                    // The core's timeout grows with how long it kept hellos waiting, up to
                    // 6 × the configured one.
                    let timeout = self.sim.core.hello_timeout();
                    assert!(
                        (config.hello_timeout_ms..=config.hello_timeout_ms * 6).contains(&timeout)
                    );
                    assert!(
                        now < since_ms.saturating_add(timeout),
                        "socket {idx} is still open past its hello timeout"
                    );
                }
                (Session::Device { device_id, link }, Role::Device) => {
                    assert_eq!(Some(device_id), sock.device_id.as_ref());
                    assert!(
                        after.devices.contains_key(device_id),
                        "socket {idx} is open for a device that is not registered"
                    );
                    assert!(
                        online.insert(device_id.clone()),
                        "device {device_id} is on two sockets"
                    );
                    if link.bench.is_some() {
                        assert!(
                            link.leases.is_empty(),
                            "socket {idx} holds job leases before its benchmark"
                        );
                    }
                    if sock.bench.is_some() {
                        assert_eq!(
                            link.bench.is_none(),
                            sock.benchmarked,
                            "socket {idx}: the benchmark gate disagrees with the answers sent"
                        );
                    }
                    let told: BTreeSet<u64> = sock.leases.keys().copied().collect();
                    let kept: BTreeSet<u64> = link.leases.iter().map(|l| l.0).collect();
                    assert!(
                        kept.is_subset(&told),
                        "socket {idx} holds leases it was never sent: {:?}",
                        kept.difference(&told).collect::<Vec<_>>()
                    );
                    if told.len() <= swarm_core::MAX_ATTACHED_LEASES {
                        assert_eq!(
                            kept, told,
                            "socket {idx}: leases dropped or kept without telling the device"
                        );
                    }
                }
                (Session::Dashboard { owner: false, .. }, Role::Viewer)
                | (Session::Dashboard { owner: true, .. }, Role::Owner) => {}
                (session, role) => {
                    panic!("socket {idx} is {role:?} but its session is {session:?}")
                }
            }
        }
        assert_eq!(self.sim.core.connection_count(), open, "open sockets");
        if open > 0 && waited_on {
            assert!(self.sim.alarm.is_some(), "someone waits, and no alarm");
        } else if open == 0 && self.sim.core.uncommitted() == 0 {
            assert_eq!(self.sim.alarm, None, "armed with no socket open");
        } else if let Some(at) = self.sim.alarm {
            // Nobody waits: what is left is an alarm armed earlier, which fires once and is
            // not re-armed. A hello deadline may have been armed with the longest grace
            // (6 × the timeout) by a core that was restarted since.
            let latest = config
                .broadcast_interval_ms
                .max(config.hello_timeout_ms * 6)
                .max(config.commit_interval_ms);
            assert!(
                at <= now.saturating_add(latest),
                "an idle swarm armed its alarm for {at} at {now}"
            );
        }
        if let Some(at) = self.sim.alarm {
            assert!(at >= now, "the alarm is armed in the past");
        }
        let snapshot = self.sim.core.snapshot(now);
        assert_eq!(snapshot.online as usize, online.len(), "devices online");
        assert_eq!(
            snapshot.device_total as usize,
            after.devices.len(),
            "devices in memory vs stored"
        );
        // Credibility reaches storage with the running job's next commit: it is compared
        // whenever nothing waits to be committed.
        let committed = self.sim.core.uncommitted() == 0;
        for row in &snapshot.devices {
            let stored = &after.devices[&row.id];
            let cred = &stored.credibility;
            assert_eq!(
                (row.enabled, row.quarantined, &row.name),
                (stored.enabled, stored.quarantined, &stored.name),
                "device {} in memory vs stored",
                row.id
            );
            if committed {
                assert_eq!(
                    (row.trusted, row.confirmed, row.replicated, row.disputed),
                    (
                        cred.trusted(&config.verify),
                        cred.confirmed,
                        cred.replicated,
                        cred.disputed
                    ),
                    "device {} credibility in memory vs committed",
                    row.id
                );
            }
            // OFFLINE is checked on every wake-up while someone waits (every broadcast while a
            // dashboard watches, every commit while only a job runs), from the first one after
            // someone began to wait on the swarm; while nobody waits, it is not checked at all.
            let period = config.broadcast_interval_ms.max(config.commit_interval_ms);
            let ticked = self.waited_since.is_some_and(|since| now >= since + period);
            if ticked && row.status == shared_protocol::DeviceStatus::Online {
                assert!(
                    now.saturating_sub(row.last_seen_ms) <= config.offline_after_ms + 2 * period,
                    "device {} is online long after its last heartbeat (now {now}, last seen \
                     {}, OFFLINE after {} ms, alarm {:?})",
                    row.id,
                    row.last_seen_ms,
                    config.offline_after_ms,
                    self.sim.alarm
                );
            }
        }
        assert_eq!((snapshot.run_state, snapshot.throttle_percent), after.meta);
    }

    /// A device registers only through a hello with a live invite or the owner key (and then
    /// must), only the owner removes one, and an invite's uses grow only by such a hello.
    fn check_registry(&mut self, before: &Obs, after: &Obs) {
        let added: Vec<&String> = after
            .devices
            .keys()
            .filter(|id| !before.devices.contains_key(*id))
            .collect();
        let removed: Vec<&String> = before
            .devices
            .keys()
            .filter(|id| !after.devices.contains_key(*id))
            .collect();
        assert!(
            added.len() <= 1,
            "more than one device registered by one input"
        );
        if let Some(id) = added.first() {
            assert!(
                self.info.hellos.iter().any(|h| h.may_register),
                "device {id} registered without a live invite or the owner key"
            );
            assert!(
                self.m.creds.contains_key(*id),
                "device {id} registered but its credential was not sent"
            );
        }
        for hello in &self.info.hellos {
            let closed_first = !self
                .info
                .may_receive
                .contains(&self.m.socks[hello.sock].conn);
            if closed_first {
                continue;
            }
            if hello.must_register {
                assert_eq!(
                    added.len(),
                    1,
                    "a hello with a live link or the owner key was refused: {hello:?}"
                );
            }
            if hello.must_register_unless_limited && added.is_empty() {
                assert!(
                    self.info
                        .errors
                        .contains(&(hello.sock, ErrorCode::RateLimited)),
                    "a hello with a live code was refused and not for the guessing limit: {hello:?}"
                );
            }
        }
        if !removed.is_empty() {
            assert!(
                self.info.owner_authorized,
                "devices {removed:?} removed without the owner key"
            );
        }
        for (id, b) in &before.invites {
            let Some(a) = after.invites.get(id) else {
                panic!("invite {id} vanished from storage");
            };
            if a.uses != b.uses {
                let redeemed = self
                    .info
                    .hellos
                    .iter()
                    .any(|h| h.invite.as_ref().is_some_and(|(i, live)| i == id && *live));
                assert!(
                    a.uses == b.uses + 1 && redeemed && added.len() == 1,
                    "invite {id} uses went {} → {} without a join through it",
                    b.uses,
                    a.uses
                );
            }
        }
    }

    /// Run state, throttle, device flags, invites and jobs change only with the owner key (or
    /// by the documented exceptions: a wrong result quarantines its device).
    fn check_owner_state(&mut self, before: &Obs, after: &Obs) {
        let newly_quarantined: Vec<&String> = after
            .devices
            .iter()
            .filter(|(id, a)| {
                a.quarantined && before.devices.get(*id).is_some_and(|b| !b.quarantined)
            })
            .map(|(id, _)| id)
            .collect();
        self.tally.quarantined += newly_quarantined.len() as u64;
        for (id, a) in &after.devices {
            assert!(
                !a.quarantined || !a.enabled,
                "device {id} is quarantined but enabled"
            );
        }
        // A quarantine follows a wrong answer of the device's own in this step (refused on the
        // spot), or an answer in this step to a range the device had answered otherwise than
        // two other devices or a vouched one (it lost the vote; see `lost_a_vote`).
        for id in &newly_quarantined {
            let own = self
                .info
                .chunks
                .iter()
                .any(|c| &c.device_id == *id && c.quality != Quality::Right);
            if !own {
                let Some((job_id, honest)) = self.lost_a_vote(id) else {
                    panic!(
                        "device {id} was quarantined without a wrong answer of its own or a lost \
                         vote (results this step: {:?})",
                        self.info.chunks
                    );
                };
                if honest {
                    assert!(
                        self.m.tainted.contains(&job_id),
                        "device {id}'s right answer lost a vote to two that agreed, yet no two \
                         devices gave the same wrong answer in job {job_id}"
                    );
                }
                self.tally.outvoted += 1;
            }
            for sock in &self.m.socks {
                if sock.device_id.as_ref() == Some(*id)
                    && self.info.may_receive.contains(&sock.conn)
                {
                    assert_eq!(
                        self.sim.closed.get(&sock.conn),
                        Some(&close_code::BAD_RESULT),
                        "quarantined device {id}'s socket is not closed as BAD_RESULT"
                    );
                }
            }
        }
        if self.info.owner_authorized {
            return;
        }
        assert_eq!(
            after.meta, before.meta,
            "run state or throttle changed without the owner key"
        );
        for (id, a) in &after.devices {
            let Some(b) = before.devices.get(id) else {
                continue;
            };
            if (a.enabled, a.quarantined) != (b.enabled, b.quarantined) {
                // Explained above: its own wrong answer or a lost vote.
                let by_result = a.quarantined && !b.quarantined && !a.enabled;
                assert!(
                    by_result,
                    "device {id} went from enabled={} quarantined={} to enabled={} quarantined={} \
                     without the owner key or a wrong result",
                    b.enabled, b.quarantined, a.enabled, a.quarantined
                );
            }
        }
        let mut plain_before = before.invites.clone();
        let mut plain_after = after.invites.clone();
        for row in plain_before.values_mut().chain(plain_after.values_mut()) {
            row.uses = 0;
        }
        assert_eq!(
            plain_after, plain_before,
            "invites changed without the owner key"
        );
        for id in after.jobs.keys() {
            assert!(
                before.jobs.contains_key(id),
                "job {id} submitted without the owner key"
            );
        }
        for (id, a) in &after.jobs {
            if a.state == JobState::Cancelled {
                assert_eq!(
                    before.jobs[id].state,
                    JobState::Cancelled,
                    "job {id} cancelled without the owner key"
                );
            }
        }
    }

    /// An honest answer is never refused; a provably wrong one for a lease held is always
    /// refused (and quarantines); a result for another device's lease is refused and changes
    /// nothing.
    ///
    /// Results in one frame ([`ToCoordinator::ChunkResults`]) are handled in turn, and a
    /// provably wrong one closes the socket: what a result may not do alone (quarantine, close,
    /// write), another of its frame may have done.
    fn check_results(&self, before: &Obs, after: &Obs) {
        for (at, chunk) in self.info.chunks.iter().enumerate() {
            let others = || {
                self.info
                    .chunks
                    .iter()
                    .enumerate()
                    .filter(move |(i, c)| *i != at && c.sock == chunk.sock)
                    .map(|(_, c)| c)
            };
            // Another answer of the frame for work the device holds may be wrong, and refused
            // or outvoted at once.
            let others_may_refuse = others().any(|c| c.kind != ChunkKind::Stray);
            let only_foreign = self
                .info
                .chunks
                .iter()
                .all(|c| c.kind == ChunkKind::Stray && c.foreign.is_some());
            let sock = &self.m.socks[chunk.sock];
            let closed = self.sim.closed.get(&sock.conn).copied();
            let quarantined_after = after
                .devices
                .get(&chunk.device_id)
                .is_some_and(|d| d.quarantined);
            let quarantined = quarantined_after
                && before
                    .devices
                    .get(&chunk.device_id)
                    .is_some_and(|d| !d.quarantined);
            match (chunk.kind, chunk.quality) {
                (_, Quality::Right) => {
                    // Never refused by the check; it may lose a vote (to two devices with the
                    // same wrong answer, or a vouched device's), which `check_owner_state`
                    // looks into.
                    assert!(
                        (!quarantined && closed != Some(close_code::BAD_RESULT))
                            || self.lost_a_vote(&chunk.device_id).is_some()
                            || others_may_refuse,
                        "an honest answer was refused: {chunk:?}"
                    );
                }
                // A result sent again is checked only when the core takes it (its work is still
                // to do); otherwise it is ignored. Either way it never makes progress (see
                // `check_jobs`).
                (ChunkKind::Job, Quality::Refutable) if chunk.resent && closed.is_none() => {}
                (ChunkKind::Bench | ChunkKind::Job, Quality::Refutable) => {
                    assert!(
                        closed.is_some(),
                        "a provably wrong answer was not refused: {chunk:?}"
                    );
                    if closed == Some(close_code::BAD_RESULT) {
                        assert!(
                            quarantined_after || !after.devices.contains_key(&chunk.device_id),
                            "refused as wrong but not quarantined: {chunk:?}"
                        );
                    }
                }
                (ChunkKind::Stray, _) => {
                    assert!(
                        (!quarantined && closed != Some(close_code::BAD_RESULT))
                            || others_may_refuse,
                        "a result for a lease the device does not hold quarantined it: {chunk:?}"
                    );
                    // Unless an answer before it in the frame ended the lease's job: the lease
                    // ended with it, and a result for a lease that no longer exists is ignored.
                    // The oracle sees the state before and after a step, not between answers, so
                    // this also excuses a foreign result whose job only a later answer of the
                    // frame ended: such a result goes unchecked.
                    let ended_before_it = chunk.foreign.as_ref().is_some_and(|job| {
                        let running = |o: &Obs| {
                            o.jobs.get(job).is_some_and(|j| {
                                matches!(j.state, JobState::Running | JobState::Queued)
                            })
                        };
                        let answered_before = self.info.chunks[..at]
                            .iter()
                            .any(|c| c.kind == ChunkKind::Job && c.job_id.as_ref() == Some(job));
                        answered_before && running(before) && !running(after)
                    });
                    if chunk.foreign.is_some() && closed.is_none() && !ended_before_it {
                        assert!(
                            self.info
                                .errors
                                .contains(&(chunk.sock, ErrorCode::Forbidden)),
                            "a result for another device's lease was not refused: {chunk:?}"
                        );
                        if only_foreign {
                            assert_eq!(
                                self.sim.writes, before.writes,
                                "a result for another device's lease wrote"
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The units of this step's answers for leases of `job` held by their senders, not
    /// provably wrong: as much as the job may have progressed by.
    fn units_answered(&self, job: &str) -> u64 {
        self.info
            .chunks
            .iter()
            .filter(|c| {
                c.kind == ChunkKind::Job
                    && c.job_id.as_deref() == Some(job)
                    && c.quality != Quality::Refutable
            })
            .map(|c| c.units)
            .sum()
    }

    /// A device's verification counts (as stored, with the commits applied) only grow and the
    /// owner's vouching never changes; in memory they change only when the core handles a
    /// result or an alarm (an expired lease), when an owner command ends the running job, or
    /// when a restart loses what was not committed. (They reach storage with the next commit,
    /// or with any write of the device's row.)
    fn check_credibility(&self, before: &Obs, after: &Obs) {
        let job_ended = after.jobs.iter().any(|(id, job)| {
            before.jobs.get(id).is_some_and(|b| b.state != job.state)
                && matches!(job.state, JobState::Done | JobState::Cancelled)
        });
        for (id, a) in &after.counts {
            if before.counts.get(id).is_some_and(|b| b != a) {
                let lost = self.info.before_restart.is_some() && self.info.lost_in_restart > 0;
                assert!(
                    !self.info.chunks.is_empty() || self.info.alarms > 0 || job_ended || lost,
                    "device {id}'s verification counts changed without a result or an alarm: \
                     {:?} → {a:?}",
                    before.counts.get(id)
                );
            }
        }
        for (id, a) in &after.devices {
            let Some(b) = before.devices.get(id) else {
                continue;
            };
            let (a, b) = (&a.credibility, &b.credibility);
            assert!(
                a.confirmed >= b.confirmed
                    && a.replicated >= b.replicated
                    && a.disputed >= b.disputed
                    && a.expired >= b.expired
                    && a.vouched == b.vouched,
                "device {id}'s credibility went back: {b:?} → {a:?}"
            );
        }
    }

    /// Progress only by an accepted first result for a lease its sender holds, never beyond
    /// the job, and never by a replica's; an untrusted device's result waits for a replica;
    /// progress goes back only with a quarantine; finished jobs are frozen; results are sane,
    /// and right unless a wrong answer could have got past replication.
    fn check_jobs(&mut self, before: &Obs, after: &Obs) {
        let stalled = self.sim.core.stalled_ranges();
        assert!(
            stalled.is_empty(),
            "ranges wait for a replica that nobody will compute: {stalled:?}"
        );
        // A device that loses a vote is quarantined and its parts are taken out, also when the
        // owner has removed it meanwhile (then no row shows the quarantine).
        let quarantine =
            after.devices.iter().any(|(id, a)| {
                a.quarantined && before.devices.get(id).is_some_and(|b| !b.quarantined)
            }) || self
                .outvoted_this_step()
                .iter()
                .any(|id| !after.devices.contains_key(id));
        let restarted = self.info.before_restart.is_some();
        let policy = self.sim.config.verify;
        // Trusted in memory (its credibility reaches storage with the next commit), or as
        // stored (a device removed since).
        let trusted = |device_id: &str| {
            [before, after].iter().any(|obs| {
                obs.trusted.contains(device_id)
                    || obs
                        .devices
                        .get(device_id)
                        .is_some_and(|d| d.credibility.trusted(&policy))
            })
        };
        // A wrong answer taken as a job's first result for its range (the job progressed) is
        // replicated, and so caught, unless its device is trusted (then only an audit may
        // replicate it): such a job's result is not compared with the truth.
        for chunk in &self.info.chunks {
            let Some(job_id) = &chunk.job_id else {
                continue;
            };
            let progressed = match (before.jobs.get(job_id), after.jobs.get(job_id)) {
                (Some(b), Some(a)) => a.done_units > b.done_units,
                _ => false,
            };
            if chunk.kind == ChunkKind::Job
                && chunk.quality == Quality::Unknown
                && progressed
                && trusted(&chunk.device_id)
            {
                self.m.tainted.insert(job_id.clone());
            }
        }
        let running = after
            .jobs
            .values()
            .filter(|j| j.state == JobState::Running)
            .count();
        assert!(running <= 1, "{running} jobs running at once");
        for id in before.jobs.keys() {
            assert!(after.jobs.contains_key(id), "job {id} vanished");
        }
        for (id, a) in &after.jobs {
            assert!(
                a.done_units <= a.total_units,
                "job {id} is past its end: {a:?}"
            );
            assert!(
                a.unverified_units <= a.done_units,
                "job {id} has more units waiting for a replica than done: {a:?}"
            );
            assert!(
                a.chunks_done <= a.done_units && (a.chunks_done == 0) == (a.done_units == 0),
                "job {id}'s chunks do not match its done units: {a:?}"
            );
            check_job_result(a);
            match a.state {
                JobState::Queued => assert_eq!(a.done_units, 0, "queued job {id} has progress"),
                JobState::Done => {
                    assert!(a.finished_ms.is_some());
                    let satisfied = matches!(
                        (&a.spec, &a.result),
                        (JobSpec::Sha256Search { want, .. }, JobResult::Sha256Search { nonces })
                            if nonces.len() >= *want as usize
                    );
                    assert!(
                        a.done_units == a.total_units || satisfied,
                        "job {id} is done with work left: {a:?}"
                    );
                }
                JobState::Cancelled => assert!(a.finished_ms.is_some()),
                JobState::Running => {}
            }
            let Some(b) = before.jobs.get(id) else {
                assert!(
                    matches!(a.state, JobState::Queued | JobState::Running) && a.done_units == 0,
                    "a new job with progress: {a:?}"
                );
                continue;
            };
            if matches!(b.state, JobState::Done | JobState::Cancelled) {
                assert_eq!(
                    (
                        a.state,
                        a.done_units,
                        &a.result,
                        a.verify_units,
                        a.chunks_done
                    ),
                    (
                        b.state,
                        b.done_units,
                        &b.result,
                        b.verify_units,
                        b.chunks_done
                    ),
                    "finished job {id} changed"
                );
                continue;
            }
            // Replica units are kept in the job's row, which is written when its state changes:
            // a restart may take a running job's back (see `check_restart`).
            if !restarted {
                assert!(
                    a.verify_units >= b.verify_units,
                    "job {id}'s replica units went down: {b:?} → {a:?}"
                );
            }
            if a.verify_units > b.verify_units {
                let delta = a.verify_units - b.verify_units;
                // Several answers of one frame may each add theirs.
                let answered = self.units_answered(id);
                assert!(
                    delta <= answered,
                    "job {id}'s replica units grew by {delta} without an answer for a lease held \
                     (results this step: {:?})",
                    self.info.chunks
                );
                assert!(
                    a.done_units <= b.done_units,
                    "a replica's answer added progress to job {id}: {b:?} → {a:?}"
                );
                self.tally.replicas += 1;
            }
            if a.state == JobState::Done {
                self.tally.jobs_done += 1;
                if !self.m.tainted.contains(id) && check_job_truth(a) && self.m.wrong.contains(id) {
                    self.tally.healed += 1;
                }
            }
            if a.done_units > b.done_units {
                let delta = a.done_units - b.done_units;
                let answered = self.units_answered(id);
                // The step's results all come from one socket, so one device.
                let by = self.info.chunks.iter().find(|c| {
                    c.kind == ChunkKind::Job
                        && c.job_id.as_ref() == Some(id)
                        && c.quality != Quality::Refutable
                });
                assert!(
                    delta <= answered,
                    "job {id} progressed by {delta} without an accepted result for a lease held \
                     (results this step: {:?})",
                    self.info.chunks
                );
                // An untrusted device's first result (any but a vouched device's, when every
                // result is audited) waits for a replica: the job cannot be done with it.
                if let Some(c) = by {
                    let audited = policy.audit_one_in == 1 && !self.vouched(&c.device_id);
                    if !trusted(&c.device_id) || audited {
                        assert!(
                            a.state == JobState::Running
                                && a.unverified_units >= b.unverified_units + delta,
                            "job {id} took a result of device {} (trusted: {}, {policy:?}) \
                             without waiting for a replica: {b:?} → {a:?}",
                            c.device_id,
                            trusted(&c.device_id)
                        );
                    }
                }
                self.tally.progress += 1;
                if by.is_some_and(|c| c.resent) {
                    self.tally.resent_taken += 1;
                }
            } else if a.done_units < b.done_units {
                let uncommitted = restarted && self.info.lost_in_restart > 0;
                assert!(
                    quarantine || uncommitted,
                    "job {id} lost progress without a quarantine or a restart that lost \
                     uncommitted results"
                );
                self.tally.caught_later += 1;
            }
            // A job may now finish on a replica's answer (the last open range settled), which
            // adds no progress: finishing keeps a search's smallest `want` nonces.
            let finished_now = b.state == JobState::Running && a.state == JobState::Done;
            let changed = if finished_now {
                a.result != finished_form(&b.spec, &b.result)
            } else {
                a.result != b.result
            };
            if changed && a.done_units == b.done_units && !quarantine {
                panic!("job {id}'s result changed without progress: {b:?} → {a:?}");
            }
        }
    }

    /// A restart keeps the registry, the owner's settings and every job's progress — all of
    /// it when nothing waited to be committed, otherwise what was committed.
    fn check_restart(&self, before: &SwarmSnapshot) {
        let committed = self.info.lost_in_restart == 0;
        let after = self.sim.snapshot();
        assert_eq!(self.sim.core.started_ms(), self.now());
        assert_eq!(
            after.online, before.online,
            "devices online across a restart"
        );
        assert_eq!(after.device_total, before.device_total);
        assert_eq!(
            (after.run_state, after.throttle_percent),
            (before.run_state, before.throttle_percent)
        );
        for row in &after.devices {
            if let Some(old) = before.devices.iter().find(|d| d.id == row.id) {
                assert_eq!(
                    (
                        &row.name,
                        row.enabled,
                        row.quarantined,
                        &row.capabilities,
                        row.score,
                        row.registered_ms,
                        row.status
                    ),
                    (
                        &old.name,
                        old.enabled,
                        old.quarantined,
                        &old.capabilities,
                        old.score,
                        old.registered_ms,
                        old.status
                    ),
                    "device {} across a restart",
                    row.id
                );
                if committed {
                    assert_eq!(
                        (row.trusted, row.confirmed, row.replicated, row.disputed),
                        (old.trusted, old.confirmed, old.replicated, old.disputed),
                        "device {}'s credibility across a restart with nothing uncommitted",
                        row.id
                    );
                }
            }
        }
        // A running job's replica units (`verify_units`) are not compared: they are kept in the
        // job's row, which is written only when the job's state changes, so a restart takes
        // them back to the last such write. Its progress and result are rebuilt from its parts.
        for job in &before.jobs {
            let now = self
                .sim
                .core
                .job(&job.job_id)
                .unwrap_or_else(|| panic!("job {} lost in a restart", job.job_id));
            if committed {
                assert_eq!(
                    (now.state, now.done_units, &now.result, now.chunks_done),
                    (job.state, job.done_units, &job.result, job.chunks_done),
                    "job {} across a restart with nothing uncommitted",
                    job.job_id
                );
            } else {
                assert!(
                    now.state == job.state && now.done_units <= job.done_units,
                    "job {} across a restart: {job:?} → {now:?}",
                    job.job_id
                );
            }
        }
    }

    /// The effect of an owner command over HTTP that was answered with success.
    fn check_owner_effect(&self, before: &Obs, command: &OwnerCommand, reply: &OwnerReply) {
        let store = &self.sim.store;
        match (command, reply) {
            (OwnerCommand::SetThrottle { percent }, OwnerReply::Done {}) => {
                assert_eq!(
                    self.sim.core.meta().map(|m| m.throttle_percent),
                    Some(*percent)
                );
            }
            (OwnerCommand::SetRunState { state }, OwnerReply::Done {}) => {
                assert_eq!(self.sim.core.meta().map(|m| m.run_state), Some(*state));
            }
            (OwnerCommand::SetDeviceEnabled { device_id, enabled }, OwnerReply::Done {}) => {
                let row = &store.devices[device_id];
                assert_eq!(row.enabled, *enabled);
                assert!(
                    !(row.quarantined && *enabled),
                    "enabled but still quarantined"
                );
            }
            (OwnerCommand::RenameDevice { device_id, name }, OwnerReply::Done {}) => {
                let row = &store.devices[device_id];
                assert!(row.name == *name && row.named_by_owner, "{row:?}");
                assert!(shared_protocol::is_label(name, &()).is_ok(), "{name:?}");
            }
            (OwnerCommand::RemoveDevice { device_id }, OwnerReply::Done {}) => {
                assert!(before.devices.contains_key(device_id));
                assert!(
                    !store.devices.contains_key(device_id),
                    "removed but still stored"
                );
                for sock in &self.m.socks {
                    if sock.open && sock.device_id.as_ref() == Some(device_id) {
                        assert_eq!(
                            self.sim.closed.get(&sock.conn),
                            Some(&close_code::REMOVED),
                            "a removed device's socket stays open"
                        );
                    }
                }
            }
            (OwnerCommand::RevokeInvite { invite_id }, OwnerReply::Done {}) => {
                assert!(store.invites[invite_id].revoked);
            }
            (
                OwnerCommand::CreateInvite { ttl_ms, max_uses },
                OwnerReply::InviteCreated {
                    invite,
                    token,
                    code,
                },
            ) => {
                let row = &store.invites[&invite.invite_id];
                assert_eq!(row.token_hash, hash_secret(token));
                assert_eq!(
                    Some(row.code_hash.clone()),
                    normalize_code(code).map(|c| hash_secret(&c))
                );
                let ttl = ttl_ms.unwrap_or(self.sim.config.default_invite_ttl_ms);
                assert_eq!(row.expires_ms, self.now().saturating_add(ttl));
                assert_eq!(row.max_uses, *max_uses);
                assert_eq!(row.uses, 0);
            }
            (OwnerCommand::SubmitJob { job }, OwnerReply::JobSubmitted { job_id }) => {
                let view = self.sim.core.job(job_id).expect("a submitted job");
                assert_eq!(format!("{:?}", view.spec), format!("{job:?}")); // NaN ≠ NaN
                assert!(matches!(view.state, JobState::Queued | JobState::Running));
            }
            (OwnerCommand::CancelJob { job_id }, OwnerReply::Done {}) => {
                let view = self.sim.core.job(job_id).expect("a cancelled job");
                assert!(matches!(view.state, JobState::Cancelled | JobState::Done));
            }
            (OwnerCommand::ListInvites {}, OwnerReply::Invites { invites }) => {
                for invite in invites {
                    let row = &store.invites[&invite.invite_id];
                    assert!(!row.revoked && self.now() < row.expires_ms);
                }
            }
            (OwnerCommand::AuditLog {}, OwnerReply::Audit { .. }) => {}
            (command, reply) => panic!("{command:?} answered with {reply:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers: configs, jobs, answers.

fn gen_config(g: &mut Gen) -> Config {
    let mut c = Config::default();
    if g.chance(50) {
        c.verify.audit_one_in = g.pick(&[1, 2, 16]);
    }
    if g.chance(50) {
        c.verify.trust_after = g.pick(&[0, 1, 3, 110]);
    }
    if g.chance(50) {
        c.commit_interval_ms = g.pick(&[1_000, 5_000, 30_000]);
    }
    if g.chance(15) {
        c.message_burst = g.pick(&[1, 3, 10]);
        c.messages_per_second = g.pick(&[1, 5, 20]);
    }
    if g.chance(20) {
        c.hello_timeout_ms = g.pick(&[1, 500, 10_000]);
        c.offline_after_ms = g.pick(&[1_000, 5_000, 60_000]);
    }
    if g.chance(10) {
        c.snapshot_device_cap = g.pick(&[0, 1, 3]);
        c.log_capacity = g.pick(&[0, 1, 5]);
        c.audit_per_kind = g.pick(&[0, 1]);
    }
    if g.chance(10) {
        c.invites_per_minute = 1;
        c.code_guesses_per_source = g.pick(&[0, 1]);
        c.code_guesses_per_minute = g.pick(&[0, 1]);
    }
    if g.chance(50) {
        // Past the budget chunks grow instead of messages.
        c.results_per_second_budget = g.pick(&[1, 20, 200]);
    }
    c
}

fn mandelbrot(width: u32, height: u32, max_iter: u32) -> JobSpec {
    JobSpec::Mandelbrot {
        center_re: -0.5,
        center_im: 0.0,
        scale: 3.0,
        width,
        height,
        max_iter,
    }
}

fn sha(prefix: &str, difficulty_bits: u32, lo: u64, hi: u64, want: u32) -> JobSpec {
    JobSpec::Sha256Search {
        prefix: prefix.into(),
        difficulty_bits,
        lo,
        hi,
        want,
    }
}

/// Job units a lease covers (numbers, image rows, nonces).
fn job_units(work: &Work) -> u64 {
    match work {
        Work::PrimeCount { lo, hi } | Work::Sha256Search { lo, hi, .. } => hi.saturating_sub(*lo),
        Work::Mandelbrot { rows, .. } => u64::from(*rows),
        Work::Workload { items, .. } => *items,
    }
}

/// The right answer, when it takes no more than a few milliseconds to compute.
fn right_answer(work: &Work) -> Option<WorkResult> {
    let cheap = match work {
        Work::PrimeCount { lo, hi } => hi - lo <= 12_000_000 && *hi <= 1 << 36,
        Work::Mandelbrot {
            width,
            rows,
            max_iter,
            ..
        } => u64::from(*width) * u64::from(*rows) * u64::from(*max_iter) <= 4_000_000,
        Work::Sha256Search { lo, hi, .. } => hi - lo <= 50_000,
        Work::Workload { .. } => false,
    };
    cheap.then(|| client_compute::compute(work).ok()).flatten()
}

/// A result as the core's digest of it covers it (`kinds::digest`): the count, the decoded
/// pixels (not their encoding), the nonces.
fn answer_key(result: &WorkResult) -> String {
    match result {
        WorkResult::PrimeCount { count } => format!("primes {count}"),
        WorkResult::Mandelbrot { counts } => match decode_counts(counts) {
            Ok(pixels) => format!("pixels {pixels:?}"),
            Err(_) => format!("undecodable {counts:?}"),
        },
        WorkResult::Sha256Search { nonces } => format!("nonces {nonces:?}"),
        WorkResult::Workload {
            outputs, failed, ..
        } => format!("outputs {outputs} {failed}"),
    }
}

fn other_kind(work: &Work) -> WorkResult {
    match work {
        Work::PrimeCount { .. } => WorkResult::Sha256Search { nonces: vec![] },
        _ => WorkResult::PrimeCount { count: 0 },
    }
}

/// Whether a result breaks a rule the core documents checking (`kinds::check`): it must be
/// refused.
fn refutable(work: &Work, result: &WorkResult) -> bool {
    match (work, result) {
        (Work::PrimeCount { lo, hi }, WorkResult::PrimeCount { count }) => *count > hi - lo,
        (
            Work::Mandelbrot {
                width,
                rows,
                max_iter,
                ..
            },
            WorkResult::Mandelbrot { counts },
        ) => match decode_counts(counts) {
            Err(_) => true,
            Ok(counts) => {
                counts.len() as u64 != u64::from(*width) * u64::from(*rows)
                    || counts.iter().any(|c| u32::from(*c) > *max_iter)
            }
        },
        (
            Work::Sha256Search {
                prefix,
                difficulty_bits,
                lo,
                hi,
                max_found,
            },
            WorkResult::Sha256Search { nonces },
        ) => {
            nonces.len() > *max_found as usize
                || nonces.windows(2).any(|p| p[0] >= p[1])
                || nonces.iter().any(|n| {
                    !(*lo..*hi).contains(n)
                        || !kernels::sha256::meets_target(prefix.as_bytes(), *n, *difficulty_bits)
                })
        }
        _ => true,
    }
}

/// A job's merged result is possible for its spec and progress.
fn check_job_result(job: &JobView) {
    match (&job.spec, &job.result) {
        (JobSpec::PrimeCount { .. }, JobResult::PrimeCount { count }) => {
            assert!(
                *count <= job.done_units,
                "more primes than numbers done: {job:?}"
            );
        }
        (JobSpec::Mandelbrot { width, .. }, JobResult::Mandelbrot { inside_pixels }) => {
            assert!(
                *inside_pixels <= job.done_units * u64::from(*width),
                "more pixels inside than done: {job:?}"
            );
        }
        (
            JobSpec::Sha256Search {
                prefix,
                difficulty_bits,
                lo,
                hi,
                want,
            },
            JobResult::Sha256Search { nonces },
        ) => {
            // A running search keeps every part's nonces; a finished one the smallest `want`.
            assert!(
                job.state != JobState::Done || nonces.len() <= *want as usize,
                "more nonces than wanted: {job:?}"
            );
            assert!(
                nonces.windows(2).all(|p| p[0] < p[1]),
                "nonces out of order: {job:?}"
            );
            for n in nonces {
                assert!((*lo..*hi).contains(n), "nonce {n} outside the job: {job:?}");
                assert!(
                    kernels::sha256::meets_target(prefix.as_bytes(), *n, *difficulty_bits),
                    "nonce {n} misses the target: {job:?}"
                );
            }
        }
        _ => panic!("a result of another kind than its job: {job:?}"),
    }
}

/// A running job's merged result as finishing it leaves it (`kinds::finish`): a search keeps
/// its smallest `want` nonces.
fn finished_form(spec: &JobSpec, result: &JobResult) -> JobResult {
    match (spec, result) {
        (JobSpec::Sha256Search { want, .. }, JobResult::Sha256Search { nonces }) => {
            JobResult::Sha256Search {
                nonces: nonces.iter().take(*want as usize).copied().collect(),
            }
        }
        _ => result.clone(),
    }
}

/// A job that no wrong answer could get past replication into has the right result. Whether
/// it was compared (the truth is cheap to compute, and the job was computed to its end).
fn check_job_truth(job: &JobView) -> bool {
    let whole = job.spec.work(0, job.total_units);
    if job.done_units != job.total_units {
        return false; // a search satisfied early: its nonces were checked one by one
    }
    let Some(truth) = right_answer(&whole) else {
        return false;
    };
    let expected = match (&job.spec, truth) {
        (_, WorkResult::PrimeCount { count }) => JobResult::PrimeCount { count },
        (JobSpec::Mandelbrot { max_iter, .. }, WorkResult::Mandelbrot { counts }) => {
            let inside = decode_counts(&counts)
                .unwrap_or_default()
                .iter()
                .filter(|c| u32::from(**c) == *max_iter)
                .count() as u64;
            JobResult::Mandelbrot {
                inside_pixels: inside,
            }
        }
        (_, WorkResult::Sha256Search { nonces }) => JobResult::Sha256Search { nonces },
        (_, WorkResult::Mandelbrot { .. } | WorkResult::Workload { .. }) => return false,
    };
    assert_eq!(
        job.result, expected,
        "a job has a wrong result, though every wrong answer it got should have been caught \
         by replication: {job:?}"
    );
    true
}

/// `[lo, hi)` runs of bytes matching `keep`.
fn spans(bytes: &[u8], keep: impl Fn(u8) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, b) in bytes.iter().enumerate() {
        match (keep(*b), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, bytes.len()));
    }
    out
}

/// The contents (between the quotes) of every JSON string in `bytes`.
fn string_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'"' {
            let start = i + 1;
            let mut j = start;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            let end = j.min(bytes.len());
            out.push((start, end));
            i = end + 1;
        } else {
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Found by the fuzzer when owner commands reached `handle_owner_request` without the protocol's
// decoder: an invite lifetime that overflowed, a prime range past the sieve's limit that made a
// spot check panic, a zero-wide image whose snapshots carried non-finite numbers, and a NaN
// centre leased as `null`. The core now takes only a `Validated<OwnerCommand>`, so none of them
// can reach it; this checks that the decoder refuses each.

#[test]
fn commands_that_once_broke_the_core_are_refused_before_it() {
    let mut sim = Sim::new();
    let hostile = [
        OwnerCommand::CreateInvite {
            ttl_ms: Some(u64::MAX),
            max_uses: None,
        },
        OwnerCommand::SubmitJob {
            job: JobSpec::PrimeCount {
                lo: 0,
                hi: u64::MAX,
            },
        },
        OwnerCommand::SubmitJob {
            job: mandelbrot(0, 10, 10),
        },
        OwnerCommand::SubmitJob {
            job: JobSpec::Mandelbrot {
                center_re: f64::NAN,
                center_im: 0.0,
                scale: 3.0,
                width: 4,
                height: 4,
                max_iter: 10,
            },
        },
    ];
    let writes = sim.writes;
    for command in hostile {
        let code = sim.owner(command.clone()).unwrap_err();
        assert!(
            matches!(code, ErrorCode::Invalid | ErrorCode::Malformed),
            "{command:?}: {code:?}"
        );
    }
    assert_eq!(sim.writes, writes, "nothing reached the core");
}
