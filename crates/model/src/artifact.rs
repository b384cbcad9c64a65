//! Artifact paths: the fixed layout under `artifacts/` and `<ts>` stamps unique even within one
//! millisecond.
//!
//! Invariant: every path built here is relative, has only safe segments (no `..`, no separators in a
//! segment) and a `<ts>` never repeats for one allocator; stamps from different processes differ by
//! their instance tag.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// The artifact families of the brief.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactFamily {
    /// `artifacts/mcp/<toolset>/<ts>/`.
    Mcp,
    /// `artifacts/gate-run/<ts>/`.
    GateRun,
    /// `artifacts/full-scenario/<ts>/`.
    FullScenario,
    /// `artifacts/docker-scenario/<ts>/`.
    DockerScenario,
    /// `artifacts/metrics-snapshot/<ts>/`.
    MetricsSnapshot,
}

impl ArtifactFamily {
    /// The directory name under `artifacts/`.
    pub fn dir(self) -> &'static str {
        match self {
            Self::Mcp => "mcp",
            Self::GateRun => "gate-run",
            Self::FullScenario => "full-scenario",
            Self::DockerScenario => "docker-scenario",
            Self::MetricsSnapshot => "metrics-snapshot",
        }
    }
}

/// File names inside an MCP call's directory.
pub mod mcp_files {
    /// The call as sent (secrets redacted).
    pub const REQUEST: &str = "request.json";
    /// The answer as received.
    pub const RESPONSE: &str = "response.json";
    /// trace_id, message_id, tool, status, latency_ms, attempt, breaker key.
    pub const SUMMARY: &str = "summary.json";
    /// Only on failure.
    pub const ERROR: &str = "error.json";
}

/// A path segment that is not safe to put in an artifact path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("artifact path segment {segment:?} is not allowed: use letters, digits, '-', '_' and '.', not only dots")]
pub struct UnsafeSegment {
    /// The rejected segment.
    pub segment: String,
}

/// Checks one path segment.
pub fn safe_segment(segment: &str) -> Result<&str, UnsafeSegment> {
    let ok = !segment.is_empty()
        && segment.len() <= 128
        && !segment.chars().all(|c| c == '.')
        && segment.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(segment) } else { Err(UnsafeSegment { segment: segment.to_owned() }) }
}

/// `artifacts/mcp/<toolset>/<ts>`.
pub fn mcp_call_dir(toolset: &str, ts: &str) -> Result<String, UnsafeSegment> {
    Ok(format!("artifacts/mcp/{}/{}", safe_segment(toolset)?, safe_segment(ts)?))
}

/// `artifacts/<family>/<ts>` for the families without a sub-key.
pub fn run_dir(family: ArtifactFamily, ts: &str) -> Result<String, UnsafeSegment> {
    Ok(format!("artifacts/{}/{}", family.dir(), safe_segment(ts)?))
}

/// `artifacts/decisions/<trace_id>/<n>.json`.
pub fn decision_path(trace_id: &str, n: u32) -> Result<String, UnsafeSegment> {
    Ok(format!("artifacts/decisions/{}/{n}.json", safe_segment(trace_id)?))
}

/// Hands out `<ts>` stamps: `YYYYMMDDTHHMMSS.mmmZ-<seq>-<instance>`, sortable by time, with a
/// sequence that separates stamps of the same millisecond and an instance tag that separates processes.
#[derive(Debug)]
pub struct TsAllocator {
    instance: String,
    last: Mutex<(i64, u32)>,
}

impl TsAllocator {
    /// An allocator for one process; `instance` is a short tag unique among processes (e.g. the first
    /// 8 hex digits of the agent id). Unsafe characters are replaced by `x`.
    pub fn new(instance: &str) -> Self {
        let instance: String = instance
            .chars()
            .take(16)
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { 'x' })
            .collect();
        Self { instance: if instance.is_empty() { "0".into() } else { instance }, last: Mutex::new((i64::MIN, 0)) }
    }

    /// The next stamp at `now`. Never returns the same stamp twice, even when the clock stands still
    /// or steps back (the sequence continues from the last stamp's millisecond).
    pub fn next(&self, now: DateTime<Utc>) -> String {
        let now_ms = now.timestamp_millis();
        let (ms, seq) = {
            let mut last = self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let next = if now_ms > last.0 { (now_ms, 0) } else { (last.0, last.1 + 1) };
            *last = next;
            next
        };
        let at = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(now);
        format!("{}-{seq:04}-{}", at.format("%Y%m%dT%H%M%S%.3fZ"), self.instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_unique_within_one_millisecond_and_sort_by_time() {
        let alloc = TsAllocator::new("ab12cd34");
        let t = DateTime::<Utc>::from_timestamp_millis(1_795_000_000_123).expect("time");
        let a = alloc.next(t);
        let b = alloc.next(t);
        let c = alloc.next(t + chrono::Duration::milliseconds(1));
        assert_eq!(a, "20261118T110640.123Z-0000-ab12cd34");
        assert_eq!(b, "20261118T110640.123Z-0001-ab12cd34");
        assert!(a < b && b < c, "{a} {b} {c}");
        // a clock that steps back still yields fresh stamps
        let d = alloc.next(t - chrono::Duration::seconds(5));
        assert!(d > c, "{d} {c}");
        let many: std::collections::HashSet<_> = (0..10_000).map(|_| alloc.next(t)).collect();
        assert_eq!(many.len(), 10_000);
    }

    #[test]
    fn paths_follow_the_layout_and_refuse_traversal() {
        assert_eq!(mcp_call_dir("browser", "T1").as_deref(), Ok("artifacts/mcp/browser/T1"));
        assert_eq!(run_dir(ArtifactFamily::GateRun, "T1").as_deref(), Ok("artifacts/gate-run/T1"));
        assert_eq!(decision_path("abc", 3).as_deref(), Ok("artifacts/decisions/abc/3.json"));
        for bad in ["..", "a/b", "", "a\\b", ".", "x y"] {
            assert!(mcp_call_dir(bad, "T1").is_err(), "{bad:?}");
        }
        assert_eq!(TsAllocator::new("a/b").next(Utc::now()).rsplit('-').next(), Some("axb"));
    }
}
