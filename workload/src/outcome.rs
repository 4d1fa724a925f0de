//! What running one item gives, and the digest replicas are compared by.
//!
//! A failure is a result like an output when the module and the input alone decide it (a
//! trap, the module's own error, an output out of bounds): every engine reaches it, so two
//! devices agree on it and a device that claims a different one is caught. A failure that
//! depends on the device (out of time, out of stack: engines and machines differ) is not a
//! result: it has no digest, and the coordinator gives the item to another device.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::module::MAX_ERROR_BYTES;

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
    fn kinds_are_named_on_the_wire_as_name_says() {
        let json = serde_json::to_string(&FailureKind::OutputOutOfBounds).unwrap();
        assert_eq!(
            json,
            format!("\"{}\"", FailureKind::OutputOutOfBounds.name())
        );
    }
}
