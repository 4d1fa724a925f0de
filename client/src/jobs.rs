//! The dashboard's job form and job rows, as plain functions: which fields each kind of job
//! has, how typed text becomes a [`JobSpec`] (checked by the protocol's own rule, so the user
//! sees the coordinator's limits before submitting), and how a job is described.

use std::collections::BTreeMap;

use shared_protocol::{valid_job, ImageBands, JobResult, JobSpec, JobState, JobView, RunState};

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

/// The job the form describes, or what is wrong with it in the form's own words (its labels,
/// not the protocol's field names). `value` gives a field's text.
pub fn parse(kind: &str, value: impl Fn(&str) -> String) -> Result<JobSpec, String> {
    parse_fields(kind, value).map_err(|message| in_form_words(kind, &message))
}

/// A message about a job's fields with each field name that is a whole word replaced by its
/// label in the form: "hi must be greater than lo" → "“to” must be greater than “from”".
pub fn in_form_words(kind: &str, message: &str) -> String {
    let label = |word: &str| {
        fields(kind)
            .iter()
            .find(|(name, _, _)| *name == word)
            .map(|(_, label, _)| format!("“{label}”"))
    };
    let mut out = String::with_capacity(message.len());
    let mut word = String::new();
    for c in message.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        out.push_str(&label(&word).unwrap_or_else(|| word.clone()));
        word.clear();
        out.push(c);
    }
    out.pop();
    out
}

fn parse_fields(kind: &str, value: impl Fn(&str) -> String) -> Result<JobSpec, String> {
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
            "Mandelbrot {width}×{height}, {max_iter} iterations at {}{}{}i, width {}",
            format::number(*center_re),
            if center_im.is_sign_negative() {
                ""
            } else {
                "+"
            },
            format::number(*center_im),
            format::number(*scale)
        ),
        JobSpec::Sha256Search {
            prefix,
            difficulty_bits,
            lo,
            hi,
            ..
        } => format!(
            "SHA-256(“{prefix}” ‖ nonce) with {difficulty_bits} zero bits, nonces [{lo}, {hi})"
        ),
        JobSpec::Workload {
            module,
            items,
            inputs: Some(pages),
            ..
        } => format!(
            "module {}… on {} items of an input set ({} pages)",
            module.get(..12).unwrap_or(module),
            format::thousands(*items),
            pages.len()
        ),
        JobSpec::Workload {
            module,
            start,
            step,
            items,
            ..
        } => format!(
            "module {}… on {} items from {start} by {step}",
            module.get(..12).unwrap_or(module),
            format::thousands(*items)
        ),
    }
}

/// Where a download of a workload job's results stands after one answer of the results
/// endpoint (docs/PROTOCOL.md): the item lines so far, in order, and where to ask from next.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ResultsDownload {
    /// The item lines, each ending in a newline.
    pub text: String,
    pub next: u64,
    /// Answers in a row that brought no item.
    fruitless: u32,
}

/// What a download does after an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterResults {
    /// Every item is written.
    Done,
    /// Ask again from `next` (the answer ended within its budget, or was cut off).
    More,
    /// The job was cancelled: items from `next` on never come.
    Cancelled,
    /// [`ResultsDownload::MAX_FRUITLESS`] answers in a row brought no item: give up.
    Stalled,
}

impl ResultsDownload {
    /// Answers in a row without a new item before the download gives up.
    pub const MAX_FRUITLESS: u32 = 5;

    /// Takes one answer's text: item lines in order from `next` (a line of another item, or
    /// not JSON, ends the answer there), then its closing line.
    pub fn answer(&mut self, body: &str) -> AfterResults {
        let before = self.next;
        let after = self.read(body);
        self.fruitless = if self.next > before {
            0
        } else {
            self.fruitless + 1
        };
        match after {
            AfterResults::More if self.fruitless >= Self::MAX_FRUITLESS => AfterResults::Stalled,
            after => after,
        }
    }

    fn read(&mut self, body: &str) -> AfterResults {
        // Only what decides is read (typed, so that the dashboard carries no JSON tree).
        #[derive(serde::Deserialize)]
        struct Line {
            item: Option<u64>,
            next: Option<u64>,
            items: Option<u64>,
            state: Option<JobState>,
        }
        for text in body.lines() {
            let Ok(line) = serde_json::from_str::<Line>(text) else {
                return AfterResults::More;
            };
            match line {
                Line {
                    item: Some(item), ..
                } => {
                    if item != self.next {
                        return AfterResults::More;
                    }
                    self.text.push_str(text);
                    self.text.push('\n');
                    self.next += 1;
                }
                Line {
                    next: Some(next),
                    items: Some(items),
                    state: Some(state),
                    ..
                } => {
                    return if self.next >= items {
                        AfterResults::Done
                    } else if state == JobState::Cancelled && next >= self.next {
                        AfterResults::Cancelled
                    } else {
                        AfterResults::More
                    };
                }
                _ => return AfterResults::More,
            }
        }
        AfterResults::More
    }
}

