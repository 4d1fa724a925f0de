//! The dashboard's job form and job rows, as plain functions: which fields each kind of job
//! has, how typed text becomes a [`JobSpec`] (checked by the protocol's own rule, so the user
//! sees the coordinator's limits before submitting), and how a job is described.

use shared_protocol::{valid_job, JobResult, JobSpec, JobState, JobView};

use crate::format;

/// The kinds of job the form offers: `(value, label)`.
pub const KINDS: [(&str, &str); 3] = [
    ("prime_count", "Count primes"),
    ("mandelbrot", "Mandelbrot image"),
    ("sha256_search", "SHA-256 nonce search"),
];

/// The form fields of a kind: `(name, label, default)`.
pub fn fields(kind: &str) -> &'static [(&'static str, &'static str, &'static str)] {
    match kind {
        "mandelbrot" => &[
            ("width", "width px", "800"),
            ("height", "height px", "600"),
            ("max_iter", "iterations", "1000"),
            ("center_re", "centre re", "-0.5"),
            ("center_im", "centre im", "0"),
            ("scale", "width in ℂ", "3"),
        ],
        "sha256_search" => &[
            ("prefix", "prefix", "ostrich legs"),
            ("difficulty_bits", "zero bits", "20"),
            ("lo", "nonces from", "0"),
            ("hi", "to", "100000000"),
            ("want", "stop after", "3"),
        ],
        _ => &[("lo", "from", "0"), ("hi", "to", "1000000000")],
    }
}

/// The job the form describes, or what is wrong with it. `value` gives a field's text.
pub fn parse(kind: &str, value: impl Fn(&str) -> String) -> Result<JobSpec, String> {
    let whole = |name: &str| -> Result<u64, String> {
        value(name)
            .trim()
            .replace(['_', ',', ' '], "")
            .parse::<u64>()
            .map_err(|_| format!("{name} must be a whole number"))
    };
    let small = |name: &str| -> Result<u32, String> {
        u32::try_from(whole(name)?).map_err(|_| format!("{name} is too large"))
    };
    let real = |name: &str| -> Result<f64, String> {
        value(name)
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("{name} must be a number"))
    };
    let spec = match kind {
        "prime_count" => JobSpec::PrimeCount {
            lo: whole("lo")?,
            hi: whole("hi")?,
        },
        "mandelbrot" => JobSpec::Mandelbrot {
            center_re: real("center_re")?,
            center_im: real("center_im")?,
            scale: real("scale")?,
            width: small("width")?,
            height: small("height")?,
            max_iter: small("max_iter")?,
        },
        "sha256_search" => JobSpec::Sha256Search {
            prefix: value("prefix"),
            difficulty_bits: small("difficulty_bits")?,
            lo: whole("lo")?,
            hi: whole("hi")?,
            want: small("want")?,
        },
        other => return Err(format!("unknown job kind {other}")),
    };
    valid_job(&spec, &()).map_err(|err| err.to_string())?;
    Ok(spec)
}

/// A job's title in its row.
pub fn title(spec: &JobSpec) -> String {
    match spec {
        JobSpec::PrimeCount { lo, hi } => format!("π in [{lo}, {hi})"),
        JobSpec::Mandelbrot {
            width,
            height,
            max_iter,
            center_re,
            center_im,
            scale,
        } => format!(
            "Mandelbrot {width}×{height}, {max_iter} iterations at {center_re}{center_im:+}i, width {scale}"
        ),
        JobSpec::Sha256Search {
            prefix,
            difficulty_bits,
            lo,
            hi,
            ..
        } => format!("SHA-256(“{prefix}” ‖ nonce) with {difficulty_bits} zero bits, nonces [{lo}, {hi})"),
    }
}

