//! The knowledge tables' types: documents, chunks with embeddings, and the knowledge graph
//! (entities, relations, mentions). Invariant: a document and everything derived from it (chunks,
//! embeddings, mentions, the relations it evidences) are written and removed in one transaction,
//! so a search never sees half a document.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where documents live: every read and write names its tenant and project.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KnowledgeScope {
    /// The tenant.
    pub tenant: String,
    /// The project inside the tenant.
    pub project: String,
}

impl KnowledgeScope {
    /// A scope.
    pub fn new(tenant: impl Into<String>, project: impl Into<String>) -> Self {
        Self { tenant: tenant.into(), project: project.into() }
    }
}

/// What a search may return: one tenant, optionally one project and sources under a prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KnowledgeFilter {
    /// The tenant (required: a search never crosses tenants).
    pub tenant: String,
    /// Only this project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Only documents whose source starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_prefix: Option<String>,
}

impl KnowledgeFilter {
    /// Whether a document of this tenant, project and source passes the filter.
    pub(crate) fn admits(&self, tenant: &str, project: &str, source: &str) -> bool {
        tenant == self.tenant
            && self.project.as_deref().is_none_or(|p| project == p)
            && self.source_prefix.as_deref().is_none_or(|p| source.starts_with(p))
    }
}

/// A document as stored (without its chunks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StoredDocument {
    /// Its id.
    pub id: i64,
    /// Tenant and project.
    pub scope: KnowledgeScope,
    /// Where it came from (a relative path or a URL).
    pub source: String,
    /// `markdown`, `text`, `code`, `html`.
    pub kind: String,
    /// Its title, when it has one.
    pub title: Option<String>,
    /// SHA-256 of its bytes, hex.
    pub content_hash: String,
    /// Its size.
    pub bytes: i64,
    /// How many chunks it has.
    pub chunk_count: i64,
    /// When it was indexed.
    pub indexed_at: DateTime<Utc>,
}

/// A document to write, replacing any earlier version of the same source in its scope.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDocument {
    /// Tenant and project.
    pub scope: KnowledgeScope,
    /// Where it came from.
    pub source: String,
    /// `markdown`, `text`, `code`, `html`.
    pub kind: String,
    /// Its title.
    pub title: Option<String>,
    /// SHA-256 of its bytes, hex.
    pub content_hash: String,
    /// Its size.
    pub bytes: i64,
    /// Its chunks, in order.
    pub chunks: Vec<NewChunk>,
    /// Entities this document names (created if new in the scope).
    pub entities: Vec<EntityKey>,
    /// Relations this document is evidence for, between entities of `entities`.
    pub relations: Vec<NewRelation>,
    /// Which chunks mention which entities.
    pub mentions: Vec<NewMention>,
}

/// One chunk to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChunk {
    /// The heading path it sits under (`Guide > Install`).
    pub heading: Option<String>,
    /// Its text.
    pub text: String,
    /// Byte offset of its start in the document's text.
    pub start: i64,
    /// Byte offset of its end.
    pub end: i64,
    /// SHA-256 of its text, hex.
    pub content_hash: String,
    /// Its embedding (unit length, the index's dimension).
    pub embedding: Vec<f32>,
}

/// An entity's identity in a scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EntityKey {
    /// `document`, `section`, `function`, `type`, `module`, `url`, `term`, …
    pub kind: String,
    /// Its name.
    pub name: String,
}

impl EntityKey {
    /// An entity key.
    pub fn new(kind: impl Into<String>, name: impl Into<String>) -> Self {
        Self { kind: kind.into(), name: name.into() }
    }
}

/// A relation to write: indices into [`NewDocument::entities`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NewRelation {
    /// The source entity (index).
    pub source: usize,
    /// The target entity (index).
    pub target: usize,
    /// `contains`, `defines`, `imports`, `links_to`, …
    pub kind: String,
}

/// A mention to write: chunk ordinal and entity index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NewMention {
    /// The chunk (its position in [`NewDocument::chunks`]).
    pub chunk: usize,
    /// The entity (index into [`NewDocument::entities`]).
    pub entity: usize,
}

/// A chunk as read back for a hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StoredChunk {
    /// The chunk's id.
    pub id: i64,
    /// Its document.
    pub document_id: i64,
    /// The document's source.
    pub source: String,
    /// The document's title.
    pub title: Option<String>,
    /// Tenant and project.
    pub scope: KnowledgeScope,
    /// Its position in the document.
    pub ordinal: i64,
    /// The heading path it sits under.
    pub heading: Option<String>,
    /// Its text.
    pub text: String,
    /// Byte offset of its start in the document.
    pub start: i64,
    /// Byte offset of its end.
    pub end: i64,
}

/// A chunk id with a score from one retriever (higher is better).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ScoredChunk {
    /// The chunk.
    pub chunk_id: i64,
    /// The score: BM25-like for full text (higher better), cosine similarity for vectors.
    pub score: f32,
}

