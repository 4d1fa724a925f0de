//! Jobs on the wire: what the owner submits, what a device is leased, what it returns, and
//! what dashboards see.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::tagged::tag_first;

/// The largest end of a prime-count range (the kernels' sieve limit).
pub const MAX_PRIME_END: u64 = 1 << 48;

/// The largest side of a Mandelbrot image, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 4096;

/// The most pixels a Mandelbrot image may have (2048 × 2048).
pub const MAX_IMAGE_PIXELS: u64 = 1 << 22;

/// The largest iteration limit of a Mandelbrot job (escape counts travel as 16-bit numbers).
pub const MAX_ITERATIONS: u32 = 65_535;

/// The most pixels one Mandelbrot lease covers, so that its result fits one message.
pub const MAX_CHUNK_PIXELS: u64 = 1 << 16;

/// The largest end of a SHA-256 nonce range: 2^53, so every nonce is exact in JavaScript.
pub const MAX_NONCE_END: u64 = 1 << 53;

/// The longest SHA-256 search prefix, in bytes.
pub const MAX_PREFIX_BYTES: usize = 64;

/// The most nonces a SHA-256 search job asks for.
pub const MAX_WANTED_NONCES: u32 = 100;

/// The most items of a workload job.
pub const MAX_WORKLOAD_ITEMS: u64 = 1_000_000;

/// The longest per-item time limit of a workload job, in milliseconds.
pub const MAX_ITEM_TIME_LIMIT_MS: u32 = 60_000;

/// The most items one workload lease covers, so that its outputs (at most 256 KiB each) fit
/// one upload of [`MAX_OUTPUTS_BYTES`].
pub const MAX_LEASE_ITEMS: u64 = 128;

/// The most items of a workload job over an input set.
pub const MAX_INPUT_SET_ITEMS: u64 = 100_000;

/// The largest page of an input set, in bytes: an input set of up to 256 MiB is uploaded in
/// pages of at most 8 MiB (docs/WORKLOADS.md, "Input sets").
pub const MAX_INPUT_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// The most pages of an input set (32 full pages are 256 MiB).
pub const MAX_INPUT_PAGES: usize = 32;

/// The largest outputs file of one workload lease (docs/WORKLOADS.md): 128 items of the
/// largest output and their 5-byte headers.
pub const MAX_OUTPUTS_BYTES: usize = 128 * (256 * 1024 + 5);

/// A job the owner submits. Checked by [`valid_job`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobSpec {
    /// Count the primes p with `lo <= p < hi`; `lo < hi <= 2^48`.
    PrimeCount { lo: u64, hi: u64 },
    /// Render a `width` × `height` image of the Mandelbrot set centred on
    /// `center_re + center_im·i`, `scale` wide in the complex plane, at `max_iter` iterations.
    /// The result is a PNG; work is split into bands of whole rows.
    Mandelbrot {
        center_re: f64,
        center_im: f64,
        scale: f64,
        width: u32,
        height: u32,
        max_iter: u32,
    },
    /// Find nonces in `[lo, hi)` whose SHA-256 of `prefix` (UTF-8) followed by the nonce as 8
    /// little-endian bytes has at least `difficulty_bits` leading zero bits. The job ends when
    /// the range is searched or `want` nonces are found.
    Sha256Search {
        prefix: String,
        difficulty_bits: u32,
        lo: u64,
        hi: u64,
        want: u32,
    },
    /// Run the workload module named `module` (the SHA-256 of its upload, docs/WORKLOADS.md)
    /// once per item. Over an integer range, item `i` (`0 <= i < items`) has as input the 8
    /// little-endian bytes of the unsigned integer `start + i * step`; over an input set
    /// (`inputs`, without `start` and `step`), the items of its uploaded pages in order. An
    /// item that runs longer than `time_limit_ms` fails with `time_limit`.
    Workload {
        module: String,
        #[serde(default)]
        start: u64,
        #[serde(default)]
        step: u64,
        items: u64,
        time_limit_ms: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        inputs: Option<Vec<InputPage>>,
    },
}

