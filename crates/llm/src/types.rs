//! The request and response shapes every provider speaks.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;

/// Most messages in one request.
pub const MAX_MESSAGES: usize = 256;
/// Most characters in one message.
pub const MAX_MESSAGE_CHARS: usize = 200_000;
/// Most tokens one call may generate.
pub const MAX_GENERATED_TOKENS: u32 = 8_192;
/// Most tools offered in one request.
pub const MAX_TOOLS: usize = 128;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// The user (or the orchestrator speaking for it).
    User,
    /// The model.
    Assistant,
    /// A tool's result, answering an assistant's tool call.
    Tool,
}

impl Role {
    /// The wire name (`system`, `user`, `assistant`, `tool`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
        }
    }
}

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id (answer it with a `tool` message carrying this id).
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, as JSON.
    pub arguments: serde_json::Value,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
    /// For `tool` messages: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For `assistant` messages: the tool calls it made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

impl Message {
    fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into(), tool_call_id: None, tool_calls: Vec::new() }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }

    /// A tool result answering the call `call_id`.
    pub fn tool(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self { tool_call_id: Some(call_id.into()), ..Self::new(Role::Tool, content) }
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Its name (letters, digits, `_`, `-`, `.`; at most 64 characters).
    pub name: String,
    /// What it does.
    pub description: String,
    /// The JSON Schema of its arguments (an object schema).
    pub parameters: serde_json::Value,
}

/// Structured output: the answer must be JSON matching `schema`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    /// A short name for the shape (letters, digits, `_`, `-`).
    pub name: String,
    /// The JSON Schema.
    pub schema: serde_json::Value,
}

/// One chat request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Sampling temperature; 0 picks the most likely token every time (deterministic).
    pub temperature: f32,
    /// Seed for sampling when `temperature` is above 0.
    pub seed: u32,
    /// Constrain the answer to JSON of this schema.
    pub response_format: Option<JsonSchemaFormat>,
    /// Tools the model may call (the answer is then one tool call).
    pub tools: Vec<ToolSpec>,
    /// Limit on the whole call, on top of the retry policy's per-attempt timeout.
    pub timeout: Option<Duration>,
}

impl ChatRequest {
    /// A request with these messages and the defaults: 512 tokens, temperature 0, seed 0.
    pub fn new(messages: Vec<Message>) -> Self {
        Self {
            messages,
            max_tokens: 512,
            temperature: 0.0,
            seed: 0,
            response_format: None,
            tools: Vec::new(),
            timeout: None,
        }
    }