/// A job's result line: final when done, partial with progress otherwise.
pub fn summary(job: &JobView) -> String {
    let percent = format::percent(job.done_units, job.total_units);
    let result = match &job.result {
        JobResult::PrimeCount { count } => format!("{} primes", format::thousands(*count)),
        JobResult::Mandelbrot { inside_pixels } => {
            format!(
                "{} pixels inside the set",
                format::thousands(*inside_pixels)
            )
        }
        JobResult::Sha256Search { nonces } if nonces.is_empty() => "no nonce yet".to_owned(),
        JobResult::Sha256Search { nonces } => format!(
            "nonces {}",
            nonces
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        JobResult::Workload { failed: 0 } => "no item failed".to_owned(),
        JobResult::Workload { failed } => format!("{} items failed", format::thousands(*failed)),
    };
    if job.state == JobState::Done {
        result
    } else {
        format!("{} % · {result} so far", format::fixed(percent, 1))
    }
}

/// When a job was submitted, started and finished, and how long it ran: "submitted 12:01:03 ·
/// started 12:01:04 · finished 12:03:10 · took 2 min 6 s", with `clock` writing a time.
pub fn timeline(job: &JobView, clock: impl Fn(u64) -> String) -> String {
    let mut parts = vec![format!("submitted {}", clock(job.created_ms))];
    if let Some(started) = job.started_ms {
        parts.push(format!("started {}", clock(started)));
    }
    if let Some(finished) = job.finished_ms {
        let verb = if job.state == JobState::Cancelled {
            "cancelled"
        } else {
            "finished"
        };
        parts.push(format!("{verb} {}", clock(finished)));
        let from = job.started_ms.unwrap_or(job.created_ms);
        parts.push(format!(
            "took {}",
            format::duration(finished.saturating_sub(from))
        ));
    }
    parts.join(" · ")
}

/// How much of a job's work went to verification, and how much still waits for a second
/// device; `None` before anything was computed.
pub fn verification(job: &JobView) -> Option<String> {
    if job.done_units == 0 && job.verify_units == 0 {
        return None;
    }
    let again = job.verify_units as f64 / job.total_units.max(1) as f64 * 100.0;
    let mut text = format!(
        "{} % of the work computed again to verify it",
        format::fixed(again, 0)
    );
    if job.unverified_units > 0 {
        let waiting = format::percent(job.unverified_units, job.total_units);
        text.push_str(&format!(
            " · {} % waits for a second device",
            format::fixed(waiting, 1)
        ));
    }
    Some(text)
}

/// The unit a job's rate is counted in.
pub fn unit(spec: &JobSpec) -> &'static str {
    match spec {
        JobSpec::PrimeCount { .. } => "numbers",
        JobSpec::Mandelbrot { .. } => "rows",
        JobSpec::Sha256Search { .. } => "hashes",
        JobSpec::Workload { .. } => "items",
    }
}

/// A job's progress as the dashboard saw it, snapshot by snapshot: its rate and ETA over the
/// last [`Progress::WINDOW_MS`] rather than from one snapshot, so that they do not swing with
/// every result that lands.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// `(coordinator time, done units)`, oldest first, within the window.
    samples: std::collections::VecDeque<(u64, u64)>,
}

impl Progress {
    /// How far back the rate looks.
    pub const WINDOW_MS: u64 = 30_000;

    /// A snapshot showed `done` units at coordinator time `now_ms`.
    pub fn observe(&mut self, now_ms: u64, done: u64) {
        if let Some(&(_, last)) = self.samples.back() {
            if done < last {
                // Work taken back (a liar's parts): the old samples no longer add up.
                self.samples.clear();
            }
        }
        if self.samples.back().is_some_and(|&(at, _)| at >= now_ms) {
            return;
        }
        self.samples.push_back((now_ms, done));
        while self
            .samples
            .front()
            .is_some_and(|&(at, _)| at + Self::WINDOW_MS < now_ms)
            && self.samples.len() > 2
        {
            self.samples.pop_front();
        }
    }

