//! WebSocket transport for `rmcp`: JSON-RPC messages as text frames over `tokio-tungstenite`,
//! offering the `mcp` subprotocol.

use std::collections::BTreeMap;

use futures_util::{SinkExt, Stream, StreamExt};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

type WsSink = std::pin::Pin<Box<dyn futures_util::Sink<ClientJsonRpcMessage, Error = WsError> + Send>>;
type WsStream = std::pin::Pin<Box<dyn Stream<Item = ServerJsonRpcMessage> + Send>>;

/// Opens the WebSocket and returns the message sink and stream `rmcp` serves over.
pub(crate) async fn connect(
    url: &model::config::mcp::Url,
    headers: &BTreeMap<String, String>,
) -> Result<(WsSink, WsStream), WsError> {
    let mut request = url.as_str().into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mcp"));
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            request.headers_mut().insert(name, value);
        }
    }
    let (socket, _response) = tokio_tungstenite::connect_async(request).await?;
    let (write, read) = socket.split();
    let sink = write.with(|message: ClientJsonRpcMessage| async move {
        serde_json::to_string(&message)
            .map(|text| Message::Text(text.into()))
            .map_err(|e| WsError::Io(std::io::Error::other(e)))
    });
    let stream = read.filter_map(|frame| async move {
        match frame {
            Ok(Message::Text(text)) => decode_text_frame(&text),
            Ok(_) => None,
            Err(err) => {
                tracing::debug!(error = %err, "WebSocket read failed");
                None
            }
        }
    });
    Ok((Box::pin(sink), Box::pin(stream)))
}

/// Decodes one text frame from the server as a JSON-RPC message; a frame that is not one is dropped
/// (`None`) with a warning.
pub(crate) fn decode_text_frame(text: &str) -> Option<ServerJsonRpcMessage> {
    match serde_json::from_str::<ServerJsonRpcMessage>(text) {
        Ok(message) => Some(message),
        Err(err) => {
            tracing::warn!(error = %err, "dropping a WebSocket frame that is not a JSON-RPC message");
            None
        }
    }
}
