//! A small, dependency-free PNG encoder for 8-bit RGB images.
//!
//! Each row gets the PNG filter (None, Sub, Up, Average or Paeth) whose output has the smallest
//! sum of absolute byte values, the usual heuristic. The filtered bytes are compressed with a
//! greedy LZ77 matcher (hash chains over a 32 KiB window) and written as one deflate block with
//! the fixed Huffman codes of RFC 1951, wrapped in a zlib stream (RFC 1950) and split into
//! IDAT chunks. Fixed codes keep the encoder short; on rendered fractals, whose rows repeat a
//! lot after filtering, the result is a fraction of the raw size.

use std::fmt;
use std::num::NonZeroUsize;

/// Why [`try_encode_png`] refused an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PngError {
    /// Width or height is 0, which PNG does not allow.
    EmptyImage { width: u32, height: u32 },
    /// Width or height is above 2^31 - 1, the PNG limit.
    DimensionTooLarge { width: u32, height: u32 },
    /// The RGB buffer does not hold exactly 3 bytes per pixel.
    PixelBufferLength { expected: u64, actual: usize },
}

impl fmt::Display for PngError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyImage { width, height } => {
                write!(f, "image of {width}x{height} pixels is empty")
            }
            Self::DimensionTooLarge { width, height } => write!(
                f,
                "image of {width}x{height} pixels exceeds the png limit of 2147483647 per side"
            ),
            Self::PixelBufferLength { expected, actual } => write!(
                f,
                "pixel buffer has {actual} bytes but the image needs {expected} (3 per pixel)"
            ),
        }
    }
}

impl std::error::Error for PngError {}

/// Encodes `rgb` (row-major, 3 bytes per pixel, no padding) as a PNG file.
///
/// # Panics
///
/// Panics when the image is empty, too large for PNG, or `rgb` is not `width * height * 3`
/// bytes; [`try_encode_png`] returns these as errors instead.
// The documented panic of this convenience form, for callers whose image is right by
// construction; anything else should call the `try_` form.
#[allow(clippy::panic)]
pub fn encode_png(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    match try_encode_png(width, height, rgb) {
        Ok(png) => png,
        Err(error) => panic!("{error}"),
    }
}

/// Encodes `rgb` (row-major, 3 bytes per pixel, no padding) as a PNG file, or says why not.
pub fn try_encode_png(width: u32, height: u32, rgb: &[u8]) -> Result<Vec<u8>, PngError> {
    // A row is `stride` bytes; the buffer check below makes sure that it fits in a usize.
    let stride = NonZeroUsize::new((width as usize).saturating_mul(BYTES_PER_PIXEL));
    let Some(stride) = stride.filter(|_| height != 0) else {
        return Err(PngError::EmptyImage { width, height });
    };
    const MAX_DIMENSION: u32 = (1 << 31) - 1;
    if width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(PngError::DimensionTooLarge { width, height });
    }
    // Below 3 · 2^62: the product of two dimensions below 2^31, times 3, fits in a u64.
    let expected = u64::from(width)
        .saturating_mul(u64::from(height))
        .saturating_mul(BYTES_PER_PIXEL as u64);
    if rgb.len() as u64 != expected {
        return Err(PngError::PixelBufferLength {
            expected,
            actual: rgb.len(),
        });
    }

    let filtered = filter_rows(rgb, stride);
    let zlib = zlib_compress(&filtered);

    let mut png = Vec::with_capacity(zlib.len().saturating_add(64));
    png.extend_from_slice(&PNG_SIGNATURE);
    let mut header = Vec::with_capacity(13);
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    // Bit depth 8, colour type 2 (RGB), deflate compression, adaptive filtering, no interlace.
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    write_chunk(&mut png, b"IHDR", &header);
    for part in zlib.chunks(IDAT_CHUNK_BYTES) {
        write_chunk(&mut png, b"IDAT", part);
    }
    write_chunk(&mut png, b"IEND", &[]);
    Ok(png)
}

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1A, b'\n'];

/// Compressed bytes per IDAT chunk.
const IDAT_CHUNK_BYTES: usize = 64 * 1024;

/// Bytes per pixel of 8-bit RGB, the distance the Sub, Average and Paeth filters look back.
const BYTES_PER_PIXEL: usize = 3;

