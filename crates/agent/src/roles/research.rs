//! The `research` role (`service=agent, role=research, intent=research`): hybrid search over the
//! tenant's documents, then an answer from the model that cites the chunks it used. Payload:
//! `{"question": "…", "top_k": 4}`.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use llm::{ChatRequest, JsonSchemaFormat, LlmClient, Message};
use model::ErrorKind;
use worker::{HandlerError, HandlerOutput};

use crate::clip;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    question: String,
    #[serde(default = "default_top_k")]
    top_k: usize,
}

fn default_top_k() -> usize {
    4
}

/// Answers questions from the knowledge index.
pub struct ResearchHandler {
    store: store::Store,
    embedder: Arc<dyn knowledge::Embedder>,
    llm: Arc<dyn LlmClient>,
}

impl ResearchHandler {
    /// Over the index in `store`, asking `llm`.
    pub fn new(store: store::Store, embedder: Arc<dyn knowledge::Embedder>, llm: Arc<dyn LlmClient>) -> Self {
        Self { store, embedder, llm }
    }
}

fn llm_error(err: llm::Error) -> HandlerError {
    HandlerError::new(err.kind(), err.to_string())
}

impl worker::Handler for ResearchHandler {
    fn handle(&self, message: model::Message) -> BoxFuture<'static, Result<HandlerOutput, HandlerError>> {
        let searcher = knowledge::Searcher::new(self.store.clone(), self.embedder.clone());
        let llm = self.llm.clone();
        Box::pin(async move {
            let request: Request = serde_json::from_value(message.payload.clone()).map_err(|e| {
                HandlerError::new(
                    ErrorKind::InvalidInput,
                    format!("research payload must be {{question, top_k?}}: {e}"),
                )
            })?;
            if request.question.trim().is_empty() || request.question.chars().count() > 2_000 {
                return Err(HandlerError::new(ErrorKind::InvalidInput, "question: must be 1 to 2000 characters"));
            }
            let mut search = knowledge::search::SearchRequest::new(request.question.clone());
            search.top_k = request.top_k.clamp(1, 10);
            search.threshold = 0.0;
            let hits = searcher
                .search(&message.tenant, &search)
                .await
                .map_err(|e| HandlerError::new(ErrorKind::Internal, format!("search: {e}")))?;
            if hits.is_empty() {
                return Err(HandlerError::new(
                    ErrorKind::ToolError,
                    "no indexed document matches the question: ingest documents first (cogo index PATH)",
                ));
            }
            let sources: String = hits
                .iter()
                .enumerate()
                .map(|(i, hit)| format!("[{}] ({}) {}\n", i + 1, hit.chunk.source, clip(&hit.chunk.text, 500)))
                .collect();
            let mut chat = ChatRequest::new(vec![
                Message::system(
                    "Answer the question from the numbered sources only, in one or two sentences, and list the numbers of the sources you used.",
                ),
                Message::user(format!("Sources:\n{sources}\nQuestion: {}", request.question)),
            ]);
            chat.max_tokens = 250;
            let format = JsonSchemaFormat {
                name: "cited_answer".into(),
                schema: json!({
                    "type": "object",
                    "properties": {
                        "answer": {"type": "string", "minLength": 1, "maxLength": 400},
                        "sources": {"type": "array", "minItems": 1, "maxItems": hits.len(), "items": {"type": "integer", "minimum": 1, "maximum": hits.len()}}
                    },
                    "required": ["answer", "sources"],
                    "additionalProperties": false
                }),
            };
            let answer = llm::structured(llm.as_ref(), chat, format).await.map_err(llm_error)?;
            let cited: Vec<Value> = answer
                .value
                .get("sources")
                .and_then(Value::as_array)
                .map(|numbers| {
                    let mut seen = std::collections::BTreeSet::new();
                    numbers
                        .iter()
                        .filter_map(Value::as_u64)
                        .filter(|n| seen.insert(*n))
                        .filter_map(|n| hits.get((n as usize).checked_sub(1)?))
                        .map(|hit| json!({"source": hit.chunk.source, "chunk_id": hit.chunk.id, "score": hit.score}))
                        .collect()
                })
                .unwrap_or_default();
            let text = answer.value.get("answer").and_then(Value::as_str).unwrap_or_default().to_owned();
            let result = json!({"answer": text, "citations": cited, "model": answer.response.model, "prompt_hash": answer.response.prompt_hash});
            let detail = json!({"citations": cited.len(), "hits": hits.len()});
            Ok(HandlerOutput { result: Some(result), result_url: None, detail: Some(detail) })
        })
    }
}
