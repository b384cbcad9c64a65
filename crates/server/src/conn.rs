//! Limits on connections, below HTTP: how many one client address and all clients together may
//! hold open ([`ConnectionGate`]), and how long a write may wait on a client that does not read
//! ([`Guarded`]).
//!
//! Invariants: every admitted connection holds one [`Permit`] until it is closed, so the counts
//! never drift; a refused connection gets a short HTTP answer written without waiting, never a
//! task or a buffer of its own.

use std::collections::HashMap;
use std::future::Future as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{ApiError, ErrorCode};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its client address already holds as many connections as one client may.
    PerClient,
    /// The process already holds as many connections as it may.
    Total,
}

impl Refused {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::PerClient => "per_client",
            Self::Total => "total",
        }
    }

    /// The whole HTTP answer written to a refused connection: 429 for a client over its share,
    /// 503 when the process is full, both with `Retry-After` and `Connection: close`.
    pub(crate) fn answer(self, per_client: usize, total: usize) -> Vec<u8> {
        let (status, error) = match self {
            Self::PerClient => (
                "429 Too Many Requests",
                ApiError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "this client address already has {per_client} connections open \
                         (max_connections_per_client); reuse them or close some"
                    ),
                ),
            ),
            Self::Total => (
                "503 Service Unavailable",
                ApiError::new(
                    ErrorCode::Unavailable,
                    format!("the server already has {total} connections open (max_connections); try again shortly"),
                ),
            ),
        };
        let body = serde_json::json!({ "code": error.code, "message": error.message }).to_string();
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// Counts open connections per client block (an IPv4 address or an IPv6 /64) and in all.
#[derive(Debug)]
pub(crate) struct ConnectionGate {
    per_client: usize,
    total: usize,
    /// Whether the open count is the process's `cogo_http_connections_open`.
    reports: bool,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

impl ConnectionGate {
    /// A gate letting `per_client` connections through per client and `total` in all; 0 means
    /// no limit on that count. Its open count is reported as `cogo_http_connections_open`.
    pub(crate) fn new(per_client: usize, total: usize) -> Arc<Self> {
        Arc::new(Self { per_client, total, reports: true, open: Mutex::new(Open::default()) })
    }

    /// A gate like [`ConnectionGate::new`] whose count is not reported (TLS handshakes under way).
    pub(crate) fn unreported(per_client: usize, total: usize) -> Arc<Self> {
        Arc::new(Self { per_client, total, reports: false, open: Mutex::new(Open::default()) })
    }

    fn report(&self, open: usize) {
        if self.reports {
            metrics::gauge!(model::metrics::HTTP_CONNECTIONS_OPEN).set(open as f64);
        }
    }

    /// A permit for one more connection from `client`, or why not.
    pub(crate) fn admit(self: &Arc<Self>, client: SocketAddr) -> Result<Permit, Refused> {
        let block = crate::limit::client_block(Some(client.ip())).unwrap_or(client.ip());
        let mut open = self.lock();
        if self.total > 0 && open.total >= self.total {
            return Err(Refused::Total);
        }
        let mine = open.by_client.get(&block).copied().unwrap_or(0);
        if self.per_client > 0 && mine >= self.per_client {
            return Err(Refused::PerClient);
        }
        open.total += 1;
        open.by_client.insert(block, mine + 1);
        self.report(open.total);
        Ok(Permit { gate: self.clone(), block })
    }

    /// Connections open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().total
    }

    /// The limits, for messages.
    pub(crate) fn limits(&self) -> (usize, usize) {
        (self.per_client, self.total)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One admitted connection; dropping it gives its place back.
#[derive(Debug)]
pub(crate) struct Permit {
    gate: Arc<ConnectionGate>,
    block: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.gate.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_client.get_mut(&self.block) {
            *count -= 1;
            if *count == 0 {
                open.by_client.remove(&self.block);
            }
        }
        self.gate.report(open.total);
    }
}

/// A connection's stream with its [`Permit`] and a write timeout: a write (or flush) that makes
/// no progress for `write_timeout`, because the client stopped reading and the socket's buffers
/// are full, fails with `TimedOut`, and the connection is closed. A connection that is merely
/// quiet (an event stream with nothing to send) is not affected.
pub(crate) struct Guarded<S> {
    inner: S,
    write_timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    _permit: Permit,
}

impl<S> Guarded<S> {
    pub(crate) fn new(inner: S, permit: Permit, write_timeout: Duration) -> Self {
        Self { inner, write_timeout, stalled: None, _permit: permit }
    }