/// Appends a chunk (at most [`IDAT_CHUNK_BYTES`] of data): length, type, data, CRC.
fn write_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend_from_slice(&(data.len() as u32).to_be_bytes());
    png.extend_from_slice(kind);
    png.extend_from_slice(data);
    let crc = crc32(kind.iter().chain(data));
    png.extend_from_slice(&crc.to_be_bytes());
}

/// Each row of `stride` bytes, prefixed with its filter-type byte, filtered with the filter
/// that minimises the sum of absolute (signed) output bytes.
fn filter_rows(rgb: &[u8], stride: NonZeroUsize) -> Vec<u8> {
    let rows = rgb.chunks_exact(stride.get());
    let mut out = Vec::with_capacity(rgb.len().saturating_add(rows.len()));
    let zero_row = vec![0u8; stride.get()];
    let mut candidate = vec![0u8; stride.get()];
    let mut best = vec![0u8; stride.get()];
    let mut above = zero_row.as_slice();
    for row in rows {
        let mut best_filter = 0u8;
        let mut best_cost = u64::MAX;
        for filter in 0..5u8 {
            apply_filter(filter, row, above, &mut candidate);
            let cost: u64 = candidate
                .iter()
                .map(|&b| u64::from((b as i8).unsigned_abs()))
                .sum();
            if cost < best_cost {
                best_cost = cost;
                best_filter = filter;
                best.copy_from_slice(&candidate);
            }
        }
        out.push(best_filter);
        out.extend_from_slice(&best);
        above = row;
    }
    out
}

/// Filters `row` (with `above`, the row before it, all zeros for the first) into `out`; the
/// three have the same length.
// The filtering hot loop (zipped iterators ran 6% slower in WASM): `i` is below the common
// length, and `i - BYTES_PER_PIXEL` is only taken when `i` is at least that.
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
fn apply_filter(filter: u8, row: &[u8], above: &[u8], out: &mut [u8]) {
    for i in 0..row.len() {
        let left = if i >= BYTES_PER_PIXEL {
            row[i - BYTES_PER_PIXEL]
        } else {
            0
        };
        let up = above[i];
        let up_left = if i >= BYTES_PER_PIXEL {
            above[i - BYTES_PER_PIXEL]
        } else {
            0
        };
        let predicted = match filter {
            0 => 0,
            1 => left,
            2 => up,
            // The mean rounded down, as PNG's Average filter defines it.
            3 => left.midpoint(up),
            _ => paeth_predictor(left, up, up_left),
        };
        out[i] = row[i].wrapping_sub(predicted);
    }
}

// Bytes widened to i16: the estimate is within -255..=510 and the distances below 766.
#[allow(clippy::arithmetic_side_effects)]
fn paeth_predictor(left: u8, up: u8, up_left: u8) -> u8 {
    let estimate = i16::from(left) + i16::from(up) - i16::from(up_left);
    let distance_left = (estimate - i16::from(left)).abs();
    let distance_up = (estimate - i16::from(up)).abs();
    let distance_up_left = (estimate - i16::from(up_left)).abs();
    if distance_left <= distance_up && distance_left <= distance_up_left {
        left
    } else if distance_up <= distance_up_left {
        up
    } else {
        up_left
    }
}

/// A zlib stream (RFC 1950): header, one fixed-Huffman deflate block, Adler-32 of the input.
fn zlib_compress(data: &[u8]) -> Vec<u8> {
    // CMF 0x78: deflate with a 32 KiB window; FLG 0x01 makes the header a multiple of 31.
    let mut out = vec![0x78, 0x01];
    out.extend_from_slice(&deflate_fixed_huffman(data));
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

/// Writes bits least-significant first, as deflate packs them.
struct BitWriter {
    bytes: Vec<u8>,
    pending: u64,
    pending_bits: u32,
}

impl BitWriter {
    fn new(capacity: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(capacity),
            pending: 0,
            pending_bits: 0,
        }
    }

    /// Writes the low `count` bits of `value` (at most 32), least significant first.
    // Fewer than 8 bits are pending between calls, so at most 39 after adding `count`: the
    // shift stays within the u64 and the count neither overflows nor goes below 0.
    #[allow(clippy::arithmetic_side_effects)]
    fn write_bits(&mut self, value: u32, count: u32) {
        self.pending |= u64::from(value) << self.pending_bits;
        self.pending_bits += count;
        while self.pending_bits >= 8 {
            self.bytes.push(self.pending as u8);
            self.pending >>= 8;
            self.pending_bits -= 8;
        }
    }

    /// Writes a Huffman code of `length` bits (1 to 32), which deflate stores most significant
    /// bit first.
    fn write_code(&mut self, code: u32, length: u32) {
        let reversed = code
            .reverse_bits()
            .checked_shr(32_u32.saturating_sub(length));
        self.write_bits(reversed.unwrap_or(0), length);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.pending_bits > 0 {
            self.bytes.push(self.pending as u8);
        }
        self.bytes
    }
}

