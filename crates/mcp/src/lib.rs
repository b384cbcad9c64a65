//! COGO's MCP client: one long-lived session per toolset over WebSocket (subprotocol `mcp`), a stdio
//! child process or streamable HTTP, built on `rmcp`. Calls run concurrently on the session.
//!
//! Invariant: every failure maps to an `ErrorKind` (transport, timeout, protocol, tool error) so the
//! resilience layer decides retry and breaker accounting by type, never by message text.

pub mod examples;
mod gateway;
mod websocket;

pub use gateway::{
    Attempt, CallContext, Gateway, GatewayAnswer, GatewayError, GatewayHandler, McpCall, ToolsetHealth, redact,
};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientRequest, PingRequest};
use rmcp::service::{RoleClient, RunningService};
use serde_json::Value;

use model::ErrorKind;
use model::config::mcp::{Toolset, Transport};

/// What can go wrong talking to an MCP server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The session could not be established.
    #[error("connecting to MCP toolset {toolset} over {transport}: {detail}")]
    Connect {
        /// Toolset name.
        toolset: String,
        /// `websocket`, `stdio` or `http`.
        transport: &'static str,
        /// What failed.
        detail: String,
    },
    /// The toolset's configuration has no usable transport.
    #[error("MCP toolset {toolset} has no usable transport: run `cogo config check`")]
    NoTransport {
        /// Toolset name.
        toolset: String,
    },
    /// No answer in time.
    #[error("MCP toolset {toolset}: {what} got no answer within {after_ms} ms")]
    Timeout {
        /// Toolset name.
        toolset: String,
        /// The request (`tools/call echo`, `ping`…).
        what: String,
        /// The limit.
        after_ms: u64,
    },
    /// The session broke or the server answered with a protocol error.
    #[error("MCP toolset {toolset}: {what} failed: {detail}")]
    Request {
        /// Toolset name.
        toolset: String,
        /// The request.
        what: String,
        /// Transport or protocol.
        kind: ErrorKind,
        /// What the service said.
        detail: String,
    },
    /// The session dropped and the next connect attempt waits for its backoff.
    #[error(
        "MCP toolset {toolset} is unreachable; reconnecting in {in_ms} ms after {failures} failed attempt(s): {last}"
    )]
    Reconnecting {
        /// Toolset name.
        toolset: String,
        /// Milliseconds until the next connect attempt.
        in_ms: u64,
        /// Connect attempts failed in a row.
        failures: u32,
        /// The last connect error.
        last: String,
    },
    /// Tool arguments must be a JSON object.
    #[error("arguments of tool {tool} must be a JSON object, got {got}")]
    BadArguments {
        /// Tool name.
        tool: String,
        /// The JSON type given.
        got: &'static str,
    },
}

impl Error {
    /// How this failure counts for retry and breakers.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Connect { .. } | Self::Reconnecting { .. } => ErrorKind::Transport,
            Self::NoTransport { .. } | Self::BadArguments { .. } => ErrorKind::InvalidInput,
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::Request { kind, .. } => *kind,
        }
    }
}

/// A tool as listed by `tools/list`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ToolInfo {
    /// Tool name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// JSON Schema of its arguments.
    pub input_schema: Value,
}

/// The answer to one `tools/call`.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOutcome {
    /// `isError: true`: the tool ran and reported a failure.
    pub is_error: bool,
    /// The whole result as JSON (content, structuredContent…).
    pub result: Value,
    /// Time from request to answer.
    pub latency: Duration,
}

/// What the client keeps about its server between requests: the `tools/list` answer until the
/// server says `notifications/tools/list_changed`.
#[derive(Debug, Default)]
struct Watch {
    tools: RwLock<Option<Arc<Vec<ToolInfo>>>>,
    list_changes: AtomicU64,
}

/// The client side of the session: answers the server's notifications.
#[derive(Debug, Clone, Default)]
struct Handler(Arc<Watch>);