    /// Units per second over the window; `None` until two snapshots at least 4 s apart.
    pub fn rate(&self) -> Option<f64> {
        let (&(t0, d0), &(t1, d1)) = (self.samples.front()?, self.samples.back()?);
        if t1 < t0 + 4_000 {
            return None;
        }
        Some((d1 - d0) as f64 * 1000.0 / (t1 - t0) as f64)
    }

    /// Time left for `total` units at that rate; `None` while the rate is unknown or zero.
    pub fn eta_ms(&self, total: u64) -> Option<u64> {
        let rate = self.rate().filter(|r| *r > 0.0)?;
        let (_, done) = self.samples.back()?;
        Some((total.saturating_sub(*done) as f64 / rate * 1000.0) as u64)
    }
}

/// What a running job's row says beside its state: why it does not progress (the swarm is
/// paused or stopped, no device is online), else its rate and ETA over the window of
/// `progress` (the coordinator's own estimate until the window has two snapshots). `None` for a
/// job that is not running.
pub fn status_line(
    job: &JobView,
    run_state: RunState,
    online: u32,
    progress: &Progress,
) -> Option<String> {
    (job.state == JobState::Running).then(|| match run_state {
        RunState::Paused => "paused: no new work until the owner runs the swarm".to_owned(),
        RunState::Stopped => "stopped: no work until the owner runs the swarm".to_owned(),
        RunState::Running if online == 0 => "waiting for devices: invite one".to_owned(),
        RunState::Running => {
            let rate = progress.rate().unwrap_or(job.units_per_second);
            let eta = progress
                .eta_ms(job.total_units)
                .or(job.eta_ms)
                .map(|ms| format!(" · ETA {}", format::duration(ms)))
                .unwrap_or_default();
            format!("{}{eta}", format::rate(rate, unit(&job.spec)))
        }
    })
}

/// What to do on a live image's canvas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paint {
    /// Draw this PNG (base64) with its top-left corner at row `first_row`.
    Band { first_row: u32, png: String },
    /// Paint rows `first_row .. first_row + rows` as pending again (a band taken back).
    Clear { first_row: u32, rows: u32 },
}

/// Follows a Mandelbrot job's image band by band (`…/bands?after=N`): which answer to ask for
/// next and what each answer means for the canvas. Knows how many rows it drew from each first
/// row, to clear them when their band is taken back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageFollower {
    next: u64,
    drawn: BTreeMap<u32, u32>,
}

impl ImageFollower {
    /// The bands endpoint's address for the next answer, under the job's URL.
    pub fn url(&self, job_url: &str) -> String {
        format!("{job_url}/bands?after={}", self.next)
    }

    /// An answer arrived: what to paint, in order. Call [`Self::drew`] for each band drawn.
    pub fn absorb(&mut self, answer: ImageBands) -> Vec<Paint> {
        self.next = self.next.max(answer.next);
        answer
            .bands
            .into_iter()
            .filter_map(|band| match band.png {
                Some(png) => Some(Paint::Band {
                    first_row: band.first_row,
                    png,
                }),
                None => self.drawn.remove(&band.first_row).map(|rows| Paint::Clear {
                    first_row: band.first_row,
                    rows,
                }),
            })
            .collect()
    }

    /// A band of `rows` rows was drawn at `first_row`.
    pub fn drew(&mut self, first_row: u32, rows: u32) {
        self.drawn.insert(first_row, rows);
    }

