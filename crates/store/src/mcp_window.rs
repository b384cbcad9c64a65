//! The MCP call records of the summary window, kept between summaries: each summary reads only
//! the events recorded since the previous one (with an overlap, deduplicated by `seq`), so its
//! cost follows the traffic since the last call, not the 24 hours of history behind it.
//!
//! Events do not always become visible in `seq` order (PostgreSQL transactions commit out of
//! order, processes' clocks differ a little), so every refresh re-reads the last
//! [`OVERLAP`] before the newest record held and keeps only the `seq`s it has not seen.

use std::collections::{HashSet, VecDeque};

use chrono::{DateTime, Utc};

use crate::McpCallRecord;

/// How far before the newest record held each refresh reads again.
pub(crate) const OVERLAP: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// The records of one window, oldest first.
#[derive(Default)]
pub(crate) struct McpWindow {
    /// Start of the window the records cover; `None` until the first full read.
    start: Option<DateTime<Utc>>,
    records: VecDeque<McpCallRecord>,
    seqs: HashSet<i64>,
    newest: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for McpWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpWindow").field("start", &self.start).field("records", &self.records.len()).finish()
    }
}

impl McpWindow {
    /// Where the next read starts for a summary `since`, and whether it replaces what is held
    /// (a window older than the one held, or the first read).
    pub(crate) fn next_read(&self, since: DateTime<Utc>) -> (DateTime<Utc>, bool) {
        match (self.start, self.newest) {
            (Some(start), Some(newest)) if since >= start => ((newest - OVERLAP).max(since), false),
            (Some(start), None) if since >= start => (since, false),
            _ => (since, true),
        }
    }

    /// Start of the window held.
    pub(crate) fn start(&self) -> Option<DateTime<Utc>> {
        self.start
    }

    /// Takes in `read` (the records from the read [`McpWindow::next_read`] asked for, any order),
    /// drops what is older than `since` and keeps at most `limit` of the newest.
    pub(crate) fn absorb(&mut self, since: DateTime<Utc>, replace: bool, mut read: Vec<McpCallRecord>, limit: usize) {
        if replace {
            self.records.clear();
            self.seqs.clear();
            self.newest = None;
        }
        self.start = Some(since);
        read.sort_by_key(|r| r.seq);
        for record in read {
            if self.seqs.insert(record.seq) {
                self.newest = Some(self.newest.map_or(record.at, |n| n.max(record.at)));
                self.records.push_back(record);
            }
        }
        while let Some(front) = self.records.front() {
            if front.at >= since && self.records.len() <= limit {
                break;
            }
            if let Some(gone) = self.records.pop_front() {
                self.seqs.remove(&gone.seq);
            }
        }
    }

    /// The records held from `since` on (a straggler older than `since` behind the front is left
    /// out here).
    pub(crate) fn since(&self, since: DateTime<Utc>) -> Vec<&McpCallRecord> {
        self.records.iter().filter(|r| r.at >= since).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: i64, at_s: i64) -> McpCallRecord {
        McpCallRecord {
            tool: "t.x".into(),
            failed: false,
            error_kind: None,
            latency_ms: Some(seq as f64),
            at: DateTime::<Utc>::from_timestamp(at_s, 0).unwrap_or_default(),
            seq,
        }
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(s, 0).unwrap_or_default()
    }

    #[test]
    fn refreshes_read_from_the_newest_minus_the_overlap_and_keep_each_seq_once() {
        let mut window = McpWindow::default();
        assert_eq!(window.next_read(at(1000)), (at(1000), true));
        window.absorb(at(1000), true, vec![record(2, 1110), record(1, 1105)], 100);
        assert_eq!(window.since(at(1000)).len(), 2);
        let (from, replace) = window.next_read(at(1000));
        assert_eq!((from, replace), (at(1110) - OVERLAP, false));
        // never before the window's start
        assert_eq!(window.next_read(at(1100)), (at(1100), false));
        // the re-read overlap brings 2 again, plus 4 and 3, which committed late
        window.absorb(at(1000), false, vec![record(2, 1110), record(4, 1112), record(3, 1109)], 100);
        let seqs: Vec<i64> = window.since(at(1000)).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4]);
    }

    #[test]
    fn the_window_slides_and_is_bounded() {
        let mut window = McpWindow::default();
        window.absorb(at(0), true, (1..=10).map(|n| record(n, n * 10)).collect(), 100);
        window.absorb(at(55), false, vec![record(11, 110)], 100);
        let seqs: Vec<i64> = window.since(at(55)).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![6, 7, 8, 9, 10, 11]);
        window.absorb(at(55), false, vec![record(12, 120), record(13, 130)], 4);
        let seqs: Vec<i64> = window.since(at(55)).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![10, 11, 12, 13], "at most the newest 4");
        // an older window than the one held is a full read
        assert!(window.next_read(at(10)).1);
    }
}
