//! Identifiers, secrets and their hashes, drawn from a seeded CSPRNG.
//!
//! The glue seeds [`Rng`] from the platform's CSPRNG (`crypto.getRandomValues`); tests seed it
//! with a constant so that runs repeat exactly.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

/// ChaCha20 keyed by a 32-byte seed: a CSPRNG when the seed is secret and random.
pub struct Rng(ChaCha20Rng);

impl Rng {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(ChaCha20Rng::from_seed(seed))
    }

    /// 128 random bits as 32 lowercase hex digits (see `shared_protocol::is_id`).
    pub fn id(&mut self) -> String {
        let mut bytes = [0u8; 16];
        self.0.fill_bytes(&mut bytes);
        hex(&bytes)
    }

    /// A short invite code: [`shared_protocol::CODE_DIGITS`] Crockford base32 digits (50 bits),
    /// in canonical form.
    pub fn code(&mut self) -> String {
        (0..shared_protocol::CODE_DIGITS)
            .map(|_| shared_protocol::CODE_ALPHABET[(self.0.next_u32() & 31) as usize] as char)
            .collect()
    }

    /// A number in `0..n` (`n > 0`; the modulo bias is below 2^-40 for the small `n` used).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n.max(1)
    }

    /// 256 random bits as 43 base64url characters (see `shared_protocol::is_secret`).
    pub fn secret(&mut self) -> String {
        let mut bytes = [0u8; 32];
        self.0.fill_bytes(&mut bytes);
        base64url(&bytes)
    }
}

/// SHA-256 of a secret, hex encoded. Secrets are stored and compared only in this form.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        let symbols = chunk.len() + 1;
        for i in 0..symbols {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_protocol::{is_id, is_secret};

    #[test]
    fn ids_and_secrets_satisfy_the_protocol_rules() {
        let mut rng = Rng::from_seed([7; 32]);
        let id = rng.id();
        let secret = rng.secret();
        assert!(is_id(&id, &()).is_ok(), "{id}");
        assert!(is_secret(&secret, &()).is_ok(), "{secret}");
        assert_eq!(secret.len(), 43);
        assert_ne!(rng.id(), id, "draws differ");
        let code = rng.code();
        assert_eq!(
            shared_protocol::normalize_code(&code).as_deref(),
            Some(code.as_str())
        );
    }

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
