//! The MCP call records of the summary window, kept between summaries: each summary reads only
//! the events recorded since the previous one (with an overlap, deduplicated by `seq`), so its
//! cost follows the traffic since the last call, not the 24 hours of history behind it.
//!
//! Events do not always become visible in `seq` order (PostgreSQL transactions commit out of
//! order, processes' clocks differ a little), so every refresh re-reads the last
//! [`OVERLAP`] before the newest record held and keeps only the `seq`s it has not seen.

use std::collections::{BTreeMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};

use crate::{McpCallRecord, McpFigures, McpSummary};

/// How far before the newest record held each refresh reads again.
pub(crate) const OVERLAP: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// Latency buckets per factor of e: 100 buckets make each about 1 % wide.
const BUCKETS_PER_E: f64 = 100.0;

/// Running figures of a set of records: counts, failures by kind, and a latency histogram of
/// buckets about 1 % wide holding each bucket's count and sum. A percentile is the mean of the
/// bucket it falls in: exact when the bucket holds one distinct value, within 1 % otherwise.
/// Records come in and go out in O(log n), and a summary costs O(buckets), whatever the window.
#[derive(Debug, Default, Clone)]
struct Figures {
    calls: u64,
    fails: u64,
    fails_by_kind: BTreeMap<String, u64>,
    latencies: BTreeMap<i32, (u64, f64)>,
    with_latency: u64,
}

impl Figures {
    fn bucket(latency_ms: f64) -> i32 {
        (latency_ms.max(1e-6).ln() * BUCKETS_PER_E).floor() as i32
    }

    fn add(&mut self, record: &McpCallRecord) {
        self.calls += 1;
        if record.failed {
            self.fails += 1;
            *self.fails_by_kind.entry(record.error_kind.clone().unwrap_or_else(|| "unknown".into())).or_insert(0) += 1;
        }
        if let Some(latency) = record.latency_ms.filter(|l| l.is_finite()) {
            let slot = self.latencies.entry(Self::bucket(latency)).or_insert((0, 0.0));
            slot.0 += 1;
            slot.1 += latency;
            self.with_latency += 1;
        }
    }

    fn remove(&mut self, record: &McpCallRecord) {
        self.calls = self.calls.saturating_sub(1);
        if record.failed {
            self.fails = self.fails.saturating_sub(1);
            let kind = record.error_kind.clone().unwrap_or_else(|| "unknown".into());
            if let Some(count) = self.fails_by_kind.get_mut(&kind) {
                *count -= 1;
                if *count == 0 {
                    self.fails_by_kind.remove(&kind);
                }
            }
        }
        if let Some(latency) = record.latency_ms.filter(|l| l.is_finite()) {
            let bucket = Self::bucket(latency);
            if let Some(slot) = self.latencies.get_mut(&bucket) {
                slot.0 -= 1;
                slot.1 -= latency;
                if slot.0 == 0 {
                    self.latencies.remove(&bucket);
                }
            }
            self.with_latency = self.with_latency.saturating_sub(1);
        }
    }

    /// The latency at rank `round((n - 1) * p)`, as [`McpFigures`] has always picked it.
    fn percentile(&self, p: f64) -> Option<f64> {
        if self.with_latency == 0 {
            return None;
        }
        let rank = ((self.with_latency as f64 - 1.0) * p).round() as u64;
        let mut seen = 0;
        for (count, sum) in self.latencies.values() {
            seen += count;
            if seen > rank {
                return Some((sum / *count as f64 * 1000.0).round() / 1000.0);
            }
        }
        None
    }

    fn figures(&self) -> McpFigures {
        McpFigures {
            calls: self.calls,
            fails: self.fails,
            p50: self.percentile(0.5),
            p95: self.percentile(0.95),
            fails_by_kind: self.fails_by_kind.clone(),
        }
    }
}

