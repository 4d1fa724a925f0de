//! What running one item gives, and the digest replicas are compared by.
//!
//! A failure is a result like an output when the module and the input alone decide it (a
//! trap, the module's own error, an output out of bounds): every engine reaches it, so two
//! devices agree on it and a device that claims a different one is caught. A failure that
//! depends on the device (out of time, out of stack: engines and machines differ) is not a
//! result: it has no digest, and a run of items that holds one is *unsettled* — computed again
//! by another device, whose finished outputs take its place (docs/WORKLOADS.md).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use std::ops::Range;

use crate::module::{MAX_ERROR_BYTES, MAX_INPUT_BYTES, MAX_OUTPUT_BYTES};

/// The result of one item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The bytes the module returned.
    Output(Vec<u8>),
    Failed(Failure),
}

/// Why an item has no output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    /// For [`FailureKind::ModuleError`], the module's message (at most
    /// [`MAX_ERROR_BYTES`], invalid UTF-8 replaced); otherwise a description for people,
    /// which may differ between engines and is not compared.
    pub message: String,
}

/// The kinds of failure, named as the wire and docs/WORKLOADS.md name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// `run` returned an error range: the module refused the input.
    ModuleError,
    /// `alloc` returned 0 or a range outside the memory.
    AllocRefused,
    /// The output range lies outside the memory.
    OutputOutOfBounds,
    /// The output is longer than [`crate::module::MAX_OUTPUT_BYTES`].
    OutputTooLarge,
    /// An `unreachable` instruction ran (Rust's `panic!` compiles to this).
    Unreachable,
    MemoryOutOfBounds,
    TableOutOfBounds,
    /// `call_indirect` reached a null entry or a function of another type.
    IndirectCall,
    DivideByZero,
    /// Signed division overflow (`INT_MIN / -1`), or a trapping float-to-integer conversion
    /// of NaN or of a value out of range. One kind for all three, because engines split them
    /// differently (wasmtime names NaN apart, V8 names division apart).
    IntegerOverflow,
    /// The item ran past the owner's time limit on this device.
    TimeLimit,
    /// The call stack ran out on this device's engine.
    StackOverflow,
    /// A trap this list does not name, or an engine failure.
    Engine,
}

impl FailureKind {
    /// Every kind.
    pub const ALL: [FailureKind; 13] = [
        Self::ModuleError,
        Self::AllocRefused,
        Self::OutputOutOfBounds,
        Self::OutputTooLarge,
        Self::Unreachable,
        Self::MemoryOutOfBounds,
        Self::TableOutOfBounds,
        Self::IndirectCall,
        Self::DivideByZero,
        Self::IntegerOverflow,
        Self::TimeLimit,
        Self::StackOverflow,
        Self::Engine,
    ];

    /// Whether another device or engine could get a different outcome for the same item.
    pub fn depends_on_device(self) -> bool {
        matches!(self, Self::TimeLimit | Self::StackOverflow | Self::Engine)
    }

    /// The kind's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::ModuleError => "module_error",
            Self::AllocRefused => "alloc_refused",
            Self::OutputOutOfBounds => "output_out_of_bounds",
            Self::OutputTooLarge => "output_too_large",
            Self::Unreachable => "unreachable",
            Self::MemoryOutOfBounds => "memory_out_of_bounds",
            Self::TableOutOfBounds => "table_out_of_bounds",
            Self::IndirectCall => "indirect_call",
            Self::DivideByZero => "divide_by_zero",
            Self::IntegerOverflow => "integer_overflow",
            Self::TimeLimit => "time_limit",
            Self::StackOverflow => "stack_overflow",
            Self::Engine => "engine",
        }
    }
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The module's own error, from the bytes of its message range.
    pub fn module_error(message: &[u8]) -> Self {
        let cut = message.get(..MAX_ERROR_BYTES).unwrap_or(message);
        Self::new(
            FailureKind::ModuleError,
            String::from_utf8_lossy(cut).into_owned(),
        )
    }
}

impl Outcome {
    /// SHA-256 over what an outcome is compared by: `0x00` and the output, or `0x01`, the
    /// kind's name, and for a module error `0x00` and its message. `None` for a failure that
    /// depends on the device.
    pub fn digest(&self) -> Option<[u8; 32]> {
        let mut hash = Sha256::new();
        match self {
            Outcome::Output(bytes) => {
                hash.update([0]);
                hash.update(bytes);
            }
            Outcome::Failed(failure) if failure.kind.depends_on_device() => return None,
            Outcome::Failed(failure) => {
                hash.update([1]);
                hash.update(failure.kind.name());
                if failure.kind == FailureKind::ModuleError {
                    hash.update([0]);
                    hash.update(failure.message.as_bytes());
                }
            }
        }
        Some(hash.finalize().into())
    }
}