/// A job's result line: final when done, partial with progress otherwise.
pub fn summary(job: &JobView) -> String {
    let percent = format::percent(job.done_units, job.total_units);
    let result = match &job.result {
        JobResult::PrimeCount { count } => format!("{count} primes"),
        JobResult::Mandelbrot { inside_pixels } => format!("{inside_pixels} pixels inside the set"),
        JobResult::Sha256Search { nonces } if nonces.is_empty() => "no nonce yet".to_owned(),
        JobResult::Sha256Search { nonces } => format!(
            "nonces {}",
            nonces
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    if job.state == JobState::Done {
        result
    } else {
        format!("{percent:.1} % · {result} so far")
    }
}

/// How much of a job's work went to verification, and how much still waits for a second
/// device; `None` before anything was computed.
pub fn verification(job: &JobView) -> Option<String> {
    if job.done_units == 0 && job.verify_units == 0 {
        return None;
    }
    let again = job.verify_units as f64 / job.total_units.max(1) as f64 * 100.0;
    let mut text = format!("{again:.0} % of the work computed again to verify it");
    if job.unverified_units > 0 {
        let waiting = format::percent(job.unverified_units, job.total_units);
        text.push_str(&format!(" · {waiting:.1} % waits for a second device"));
    }
    Some(text)
}

/// The unit a job's rate is counted in.
pub fn unit(spec: &JobSpec) -> &'static str {
    match spec {
        JobSpec::PrimeCount { .. } => "numbers",
        JobSpec::Mandelbrot { .. } => "rows",
        JobSpec::Sha256Search { .. } => "hashes",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> String + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(String::new(), |(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn defaults_of_every_kind_make_a_valid_job() {
        for (kind, _) in KINDS {
            let defaults = fields(kind);
            let value = |name: &str| {
                defaults
                    .iter()
                    .find(|(n, _, _)| *n == name)
                    .map(|(_, _, d)| (*d).to_owned())
                    .unwrap_or_default()
            };
            assert!(parse(kind, value).is_ok(), "{kind}");
        }
    }

    #[test]
    fn typed_text_is_read_and_bad_text_explained() {
        assert_eq!(
            parse("prime_count", form(&[("lo", " 1_000 "), ("hi", "2,000")])),
            Ok(JobSpec::PrimeCount { lo: 1000, hi: 2000 })
        );
        let err = parse("prime_count", form(&[("lo", "x"), ("hi", "5")])).unwrap_err();
        assert!(err.contains("lo must be a whole number"), "{err}");
        let err = parse("prime_count", form(&[("lo", "9"), ("hi", "5")])).unwrap_err();
        assert!(err.contains("greater than lo"), "{err}");
        let image = [
            ("width", "5000"),
            ("height", "10"),
            ("max_iter", "100"),
            ("center_re", "0"),
            ("center_im", "0"),
            ("scale", "3"),
        ];
        let err = parse("mandelbrot", form(&image)).unwrap_err();
        assert!(err.contains("width and height"), "{err}");
        let err = parse("mandelbrot", form(&[("center_re", "NaN")])).unwrap_err();
        assert!(err.contains("must be a number"), "{err}");
        assert!(parse("launch", form(&[])).is_err());
    }

    #[test]
    fn rows_say_what_the_job_is_and_how_far_it_got() {
        let job = JobView {
            job_id: "j".into(),
            spec: JobSpec::Sha256Search {
                prefix: "p".into(),
                difficulty_bits: 9,
                lo: 0,
                hi: 100,
                want: 2,
            },
            state: JobState::Running,
            done_units: 50,
            total_units: 100,
            units_per_second: 0.0,
            eta_ms: None,
            created_ms: 0,
            finished_ms: None,
            result: JobResult::Sha256Search { nonces: vec![4, 9] },
            verify_units: 0,
            unverified_units: 0,
        };
        assert_eq!(summary(&job), "50.0 % · nonces 4, 9 so far");
        let verified = JobView {
            verify_units: 25,
            unverified_units: 10,
            ..job.clone()
        };
        assert_eq!(
            verification(&verified).as_deref(),
            Some("25 % of the work computed again to verify it · 10.0 % waits for a second device")
        );
        assert!(title(&job.spec).contains("9 zero bits"));
        assert_eq!(unit(&job.spec), "hashes");
    }
}