    /// Rows drawn so far.
    pub fn rows_drawn(&self) -> u32 {
        self.drawn.values().sum()
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_running_jobs_status_says_why_it_waits_or_how_fast_it_goes() {
        let mut job = JobView {
            job_id: "j".into(),
            spec: JobSpec::PrimeCount { lo: 0, hi: 100_000 },
            state: JobState::Running,
            done_units: 0,
            total_units: 100_000,
            units_per_second: 1_000.0,
            eta_ms: Some(100_000),
            created_ms: 0,
            started_ms: Some(0),
            finished_ms: None,
            result: JobResult::PrimeCount { count: 0 },
            verify_units: 0,
            unverified_units: 0,
            chunks_done: 0,
        };
        let mut p = Progress::default();
        let line = |job: &JobView, run, online, p: &Progress| status_line(job, run, online, p);
        assert_eq!(
            line(&job, RunState::Running, 1, &p).as_deref(),
            Some("1.00 k numbers/s · ETA 1 min 40 s"),
            "the coordinator's figures first"
        );
        p.observe(0, 0);
        p.observe(10_000, 50_000);
        assert_eq!(
            line(&job, RunState::Running, 1, &p).as_deref(),
            Some("5.00 k numbers/s · ETA 10 s")
        );
        assert!(line(&job, RunState::Paused, 1, &p)
            .unwrap()
            .starts_with("paused"));
        assert!(line(&job, RunState::Stopped, 1, &p)
            .unwrap()
            .starts_with("stopped"));
        assert_eq!(
            line(&job, RunState::Running, 0, &p).as_deref(),
            Some("waiting for devices: invite one")
        );
        job.state = JobState::Done;
        assert_eq!(line(&job, RunState::Running, 1, &p), None);
    }

    #[test]
    fn errors_use_the_forms_labels() {
        let values = |lo: &'static str, hi: &'static str| {
            move |name: &str| match name {
                "lo" => lo.to_owned(),
                "hi" => hi.to_owned(),
                _ => String::new(),
            }
        };
        assert_eq!(
            parse("prime_count", values("10", "5")),
            Err("“to” must be greater than “from”".to_owned())
        );
        assert_eq!(
            parse("prime_count", values("ten", "5")),
            Err("“from” must be a whole number".to_owned())
        );
        assert_eq!(
            in_form_words("mandelbrot", "max_iter must be 1 to 65535; width too"),
            "“iterations” must be 1 to 65535; “width px” too"
        );
        assert_eq!(
            in_form_words("sha256_search", "hi must be greater than lo"),
            "“to” must be greater than “nonces from”"
        );
        assert_eq!(
            in_form_words("prime_count", "highly local"),
            "highly local",
            "whole words only"
        );
    }

    #[test]
    fn a_timeline_says_when_a_job_ran_and_for_how_long() {
        let clock = |ms: u64| format!("t{}", ms / 1000);
        let mut job = JobView {
            job_id: "j".into(),
            spec: JobSpec::PrimeCount { lo: 0, hi: 10 },
            state: JobState::Queued,
            done_units: 0,
            total_units: 10,
            units_per_second: 0.0,
            eta_ms: None,
            created_ms: 1_000,
            started_ms: None,
            finished_ms: None,
            result: JobResult::PrimeCount { count: 0 },
            verify_units: 0,
            unverified_units: 0,
            chunks_done: 0,
        };
        assert_eq!(timeline(&job, clock), "submitted t1");
        job.state = JobState::Running;
        job.started_ms = Some(61_000);
        assert_eq!(timeline(&job, clock), "submitted t1 · started t61");
        job.state = JobState::Done;
        job.finished_ms = Some(187_000);
        assert_eq!(
            timeline(&job, clock),
            "submitted t1 · started t61 · finished t187 · took 2 min 6 s"
        );
        job.state = JobState::Cancelled;
        job.started_ms = None;
        assert_eq!(
            timeline(&job, clock),
            "submitted t1 · cancelled t187 · took 3 min 6 s"
        );
    }

    #[test]
    fn a_jobs_rate_and_eta_follow_the_window_not_the_last_snapshot() {
        let mut p = Progress::default();
        p.observe(0, 0);
        p.observe(2_000, 5_000);
        assert_eq!(p.rate(), None, "too soon to tell");
        // Results land in bursts: 0, 20k, 20k, 40k ... every 2 s → 5,000 units/s on average.
        for (i, done) in [10_000, 10_000, 20_000, 20_000, 30_000, 30_000, 40_000]
            .iter()
            .enumerate()
        {
            p.observe(4_000 + 2_000 * i as u64, *done);
        }
        let rate = p.rate().unwrap();
        assert!((rate - 2_500.0).abs() < 1.0, "{rate}");
        assert_eq!(p.eta_ms(50_000), Some(4_000));
        // Old samples leave the window.
        for i in 0..30u64 {
            p.observe(20_000 + 2_000 * i, 40_000 + 4_000 * i);
        }
        let rate = p.rate().unwrap();
        assert!((rate - 2_000.0).abs() < 1.0, "{rate}");
        // Work taken back starts the measure again.
        p.observe(100_000, 10_000);
        assert_eq!(p.rate(), None);
        assert_eq!(p.eta_ms(20_000), None);
    }

    use shared_protocol::ImageBand;

    #[test]
    fn an_image_follower_asks_for_what_is_new_and_clears_what_was_taken_back() {
        let mut f = ImageFollower::default();
        assert_eq!(
            f.url("https://c/api/swarms/s/jobs/j"),
            "https://c/api/swarms/s/jobs/j/bands?after=0"
        );
        let paint = f.absorb(ImageBands {
            next: 7,
            more: false,
            bands: vec![
                ImageBand {
                    first_row: 0,
                    png: Some("AAA".into()),
                },
                ImageBand {
                    first_row: 32,
                    png: Some("BBB".into()),
                },
            ],
        });
        assert_eq!(
            paint,
            vec![
                Paint::Band {
                    first_row: 0,
                    png: "AAA".into()
                },
                Paint::Band {
                    first_row: 32,
                    png: "BBB".into()
                },
            ]
        );
        f.drew(0, 32);
        f.drew(32, 16);
        assert_eq!(f.rows_drawn(), 48);
        assert!(f.url("u").ends_with("after=7"));
        // The band at 32 is taken back, then computed again; one never drawn is ignored.
        let paint = f.absorb(ImageBands {
            next: 9,
            more: false,
            bands: vec![
                ImageBand {
                    first_row: 32,
                    png: None,
                },
                ImageBand {
                    first_row: 64,
                    png: None,
                },
            ],
        });
        assert_eq!(
            paint,
            vec![Paint::Clear {
                first_row: 32,
                rows: 16
            }]
        );
        assert_eq!(f.rows_drawn(), 32);
        // An answer never moves the cursor back.
        f.absorb(ImageBands {
            next: 3,
            more: false,
            bands: vec![],
        });
        assert!(f.url("u").ends_with("after=9"));
    }

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
        assert!(err.contains("“from” must be a whole number"), "{err}");
        let err = parse("prime_count", form(&[("lo", "9"), ("hi", "5")])).unwrap_err();
        assert!(err.contains("greater than “from”"), "{err}");
        let image = [
            ("width", "5000"),
            ("height", "10"),
            ("max_iter", "100"),
            ("center_re", "0"),
            ("center_im", "0"),
            ("scale", "3"),
        ];
        let err = parse("mandelbrot", form(&image)).unwrap_err();
        assert!(err.contains("“width px” and “height px”"), "{err}");
        let err = parse("mandelbrot", form(&[("center_re", "NaN")])).unwrap_err();
        assert!(err.contains("must be a number"), "{err}");
        assert!(parse("launch", form(&[])).is_err());
    }

