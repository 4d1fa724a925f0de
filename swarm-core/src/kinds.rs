//! What differs between job kinds: the rate a reference core reaches, how a returned result is
//! checked and merged, and how a Mandelbrot job becomes a PNG (whole, or band by band).
//!
//! Device speeds are kept as a factor of a *reference core*: 1.0 is a core that counts the
//! benchmark's primes at [`kernels::bench::BENCH_REFERENCE_RATE`] numbers per millisecond (a
//! current desktop core natively is about 1.2). A device's first chunk of any job is sized from its factor
//! times the kind's reference rate ([`reference_rate`]); after that, the scheduler follows the
//! rate observed on real chunks.

use base64::Engine as _;
use kernels::mandelbrot::{colorize, pixel_escape_count, try_encode_png, View};
use shared_protocol::{decode_counts, ImageBand, ImageBands, JobResult, JobSpec, WorkResult};

use crate::secrets::Rng;
use crate::verify::Digest;
use sha2::{Digest as _, Sha256};

/// Speed factors (per worker) are kept within these bounds, so a wild benchmark cannot size a
/// chunk absurdly: no core today is several times a desktop core. The floor only keeps the
/// arithmetic sane (a chunk's duration has its own floor in the device's results rate): a
/// benchmark slower than it sizes the device's first chunks as if it were that fast, too large
/// by the ratio, and they are lost to missed deadlines until the rate has halved down to the
/// truth. At 1/256 of a reference core that cost devices of 200 numbers/ms per core (the load
/// benchmark's) 39 times a chunk's time; this floor, 30.5 numbers/ms, is below any device the
/// load benchmark simulates.
pub const MIN_SPEED: f64 = 1.0 / 65_536.0;
pub const MAX_SPEED: f64 = 8.0;

/// Pixels of a Mandelbrot band the coordinator recomputes to check it.
const SAMPLED_PIXELS: usize = 4;

/// The colour of rows not computed yet in a partial image.
const PENDING_GREY: u8 = 48;

/// Units per millisecond per worker of a reference core on this job, deliberately on the low
/// side: a first chunk sized too small costs one round trip, one sized too large misses its
/// deadline.
pub fn reference_rate(spec: &JobSpec) -> f64 {
    match spec {
        // The sieve slows slowly as numbers grow (more base primes per segment).
        JobSpec::PrimeCount { hi, .. } => {
            if *hi <= 1 << 40 {
                1_000_000.0
            } else {
                400_000.0
            }
        }
        // Rows per ms: about 5,000 pixels per ms at 1,000 iterations on the boundary, fewer
        // as the iteration limit grows.
        JobSpec::Mandelbrot {
            width, max_iter, ..
        } => {
            let pixels_per_ms = 5_000.0 * 1_000.0 / f64::from((*max_iter).max(1_000));
            pixels_per_ms / f64::from(*width)
        }
        // Hashes per ms (two compressions per nonce for short prefixes).
        JobSpec::Sha256Search { .. } => 1_500.0,
        // Items per ms: nothing is known of a module before it runs, so the first lease is
        // small (a few items for a slow phone) and the rate adapts from its result.
        JobSpec::Workload { .. } => 0.1,
    }
}

/// The speed factor a benchmark of `units` numbers in `compute_ms` shows, within bounds.
pub fn bench_speed(units: u64, compute_ms: u64) -> f64 {
    kernels::bench::speed_factor(units, compute_ms).clamp(MIN_SPEED, MAX_SPEED)
}

/// A result that passed its check, ready to merge.
#[derive(Debug)]
pub struct Checked {
    pub result: WorkResult,
    /// Mandelbrot escape counts of the band (2 little-endian bytes each), to store; the band
    /// starts at the part's first unit (a Mandelbrot job's units are rows).
    pub pixels: Option<Vec<u8>>,
    /// Mandelbrot pixels of the band inside the set.
    pub inside: u64,
}

