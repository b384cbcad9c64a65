//! The artifact store: every artifact of the `artifacts/` layout (MCP calls, decision records,
//! generated code, metrics snapshots, gate runs) is written and read through one [`Artifacts`],
//! on the local data directory (the embedded default) or on S3-compatible object storage that
//! every process of a distributed deployment reaches (`--artifacts-url s3://bucket/prefix`).
//!
//! Invariants:
//! - every path is relative, starts with `artifacts/` and has only safe segments
//!   ([`model::artifact::safe_segment`]); nothing outside `artifacts/` is read or written;
//! - a file is written whole or not at all (a temporary file renamed on disk, one PUT on S3), so a
//!   reader never sees half an artifact;
//! - on disk, a path that leads out of the artifacts directory through a symbolic link is refused;
//! - credentials come from the standard `AWS_*` environment and never appear in a location, a log
//!   line or an error.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

mod behind;
pub use behind::{MAX_BEHIND, Written};

/// The top directory of every artifact path.
pub const ROOT: &str = "artifacts";

/// Most files one listing returns.
pub const MAX_LISTING: usize = 10_000;

/// What went wrong with an artifact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    /// The path is not an artifact path.
    #[error("artifact path {path:?} is not allowed: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why.
        reason: String,
    },
    /// Nothing is stored there.
    #[error("no artifact {0}")]
    NotFound(String),
    /// The file is over the reader's limit.
    #[error("artifact {path} is larger than {limit} bytes")]
    TooLarge {
        /// The path.
        path: String,
        /// The limit.
        limit: u64,
    },
    /// The store cannot be opened as configured.
    #[error("the artifact store is not usable: {0}")]
    Config(String),
    /// The store failed (disk full, bucket unreachable, access denied, …).
    #[error("the artifact store {location} failed on {path}: {message}")]
    Store {
        /// Where the store is (no credentials).
        location: String,
        /// The artifact.
        path: String,
        /// What the store said.
        message: String,
    },
}

/// Which kind of store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A directory on this host.
    Local,
    /// S3-compatible object storage.
    S3,
}

impl Backend {
    /// The `backend` label of the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::S3 => "s3",
        }
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The file or directory name.
    pub name: String,
    /// A directory (a common prefix on object storage).
    pub dir: bool,
    /// Size of a file; 0 for directories.
    pub bytes: u64,
}

/// One stored file, found by [`Artifacts::walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// Its path, `artifacts/…`.
    pub path: String,
    /// Its size.
    pub bytes: u64,
}

/// The artifact store of one process; cheap to clone.
#[derive(Clone)]
pub struct Artifacts {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    backend: Backend,
    location: String,
    /// The directory holding `artifacts/`, for the local backend's symbolic-link check.
    local_root: Option<PathBuf>,
    /// Writes in flight behind their callers.
    behind: behind::Behind,
}

impl std::fmt::Debug for Artifacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifacts").field("location", &self.inner.location).finish()
    }
}

