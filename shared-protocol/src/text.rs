//! Field-level validators shared by the message types: identifiers, secrets and labels.
//!
//! They are plain functions with garde's custom-validator signature so that the same rule can be
//! checked from anywhere (for example the coordinator validating a URL path segment).

/// Length of every identifier the coordinator issues (swarm ids, device ids): 128 random bits
/// as 32 lowercase hex digits.
pub const ID_LEN: usize = 32;

/// An identifier: exactly [`ID_LEN`] lowercase hex digits.
pub fn is_id(value: &str, _ctx: &()) -> garde::Result {
    is_lower_hex(value, ID_LEN)
}

/// A SHA-256 as it names a workload module: 64 lowercase hex digits.
pub fn is_sha256(value: &str, _ctx: &()) -> garde::Result {
    is_lower_hex(value, 64)
}

/// Exactly `len` lowercase hex digits.
fn is_lower_hex(value: &str, len: usize) -> garde::Result {
    if value.len() == len
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err(garde::Error::new(format!(
            "must be {len} lowercase hex digits"
        )))
    }
}

/// A secret (owner key, device secret): 32 to 128 URL-safe characters.
pub fn is_secret(value: &str, _ctx: &()) -> garde::Result {
    let ok_len = (32..=128).contains(&value.len());
    let ok_chars = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(garde::Error::new(
            "must be 32 to 128 characters from [A-Za-z0-9_-]",
        ))
    }
}

/// Crockford base32 digits (no I, L, O, U), the alphabet of invite short codes.
pub const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Digits in a short code: 10 × 5 bits = 50 bits.
pub const CODE_DIGITS: usize = 10;

/// The canonical form of a typed short code: upper case, without spaces and dashes, with the
/// look-alikes I/L → 1 and O → 0. `None` if it is not [`CODE_DIGITS`] digits of the alphabet.
pub fn normalize_code(typed: &str) -> Option<String> {
    let mut out = String::with_capacity(CODE_DIGITS);
    for c in typed.chars() {
        let c = match c.to_ascii_uppercase() {
            ' ' | '-' => continue,
            'I' | 'L' => '1',
            'O' => '0',
            c => c,
        };
        if !c.is_ascii() || !CODE_ALPHABET.contains(&(c as u8)) {
            return None;
        }
        out.push(c);
    }
    (out.len() == CODE_DIGITS).then_some(out)
}

/// A short code as shown to people: `ABCDE-FGHJK`. Text that is not a canonical code (which is
/// ASCII) and cannot be split in the middle comes back unchanged.
pub fn display_code(canonical: &str) -> String {
    match canonical.split_at_checked(canonical.len() / 2) {
        Some((a, b)) => format!("{a}-{b}"),
        None => canonical.to_owned(),
    }
}

/// A short code as typed: anything [`normalize_code`] accepts, at most 32 characters.
pub fn is_code(value: &str, _ctx: &()) -> garde::Result {
    if value.len() <= 32 && normalize_code(value).is_some() {
        Ok(())
    } else {
        Err(garde::Error::new(format!(
            "must be a {CODE_DIGITS}-character invite code"
        )))
    }
}

/// A human label (swarm or device name): 1 to 64 characters, no control characters, not blank.
pub fn is_label(value: &str, _ctx: &()) -> garde::Result {
    let chars = value.chars().count();
    if !(1..=64).contains(&chars) {
        return Err(garde::Error::new("must be 1 to 64 characters"));
    }
    if value.trim().is_empty() {
        return Err(garde::Error::new("must not be blank"));
    }
    if value.chars().any(char::is_control) {
        return Err(garde::Error::new("must not contain control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_exactly_32_lowercase_hex() {
        assert!(is_id("0123456789abcdef0123456789abcdef", &()).is_ok());
        assert!(is_id("0123456789ABCDEF0123456789abcdef", &()).is_err());
        assert!(is_id("0123456789abcdef0123456789abcde", &()).is_err());
        assert!(is_id("0123456789abcdef0123456789abcdeg", &()).is_err());
        assert!(is_id("", &()).is_err());
    }

    #[test]
    fn secrets_need_length_and_url_safe_chars() {
        assert!(is_secret(&"a".repeat(32), &()).is_ok());
        assert!(is_secret(&"a".repeat(31), &()).is_err());
        assert!(is_secret(&"a".repeat(129), &()).is_err());
        assert!(is_secret(&format!("{}+", "a".repeat(32)), &()).is_err());
    }

    #[test]
    fn codes_normalise_typing_mistakes() {
        assert_eq!(normalize_code("abcde-fghjk").as_deref(), Some("ABCDEFGHJK"));
        assert_eq!(
            normalize_code(" 0o1il 23456 ").as_deref(),
            Some("0011123456")
        );
        assert_eq!(normalize_code("ABCDE-FGHJ"), None, "too short");
        assert_eq!(
            normalize_code("ABCDE-FGHJU"),
            None,
            "U is not in the alphabet"
        );
        assert_eq!(normalize_code("ÄBCDE-FGHJK"), None);
        assert_eq!(display_code("ABCDEFGHJK"), "ABCDE-FGHJK");
        // The middle of "aéb" falls inside the é: no panic, no split.
        assert_eq!(display_code("aéb"), "aéb");
        assert!(is_code("abcde fghjk", &()).is_ok());
        assert!(is_code(&format!("{}ABCDEFGHJK", " ".repeat(30)), &()).is_err());
    }

    #[test]
    fn labels_reject_blank_control_and_long() {
        assert!(is_label("kitchen laptop", &()).is_ok());
        assert!(is_label("ünïcödé 📱", &()).is_ok());
        assert!(is_label("", &()).is_err());
        assert!(is_label("   ", &()).is_err());
        assert!(is_label("a\u{0}b", &()).is_err());
        assert!(is_label(&"x".repeat(65), &()).is_err());
        assert!(is_label(&"é".repeat(64), &()).is_ok());
    }
}