impl rmcp::ClientHandler for Handler {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        let mut info = rmcp::model::ClientConfig::default();
        info.client_info.name = "cogo".to_owned();
        info.client_info.version = env!("CARGO_PKG_VERSION").to_owned();
        // the newest revision with an `initialize` handshake, which every server here speaks
        info.protocol_version = rmcp::model::ProtocolVersion::LATEST_WITH_INITIALIZE;
        info
    }

    fn on_tool_list_changed(
        &self,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) -> impl Future<Output = ()> + Send + '_ {
        self.0.list_changes.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut tools) = self.0.tools.write() {
            *tools = None;
        }
        std::future::ready(())
    }
}

/// One session with one toolset.
pub struct McpClient {
    toolset: String,
    transport: &'static str,
    service: RunningService<RoleClient, Handler>,
    watch: Arc<Watch>,
}

impl std::fmt::Debug for McpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpClient").field("toolset", &self.toolset).field("transport", &self.transport).finish()
    }
}

fn request_error(toolset: &str, what: &str, err: rmcp::ServiceError) -> Error {
    use rmcp::ServiceError as E;
    let kind = match &err {
        E::McpError(_) => ErrorKind::Protocol,
        E::TransportSend(_) | E::TransportClosed => ErrorKind::Transport,
        E::Timeout { .. } => ErrorKind::Timeout,
        _ => ErrorKind::Protocol,
    };
    Error::Request { toolset: toolset.to_owned(), what: what.to_owned(), kind, detail: err.to_string() }
}

impl McpClient {
    /// Opens a session with `toolset` (initialize handshake included), within `timeout`.
    pub async fn connect(toolset: &str, config: &Toolset, timeout: Duration) -> Result<Self, Error> {
        let transport = config.transport().ok_or_else(|| Error::NoTransport { toolset: toolset.to_owned() })?;
        let name = transport.name();
        let connect_error = |detail: String| Error::Connect { toolset: toolset.to_owned(), transport: name, detail };
        let handler = Handler::default();
        let watch = handler.0.clone();
        let connecting = async {
            match transport {
                Transport::Stdio { command, args } => {
                    let mut cmd = tokio::process::Command::new(&command);
                    cmd.args(&args).envs(&config.env).stderr(std::process::Stdio::null()).kill_on_drop(true);
                    let child = rmcp::transport::TokioChildProcess::new(cmd)
                        .map_err(|e| connect_error(format!("starting {command:?}: {e}")))?;
                    handler.serve(child).await.map_err(|e| connect_error(e.to_string()))
                }
                Transport::Http(url) => {
                    install_tls_provider();
                    let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(url.as_str());
                    handler.serve(transport).await.map_err(|e| connect_error(e.to_string()))
                }
                Transport::WebSocket(url) => {
                    let (sink, stream) =
                        websocket::connect(&url, &config.headers).await.map_err(|e| connect_error(e.to_string()))?;
                    handler.serve((sink, stream)).await.map_err(|e| connect_error(e.to_string()))
                }
            }
        };
        let service = tokio::time::timeout(timeout, connecting).await.map_err(|_| Error::Timeout {
            toolset: toolset.to_owned(),
            what: "initialize".to_owned(),
            after_ms: timeout.as_millis() as u64,
        })??;
        tracing::debug!(toolset, transport = name, "MCP session open");
        Ok(Self { toolset: toolset.to_owned(), transport: name, service, watch })
    }

    /// The toolset name.
    pub fn toolset(&self) -> &str {
        &self.toolset
    }