impl Artifacts {
    /// Artifacts under `dir/artifacts/` (the embedded default: `dir` is the data directory, created
    /// if missing).
    pub fn local(dir: &Path) -> Result<Self, ArtifactError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ArtifactError::Config(format!("cannot create the directory {}: {e}", dir.display())))?;
        let root = std::fs::canonicalize(dir)
            .map_err(|e| ArtifactError::Config(format!("cannot resolve the directory {}: {e}", dir.display())))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| ArtifactError::Config(format!("cannot use the directory {}: {e}", root.display())))?;
        Ok(Self {
            inner: Arc::new(Inner {
                store: Arc::new(store),
                backend: Backend::Local,
                location: root.join(ROOT).display().to_string(),
                local_root: Some(root),
                behind: behind::Behind::default(),
            }),
        })
    }

    /// The store `url` names, or the data directory's when there is none:
    /// - none or empty: `data_dir/artifacts/`;
    /// - `file:///absolute/dir`: `/absolute/dir/artifacts/`;
    /// - `s3://bucket` or `s3://bucket/prefix`: `prefix/artifacts/…` in the bucket, with the endpoint,
    ///   region and credentials of the standard `AWS_*` variables (`AWS_ENDPOINT_URL`,
    ///   `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    ///   `AWS_ALLOW_HTTP`, …).
    pub fn open(url: Option<&str>, data_dir: &Path) -> Result<Self, ArtifactError> {
        let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
            return Self::local(data_dir);
        };
        let parsed = url::Url::parse(url).map_err(|e| {
            ArtifactError::Config(format!(
                "artifacts URL {url:?} is not a URL ({e}): use s3://bucket/prefix or file:///dir"
            ))
        })?;
        match parsed.scheme() {
            "file" => {
                let dir = parsed.to_file_path().map_err(|()| {
                    ArtifactError::Config(format!("artifacts URL {url:?}: a file URL needs an absolute path"))
                })?;
                Self::local(&dir)
            }
            "s3" => Self::s3(&parsed, std::env::vars()),
            other => Err(ArtifactError::Config(format!(
                "artifacts URL {url:?}: scheme {other:?} is not supported; use s3://bucket/prefix (S3-compatible storage) or file:///dir"
            ))),
        }
    }

    /// S3-compatible storage at `url` (`s3://bucket/prefix`), configured from `settings` (pairs of
    /// the `AWS_*` variable names and values) instead of the process environment.
    pub fn s3_with_settings(
        url: &str,
        settings: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ArtifactError> {
        let parsed = url::Url::parse(url).map_err(|e| {
            ArtifactError::Config(format!("artifacts URL {url:?} is not a URL ({e}): use s3://bucket/prefix"))
        })?;
        if parsed.scheme() != "s3" {
            return Err(ArtifactError::Config(format!("artifacts URL {url:?}: use s3://bucket/prefix")));
        }
        Self::s3(&parsed, settings.into_iter())
    }

    /// S3-compatible storage at `url` (`s3://bucket/prefix`), configured from `env` (the `AWS_*`
    /// variables).
    fn s3(url: &url::Url, env: impl Iterator<Item = (String, String)>) -> Result<Self, ArtifactError> {
        let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
            ArtifactError::Config(format!("artifacts URL {:?} names no bucket: use s3://bucket/prefix", url.as_str()))
        })?;
        let prefix: Vec<&str> = url.path().split('/').filter(|s| !s.is_empty()).collect();
        for segment in &prefix {
            model::artifact::safe_segment(segment)
                .map_err(|e| ArtifactError::Config(format!("artifacts URL {:?}: the prefix: {e}", url.as_str())))?;
        }
        let mut builder = object_store::aws::AmazonS3Builder::new();
        let (mut endpoint, mut allow_http) = (None, false);
        for (key, value) in env {
            if !key.starts_with("AWS_") {
                continue;
            }
            let lower = key.to_ascii_lowercase();
            if matches!(lower.as_str(), "aws_endpoint_url" | "aws_endpoint" | "aws_endpoint_url_s3") {
                endpoint = Some(value.clone());
            }
            if lower == "aws_allow_http" {
                allow_http = matches!(value.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on");
            }
            if let Ok(config_key) = lower.parse::<object_store::aws::AmazonS3ConfigKey>() {
                builder = builder.with_config(config_key, value);
            }
        }
        if let Some(endpoint) = &endpoint
            && endpoint.starts_with("http://")
            && !allow_http
        {
            return Err(ArtifactError::Config(format!(
                "the S3 endpoint {endpoint} is plain HTTP: set AWS_ALLOW_HTTP=true to allow it (for a local test server), or use https://"
            )));
        }
        // the HTTP client's TLS needs a process-wide provider (reqwest is built without its own)
        let _ = rustls::crypto::ring::default_provider().install_default();
        let retry = object_store::RetryConfig {
            max_retries: 4,
            retry_timeout: Duration::from_secs(15),
            backoff: object_store::BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
        };
        let client = object_store::ClientOptions::new()
            .with_allow_http(allow_http)
            .with_timeout(Duration::from_secs(30))
            .with_connect_timeout(Duration::from_secs(5));
        let store = builder
            .with_bucket_name(bucket)
            .with_retry(retry)
            .with_client_options(client)
            .build()
            .map_err(|e| ArtifactError::Config(format!("S3 bucket {bucket}: {e}")))?;
        let mut location = format!("s3://{bucket}");
        if !prefix.is_empty() {
            location = format!("{location}/{}", prefix.join("/"));
        }
        if let Some(endpoint) = &endpoint {
            location = format!("{location} at {}", endpoint_without_credentials(endpoint));
        }
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(store)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(store, prefix.join("/")))
        };
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                backend: Backend::S3,
                location,
                local_root: None,
                behind: behind::Behind::default(),
            }),
        })
    }

    /// Which kind of store this is.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Where the artifacts are, for people (a directory, or `s3://bucket/prefix at endpoint`), with
    /// no credentials.
    pub fn location(&self) -> &str {
        &self.inner.location
    }

    /// The directory holding `artifacts/` when the store is local.
    pub fn local_root(&self) -> Option<&Path> {
        self.inner.local_root.as_deref()
    }

    /// Writes one file whole. Counted in `cogo_artifact_writes_total{family,backend}`, or in
    /// `cogo_artifact_write_failures_total{family}` when it fails.
    pub async fn put(&self, path: &str, bytes: impl Into<Bytes>) -> Result<(), ArtifactError> {
        let location = checked(path)?;
        let family = family(path);
        let started = Instant::now();
        let written = self.inner.store.put(&location, bytes.into().into()).await;
        metrics::histogram!(model::metrics::ARTIFACT_WRITE_LATENCY_MS, "backend" => self.inner.backend.as_str())
            .record(started.elapsed().as_secs_f64() * 1000.0);
        match written {
            Ok(_) => {
                metrics::counter!(model::metrics::ARTIFACT_WRITES_TOTAL, "family" => family, "backend" => self.inner.backend.as_str())
                    .increment(1);
                Ok(())
            }
            Err(err) => {
                metrics::counter!(model::metrics::ARTIFACT_WRITE_FAILURES_TOTAL, "family" => family).increment(1);
                let err = self.store_error(path, &err);
                tracing::warn!(error = %err, "artifact not written");
                Err(err)
            }
        }
    }

    /// Writes `files` (name, bytes) into the directory `dir`, all at once; the first failure is
    /// returned after every write has ended.
    pub async fn put_all(&self, dir: &str, files: Vec<(String, Vec<u8>)>) -> Result<(), ArtifactError> {
        let writes = files.into_iter().map(|(name, bytes)| {
            let path = format!("{dir}/{name}");
            async move { self.put(&path, bytes).await }
        });
        let results = futures_util::future::join_all(writes).await;
        results.into_iter().collect()
    }

    /// A file's bytes, refused when larger than `limit`.
    pub async fn get(&self, path: &str, limit: u64) -> Result<Bytes, ArtifactError> {
        let location = checked(path)?;
        self.inner.behind.settle(Some(path)).await;
        self.inside(path).await?;
        let result = self.inner.store.get(&location).await.map_err(|err| self.read_error(path, &err))?;
        if result.meta.size > limit {
            return Err(ArtifactError::TooLarge { path: path.to_owned(), limit });
        }
        result.bytes().await.map_err(|err| self.read_error(path, &err))
    }

    /// The size of a file, or `None` when there is no file at `path` (a directory or nothing).
    pub async fn size(&self, path: &str) -> Result<Option<u64>, ArtifactError> {
        let location = checked(path)?;
        self.inner.behind.settle(Some(path)).await;
        self.inside(path).await?;
        if let Some(root) = self.local_root() {
            // a directory is not a file (the local store would answer with an error, not "not found")
            if tokio::fs::metadata(root.join(path)).await.is_ok_and(|m| m.is_dir()) {
                return Ok(None);
            }
        }
        match self.inner.store.head(&location).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(self.read_error(path, &err)),
        }
    }

    /// The files and directories directly inside `dir`, sorted by name, at most [`MAX_LISTING`];
    /// [`ArtifactError::NotFound`] when there is nothing there.
    pub async fn list(&self, dir: &str) -> Result<Vec<Entry>, ArtifactError> {
        let location = checked_dir(dir)?;
        self.inner.behind.settle(Some(dir)).await;
        self.inside(dir).await?;
        if let Some(root) = self.local_root() {
            let (root, dir_owned) = (root.to_path_buf(), dir.to_owned());
            let mut entries = tokio::task::spawn_blocking(move || local_list(&root, &dir_owned))
                .await
                .map_err(|_| self.stopped(dir))?;
            if entries.is_empty() {
                return Err(ArtifactError::NotFound(dir.to_owned()));
            }
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            return Ok(entries);
        }
        let listing =
            self.inner.store.list_with_delimiter(Some(&location)).await.map_err(|err| self.read_error(dir, &err))?;
        let mut entries: Vec<Entry> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(|name| Entry { name: name.to_owned(), dir: true, bytes: 0 }))
            .chain(listing.objects.iter().filter_map(|o| {
                o.location.filename().map(|name| Entry { name: name.to_owned(), dir: false, bytes: o.size })
            }))
            .filter(|e| shown(&e.name))
            .take(MAX_LISTING)
            .collect();
        if entries.is_empty() {
            return Err(ArtifactError::NotFound(dir.to_owned()));
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Every file under `dir` (recursively), at most `limit`, in the store's order; empty when
    /// there is nothing there.
    pub async fn walk(&self, dir: &str, limit: usize) -> Result<Vec<StoredFile>, ArtifactError> {
        let location = checked_dir(dir)?;
        self.inner.behind.settle(Some(dir)).await;
        self.inside(dir).await?;
        if let Some(root) = self.local_root() {
            let (root, dir_owned) = (root.to_path_buf(), dir.to_owned());
            return tokio::task::spawn_blocking(move || local_walk(&root, &dir_owned, limit))
                .await
                .map_err(|_| self.stopped(dir));
        }
        let files: Vec<object_store::ObjectMeta> = self
            .inner
            .store
            .list(Some(&location))
            .take(limit)
            .try_collect()
            .await
            .map_err(|err| self.read_error(dir, &err))?;
        Ok(files
            .into_iter()
            .filter(|meta| meta.location.filename().is_some_and(shown))
            .map(|meta| StoredFile { path: meta.location.to_string(), bytes: meta.size })
            .collect())
    }

    /// Deletes one file (no error when it is already gone).
    pub async fn delete(&self, path: &str) -> Result<(), ArtifactError> {
        let location = checked(path)?;
        match self.inner.store.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(self.store_error(path, &err)),
        }
    }

    /// Copies every file under the local directory `from` to `dir` (the artifacts of a run made on
    /// this host, such as a gate run, for a remote store); returns how many files were copied.
    pub async fn upload_dir(&self, from: &Path, dir: &str) -> Result<usize, ArtifactError> {
        checked(dir)?;
        let mut pending = vec![(from.to_path_buf(), dir.to_owned())];
        let mut files = Vec::new();
        while let Some((local, remote)) = pending.pop() {
            let mut entries = tokio::fs::read_dir(&local).await.map_err(|e| self.local_error(&local, &e))?;
            while let Some(entry) = entries.next_entry().await.map_err(|e| self.local_error(&local, &e))? {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !shown(&name) {
                    continue;
                }
                let kind = entry.file_type().await.map_err(|e| self.local_error(&entry.path(), &e))?;
                if kind.is_dir() {
                    pending.push((entry.path(), format!("{remote}/{name}")));
                } else if kind.is_file() {
                    files.push((entry.path(), format!("{remote}/{name}")));
                }
            }
        }
        let count = files.len();
        futures_util::stream::iter(files)
            .map(|(local, remote)| async move {
                let bytes = tokio::fs::read(&local).await.map_err(|e| self.local_error(&local, &e))?;
                self.put(&remote, bytes).await
            })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(count)
    }

    /// Checks the store answers and takes writes: writes, reads back and deletes a probe file
    /// under `artifacts/.probe/` (a name the API never serves). Run at start-up, so a wrong bucket,
    /// endpoint or credential stops the process with the reason instead of failing each artifact.
    pub async fn probe(&self, instance: &str) -> Result<(), ArtifactError> {
        let name: String =
            instance.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).take(64).collect();
        let path = format!("{ROOT}/.probe/{name}");
        let location = ObjectPath::parse(&path)
            .map_err(|e| ArtifactError::InvalidPath { path: path.clone(), reason: e.to_string() })?;
        let body = Bytes::from_static(b"cogo artifact store probe");
        let store = &self.inner.store;
        store.put(&location, body.clone().into()).await.map_err(|err| self.store_error(&path, &err))?;
        let read = store.get(&location).await.map_err(|err| self.store_error(&path, &err))?;
        let read = read.bytes().await.map_err(|err| self.store_error(&path, &err))?;
        if read != body {
            return Err(ArtifactError::Store {
                location: self.inner.location.clone(),
                path,
                message: "the probe read back differs from what was written".into(),
            });
        }
        store.delete(&location).await.map_err(|err| self.store_error(&path, &err))?;
        Ok(())
    }

    /// On disk, refuses a path that resolves (through symbolic links) out of `artifacts/`.
    async fn inside(&self, path: &str) -> Result<(), ArtifactError> {
        let Some(root) = self.local_root() else { return Ok(()) };
        let top = root.join(ROOT);
        let (Ok(top), Ok(target)) =
            (tokio::fs::canonicalize(&top).await, tokio::fs::canonicalize(root.join(path)).await)
        else {
            return Ok(()); // nothing there (yet): the store answers "not found"
        };
        if target.starts_with(&top) {
            Ok(())
        } else {
            Err(ArtifactError::InvalidPath {
                path: path.to_owned(),
                reason: "it leads out of the artifacts directory".into(),
            })
        }
    }

    fn stopped(&self, path: &str) -> ArtifactError {
        ArtifactError::Store {
            location: self.inner.location.clone(),
            path: path.to_owned(),
            message: "the directory reader stopped".into(),
        }
    }

    fn read_error(&self, path: &str, err: &object_store::Error) -> ArtifactError {
        match err {
            object_store::Error::NotFound { .. } => ArtifactError::NotFound(path.to_owned()),
            other => self.store_error(path, other),
        }
    }

    fn store_error(&self, path: &str, err: &object_store::Error) -> ArtifactError {
        ArtifactError::Store { location: self.inner.location.clone(), path: path.to_owned(), message: err.to_string() }
    }

    fn local_error(&self, local: &Path, err: &std::io::Error) -> ArtifactError {
        ArtifactError::Store {
            location: self.inner.location.clone(),
            path: local.display().to_string(),
            message: err.to_string(),
        }
    }
}

