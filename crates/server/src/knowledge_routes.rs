//! The knowledge routes: ingest inline documents, hybrid search, GraphRAG, graph neighbours and
//! paths, index statistics. A tenant token reads only its tenant; other callers name the tenant.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::{Extension, Json, Router, routing::get, routing::post};
use serde::Deserialize;

use knowledge::graph::TraversalLimits;
use knowledge::search::{Fusion, SearchMode, SearchRequest};
use store::knowledge::{Direction, KnowledgeFilter, KnowledgeScope};

use crate::routes::query;
use crate::{ApiError, AppState, ErrorCode, Scope};

/// What the knowledge routes need: the embedder shared by search and ingestion.
pub struct KnowledgeApi {
    /// The embedder (MiniLM in-process, or an OpenAI-compatible endpoint).
    pub embedder: Arc<dyn knowledge::Embedder>,
}

impl std::fmt::Debug for KnowledgeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnowledgeApi").field("model", &self.embedder.model()).finish()
    }
}

/// Most documents in one ingest request.
const MAX_INGEST_DOCUMENTS: usize = 1_000;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/knowledge/ingest", post(ingest))
        .route("/api/knowledge/search", get(search))
        .route("/api/knowledge/graphrag", get(graphrag))
        .route("/api/knowledge/graph/neighbors", get(neighbors))
        .route("/api/knowledge/graph/path", get(path))
        .route("/api/knowledge/stats", get(stats))
}

fn api(state: &AppState) -> Result<&Arc<KnowledgeApi>, ApiError> {
    state.knowledge.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unavailable,
            "the knowledge layer is not running here: install the embedding model (scripts/models install) and restart",
        )
    })
}

impl From<knowledge::Error> for ApiError {
    fn from(err: knowledge::Error) -> Self {
        match err {
            knowledge::Error::Invalid(_) => Self::new(ErrorCode::InvalidRequest, err.to_string()),
            knowledge::Error::Store(store::Error::InvalidKnowledge { .. }) => {
                Self::new(ErrorCode::InvalidRequest, err.to_string())
            }
            knowledge::Error::Store(store) => store.into(),
            knowledge::Error::Provider(_) => {
                tracing::warn!(error = %err, "embeddings provider failed");
                Self::new(ErrorCode::Unavailable, "the embeddings provider is unavailable; try again shortly")
            }
            other => {
                tracing::error!(error = %other, "knowledge error");
                Self::new(ErrorCode::Internal, "internal error; see the server log")
            }
        }
    }
}

/// Optional names in a query (project, kind, relation) must not be empty or overlong.
fn check_names(names: &[(&str, Option<&String>)]) -> Result<(), ApiError> {
    for (what, value) in names {
        if let Some(value) = value
            && (value.is_empty() || value.chars().count() > 128)
        {
            return Err(ApiError::new(ErrorCode::InvalidRequest, format!("{what} must be 1 to 128 characters")));
        }
    }
    Ok(())
}

/// The tenant a request works in: a tenant token's own, else `tenant` (default `default`).
fn tenant_of(scope: &Scope, asked: Option<String>) -> Result<String, ApiError> {
    check_names(&[("tenant", asked.as_ref())])?;
    if let Some(only) = scope.tenant() {
        return Ok(only.to_owned());
    }
    Ok(asked.unwrap_or_else(|| "default".to_owned()))
}

/// Body of `POST /api/knowledge/ingest`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct IngestBody {
    /// Tenant (ignored for tenant tokens; default `default`).
    #[schemars(length(min = 1, max = 128))]
    pub tenant: Option<String>,
    /// Project (default `default`).
    #[schemars(length(min = 1, max = 128))]
    pub project: Option<String>,
    /// The documents; a document whose source exists is replaced.
    #[schemars(length(min = 1, max = 1000))]
    pub documents: Vec<knowledge::InlineDocument>,
}

