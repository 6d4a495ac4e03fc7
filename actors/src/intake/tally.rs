//! What happened to the lines of one body, bounded in what it lists.

use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Value};

use super::Delivery;

/// Line errors, and line ranges, listed in an answer at most.
pub const MAX_LISTED: usize = 100;

#[derive(Default)]
pub(super) struct Tally {
    pub accepted: u64,
    pub rejected: u64,
    rejected_by_reason: BTreeMap<&'static str, u64>,
    /// The first `MAX_LISTED` line errors by line number: line → (reason, message).
    errors: BTreeMap<u32, (&'static str, String)>,
    error_count: u64,
    /// Lines handed to the queue but not acknowledged, or never sent.
    pub not_queued: Vec<u32>,
    /// Lines handed to the queue.
    sent: Vec<u32>,
    pub first_queue_error: Option<String>,
    /// Why the remaining lines are not sent.
    pub stopped: Option<String>,
}

impl Tally {
    pub fn reject(&mut self, line: u32, reason: &'static str, message: String) {
        self.rejected += 1;
        *self.rejected_by_reason.entry(reason).or_default() += 1;
        self.error(line, reason, message);
    }

    fn error(&mut self, line: u32, reason: &'static str, message: String) {
        self.error_count += 1;
        if self.errors.len() < MAX_LISTED || self.errors.last_key_value().is_some_and(|(last, _)| line < *last) {
            self.errors.insert(line, (reason, message));
            if self.errors.len() > MAX_LISTED {
                self.errors.pop_last();
            }
        }
    }

    fn not_queued(&mut self, line: u32, why: String) {
        self.not_queued.push(line);
        self.error(line, "not_queued", format!("{why}; send it again"));
    }

    pub fn delivered(&mut self, line: u32, delivery: Delivery) {
        let (error, only_this_line) = match delivery {
            Delivery::Queued => {
                self.sent.push(line);
                self.accepted += 1;
                return;
            }
            Delivery::Refused(why) => return self.not_queued(line, why),
            Delivery::Skipped => {
                let why = self.stopped.clone().unwrap_or_else(|| "the queue stopped".to_owned());
                return self.not_queued(line, format!("not sent: {why}"));
            }
            Delivery::Failed { error, only_this_line } => (error, only_this_line),
        };
        self.sent.push(line);
        if self.first_queue_error.is_none() {
            self.first_queue_error = Some(error.clone());
        }
        if !only_this_line && self.stopped.is_none() {
            self.stopped = Some(format!("the queue failed an earlier line of this body ({error})"));
        }
        self.not_queued(line, format!("the queue did not acknowledge it: {error}"));
    }

    pub fn answer(&mut self) -> Value {
        let errors: Vec<Value> = self
            .errors
            .iter()
            .map(|(line, (reason, message))| json!({ "line": line, "reason": reason, "message": message }))
            .collect();
        let mut answer = json!({
            "accepted": self.accepted,
            "rejected": self.rejected,
            "rejected_by_reason": self.rejected_by_reason,
            "errors": errors,
            "errors_truncated": self.error_count > errors.len() as u64,
            "not_queued": self.not_queued.len(),
        });
        if !self.not_queued.is_empty() {
            self.not_queued.sort_unstable();
            let not_queued: HashSet<u32> = self.not_queued.iter().copied().collect();
            self.sent.sort_unstable();
            let queued: Vec<u32> = self.sent.iter().copied().filter(|l| !not_queued.contains(l)).collect();
            let (listed, truncated) = ranges(&self.not_queued);
            answer["not_queued_lines"] = json!(listed);
            answer["not_queued_lines_truncated"] = json!(truncated);
            let (listed, truncated) = ranges(&queued);
            answer["queued_lines"] = json!(listed);
            answer["queued_lines_truncated"] = json!(truncated);
        }
        answer
    }
}

/// Ascending line numbers as `[first, last]` runs, the first `MAX_LISTED` of them; and whether more
/// runs were left out.
fn ranges(lines: &[u32]) -> (Vec<[u32; 2]>, bool) {
    let mut runs: Vec<[u32; 2]> = Vec::new();
    for &line in lines {
        if let Some(run) = runs.last_mut().filter(|run| run[1] + 1 == line) {
            run[1] = line;
        } else if runs.len() == MAX_LISTED {
            return (runs, true);
        } else {
            runs.push([line, line]);
        }
    }
    (runs, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_join_consecutive_lines_and_stop_at_the_bound() {
        assert_eq!(ranges(&[1, 2, 3, 5, 7, 8]), (vec![[1, 3], [5, 5], [7, 8]], false));
        let every_other: Vec<u32> = (0..300).map(|i| i * 2 + 1).collect();
        let (runs, truncated) = ranges(&every_other);
        assert_eq!((runs.len(), truncated, runs[99]), (MAX_LISTED, true, [199, 199]));
    }

    #[test]
    fn a_partial_answer_says_which_lines_were_queued_and_which_not() {
        let mut tally = Tally::default();
        tally.reject(3, "not_json", "x".into());
        for line in [1, 2, 4, 5] {
            tally.delivered(line, Delivery::Queued);
        }
        tally.delivered(6, Delivery::Failed { error: "Message timed out".into(), only_this_line: false });
        tally.delivered(7, Delivery::Skipped);
        let answer = tally.answer();
        assert_eq!((answer["accepted"].as_u64(), answer["rejected"].as_u64()), (Some(4), Some(1)));
        assert_eq!(answer["not_queued"], 2);
        assert_eq!(answer["not_queued_lines"], json!([[6, 7]]));
        assert_eq!(answer["queued_lines"], json!([[1, 2], [4, 5]]));
        assert_eq!(answer["rejected_by_reason"], json!({ "not_json": 1 }));
        let reasons: Vec<&str> =
            answer["errors"].as_array().unwrap().iter().map(|e| e["reason"].as_str().unwrap()).collect();
        assert_eq!(reasons, ["not_json", "not_queued", "not_queued"]);
        assert!(tally.stopped.is_some(), "a timeout stops sending the rest of the body");
        assert!(answer["errors"][2]["message"]
            .as_str()
            .unwrap()
            .starts_with("not sent: the queue failed an earlier line"));
    }

    #[test]
    fn a_failure_about_one_line_does_not_stop_the_rest() {
        let mut tally = Tally::default();
        tally.delivered(1, Delivery::Failed { error: "too large".into(), only_this_line: true });
        assert!(tally.stopped.is_none());
    }

    #[test]
    fn the_first_errors_by_line_are_kept_whatever_order_they_come_in() {
        let mut tally = Tally::default();
        for line in (1..=500).rev() {
            tally.error(line, "not_queued", String::new());
        }
        let answer = tally.answer();
        assert_eq!(answer["errors"].as_array().unwrap().len(), MAX_LISTED);
        assert_eq!(answer["errors"][0]["line"], 1);
        assert_eq!(answer["errors"][99]["line"], 100);
        assert_eq!(answer["errors_truncated"], true);
    }
}
