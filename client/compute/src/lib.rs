//! What a browser's Web Worker runs: one lease at a time with the shared kernels, off the
//! page's main thread. This crate is its own small wasm (`pages/worker.js` loads it), so the
//! page's UI wasm carries no kernel and a worker loads no UI; the native agent computes with
//! the same [`compute`].

pub mod lease;

use kernels::mandelbrot::{render_tile, Tile, View};
use shared_protocol::{encode_counts, Work, WorkResult};

/// Computes a lease, or says why it cannot be computed.
pub fn compute(work: &Work) -> Result<WorkResult, String> {
    match work {
        Work::PrimeCount { lo, hi } => kernels::primes::try_count_primes(*lo, *hi)
            .map(|count| WorkResult::PrimeCount { count })
            .map_err(|err| err.to_string()),
        Work::Mandelbrot {
            center_re,
            center_im,
            scale,
            width,
            height,
            max_iter,
            first_row,
            rows,
        } => {
            if u64::from(*width) * u64::from(*rows) > 4 * shared_protocol::MAX_CHUNK_PIXELS {
                return Err("band too large".into());
            }
            let view = View {
                center_re: *center_re,
                center_im: *center_im,
                scale: *scale,
                width: *width,
                height: *height,
                max_iter: *max_iter,
            };
            let tile = Tile {
                x: 0,
                y: *first_row,
                width: *width,
                height: *rows,
            };
            Ok(WorkResult::Mandelbrot {
                counts: encode_counts(&render_tile(&view, &tile)),
            })
        }
        Work::Sha256Search {
            prefix,
            difficulty_bits,
            lo,
            hi,
            max_found,
        } => Ok(WorkResult::Sha256Search {
            nonces: kernels::sha256::search(
                prefix.as_bytes(),
                *difficulty_bits,
                *lo,
                *hi,
                *max_found as usize,
            ),
        }),
        // Items of a workload run in the module, one instance each ([`run_workload_item`]
        // in a browser, `workload::native` in the agent), and their outputs are uploaded.
        Work::Workload { .. } => Err("workload items are run by the workload runner".into()),
    }
}

/// Computes a lease given as the JSON of a [`Work`]; returns the JSON of its `WorkResult`, or
/// an empty string when the work cannot be read or computed.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn compute_work(work: &str) -> String {
    serde_json::from_str::<Work>(work)
        .map_err(|err| err.to_string())
        .and_then(|work| compute(&work))
        .map(|result| shared_protocol::encode(&result))
        .unwrap_or_default()
}

/// Runs one item of an own workload in a fresh instance of `module` (compiled from the
/// module's prepared bytes, docs/WORKLOADS.md); returns the JSON of
/// `{"outcome": <workload::Outcome>, "digest": <hex SHA-256, or null>}`. Never throws:
/// every trap, bad export or bad range is an outcome. The time limit is not here: a runner
/// on an item past it is terminated (see [`lease`]).
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn run_workload_item(module: &js_sys::WebAssembly::Module, input: &[u8]) -> String {
    let outcome = browser_workload::run(module, input);
    let digest = outcome.digest().map(|d| workload::module::hex(&d));
    serde_json::json!({ "outcome": outcome, "digest": digest }).to_string()
}

/// Runs item `item` of a workload lease (`work`, the JSON of its `Work`) in a fresh instance
/// of `module`; returns the item's record of the outputs file (what `pages/runner.js` posts
/// back). Never throws: a lease that is not a workload, or an item outside its inputs, is an
/// `engine` failure.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn run_workload_record(module: &js_sys::WebAssembly::Module, work: &str, item: f64) -> Vec<u8> {
    let input = serde_json::from_str::<Work>(work)
        .ok()
        .and_then(|work| work.item_input(item as u64));
    let outcome = match input {
        Some(input) => browser_workload::run(module, &input),
        None => workload::Outcome::Failed(workload::Failure::new(
            workload::FailureKind::Engine,
            "the item is not one of the lease's",
        )),
    };
    lease::record(&outcome)
}