/// Whether a name in an artifact directory is shown: plain names only (not the temporary files of
/// writes under way, not hidden files).
fn shown(name: &str) -> bool {
    !name.starts_with('.') && model::artifact::safe_segment(name).is_ok()
}

/// The entries of the local directory `root/dir`, symbolic links left out (they may lead anywhere).
fn local_list(root: &Path, dir: &str) -> Vec<Entry> {
    let Ok(read) = std::fs::read_dir(root.join(dir)) else { return Vec::new() };
    read.flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_owned();
            let kind = entry.file_type().ok()?;
            if !shown(&name) || kind.is_symlink() {
                return None;
            }
            let bytes = if kind.is_file() { entry.metadata().map(|m| m.len()).unwrap_or(0) } else { 0 };
            Some(Entry { name, dir: kind.is_dir(), bytes })
        })
        .take(MAX_LISTING)
        .collect()
}

/// The files under the local directory `root/dir`, depth first, at most `limit`; symbolic links
/// are not followed.
fn local_walk(root: &Path, dir: &str, limit: usize) -> Vec<StoredFile> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(read) = std::fs::read_dir(root.join(&dir)) else { continue };
        for entry in read.flatten() {
            let (Some(name), Ok(kind)) = (entry.file_name().to_str().map(str::to_owned), entry.file_type()) else {
                continue;
            };
            if !shown(&name) {
                continue;
            }
            if kind.is_dir() {
                pending.push(format!("{dir}/{name}"));
            } else if kind.is_file() {
                files.push(StoredFile {
                    path: format!("{dir}/{name}"),
                    bytes: entry.metadata().map(|m| m.len()).unwrap_or(0),
                });
                if files.len() >= limit {
                    return files;
                }
            }
        }
    }
    files
}

