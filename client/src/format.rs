//! Human-readable text for the views: ages, sizes and link states.

use shared_protocol::{DeviceShare as Share, ErrorCode, RunState, SEEN_LAG_MS};

use crate::link::LinkState;

/// When a device was last seen, as its row says. An online device's time may be held up to
/// [`SEEN_LAG_MS`] (25 s) behind (snapshot deltas raise it only that far), so anything within
/// that (and a tick's worth of this clock running ahead) reads "within 25 s"; past it, the
/// device missed heartbeats and its time is exact.
pub fn seen(online: bool, now_ms: u64, last_seen_ms: u64) -> String {
    if online && now_ms.saturating_sub(last_seen_ms) <= SEEN_LAG_MS + 2_000 {
        "seen within 25 s".to_owned()
    } else {
        format!("seen {}", ago(now_ms, last_seen_ms))
    }
}

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
        Some(mb) => format!("{} GiB", fixed(f64::from(mb) / 1024.0, 0)),
    }
}

/// A device's hardware in one line: "2 cores · 16 GiB · GPU", "1 core · 512 MiB".
pub fn hardware(capabilities: &shared_protocol::Capabilities) -> String {
    let cores = match capabilities.cores {
        1 => "1 core".to_owned(),
        n => format!("{n} cores"),
    };
    let mut parts = vec![cores];
    if capabilities.memory_mb.is_some() {
        parts.push(memory(capabilities.memory_mb));
    }
    if capabilities.gpu {
        parts.push("GPU".to_owned());
    }
    parts.join(" · ")
}

/// What a refusal means, as a sentence for the person who caused it. `detail` is the
/// coordinator's own text, used where only it can say what was wrong (which field broke which
/// rule). Every code has its sentence: a new code does not compile until it gets one.
pub fn error_sentence(code: ErrorCode, detail: &str) -> String {
    let sentence = match code {
        ErrorCode::Invalid | ErrorCode::Malformed if !detail.trim().is_empty() => {
            let detail = detail.trim().trim_end_matches('.');
            // ASCII only: the coordinator's details are English, and Unicode case tables
            // would weigh more than every sentence here.
            let mut chars = detail.chars();
            let first = chars.next().map(|c| c.to_ascii_uppercase());
            return format!(
                "{}{}.",
                first.map(String::from).unwrap_or_default(),
                chars.as_str()
            );
        }
        ErrorCode::Invalid => "A value was not accepted.",
        ErrorCode::TooLarge => "That is more than the coordinator accepts at once.",
        ErrorCode::Malformed | ErrorCode::UnknownType | ErrorCode::ProtocolMismatch => {
            "This page and the coordinator are different versions: reload the page."
        }
        ErrorCode::HelloRequired | ErrorCode::AlreadyIntroduced => {
            "The connection got out of step; it reconnects by itself."
        }
        ErrorCode::BadCredential => {
            "This device is no longer part of the swarm: join again with a new invite."
        }
        ErrorCode::BadOwnerKey | ErrorCode::Forbidden => {
            "Only the swarm's owner can do that, and this page does not hold the owner key."
        }
        ErrorCode::InviteRequired => "A new device needs an invite to join.",
        ErrorCode::InviteInvalid => "No invite has this code or link: check it for typos.",
        ErrorCode::InviteExpired => "This invite has expired: ask the owner for a new one.",
        ErrorCode::InviteRevoked => "The owner revoked this invite: ask for a new one.",
        ErrorCode::InviteExhausted => "This invite has been used up: ask the owner for a new one.",
        ErrorCode::DeviceNotFound => "That device is no longer in the swarm.",
        ErrorCode::SwarmNotFound => "This swarm does not exist: the link may be mistyped.",
        ErrorCode::NotFound => "The coordinator does not know this request: reload the page.",
        ErrorCode::RateLimited => "Too many requests at once: try again in a moment.",
        ErrorCode::BadResult => {
            "This device returned a wrong result: it gets no work until the owner enables it."
        }
        ErrorCode::Internal => "Something failed inside the coordinator: try again.",
    };
    sentence.to_owned()
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
        LinkState::Refused { code, message } => {
            format!("refused: {}", error_sentence(*code, message))
        }
    }
}

/// How much of this device the swarm uses: "2 workers, all the time", "1 worker, 20 % of the
/// time — 0.2 of 2 lent cores at a 10 % throttle".
pub fn share(share: &Share) -> String {
    if share.workers == 0 {
        return "nothing".to_owned();
    }
    let workers = match share.workers {
        1 => "1 worker".to_owned(),
        n => format!("{n} workers"),
    };
    let time = if share.duty_percent >= 100 {
        "all the time".to_owned()
    } else {
        format!("{} % of the time", share.duty_percent)
    };
    let hundredths = share.cores_hundredths();
    let cores = if hundredths.is_multiple_of(100) {
        format!("{}", hundredths / 100)
    } else {
        format!("{}.{:02}", hundredths / 100, hundredths % 100)
            .trim_end_matches('0')
            .to_owned()
    };
    let lent = match share.lent_cores {
        1 => "1 lent core".to_owned(),
        n => format!("{n} lent cores"),
    };
    format!(
        "{workers}, {time} — {cores} of {lent} at a {} % throttle",
        share.throttle_percent
    )
}

