//! Hybrid search and GraphRAG. Full-text and vector candidates are fused by weighted `alpha`
//! (the default: alpha 0.5) or reciprocal rank fusion; hits under `threshold` × the best hit's
//! score are dropped. GraphRAG then walks from the hits' entities through the graph to more
//! evidence chunks, each with the path that led to it.
//! Invariant: every hit carries its document, chunk, offsets and the scores it was ranked by.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use store::knowledge::{Direction, KnowledgeFilter, ScoredChunk, StoredChunk};

use crate::Error;
use crate::embed::Embedder;
use crate::graph::{TraversalLimits, neighbourhood};

/// Which retrievers a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Full text and vectors, fused.
    #[default]
    Hybrid,
    /// Full text only.
    Fulltext,
    /// Vectors only.
    Vector,
}

impl SearchMode {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hybrid => "hybrid",
            Self::Fulltext => "fulltext",
            Self::Vector => "vector",
        }
    }
}

/// How hybrid candidates are fused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// `alpha × vector + (1 − alpha) × full text`, full-text scores scaled to the best one.
    #[default]
    Weighted,
    /// Reciprocal rank fusion: the sum of `1 / (60 + rank)`.
    Rrf,
}

/// A search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SearchRequest {
    /// What to look for (at most 2000 characters).
    #[schemars(length(min = 1, max = 2000))]
    pub query: String,
    /// Which project (all of the tenant's when absent).
    #[serde(default)]
    pub project: Option<String>,
    /// Only documents whose source starts with this.
    #[serde(default)]
    pub source_prefix: Option<String>,
    /// Retrievers.
    #[serde(default)]
    pub mode: SearchMode,
    /// Fusion of hybrid candidates.
    #[serde(default)]
    pub fusion: Fusion,
    /// Weight of the vector score in weighted fusion, 0 to 1.
    #[serde(default = "default_alpha")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub alpha: f32,
    /// How many hits (1 to 100).
    #[serde(default = "default_top_k")]
    #[schemars(range(min = 1, max = 100))]
    pub top_k: usize,
    /// Drop hits scoring under this fraction of the best hit's score (0 keeps all).
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub threshold: f32,
}

fn default_alpha() -> f32 {
    0.5
}

fn default_top_k() -> usize {
    10
}

fn default_threshold() -> f32 {
    0.7
}

impl SearchRequest {
    /// A hybrid search with the defaults (alpha 0.5, top_k 10, threshold 0.7).
    pub fn new(query: impl Into<String>) -> Self {
        Self {
            query: query.into(),
            project: None,
            source_prefix: None,
            mode: SearchMode::Hybrid,
            fusion: Fusion::Weighted,
            alpha: default_alpha(),
            top_k: default_top_k(),
            threshold: default_threshold(),
        }
    }

    fn check(&self) -> Result<(), Error> {
        let length = self.query.chars().count();
        if self.query.is_empty() || length > 2000 {
            return Err(Error::Invalid(format!("query must be 1 to 2000 characters, got {length}")));
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(Error::Invalid(format!("alpha must be between 0 and 1, got {}", self.alpha)));
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(Error::Invalid(format!("threshold must be between 0 and 1, got {}", self.threshold)));
        }
        if !(1..=100).contains(&self.top_k) {
            return Err(Error::Invalid(format!("top_k must be 1 to 100, got {}", self.top_k)));
        }
        Ok(())
    }
}

/// One hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SearchHit {
    /// The chunk, its document and offsets.
    pub chunk: StoredChunk,
    /// The fused score (higher is better).
    pub score: f32,
    /// The full-text score and rank (1-based), when full text found it.
    pub fulltext: Option<RetrieverScore>,
    /// The cosine similarity and rank, when the vector search found it.
    pub vector: Option<RetrieverScore>,
}

/// One retriever's view of a hit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RetrieverScore {
    /// Its score.
    pub score: f32,
    /// Its rank, from 1.
    pub rank: usize,
}

/// Hybrid search over the store.
#[derive(Debug, Clone)]
pub struct Searcher<E: ?Sized> {
    store: store::Store,
    embedder: std::sync::Arc<E>,
    candidates: usize,
}

impl<E: Embedder + ?Sized> Searcher<E> {
    /// A searcher that takes 50 candidates from each retriever.
    pub fn new(store: store::Store, embedder: std::sync::Arc<E>) -> Self {
        Self { store, embedder, candidates: 50 }
    }

    /// Candidates per retriever (at least `top_k`).
    pub fn with_candidates(mut self, candidates: usize) -> Self {
        self.candidates = candidates.clamp(1, store::knowledge::limits::MAX_CANDIDATES);
        self
    }

