//! COGO's knowledge layer: ingestion of files and inline documents, structure-aware chunking,
//! real embeddings (all-MiniLM-L6-v2 in-process with candle, or an OpenAI-compatible endpoint),
//! hybrid search (full text + vectors), the knowledge graph extracted from document structure and
//! code, graph traversal, GraphRAG, and retrieval evaluation. SQL stays in the `store` crate.

pub mod chunk;
pub mod embed;
pub mod eval;
pub mod graph;
pub mod index;
pub mod llm_extract;
pub mod pdf;
pub mod roles;
pub mod search;
mod telemetry;

pub use embed::{Embedder, MiniLm, OpenAiEmbedder};
pub use index::{IndexReport, Indexer, InlineDocument, InlineKind, Progress};
pub use llm_extract::LlmExtractor;
pub use search::{Evidence, Fusion, SearchHit, SearchMode, SearchRequest, Searcher};

/// Everything that can go wrong in the knowledge layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request or document breaks a rule (named in the message).
    #[error("{0}")]
    Invalid(String),
    /// The embedding model's files are not where they should be.
    #[error("the embedding model is missing: {path} does not exist; {hint}")]
    ModelMissing {
        /// The missing file.
        path: String,
        /// How to get it.
        hint: String,
    },
    /// The model failed to load or run.
    #[error("embedding model: {0}")]
    Model(String),
    /// The embeddings endpoint failed or answered badly.
    #[error("embeddings provider: {0}")]
    Provider(String),
    /// A file could not be read.
    #[error("reading {path}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Error {
    /// Whether trying again may succeed (the store or the provider was unavailable).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(err) => err.is_transient(),
            Self::Provider(_) => true,
            _ => false,
        }
    }
}