/// Runs one item of an own workload whose input is `input` (an item of an input set) in a
/// fresh instance of `module`; returns its record of the outputs file. Never throws.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn run_workload_input(module: &js_sys::WebAssembly::Module, input: &[u8]) -> Vec<u8> {
    lease::record(&browser_workload::run(module, input))
}

/// A workload lease on its way through a browser's lease worker: [`lease::ItemRun`] for
/// `pages/worker.js`, with times in milliseconds and item indexes as JavaScript numbers.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub struct WorkloadLease(lease::ItemRun);

#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen]
impl WorkloadLease {
    /// The run of the lease `work` (the JSON of its `Work`); throws if it is not a workload.
    #[wasm_bindgen(constructor)]
    pub fn new(work: &str) -> Result<WorkloadLease, String> {
        let work = serde_json::from_str::<Work>(work).map_err(|err| err.to_string())?;
        lease::ItemRun::new(&work).map(Self)
    }

    /// The module's SHA-256.
    pub fn module(&self) -> String {
        self.0.module().to_owned()
    }

    /// Whether the lease's inputs are fetched (`GET …/inputs` with its ticket).
    #[wasm_bindgen(js_name = fetchesInputs)]
    pub fn fetches_inputs(&self) -> bool {
        self.0.fetches_inputs()
    }

    /// The lease's inputs, one array per item, from the records fetched; throws unless there
    /// is exactly one per item.
    #[wasm_bindgen(js_name = splitInputs)]
    pub fn split_inputs(&self, records: &[u8]) -> Result<js_sys::Array, String> {
        let inputs = self.0.split_inputs(records)?;
        Ok(inputs.into_iter().map(js_sys::Uint8Array::from).collect())
    }

    /// What to do now, as JSON: `{"run": {kill, from, end, wake_at}}`, `{"wait": {wake_at}}`
    /// or `{"done": {kill}}` ([`lease::Step`]).
    pub fn poll(&mut self, now: f64) -> String {
        let json = match self.0.poll(now as u64) {
            lease::Step::Run {
                kill,
                from,
                end,
                wake_at,
            } => {
                serde_json::json!({"run": {"kill": kill, "from": from, "end": end, "wake_at": wake_at}})
            }
            lease::Step::Wait { wake_at } => serde_json::json!({"wait": {"wake_at": wake_at}}),
            lease::Step::Done { kill } => serde_json::json!({"done": {"kill": kill}}),
        };
        json.to_string()
    }

    pub fn begun(&mut self, now: f64, item: f64) {
        self.0.begun(now as u64, item as u64);
    }

    /// Takes an item's record; throws if it is malformed.
    pub fn finished(&mut self, now: f64, item: f64, record: &[u8]) -> Result<(), String> {
        self.0.finished(now as u64, item as u64, record)
    }

    /// The outputs file.
    pub fn file(&self) -> Vec<u8> {
        self.0.file().to_vec()
    }

    /// The outputs file's name (its SHA-256 in hex).
    pub fn name(&self) -> String {
        self.0.name()
    }

    /// The JSON of the lease's result, given the upload's receipt.
    pub fn result(&self, receipt: String) -> String {
        shared_protocol::encode(&self.0.result(receipt))
    }
}

/// The host side of the workload ABI on the browser's own engine, through `js_sys`.
#[cfg(target_arch = "wasm32")]
mod browser_workload {
    use js_sys::{ArrayBuffer, Function, Object, Reflect, Uint8Array, WebAssembly};
    use wasm_bindgen::{JsCast, JsValue};
    use workload::module::{EXPORT_ALLOC, EXPORT_MEMORY, EXPORT_RUN};
    use workload::outcome::{check_input, input_range, js_error_kind, returned_range};
    use workload::{Failure, FailureKind, Outcome};

    /// The outcome of one item in a fresh instance.
    pub fn run(module: &WebAssembly::Module, input: &[u8]) -> Outcome {
        run_item(module, input).unwrap_or_else(Outcome::Failed)
    }

