//! Ingestion: files and directories (or documents given inline) are read, hashed, chunked,
//! embedded in batches across documents, and written with their graph, one document per
//! transaction. Unchanged documents (same content hash) are skipped, chunks whose text is already
//! stored reuse their embedding, and documents that vanished from an indexed directory are deleted.
//! Invariant: a document is either fully indexed at its new version or still at its old one.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use store::knowledge::{KnowledgeScope, NewChunk, NewDocument};

use crate::Error;
use crate::chunk::{ChunkOptions, DocumentKind, chunk, html_to_text};
use crate::embed::Embedder;
use crate::graph::{Extracted, extract};
use crate::llm_extract::{LlmExtractor, merge};

/// Largest file indexed; bigger ones are skipped and reported.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Most files one run visits.
pub const MAX_FILES: usize = 200_000;
/// Directories never entered.
const SKIPPED_DIRS: [&str; 8] = ["node_modules", "target", ".git", "dist", "build", "__pycache__", ".venv", "venv"];

/// A document given inline (API, bus message) instead of read from disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InlineDocument {
    /// Its source name (a path or URL), unique in the project.
    #[schemars(length(min = 1, max = 2048))]
    pub source: String,
    /// Its text.
    pub text: String,
    /// What it is; guessed from the source's extension when absent (text when unknown).
    #[serde(default)]
    pub kind: Option<InlineKind>,
}

/// The kind of an inline document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InlineKind {
    /// Markdown.
    Markdown,
    /// Plain text.
    Text,
    /// Source code.
    Code,
    /// HTML (indexed as the text it shows).
    Html,
}

impl From<InlineKind> for DocumentKind {
    fn from(kind: InlineKind) -> Self {
        match kind {
            InlineKind::Markdown => Self::Markdown,
            InlineKind::Text => Self::Text,
            InlineKind::Code => Self::Code,
            InlineKind::Html => Self::Html,
        }
    }
}

/// What an indexing run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IndexReport {
    /// Documents looked at.
    pub seen: usize,
    /// Documents written (new or changed).
    pub indexed: usize,
    /// Documents skipped because their content did not change.
    pub unchanged: usize,
    /// Documents deleted because they vanished.
    pub deleted: usize,
    /// Documents not indexed, with the reason.
    pub skipped: Vec<Skipped>,
    /// Chunks written.
    pub chunks: usize,
    /// Chunks embedded now.
    pub embedded: usize,
    /// Chunks whose embedding was reused from identical stored text.
    pub reused: usize,
    /// Entities and relations written (counting repeats across documents).
    pub graph_items: usize,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
    /// The embedding model.
    pub model: String,
    /// What LLM graph extraction did (`--llm-extraction`); none when it was not asked for.
    #[serde(default)]
    pub llm: Option<LlmReport>,
}

/// What LLM extraction did in one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LlmReport {
    /// The model, as `provider/model`.
    pub model: String,
    /// Chunks the model answered for.
    pub chunks: usize,
    /// Chunks whose call failed (they keep their structural graph).
    pub failed: usize,
    /// Entities kept (named in their chunk's text).
    pub entities: usize,
    /// Relations kept (between kept entities).
    pub relations: usize,
    /// The first failure, to say what to fix.
    pub first_error: Option<String>,
}

/// A document that was not indexed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Skipped {
    /// Its source.
    pub source: String,
    /// Why.
    pub reason: String,
}

/// Progress of a run, for progress bars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Documents finished.
    pub done: usize,
    /// Documents in the run.
    pub total: usize,
    /// Chunks written so far.
    pub chunks: usize,
}

/// Documents written or deleted by one run from which the tables' statistics are refreshed.
pub const ANALYZE_AFTER: usize = 50;

/// Writes documents into the knowledge store.
#[derive(Debug, Clone)]
pub struct Indexer<E: ?Sized> {
    store: store::Store,
    embedder: Arc<E>,
    chunking: ChunkOptions,
    /// Chunks embedded together (across documents).
    batch: usize,
    /// Graph extraction from text by an LLM, when configured.
    llm: Option<Arc<LlmExtractor>>,
}

struct Pending {
    source: String,
    kind: DocumentKind,
    title: Option<String>,
    hash: String,
    bytes: i64,
    text: String,
    /// A PDF file's bytes, read into `text` once the file is known to have changed.
    pdf: Option<Vec<u8>>,
}

impl<E: Embedder + ?Sized> Indexer<E> {
    /// An indexer with default chunking.
    pub fn new(store: store::Store, embedder: Arc<E>) -> Self {
        Self { store, embedder, chunking: ChunkOptions::default(), batch: 256, llm: None }
    }