/// Checks a device's result for units `[from, to)` of a job, as far as the kind allows: a
/// Mandelbrot band must have one count per pixel, none above the limit, and a few pixels
/// recomputed here must agree; every SHA-256 nonce must lie in the range, be listed once in
/// order, and meet the target (one hash each). Prime counts cannot be checked cheaply; they
/// are only bounded by the range's size.
pub fn check(
    spec: &JobSpec,
    from: u64,
    to: u64,
    result: WorkResult,
    rng: &mut Rng,
) -> Result<Checked, String> {
    match (spec, result) {
        (JobSpec::PrimeCount { .. }, WorkResult::PrimeCount { count }) => {
            let size = to.saturating_sub(from);
            if count > size {
                return Err(format!("{count} primes cannot fit in {size} numbers"));
            }
            Ok(Checked {
                result: WorkResult::PrimeCount { count },
                pixels: None,
                inside: 0,
            })
        }
        (
            JobSpec::Mandelbrot {
                center_re,
                center_im,
                scale,
                width,
                height,
                max_iter,
            },
            WorkResult::Mandelbrot { counts },
        ) => {
            let decoded = decode_counts(&counts)?;
            let expected = u64::from(*width).saturating_mul(to.saturating_sub(from));
            if decoded.len() as u64 != expected {
                return Err(format!(
                    "{} counts for a band of {expected} pixels",
                    decoded.len()
                ));
            }
            if let Some(bad) = decoded.iter().find(|&&c| u32::from(c) > *max_iter) {
                return Err(format!("count {bad} is above max_iter {max_iter}"));
            }
            let view = View {
                center_re: *center_re,
                center_im: *center_im,
                scale: *scale,
                width: *width,
                height: *height,
                max_iter: *max_iter,
            };
            let columns = u64::from(*width);
            for _ in 0..SAMPLED_PIXELS {
                let at = rng.below(expected);
                // `at < expected`, which is the number of counts; only an empty band (nothing to
                // sample) has none.
                let Some(&count) = usize::try_from(at).ok().and_then(|at| decoded.get(at)) else {
                    break;
                };
                let px = u32::try_from(at.checked_rem(columns).unwrap_or(0)).unwrap_or(u32::MAX);
                let row = from.saturating_add(at.checked_div(columns).unwrap_or(0));
                let py = u32::try_from(row).unwrap_or(u32::MAX);
                let truth = pixel_escape_count(&view, px, py);
                if u32::from(count) != truth {
                    return Err(format!(
                        "pixel ({px}, {py}) has count {count} but is {truth}"
                    ));
                }
            }
            let inside = decoded
                .iter()
                .filter(|&&c| u32::from(c) == *max_iter)
                .count() as u64;
            let bytes = decoded.iter().flat_map(|c| c.to_le_bytes()).collect();
            Ok(Checked {
                result: WorkResult::Mandelbrot {
                    counts: String::new(),
                },
                pixels: Some(bytes),
                inside,
            })
        }
        (
            JobSpec::Sha256Search {
                prefix,
                difficulty_bits,
                lo,
                want,
                ..
            },
            WorkResult::Sha256Search { nonces },
        ) => {
            let (first, end) = (lo.saturating_add(from), lo.saturating_add(to));
            if nonces.len() > *want as usize {
                return Err(format!(
                    "{} nonces where at most {want} were asked",
                    nonces.len()
                ));
            }
            if nonces
                .windows(2)
                .any(|pair| matches!(pair, [a, b] if a >= b))
            {
                return Err("nonces must be increasing".into());
            }
            for &nonce in &nonces {
                if !(first..end).contains(&nonce) {
                    return Err(format!("nonce {nonce} is outside [{first}, {end})"));
                }
                if !kernels::sha256::meets_target(prefix.as_bytes(), nonce, *difficulty_bits) {
                    return Err(format!("nonce {nonce} does not meet the target"));
                }
            }
            Ok(Checked {
                result: WorkResult::Sha256Search { nonces },
                pixels: None,
                inside: 0,
            })
        }
        // The outputs themselves were checked against the lease when they were uploaded
        // (`workload::outputs::decode`); here only their name and count.
        // The receipt was checked before (it needs the swarm's key); it is not kept.
        (
            JobSpec::Workload { .. },
            WorkResult::Workload {
                outputs,
                failed,
                unsettled,
                ..
            },
        ) => {
            let items = to.saturating_sub(from);
            if shared_protocol::is_sha256(&outputs, &()).is_err() {
                return Err("outputs must be the SHA-256 of the uploaded outputs file".into());
            }
            if failed > items {
                return Err(format!("{failed} failed items in a lease of {items}"));
            }
            if unsettled > failed {
                return Err(format!(
                    "{unsettled} items failed on this device, but only {failed} failed"
                ));
            }
            Ok(Checked {
                result: WorkResult::Workload {
                    outputs,
                    failed,
                    unsettled,
                    receipt: String::new(),
                },
                pixels: None,
                inside: 0,
            })
        }
        (_, _) => Err("the result is of another kind than the job".into()),
    }
}

