//! Following a workload job's results (`GET …/jobs/{id}/results?from=K`, docs/PROTOCOL.md)
//! across answers: the coordinator ends each answer with a line saying where to go on from,
//! and a connection may drop mid-answer. [`Follower`] is the pure part: it takes the lines
//! as they come and says what to write and where to ask from next; the HTTP is the caller's.

use serde::Deserialize;

/// The last line of an answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Closing {
    next: u64,
    items: u64,
    state: String,
}

/// What to do once an answer has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAnswer {
    /// Ask again from this item. `dropped`: the answer ended without its closing line (the
    /// connection was lost), so wait a little first.
    Resume { from: u64, dropped: bool },
    /// Every item was written.
    Complete,
    /// The job was cancelled: the items from `next` on will never come.
    Cancelled { next: u64 },
}

/// Where a results stream stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follower {
    next: u64,
    items: Option<u64>,
    closing: Option<Closing>,
}

impl Follower {
    /// Follows from item `from`.
    pub fn new(from: u64) -> Self {
        Self {
            next: from,
            items: None,
            closing: None,
        }
    }

    /// The first item not written yet.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// The job's number of items, once an answer said it.
    pub fn items(&self) -> Option<u64> {
        self.items
    }

    /// An answer starts.
    pub fn start_answer(&mut self) {
        self.closing = None;
    }

    /// A line of the answer: `Ok(true)` when it is the next item's line (to write), `Ok(false)`
    /// for the closing line, an error for anything out of order.
    pub fn line(&mut self, text: &str) -> Result<bool, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|err| format!("a line that is not JSON: {err}"))?;
        if self.closing.is_some() {
            return Err(format!("a line after the closing line: {text}"));
        }
        match value.get("item").map(serde_json::Value::as_u64) {
            Some(Some(item)) if item == self.next => {
                self.next = self.next.saturating_add(1);
                Ok(true)
            }
            Some(_) => Err(format!("expected item {}, got: {text}", self.next)),
            None => {
                let closing: Closing = serde_json::from_value(value)
                    .map_err(|err| format!("neither an item nor a closing line ({err}): {text}"))?;
                if closing.next != self.next {
                    return Err(format!(
                        "the answer closed at item {} after item {} was written",
                        closing.next, self.next
                    ));
                }
                self.items = Some(closing.items);
                self.closing = Some(closing);
                Ok(false)
            }
        }
    }

    /// The answer ended: what next.
    pub fn end_answer(&mut self) -> AfterAnswer {
        match self.closing.take() {
            None => AfterAnswer::Resume {
                from: self.next,
                dropped: true,
            },
            Some(closing) if closing.next >= closing.items => AfterAnswer::Complete,
            Some(closing) if closing.state == "cancelled" => {
                AfterAnswer::Cancelled { next: closing.next }
            }
            Some(_) => AfterAnswer::Resume {
                from: self.next,
                dropped: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(i: u64) -> String {
        format!(r#"{{"item": {i}, "input": {i}, "output": "AA=="}}"#)
    }

    fn closing(next: u64, items: u64, state: &str) -> String {
        format!(r#"{{"next": {next}, "items": {items}, "state": "{state}"}}"#)
    }

    #[test]
    fn answers_are_followed_from_where_each_closed_to_the_last_item() {
        let mut f = Follower::new(3);
        f.start_answer();
        assert_eq!(f.line(&item(3)), Ok(true));
        assert_eq!(f.line(&item(4)), Ok(true));
        assert_eq!(f.line(&closing(5, 8, "running")), Ok(false));
        assert_eq!(
            f.end_answer(),
            AfterAnswer::Resume {
                from: 5,
                dropped: false
            }
        );
        assert_eq!(f.items(), Some(8));
        f.start_answer();
        for i in 5..8 {
            assert_eq!(f.line(&item(i)), Ok(true));
        }
        assert_eq!(f.line(&closing(8, 8, "done")), Ok(false));
        assert_eq!(f.end_answer(), AfterAnswer::Complete);
    }

    #[test]
    fn a_dropped_answer_resumes_after_the_last_item_written() {
        let mut f = Follower::new(0);
        f.start_answer();
        assert_eq!(f.line(&item(0)), Ok(true));
        assert_eq!(
            f.end_answer(),
            AfterAnswer::Resume {
                from: 1,
                dropped: true
            }
        );
        f.start_answer();
        assert_eq!(f.line(&item(1)), Ok(true));
        assert_eq!(f.next(), 2);
    }

    #[test]
    fn a_cancelled_job_ends_the_following_and_disorder_is_an_error() {
        let mut f = Follower::new(0);
        f.start_answer();
        assert_eq!(f.line(&closing(0, 10, "cancelled")), Ok(false));
        assert_eq!(f.end_answer(), AfterAnswer::Cancelled { next: 0 });
        let mut f = Follower::new(0);
        f.start_answer();
        assert!(f.line(&item(1)).unwrap_err().contains("expected item 0"));
        assert!(f.line("not json").is_err());
        assert!(f.line(r#"{"what": 1}"#).is_err());
        assert!(
            f.line(&closing(4, 10, "running")).is_err(),
            "closes elsewhere"
        );
        assert_eq!(f.line(&closing(0, 10, "running")), Ok(false));
        assert!(f
            .line(&item(0))
            .unwrap_err()
            .contains("after the closing line"));
    }
}