// The coordinator reads a job from owners in any key order; in a [`JobView`], which only the
// coordinator writes, it is read tag first.
tag_first!(JobSpec, tag "kind" {
    "prime_count" => PrimeCount { lo: u64, hi: u64 },
    "mandelbrot" => Mandelbrot {
        center_re: f64,
        center_im: f64,
        scale: f64,
        width: u32,
        height: u32,
        max_iter: u32,
    },
    "sha256_search" => Sha256Search {
        prefix: String,
        difficulty_bits: u32,
        lo: u64,
        hi: u64,
        want: u32,
    },
    "workload" => Workload {
        module: String,
        #[serde(default)]
        start: u64,
        #[serde(default)]
        step: u64,
        items: u64,
        time_limit_ms: u32,
        #[serde(default)]
        inputs: Option<Vec<InputPage>>,
    },
});

/// A page of an input set, as uploaded (`PUT /api/swarms/{id}/inputs/{sha256}`): its name and
/// how many items it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputPage {
    pub sha256: String,
    pub items: u64,
}

/// The rule of a [`JobSpec`] (a garde custom validator).
pub fn valid_job(spec: &JobSpec, _ctx: &()) -> garde::Result {
    let fail = |why: String| Err(garde::Error::new(why));
    match spec {
        JobSpec::PrimeCount { lo, hi } if lo >= hi => fail("hi must be greater than lo".into()),
        JobSpec::PrimeCount { hi, .. } if *hi > MAX_PRIME_END => {
            fail(format!("hi must be at most {MAX_PRIME_END}"))
        }
        JobSpec::PrimeCount { .. } => Ok(()),
        JobSpec::Mandelbrot {
            center_re,
            center_im,
            scale,
            width,
            height,
            max_iter,
        } => {
            if !(1..=MAX_IMAGE_SIDE).contains(width) || !(1..=MAX_IMAGE_SIDE).contains(height) {
                fail(format!(
                    "width and height must be 1 to {MAX_IMAGE_SIDE} pixels"
                ))
            } else if u64::from(*width).saturating_mul(u64::from(*height)) > MAX_IMAGE_PIXELS {
                fail(format!(
                    "the image may have at most {MAX_IMAGE_PIXELS} pixels"
                ))
            } else if !(1..=MAX_ITERATIONS).contains(max_iter) {
                fail(format!("max_iter must be 1 to {MAX_ITERATIONS}"))
            } else if !(1e-12..=16.0).contains(scale) {
                fail("scale must be between 1e-12 and 16".into())
            } else if center_re.abs() > 4.0 || center_im.abs() > 4.0 {
                fail("the centre must lie within 4 of the origin".into())
            } else {
                Ok(())
            }
        }
        JobSpec::Sha256Search {
            prefix,
            difficulty_bits,
            lo,
            hi,
            want,
        } => {
            if prefix.is_empty() || prefix.len() > MAX_PREFIX_BYTES {
                fail(format!("prefix must be 1 to {MAX_PREFIX_BYTES} bytes"))
            } else if prefix.chars().any(char::is_control) {
                fail("prefix must not contain control characters".into())
            } else if !(1..=64).contains(difficulty_bits) {
                fail("difficulty_bits must be 1 to 64".into())
            } else if lo >= hi {
                fail("hi must be greater than lo".into())
            } else if *hi > MAX_NONCE_END {
                fail(format!("hi must be at most {MAX_NONCE_END}"))
            } else if !(1..=MAX_WANTED_NONCES).contains(want) {
                fail(format!("want must be 1 to {MAX_WANTED_NONCES}"))
            } else {
                Ok(())
            }
        }
        JobSpec::Workload {
            inputs: Some(pages),
            module,
            start,
            step,
            items,
            time_limit_ms,
        } => {
            let sum = pages
                .iter()
                .try_fold(0u64, |sum, page| sum.checked_add(page.items));
            if crate::is_sha256(module, &()).is_err() {
                fail(
                    "module must be the SHA-256 of an uploaded module (64 lowercase hex digits)"
                        .into(),
                )
            } else if *start != 0 || *step != 0 {
                fail("a job over an input set has no start or step".into())
            } else if !(1..=MAX_INPUT_PAGES).contains(&pages.len()) {
                fail(format!("an input set has 1 to {MAX_INPUT_PAGES} pages"))
            } else if let Some(page) = pages
                .iter()
                .find(|p| crate::is_sha256(&p.sha256, &()).is_err())
            {
                fail(format!(
                    "the page {:?} is not named by a SHA-256 (64 lowercase hex digits)",
                    page.sha256
                ))
            } else if pages.iter().any(|p| p.items == 0) {
                fail("every page holds at least one item".into())
            } else if sum != Some(*items) {
                fail("items must be the sum of the pages' items".into())
            } else if !(1..=MAX_INPUT_SET_ITEMS).contains(items) {
                fail(format!("an input set has 1 to {MAX_INPUT_SET_ITEMS} items"))
            } else if !(1..=MAX_ITEM_TIME_LIMIT_MS).contains(time_limit_ms) {
                fail(format!(
                    "time_limit_ms must be 1 to {MAX_ITEM_TIME_LIMIT_MS}"
                ))
            } else {
                Ok(())
            }
        }
        JobSpec::Workload {
            module,
            start,
            step,
            items,
            time_limit_ms,
            inputs: None,
        } => {
            let last = items
                .checked_sub(1)
                .and_then(|n| n.checked_mul(*step))
                .and_then(|n| n.checked_add(*start));
            if crate::is_sha256(module, &()).is_err() {
                fail(
                    "module must be the SHA-256 of an uploaded module (64 lowercase hex digits)"
                        .into(),
                )
            } else if !(1..=MAX_WORKLOAD_ITEMS).contains(items) {
                fail(format!("items must be 1 to {MAX_WORKLOAD_ITEMS}"))
            } else if *step == 0 {
                fail("step must be at least 1".into())
            } else if last.is_none() {
                fail("the last input, start + (items - 1) * step, must fit in 64 bits".into())
            } else if !(1..=MAX_ITEM_TIME_LIMIT_MS).contains(time_limit_ms) {
                fail(format!(
                    "time_limit_ms must be 1 to {MAX_ITEM_TIME_LIMIT_MS}"
                ))
            } else {
                Ok(())
            }
        }
    }
}