/// The family of an artifact path (`mcp`, `decisions`, …), the metrics' `family` label.
fn family(path: &str) -> &'static str {
    match path.split('/').nth(1) {
        Some("mcp") => "mcp",
        Some("decisions") => "decisions",
        Some("codegen") => "codegen",
        Some("metrics") => "metrics",
        Some("gate-run") => "gate-run",
        Some("full-scenario") => "full-scenario",
        Some("docker-scenario") => "docker-scenario",
        _ => "other",
    }
}

/// `path` as a store location of a file, after checking it is `artifacts/…` with safe segments only.
fn checked(path: &str) -> Result<ObjectPath, ArtifactError> {
    checked_under(path, 1)
}

/// `path` as a store location of a directory: `artifacts` itself or below it.
fn checked_dir(path: &str) -> Result<ObjectPath, ArtifactError> {
    checked_under(path, 0)
}

fn checked_under(path: &str, min_names: usize) -> Result<ObjectPath, ArtifactError> {
    let invalid = |reason: String| ArtifactError::InvalidPath { path: path.to_owned(), reason };
    let mut segments = path.split('/');
    if segments.next() != Some(ROOT) {
        return Err(invalid(format!("it must start with {ROOT}/")));
    }
    let mut count = 0;
    for segment in segments {
        count += 1;
        if segment.starts_with('.') {
            return Err(invalid(format!("segment {segment:?} is hidden")));
        }
        model::artifact::safe_segment(segment).map_err(|e| invalid(e.to_string()))?;
    }
    if count < min_names || count > 16 {
        return Err(invalid(format!("it needs {min_names} to 16 names after artifacts/")));
    }
    ObjectPath::parse(path).map_err(|e| invalid(e.to_string()))
}