    /// `websocket`, `stdio` or `http`.
    pub fn transport(&self) -> &'static str {
        self.transport
    }

    /// Whether the session has ended (the server closed it or the transport broke).
    pub fn is_closed(&self) -> bool {
        self.service.is_closed()
    }

    /// How many `notifications/tools/list_changed` the server has sent on this session.
    pub fn tool_list_changes(&self) -> u64 {
        self.watch.list_changes.load(Ordering::Relaxed)
    }

    /// Every tool of the server, from the cache kept until the server announces a change
    /// (`notifications/tools/list_changed`); fetched with `tools/list` when there is none.
    pub async fn tools(&self, timeout: Duration) -> Result<Arc<Vec<ToolInfo>>, Error> {
        if let Some(tools) = self.watch.tools.read().ok().and_then(|t| t.clone()) {
            return Ok(tools);
        }
        let changes = self.tool_list_changes();
        let tools = Arc::new(self.list_tools(timeout).await?);
        // a change announced while listing makes this answer stale: keep it out of the cache
        if self.tool_list_changes() == changes
            && let Ok(mut cache) = self.watch.tools.write()
        {
            *cache = Some(tools.clone());
        }
        Ok(tools)
    }

    /// Every tool of the server (all pages of `tools/list`), asked now.
    pub async fn list_tools(&self, timeout: Duration) -> Result<Vec<ToolInfo>, Error> {
        let listing =
            tokio::time::timeout(timeout, self.service.list_all_tools()).await.map_err(|_| Error::Timeout {
                toolset: self.toolset.clone(),
                what: "tools/list".to_owned(),
                after_ms: timeout.as_millis() as u64,
            })?;
        let tools = listing.map_err(|e| request_error(&self.toolset, "tools/list", e))?;
        Ok(tools
            .into_iter()
            .map(|tool| ToolInfo {
                name: tool.name.to_string(),
                description: tool.description.map(|d| d.to_string()),
                input_schema: Value::Object((*tool.input_schema).clone()),
            })
            .collect())
    }

    /// Calls `tool` with `arguments` (a JSON object, or null for none), within `timeout`.
    pub async fn call(&self, tool: &str, arguments: Value, timeout: Duration) -> Result<CallOutcome, Error> {
        let arguments = match arguments {
            Value::Object(map) => Some(map),
            Value::Null => None,
            other => {
                let got = match other {
                    Value::Array(_) => "an array",
                    Value::String(_) => "a string",
                    Value::Number(_) => "a number",
                    _ => "a boolean",
                };
                return Err(Error::BadArguments { tool: tool.to_owned(), got });
            }
        };
        let mut params = CallToolRequestParams::new(tool.to_owned());
        params.arguments = arguments;
        let what = format!("tools/call {tool}");
        let started = Instant::now();
        let answer = tokio::time::timeout(timeout, self.service.call_tool(params)).await.map_err(|_| {
            Error::Timeout { toolset: self.toolset.clone(), what: what.clone(), after_ms: timeout.as_millis() as u64 }
        })?;
        let result = answer.map_err(|e| request_error(&self.toolset, &what, e))?;
        let latency = started.elapsed();
        let (result, is_error) = call_answer(&result);
        Ok(CallOutcome { is_error, result, latency })
    }

    /// Sends an MCP `ping` and returns the round-trip time.
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, Error> {
        let started = Instant::now();
        let request = ClientRequest::PingRequest(PingRequest::default());
        let answer =
            tokio::time::timeout(timeout, self.service.send_request(request)).await.map_err(|_| Error::Timeout {
                toolset: self.toolset.clone(),
                what: "ping".to_owned(),
                after_ms: timeout.as_millis() as u64,
            })?;
        answer.map_err(|e| request_error(&self.toolset, "ping", e))?;
        Ok(started.elapsed())
    }

    /// Ends the session (the stdio child is stopped).
    pub async fn close(self) {
        let _ = self.service.cancel().await;
    }
}

/// A tool's result as the gateway receives it: the whole result as JSON and its `isError` flag.
fn call_answer(result: &rmcp::model::CallToolResult) -> (Value, bool) {
    (serde_json::to_value(result).unwrap_or(Value::Null), result.is_error.unwrap_or(false))
}

/// The answer to a `tools/call` that one WebSocket text frame from a server carries, decoded as a
/// session decodes it: `Some((result, is_error))` with the result exactly as [`McpClient::call`]
/// hands it to the gateway, `None` when the frame is not a JSON-RPC message or not a tool's result.
/// The entry point of the `mcp_frame` fuzz target (`fuzz/`).
pub fn tool_answer_of_frame(text: &str) -> Option<(Value, bool)> {
    use rmcp::model::{JsonRpcMessage, ServerResult};
    match websocket::decode_text_frame(text)? {
        JsonRpcMessage::Response(response) => match response.result {
            ServerResult::CallToolResult(result) => Some(call_answer(&result)),
            _ => None,
        },
        _ => None,
    }
}

/// HTTPS for reqwest: rustls with the ring provider as the process default (once; a provider
/// already installed stays), with the operating system's certificate roots.
fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