/// An entity as stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Entity {
    /// Its id.
    pub id: i64,
    /// Its kind.
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// A relation between two entities, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Edge {
    /// The source entity.
    pub source: i64,
    /// The target entity.
    pub target: i64,
    /// The relation's kind.
    pub kind: String,
    /// The document that is evidence for it.
    pub document_id: i64,
}

/// Which way to follow relations from an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From source to target.
    Out,
    /// From target to source.
    In,
    /// Either way.
    #[default]
    Both,
}

/// Counts of what an index holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KnowledgeStats {
    /// Documents.
    pub documents: i64,
    /// Chunks.
    pub chunks: i64,
    /// Entities.
    pub entities: i64,
    /// Relations.
    pub relations: i64,
    /// The embedding model the index was built with.
    pub embedding_model: Option<String>,
    /// Its dimension.
    pub embedding_dim: Option<i64>,
}

/// Bounds the store enforces on knowledge writes and reads.
pub mod limits {
    /// Most chunks one document may have.
    pub const MAX_CHUNKS_PER_DOCUMENT: usize = 20_000;
    /// Most characters in a chunk.
    pub const MAX_CHUNK_CHARS: usize = 32_768;
    /// Most results one retriever returns.
    pub const MAX_CANDIDATES: usize = 1_000;
    /// Longest full-text query, in characters.
    pub const MAX_QUERY_CHARS: usize = 2_000;
    /// Most entities one graph step expands.
    pub const MAX_FRONTIER: usize = 10_000;
}