/// Whether a result holds a failure that depends on the device it was computed on (an own
/// workload's item out of time or stack there): see [`crate::verify::Answer`].
pub fn unsettled(result: &WorkResult) -> bool {
    matches!(result, WorkResult::Workload { unsettled, .. } if *unsettled > 0)
}

/// The canonical digest of a checked result, which replicas of the same range must match: the
/// count, every pixel of a band, or the full nonce list (an empty one included).
pub fn digest(part: &Checked) -> Digest {
    let mut hash = Sha256::new();
    match &part.result {
        WorkResult::PrimeCount { count } => {
            hash.update(b"prime_count\0");
            hash.update(count.to_le_bytes());
        }
        WorkResult::Mandelbrot { .. } => {
            hash.update(b"mandelbrot\0");
            hash.update(part.pixels.as_deref().unwrap_or_default());
        }
        WorkResult::Sha256Search { nonces } => {
            hash.update(b"sha256_search\0");
            hash.update((nonces.len() as u64).to_le_bytes());
            for nonce in nonces {
                hash.update(nonce.to_le_bytes());
            }
        }
        // The file's name is its SHA-256 and it holds every outcome, failures included.
        WorkResult::Workload {
            outputs, failed, ..
        } => {
            hash.update(b"workload\0");
            hash.update(outputs.as_bytes());
            hash.update(failed.to_le_bytes());
        }
    }
    hash.finalize().into()
}

/// The result of a job nothing has been merged into.
pub fn empty_result(spec: &JobSpec) -> JobResult {
    match spec {
        JobSpec::PrimeCount { .. } => JobResult::PrimeCount { count: 0 },
        JobSpec::Mandelbrot { .. } => JobResult::Mandelbrot { inside_pixels: 0 },
        JobSpec::Sha256Search { .. } => JobResult::Sha256Search { nonces: Vec::new() },
        JobSpec::Workload { .. } => JobResult::Workload { failed: 0 },
    }
}

/// Adds a checked part to a job's result.
pub fn merge(total: &mut JobResult, part: &Checked) {
    match (total, &part.result) {
        (JobResult::PrimeCount { count }, WorkResult::PrimeCount { count: more }) => {
            *count = count.saturating_add(*more);
        }
        (JobResult::Mandelbrot { inside_pixels }, WorkResult::Mandelbrot { .. }) => {
            *inside_pixels = inside_pixels.saturating_add(part.inside);
        }
        // Every part's nonces are kept while the job runs (a part taken out later must not
        // take others' nonces with it); `finish` keeps the smallest `want`.
        (JobResult::Sha256Search { nonces }, WorkResult::Sha256Search { nonces: more }) => {
            nonces.extend_from_slice(more);
            nonces.sort_unstable();
            nonces.dedup();
        }
        (JobResult::Workload { failed }, WorkResult::Workload { failed: more, .. }) => {
            *failed = failed.saturating_add(*more);
        }
        _ => {}
    }
}