async fn ingest(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    body: Result<Json<IngestBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let api = api(&state)?;
    let body = crate::mcp_routes::body(body)?;
    if body.documents.is_empty() || body.documents.len() > MAX_INGEST_DOCUMENTS {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("documents: send 1 to {MAX_INGEST_DOCUMENTS} documents per request"),
        ));
    }
    check_names(&[("project", body.project.as_ref())])?;
    let tenant = tenant_of(&scope, body.tenant)?;
    let project = body.project.unwrap_or_else(|| "default".to_owned());
    if project.is_empty() || project.len() > 128 {
        return Err(ApiError::new(ErrorCode::InvalidRequest, "project must be 1 to 128 characters"));
    }
    let indexer = knowledge::Indexer::new(state.store.clone(), api.embedder.clone());
    let report = indexer.index_inline(&KnowledgeScope::new(tenant, project), body.documents, &|_| {}).await?;
    Ok((axum::http::StatusCode::OK, Json(report)))
}

/// Query of `GET /api/knowledge/search` and `/graphrag`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchQuery {
    /// What to look for.
    #[schemars(length(min = 1, max = 2000))]
    pub query: String,
    /// Tenant (ignored for tenant tokens; default `default`).
    #[schemars(length(min = 1, max = 128))]
    pub tenant: Option<String>,
    /// Only this project.
    #[schemars(length(min = 1, max = 128))]
    pub project: Option<String>,
    /// Only sources starting with this.
    #[schemars(length(max = 2048))]
    pub source_prefix: Option<String>,
    /// `hybrid` (default), `fulltext` or `vector`.
    pub mode: Option<SearchMode>,
    /// `weighted` (default) or `rrf`.
    pub fusion: Option<Fusion>,
    /// Weight of the vector score, 0 to 1 (default 0.5).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub alpha: Option<f32>,
    /// Hits, 1 to 100 (default 10).
    #[schemars(range(min = 1, max = 100))]
    pub top_k: Option<usize>,
    /// Fraction of the best score a hit needs, 0 to 1 (default 0.7).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub threshold: Option<f32>,
    /// Graph hops for GraphRAG, 1 to 6 (default 2).
    #[schemars(range(min = 1, max = 6))]
    pub depth: Option<usize>,
    /// Most evidence chunks for GraphRAG, 1 to 200 (default 30).
    #[schemars(range(min = 1, max = 200))]
    pub max_evidence: Option<usize>,
}

impl SearchQuery {
    fn request(&self) -> SearchRequest {
        let mut request = SearchRequest::new(self.query.clone());
        request.project = self.project.clone();
        request.source_prefix = self.source_prefix.clone();
        request.mode = self.mode.unwrap_or_default();
        request.fusion = self.fusion.unwrap_or_default();
        request.alpha = self.alpha.unwrap_or(request.alpha);
        request.top_k = self.top_k.unwrap_or(request.top_k);
        request.threshold = self.threshold.unwrap_or(request.threshold);
        request
    }
}

async fn search(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let api = api(&state)?;
    let q = query(q)?;
    check_names(&[("project", q.project.as_ref())])?;
    let tenant = tenant_of(&scope, q.tenant.clone())?;
    let searcher = knowledge::Searcher::new(state.store.clone(), api.embedder.clone());
    let hits = searcher.search(&tenant, &q.request()).await?;
    Ok(Json(serde_json::json!({ "tenant": tenant, "hits": hits })))
}

async fn graphrag(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let api = api(&state)?;
    let q = query(q)?;
    check_names(&[("project", q.project.as_ref())])?;
    let tenant = tenant_of(&scope, q.tenant.clone())?;
    let searcher = knowledge::Searcher::new(state.store.clone(), api.embedder.clone());
    let limits = TraversalLimits { depth: q.depth.unwrap_or(2), ..TraversalLimits::default() };
    let evidence = searcher.graphrag(&tenant, &q.request(), limits, q.max_evidence.unwrap_or(30)).await?;
    Ok(Json(serde_json::json!({ "tenant": tenant, "evidence": evidence })))
}

/// Query of `GET /api/knowledge/graph/neighbors`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NeighborsQuery {
    /// The start entity's name (a document source, `source#heading`, a symbol, a module).
    #[schemars(length(min = 1, max = 512))]
    pub name: String,
    /// Its kind, when the name is ambiguous.
    #[schemars(length(min = 1, max = 64))]
    pub kind: Option<String>,
    /// Tenant (ignored for tenant tokens).
    #[schemars(length(min = 1, max = 128))]
    pub tenant: Option<String>,
    /// Only this project.
    #[schemars(length(min = 1, max = 128))]
    pub project: Option<String>,
    /// Hops, 1 to 6 (default 1).
    #[schemars(range(min = 1, max = 6))]
    pub depth: Option<usize>,
    /// `out`, `in` or `both` (default).
    pub direction: Option<Direction>,
    /// Only this relation kind.
    #[schemars(length(min = 1, max = 64))]
    pub relation: Option<String>,
    /// Relations followed per entity, 1 to 1000 (default 50).
    #[schemars(range(min = 1, max = 1000))]
    pub fan_out: Option<usize>,
}