    /// Entities and relations are also extracted from the text by `extractor` (an LLM), besides
    /// the structure; only for documents that are new or changed.
    pub fn with_llm_extraction(mut self, extractor: LlmExtractor) -> Self {
        self.llm = Some(Arc::new(extractor));
        self
    }

    /// Chunk sizes.
    pub fn with_chunking(mut self, chunking: ChunkOptions) -> Self {
        self.chunking = chunking;
        self
    }

    /// Records the embedder's model in the index (refusing an index built with another model
    /// unless `rebuild`, which empties it).
    pub async fn prepare(&self, rebuild: bool) -> Result<(), Error> {
        self.store.knowledge_prepare(self.embedder.model(), self.embedder.dim(), rebuild).await?;
        Ok(())
    }

    /// Indexes a file or a directory. Sources are `<name of PATH>/<relative path>` for a directory
    /// (so two directories in one project do not collide) and the file name for a file; documents
    /// under a directory's prefix that are no longer there are deleted.
    pub async fn index_path(
        &self,
        scope: &KnowledgeScope,
        path: &Path,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<IndexReport, Error> {
        let started = Instant::now();
        let metadata =
            std::fs::metadata(path).map_err(|err| Error::Io { path: path.display().to_string(), source: err })?;
        let name = path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "root".into());
        let (files, prefix) = if metadata.is_dir() {
            let mut files = Vec::new();
            walk(path, path, &mut files)?;
            files.sort();
            (
                files.into_iter().map(|(relative, full)| (format!("{name}/{relative}"), full)).collect::<Vec<_>>(),
                Some(format!("{name}/")),
            )
        } else {
            (vec![(name.clone(), path.to_path_buf())], None)
        };
        let mut report = IndexReport::default();
        let mut documents = Vec::with_capacity(files.len());
        for (source, full) in &files {
            match read_document(source, full) {
                Ok(Some(document)) => documents.push(document),
                Ok(None) => {}
                Err(reason) => report.skipped.push(Skipped { source: source.clone(), reason }),
            }
        }
        let seen: HashSet<String> = files.iter().map(|(source, _)| source.clone()).collect();
        let mut report = self.index_documents(scope, documents, report, progress).await?;
        if let Some(prefix) = prefix {
            let vanished: Vec<String> = self
                .store
                .knowledge_documents(scope)
                .await?
                .into_iter()
                .filter(|d| d.source.starts_with(&prefix) && !seen.contains(&d.source))
                .map(|d| d.source)
                .collect();
            report.deleted = self.store.knowledge_delete_documents(scope, &vanished).await? as usize;
        }
        self.analyze_after(&report).await?;
        report.seen = files.len();
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        crate::telemetry::documents(report.indexed, report.unchanged, report.deleted, report.skipped.len());
        Ok(report)
    }

    /// After a large change (at least [`ANALYZE_AFTER`] documents written or deleted) the planner's
    /// statistics are refreshed, so the next walks and searches are not planned for the old tables.
    async fn analyze_after(&self, report: &IndexReport) -> Result<(), Error> {
        if report.indexed + report.deleted >= ANALYZE_AFTER {
            self.store.knowledge_analyze().await?;
        }
        Ok(())
    }

