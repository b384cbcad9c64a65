//! Writes behind the caller: [`Artifacts::put_all_behind`] hands a directory's files to a task and
//! returns at once, so a caller (the MCP gateway) answers without waiting on the disk or the bucket.
//!
//! Invariants:
//! - at most [`MAX_BEHIND`] such writes are in flight per store; the next caller waits for a slot,
//!   so memory stays bounded and a slow disk slows callers down instead of piling up;
//! - a reader of this store (`get`, `size`, `list`, `walk`) first waits for the writes in flight
//!   under or above the path it reads, so an answer that names a directory never leads this process
//!   to a missing file;
//! - [`Artifacts::flush`] waits until nothing is in flight (processes call it before they exit);
//! - every write's outcome is kept in its [`Written`], which callers that must report a failure
//!   (the bus worker, the API's call route) await.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::Artifacts;

/// Most writes behind callers in flight at once, per store.
pub const MAX_BEHIND: usize = 256;

/// Longest a reader waits for a write in flight before reading anyway (longer than the S3 client's
/// retries and timeouts).
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// The writes in flight behind callers, by directory.
pub(crate) struct Behind {
    slots: Arc<Semaphore>,
    pending: Mutex<HashMap<String, usize>>,
    changed: Notify,
}

impl Default for Behind {
    fn default() -> Self {
        Self {
            slots: Arc::new(Semaphore::new(MAX_BEHIND)),
            pending: Mutex::new(HashMap::new()),
            changed: Notify::new(),
        }
    }
}

impl Behind {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a write in flight touches `path` (the path itself, a directory above it, or a
    /// directory under it); with `None`, whether anything is in flight.
    fn busy(&self, path: Option<&str>) -> bool {
        let pending = self.pending();
        match path {
            None => !pending.is_empty(),
            Some(path) => {
                let path = path.trim_end_matches('/');
                pending.keys().any(|dir| related(dir, path))
            }
        }
    }

    /// Waits (at most [`SETTLE_LIMIT`]) until no write in flight touches `path`.
    pub(crate) async fn settle(&self, path: Option<&str>) {
        let waited = tokio::time::timeout(SETTLE_LIMIT, async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if !self.busy(path) {
                    return;
                }
                changed.await;
            }
        })
        .await;
        if waited.is_err() {
            tracing::warn!(
                path = path.unwrap_or("artifacts"),
                "artifact writes still in flight after 60 s; reading anyway"
            );
        }
    }
}

/// Whether `a` and `b` are the same path or one lies under the other.
fn related(a: &str, b: &str) -> bool {
    let under = |inner: &str, outer: &str| {
        inner.len() > outer.len() && inner.starts_with(outer) && inner.as_bytes()[outer.len()] == b'/'
    };
    a == b || under(a, b) || under(b, a)
}

/// Marks a directory as in flight until dropped (also when the writing task is cancelled).
struct InFlight {
    store: Artifacts,
    dir: String,
    _slot: OwnedSemaphorePermit,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let behind = &self.store.inner.behind;
        {
            let mut pending = behind.pending();
            if let Some(count) = pending.get_mut(&self.dir) {
                *count -= 1;
                if *count == 0 {
                    pending.remove(&self.dir);
                }
            }
        }
        behind.changed.notify_waiters();
    }
}

/// The outcome of a write behind the caller; cheap to clone, and every clone sees the same outcome.
#[derive(Clone)]
pub struct Written(Shared<BoxFuture<'static, Result<(), String>>>);

impl std::fmt::Debug for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Written").field("done", &self.0.peek().is_some()).finish()
    }
}

impl Written {
    /// A write that has already ended with `outcome`.
    pub fn ready(outcome: Result<(), String>) -> Self {
        Self(futures_util::future::ready(outcome).boxed().shared())
    }

    /// Waits for the write: `Err` says why some file was not written.
    pub async fn outcome(&self) -> Result<(), String> {
        self.0.clone().await
    }
}

impl Artifacts {
    /// Writes `files` into `dir` like [`Artifacts::put_all`], but behind the caller: returns once
    /// the write has a slot (at most [`MAX_BEHIND`] in flight), with a [`Written`] to await for
    /// its outcome. Readers of this store wait for it; so does [`Artifacts::flush`].
    pub async fn put_all_behind(&self, dir: &str, files: Vec<(String, Vec<u8>)>) -> Written {
        let slot = match self.inner.behind.slots.clone().acquire_owned().await {
            Ok(slot) => slot,
            // the semaphore is never closed; write in place if it ever is
            Err(_) => return Written::ready(self.put_all(dir, files).await.map_err(|e| e.to_string())),
        };
        *self.inner.behind.pending().entry(dir.to_owned()).or_insert(0) += 1;
        let in_flight = InFlight { store: self.clone(), dir: dir.to_owned(), _slot: slot };
        let task = tokio::spawn(async move {
            let outcome = in_flight.store.put_all(&in_flight.dir, files).await.map_err(|e| e.to_string());
            drop(in_flight);
            outcome
        });
        Written(
            task.map(|joined| {
                joined.unwrap_or_else(|_| Err("the artifact writer stopped before the files were written".to_owned()))
            })
            .boxed()
            .shared(),
        )
    }

    /// Waits until no write behind a caller is in flight (at most a minute).
    pub async fn flush(&self) {
        self.inner.behind.settle(None).await;
    }

    /// How many writes behind callers are in flight now.
    pub fn in_flight(&self) -> usize {
        self.inner.behind.pending().values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::related;

    #[test]
    fn related_paths_are_the_same_or_nested_on_a_segment_boundary() {
        assert!(related("artifacts/mcp/a/1", "artifacts/mcp/a/1"));
        assert!(related("artifacts/mcp/a/1", "artifacts/mcp/a/1/response.json"));
        assert!(related("artifacts/mcp/a/1", "artifacts/mcp"));
        assert!(related("artifacts/mcp/a/1", "artifacts"));
        assert!(!related("artifacts/mcp/a/1", "artifacts/mcp/a/10"));
        assert!(!related("artifacts/mcp/a/10", "artifacts/mcp/a/1"));
        assert!(!related("artifacts/mcp/a/1", "artifacts/mcp/b"));
    }
}
