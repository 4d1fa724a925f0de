//! Field-level validators shared by the message types: identifiers, secrets and labels.
//!
//! They are plain functions with garde's custom-validator signature so that the same rule can be
//! checked from anywhere (for example the coordinator validating a URL path segment).

/// Length of every identifier the coordinator issues (swarm ids, device ids): 128 random bits
/// as 32 lowercase hex digits.
pub const ID_LEN: usize = 32;

/// An identifier: exactly [`ID_LEN`] lowercase hex digits.
pub fn is_id(value: &str, _ctx: &()) -> garde::Result {
    if value.len() == ID_LEN
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err(garde::Error::new(format!(
            "must be {ID_LEN} lowercase hex digits"
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