/// Refuses an input over [`MAX_INPUT_BYTES`] before any instance is made. Jobs never lease
/// one; a device that meets one says so as an engine failure, which is never compared.
pub fn check_input(len: usize) -> Result<(), Failure> {
    if len > MAX_INPUT_BYTES {
        return Err(Failure::new(
            FailureKind::Engine,
            format!("the input is {len} bytes; the limit is {MAX_INPUT_BYTES}"),
        ));
    }
    Ok(())
}

/// Where the input goes: the range `alloc` gave, in a memory of `memory_len` bytes.
pub fn input_range(ptr: i32, len: usize, memory_len: usize) -> Result<Range<usize>, Failure> {
    let at = usize::try_from(u32::from_ne_bytes(ptr.to_ne_bytes())).unwrap_or(usize::MAX);
    if at == 0 && len > 0 {
        return Err(Failure::new(FailureKind::AllocRefused, "alloc returned 0"));
    }
    match at.checked_add(len) {
        Some(end) if end <= memory_len => Ok(at..end),
        _ => Err(Failure::new(
            FailureKind::AllocRefused,
            format!("alloc returned {at}; {len} bytes there run past the memory's {memory_len}"),
        )),
    }
}

/// What `run` returned, unpacked against a memory of `memory_len` bytes: the range to copy
/// and whether it is an error message, or the failure it stands for.
pub fn returned_range(packed: i64, memory_len: usize) -> Result<(Range<usize>, bool), Failure> {
    let bits = u64::from_ne_bytes(packed.to_ne_bytes());
    let is_error = bits >> 63 == 1;
    let at = usize::try_from((bits >> 32) & 0x7fff_ffff).unwrap_or(usize::MAX);
    let len = usize::try_from(bits & 0xffff_ffff).unwrap_or(usize::MAX);
    if !is_error && len > MAX_OUTPUT_BYTES {
        return Err(Failure::new(
            FailureKind::OutputTooLarge,
            format!("the output is {len} bytes; the limit is {MAX_OUTPUT_BYTES}"),
        ));
    }
    match at.checked_add(len) {
        Some(end) if end <= memory_len => Ok((at..end, is_error)),
        _ => Err(Failure::new(
            FailureKind::OutputOutOfBounds,
            format!("run returned {len} bytes at {at}, outside the memory of {memory_len} bytes"),
        )),
    }
}

impl Outcome {
    /// The outcome of the bytes copied from [`returned_range`]'s range.
    pub fn returned(bytes: &[u8], is_error: bool) -> Self {
        if is_error {
            Outcome::Failed(Failure::module_error(bytes))
        } else {
            Outcome::Output(bytes.to_vec())
        }
    }
}