    #[test]
    fn a_results_download_follows_the_answers_to_the_last_item() {
        let mut download = ResultsDownload::default();
        let first = "{\"item\":0,\"output\":\"AA==\"}\n{\"item\":1,\"output\":\"AQ==\"}\n{\"next\":2,\"items\":4,\"state\":\"done\"}\n";
        assert_eq!(download.answer(first), AfterResults::More);
        assert_eq!(download.next, 2);
        // Cut off mid-line: the whole lines count, the rest is asked for again.
        assert_eq!(
            download.answer("{\"item\":2,\"output\":\"Ag==\"}\n{\"item\":3,"),
            AfterResults::More
        );
        assert_eq!(download.next, 3);
        // A line of an item already written (a retried answer) is not written twice.
        assert_eq!(download.answer("{\"item\":2}\n"), AfterResults::More);
        assert_eq!(
            download.answer("{\"item\":3,\"error\":{\"kind\":\"unreachable\",\"message\":\"\"}}\n{\"next\":4,\"items\":4,\"state\":\"done\"}\n"),
            AfterResults::Done
        );
        assert_eq!(download.text.lines().count(), 4);
        assert!(download.text.ends_with("}\n"));
        let mut stuck = ResultsDownload::default();
        for _ in 1..ResultsDownload::MAX_FRUITLESS {
            assert_eq!(stuck.answer(""), AfterResults::More);
        }
        assert_eq!(stuck.answer(""), AfterResults::Stalled);
        let mut cancelled = ResultsDownload::default();
        assert_eq!(
            cancelled.answer("{\"next\":0,\"items\":9,\"state\":\"cancelled\"}"),
            AfterResults::Cancelled
        );
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
            started_ms: None,
            finished_ms: None,
            result: JobResult::Sha256Search { nonces: vec![4, 9] },
            verify_units: 0,
            unverified_units: 0,
            chunks_done: 5,
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
        let range = JobSpec::Workload {
            module: "ab".repeat(32),
            start: 7,
            step: 2,
            items: 12_000,
            time_limit_ms: 10,
            inputs: None,
        };
        assert_eq!(
            title(&range),
            "module abababababab… on 12,000 items from 7 by 2"
        );
        let set = JobSpec::Workload {
            module: "ab".repeat(32),
            start: 0,
            step: 0,
            items: 12_000,
            time_limit_ms: 10,
            inputs: Some(vec![
                shared_protocol::InputPage {
                    sha256: "cd".repeat(32),
                    items: 6_000
                };
                2
            ]),
        };
        assert_eq!(
            title(&set),
            "module abababababab… on 12,000 items of an input set (2 pages)"
        );
    }
}