impl JobSpec {
    /// The job's size in work units: numbers to sieve, image rows, or nonces to hash (0 for a
    /// range that [`valid_job`] refuses because it is empty).
    pub fn units(&self) -> u64 {
        match self {
            JobSpec::PrimeCount { lo, hi } | JobSpec::Sha256Search { lo, hi, .. } => {
                hi.saturating_sub(*lo)
            }
            JobSpec::Mandelbrot { height, .. } => u64::from(*height),
            JobSpec::Workload { items, .. } => *items,
        }
    }

    /// The most units one lease may cover: Mandelbrot bands are limited to
    /// [`MAX_CHUNK_PIXELS`] so their result fits one message (an image 0 pixels wide, which
    /// [`valid_job`] refuses, would fit any number of rows).
    pub fn max_chunk_units(&self) -> u64 {
        match self {
            JobSpec::Mandelbrot { width, .. } => MAX_CHUNK_PIXELS
                .checked_div(u64::from(*width))
                .unwrap_or(u64::MAX)
                .max(1),
            JobSpec::Workload { .. } => MAX_LEASE_ITEMS,
            _ => u64::MAX,
        }
    }

    /// The work of units `[from, to)` of this job, `from <= to <= self.units()`. Outside that
    /// (never for a job that passed [`valid_job`]) the numbers saturate instead of wrapping.
    pub fn work(&self, from: u64, to: u64) -> Work {
        match self {
            JobSpec::PrimeCount { lo, .. } => Work::PrimeCount {
                lo: lo.saturating_add(from),
                hi: lo.saturating_add(to),
            },
            JobSpec::Mandelbrot {
                center_re,
                center_im,
                scale,
                width,
                height,
                max_iter,
            } => Work::Mandelbrot {
                center_re: *center_re,
                center_im: *center_im,
                scale: *scale,
                width: *width,
                height: *height,
                max_iter: *max_iter,
                first_row: u32::try_from(from).unwrap_or(u32::MAX),
                rows: u32::try_from(to.saturating_sub(from)).unwrap_or(u32::MAX),
            },
            JobSpec::Sha256Search {
                prefix,
                difficulty_bits,
                lo,
                want,
                ..
            } => Work::Sha256Search {
                prefix: prefix.clone(),
                difficulty_bits: *difficulty_bits,
                lo: lo.saturating_add(from),
                hi: lo.saturating_add(to),
                max_found: *want,
            },
            JobSpec::Workload {
                module,
                start,
                step,
                time_limit_ms,
                inputs,
                ..
            } => Work::Workload {
                module: module.clone(),
                start: *start,
                step: *step,
                first_item: from,
                items: to.saturating_sub(from),
                time_limit_ms: *time_limit_ms,
                inputs: inputs.is_some(),
            },
        }
    }
}