async fn entity(
    state: &AppState,
    tenant: &str,
    project: Option<String>,
    name: &str,
    kind: Option<&str>,
) -> Result<store::knowledge::Entity, ApiError> {
    let filter = KnowledgeFilter { tenant: tenant.to_owned(), project, source_prefix: None };
    let found = state.store.knowledge_find_entities(&filter, name, kind, 2).await?;
    match found.len() {
        0 => Err(ApiError::new(ErrorCode::NotFound, format!("no entity named {name:?}"))),
        1 => Ok(found.into_iter().next().ok_or_else(|| ApiError::new(ErrorCode::Internal, "entity vanished"))?),
        _ => {
            Err(ApiError::new(ErrorCode::Conflict, format!("{name:?} names several entities: pass kind (or project)")))
        }
    }
}

async fn neighbors(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    q: Result<Query<NeighborsQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let q = query(q)?;
    check_names(&[("project", q.project.as_ref())])?;
    let tenant = tenant_of(&scope, q.tenant.clone())?;
    check_names(&[("kind", q.kind.as_ref()), ("relation", q.relation.as_ref())])?;
    let start = entity(&state, &tenant, q.project.clone(), &q.name, q.kind.as_deref()).await?;
    let limits =
        TraversalLimits { depth: q.depth.unwrap_or(1), fan_out: q.fan_out.unwrap_or(50), ..TraversalLimits::default() };
    let relations: Vec<String> = q.relation.into_iter().collect();
    let graph = knowledge::graph::neighbourhood(
        &state.store,
        &tenant,
        &[start.id],
        q.direction.unwrap_or_default(),
        &relations,
        limits,
    )
    .await?;
    Ok(Json(serde_json::json!({ "start": start, "graph": graph })))
}

/// Query of `GET /api/knowledge/graph/path`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PathQuery {
    /// Start entity name.
    #[schemars(length(min = 1, max = 512))]
    pub from: String,
    /// End entity name.
    #[schemars(length(min = 1, max = 512))]
    pub to: String,
    /// Tenant (ignored for tenant tokens).
    #[schemars(length(min = 1, max = 128))]
    pub tenant: Option<String>,
    /// Only this project.
    #[schemars(length(min = 1, max = 128))]
    pub project: Option<String>,
    /// Most hops, 1 to 6 (default 4).
    #[schemars(range(min = 1, max = 6))]
    pub depth: Option<usize>,
}

async fn path(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    q: Result<Query<PathQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let q = query(q)?;
    check_names(&[("project", q.project.as_ref())])?;
    let tenant = tenant_of(&scope, q.tenant.clone())?;
    let from = entity(&state, &tenant, q.project.clone(), &q.from, None).await?;
    let to = entity(&state, &tenant, q.project.clone(), &q.to, None).await?;
    let limits = TraversalLimits { depth: q.depth.unwrap_or(4), ..TraversalLimits::default() };
    let path = knowledge::graph::shortest_path(&state.store, &tenant, from.id, to.id, &[], limits).await?;
    Ok(Json(serde_json::json!({ "path": path })))
}

/// Query of `GET /api/knowledge/stats`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatsQuery {
    /// Tenant (ignored for tenant tokens).
    #[schemars(length(min = 1, max = 128))]
    pub tenant: Option<String>,
    /// Only this project.
    #[schemars(length(min = 1, max = 128))]
    pub project: Option<String>,
}

async fn stats(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    q: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let q = query(q)?;
    check_names(&[("project", q.project.as_ref())])?;
    let tenant = tenant_of(&scope, q.tenant.clone())?;
    let filter = KnowledgeFilter { tenant, project: q.project, source_prefix: None };
    Ok(Json(state.store.knowledge_stats(&filter).await?))
}
