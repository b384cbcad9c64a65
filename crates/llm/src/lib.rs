//! COGO's LLM layer. Everything that asks a model something goes through an [`LlmClient`]:
//! chat with system/user/assistant/tool messages, streaming, token counts and structured output
//! ([`structured`]: constrained decoding where the provider can, then validation and one repair
//! round). [`Llm`] wraps a [`Provider`] with the retry policy and breaker of `llm.call.<provider>`
//! and records `cogo_llm_calls_total`, `cogo_llm_latency_ms` and `cogo_llm_tokens_total`.
//!
//! Providers: [`local::LocalModel`] (a GGUF model run in this process by llama.cpp; the embedded
//! default is SmolLM2-135M-Instruct) and [`openai::OpenAiProvider`] (any OpenAI-compatible chat
//! completions endpoint).
//!
//! Invariants: output that does not match the requested schema is never returned as a success;
//! cancelling a call (dropping its future) stops the generation it started; API keys are never
//! logged or printed.

pub mod bench;
mod client;
#[cfg(feature = "local")]
pub mod local;
pub mod openai;
pub mod shapes;
mod structured;
mod telemetry;
mod types;

pub use client::{Llm, LlmClient, Provider};
pub use structured::{Structured, extract_json, structured};
pub use types::{
    ChatRequest, ChatResponse, FinishReason, JsonSchemaFormat, MAX_GENERATED_TOKENS, MAX_MESSAGE_CHARS, MAX_MESSAGES,
    MAX_TOOLS, Message, Role, ToolCall, ToolSpec, Usage,
};

use model::ErrorKind;

/// What can go wrong asking a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is wrong (the message names the field); retrying cannot help.
    #[error("invalid LLM request: {0}")]
    Invalid(String),
    /// The model file is not where it was looked for.
    #[error("no model at {path}: {hint}")]
    ModelMissing {
        /// Where it was looked for.
        path: String,
        /// How to get it.
        hint: String,
    },
    /// The model could not be loaded or run.
    #[error("model {path}: {reason}")]
    Model {
        /// The model file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The provider failed (connection, HTTP status, malformed answer).
    #[error("{provider}: {message}")]
    Provider {
        /// The provider's name.
        provider: String,
        /// How it failed (decides retries).
        kind: ErrorKind,
        /// What happened, without secrets.
        message: String,
    },
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The breaker of `llm.call.<provider>` is open.
    #[error("{0}")]
    CircuitOpen(String),
    /// The model's answer does not match the schema, even after the repair round.
    #[error("the model's answer does not match the schema {schema} after {attempts} tries: {errors}")]
    InvalidOutput {
        /// The schema's name.
        schema: String,
        /// Answers asked for.
        attempts: u32,
        /// What is wrong with the last answer.
        errors: String,
        /// The last answer (at most 2,000 characters).
        output: String,
    },
}

impl Error {
    /// The error's kind, as retry policies and breakers see it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(_) | Self::ModelMissing { .. } => ErrorKind::InvalidInput,
            Self::Model { .. } => ErrorKind::Internal,
            Self::Provider { kind, .. } => *kind,
            Self::Timeout(_) => ErrorKind::Timeout,
            Self::CircuitOpen(_) => ErrorKind::Transport,
            Self::InvalidOutput { .. } => ErrorKind::Protocol,
        }
    }
}

impl resilience::TimeoutError for Error {
    fn timeout(after: std::time::Duration) -> Self {
        Self::Timeout(after)
    }
}