/// A leased piece of a job, to compute. Only the coordinator writes it: it is read tag first
/// (see [`crate::tagged`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    /// Count the primes in `[lo, hi)`.
    PrimeCount { lo: u64, hi: u64 },
    /// Escape counts of image rows `[first_row, first_row + rows)` of the job's view, every
    /// pixel of each row.
    Mandelbrot {
        center_re: f64,
        center_im: f64,
        scale: f64,
        width: u32,
        height: u32,
        max_iter: u32,
        first_row: u32,
        rows: u32,
    },
    /// The first `max_found` matching nonces in `[lo, hi)`, in increasing order.
    Sha256Search {
        prefix: String,
        difficulty_bits: u32,
        lo: u64,
        hi: u64,
        max_found: u32,
    },
    /// Run the module on items `[first_item, first_item + items)` of a workload job: item `i`
    /// has as input the 8 little-endian bytes of `start + i * step`, or, when `inputs`, the
    /// job's input set's item `i`, fetched with the lease's ticket from
    /// `GET /api/swarms/{id}/inputs`. The module's bytes are at
    /// `GET /api/swarms/{id}/modules/{module}` with the ticket; the outputs go to
    /// `PUT /api/swarms/{id}/outputs/{sha256}` (docs/PROTOCOL.md).
    Workload {
        module: String,
        start: u64,
        step: u64,
        first_item: u64,
        items: u64,
        time_limit_ms: u32,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        inputs: bool,
    },
}

tag_first!(deserialize Work, tag "kind" {
    "prime_count" => PrimeCount { lo: u64, hi: u64 },
    "mandelbrot" => Mandelbrot {
        center_re: f64,
        center_im: f64,
        scale: f64,
        width: u32,
        height: u32,
        max_iter: u32,
        first_row: u32,
        rows: u32,
    },
    "sha256_search" => Sha256Search {
        prefix: String,
        difficulty_bits: u32,
        lo: u64,
        hi: u64,
        max_found: u32,
    },
    "workload" => Workload {
        module: String,
        start: u64,
        step: u64,
        first_item: u64,
        items: u64,
        time_limit_ms: u32,
        #[serde(default)]
        inputs: bool,
    },
});

impl Work {
    /// The input of item `index` of a [`Work::Workload`] over an integer range (`None` for
    /// other kinds, a lease over an input set, or an index whose input does not fit in 64
    /// bits).
    pub fn item_input(&self, index: u64) -> Option<[u8; 8]> {
        match self {
            Work::Workload { inputs: true, .. } => None,
            Work::Workload { start, step, .. } => index
                .checked_mul(*step)
                .and_then(|n| n.checked_add(*start))
                .map(u64::to_le_bytes),
            _ => None,
        }
    }
}

/// A device's answer to a lease. The coordinator reads it from devices in any key order; a
/// browser reads its own Web Worker's tag first ([`crate::TagFirstOf`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WorkResult {
    PrimeCount {
        count: u64,
    },
    /// The escape counts of the band, row by row, each as 2 little-endian bytes, base64
    /// (standard alphabet, padded): see [`encode_counts`].
    Mandelbrot {
        counts: String,
    },
    /// The matching nonces found, increasing.
    Sha256Search {
        nonces: Vec<u64>,
    },
    /// The SHA-256 (64 lowercase hex digits) of the lease's outputs file, uploaded before
    /// this result is sent, how many of its items failed, how many of those failed in a way
    /// that depends on the device (`time_limit`, `stack_overflow`, `engine`; absent means 0),
    /// and the receipt the upload was answered with.
    Workload {
        outputs: String,
        failed: u64,
        #[serde(default)]
        unsettled: u64,
        receipt: String,
    },
}

