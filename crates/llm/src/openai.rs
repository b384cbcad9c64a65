//! An OpenAI-compatible chat completions endpoint (`POST {base_url}/chat/completions`): OpenAI,
//! vLLM, Ollama, llama.cpp's server, llama-cpp-python's server. Structured output is asked for with
//! `response_format: {"type": "json_schema", ...}`, tools with `tools: [{"type": "function", ...}]`,
//! streaming with server-sent events (`stream: true`, usage in the last chunk).
//!
//! Errors map to kinds the retry policy understands: 429 → `rate_limited`, 408 and 5xx and
//! connection failures → `transport`/`timeout`, other 4xx → `invalid_input`, an answer that is not
//! the OpenAI shape → `protocol`. The API key is sent as a bearer token and never logged.

use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use model::ErrorKind;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{ChatRequest, ChatResponse, Error, FinishReason, Provider, Role, ToolCall, Usage};

/// Largest response body read (bytes).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// An OpenAI-compatible provider.
#[derive(Clone)]
pub struct OpenAiProvider {
    client: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
    model: String,
    name: String,
    constrains: bool,
    schema_mode: SchemaMode,
}

/// How the endpoint takes a JSON Schema for the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchemaMode {
    /// `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`: OpenAI, vLLM,
    /// llama.cpp's server, Ollama.
    #[default]
    JsonSchema,
    /// `{"type": "json_object", "schema": ...}`: llama-cpp-python's server.
    JsonObject,
}

impl SchemaMode {
    /// Parses `json_schema` or `json_object`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "json_schema" => Some(Self::JsonSchema),
            "json_object" => Some(Self::JsonObject),
            _ => None,
        }
    }
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the key is never printed
        f.debug_struct("OpenAiProvider")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

/// How to reach the endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// The provider's name in policy keys and metrics (default `openai`).
    pub name: String,
    /// The base URL, ending before `/chat/completions` (e.g. `https://api.openai.com/v1`).
    pub base_url: String,
    /// The API key, if the endpoint needs one.
    pub api_key: Option<String>,
    /// The model to ask.
    pub model: String,
    /// Whether the endpoint enforces `response_format` JSON schemas while decoding (OpenAI,
    /// vLLM and llama.cpp do); when false, the schema is also stated in the prompt.
    pub constrains_output: bool,
    /// How the schema is sent.
    pub schema_mode: SchemaMode,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

