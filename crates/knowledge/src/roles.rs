//! The knowledge worker roles on the bus: `knowledge/indexing` indexes the inline documents of a
//! message into its tenant, `knowledge/graphrag` answers a search with graph evidence. Bad
//! payloads fail as `invalid_input` (not retried); an unavailable store or provider is retried.
//! Invariant: a message only ever reads or writes its own tenant's knowledge.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use model::message::ErrorKind;
use serde::Deserialize;
use store::knowledge::KnowledgeScope;
use worker::{HandlerError, HandlerOutput};

use crate::graph::TraversalLimits;
use crate::search::SearchRequest;
use crate::{Embedder, Error, Indexer, InlineDocument, Searcher};

/// Payload of an `index` message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexPayload {
    #[serde(default = "default_project")]
    project: String,
    documents: Vec<InlineDocument>,
    /// Also extract entities and relations with the worker's LLM.
    #[serde(default)]
    llm_extraction: bool,
}

fn default_project() -> String {
    "default".to_owned()
}

/// Payload of a `graphrag` message: a search request plus graph limits.
#[derive(Debug, Deserialize)]
struct GraphRagPayload {
    #[serde(flatten)]
    request: SearchRequest,
    #[serde(default)]
    depth: Option<usize>,
    #[serde(default)]
    max_evidence: Option<usize>,
}

fn failure(err: Error) -> HandlerError {
    let kind = if err.is_transient() {
        ErrorKind::Transport
    } else if matches!(err, Error::Invalid(_) | Error::Store(store::Error::InvalidKnowledge { .. })) {
        ErrorKind::InvalidInput
    } else {
        ErrorKind::Internal
    };
    HandlerError::new(kind, err.to_string())
}

fn bad_payload(err: serde_json::Error) -> HandlerError {
    HandlerError::new(ErrorKind::InvalidInput, format!("bad payload: {err}"))
}

/// The `knowledge/indexing` role.
#[derive(Debug, Clone)]
pub struct IndexingHandler {
    store: store::Store,
    embedder: Arc<dyn Embedder>,
    llm: Option<Arc<dyn llm::LlmClient>>,
}

impl IndexingHandler {
    /// A handler writing into `store` with `embedder`.
    pub fn new(store: store::Store, embedder: Arc<dyn Embedder>) -> Self {
        Self { store, embedder, llm: None }
    }

    /// The LLM that messages asking for `llm_extraction` use (none: such messages are refused).
    pub fn with_llm(mut self, llm: Option<Arc<dyn llm::LlmClient>>) -> Self {
        self.llm = llm;
        self
    }
}

impl worker::Handler for IndexingHandler {
    fn handle(&self, message: model::Message) -> BoxFuture<'static, Result<HandlerOutput, HandlerError>> {
        let this = self.clone();
        Box::pin(async move {
            let payload: IndexPayload = serde_json::from_value(message.payload.clone()).map_err(bad_payload)?;
            let scope = KnowledgeScope::new(message.tenant.clone(), payload.project);
            let mut indexer = Indexer::new(this.store.clone(), this.embedder.clone());
            if payload.llm_extraction {
                let llm = this.llm.clone().ok_or_else(|| {
                    HandlerError::new(
                        ErrorKind::InvalidInput,
                        "llm_extraction: this indexing worker has no LLM; run the role in a process with one (`cogo up`, or a worker that also runs the orchestrator role)",
                    )
                })?;
                indexer = indexer.with_llm_extraction(crate::LlmExtractor::new(llm));
            }
            let report = indexer.index_inline(&scope, payload.documents, &|_| {}).await.map_err(failure)?;
            let result =
                serde_json::to_value(&report).map_err(|err| HandlerError::new(ErrorKind::Internal, err.to_string()))?;
            Ok(HandlerOutput { result: Some(result), ..HandlerOutput::default() })
        })
    }
}

/// The `knowledge/graphrag` role.
#[derive(Debug, Clone)]
pub struct GraphRagHandler {
    store: store::Store,
    embedder: Arc<dyn Embedder>,
}

impl GraphRagHandler {
    /// A handler searching `store` with `embedder`.
    pub fn new(store: store::Store, embedder: Arc<dyn Embedder>) -> Self {
        Self { store, embedder }
    }
}

impl worker::Handler for GraphRagHandler {
    fn handle(&self, message: model::Message) -> BoxFuture<'static, Result<HandlerOutput, HandlerError>> {
        let this = self.clone();
        Box::pin(async move {
            let payload: GraphRagPayload = serde_json::from_value(message.payload.clone()).map_err(bad_payload)?;
            let searcher = Searcher::new(this.store.clone(), this.embedder.clone());
            let limits = TraversalLimits { depth: payload.depth.unwrap_or(2), ..TraversalLimits::default() };
            // results stay inline: the evidence is capped to fit the bus's result limit
            let mut evidence = searcher
                .graphrag(&message.tenant, &payload.request, limits, payload.max_evidence.unwrap_or(20))
                .await
                .map_err(failure)?;
            let mut result = serde_json::json!({ "evidence": evidence });
            while model::message::payload_size(&result) > model::message::DEFAULT_MAX_RESULT_BYTES / 2
                && !evidence.is_empty()
            {
                evidence.pop();
                result = serde_json::json!({ "evidence": evidence, "truncated": true });
            }
            Ok(HandlerOutput { result: Some(result), ..HandlerOutput::default() })
        })
    }
}