    fn run_item(module: &WebAssembly::Module, input: &[u8]) -> Result<Outcome, Failure> {
        check_input(input.len())?;
        let instance = WebAssembly::Instance::new(module, &Object::new()).map_err(thrown)?;
        let exports = instance.exports();
        let memory: WebAssembly::Memory = export(&exports, EXPORT_MEMORY)?;
        let alloc: Function = export(&exports, EXPORT_ALLOC)?;
        let run: Function = export(&exports, EXPORT_RUN)?;

        // At most 64 KiB: fits an i32.
        let len = i32::try_from(input.len()).unwrap_or(i32::MAX);
        let ptr = alloc
            .call1(&JsValue::UNDEFINED, &len.into())
            .map_err(thrown)?
            .as_f64()
            .ok_or_else(|| engine("alloc did not return a number"))? as i32;
        let at = input_range(ptr, input.len(), buffer(&memory).byte_length() as usize)?;
        bytes_at(&memory, at.start, input.len()).copy_from(input);
        let packed = run
            .call2(&JsValue::UNDEFINED, &ptr.into(), &len.into())
            .map_err(thrown)?;
        let packed = i64::try_from(packed).map_err(|_| engine("run did not return an i64"))?;
        // Fetched again: `run` may have grown the memory, which replaces its buffer.
        let (range, is_error) = returned_range(packed, buffer(&memory).byte_length() as usize)?;
        let bytes = bytes_at(&memory, range.start, range.len()).to_vec();
        Ok(Outcome::returned(&bytes, is_error))
    }

    fn buffer(memory: &WebAssembly::Memory) -> ArrayBuffer {
        memory.buffer().unchecked_into()
    }

    /// A view of `len` bytes at `at`, a range already checked to lie in the memory.
    fn bytes_at(memory: &WebAssembly::Memory, at: usize, len: usize) -> Uint8Array {
        Uint8Array::new_with_byte_offset_and_length(&buffer(memory), at as u32, len as u32)
    }

    fn export<T: JsCast>(exports: &Object, name: &str) -> Result<T, Failure> {
        Reflect::get(exports, &name.into())
            .map_err(thrown)?
            .dyn_into()
            .map_err(|_| {
                engine(format!(
                    "the export `{name}` is missing or of the wrong kind"
                ))
            })
    }

    fn engine(message: impl Into<String>) -> Failure {
        Failure::new(FailureKind::Engine, message)
    }

    /// The failure a thrown JavaScript error stands for.
    fn thrown(error: JsValue) -> Failure {
        let field = |name: &str| {
            Reflect::get(&error, &name.into())
                .ok()
                .and_then(|v| v.as_string())
                .unwrap_or_default()
        };
        let (name, message) = (field("name"), field("message"));
        Failure::new(js_error_kind(&name, &message), format!("{name}: {message}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_protocol::decode_counts;

    #[test]
    fn every_kind_of_work_is_computed_with_the_kernels() {
        assert_eq!(
            compute(&Work::PrimeCount { lo: 0, hi: 100 }),
            Ok(WorkResult::PrimeCount { count: 25 })
        );
        let band = Work::Mandelbrot {
            center_re: -0.5,
            center_im: 0.0,
            scale: 3.0,
            width: 40,
            height: 30,
            max_iter: 200,
            first_row: 14,
            rows: 2,
        };
        let Ok(WorkResult::Mandelbrot { counts }) = compute(&band) else {
            panic!("no counts")
        };
        let counts = decode_counts(&counts).unwrap();
        assert_eq!(counts.len(), 80);
        // The middle rows cross the set: some pixels are inside, some escape at once.
        assert!(counts.contains(&200) && counts.iter().any(|&c| c < 3));
        let search = Work::Sha256Search {
            prefix: "ostrich".into(),
            difficulty_bits: 8,
            lo: 0,
            hi: 5000,
            max_found: 3,
        };
        let Ok(WorkResult::Sha256Search { nonces }) = compute(&search) else {
            panic!("no nonces")
        };
        assert_eq!(nonces.len(), 3);
        assert!(nonces
            .iter()
            .all(|&n| kernels::sha256::meets_target(b"ostrich", n, 8)));
        assert!(compute(&Work::PrimeCount { lo: 0, hi: 1 << 60 }).is_err());
    }
}