    /// Checks the limits and names; the error says which field is wrong.
    pub fn validate(&self) -> Result<(), Error> {
        if self.messages.is_empty() {
            return Err(Error::Invalid("messages: at least one message is needed".into()));
        }
        if self.messages.len() > MAX_MESSAGES {
            return Err(Error::Invalid(format!("messages: {} messages, at most {MAX_MESSAGES}", self.messages.len())));
        }
        for (i, message) in self.messages.iter().enumerate() {
            let chars = message.content.chars().count();
            if chars > MAX_MESSAGE_CHARS {
                return Err(Error::Invalid(format!(
                    "messages[{i}].content: {chars} characters, at most {MAX_MESSAGE_CHARS}"
                )));
            }
            if message.content.contains('\0') {
                return Err(Error::Invalid(format!("messages[{i}].content: holds a NUL character")));
            }
            if message.role == Role::Tool && message.tool_call_id.is_none() {
                return Err(Error::Invalid(format!("messages[{i}]: a tool message needs tool_call_id")));
            }
        }
        if self.max_tokens == 0 || self.max_tokens > MAX_GENERATED_TOKENS {
            return Err(Error::Invalid(format!(
                "max_tokens: {}, must be 1 to {MAX_GENERATED_TOKENS}",
                self.max_tokens
            )));
        }
        if !self.temperature.is_finite() || !(0.0..=2.0).contains(&self.temperature) {
            return Err(Error::Invalid(format!("temperature: {}, must be 0 to 2", self.temperature)));
        }
        if self.tools.len() > MAX_TOOLS {
            return Err(Error::Invalid(format!("tools: {} tools, at most {MAX_TOOLS}", self.tools.len())));
        }
        for (i, tool) in self.tools.iter().enumerate() {
            check_name(&tool.name).map_err(|why| Error::Invalid(format!("tools[{i}].name {:?}: {why}", tool.name)))?;
            if !tool.parameters.is_object() {
                return Err(Error::Invalid(format!("tools[{i}].parameters: must be a JSON Schema object")));
            }
        }
        if let Some(format) = &self.response_format {
            check_name(&format.name)
                .map_err(|why| Error::Invalid(format!("response_format.name {:?}: {why}", format.name)))?;
            if !format.schema.is_object() {
                return Err(Error::Invalid("response_format.schema: must be a JSON Schema object".into()));
            }
            if !self.tools.is_empty() {
                return Err(Error::Invalid("response_format and tools cannot be combined in one request".into()));
            }
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::Invalid("timeout: must be above zero".into()));
        }
        Ok(())
    }

    /// SHA-256 (hex) of the messages, format and tools: the same prompt hashes the same, whatever
    /// the provider. Recorded with every call and in decision records.
    pub fn prompt_hash(&self) -> String {
        let mut hasher = Sha256::new();
        for message in &self.messages {
            hasher.update(message.role.as_str().as_bytes());
            hasher.update([0]);
            hasher.update(message.content.as_bytes());
            hasher.update([0]);
            if let Some(id) = &message.tool_call_id {
                hasher.update(id.as_bytes());
            }
            hasher.update([1]);
        }
        if let Some(format) = &self.response_format {
            hasher.update(format.schema.to_string().as_bytes());
        }
        for tool in &self.tools {
            hasher.update(tool.name.as_bytes());
            hasher.update(tool.parameters.to_string().as_bytes());
        }
        let digest = hasher.finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        return Err("may hold only letters, digits, '_', '-' and '.'");
    }
    Ok(())
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its answer.
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// The model called a tool.
    ToolCalls,
}

/// Tokens read and written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub completion_tokens: u64,
}

/// A provider's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The provider (`local`, `openai`, …).
    pub provider: String,
    /// The model that answered.
    pub model: String,
    /// The text (empty when the answer is only tool calls).
    pub content: String,
    /// Tool calls the model made.
    pub tool_calls: Vec<ToolCall>,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
    /// Wall time of the call in milliseconds (the last attempt).
    pub latency_ms: f64,
    /// Time to the first generated token in milliseconds, when the provider streams or runs here.
    pub first_token_ms: Option<f64>,
    /// [`ChatRequest::prompt_hash`] of the request.
    pub prompt_hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let mut request = ChatRequest::new(vec![Message::user("hi")]);
        assert!(request.validate().is_ok());
        request.max_tokens = 0;
        assert!(request.validate().expect_err("an error").to_string().contains("max_tokens"));
        request.max_tokens = 10;
        request.temperature = f32::NAN;
        assert!(request.validate().expect_err("an error").to_string().contains("temperature"));
        request.temperature = 0.0;
        request.messages.push(Message { tool_call_id: None, ..Message::tool("x", "y") });
        assert!(request.validate().expect_err("an error").to_string().contains("messages[1]"));
        request.messages.pop();
        request.tools.push(ToolSpec {
            name: "bad name".into(),
            description: String::new(),
            parameters: serde_json::json!({}),
        });
        assert!(request.validate().expect_err("an error").to_string().contains("tools[0].name"));
        let empty = ChatRequest::new(Vec::new());
        assert!(empty.validate().expect_err("an error").to_string().contains("at least one"));
        let nul = ChatRequest::new(vec![Message::user("a\0b")]);
        assert!(nul.validate().expect_err("an error").to_string().contains("NUL"));
    }

    #[test]
    fn prompt_hash_depends_on_content_and_format() {
        let a = ChatRequest::new(vec![Message::user("hi")]);
        let mut b = a.clone();
        assert_eq!(a.prompt_hash(), b.prompt_hash());
        b.response_format = Some(JsonSchemaFormat { name: "x".into(), schema: serde_json::json!({"type": "object"}) });
        assert_ne!(a.prompt_hash(), b.prompt_hash());
        let c = ChatRequest::new(vec![Message::user("hi!")]);
        assert_ne!(a.prompt_hash(), c.prompt_hash());
        assert_eq!(a.prompt_hash().len(), 64);
    }
}