/// Little-endian bytes of a vector (SQLite keeps embeddings as blobs).
pub(crate) fn vector_bytes(vector: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(vector.len() * 4);
    for value in vector {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes
}

/// The vector in little-endian bytes.
pub(crate) fn bytes_vector(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// Terms of a free-text query for an OR-query: words of letters and digits, lower-case, deduplicated,
/// at most 32, each at most 64 characters. Punctuation never reaches the database's query parser.
pub(crate) fn query_terms(query: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in query.split(|c: char| !c.is_alphanumeric() && c != '_') {
        let word: String = word.chars().take(64).collect::<String>().to_lowercase();
        if word.is_empty() || terms.contains(&word) {
            continue;
        }
        terms.push(word);
        if terms.len() == 32 {
            break;
        }
    }
    terms
}

/// A full-text query only needs its common words pruned once the index is this large: below it,
/// ranking every chunk that has any query word costs little.
pub(crate) const PRUNE_FROM_CHUNKS: u64 = 20_000;
/// A query word in more than this share of the chunks is common.
pub(crate) const COMMON_SHARE: f64 = 0.01;

/// The words a chunk must hold at least one of to be a full-text candidate, given each term's
/// chunk count (`df`) among `total` chunks; `None` when every chunk having any word stays a
/// candidate.
///
/// Ranking by BM25 (SQLite's FTS5) costs time for every chunk that matches, and a common word (in
/// more than 1 % of the chunks) matches many that rank low: a chunk with only common words scores
/// below one with a rarer word, whose inverse document frequency is higher. So when the query also has rarer words, candidates are the chunks with at least one of
/// them, still ranked by every word of the query. When the rarer words find fewer than `wanted`
/// chunks, common words are added back, least common first, until they could; a query of common
/// words only is not pruned.
pub(crate) fn required_terms(terms: &[(String, u64)], total: u64, wanted: usize) -> Option<Vec<String>> {
    if terms.len() < 2 || total < PRUNE_FROM_CHUNKS {
        return None;
    }
    let common = (total as f64 * COMMON_SHARE) as u64;
    if terms.iter().all(|(_, df)| *df > common) {
        return None;
    }
    let mut ranked: Vec<&(String, u64)> = terms.iter().collect();
    ranked.sort_by_key(|(_, df)| *df);
    let mut required = Vec::new();
    let mut reach = 0u64;
    for (term, df) in ranked {
        if *df > common && reach >= wanted as u64 {
            break;
        }
        required.push(term.clone());
        reach += df;
    }
    (required.len() < terms.len()).then_some(required)
}

/// Checks a document before any write: sizes, the embedding dimension, indices of relations and
/// mentions. Returns the relations and mentions deduplicated.
pub(crate) fn checked_graph(
    document: &NewDocument,
    dim: usize,
) -> Result<(Vec<NewRelation>, Vec<NewMention>), crate::Error> {
    let invalid = |detail: String| crate::Error::InvalidKnowledge { detail };
    if document.source.is_empty() || document.source.chars().count() > 2048 {
        return Err(invalid(format!(
            "document source must be 1 to 2048 characters, got {}",
            document.source.chars().count()
        )));
    }
    if document.chunks.len() > limits::MAX_CHUNKS_PER_DOCUMENT {
        return Err(invalid(format!(
            "{} has {} chunks, over the limit of {}: split the document",
            document.source,
            document.chunks.len(),
            limits::MAX_CHUNKS_PER_DOCUMENT
        )));
    }
    for (ordinal, chunk) in document.chunks.iter().enumerate() {
        if chunk.embedding.len() != dim {
            return Err(invalid(format!(
                "chunk {ordinal} of {} has a {}-dimensional embedding; this index holds {dim}-dimensional ones (re-index with the index's model, or rebuild the index)",
                document.source,
                chunk.embedding.len()
            )));
        }
        if chunk.text.chars().count() > limits::MAX_CHUNK_CHARS {
            return Err(invalid(format!(
                "chunk {ordinal} of {} is over {} characters",
                document.source,
                limits::MAX_CHUNK_CHARS
            )));
        }
    }
    let entities = document.entities.len();
    let mut seen = std::collections::HashSet::with_capacity(entities);
    for entity in &document.entities {
        if entity.name.is_empty()
            || entity.name.chars().count() > 512
            || entity.kind.is_empty()
            || entity.kind.len() > 64
        {
            return Err(invalid(format!(
                "{}: entity names must be 1 to 512 bytes and kinds 1 to 64 ({} {:?})",
                document.source,
                entity.kind,
                entity.name.chars().take(80).collect::<String>()
            )));
        }
        if !seen.insert(entity) {
            return Err(invalid(format!(
                "{}: entity {} {:?} is listed twice",
                document.source, entity.kind, entity.name
            )));
        }
    }
    let mut relations: Vec<NewRelation> = Vec::with_capacity(document.relations.len());
    for relation in &document.relations {
        if relation.source >= entities || relation.target >= entities {
            return Err(invalid(format!("{}: a relation names entity {} of {entities}", document.source, {
                relation.source.max(relation.target)
            })));
        }
        relations.push(relation.clone());
    }
    relations.sort();
    relations.dedup();
    let mut mentions: Vec<NewMention> = Vec::with_capacity(document.mentions.len());
    for mention in &document.mentions {
        if mention.entity >= entities || mention.chunk >= document.chunks.len() {
            return Err(invalid(format!(
                "{}: a mention names chunk {} of {} or entity {} of {entities}",
                document.source,
                mention.chunk,
                document.chunks.len(),
                mention.entity
            )));
        }
        mentions.push(*mention);
    }
    mentions.sort();
    mentions.dedup();
    Ok((relations, mentions))
}

/// The error of a vector query whose dimension is not the index's.
pub(crate) fn query_dimension_mismatch(query: usize, index: usize) -> crate::Error {
    crate::Error::InvalidKnowledge {
        detail: format!("a {query}-dimensional query against a {index}-dimensional index"),
    }
}

/// The index's recorded model must be the one in use.
pub(crate) fn check_model(recorded: Option<(String, i64)>, model: &str, dim: usize) -> Result<bool, crate::Error> {
    match recorded {
        None => Ok(false),
        Some((recorded_model, recorded_dim)) if recorded_model == model && recorded_dim == dim as i64 => Ok(true),
        Some((recorded_model, recorded_dim)) => Err(crate::Error::InvalidKnowledge {
            detail: format!(
                "this index was built with {recorded_model} ({recorded_dim} dimensions) but {model} ({dim} dimensions) is configured: configure {recorded_model}, or rebuild the index with `cogo index --rebuild`"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn vectors_round_trip_through_bytes() {
        let v = vec![0.5f32, -1.25, 3.0];
        assert_eq!(super::bytes_vector(&super::vector_bytes(&v)), v);
    }

    #[test]
    fn common_words_are_pruned_only_when_rarer_ones_find_enough() {
        let terms = |list: &[(&str, u64)]| list.iter().map(|(t, df)| (t.to_string(), *df)).collect::<Vec<_>>();
        let total = 100_000;
        // "the" is in 60 % of the chunks, "lease" in 0.2 %
        assert_eq!(
            super::required_terms(&terms(&[("the", 60_000), ("lease", 200), ("expiry", 40)]), total, 50),
            Some(vec!["expiry".to_owned(), "lease".to_owned()])
        );
        // the rarer words find 30 chunks, fewer than the 50 wanted: the least common word is added
        assert_eq!(
            super::required_terms(&terms(&[("the", 60_000), ("claim", 5_000), ("lease", 30)]), total, 50),
            Some(vec!["lease".to_owned(), "claim".to_owned()])
        );
        // nothing to prune: all rare, all common, one word, a small index
        assert_eq!(super::required_terms(&terms(&[("lease", 200), ("expiry", 40)]), total, 50), None);
        assert_eq!(super::required_terms(&terms(&[("the", 60_000), ("a", 70_000)]), total, 50), None);
        assert_eq!(super::required_terms(&terms(&[("lease", 200)]), total, 50), None);
        assert_eq!(super::required_terms(&terms(&[("the", 6_000), ("lease", 2)]), 10_000, 50), None);
        // adding common words back that cover every word: no pruning
        assert_eq!(super::required_terms(&terms(&[("the", 60_000), ("lease", 3)]), total, 50), None);
    }

    #[test]
    fn query_terms_drop_punctuation_and_duplicates() {
        assert_eq!(
            super::query_terms("How does \"claim\" work? claim OR NEAR(x)"),
            vec!["how", "does", "claim", "work", "or", "near", "x"]
        );
        assert!(super::query_terms("*** ---").is_empty());
    }
}