/// Takes a part merged earlier back out of a job's result (its device was quarantined).
pub fn unmerge(total: &mut JobResult, part: &Checked) {
    match (total, &part.result) {
        (JobResult::PrimeCount { count }, WorkResult::PrimeCount { count: less }) => {
            *count = count.saturating_sub(*less);
        }
        (JobResult::Mandelbrot { inside_pixels }, WorkResult::Mandelbrot { .. }) => {
            *inside_pixels = inside_pixels.saturating_sub(part.inside);
        }
        (JobResult::Sha256Search { nonces }, WorkResult::Sha256Search { nonces: less }) => {
            nonces.retain(|n| !less.contains(n));
        }
        (JobResult::Workload { failed }, WorkResult::Workload { failed: less, .. }) => {
            *failed = failed.saturating_sub(*less);
        }
        _ => {}
    }
}

/// Whether a job's result is final before all its units are done: a SHA-256 search that has
/// found `want` nonces and searched every unit up to the `want`-th smallest of them, so no
/// undone unit could hold a smaller one. The result is then the `want` smallest qualifying
/// nonces of the range, whatever order the chunks finished in. `done` are the done unit
/// ranges, sorted and merged.
pub fn satisfied(spec: &JobSpec, result: &JobResult, done: &[(u64, u64)]) -> bool {
    match (spec, result) {
        (JobSpec::Sha256Search { want, lo, .. }, JobResult::Sha256Search { nonces }) => {
            let Some(last) = nonces.get((*want as usize).saturating_sub(1)) else {
                return false;
            };
            let unit = last.saturating_sub(*lo);
            matches!(done.first(), Some(&(0, end)) if end > unit)
        }
        _ => false,
    }
}

/// A finished job's result as the protocol defines it: a SHA-256 search keeps its `want`
/// smallest nonces.
pub fn finish(spec: &JobSpec, result: &mut JobResult) {
    if let (JobSpec::Sha256Search { want, .. }, JobResult::Sha256Search { nonces }) = (spec, result)
    {
        nonces.truncate(*want as usize);
    }
}

pub fn describe(spec: &JobSpec) -> String {
    match spec {
        JobSpec::PrimeCount { lo, hi } => format!("count primes in [{lo}, {hi})"),
        JobSpec::Mandelbrot {
            width,
            height,
            max_iter,
            ..
        } => format!("Mandelbrot {width}×{height} at {max_iter} iterations"),
        JobSpec::Sha256Search {
            difficulty_bits,
            lo,
            hi,
            want,
            ..
        } => format!("find {want} nonce(s) with {difficulty_bits} zero bits in [{lo}, {hi})"),
        JobSpec::Workload { module, items, .. } => {
            format!(
                "run module {} on {items} item(s)",
                module.get(..12).unwrap_or(module)
            )
        }
    }
}

pub fn describe_result(result: &JobResult) -> String {
    match result {
        JobResult::PrimeCount { count } => format!("{count} primes"),
        JobResult::Mandelbrot { inside_pixels } => format!("{inside_pixels} pixels inside"),
        JobResult::Sha256Search { nonces } => format!("{} nonce(s) found", nonces.len()),
        JobResult::Workload { failed } => format!("{failed} item(s) failed"),
    }
}

/// The PNG of a Mandelbrot job from its stored bands (first row, 2 bytes per count); rows no
/// band covers yet are grey. `None` for other kinds.
pub fn render_png(spec: &JobSpec, bands: &[(u32, Vec<u8>)]) -> Option<Vec<u8>> {
    let JobSpec::Mandelbrot { height, .. } = spec else {
        return None;
    };
    render_rows(spec, 0, *height, bands)
}

/// The PNG of one stored band alone (as wide as the image, as tall as the band), for a
/// client that draws the image band by band: `(rows, png)`. `None` for other kinds, or a band
/// that holds no whole row.
pub fn render_band_png(spec: &JobSpec, first_row: u32, counts: &[u8]) -> Option<(u32, Vec<u8>)> {
    let JobSpec::Mandelbrot { width, height, .. } = spec else {
        return None;
    };
    let row_bytes = (*width as usize).saturating_mul(2);
    let rows = counts.len().checked_div(row_bytes)?;
    let rows = u32::try_from(rows)
        .ok()?
        .min(height.saturating_sub(first_row));
    if rows == 0 {
        return None;
    }
    let band = [(first_row, counts.to_vec())];
    Some((rows, render_rows(spec, first_row, rows, &band)?))
}