    /// The store searched.
    pub fn store(&self) -> &store::Store {
        &self.store
    }

    /// The embedder used for queries.
    pub fn embedder(&self) -> &E {
        &self.embedder
    }

    /// Runs a search for `tenant`.
    pub async fn search(&self, tenant: &str, request: &SearchRequest) -> Result<Vec<SearchHit>, Error> {
        self.search_embedded(tenant, request, None).await
    }

    /// Runs a search whose query embedding is already known (`None`: embed the query now).
    pub async fn search_embedded(
        &self,
        tenant: &str,
        request: &SearchRequest,
        query_vector: Option<Vec<f32>>,
    ) -> Result<Vec<SearchHit>, Error> {
        request.check()?;
        let started = Instant::now();
        let filter = KnowledgeFilter {
            tenant: tenant.to_owned(),
            project: request.project.clone(),
            source_prefix: request.source_prefix.clone(),
        };
        let candidates = self.candidates.max(request.top_k);
        let (fulltext, vector) = match request.mode {
            SearchMode::Fulltext => {
                (self.store.knowledge_fulltext(&filter, &request.query, candidates).await?, Vec::new())
            }
            SearchMode::Vector => (Vec::new(), self.vector(&filter, &request.query, query_vector, candidates).await?),
            SearchMode::Hybrid => {
                let (fulltext, vector) = tokio::join!(
                    self.store.knowledge_fulltext(&filter, &request.query, candidates),
                    self.vector(&filter, &request.query, query_vector, candidates)
                );
                (fulltext?, vector?)
            }
        };
        let fused = fuse(&fulltext, &vector, request);
        let ids: Vec<i64> = fused.iter().map(|f| f.chunk_id).collect();
        let chunks: HashMap<i64, StoredChunk> =
            self.store.knowledge_chunks(tenant, &ids).await?.into_iter().map(|c| (c.id, c)).collect();
        let hits = fused
            .into_iter()
            .filter_map(|f| {
                Some(SearchHit {
                    chunk: chunks.get(&f.chunk_id)?.clone(),
                    score: f.score,
                    fulltext: f.fulltext,
                    vector: f.vector,
                })
            })
            .collect();
        crate::telemetry::searched(request.mode.name(), started.elapsed());
        Ok(hits)
    }

    async fn vector(
        &self,
        filter: &KnowledgeFilter,
        query: &str,
        known: Option<Vec<f32>>,
        limit: usize,
    ) -> Result<Vec<ScoredChunk>, Error> {
        let vector = match known {
            Some(vector) => vector,
            None => self.embed_query(query).await?,
        };
        Ok(self.store.knowledge_vector(filter, &vector, limit, false).await?)
    }

    /// The query's embedding.
    pub async fn embed_query(&self, query: &str) -> Result<Vec<f32>, Error> {
        let mut vectors = self.embedder.embed(vec![query.to_owned()]).await?;
        vectors.pop().ok_or_else(|| Error::Model("the embedder returned no vector".into()))
    }

