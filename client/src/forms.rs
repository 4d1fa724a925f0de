//! Reading what the owner typed into the dashboard's small forms (the job form has its own
//! module, [`crate::jobs`]). A field that does not read is an error shown to the owner, never a
//! silent default. Also how an invite's uses read in the live list.

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

/// A device's new name as the owner typed it, trimmed, by the protocol's rule for names.
pub fn device_name(typed: &str) -> Result<String, String> {
    let name = typed.trim();
    if name.is_empty() {
        return Err("A device name must not be blank.".to_owned());
    }
    shared_protocol::is_label(name, &())
        .map(|()| name.to_owned())
        .map_err(|rule| format!("A device name {rule}."))
}

/// How much of an invite is used, for its row in the live list.
pub fn invite_uses(uses: u32, max_uses: Option<u32>) -> String {
    match (max_uses, uses) {
        (Some(max), n) => format!("{n} of {max} used"),
        (None, 0) => "not used yet".to_owned(),
        (None, 1) => "used once".to_owned(),
        (None, n) => format!("used {n} times"),
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

    #[test]
    fn a_device_name_follows_the_protocols_rule_in_words() {
        assert_eq!(device_name("  Lab bench 3 "), Ok("Lab bench 3".to_owned()));
        assert_eq!(
            device_name("   "),
            Err("A device name must not be blank.".to_owned())
        );
        assert_eq!(
            device_name(&"x".repeat(65)),
            Err("A device name must be 1 to 64 characters.".to_owned())
        );
        assert_eq!(
            device_name("a\u{7}b"),
            Err("A device name must not contain control characters.".to_owned())
        );
    }

    #[test]
    fn invite_uses_read_as_words() {
        assert_eq!(invite_uses(0, None), "not used yet");
        assert_eq!(invite_uses(1, None), "used once");
        assert_eq!(invite_uses(7, None), "used 7 times");
        assert_eq!(invite_uses(1, Some(5)), "1 of 5 used");
    }
}