/// An endpoint URL without user information (`https://user:secret@host` → `https://host`).
fn endpoint_without_credentials(endpoint: &str) -> String {
    match url::Url::parse(endpoint) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string().trim_end_matches('/').to_owned()
        }
        Err(_) => "(an endpoint that is not a URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_plain_names_under_artifacts() {
        assert!(checked("artifacts/mcp/echo/T1/request.json").is_ok());
        assert!(checked("artifacts").is_err() && checked_dir("artifacts").is_ok());
        for bad in [
            "",
            "mcp/x",
            "/artifacts/x",
            "artifacts/../x",
            "artifacts/mcp/../../etc",
            "artifacts//x",
            "artifacts/.probe/x",
            "artifacts/a b",
            "artifacts/x/",
        ] {
            assert!(checked(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn s3_settings_are_checked_and_never_show_credentials() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let url = url::Url::parse("s3://bucket/team/prod").expect("url");
        let plain = env(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"), ("AWS_REGION", "us-east-1")]);
        let err = Artifacts::s3(&url, plain.into_iter()).expect_err("plain http refused");
        assert!(err.to_string().contains("AWS_ALLOW_HTTP=true"), "{err}");
        let ok = env(&[
            ("AWS_ENDPOINT_URL", "http://user:hunter22@127.0.0.1:9000"),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret-key"),
        ]);
        let store = Artifacts::s3(&url, ok.into_iter()).expect("store");
        assert_eq!(store.location(), "s3://bucket/team/prod at http://127.0.0.1:9000");
        let shown = format!("{store:?}");
        assert!(!shown.contains("hunter22") && !shown.contains("very-secret-key"), "{shown}");
        let no_bucket = url::Url::parse("s3:///x").expect("url");
        assert!(Artifacts::s3(&no_bucket, std::iter::empty()).is_err());
        let bad_prefix = url::Url::parse("s3://bucket/a%20b").expect("url");
        assert!(Artifacts::s3(&bad_prefix, std::iter::empty()).is_err());
        for bad in ["gs://bucket", "not a url", "http://host/x"] {
            let err = Artifacts::open(Some(bad), Path::new("/nonexistent")).expect_err(bad);
            assert!(matches!(err, ArtifactError::Config(_)), "{bad}: {err}");
        }
    }
}