    /// GraphRAG: the hybrid hits, then chunks reached from their entities through the graph
    /// (`limits.depth` hops), ranked by the hit they came from, decayed per hop; each with its path.
    pub async fn graphrag(
        &self,
        tenant: &str,
        request: &SearchRequest,
        limits: TraversalLimits,
        max_evidence: usize,
    ) -> Result<Vec<Evidence>, Error> {
        let started = Instant::now();
        let hits = self.search(tenant, request).await?;
        let max_evidence = max_evidence.clamp(1, 200);
        let mut evidence: Vec<Evidence> =
            hits.iter().map(|hit| Evidence { chunk: hit.chunk.clone(), score: hit.score, via: Vec::new() }).collect();
        let hit_ids: Vec<i64> = hits.iter().map(|h| h.chunk.id).collect();
        let hit_score: HashMap<i64, f32> = hits.iter().map(|h| (h.chunk.id, h.score)).collect();
        // entities of the hits, skipping document entities (every chunk mentions its document)
        let mentions = self.store.knowledge_chunk_entities(&hit_ids).await?;
        let entity_ids: Vec<i64> = mentions.iter().map(|(_, e)| *e).collect::<HashSet<_>>().into_iter().collect();
        let entities: HashMap<i64, store::knowledge::Entity> =
            self.store.knowledge_entities(tenant, &entity_ids).await?.into_iter().map(|e| (e.id, e)).collect();
        let mut best_of_entity: HashMap<i64, (f32, i64)> = HashMap::new();
        for (chunk, entity) in &mentions {
            if entities.get(entity).is_some_and(|e| e.kind != crate::graph::entity::DOCUMENT) {
                let score = hit_score.get(chunk).copied().unwrap_or(0.0);
                let best = best_of_entity.entry(*entity).or_insert((score, *chunk));
                if score > best.0 {
                    *best = (score, *chunk);
                }
            }
        }
        let start: Vec<i64> = best_of_entity.keys().copied().collect();
        if start.is_empty() {
            crate::telemetry::searched("graphrag", started.elapsed());
            return Ok(evidence);
        }
        let graph = neighbourhood(&self.store, tenant, &start, Direction::Both, &[], limits).await?;
        // for each reached entity: the edge chain back to a start entity
        let mut parent: HashMap<i64, &store::knowledge::Edge> = HashMap::new();
        let depth_of: HashMap<i64, usize> = graph.nodes.iter().map(|n| (n.entity.id, n.depth)).collect();
        for edge in &graph.edges {
            for (near, far) in [(edge.source, edge.target), (edge.target, edge.source)] {
                if let (Some(dn), Some(df)) = (depth_of.get(&near), depth_of.get(&far))
                    && *df == dn + 1
                {
                    parent.entry(far).or_insert(edge);
                }
            }
        }
        let names: HashMap<i64, &store::knowledge::Entity> =
            graph.nodes.iter().map(|n| (n.entity.id, &n.entity)).collect();
        let reached: Vec<i64> = graph
            .nodes
            .iter()
            .filter(|n| n.entity.kind != crate::graph::entity::DOCUMENT || n.depth > 0)
            .map(|n| n.entity.id)
            .collect();
        let pairs = self.store.knowledge_entity_chunks(&reached, max_evidence * 20).await?;
        let mut seen: HashSet<i64> = hit_ids.iter().copied().collect();
        let mut graph_evidence: Vec<(i64, f32, Vec<PathStep>)> = Vec::new();
        for (entity, chunk) in pairs {
            if !seen.insert(chunk) {
                continue;
            }
            // walk back to the start entity, collecting the path
            let mut steps = Vec::new();
            let mut node = entity;
            let mut guard = 0;
            while let Some(edge) = parent.get(&node) {
                let previous = if edge.source == node { edge.target } else { edge.source };
                steps.push(PathStep {
                    from: names.get(&previous).map(|e| e.name.clone()).unwrap_or_default(),
                    relation: edge.kind.clone(),
                    to: names.get(&node).map(|e| e.name.clone()).unwrap_or_default(),
                    document_id: edge.document_id,
                });
                node = previous;
                guard += 1;
                if guard > 8 {
                    break;
                }
            }
            steps.reverse();
            let Some((origin_score, origin_chunk)) = best_of_entity.get(&node).copied() else { continue };
            let hops = steps.len();
            let score = origin_score * 0.5f32.powi(hops as i32 + 1);
            let mut via = vec![PathStep {
                from: format!("chunk {origin_chunk}"),
                relation: "mentions".into(),
                to: names.get(&node).map(|e| e.name.clone()).unwrap_or_default(),
                document_id: 0,
            }];
            via.extend(steps);
            graph_evidence.push((chunk, score, via));
        }
        graph_evidence.sort_by(|a, b| b.1.total_cmp(&a.1));
        graph_evidence.truncate(max_evidence.saturating_sub(evidence.len()));
        let ids: Vec<i64> = graph_evidence.iter().map(|(id, _, _)| *id).collect();
        let chunks: HashMap<i64, StoredChunk> =
            self.store.knowledge_chunks(tenant, &ids).await?.into_iter().map(|c| (c.id, c)).collect();
        for (id, score, via) in graph_evidence {
            if let Some(chunk) = chunks.get(&id) {
                evidence.push(Evidence { chunk: chunk.clone(), score, via });
            }
        }
        evidence.sort_by(|a, b| b.score.total_cmp(&a.score));
        evidence.truncate(max_evidence);
        crate::telemetry::searched("graphrag", started.elapsed());
        Ok(evidence)
    }
}

/// A GraphRAG evidence chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Evidence {
    /// The chunk, its document and offsets.
    pub chunk: StoredChunk,
    /// Its rank score.
    pub score: f32,
    /// How it was reached: empty for a direct search hit; otherwise the hit's chunk, the entity it
    /// mentions, and the relations followed.
    pub via: Vec<PathStep>,
}

/// One step of a provenance path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PathStep {
    /// Where the step starts.
    pub from: String,
    /// The relation followed.
    pub relation: String,
    /// Where it ends.
    pub to: String,
    /// The document that is evidence for the relation (0 for a mention).
    pub document_id: i64,
}

struct Fused {
    chunk_id: i64,
    score: f32,
    fulltext: Option<RetrieverScore>,
    vector: Option<RetrieverScore>,
}

