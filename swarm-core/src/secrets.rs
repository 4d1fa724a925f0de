//! Identifiers, secrets and their hashes, drawn from a seeded CSPRNG.
//!
//! The glue seeds [`Rng`] from the platform's CSPRNG (`crypto.getRandomValues`); tests seed it
//! with a constant so that runs repeat exactly.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
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
        // The mask keeps every index inside the 32-letter alphabet, so `get` never misses.
        (0..shared_protocol::CODE_DIGITS)
            .filter_map(|_| {
                let index = (self.0.next_u32() & 31) as usize;
                shared_protocol::CODE_ALPHABET
                    .get(index)
                    .copied()
                    .map(char::from)
            })
            .collect()
    }

    /// A number in `0..n` (`n > 0`; the modulo bias is below 2^-40 for the small `n` used).
    pub fn below(&mut self, n: u64) -> u64 {
        // `n == 0` is treated as `n == 1`: the answer is 0 (a draw is still consumed).
        self.0.next_u64().checked_rem(n).unwrap_or(0)
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

type HmacSha256 = hmac::Hmac<Sha256>;

/// Bytes of the HMAC-SHA256 tag a lease ticket keeps.
const TICKET_TAG: usize = 16;

/// An HMAC-SHA256 under `key` over length-prefixed `parts` (the first names what it is for)
/// and a unit range `[lo, hi)`.
fn mac_over<const N: usize>(key: &str, parts: [&[u8]; N], lo: u64, hi: u64) -> Option<HmacSha256> {
    use hmac::Mac as _;
    let mut mac = HmacSha256::new_from_slice(key.as_bytes()).ok()?;
    for part in parts {
        mac.update(&(part.len() as u64).to_le_bytes());
        mac.update(part);
    }
    mac.update(&lo.to_le_bytes());
    mac.update(&hi.to_le_bytes());
    Some(mac)
}

/// The MAC over what a ticket vouches for: this job's units `[lo, hi)`, leased to this device.
fn ticket_mac(key: &str, job_id: &str, device_id: &str, lo: u64, hi: u64) -> Option<HmacSha256> {
    let parts = [
        b"ostrich lease ticket 1".as_slice(),
        job_id.as_bytes(),
        device_id.as_bytes(),
    ];
    mac_over(key, parts, lo, hi)
}

/// A lease's ticket: its units and a MAC of them, the job and the device under the swarm's
/// lease key, as 43 base64url characters. A device sends it back with a result it sends again
/// after the coordinator forgot the lease (a restart), and [`check_ticket`] tells that the
/// coordinator issued exactly this work to exactly this device.
pub(crate) fn lease_ticket(key: &str, job_id: &str, device_id: &str, lo: u64, hi: u64) -> String {
    use hmac::Mac as _;
    let mut bytes = Vec::with_capacity(16 + TICKET_TAG);
    bytes.extend_from_slice(&lo.to_le_bytes());
    bytes.extend_from_slice(&hi.to_le_bytes());
    if let Some(mac) = ticket_mac(key, job_id, device_id, lo, hi) {
        bytes.extend_from_slice(mac.finalize().into_bytes().get(..TICKET_TAG).unwrap_or(&[]));
    }
    base64url(&bytes)
}

/// The units `[lo, hi)` a ticket vouches for, if it is one this key issued for this job and
/// device (the tag is compared in constant time).
pub(crate) fn check_ticket(
    key: &str,
    job_id: &str,
    device_id: &str,
    ticket: &str,
) -> Option<(u64, u64)> {
    use hmac::Mac as _;
    let bytes = URL_SAFE_NO_PAD.decode(ticket).ok()?;
    if bytes.len() != 16 + TICKET_TAG || key.is_empty() {
        return None;
    }
    let lo = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let hi = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    let mac = ticket_mac(key, job_id, device_id, lo, hi)?;
    mac.verify_truncated_left(bytes.get(16..)?).ok()?;
    Some((lo, hi))
}

/// The MAC over a stored outputs file's name and count of unsettled items, its job and the
/// run's items `[lo, hi)`.
fn receipt_mac(
    key: &str,
    job_id: &str,
    lo: u64,
    hi: u64,
    file: StoredOutputs,
) -> Option<HmacSha256> {
    let unsettled = file.unsettled.to_le_bytes();
    let parts = [
        b"ostrich outputs receipt 2".as_slice(),
        job_id.as_bytes(),
        file.name.as_bytes(),
        unsettled.as_slice(),
    ];
    mac_over(key, parts, lo, hi)
}

/// An outputs file as the coordinator read it when it stored it: its name (SHA-256, hex) and
/// how many of its items failed in a way that depends on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredOutputs<'a> {
    pub name: &'a str,
    pub unsettled: u64,
}