/// The records of one window, oldest first, with their running figures.
#[derive(Default)]
pub(crate) struct McpWindow {
    /// Start of the window the records cover; `None` until the first full read.
    start: Option<DateTime<Utc>>,
    records: VecDeque<McpCallRecord>,
    seqs: HashSet<i64>,
    newest: Option<DateTime<Utc>>,
    total: Figures,
    by_tool: BTreeMap<String, Figures>,
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
            self.total = Figures::default();
            self.by_tool.clear();
        }
        self.start = Some(since);
        read.sort_by_key(|r| r.seq);
        for record in read {
            if self.seqs.insert(record.seq) {
                self.newest = Some(self.newest.map_or(record.at, |n| n.max(record.at)));
                self.total.add(&record);
                self.by_tool.entry(record.tool.clone()).or_default().add(&record);
                self.records.push_back(record);
            }
        }
        while let Some(front) = self.records.front() {
            if front.at >= since && self.records.len() <= limit {
                break;
            }
            if let Some(gone) = self.records.pop_front() {
                self.seqs.remove(&gone.seq);
                self.total.remove(&gone);
                if let Some(tool) = self.by_tool.get_mut(&gone.tool) {
                    tool.remove(&gone);
                    if tool.calls == 0 {
                        self.by_tool.remove(&gone.tool);
                    }
                }
            }
        }
    }

    /// The summary of the records held (a straggler older than the start behind the front is
    /// counted until it reaches the front).
    pub(crate) fn summary(&self, since: DateTime<Utc>) -> McpSummary {
        McpSummary {
            total: self.total.figures(),
            detail: self.by_tool.iter().map(|(tool, figures)| (tool.clone(), figures.figures())).collect(),
            since,
            truncated: self.records.len() as i64 >= crate::MCP_SUMMARY_MAX_EVENTS,
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
    fn running_figures_match_the_exact_ones_within_a_percent() {
        let mut window = McpWindow::default();
        let records: Vec<McpCallRecord> = (1..=5000)
            .map(|n| McpCallRecord {
                tool: if n % 3 == 0 { "a.x".into() } else { "b.y".into() },
                failed: n % 7 == 0,
                error_kind: (n % 7 == 0).then(|| "timeout".into()),
                latency_ms: Some(((n * 7919) % 1000) as f64 / 10.0 + 0.5),
                at: at(n),
                seq: n,
            })
            .collect();
        window.absorb(at(0), true, records.clone(), 100_000);
        // slide past the first 1000, so removals are exercised too
        window.absorb(at(1001), false, Vec::new(), 100_000);
        let kept: Vec<McpCallRecord> = records.into_iter().filter(|r| r.at >= at(1001)).collect();
        let exact = McpSummary::from_records(&kept, at(1001));
        let running = window.summary(at(1001));
        assert_eq!((running.total.calls, running.total.fails), (exact.total.calls, exact.total.fails));
        assert_eq!(running.total.fails_by_kind, exact.total.fails_by_kind);
        assert_eq!(running.detail.keys().collect::<Vec<_>>(), exact.detail.keys().collect::<Vec<_>>());
        for (tool, figures) in
            std::iter::once(("all", &running.total)).chain(running.detail.iter().map(|(t, f)| (t.as_str(), f)))
        {
            let want = if tool == "all" { &exact.total } else { &exact.detail[tool] };
            for (got, want) in [(figures.p50, want.p50), (figures.p95, want.p95)] {
                let (got, want) = (got.expect("p"), want.expect("p"));
                assert!((got - want).abs() <= want * 0.011, "{tool}: {got} vs {want}");
            }
        }
        // distinct values alone in their buckets are exact
        let mut small = McpWindow::default();
        small.absorb(at(0), true, vec![record(1, 10), record(2, 20)], 100);
        let summary = small.summary(at(0));
        assert_eq!((summary.total.p50, summary.total.p95), (Some(2.0), Some(2.0)));
        small.absorb(at(15), false, Vec::new(), 100);
        assert_eq!(small.summary(at(15)).total.calls, 1);
        small.absorb(at(25), false, Vec::new(), 100);
        let empty = small.summary(at(25));
        assert_eq!((empty.total.calls, empty.total.p50, empty.detail.len()), (0, None, 0));
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