/// The failure a JavaScript engine's error stands for, from its constructor's name
/// (`RuntimeError`, `RangeError`, …) and its message. Written against V8 (Chromium, where the
/// browser tests check it), with SpiderMonkey's and JavaScriptCore's wordings where they
/// differ; an error it does not know is [`FailureKind::Engine`], which is never compared, so
/// a new wording costs a retry on another device, not a false disagreement.
pub fn js_error_kind(name: &str, message: &str) -> FailureKind {
    let m = message.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| m.contains(w));
    if has(&["call stack", "too much recursion", "stack overflow"]) {
        return FailureKind::StackOverflow;
    }
    if name != "RuntimeError" {
        return FailureKind::Engine;
    }
    if has(&["unreachable"]) {
        FailureKind::Unreachable
    } else if has(&["null function", "signature mismatch", "indirect call"]) {
        FailureKind::IndirectCall
    } else if has(&["table index", "table out of bounds", "undefined element"]) {
        FailureKind::TableOutOfBounds
    } else if has(&["memory access", "index out of bounds", "data segment"]) {
        FailureKind::MemoryOutOfBounds
    } else if has(&["by zero"]) {
        FailureKind::DivideByZero
    } else if has(&["unrepresentable", "integer overflow", "invalid conversion"]) {
        FailureKind::IntegerOverflow
    } else {
        FailureKind::Engine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_agree_on_outputs_and_traps_but_not_on_engine_messages() {
        let trap = |message: &str| Outcome::Failed(Failure::new(FailureKind::Unreachable, message));
        assert_eq!(
            trap("wasm trap: unreachable").digest(),
            trap("RuntimeError: unreachable").digest()
        );
        assert_ne!(
            Outcome::Output(b"1".to_vec()).digest(),
            Outcome::Output(b"2".to_vec()).digest()
        );
        let said = |m: &[u8]| Outcome::Failed(Failure::module_error(m)).digest();
        assert_ne!(said(b"bad input"), said(b"other"));
        assert_ne!(said(b""), trap("").digest());
        // An output that spells a failure's name is still an output.
        assert_ne!(
            Outcome::Output(b"unreachable".to_vec()).digest(),
            trap("").digest()
        );
    }

    #[test]
    fn a_failure_that_depends_on_the_device_has_no_digest() {
        for kind in [
            FailureKind::TimeLimit,
            FailureKind::StackOverflow,
            FailureKind::Engine,
        ] {
            assert_eq!(Outcome::Failed(Failure::new(kind, "")).digest(), None);
        }
    }

    #[test]
    fn a_module_error_is_cut_to_the_limit_and_kept_readable() {
        let long = vec![b'x'; MAX_ERROR_BYTES + 10];
        assert_eq!(Failure::module_error(&long).message.len(), MAX_ERROR_BYTES);
        assert_eq!(Failure::module_error(b"bad \xff").message, "bad \u{fffd}");
    }

    #[test]
    fn the_returned_range_is_checked_against_the_memory_and_the_limits() {
        let pack = |error: bool, at: u64, len: u64| {
            i64::from_ne_bytes(((u64::from(error) << 63) | (at << 32) | len).to_ne_bytes())
        };
        assert_eq!(
            returned_range(pack(false, 100, 5), 200),
            Ok((100..105, false))
        );
        assert_eq!(
            returned_range(pack(true, 100, 5), 200),
            Ok((100..105, true))
        );
        assert_eq!(returned_range(pack(false, 0, 0), 0), Ok((0..0, false)));
        fn kind<T: std::fmt::Debug>(r: Result<T, Failure>) -> FailureKind {
            r.unwrap_err().kind
        }
        assert_eq!(
            kind(returned_range(pack(false, 196, 5), 200)),
            FailureKind::OutputOutOfBounds
        );
        assert_eq!(
            kind(returned_range(pack(true, 196, 5), 200)),
            FailureKind::OutputOutOfBounds
        );
        let over = MAX_OUTPUT_BYTES as u64 + 1;
        assert_eq!(
            kind(returned_range(pack(false, 0, over), 1 << 30)),
            FailureKind::OutputTooLarge
        );
        // An error message may be long: it is cut, not refused.
        assert_eq!(
            returned_range(pack(true, 0, over), 1 << 30),
            Ok((0..over as usize, true))
        );
        assert_eq!(check_input(MAX_INPUT_BYTES), Ok(()));
        assert_eq!(kind(check_input(MAX_INPUT_BYTES + 1)), FailureKind::Engine);
        assert_eq!(input_range(1024, 8, 2048), Ok(1024..1032));
        assert_eq!(input_range(0, 0, 2048), Ok(0..0));
        assert_eq!(kind(input_range(0, 8, 2048)), FailureKind::AllocRefused);
        assert_eq!(kind(input_range(2044, 8, 2048)), FailureKind::AllocRefused);
        assert_eq!(kind(input_range(-8, 8, 2048)), FailureKind::AllocRefused);
    }

    #[test]
    fn v8s_trap_messages_name_the_kinds_wasmtime_names() {
        // V8's wordings (the browser tests check these against Chromium itself).
        let cases = [
            ("RuntimeError", "unreachable", FailureKind::Unreachable),
            (
                "RuntimeError",
                "memory access out of bounds",
                FailureKind::MemoryOutOfBounds,
            ),
            ("RuntimeError", "divide by zero", FailureKind::DivideByZero),
            (
                "RuntimeError",
                "remainder by zero",
                FailureKind::DivideByZero,
            ),
            (
                "RuntimeError",
                "divide result unrepresentable",
                FailureKind::IntegerOverflow,
            ),
            (
                "RuntimeError",
                "float unrepresentable in integer range",
                FailureKind::IntegerOverflow,
            ),
            (
                "RuntimeError",
                "table index is out of bounds",
                FailureKind::TableOutOfBounds,
            ),
            (
                "RuntimeError",
                "null function or function signature mismatch",
                FailureKind::IndirectCall,
            ),
            (
                "RangeError",
                "Maximum call stack size exceeded",
                FailureKind::StackOverflow,
            ),
            ("RuntimeError", "something new", FailureKind::Engine),
            ("TypeError", "unreachable", FailureKind::Engine),
        ];
        for (name, message, kind) in cases {
            assert_eq!(js_error_kind(name, message), kind, "{name}: {message}");
        }
    }

    #[test]
    fn kinds_are_named_on_the_wire_as_name_says() {
        let mut names = std::collections::BTreeSet::new();
        for kind in FailureKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
            assert!(names.insert(kind.name()), "{kind:?} is listed twice");
        }
    }
}
