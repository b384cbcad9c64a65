//! The [`LlmClient`] interface, the [`Provider`] interface under it, and [`Llm`], the client that
//! runs a provider under its retry policy and breaker and records every attempt.

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use crate::{ChatRequest, ChatResponse, Error, telemetry};

/// A model backend: one attempt, no retries (that is [`Llm`]'s job).
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// The provider's name, used in the policy key `llm.call.<name>` and in metrics.
    fn name(&self) -> &str;
    /// The model it runs.
    fn model(&self) -> &str;
    /// Whether it constrains decoding to a JSON Schema itself (then [`crate::structured`] only
    /// validates; otherwise it also tells the model the schema in the prompt).
    fn constrains_output(&self) -> bool;
    /// Answers `request`; when `deltas` is given, sends the text as it is generated.
    /// Dropping the returned future cancels the call.
    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
        deltas: Option<mpsc::UnboundedSender<String>>,
    ) -> BoxFuture<'a, Result<ChatResponse, Error>>;
}

/// What the rest of COGO talks to. Cancel a call by dropping its future.
pub trait LlmClient: Send + Sync + std::fmt::Debug {
    /// The provider's name.
    fn provider(&self) -> &str;
    /// The model's name.
    fn model(&self) -> &str;
    /// Whether the provider constrains output to a schema while decoding.
    fn constrains_output(&self) -> bool;
    /// One answer.
    fn chat<'a>(&'a self, request: ChatRequest) -> BoxFuture<'a, Result<ChatResponse, Error>>;
    /// One answer, its text also sent to `deltas` as it is generated.
    fn chat_stream<'a>(
        &'a self,
        request: ChatRequest,
        deltas: mpsc::UnboundedSender<String>,
    ) -> BoxFuture<'a, Result<ChatResponse, Error>>;
}

/// A provider guarded by the retry policy and breaker `llm.call.<provider>`, with metrics.
#[derive(Debug, Clone)]
pub struct Llm {
    provider: Arc<dyn Provider>,
    policies: Arc<resilience::Policies>,
    breakers: Arc<resilience::Breakers>,
    key: String,
}

impl Llm {
    /// Wraps `provider`.
    pub fn new(
        provider: Arc<dyn Provider>,
        policies: Arc<resilience::Policies>,
        breakers: Arc<resilience::Breakers>,
    ) -> Self {
        let key = model::policy::llm_call_key(provider.name());
        Self { provider, policies, breakers, key }
    }

    /// The provider under the guard.
    pub fn inner(&self) -> &Arc<dyn Provider> {
        &self.provider
    }

    async fn run(
        &self,
        request: ChatRequest,
        deltas: Option<mpsc::UnboundedSender<String>>,
    ) -> Result<ChatResponse, Error> {
        request.validate()?;
        let provider = self.provider.as_ref();
        let guarded = resilience::execute(&self.policies, &self.breakers, &self.key, &self.key, |attempt| {
            let request = &request;
            let deltas = deltas.clone();
            async move {
                let started = Instant::now();
                let result = provider.complete(request, deltas).await;
                match &result {
                    Ok(response) => {
                        telemetry::call(provider.name(), provider.model(), "ok", started.elapsed(), response.usage);
                        tracing::debug!(provider = provider.name(), model = provider.model(), attempt,
                            prompt_hash = %response.prompt_hash, tokens_in = response.usage.prompt_tokens,
                            tokens_out = response.usage.completion_tokens, latency_ms = response.latency_ms, "llm call");
                    }
                    Err(err) => {
                        telemetry::call(
                            provider.name(),
                            provider.model(),
                            err.kind().as_str(),
                            started.elapsed(),
                            Default::default(),
                        );
                        tracing::debug!(provider = provider.name(), attempt, error = %err, "llm call failed");
                    }
                }
                result.map_err(|error| resilience::AttemptError { kind: error.kind(), error })
            }
        });
        let outcome = match request.timeout {
            Some(limit) => tokio::time::timeout(limit, guarded).await.map_err(|_| Error::Timeout(limit))?,
            None => guarded.await,
        };
        outcome.map_err(|err| match err {
            resilience::CallError::Open(open) => Error::CircuitOpen(open.to_string()),
            resilience::CallError::Failed { source, .. } => source,
        })
    }
}

impl LlmClient for Llm {
    fn provider(&self) -> &str {
        self.provider.name()
    }

    fn model(&self) -> &str {
        self.provider.model()
    }

    fn constrains_output(&self) -> bool {
        self.provider.constrains_output()
    }

    fn chat<'a>(&'a self, request: ChatRequest) -> BoxFuture<'a, Result<ChatResponse, Error>> {
        Box::pin(self.run(request, None))
    }

    fn chat_stream<'a>(
        &'a self,
        request: ChatRequest,
        deltas: mpsc::UnboundedSender<String>,
    ) -> BoxFuture<'a, Result<ChatResponse, Error>> {
        Box::pin(self.run(request, Some(deltas)))
    }
}
