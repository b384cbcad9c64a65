//! The process gauges, read when `/metrics` is rendered: resident memory, heap in use and heap
//! held free (glibc's counts, so real growth can be told apart from allocator fragmentation), the
//! part of the heap the embedded SQLite holds (page caches, bounded by their sizes), and open
//! file descriptors; and [`trim_every`], which hands the heap's free pages back to the system.

use std::time::Duration;

/// Sets the process gauges to their values now.
pub fn update() {
    if let Some(rss) = resident_bytes() {
        metrics::gauge!(model::metrics::PROCESS_RESIDENT_MEMORY_BYTES).set(rss as f64);
    }
    if let Some((in_use, free)) = heap_bytes() {
        metrics::gauge!(model::metrics::PROCESS_HEAP_BYTES).set(in_use as f64);
        metrics::gauge!(model::metrics::PROCESS_HEAP_FREE_BYTES).set(free as f64);
    }
    metrics::gauge!(model::metrics::SQLITE_MEMORY_BYTES).set(store::sqlite_memory_used() as f64);
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!(model::metrics::PROCESS_OPEN_FDS).set(fds.count() as f64);
    }
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes malloc has handed out and not had back (in-use arena chunks plus mmapped blocks), and
/// bytes it holds free in its arenas.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn heap_bytes() -> Option<(u64, u64)> {
    // SAFETY: mallinfo2 takes no argument and returns a plain struct by value; glibc documents it
    // as safe to call from any thread (it locks each arena while it reads it).
    let info = unsafe { libc::mallinfo2() };
    Some(((info.uordblks + info.hblkhd) as u64, info.fordblks as u64))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_bytes() -> Option<(u64, u64)> {
    None
}

/// Hands the free pages of every malloc arena back to the system every `every` (0: never).
///
/// glibc keeps freed memory in its arenas (one per thread that allocated, up to 8 per core) and
/// returns it only from the top of the main heap, so a long-running server's resident memory
/// climbs with the churn of short-lived buffers (answers, JSON bodies, query rows) while the heap
/// in use stays flat. `malloc_trim(0)` releases the free pages inside the arenas too.
/// Ends when `shutdown` turns true.
pub async fn trim_every(every: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    if every.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    while !*shutdown.borrow() {
        tokio::select! {
            _ = tick.tick() => {
                // off the async workers: it walks every arena
                let _ = tokio::task::spawn_blocking(trim).await;
            }
            changed = shutdown.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Caps glibc's malloc arenas at twice the cores (glibc's default is eight times), unless
/// `MALLOC_ARENA_MAX` says otherwise: every runtime and blocking thread that allocates can get an
/// arena of its own, and memory freed in one arena is not reused by another. Call it first thing
/// in `main`, before any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let arenas = libc::c_int::try_from((cores * 2).max(2)).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets a malloc tunable; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_arenas() {}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim(0) only returns free memory to the system; glibc locks each arena while
    // it works, so it is safe while other threads allocate and free.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    #[test]
    fn the_gauges_read_real_figures() {
        let rss = super::resident_bytes().expect("VmRSS");
        assert!(rss > 1024 * 1024, "{rss}");
        let (before, _) = super::heap_bytes().expect("mallinfo2");
        let block = vec![1u8; 64 * 1024 * 1024];
        let (during, _) = super::heap_bytes().expect("mallinfo2");
        assert!(during >= before + 60 * 1024 * 1024, "{before} → {during}");
        drop(block);
        assert!(super::heap_bytes().expect("mallinfo2").0 < during);
        super::trim();
    }
}