tag_first!(WorkResult, tag "kind" {
    "prime_count" => PrimeCount { count: u64 },
    "mandelbrot" => Mandelbrot { counts: String },
    "sha256_search" => Sha256Search { nonces: Vec<u64> },
    "workload" => Workload {
        outputs: String,
        failed: u64,
        #[serde(default)]
        unsettled: u64,
        receipt: String,
    },
});

/// Escape counts as they travel in [`WorkResult::Mandelbrot`] (counts are at most
/// [`MAX_ITERATIONS`]; larger values are clamped).
pub fn encode_counts(counts: &[u32]) -> String {
    let bytes: Vec<u8> = counts
        .iter()
        .flat_map(|&c| (c.min(MAX_ITERATIONS) as u16).to_le_bytes())
        .collect();
    BASE64.encode(bytes)
}

/// The counts of a [`WorkResult::Mandelbrot`], or why they cannot be read.
pub fn decode_counts(text: &str) -> Result<Vec<u16>, String> {
    let bytes = BASE64
        .decode(text)
        .map_err(|err| format!("counts are not base64: {err}"))?;
    if bytes.len() % 2 != 0 {
        return Err("counts must be 2 bytes each".into());
    }
    Ok(bytes
        .chunks_exact(2)
        // chunks_exact(2) yields only pairs, so every pair converts and none is dropped.
        .filter_map(|pair| <[u8; 2]>::try_from(pair).ok())
        .map(u16::from_le_bytes)
        .collect())
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for the jobs before it.
    Queued,
    Running,
    Done,
    Cancelled,
}

/// A job's merged result. Only the coordinator writes it (also into its own storage): it is
/// read tag first (see [`crate::tagged`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobResult {
    PrimeCount {
        count: u64,
    },
    /// Pixels inside the set so far; the image itself is served as a PNG
    /// (`GET /api/swarms/{swarm_id}/jobs/{job_id}/image.png`).
    Mandelbrot {
        inside_pixels: u64,
    },
    /// The smallest matching nonces found, increasing, at most the job's `want`.
    Sha256Search {
        nonces: Vec<u64>,
    },
    /// Items that failed so far (the rest of the done items have outputs); the outputs
    /// themselves are served by `GET /api/swarms/{id}/jobs/{job_id}/results`.
    Workload {
        failed: u64,
    },
}

tag_first!(deserialize JobResult, tag "kind" {
    "prime_count" => PrimeCount { count: u64 },
    "mandelbrot" => Mandelbrot { inside_pixels: u64 },
    "sha256_search" => Sha256Search { nonces: Vec<u64> },
    "workload" => Workload { failed: u64 },
});

/// The bands of a Mandelbrot job's image stored after a point
/// (`GET /api/swarms/{id}/jobs/{job_id}/bands?after=N`), oldest first, so that a viewer can
/// draw the image as it fills in without downloading it whole again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageBands {
    /// Ask with `after=next` for the bands stored since this answer.
    pub next: u64,
    /// Whether more bands were stored after `next` already (ask again at once).
    pub more: bool,
    pub bands: Vec<ImageBand>,
}

/// A band of rows of a Mandelbrot image, drawn as the full image draws it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageBand {
    pub first_row: u32,
    /// The PNG of rows `first_row ..`, as wide as the image, standard padded base64; `null`
    /// when the band was taken back (its device was caught lying): the rows drawn from this
    /// `first_row` are pending again until a new band for it comes.
    pub png: Option<String>,
}