/// Why a device is not computing, if it is not: the owner's choices first, then the user's.
pub fn idle_reason(share: &Share, lent: u16) -> Option<&'static str> {
    if !share.enabled {
        Some("The swarm's owner disabled this device: it gets no work until they enable it.")
    } else if share.run_state == RunState::Stopped {
        Some("The swarm is stopped: no work until its owner runs it again.")
    } else if share.run_state == RunState::Paused {
        Some("The swarm is paused: chunks in progress finish, new work waits until its owner runs it again.")
    } else if lent == 0 {
        Some("You paused this device: lend it a core to compute again.")
    } else if share.throttle_percent == 0 {
        Some("The swarm's throttle is at 0 %: it uses none of this device.")
    } else {
        None
    }
}

/// A rate with an SI prefix and its unit, three significant digits: "950 numbers/s",
/// "1.23 k pixels/s", "1.26 G numbers/s", "303 M hashes/s".
pub fn rate(per_second: f64, unit: &str) -> String {
    let prefixes = [(1e12, "T "), (1e9, "G "), (1e6, "M "), (1e3, "k ")];
    let (value, prefix) = prefixes
        .iter()
        .find(|(scale, _)| per_second >= *scale)
        .map_or((per_second, ""), |(scale, prefix)| {
            (per_second / scale, *prefix)
        });
    let digits: u32 = if prefix.is_empty() || value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{} {prefix}{unit}/s", fixed(value, digits))
}

/// A number as typed, in its shortest exact form ("-0.75", "2.75", "1e-7"): the form JSON uses,
/// written by serde_json's float printer, which the page links anyway.
pub fn number(value: f64) -> String {
    serde_json::to_string(&value).unwrap_or_default()
}

/// `value` with `decimals` digits after the point ("1.26"), rounded half away from zero.
/// Written out because `f64`'s own formatting is one of the largest pieces of a page's wasm.
pub fn fixed(value: f64, decimals: u32) -> String {
    let scale = 10u64.pow(decimals.min(9));
    let scaled = (value.abs() * scale as f64).round();
    if !scaled.is_finite() || scaled >= 1e18 {
        return "—".to_owned();
    }
    let n = scaled as u64;
    let sign = if value < 0.0 && n > 0 { "-" } else { "" };
    let whole = n / scale;
    if scale == 1 {
        format!("{sign}{whole}")
    } else {
        let width = decimals.min(9) as usize;
        format!("{sign}{whole}.{:0width$}", n % scale)
    }
}

/// A whole number with thousands separators: "50,847,534".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A duration for an ETA: "45 s", "3 min 20 s", "2 h 5 min".
pub fn duration(ms: u64) -> String {
    let secs = ms.div_ceil(1000);
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
    }
}

/// Progress as a percentage with one decimal, never 100.0 before it is complete.
/// A device's verification record as the devices table shows it: trusted or not, and how many
/// of its results other devices confirmed (of those computed again), with disagreements.
pub fn credibility(trusted: bool, confirmed: u64, replicated: u64, disputed: u64) -> String {
    let status = if trusted { "trusted" } else { "new" };
    let mut text = format!("{status} · {confirmed}/{replicated} confirmed");
    if disputed > 0 {
        text.push_str(&format!(" · {disputed} disputed"));
    }
    text
}

pub fn percent(done: u64, total: u64) -> f64 {
    if total == 0 || done >= total {
        return 100.0;
    }
    ((done as f64 * 1000.0 / total as f64).floor() / 10.0).min(99.9)
}

#[cfg(test)]
mod tests {
    fn a_share(workers: u16, duty_percent: u8, lent_cores: u16, throttle_percent: u8) -> Share {
        Share {
            workers,
            duty_percent,
            lent_cores,
            throttle_percent,
            run_state: RunState::Running,
            enabled: true,
        }
    }

    #[test]
    fn a_share_says_how_much_of_the_device_computes() {
        assert_eq!(
            share(&a_share(2, 100, 2, 100)),
            "2 workers, all the time — 2 of 2 lent cores at a 100 % throttle"
        );
        assert_eq!(
            share(&a_share(1, 20, 2, 10)),
            "1 worker, 20 % of the time — 0.2 of 2 lent cores at a 10 % throttle"
        );
        assert_eq!(
            share(&a_share(3, 77, 7, 33)),
            "3 workers, 77 % of the time — 2.31 of 7 lent cores at a 33 % throttle"
        );
        assert_eq!(
            share(&a_share(1, 5, 1, 5)),
            "1 worker, 5 % of the time — 0.05 of 1 lent core at a 5 % throttle"
        );
        assert_eq!(share(&a_share(0, 100, 2, 0)), "nothing");
    }

