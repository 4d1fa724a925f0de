//! The native runner: a module compiled once by wasmtime, each item in a fresh instance.
//!
//! The time limit is wall-clock, as in a browser worker: wasmtime's epoch interruption, with
//! one thread per [`Runner`] advancing the epoch every [`TICK`]. Memory is bounded by the
//! maximum [`crate::module::check`] gave the module (and by a store limit, in case an engine
//! honoured a declared maximum differently); tables by the check.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Config, Engine, Instance, Store, StoreLimits, StoreLimitsBuilder, Trap, TypedFunc};

use crate::module::{
    self, ModuleError, EXPORT_ALLOC, EXPORT_MEMORY, EXPORT_RUN, MAX_MEMORY_PAGES,
    MAX_TABLE_ELEMENTS, PAGE_BYTES,
};
use crate::outcome::{check_input, input_range, returned_range, Failure, FailureKind, Outcome};

/// How often the epoch advances: the granularity of the time limit.
pub const TICK: Duration = Duration::from_millis(5);

/// An engine and the thread that keeps its time.
pub struct Runner {
    engine: Engine,
    stop: Arc<AtomicBool>,
}

/// A module compiled for this runner's engine.
pub struct Compiled {
    module: wasmtime::Module,
}

impl Runner {
    pub fn new() -> Result<Self, String> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| format!("wasmtime: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (weak, stopped) = (engine.weak(), stop.clone());
        std::thread::Builder::new()
            .name("workload-epoch".to_owned())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| format!("epoch thread: {e}"))?;
        Ok(Self { engine, stop })
    }

    /// Checks `bytes` against the ABI and compiles them.
    pub fn compile(&self, bytes: &[u8]) -> Result<Compiled, ModuleError> {
        let checked = module::check(bytes)?;
        let module = wasmtime::Module::new(&self.engine, &checked.bytes)
            .map_err(|e| ModuleError::Invalid(format!("{e:#}")))?;
        Ok(Compiled { module })
    }

    /// Runs one item in a fresh instance. Never panics and never runs much past
    /// `time_limit`, whatever the module does.
    pub fn run(&self, compiled: &Compiled, input: &[u8], time_limit: Duration) -> Outcome {
        match self.try_run(compiled, input, time_limit) {
            Ok(outcome) => outcome,
            Err(failure) => Outcome::Failed(failure),
        }
    }

    fn try_run(
        &self,
        compiled: &Compiled,
        input: &[u8],
        time_limit: Duration,
    ) -> Result<Outcome, Failure> {
        check_input(input.len())?;
        let limits = StoreLimitsBuilder::new()
            .memory_size(
                usize::try_from(MAX_MEMORY_PAGES.saturating_mul(PAGE_BYTES)).unwrap_or(usize::MAX),
            )
            .table_elements(usize::try_from(MAX_TABLE_ELEMENTS).unwrap_or(usize::MAX))
            .instances(1)
            .build();
        let mut store = Store::new(&self.engine, limits);
        store.limiter(|limits: &mut StoreLimits| limits);
        let ticks = time_limit
            .as_micros()
            .div_ceil(TICK.as_micros())
            .saturating_add(1);
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        store.epoch_deadline_trap();

        let instance = Instance::new(&mut store, &compiled.module, &[]).map_err(failure)?;
        let memory = instance
            .get_memory(&mut store, EXPORT_MEMORY)
            .ok_or_else(|| Failure::new(FailureKind::Engine, "no memory export"))?;
        let alloc: TypedFunc<i32, i32> = instance
            .get_typed_func(&mut store, EXPORT_ALLOC)
            .map_err(failure)?;
        let run: TypedFunc<(i32, i32), i64> = instance
            .get_typed_func(&mut store, EXPORT_RUN)
            .map_err(failure)?;

        // `input.len()` ≤ 64 KiB, so it fits an i32.
        let len = i32::try_from(input.len()).unwrap_or(i32::MAX);
        let ptr = alloc.call(&mut store, len).map_err(failure)?;
        let at = input_range(ptr, input.len(), memory.data_size(&store))?;
        memory
            .write(&mut store, at.start, input)
            .map_err(|e| Failure::new(FailureKind::AllocRefused, e.to_string()))?;
        let packed = run.call(&mut store, (ptr, len)).map_err(failure)?;
        let data = memory.data(&store);
        let (range, is_error) = returned_range(packed, data.len())?;
        let bytes = data.get(range).unwrap_or_default();
        Ok(Outcome::returned(bytes, is_error))
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The failure an engine error stands for.
fn failure(error: wasmtime::Error) -> Failure {
    let kind = match error.downcast_ref::<Trap>() {
        Some(Trap::UnreachableCodeReached) => FailureKind::Unreachable,
        Some(Trap::MemoryOutOfBounds | Trap::HeapMisaligned) => FailureKind::MemoryOutOfBounds,
        Some(Trap::TableOutOfBounds) => FailureKind::TableOutOfBounds,
        Some(Trap::IndirectCallToNull | Trap::BadSignature) => FailureKind::IndirectCall,
        Some(Trap::IntegerDivisionByZero) => FailureKind::DivideByZero,
        Some(Trap::IntegerOverflow | Trap::BadConversionToInteger) => FailureKind::IntegerOverflow,
        Some(Trap::Interrupt) => FailureKind::TimeLimit,
        Some(Trap::StackOverflow) => FailureKind::StackOverflow,
        _ => FailureKind::Engine,
    };
    let message = match kind {
        FailureKind::TimeLimit => "the item ran past its time limit".to_owned(),
        _ => format!("{error:#}"),
    };
    Failure::new(kind, message)
}