/// The fixed Huffman code (code, length in bits) of literal/length symbol 0..=287.
// Each arm subtracts at most the first symbol of its own range, and symbols are below 288.
#[allow(clippy::arithmetic_side_effects)]
fn fixed_literal_length_code(symbol: u32) -> (u32, u32) {
    match symbol {
        0..=143 => (0x30 + symbol, 8),
        144..=255 => (0x190 + (symbol - 144), 9),
        256..=279 => (symbol - 256, 7),
        _ => (0xC0 + (symbol - 280), 8),
    }
}

const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA_BITS: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DISTANCE_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DISTANCE_EXTRA_BITS: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

const MIN_MATCH: usize = 3;
const MAX_MATCH: usize = 258;
/// Matches reach back less than this many bytes (deflate allows up to 32,768).
const WINDOW: usize = 32 * 1024;
const HASH_BITS: u32 = 15;
/// How many earlier positions with the same hash are tried per position.
const MAX_CHAIN: usize = 32;
const NO_POSITION: usize = usize::MAX;

/// A multiplicative hash of the 3 bytes at `position` of `data` (the product wraps by design),
/// below `1 << HASH_BITS`; `None` when fewer than 3 bytes are left.
fn hash_three_bytes(data: &[u8], position: usize) -> Option<usize> {
    let &[a, b, c] = data.get(position..)?.first_chunk::<MIN_MATCH>()?;
    let value = u32::from(a) << 16 | u32::from(b) << 8 | u32::from(c);
    Some((value.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize)
}

/// `data` as a single final deflate block with fixed Huffman codes (RFC 1951, BTYPE = 01).
// The matcher's hot loop. Hashes are below the `head` table's 2^15 entries and `previous` is
// indexed modulo its length; a candidate is an earlier position, so `position - candidate` is
// positive; and both compared runs end at `position + longest_possible <= data.len()`.
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
fn deflate_fixed_huffman(data: &[u8]) -> Vec<u8> {
    let mut writer = BitWriter::new(data.len() / 4 + 16);
    writer.write_bits(1, 1); // BFINAL
    writer.write_bits(1, 2); // BTYPE = fixed Huffman

    let mut head = vec![NO_POSITION; 1 << HASH_BITS];
    let mut previous = vec![NO_POSITION; WINDOW];
    let insert = |position: usize, head: &mut [usize], previous: &mut [usize]| {
        if let Some(hash) = hash_three_bytes(data, position) {
            previous[position % WINDOW] = head[hash];
            head[hash] = position;
        }
    };

    let mut position = 0;
    while position < data.len() {
        let mut best_length = 0;
        let mut best_distance = 0;
        if let Some(hash) = hash_three_bytes(data, position) {
            let longest_possible = MAX_MATCH.min(data.len() - position);
            let mut candidate = head[hash];
            let mut tries = 0;
            while candidate != NO_POSITION && tries < MAX_CHAIN {
                let distance = position - candidate;
                if distance >= WINDOW {
                    break;
                }
                let length = data[candidate..candidate + longest_possible]
                    .iter()
                    .zip(&data[position..position + longest_possible])
                    .take_while(|(a, b)| a == b)
                    .count();
                if length > best_length {
                    best_length = length;
                    best_distance = distance;
                    if length == longest_possible {
                        break;
                    }
                }
                candidate = previous[candidate % WINDOW];
                tries += 1;
            }
        }

        if best_length >= MIN_MATCH {
            write_match(&mut writer, best_length, best_distance);
            for covered in position..position + best_length {
                insert(covered, &mut head, &mut previous);
            }
            position += best_length;
        } else {
            let (code, length) = fixed_literal_length_code(u32::from(data[position]));
            writer.write_code(code, length);
            insert(position, &mut head, &mut previous);
            position += 1;
        }
    }

    let (code, length) = fixed_literal_length_code(256); // end of block
    writer.write_code(code, length);
    writer.finish()
}

/// Writes a match of `length` (3 to 258) bytes `distance` (1 to 32,768) bytes back.
// The tables' first bases are 3 and 1, so each `partition_point` is at least 1 and the index
// it gives is within its table, and the extra value is not negative.
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
fn write_match(writer: &mut BitWriter, length: usize, distance: usize) {
    let length_index = LENGTH_BASE.partition_point(|&base| usize::from(base) <= length) - 1;
    let (code, code_length) = fixed_literal_length_code(257 + length_index as u32);
    writer.write_code(code, code_length);
    writer.write_bits(
        (length - usize::from(LENGTH_BASE[length_index])) as u32,
        u32::from(LENGTH_EXTRA_BITS[length_index]),
    );

    let distance_index = DISTANCE_BASE.partition_point(|&base| usize::from(base) <= distance) - 1;
    writer.write_code(distance_index as u32, 5);
    writer.write_bits(
        (distance - usize::from(DISTANCE_BASE[distance_index])) as u32,
        u32::from(DISTANCE_EXTRA_BITS[distance_index]),
    );
}

/// CRC-32 (ISO-HDLC, as PNG uses it), table-driven.
// The index is masked to 8 bits, and the table has 256 entries.
#[allow(clippy::indexing_slicing)]
fn crc32<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> u32 {
    // `fold` rather than a loop, so that a chain of slices runs as one plain loop per slice.
    let crc = bytes.into_iter().fold(u32::MAX, |crc, &byte| {
        CRC32_TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8)
    });
    !crc
}