    /// Indexes documents given inline.
    pub async fn index_inline(
        &self,
        scope: &KnowledgeScope,
        inline: Vec<InlineDocument>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<IndexReport, Error> {
        let started = Instant::now();
        let mut report = IndexReport::default();
        let mut documents = Vec::with_capacity(inline.len());
        for document in inline {
            let kind = match document.kind {
                Some(kind) => DocumentKind::from(kind),
                None => DocumentKind::of_path(&document.source).unwrap_or(DocumentKind::Text),
            };
            if document.source.is_empty() || document.source.chars().count() > 2048 {
                return Err(Error::Invalid("a document's source must be 1 to 2048 bytes".into()));
            }
            if document.text.len() as u64 > MAX_FILE_BYTES {
                report.skipped.push(Skipped {
                    source: document.source.clone(),
                    reason: format!("{} bytes, over the limit of {MAX_FILE_BYTES}", document.text.len()),
                });
                continue;
            }
            documents.push(pending(document.source, kind, document.text));
        }
        let seen = documents.len() + report.skipped.len();
        let mut report = self.index_documents(scope, documents, report, progress).await?;
        self.analyze_after(&report).await?;
        report.seen = seen;
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        crate::telemetry::documents(report.indexed, report.unchanged, report.deleted, report.skipped.len());
        Ok(report)
    }

    async fn index_documents(
        &self,
        scope: &KnowledgeScope,
        documents: Vec<Pending>,
        mut report: IndexReport,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<IndexReport, Error> {
        self.prepare(false).await?;
        report.model = self.embedder.model().to_owned();
        let known: HashMap<String, String> =
            self.store.knowledge_documents(scope).await?.into_iter().map(|d| (d.source, d.content_hash)).collect();
        let total = documents.len();
        let mut batch: Vec<(Pending, Vec<crate::chunk::Chunk>, Vec<crate::chunk::Heading>)> = Vec::new();
        let mut batch_chunks = 0;
        let mut last_progress = Instant::now() - Duration::from_secs(1);
        for (position, mut document) in documents.into_iter().enumerate() {
            let done = position + 1;
            if known.get(&document.source) == Some(&document.hash) {
                report.unchanged += 1;
                continue;
            }
            // a PDF's text is read only when the file is new or changed
            if let Some(bytes) = document.pdf.take() {
                match crate::pdf::read_text(bytes).await {
                    Ok(read) => (document.text, document.title) = (read.text, read.title),
                    Err(reason) => {
                        report.skipped.push(Skipped { source: document.source.clone(), reason });
                        continue;
                    }
                }
            }
            let (chunks, headings) = chunk(&document.text, document.kind, self.chunking);
            batch_chunks += chunks.len();
            batch.push((document, chunks, headings));
            if batch_chunks >= self.batch {
                self.flush(scope, std::mem::take(&mut batch), &mut report).await?;
                batch_chunks = 0;
            }
            if last_progress.elapsed() >= Duration::from_millis(100) {
                progress(Progress { done, total, chunks: report.chunks });
                last_progress = Instant::now();
            }
        }
        self.flush(scope, batch, &mut report).await?;
        progress(Progress { done: total, total, chunks: report.chunks });
        Ok(report)
    }

    /// Embeds the chunks of several documents together and writes each document.
    async fn flush(
        &self,
        scope: &KnowledgeScope,
        batch: Vec<(Pending, Vec<crate::chunk::Chunk>, Vec<crate::chunk::Heading>)>,
        report: &mut IndexReport,
    ) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        // the text embedded is the heading path and the chunk, so a chunk knows where it sits
        let mut inputs: Vec<(String, String)> = Vec::new();
        for (document, chunks, _) in &batch {
            for c in chunks {
                let text = &document.text[c.start..c.end];
                let input = match &c.heading {
                    Some(heading) if !text.trim_start().starts_with('#') => format!("{heading}\n{text}"),
                    _ => text.to_owned(),
                };
                inputs.push((sha256(input.as_bytes()), input));
            }
        }
        let hashes: Vec<String> =
            inputs.iter().map(|(hash, _)| hash.clone()).collect::<HashSet<_>>().into_iter().collect();
        let mut vectors = self.store.knowledge_embeddings_by_hash(&hashes).await?;
        let mut missing: Vec<(String, String)> = Vec::new();
        let mut queued = HashSet::new();
        for (hash, input) in &inputs {
            if !vectors.contains_key(hash) && queued.insert(hash.clone()) {
                missing.push((hash.clone(), input.clone()));
            }
        }
        report.reused += inputs.len() - missing.len();
        for group in missing.chunks(crate::embed::MAX_BATCH) {
            let texts: Vec<String> = group.iter().map(|(_, input)| input.clone()).collect();
            let embedded = self.embedder.embed(texts).await?;
            if embedded.len() != group.len() {
                return Err(Error::Model(format!("asked for {} embeddings, got {}", group.len(), embedded.len())));
            }
            report.embedded += group.len();
            for ((hash, _), vector) in group.iter().zip(embedded) {
                vectors.insert(hash.clone(), vector);
            }
        }
        let mut position = 0;
        for (document, chunks, headings) in batch {
            let mut graph = extract(&document.source, document.kind, &document.text, &chunks, &headings);
            if let Some(extractor) = &self.llm {
                let texts: Vec<&str> = chunks.iter().map(|c| &document.text[c.start..c.end]).collect();
                extract_with_llm(extractor, &texts, &mut graph, report).await;
            }
            let mut new_chunks = Vec::with_capacity(chunks.len());
            for c in &chunks {
                let (hash, _) = &inputs[position];
                position += 1;
                let embedding = vectors.get(hash).cloned().ok_or(Error::Model("a chunk lost its embedding".into()))?;
                new_chunks.push(NewChunk {
                    heading: c.heading.clone(),
                    text: document.text[c.start..c.end].to_owned(),
                    start: c.start as i64,
                    end: c.end as i64,
                    content_hash: hash.clone(),
                    embedding,
                });
            }
            report.chunks += new_chunks.len();
            report.graph_items += graph.entities.len() + graph.relations.len();
            report.indexed += 1;
            self.store
                .knowledge_put_document(NewDocument {
                    scope: scope.clone(),
                    source: document.source,
                    kind: document.kind.name().to_owned(),
                    title: document.title,
                    content_hash: document.hash,
                    bytes: document.bytes,
                    chunks: new_chunks,
                    entities: graph.entities,
                    relations: graph.relations,
                    mentions: graph.mentions,
                })
                .await?;
        }
        Ok(())
    }
}

/// Adds to `graph` what the LLM finds in the first chunks of a document; failures are counted in
/// the report, never returned.
async fn extract_with_llm(extractor: &LlmExtractor, texts: &[&str], graph: &mut Extracted, report: &mut IndexReport) {
    let llm = report.llm.get_or_insert_with(|| LlmReport { model: extractor.model(), ..Default::default() });
    let document = graph.entities.iter().position(|e| e.kind == crate::graph::entity::DOCUMENT).unwrap_or(0);
    for (n, text) in texts.iter().enumerate().take(extractor.max_chunks()) {
        match extractor.chunk(text).await {
            Ok(found) => {
                llm.chunks += 1;
                llm.entities += found.entities.len();
                llm.relations += found.relations.len();
                merge(graph, document, n, &found);
            }
            Err(err) => {
                llm.failed += 1;
                tracing::warn!(error = %err, "LLM graph extraction failed for a chunk; it keeps its structural graph");
                llm.first_error.get_or_insert_with(|| err.to_string());
            }
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn pending(source: String, kind: DocumentKind, raw: String) -> Pending {
    let hash = sha256(raw.as_bytes());
    let bytes = raw.len() as i64;
    let (text, title) = match kind {
        DocumentKind::Html => html_to_text(&raw),
        DocumentKind::Markdown => {
            let title = raw.lines().find_map(|l| l.strip_prefix("# ")).map(|t| t.trim().to_owned());
            (raw, title)
        }
        DocumentKind::Text | DocumentKind::Code | DocumentKind::Pdf => (raw, None),
    };
    Pending { source, kind, title, hash, bytes, text, pdf: None }
}

/// Reads one file: `Ok(None)` for files that are not documents, `Err(reason)` for ones that cannot be.
fn read_document(source: &str, path: &Path) -> Result<Option<Pending>, String> {
    let Some(kind) = DocumentKind::of_path(source) else { return Ok(None) };
    let metadata = std::fs::metadata(path).map_err(|err| format!("cannot read: {err}"))?;
    if kind == DocumentKind::Pdf {
        if metadata.len() > crate::pdf::MAX_PDF_BYTES {
            return Err(format!("{} bytes, over the PDF limit of {}", metadata.len(), crate::pdf::MAX_PDF_BYTES));
        }
        // the header is checked with the text, by `pdf::read_text`, once the file is known to have changed
        let bytes = std::fs::read(path).map_err(|err| format!("cannot read: {err}"))?;
        let (hash, size) = (sha256(&bytes), bytes.len() as i64);
        return Ok(Some(Pending {
            source: source.to_owned(),
            kind,
            title: None,
            hash,
            bytes: size,
            text: String::new(),
            pdf: Some(bytes),
        }));
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(format!("{} bytes, over the limit of {MAX_FILE_BYTES}", metadata.len()));
    }
    let bytes = std::fs::read(path).map_err(|err| format!("cannot read: {err}"))?;
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    if text.contains('\0') {
        return Err("binary content".into());
    }
    Ok(Some(pending(source.to_owned(), kind, text)))
}

/// Files under `dir`, as (relative path with `/`, full path); hidden entries and build or
/// dependency directories are skipped; symbolic links are not followed.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|err| Error::Io { path: dir.display().to_string(), source: err })?;
    for entry in entries {
        let entry = entry.map_err(|err| Error::Io { path: dir.display().to_string(), source: err })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let Ok(kind) = entry.file_type() else { continue };
        let path = entry.path();
        if kind.is_dir() {
            if !SKIPPED_DIRS.contains(&name.as_str()) {
                walk(root, &path, out)?;
            }
        } else if kind.is_file() && DocumentKind::of_path(&name).is_some() {
            if out.len() >= MAX_FILES {
                return Err(Error::Invalid(format!(
                    "more than {MAX_FILES} files under {}: index a smaller directory",
                    root.display()
                )));
            }
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let relative = relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            out.push((relative, path));
        }
    }
    Ok(())
}