/// Bands in one answer of the bands endpoint, at most.
pub const BANDS_PER_ANSWER: usize = 64;

/// PNG bytes in one answer of the bands endpoint, about at most (a band's PNG is at most about
/// 200 KB: 65,536 pixels of 3 bytes, compressed).
const BAND_BYTES_PER_ANSWER: usize = 1 << 20;

/// The answer of the bands endpoint from the bands stored after `after`: `(sequence, first
/// row, counts)` in sequence order, at most [`BANDS_PER_ANSWER`] + 1 of them (one more tells
/// that there are more). A band stored without counts was taken back (`png: null`).
pub fn image_bands(spec: &JobSpec, after: u64, stored: &[(u64, u32, Vec<u8>)]) -> ImageBands {
    let mut answer = ImageBands {
        next: after,
        more: false,
        bands: Vec::new(),
    };
    let mut bytes = 0usize;
    for (seq, first_row, counts) in stored {
        if answer.bands.len() >= BANDS_PER_ANSWER || bytes >= BAND_BYTES_PER_ANSWER {
            answer.more = true;
            break;
        }
        let png = render_band_png(spec, *first_row, counts).map(|(_, png)| png);
        bytes = bytes.saturating_add(png.as_ref().map_or(0, Vec::len));
        answer.bands.push(ImageBand {
            first_row: *first_row,
            png: png.map(|png| base64::engine::general_purpose::STANDARD.encode(png)),
        });
        answer.next = answer.next.max(*seq);
    }
    answer
}

/// The PNG of rows `top .. top + rows` of a Mandelbrot job with these bands (none above
/// `top`) drawn in.
fn render_rows(spec: &JobSpec, top: u32, rows: u32, bands: &[(u32, Vec<u8>)]) -> Option<Vec<u8>> {
    let JobSpec::Mandelbrot {
        width, max_iter, ..
    } = spec
    else {
        return None;
    };
    let width = *width as usize;
    let mut rgb = vec![PENDING_GREY; width.saturating_mul(rows as usize).saturating_mul(3)];
    for (first_row, bytes) in bands {
        let counts: Vec<u32> = bytes
            .chunks_exact(2)
            .filter_map(|pair| <[u8; 2]>::try_from(pair).ok())
            .map(|pair| u32::from(u16::from_le_bytes(pair)))
            .collect();
        // Bands start at or below `top` (the whole image, or the band itself).
        let start = (first_row.saturating_sub(top) as usize)
            .saturating_mul(width)
            .saturating_mul(3);
        let colours = colorize(&counts, *max_iter);
        // A band reaching past the last row is cut off there.
        if let Some(rest) = rgb.get_mut(start..) {
            for (dst, src) in rest.iter_mut().zip(&colours) {
                *dst = *src;
            }
        }
    }
    // The spec's sides are validated (at most 4096), so the encoder accepts them; should it
    // not, there is no image rather than a panic.
    try_encode_png(width as u32, rows, &rgb).ok()
}

#[cfg(test)]
mod speed_tests {
    use super::*;

    #[test]
    fn a_slow_benchmark_counts_at_its_measured_speed_and_only_a_wild_one_is_bounded() {
        // 2^22 numbers in 104,858 ms: 40 numbers/ms per core, the load benchmark's slowest
        // device. Counted at the old floor (1/256) its first chunks were 195 times too large.
        let slow = bench_speed(1 << 22, 104_858);
        assert_eq!(slow, kernels::bench::speed_factor(1 << 22, 104_858));
        assert!((slow * kernels::bench::BENCH_REFERENCE_RATE - 40.0).abs() < 0.01);
        assert_eq!(bench_speed(1, 1_000_000_000), MIN_SPEED);
        assert_eq!(bench_speed(u64::MAX, 1), MAX_SPEED);
    }
}
