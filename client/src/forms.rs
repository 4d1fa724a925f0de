//! Reading what the owner typed into the dashboard's small forms (the job form has its own
//! module, [`crate::jobs`]). A field that does not read is an error shown to the owner, never a
//! silent default.

/// The most uses an invite may have (the protocol's rule for `max_uses`).
const MAX_USES: u32 = 10_000;

/// The invite form's "uses" field: empty means unlimited; otherwise a whole number from 1 to
/// 10,000.
pub fn use_limit(typed: &str) -> Result<Option<u32>, String> {
    let typed = typed.trim();
    if typed.is_empty() {
        return Ok(None);
    }
    match typed.replace(['_', ',', ' '], "").parse::<u32>() {
        Ok(n) if (1..=MAX_USES).contains(&n) => Ok(Some(n)),
        _ => Err(format!(
            "Uses must be a whole number from 1 to 10,000, or empty for unlimited (not “{typed}”)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_use_limit_is_an_error_never_unlimited() {
        assert_eq!(use_limit(""), Ok(None));
        assert_eq!(use_limit("  "), Ok(None));
        assert_eq!(use_limit("5"), Ok(Some(5)));
        assert_eq!(use_limit(" 10,000 "), Ok(Some(10_000)));
        for bad in ["five", "5x", "-1", "0", "10001", "1.5", "99999999999"] {
            assert!(use_limit(bad).is_err(), "{bad} was accepted");
        }
    }
}