/// Fuses the two candidate lists (each best first) into at most `top_k` hits.
fn fuse(fulltext: &[ScoredChunk], vector: &[ScoredChunk], request: &SearchRequest) -> Vec<Fused> {
    let mut by_id: HashMap<i64, Fused> = HashMap::new();
    let best_text = fulltext.iter().map(|c| c.score).fold(0.0f32, f32::max);
    for (list, from_text) in [(fulltext, true), (vector, false)] {
        for (rank, candidate) in list.iter().enumerate() {
            let entry = by_id.entry(candidate.chunk_id).or_insert(Fused {
                chunk_id: candidate.chunk_id,
                score: 0.0,
                fulltext: None,
                vector: None,
            });
            let seen = Some(RetrieverScore { score: candidate.score, rank: rank + 1 });
            if from_text {
                entry.fulltext = seen;
            } else {
                entry.vector = seen;
            }
        }
    }
    let (alpha, text_weight) = match request.mode {
        SearchMode::Hybrid => (request.alpha, 1.0 - request.alpha),
        SearchMode::Vector => (1.0, 0.0),
        SearchMode::Fulltext => (0.0, 1.0),
    };
    for fused in by_id.values_mut() {
        fused.score = match request.fusion {
            Fusion::Weighted => {
                let text = fused.fulltext.map_or(0.0, |t| if best_text > 0.0 { t.score / best_text } else { 0.0 });
                let vector = fused.vector.map_or(0.0, |v| v.score.clamp(0.0, 1.0));
                alpha * vector + text_weight * text
            }
            Fusion::Rrf => {
                let rrf = |r: Option<RetrieverScore>| r.map_or(0.0, |r| 1.0 / (60.0 + r.rank as f32));
                alpha * rrf(fused.vector) + text_weight * rrf(fused.fulltext)
            }
        };
    }
    let mut fused: Vec<Fused> = by_id.into_values().collect();
    fused.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.chunk_id.cmp(&b.chunk_id)));
    let best = fused.first().map_or(0.0, |f| f.score);
    fused.retain(|f| f.score > 0.0 && f.score >= request.threshold * best);
    fused.truncate(request.top_k);
    fused
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(list: &[(i64, f32)]) -> Vec<ScoredChunk> {
        list.iter().map(|(id, score)| ScoredChunk { chunk_id: *id, score: *score }).collect()
    }

    #[test]
    fn weighted_fusion_rewards_agreement_and_applies_the_threshold() {
        let text = scored(&[(1, 10.0), (2, 5.0)]);
        let vector = scored(&[(2, 0.9), (3, 0.8)]);
        let mut request = SearchRequest::new("q");
        request.threshold = 0.0;
        let ids: Vec<i64> = fuse(&text, &vector, &request).iter().map(|f| f.chunk_id).collect();
        // 2: 0.5*0.9 + 0.5*0.5 = 0.70; 1: 0.5; 3: 0.4
        assert_eq!(ids, vec![2, 1, 3]);
        request.threshold = 0.7;
        let ids: Vec<i64> = fuse(&text, &vector, &request).iter().map(|f| f.chunk_id).collect();
        assert_eq!(ids, vec![2, 1], "0.4 < 0.7 × 0.70");
        request.top_k = 1;
        assert_eq!(fuse(&text, &vector, &request).len(), 1);
    }

    #[test]
    fn rrf_and_single_modes() {
        let text = scored(&[(1, 10.0), (2, 5.0)]);
        let vector = scored(&[(2, 0.9), (1, 0.8)]);
        let mut request = SearchRequest::new("q");
        request.fusion = Fusion::Rrf;
        request.threshold = 0.0;
        let fused = fuse(&text, &vector, &request);
        assert!((fused[0].score - fused[1].score).abs() < 1e-6, "symmetric ranks tie");
        request.mode = SearchMode::Fulltext;
        request.fusion = Fusion::Weighted;
        let ids: Vec<i64> = fuse(&text, &[], &request).iter().map(|f| f.chunk_id).collect();
        assert_eq!(ids, vec![1, 2]);
    }

    #[test]
    fn bad_requests_are_refused() {
        for (field, request) in [
            ("query", SearchRequest { query: String::new(), ..SearchRequest::new("x") }),
            ("alpha", SearchRequest { alpha: 1.5, ..SearchRequest::new("x") }),
            ("top_k", SearchRequest { top_k: 0, ..SearchRequest::new("x") }),
            ("threshold", SearchRequest { threshold: -0.1, ..SearchRequest::new("x") }),
        ] {
            let err = request.check().expect_err(field).to_string();
            assert!(err.contains(field), "{err}");
        }
    }
}