    /// After the inner stream answered a write with `poll`: a pending write starts (or keeps)
    /// the stall clock, one that is over it fails; progress stops the clock.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.write_timeout;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                self.stalled = None;
                metrics::counter!(model::metrics::HTTP_WRITE_TIMEOUTS_TOTAL).increment(1);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client read nothing for {} s (write_timeout)", timeout.as_secs_f64()),
                )))
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

/// Writes `answer` to a refused connection if it fits in the socket's buffer now, then drops it.
pub(crate) fn refuse<S: AsyncWrite + Unpin>(mut io: S, answer: &[u8]) {
    use futures_util::FutureExt as _;
    use tokio::io::AsyncWriteExt as _;
    let written = async {
        io.write_all(answer).await?;
        io.shutdown().await
    }
    .now_or_never();
    if !matches!(written, Some(Ok(()))) {
        tracing::debug!("a refused connection could not take its answer at once; closed without one");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().expect("ip"), 40000)
    }

    #[test]
    fn counts_per_client_block_and_in_all_and_gives_places_back() {
        let gate = ConnectionGate::new(2, 3);
        let a1 = gate.admit(addr("10.0.0.1")).expect("first");
        let a2 = gate.admit(addr("10.0.0.1")).expect("second");
        assert_eq!(gate.admit(addr("10.0.0.1")).err(), Some(Refused::PerClient));
        // one IPv6 /64 is one client
        let b1 = gate.admit(addr("2001:db8::1")).expect("v6");
        assert_eq!(gate.admit(addr("10.0.0.2")).err(), Some(Refused::Total), "three open in all");
        drop(a1);
        let a3 = gate.admit(addr("10.0.0.1")).expect("a place came back");
        drop((a2, a3, b1));
        assert_eq!(gate.open(), 0);
        let v6 = ConnectionGate::new(1, 0);
        let _c = v6.admit(addr("2001:db8::1")).expect("v6");
        assert_eq!(v6.admit(addr("2001:db8::ffff")).err(), Some(Refused::PerClient), "the same /64");
        assert!(v6.admit(addr("2001:db8:0:1::1")).is_ok(), "another /64");
    }

    #[test]
    fn zero_means_no_limit() {
        let gate = ConnectionGate::new(0, 0);
        let permits: Vec<_> = (0..1000).map(|_| gate.admit(addr("10.0.0.1")).expect("admitted")).collect();
        assert_eq!(gate.open(), 1000);
        drop(permits);
        assert_eq!(gate.open(), 0);
    }

    #[test]
    fn refusals_are_http_answers_with_a_json_error() {
        for (refused, status, code) in
            [(Refused::PerClient, "429", "rate_limited"), (Refused::Total, "503", "unavailable")]
        {
            let answer = String::from_utf8(refused.answer(8, 100)).expect("utf-8");
            assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{answer}");
            let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
            assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
            assert!(head.contains("retry-after: 1") && head.contains("connection: close"), "{head}");
            let body: serde_json::Value = serde_json::from_str(body).expect("json");
            assert_eq!(body["code"], code);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_stalls_past_the_timeout_fails_and_a_quiet_one_does_not() {
        use tokio::io::AsyncWriteExt as _;
        let gate = ConnectionGate::new(0, 0);
        // a pipe whose reader never reads: 64 bytes fit, then writes wait
        let (client, _server_end) = tokio::io::duplex(64);
        let mut guarded = Guarded::new(client, gate.admit(addr("10.0.0.1")).expect("permit"), Duration::from_secs(5));
        guarded.write_all(&[0u8; 64]).await.expect("fits in the buffer");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(gate.open(), 1, "quiet for a minute is fine");
        let started = tokio::time::Instant::now();
        let err = guarded.write_all(b"more").await.expect_err("the reader never reads");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert!(err.to_string().contains("write_timeout"), "{err}");
        drop(guarded);
        assert_eq!(gate.open(), 0, "the permit went with the connection");
    }
}