const CRC32_TABLE: [u32; 256] = build_crc32_table();

// Evaluated at compile time for CRC32_TABLE: an overflow or a bad index would fail the build,
// never a run.
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
const fn build_crc32_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut index = 0;
    while index < 256 {
        let mut value = index as u32;
        let mut bit = 0;
        while bit < 8 {
            value = if value & 1 == 1 {
                0xEDB8_8320 ^ (value >> 1)
            } else {
                value >> 1
            };
            bit += 1;
        }
        table[index] = value;
        index += 1;
    }
    table
}

/// Adler-32 (RFC 1950).
// The sums are reduced after every RUN bytes, before they could overflow (zlib's NMAX).
#[allow(clippy::arithmetic_side_effects)]
fn adler32(bytes: &[u8]) -> u32 {
    const MODULUS: u32 = 65_521;
    // The largest run of bytes whose sums cannot overflow u32 before reducing.
    const RUN: usize = 5_552;
    let (mut low, mut high) = (1u32, 0u32);
    for run in bytes.chunks(RUN) {
        for &byte in run {
            low += u32::from(byte);
            high += low;
        }
        low %= MODULUS;
        high %= MODULUS;
    }
    high << 16 | low
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mandelbrot::{colorize, render_tile, Tile, View};

    /// CRC-32 computed bit by bit, independently of the table-driven version.
    fn crc32_bitwise(bytes: &[u8]) -> u32 {
        let mut crc = u32::MAX;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                let mask = (crc & 1).wrapping_neg();
                crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
            }
        }
        !crc
    }

    fn decode_with_png_crate(bytes: &[u8]) -> (png::OutputInfo, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().expect("png header should parse");
        let mut pixels = vec![0; reader.output_buffer_size().expect("size should fit")];
        let info = reader.next_frame(&mut pixels).expect("png should decode");
        pixels.truncate(info.buffer_size());
        (info, pixels)
    }

    /// Checks the signature, walks the chunks checking each CRC, and returns the chunk types.
    fn chunk_types_after_checking_crcs(bytes: &[u8]) -> Vec<String> {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let mut types = Vec::new();
        let mut offset = 8;
        while offset < bytes.len() {
            let length = u32::from_be_bytes(bytes[offset..offset + 4].try_into().unwrap());
            let body = &bytes[offset + 4..offset + 8 + length as usize];
            let stored_crc = u32::from_be_bytes(
                bytes[offset + 8 + length as usize..offset + 12 + length as usize]
                    .try_into()
                    .unwrap(),
            );
            assert_eq!(crc32_bitwise(body), stored_crc, "chunk at offset {offset}");
            types.push(String::from_utf8(body[..4].to_vec()).unwrap());
            offset += 12 + length as usize;
        }
        assert_eq!(offset, bytes.len());
        types
    }

    /// Deterministic bytes with no structure, to exercise the literal path.
    fn noise(len: usize, mut state: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    fn assert_round_trip(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
        let encoded = encode_png(width, height, rgb);
        let types = chunk_types_after_checking_crcs(&encoded);
        assert_eq!(types.first().map(String::as_str), Some("IHDR"));
        assert_eq!(types.last().map(String::as_str), Some("IEND"));
        assert!(types[1..types.len() - 1].iter().all(|t| t == "IDAT"));
        let (info, pixels) = decode_with_png_crate(&encoded);
        assert_eq!((info.width, info.height), (width, height));
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        assert_eq!(pixels, rgb, "{width}x{height}");
        encoded
    }

    #[test]
    fn crc32_and_adler32_check_values() {
        // Published check values: CRC-32/ISO-HDLC of "123456789", the CRC every PNG's IEND
        // chunk carries, and the well-known worked Adler-32 example of "Wikipedia".
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        assert_eq!(adler32(b""), 1);
        // Long input crosses the reduction runs: compare against a per-byte reduction.
        let long = vec![0xFFu8; 100_000];
        let (mut low, mut high) = (1u64, 0u64);
        for &byte in &long {
            low = (low + u64::from(byte)) % 65_521;
            high = (high + low) % 65_521;
        }
        assert_eq!(adler32(&long), (high << 16 | low) as u32);
        assert_eq!(crc32(&long), crc32_bitwise(&long));
    }

    #[test]
    fn round_trips_small_images() {
        assert_round_trip(1, 1, &[255, 0, 128]);
        assert_round_trip(
            3,
            2,
            &[
                1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
            ],
        );
        assert_round_trip(1, 300, &noise(900, 7));
        assert_round_trip(300, 1, &vec![42; 900]);
    }

    #[test]
    fn round_trips_noise_and_gradients() {
        assert_round_trip(97, 41, &noise(97 * 41 * 3, 0x1234_5678_9ABC_DEF1));
        let gradient: Vec<u8> = (0..120u32 * 80)
            .flat_map(|i| {
                let (x, y) = (i % 120, i / 120);
                [(x * 2) as u8, (y * 3) as u8, ((x + y) % 256) as u8]
            })
            .collect();
        assert_round_trip(120, 80, &gradient);
    }

    #[test]
    fn round_trips_a_rendered_fractal_and_compresses_it() {
        let view = View {
            center_re: -0.5,
            center_im: 0.0,
            scale: 3.0,
            width: 320,
            height: 240,
            max_iter: 200,
        };
        let counts = render_tile(
            &view,
            &Tile {
                x: 0,
                y: 0,
                width: view.width,
                height: view.height,
            },
        );
        let rgb = colorize(&counts, view.max_iter);
        let encoded = assert_round_trip(view.width, view.height, &rgb);
        assert!(
            encoded.len() < rgb.len() / 4,
            "{} bytes for {} raw",
            encoded.len(),
            rgb.len()
        );
    }

    #[test]
    fn large_image_spans_several_idat_chunks() {
        let rgb = noise(400 * 300 * 3, 99);
        let encoded = assert_round_trip(400, 300, &rgb);
        let idat_count = chunk_types_after_checking_crcs(&encoded)
            .iter()
            .filter(|t| *t == "IDAT")
            .count();
        assert!(idat_count > 1);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            try_encode_png(0, 5, &[]),
            Err(PngError::EmptyImage {
                width: 0,
                height: 5
            })
        );
        assert_eq!(
            try_encode_png(2, 2, &[0; 11]),
            Err(PngError::PixelBufferLength {
                expected: 12,
                actual: 11
            })
        );
        assert_eq!(
            try_encode_png(1 << 31, 1, &[]),
            Err(PngError::DimensionTooLarge {
                width: 1 << 31,
                height: 1
            })
        );
        assert_eq!(
            PngError::PixelBufferLength {
                expected: 12,
                actual: 11
            }
            .to_string(),
            "pixel buffer has 11 bytes but the image needs 12 (3 per pixel)"
        );
    }

    #[test]
    #[should_panic(expected = "is empty")]
    fn encode_png_panics_on_an_empty_image() {
        encode_png(4, 0, &[]);
    }
}