/// The receipt the coordinator gives for a stored outputs file: a MAC under the swarm's lease
/// key of the job, the run's items `[lo, hi)`, the file's name and its count of unsettled
/// items, as 43 base64url characters. A workload result must carry it ([`check_receipt`]), so
/// a device can neither name a file it never uploaded nor say that more or fewer of its items
/// depend on the device than the file shows, and no state is needed to tell (a restart
/// forgets nothing).
pub(crate) fn outputs_receipt(
    key: &str,
    job_id: &str,
    lo: u64,
    hi: u64,
    file: StoredOutputs,
) -> String {
    use hmac::Mac as _;
    receipt_mac(key, job_id, lo, hi, file)
        .map(|mac| base64url(&mac.finalize().into_bytes()))
        .unwrap_or_default()
}

/// Whether `receipt` is the one [`outputs_receipt`] gives (compared in constant time).
pub(crate) fn check_receipt(
    key: &str,
    job_id: &str,
    (lo, hi): (u64, u64),
    file: StoredOutputs,
    receipt: &str,
) -> bool {
    use hmac::Mac as _;
    let (Ok(tag), Some(mac)) = (
        URL_SAFE_NO_PAD.decode(receipt),
        receipt_mac(key, job_id, lo, hi, file),
    ) else {
        return false;
    };
    !key.is_empty() && mac.verify_slice(&tag).is_ok()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        // Both nibbles are below 16, so `get` never misses.
        for nibble in [b >> 4, b & 15] {
            if let Some(&digit) = DIGITS.get(usize::from(nibble)) {
                out.push(char::from(digit));
            }
        }
    }
    out
}

/// RFC 4648 base64url without padding.
fn base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
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
    fn a_receipt_vouches_only_for_its_own_file_items_job_and_key() {
        let file = |name, unsettled| StoredOutputs { name, unsettled };
        let receipt = outputs_receipt("key", "job", 0, 128, file("ab", 2));
        assert_eq!(receipt.len(), 43);
        assert!(check_receipt(
            "key",
            "job",
            (0, 128),
            file("ab", 2),
            &receipt
        ));
        assert!(!check_receipt(
            "other",
            "job",
            (0, 128),
            file("ab", 2),
            &receipt
        ));
        assert!(!check_receipt(
            "key",
            "job2",
            (0, 128),
            file("ab", 2),
            &receipt
        ));
        assert!(!check_receipt(
            "key",
            "job",
            (0, 127),
            file("ab", 2),
            &receipt
        ));
        assert!(!check_receipt(
            "key",
            "job",
            (0, 128),
            file("ac", 2),
            &receipt
        ));
        for unsettled in [0, 1, 3] {
            assert!(!check_receipt(
                "key",
                "job",
                (0, 128),
                file("ab", unsettled),
                &receipt
            ));
        }
        assert!(!check_receipt(
            "key",
            "job",
            (0, 128),
            file("ab", 2),
            "not base64!"
        ));
        assert!(!check_receipt("key", "job", (0, 128), file("ab", 2), ""));
        assert!(!check_receipt(
            "",
            "job",
            (0, 128),
            file("ab", 0),
            &outputs_receipt("", "job", 0, 128, file("ab", 0))
        ));
    }

    #[test]
    fn a_ticket_vouches_only_for_its_own_work_job_device_and_key() {
        let ticket = lease_ticket("key", "job", "dev", 100, 200);
        assert_eq!(ticket.len(), 43);
        assert_eq!(check_ticket("key", "job", "dev", &ticket), Some((100, 200)));
        assert_eq!(check_ticket("other", "job", "dev", &ticket), None);
        assert_eq!(check_ticket("key", "job2", "dev", &ticket), None);
        assert_eq!(check_ticket("key", "job", "dev2", &ticket), None);
        assert_eq!(
            check_ticket("", "job", "dev", &ticket),
            None,
            "no key, no tickets"
        );
        // Other units under the same tag.
        let mut bytes = URL_SAFE_NO_PAD.decode(&ticket).unwrap();
        bytes[8] ^= 1;
        assert_eq!(check_ticket("key", "job", "dev", &base64url(&bytes)), None);
        // Truncated, padded, not base64.
        assert_eq!(check_ticket("key", "job", "dev", &ticket[..42]), None);
        assert_eq!(
            check_ticket("key", "job", "dev", &format!("{ticket}A")),
            None
        );
        assert_eq!(check_ticket("key", "job", "dev", "not a ticket!"), None);
        // The fields are length-prefixed: moving a boundary changes the tag.
        assert_eq!(check_ticket("key", "jobd", "ev", &ticket), None);
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
