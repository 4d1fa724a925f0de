//! The workload ABI, and the check every module passes before anyone runs it.
//!
//! A module:
//! - imports nothing (no WASI, no clock, no randomness: an output is a function of the input);
//! - exports its one linear memory as `memory`;
//! - exports `alloc(len: i32) -> i32`: the address of `len` writable bytes, where the host
//!   puts the input (0 or an address out of bounds refuses the item);
//! - exports `run(ptr: i32, len: i32) -> i64`: computes the item's output from the input at
//!   `ptr`. The result packs a byte range of the module's memory: bits 32–62 its address,
//!   bits 0–31 its length. With bit 63 clear the range is the output; with it set, the range
//!   is a UTF-8 message and the item failed with the module's own error.
//!
//! Every item runs in a fresh instance, so nothing a module keeps carries over to the next
//! item (an output cannot depend on which items a device ran before), and a module owns
//! its memory: the host never frees anything.
//!
//! Limits, which every engine applies the same way so that replicas agree:
//! [`MAX_MODULE_BYTES`], [`MAX_INPUT_BYTES`], [`MAX_OUTPUT_BYTES`], [`MAX_ERROR_BYTES`],
//! [`MAX_MEMORY_PAGES`] and [`MAX_TABLE_ELEMENTS`]. The language is WebAssembly 2.0 (bulk
//! memory, reference types, multi-value, SIMD, sign extension, saturating conversions),
//! which every current browser and wasmtime run; later proposals are refused.

use std::fmt;

use sha2::{Digest, Sha256};
use wasmparser::{
    CompositeInnerType, ExternalKind, Parser, Payload, ValType, Validator, WasmFeatures,
};

/// The largest module accepted, in bytes.
pub const MAX_MODULE_BYTES: usize = 8 << 20;
/// The largest input of one item, in bytes.
pub const MAX_INPUT_BYTES: usize = 64 << 10;
/// The largest output of one item, in bytes.
pub const MAX_OUTPUT_BYTES: usize = 256 << 10;
/// The longest error message a module may return; a longer one is cut to this many bytes.
pub const MAX_ERROR_BYTES: usize = 1 << 10;
/// The most 64 KiB pages a module's memory may grow to (64 MiB): the memory's declared
/// maximum, lowered to this if it is larger or absent.
pub const MAX_MEMORY_PAGES: u64 = 1024;
/// The most elements a table may have: its declared maximum, lowered to this if it is larger
/// or absent, so that `table.grow` fails at the same size in every engine.
pub const MAX_TABLE_ELEMENTS: u64 = 65_536;

/// The name of the exported memory.
pub const EXPORT_MEMORY: &str = "memory";
/// The name of the exported allocator.
pub const EXPORT_ALLOC: &str = "alloc";
/// The name of the exported item function.
pub const EXPORT_RUN: &str = "run";

/// Size of one WebAssembly page.
pub const PAGE_BYTES: u64 = 64 << 10;

/// A module that passed the check, ready for any engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// SHA-256 of the bytes as uploaded: the module's name everywhere.
    pub digest: [u8; 32],
    /// Size of the bytes as uploaded.
    pub uploaded_bytes: usize,
    /// The bytes an engine instantiates: as uploaded, except that the memory declares
    /// [`MAX_MEMORY_PAGES`] as its maximum, and every table [`MAX_TABLE_ELEMENTS`], where
    /// they declared none or a larger one.
    pub bytes: Vec<u8>,
    /// The memory's initial and maximum size after that change, in pages.
    pub memory_pages: (u64, u64),
}

/// Why a module was refused. Each message says what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleError {
    TooLarge {
        bytes: usize,
    },
    /// Not valid WebAssembly 2.0; the validator's message.
    Invalid(String),
    Imports {
        first: String,
    },
    MissingExport {
        name: &'static str,
        kind: &'static str,
    },
    WrongSignature {
        name: &'static str,
        expected: &'static str,
        found: String,
    },
    MemoryTooLarge {
        initial_pages: u64,
    },
    TableTooLarge {
        initial_elements: u64,
    },
}