    #[test]
    fn an_idle_device_is_told_why_owner_first() {
        let mut s = a_share(2, 100, 2, 100);
        assert_eq!(idle_reason(&s, 2), None);
        assert!(idle_reason(&s, 0).unwrap().starts_with("You paused"));
        s.throttle_percent = 0;
        assert!(idle_reason(&s, 2).unwrap().contains("throttle is at 0 %"));
        s.run_state = RunState::Paused;
        assert!(idle_reason(&s, 0)
            .unwrap()
            .starts_with("The swarm is paused"));
        s.run_state = RunState::Stopped;
        assert!(idle_reason(&s, 2)
            .unwrap()
            .starts_with("The swarm is stopped"));
        s.enabled = false;
        assert!(idle_reason(&s, 2).unwrap().contains("disabled this device"));
    }

    use super::*;
    use shared_protocol::ErrorCode;

    #[test]
    fn credibility_reads_as_a_status_and_counts() {
        assert_eq!(credibility(false, 3, 4, 0), "new · 3/4 confirmed");
        assert_eq!(
            credibility(true, 110, 111, 1),
            "trusted · 110/111 confirmed · 1 disputed"
        );
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(ago(10_000, 9_500), "just now");
        assert_eq!(seen(true, 30_000, 5_000), "seen within 25 s");
        assert_eq!(seen(true, 40_000, 5_000), "seen 35 s ago");
        assert_eq!(seen(false, 30_000, 5_000), "seen 25 s ago");
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
    fn fixed_point_numbers_round_half_away_from_zero() {
        use super::fixed;
        assert_eq!(fixed(1.264_9, 2), "1.26");
        assert_eq!(fixed(1.265_1, 2), "1.27");
        assert_eq!(fixed(0.05, 1), "0.1");
        assert_eq!(fixed(2.5, 0), "3");
        assert_eq!(fixed(3.0, 2), "3.00");
        assert_eq!(fixed(0.004, 2), "0.00");
        assert_eq!(fixed(-0.004, 2), "0.00", "no negative zero");
        assert_eq!(fixed(-12.345_6, 1), "-12.3");
        assert_eq!(fixed(1_234_567.0, 1), "1234567.0");
        assert_eq!(fixed(f64::NAN, 1), "—");
        assert_eq!(fixed(f64::INFINITY, 0), "—");
        assert_eq!(super::number(-0.75), "-0.75");
        assert_eq!(super::number(2.0), "2.0");
    }

    #[test]
    fn hardware_in_one_line() {
        use shared_protocol::{AgentClass, Capabilities};
        let mut caps = Capabilities {
            cores: 2,
            memory_mb: Some(16_384),
            gpu: true,
            agent: AgentClass::BrowserDesktop,
            workloads: false,
        };
        assert_eq!(super::hardware(&caps), "2 cores · 16 GiB · GPU");
        caps.cores = 1;
        caps.memory_mb = None;
        caps.gpu = false;
        assert_eq!(super::hardware(&caps), "1 core");
    }

    #[test]
    fn error_codes_read_as_sentences() {
        use super::error_sentence;
        assert_eq!(
            error_sentence(ErrorCode::Invalid, "name must be 1 to 64 characters"),
            "Name must be 1 to 64 characters."
        );
        assert_eq!(
            error_sentence(ErrorCode::InviteRevoked, "invite_revoked"),
            "The owner revoked this invite: ask for a new one."
        );
        let codes = [
            "too_large",
            "malformed",
            "unknown_type",
            "invalid",
            "protocol_mismatch",
            "hello_required",
            "already_introduced",
            "bad_credential",
            "bad_owner_key",
            "forbidden",
            "invite_required",
            "invite_invalid",
            "invite_expired",
            "invite_revoked",
            "invite_exhausted",
            "device_not_found",
            "swarm_not_found",
            "not_found",
            "rate_limited",
            "bad_result",
            "internal",
        ];
        for name in codes {
            let code: ErrorCode = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            let sentence = error_sentence(code, "");
            assert!(
                sentence.ends_with('.') && !sentence.contains('_'),
                "{name}: {sentence}"
            );
        }
    }

    #[test]
    fn rates_durations_and_progress() {
        assert_eq!(rate(950.0, "numbers"), "950 numbers/s");
        assert_eq!(rate(1_234.0, "pixels"), "1.23 k pixels/s");
        assert_eq!(rate(1.2649e9, "numbers"), "1.26 G numbers/s");
        assert_eq!(rate(303.5e6, "hashes"), "304 M hashes/s");
        assert_eq!(rate(45.67e3, "numbers"), "45.7 k numbers/s");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(50_847_534), "50,847,534");
        assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(duration(45_000), "45 s");
        assert_eq!(duration(200_000), "3 min 20 s");
        assert_eq!(duration(7_500_000), "2 h 5 min");
        assert_eq!(percent(1, 3), 33.3);
        assert_eq!(
            percent(999_999, 1_000_000),
            99.9,
            "not done is never shown as 100"
        );
        assert_eq!(percent(5, 5), 100.0);
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
        assert_eq!(
            link_state(&refused, 0),
            "refused: This device is no longer part of the swarm: join again with a new invite."
        );
    }
}
