//! Human-readable text for the views: ages, sizes and link states.

use crate::link::LinkState;

/// "just now", "12 s ago", "5 min ago", "3 h ago", "2 d ago".
pub fn ago(now_ms: u64, then_ms: u64) -> String {
    let secs = now_ms.saturating_sub(then_ms) / 1000;
    match secs {
        0..=1 => "just now".to_owned(),
        2..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

/// Memory in MiB as "512 MiB" or "8 GiB"; unknown as "—".
pub fn memory(mb: Option<u32>) -> String {
    match mb {
        None => "—".to_owned(),
        Some(mb) if mb < 1024 => format!("{mb} MiB"),
        Some(mb) => format!("{:.0} GiB", f64::from(mb) / 1024.0),
    }
}

/// A short status line for a link, given the current time.
pub fn link_state(state: &LinkState, now_ms: u64) -> String {
    match state {
        LinkState::Connecting { attempt: 0 } => "connecting…".to_owned(),
        LinkState::Connecting { attempt } => format!("connecting… (attempt {})", attempt + 1),
        LinkState::Online => "connected".to_owned(),
        LinkState::Waiting { retry_at, .. } => {
            let secs = retry_at.saturating_sub(now_ms).div_ceil(1000);
            format!("disconnected — retrying in {secs} s")
        }
        LinkState::Refused { message, .. } => format!("refused: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_protocol::ErrorCode;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(ago(10_000, 9_500), "just now");
        assert_eq!(
            ago(10_000, 20_000),
            "just now",
            "clock skew never goes negative"
        );
        assert_eq!(ago(72_000, 0), "1 min ago");
        assert_eq!(ago(12_000, 0), "12 s ago");
        assert_eq!(ago(7_200_000, 0), "2 h ago");
        assert_eq!(ago(3 * 86_400_000, 0), "3 d ago");
    }

    #[test]
    fn memory_and_states() {
        assert_eq!(memory(None), "—");
        assert_eq!(memory(Some(512)), "512 MiB");
        assert_eq!(memory(Some(8192)), "8 GiB");
        assert_eq!(
            link_state(
                &LinkState::Waiting {
                    retry_at: 2_500,
                    attempt: 3
                },
                1_000
            ),
            "disconnected — retrying in 2 s"
        );
        assert_eq!(
            link_state(&LinkState::Connecting { attempt: 2 }, 0),
            "connecting… (attempt 3)"
        );
        let refused = LinkState::Refused {
            code: ErrorCode::BadCredential,
            message: "unknown device".into(),
        };
        assert_eq!(link_state(&refused, 0), "refused: unknown device");
    }
}