impl fmt::Display for ModuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { bytes } => write!(
                f,
                "the module is {bytes} bytes; the limit is {MAX_MODULE_BYTES} bytes (8 MiB)"
            ),
            Self::Invalid(why) => write!(f, "not a valid WebAssembly 2.0 module: {why}"),
            Self::Imports { first } => write!(
                f,
                "the module imports {first}; a workload may import nothing (no WASI, clock or \
                 randomness: its output must depend on its input alone)"
            ),
            Self::MissingExport { name, kind } => {
                write!(f, "the module must export a {kind} named `{name}`")
            }
            Self::WrongSignature {
                name,
                expected,
                found,
            } => write!(
                f,
                "the export `{name}` must have type {expected}, not {found}"
            ),
            Self::MemoryTooLarge { initial_pages } => write!(
                f,
                "the memory starts at {initial_pages} pages; the limit is {MAX_MEMORY_PAGES} \
                 pages (64 MiB)"
            ),
            Self::TableTooLarge { initial_elements } => write!(
                f,
                "a table starts with {initial_elements} elements; the limit is \
                 {MAX_TABLE_ELEMENTS}"
            ),
        }
    }
}

impl std::error::Error for ModuleError {}

/// The WebAssembly features a module may use: 2.0, and nothing later.
fn features() -> WasmFeatures {
    WasmFeatures::WASM2
}

/// Checks `bytes` against the ABI and prepares them for an engine.
pub fn check(bytes: &[u8]) -> Result<Module, ModuleError> {
    if bytes.len() > MAX_MODULE_BYTES {
        return Err(ModuleError::TooLarge { bytes: bytes.len() });
    }
    let owned = Validator::new_with_features(features())
        .validate_all(bytes)
        .map_err(|e| ModuleError::Invalid(e.to_string()))?;
    let types = owned.as_ref();

    let mut exports = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| ModuleError::Invalid(e.to_string()))? {
            Payload::ImportSection(imports) => {
                if let Some(import) = imports.into_imports().next() {
                    let import = import.map_err(|e| ModuleError::Invalid(e.to_string()))?;
                    return Err(ModuleError::Imports {
                        first: format!("`{}.{}`", import.module, import.name),
                    });
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(|e| ModuleError::Invalid(e.to_string()))?;
                    exports.push((export.name.to_owned(), export.kind, export.index));
                }
            }
            _ => {}
        }
    }
    let find = |name: &'static str, kind: ExternalKind, kind_name: &'static str| {
        exports
            .iter()
            .find(|(n, k, _)| n == name && *k == kind)
            .map(|(_, _, index)| *index)
            .ok_or(ModuleError::MissingExport {
                name,
                kind: kind_name,
            })
    };
    let memory_index = find(EXPORT_MEMORY, ExternalKind::Memory, "memory")?;
    for (name, params, results) in [
        (EXPORT_ALLOC, &[ValType::I32][..], &[ValType::I32][..]),
        (
            EXPORT_RUN,
            &[ValType::I32, ValType::I32][..],
            &[ValType::I64][..],
        ),
    ] {
        let index = find(name, ExternalKind::Func, "function")?;
        // The validator checked that every export's index exists; `function_count` guards
        // `core_function_at`, which would panic on one that did not.
        let not_a_function = || ModuleError::Invalid(format!("`{name}` is not a function"));
        if index >= types.function_count() {
            return Err(not_a_function());
        }
        let found = match types.get(types.core_function_at(index)) {
            Some(sub) => match &sub.composite_type.inner {
                CompositeInnerType::Func(f) => f.clone(),
                _ => return Err(not_a_function()),
            },
            None => return Err(not_a_function()),
        };
        if found.params() != params || found.results() != results {
            return Err(ModuleError::WrongSignature {
                name,
                expected: if name == EXPORT_RUN {
                    "(i32, i32) -> i64"
                } else {
                    "(i32) -> i32"
                },
                found: format!("{found}"),
            });
        }
    }
    let mut tables_unbounded = false;
    for table in 0..types.table_count() {
        let table = types.table_at(table);
        if table.initial > MAX_TABLE_ELEMENTS {
            return Err(ModuleError::TableTooLarge {
                initial_elements: table.initial,
            });
        }
        tables_unbounded |= table.maximum.is_none_or(|m| m > MAX_TABLE_ELEMENTS);
    }
    if memory_index >= types.memory_count() {
        return Err(ModuleError::MissingExport {
            name: EXPORT_MEMORY,
            kind: "memory",
        });
    }
    let memory = types.memory_at(memory_index);
    if memory.initial > MAX_MEMORY_PAGES {
        return Err(ModuleError::MemoryTooLarge {
            initial_pages: memory.initial,
        });
    }
    let maximum = memory
        .maximum
        .map_or(MAX_MEMORY_PAGES, |m| m.min(MAX_MEMORY_PAGES));
    let prepared = if memory.maximum == Some(maximum) && !tables_unbounded {
        bytes.to_vec()
    } else {
        with_maximums(bytes, memory.initial, maximum)?
    };
    Ok(Module {
        digest: Sha256::digest(bytes).into(),
        uploaded_bytes: bytes.len(),
        bytes: prepared,
        memory_pages: (memory.initial, maximum),
    })
}