impl OpenAiConfig {
    /// A config for `model` at `base_url` with the defaults.
    pub fn new(base_url: &str, model: &str) -> Self {
        Self {
            name: "openai".into(),
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            constrains_output: true,
            schema_mode: SchemaMode::JsonSchema,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

fn provider_error(name: &str, kind: ErrorKind, message: impl Into<String>) -> Error {
    Error::Provider { provider: name.to_owned(), kind, message: message.into() }
}

impl OpenAiProvider {
    /// Checks the config and builds the HTTP client.
    pub fn new(config: OpenAiConfig) -> Result<Self, Error> {
        let parsed = url::Url::parse(&config.base_url)
            .map_err(|err| Error::Invalid(format!("LLM base URL {:?}: {err}", config.base_url)))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::Invalid(format!("LLM base URL {:?} must be http or https", config.base_url)));
        }
        if config.model.trim().is_empty() {
            return Err(Error::Invalid("an OpenAI-compatible provider needs a model name".into()));
        }
        if config.name.is_empty() || !config.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(Error::Invalid(format!("provider name {:?}: letters, digits, '_' and '-' only", config.name)));
        }
        install_tls_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|err| Error::Invalid(format!("building the HTTP client: {err}")))?;
        Ok(Self {
            client,
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            api_key: config.api_key.filter(|key| !key.is_empty()),
            model: config.model,
            name: config.name,
            constrains: config.constrains_output,
            schema_mode: config.schema_mode,
        })
    }

    /// The request body for `request`.
    pub fn body(&self, request: &ChatRequest, stream: bool) -> Value {
        let messages: Vec<Value> = request
            .messages
            .iter()
            .map(|m| {
                let mut message = json!({"role": m.role.as_str(), "content": m.content});
                if m.role == Role::Tool {
                    message["tool_call_id"] = json!(m.tool_call_id);
                }
                if !m.tool_calls.is_empty() {
                    message["tool_calls"] = m
                        .tool_calls
                        .iter()
                        .map(|call| {
                            json!({"id": call.id, "type": "function",
                                   "function": {"name": call.name, "arguments": call.arguments.to_string()}})
                        })
                        .collect();
                }
                message
            })
            .collect();
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "seed": request.seed,
            "stream": stream,
        });
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        if let Some(format) = &request.response_format {
            body["response_format"] = match self.schema_mode {
                SchemaMode::JsonSchema => json!({
                    "type": "json_schema",
                    "json_schema": {"name": format.name, "schema": format.schema, "strict": true}
                }),
                SchemaMode::JsonObject => json!({"type": "json_object", "schema": format.schema}),
            };
        }
        if !request.tools.is_empty() {
            body["tools"] = request
                .tools
                .iter()
                .map(|tool| {
                    json!({"type": "function",
                           "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters}})
                })
                .collect();
            // one tool: name it (every server takes that); several: any of them, but one
            body["tool_choice"] = match request.tools.as_slice() {
                [only] => json!({"type": "function", "function": {"name": only.name}}),
                _ => json!("required"),
            };
        }
        body
    }

    fn error_for_status(&self, status: reqwest::StatusCode, body: &[u8]) -> Error {
        let text: String = String::from_utf8_lossy(body).chars().take(300).collect();
        let kind = match status.as_u16() {
            429 => ErrorKind::RateLimited,
            408 => ErrorKind::Timeout,
            500..=599 => ErrorKind::Transport,
            _ => ErrorKind::InvalidInput,
        };
        provider_error(&self.name, kind, format!("{}/chat/completions answered {status}: {text}", self.base_url))
    }

    fn send_error(&self, err: &reqwest::Error) -> Error {
        let kind = if err.is_timeout() { ErrorKind::Timeout } else { ErrorKind::Transport };
        // reqwest's message names the URL, never the headers
        provider_error(
            &self.name,
            kind,
            format!("calling {}/chat/completions: {}", self.base_url, model::with_causes(&err)),
        )
    }

    async fn call(
        &self,
        request: &ChatRequest,
        deltas: Option<mpsc::UnboundedSender<String>>,
    ) -> Result<ChatResponse, Error> {
        request.validate()?;
        let started = Instant::now();
        let stream = deltas.is_some();
        let mut http =
            self.client.post(format!("{}/chat/completions", self.base_url)).json(&self.body(request, stream));
        if let Some(key) = &self.api_key {
            http = http.bearer_auth(key);
        }
        let mut response = http.send().await.map_err(|err| self.send_error(&err))?;
        let status = response.status();
        let mut body = Vec::new();
        let mut parser = StreamParser::default();
        let mut first_token_ms = None;
        while let Some(chunk) = response.chunk().await.map_err(|err| self.send_error(&err))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(provider_error(&self.name, ErrorKind::Protocol, "the answer is larger than 8 MiB"));
            }
            body.extend_from_slice(&chunk);
            if stream && status.is_success() {
                let consumed = parser.feed(&body, &self.name)?;
                body.drain(..consumed);
                if !parser.pending_text.is_empty() {
                    first_token_ms.get_or_insert_with(|| started.elapsed().as_secs_f64() * 1000.0);
                    let text = std::mem::take(&mut parser.pending_text);
                    if let Some(deltas) = &deltas {
                        let _ = deltas.send(text);
                    }
                }
            }
        }
        if !status.is_success() {
            return Err(self.error_for_status(status, &body));
        }
        let answer = if stream {
            parser.finish(&self.name)?
        } else {
            let parsed: Completion = serde_json::from_slice(&body).map_err(|err| {
                provider_error(&self.name, ErrorKind::Protocol, format!("the answer is not the OpenAI shape: {err}"))
            })?;
            Answer::from_completion(parsed, &self.name)?
        };
        Ok(ChatResponse {
            provider: self.name.clone(),
            model: answer.model.unwrap_or_else(|| self.model.clone()),
            content: answer.content,
            tool_calls: answer.tool_calls,
            finish_reason: answer.finish,
            usage: answer.usage,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            first_token_ms,
            prompt_hash: request.prompt_hash(),
        })
    }
}

impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn constrains_output(&self) -> bool {
        self.constrains
    }

    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
        deltas: Option<mpsc::UnboundedSender<String>>,
    ) -> BoxFuture<'a, Result<ChatResponse, Error>> {
        Box::pin(self.call(request, deltas))
    }
}

#[derive(Deserialize)]
struct Completion {
    model: Option<String>,
    choices: Vec<Choice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: WireMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Deserialize)]
struct WireToolCall {
    id: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    arguments: String,
}

#[derive(Deserialize, Clone, Copy)]
struct WireUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
}

struct Answer {
    model: Option<String>,
    content: String,
    tool_calls: Vec<ToolCall>,
    finish: FinishReason,
    usage: Usage,
}

fn finish_reason(value: Option<&str>, has_tools: bool) -> FinishReason {
    match value {
        Some("length") => FinishReason::Length,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        _ if has_tools => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

fn parse_arguments(name: &str, provider: &str, arguments: &str) -> Result<Value, Error> {
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str(arguments).map_err(|err| {
        provider_error(
            provider,
            ErrorKind::Protocol,
            format!("the arguments of the tool call {name} are not JSON: {err}"),
        )
    })
}

impl Answer {
    fn from_completion(completion: Completion, provider: &str) -> Result<Self, Error> {
        let Some(choice) = completion.choices.into_iter().next() else {
            return Err(provider_error(provider, ErrorKind::Protocol, "the answer has no choices"));
        };
        let mut tool_calls = Vec::new();
        for (i, call) in choice.message.tool_calls.into_iter().enumerate() {
            let arguments = parse_arguments(&call.function.name, provider, &call.function.arguments)?;
            tool_calls.push(ToolCall {
                id: call.id.unwrap_or_else(|| format!("call_{i}")),
                name: call.function.name,
                arguments,
            });
        }
        let usage = completion.usage.map_or_else(Usage::default, |u| Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        });
        Ok(Self {
            model: completion.model,
            content: choice.message.content.unwrap_or_default(),
            finish: finish_reason(choice.finish_reason.as_deref(), !tool_calls.is_empty()),
            tool_calls,
            usage,
        })
    }
}

/// Reads `data:` lines of a server-sent event stream of chat completion chunks.
#[derive(Default)]
struct StreamParser {
    model: Option<String>,
    content: String,
    pending_text: String,
    tools: Vec<(Option<String>, String, String)>,
    finish: Option<String>,
    usage: Option<WireUsage>,
    done: bool,
}

#[derive(Deserialize)]
struct Chunk {
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<Delta>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<DeltaToolCall>,
}

#[derive(Deserialize)]
struct DeltaToolCall {
    #[serde(default)]
    index: usize,
    id: Option<String>,
    function: Option<DeltaFunction>,
}

#[derive(Deserialize)]
struct DeltaFunction {
    name: Option<String>,
    arguments: Option<String>,
}

impl StreamParser {
    /// Parses every complete line of `buffer`; returns how many bytes were used.
    fn feed(&mut self, buffer: &[u8], provider: &str) -> Result<usize, Error> {
        let mut consumed = 0;
        while let Some(end) = buffer[consumed..].iter().position(|b| *b == b'\n') {
            let line = &buffer[consumed..consumed + end];
            consumed += end + 1;
            let line = String::from_utf8_lossy(line);
            let line = line.trim();
            let Some(data) = line.strip_prefix("data:") else { continue };
            let data = data.trim();
            if data == "[DONE]" {
                self.done = true;
                continue;
            }
            let chunk: Chunk = serde_json::from_str(data).map_err(|err| {
                provider_error(
                    provider,
                    ErrorKind::Protocol,
                    format!("a streamed chunk is not the OpenAI shape: {err}"),
                )
            })?;
            if chunk.model.is_some() {
                self.model = chunk.model;
            }
            if chunk.usage.is_some() {
                self.usage = chunk.usage;
            }
            for choice in chunk.choices {
                if let Some(delta) = choice.delta {
                    if let Some(text) = delta.content {
                        self.content.push_str(&text);
                        self.pending_text.push_str(&text);
                    }
                    for call in delta.tool_calls {
                        if call.index >= crate::MAX_TOOLS {
                            return Err(provider_error(provider, ErrorKind::Protocol, "too many streamed tool calls"));
                        }
                        while self.tools.len() <= call.index {
                            self.tools.push((None, String::new(), String::new()));
                        }
                        let slot = &mut self.tools[call.index];
                        if call.id.is_some() {
                            slot.0 = call.id;
                        }
                        if let Some(function) = call.function {
                            if let Some(name) = function.name {
                                slot.1.push_str(&name);
                            }
                            if let Some(arguments) = function.arguments {
                                slot.2.push_str(&arguments);
                            }
                        }
                    }
                }
                if choice.finish_reason.is_some() {
                    self.finish = choice.finish_reason;
                }
            }
        }
        Ok(consumed)
    }

    fn finish(self, provider: &str) -> Result<Answer, Error> {
        if !self.done && self.finish.is_none() {
            return Err(provider_error(provider, ErrorKind::Transport, "the stream ended before the answer did"));
        }
        let mut tool_calls = Vec::new();
        for (i, (id, name, arguments)) in self.tools.into_iter().enumerate() {
            let arguments = parse_arguments(&name, provider, &arguments)?;
            tool_calls.push(ToolCall { id: id.unwrap_or_else(|| format!("call_{i}")), name, arguments });
        }
        Ok(Answer {
            model: self.model,
            content: self.content,
            finish: finish_reason(self.finish.as_deref(), !tool_calls.is_empty()),
            tool_calls,
            usage: self.usage.map_or_else(Usage::default, |u| Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
            }),
        })
    }
}