/// A job as dashboards and the results endpoint show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobView {
    pub job_id: String,
    #[serde(deserialize_with = "crate::tagged::deserialize")]
    pub spec: JobSpec,
    pub state: JobState,
    pub done_units: u64,
    pub total_units: u64,
    /// The swarm's measured rate on this job, units per second (0 when idle).
    pub units_per_second: f64,
    /// Estimated time to completion at that rate.
    pub eta_ms: Option<u64>,
    /// When it was submitted, began to run, and ended (done or cancelled).
    pub created_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    /// The merged result so far (partial while running; final when done).
    pub result: JobResult,
    /// Units computed a second time by other devices to verify results (replicas), so far.
    pub verify_units: u64,
    /// Done units whose result still waits for a replica to agree.
    pub unverified_units: u64,
    /// Accepted chunk results that make up `done_units`.
    #[serde(default)]
    pub chunks_done: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mandelbrot(width: u32, height: u32, max_iter: u32, scale: f64) -> JobSpec {
        JobSpec::Mandelbrot {
            center_re: -0.5,
            center_im: 0.0,
            scale,
            width,
            height,
            max_iter,
        }
    }

    fn sha(prefix: &str, bits: u32, lo: u64, hi: u64, want: u32) -> JobSpec {
        JobSpec::Sha256Search {
            prefix: prefix.into(),
            difficulty_bits: bits,
            lo,
            hi,
            want,
        }
    }

    fn workload(start: u64, step: u64, items: u64, time_limit_ms: u32) -> JobSpec {
        JobSpec::Workload {
            module: "ab".repeat(32),
            start,
            step,
            items,
            time_limit_ms,
            inputs: None,
        }
    }

    /// A job over an input set of pages holding these numbers of items.
    fn over_pages(pages: &[u64]) -> JobSpec {
        JobSpec::Workload {
            module: "ab".repeat(32),
            start: 0,
            step: 0,
            items: pages.iter().sum(),
            time_limit_ms: 100,
            inputs: Some(
                pages
                    .iter()
                    .map(|&items| InputPage {
                        sha256: "cd".repeat(32),
                        items,
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn an_input_set_job_names_its_pages_and_counts_their_items() {
        assert!(valid_job(&over_pages(&[1]), &()).is_ok());
        assert!(valid_job(&over_pages(&[60_000, 40_000]), &()).is_ok());
        assert!(valid_job(&over_pages(&[1; MAX_INPUT_PAGES]), &()).is_ok());
        let refused = |spec: JobSpec, why: &str| {
            let error = valid_job(&spec, &()).unwrap_err().to_string();
            assert!(error.contains(why), "{error}");
        };
        refused(over_pages(&[]), "1 to 32 pages");
        refused(over_pages(&[1; MAX_INPUT_PAGES + 1]), "1 to 32 pages");
        refused(over_pages(&[60_000, 40_001]), "1 to 100000 items");
        refused(over_pages(&[3, 0]), "at least one item");
        let mut spec = over_pages(&[5, 5]);
        if let JobSpec::Workload { items, .. } = &mut spec {
            *items = 11;
        }
        refused(spec, "the sum of the pages");
        let mut spec = over_pages(&[5]);
        if let JobSpec::Workload { step, .. } = &mut spec {
            *step = 1;
        }
        refused(spec, "no start or step");
        let mut spec = over_pages(&[5]);
        if let JobSpec::Workload {
            inputs: Some(pages),
            ..
        } = &mut spec
        {
            pages[0].sha256 = "nope".into();
        }
        refused(spec, "\"nope\" is not named by a SHA-256");
        // Its leases say to fetch their inputs, and have none of their own.
        let work = over_pages(&[5, 5]).work(3, 8);
        assert!(matches!(
            work,
            Work::Workload {
                inputs: true,
                first_item: 3,
                items: 5,
                ..
            }
        ));
        assert_eq!(work.item_input(4), None);
        let text = crate::encode(&work);
        assert!(text.contains("\"inputs\":true"), "{text}");
        assert!(!crate::encode(&workload(0, 1, 5, 10).work(0, 5)).contains("inputs"));
    }

    #[test]
    fn job_rules_accept_the_limits_and_refuse_beyond() {
        let good = [
            JobSpec::PrimeCount {
                lo: 0,
                hi: MAX_PRIME_END,
            },
            mandelbrot(2048, 2048, MAX_ITERATIONS, 3.0),
            mandelbrot(4096, 1024, 1, 1e-12),
            sha("ostrich", 64, 0, MAX_NONCE_END, 100),
            workload(0, 1, 1, 1),
            workload(
                u64::MAX - 999_999,
                1,
                MAX_WORKLOAD_ITEMS,
                MAX_ITEM_TIME_LIMIT_MS,
            ),
            workload(u64::MAX, 7, 1, 100),
        ];
        for spec in good {
            assert!(valid_job(&spec, &()).is_ok(), "{spec:?}");
        }
        let bad = [
            JobSpec::PrimeCount { lo: 5, hi: 5 },
            mandelbrot(0, 10, 100, 3.0),
            mandelbrot(4097, 1, 100, 3.0),
            mandelbrot(4096, 2048, 100, 3.0),
            mandelbrot(10, 10, 0, 3.0),
            mandelbrot(10, 10, MAX_ITERATIONS + 1, 3.0),
            mandelbrot(10, 10, 100, 0.0),
            mandelbrot(10, 10, 100, 17.0),
            sha("", 8, 0, 10, 1),
            sha(&"x".repeat(65), 8, 0, 10, 1),
            sha("a\nb", 8, 0, 10, 1),
            sha("a", 0, 0, 10, 1),
            sha("a", 65, 0, 10, 1),
            sha("a", 8, 10, 10, 1),
            sha("a", 8, 0, MAX_NONCE_END + 1, 1),
            sha("a", 8, 0, 10, 0),
            sha("a", 8, 0, 10, 101),
            workload(0, 1, 0, 100),
            workload(0, 1, MAX_WORKLOAD_ITEMS + 1, 100),
            workload(0, 0, 10, 100),
            workload(u64::MAX - 999_998, 1, MAX_WORKLOAD_ITEMS, 100),
            workload(0, 1, 10, 0),
            workload(0, 1, 10, MAX_ITEM_TIME_LIMIT_MS + 1),
            JobSpec::Workload {
                module: "AB".repeat(32),
                start: 0,
                step: 1,
                items: 1,
                time_limit_ms: 100,
                inputs: None,
            },
        ];
        for spec in bad {
            assert!(valid_job(&spec, &()).is_err(), "{spec:?}");
        }
    }

    #[test]
    fn work_of_a_unit_range_maps_to_the_job() {
        let spec = mandelbrot(1000, 700, 500, 3.0);
        assert_eq!(spec.units(), 700);
        assert_eq!(spec.max_chunk_units(), 65);
        let Work::Mandelbrot {
            first_row, rows, ..
        } = spec.work(10, 75)
        else {
            panic!("wrong kind")
        };
        assert_eq!((first_row, rows), (10, 65));
        let spec = sha("p", 20, 1000, 5000, 3);
        assert_eq!(spec.units(), 4000);
        assert_eq!(
            spec.work(100, 200),
            Work::Sha256Search {
                prefix: "p".into(),
                difficulty_bits: 20,
                lo: 1100,
                hi: 1200,
                max_found: 3
            }
        );
        assert_eq!(mandelbrot(MAX_IMAGE_SIDE, 1, 1, 1.0).max_chunk_units(), 16);
        let spec = workload(1000, 3, 500, 100);
        assert_eq!(
            (spec.units(), spec.max_chunk_units()),
            (500, MAX_LEASE_ITEMS)
        );
        let work = spec.work(10, 20);
        assert_eq!(
            work,
            Work::Workload {
                module: "ab".repeat(32),
                start: 1000,
                step: 3,
                first_item: 10,
                items: 10,
                time_limit_ms: 100,
                inputs: false,
            }
        );
        assert_eq!(work.item_input(10), Some(1030u64.to_le_bytes()));
        assert_eq!(workload(u64::MAX, 1, 1, 1).work(0, 1).item_input(1), None);
    }

    #[test]
    fn counts_round_trip_and_bad_text_is_refused() {
        let counts = [0, 1, 255, 256, 65_535, 70_000];
        let text = encode_counts(&counts);
        assert_eq!(
            decode_counts(&text).unwrap(),
            vec![0, 1, 255, 256, 65_535, 65_535]
        );
        assert!(decode_counts("not base64!").is_err());
        assert!(decode_counts(&BASE64.encode([1u8, 2, 3])).is_err());
    }
}