impl Module {
    /// How the module is described on the wire (the answer to storing it).
    pub fn info(&self) -> shared_protocol::ModuleInfo {
        shared_protocol::ModuleInfo {
            sha256: hex(&self.digest),
            bytes: self.uploaded_bytes as u64,
            prepared_bytes: self.bytes.len() as u64,
            memory_pages: [self.memory_pages.0, self.memory_pages.1],
        }
    }
}

/// `bytes` with its memory section re-encoded to declare `maximum`, and its table section
/// to declare at most [`MAX_TABLE_ELEMENTS`] for every table; every other section is copied
/// as it is. Only called on a module with no imports and one memory, which the validator and
/// the export check above have established.
fn with_maximums(bytes: &[u8], initial: u64, maximum: u64) -> Result<Vec<u8>, ModuleError> {
    let invalid = |e: &dyn fmt::Display| ModuleError::Invalid(e.to_string());
    let mut out = wasm_encoder::Module::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| invalid(&e))?;
        match payload {
            Payload::MemorySection(_) => {
                let mut memories = wasm_encoder::MemorySection::new();
                memories.memory(wasm_encoder::MemoryType {
                    minimum: initial,
                    maximum: Some(maximum),
                    memory64: false,
                    shared: false,
                    page_size_log2: None,
                });
                out.section(&memories);
            }
            Payload::TableSection(reader) => {
                let mut tables = wasm_encoder::TableSection::new();
                for table in reader {
                    let table = table.map_err(|e| invalid(&e))?;
                    // WebAssembly 2.0 tables start null: an initialiser is a later proposal.
                    if !matches!(table.init, wasmparser::TableInit::RefNull) {
                        return Err(invalid(&"a table initialiser needs a later proposal"));
                    }
                    let mut ty =
                        wasm_encoder::TableType::try_from(table.ty).map_err(|e| invalid(&e))?;
                    ty.maximum = Some(
                        ty.maximum
                            .map_or(MAX_TABLE_ELEMENTS, |m| m.min(MAX_TABLE_ELEMENTS)),
                    );
                    tables.table(ty);
                }
                out.section(&tables);
            }
            other => {
                if let Some((id, range)) = other.as_section() {
                    let data = bytes
                        .get(range)
                        .ok_or_else(|| invalid(&"a section runs past the end"))?;
                    out.section(&wasm_encoder::RawSection { id, data });
                }
            }
        }
    }
    Ok(out.finish())
}