/// HTTPS for reqwest: rustls with the ring provider as the process default (once; a provider
/// already installed stays), with the operating system's certificate roots.
fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_parser_joins_text_and_tool_call_fragments() {
        let mut parser = StreamParser::default();
        let stream = concat!(
            "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":{\"name\":\"get\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8}}\n",
            "data: [DONE]\n"
        );
        // fed in two pieces, split inside a line
        let bytes = stream.as_bytes();
        let mut buffer = bytes[..30].to_vec();
        let used = parser.feed(&buffer, "t").expect("no error");
        buffer.drain(..used);
        buffer.extend_from_slice(&bytes[30..]);
        let used = parser.feed(&buffer, "t").expect("no error");
        assert_eq!(used, buffer.len());
        let answer = parser.finish("t").expect("no error");
        assert_eq!(answer.content, "Hello");
        assert_eq!(answer.model.as_deref(), Some("m"));
        assert_eq!(answer.tool_calls, [ToolCall { id: "c1".into(), name: "get".into(), arguments: json!({"a": 1}) }]);
        assert_eq!(answer.finish, FinishReason::ToolCalls);
        assert_eq!(answer.usage, Usage { prompt_tokens: 5, completion_tokens: 3 });
    }

    #[test]
    fn a_cut_stream_and_bad_chunks_are_errors() {
        let mut parser = StreamParser::default();
        parser.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n", "t").expect("no error");
        assert_eq!(parser.finish("t").err().map(|e| e.kind()), Some(ErrorKind::Transport));
        let mut parser = StreamParser::default();
        assert_eq!(parser.feed(b"data: {not json}\n", "t").err().map(|e| e.kind()), Some(ErrorKind::Protocol));
    }

    #[test]
    fn config_is_checked_and_the_key_never_printed() {
        assert!(OpenAiProvider::new(OpenAiConfig::new("ftp://x", "m")).is_err());
        assert!(OpenAiProvider::new(OpenAiConfig::new("http://x", " ")).is_err());
        let mut config = OpenAiConfig::new("http://127.0.0.1:1/v1/", "m");
        config.api_key = Some("sk-secret-value".into());
        let provider = OpenAiProvider::new(config).expect("no error");
        assert!(!format!("{provider:?}").contains("sk-secret"));
        assert_eq!(provider.base_url, "http://127.0.0.1:1/v1");
    }
}