/// Lowercase hex of a digest, as modules are named in URLs and messages.
pub fn hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wat(text: &str) -> Vec<u8> {
        wat::parse_str(text).unwrap()
    }

    const ABI: &str = r#"
        (func (export "alloc") (param i32) (result i32) i32.const 1024)
        (func (export "run") (param i32 i32) (result i64) i64.const 0)"#;

    #[test]
    fn a_module_without_a_memory_maximum_gets_the_abis_and_keeps_its_name() {
        let source = wat(&format!(r#"(module (memory (export "memory") 2) {ABI})"#));
        let module = check(&source).unwrap();
        assert_eq!(module.memory_pages, (2, MAX_MEMORY_PAGES));
        assert_eq!(module.digest, <[u8; 32]>::from(Sha256::digest(&source)));
        assert_ne!(module.bytes, source);
        // The rewritten module is still valid and declares the new maximum.
        let again = check(&module.bytes).unwrap();
        assert_eq!(again.memory_pages, (2, MAX_MEMORY_PAGES));
        assert_eq!(
            again.bytes, module.bytes,
            "a prepared module needs no change"
        );
    }

    #[test]
    fn a_smaller_declared_maximum_is_kept_and_a_larger_one_lowered() {
        let small = wat(&format!(r#"(module (memory (export "memory") 1 3) {ABI})"#));
        let module = check(&small).unwrap();
        assert_eq!(module.memory_pages, (1, 3));
        assert_eq!(module.bytes, small);
        let large = wat(&format!(
            r#"(module (memory (export "memory") 1 5000) {ABI})"#
        ));
        assert_eq!(check(&large).unwrap().memory_pages, (1, MAX_MEMORY_PAGES));
    }

    #[test]
    fn tables_get_the_abis_maximum_when_theirs_is_missing_or_larger() {
        let source = wat(&format!(
            r#"(module (table 1 funcref) (table 2 70000 externref) (table 3 4 funcref)
                (memory (export "memory") 1 1) {ABI})"#
        ));
        let module = check(&source).unwrap();
        assert_ne!(module.bytes, source);
        let owned = Validator::new_with_features(features())
            .validate_all(&module.bytes)
            .unwrap();
        let types = owned.as_ref();
        let maximums: Vec<_> = (0..types.table_count())
            .map(|t| (types.table_at(t).initial, types.table_at(t).maximum))
            .collect();
        assert_eq!(
            maximums,
            [
                (1, Some(MAX_TABLE_ELEMENTS)),
                (2, Some(MAX_TABLE_ELEMENTS)),
                (3, Some(4))
            ]
        );
        // Bounded tables and memory: nothing to change.
        let bounded = wat(&format!(
            r#"(module (table 3 4 funcref) (memory (export "memory") 1 1) {ABI})"#
        ));
        assert_eq!(check(&bounded).unwrap().bytes, bounded);
    }

    #[test]
    fn each_abi_breach_is_refused_with_what_to_change() {
        let cases = [
            (
                format!(
                    r#"(module (import "wasi" "clock" (func)) (memory (export "memory") 1) {ABI})"#
                ),
                "imports `wasi.clock`",
            ),
            (
                format!("(module (memory 1) {ABI})"),
                "export a memory named `memory`",
            ),
            (
                r#"(module (memory (export "memory") 1)
                    (func (export "run") (param i32 i32) (result i64) i64.const 0))"#
                    .to_owned(),
                "export a function named `alloc`",
            ),
            (
                r#"(module (memory (export "memory") 1)
                    (func (export "alloc") (param i32) (result i32) i32.const 0)
                    (func (export "run") (param i32 i32) (result i32) i32.const 0))"#
                    .to_owned(),
                "`run` must have type (i32, i32) -> i64",
            ),
            (
                format!(r#"(module (memory (export "memory") 1025) {ABI})"#),
                "starts at 1025 pages",
            ),
            (
                format!(r#"(module (table 70000 funcref) (memory (export "memory") 1) {ABI})"#),
                "starts with 70000 elements",
            ),
            (
                format!(r#"(module (memory (export "memory") 1) {ABI} (func (return_call 0)))"#),
                "not a valid WebAssembly 2.0 module",
            ),
        ];
        for (source, expected) in cases {
            let err = check(&wat(&source)).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} should say {expected:?}");
        }
        let err = check(b"\0asm\x01\0\0\0garbage").unwrap_err().to_string();
        assert!(err.starts_with("not a valid WebAssembly"), "{err}");
        let err = check(&vec![0; MAX_MODULE_BYTES + 1])
            .unwrap_err()
            .to_string();
        assert!(err.contains("limit is 8388608 bytes"), "{err}");
    }
}
