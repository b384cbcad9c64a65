use std::sync::Arc;

use llm::openai::{OpenAiConfig, OpenAiProvider, SchemaMode};
use llm::shapes::{self, Verdict};
use llm::{ChatRequest, Error, FinishReason, LlmClient, Message, ToolSpec};
use model::ErrorKind;
use serde_json::json;

fn provider(port: u16) -> OpenAiProvider {
    let mut config = OpenAiConfig::new(&format!("http://127.0.0.1:{port}/v1"), "smollm2");
    config.name = "llamacpp".into();
    config.schema_mode = SchemaMode::JsonObject;
    config.api_key = Some("sk-test-key".into());
    OpenAiProvider::new(config).expect("no error")
}

#[tokio::test]
async fn a_real_openai_compatible_server() {
    let server = test_support::start_openai_compatible_server();
    let client = crate::guarded(Arc::new(provider(server.port)));
    assert_eq!(client.provider(), "llamacpp");

    // plain chat with token counts
    let mut request = ChatRequest::new(vec![Message::system("Be brief."), Message::user("What is 2 + 2?")]);
    request.max_tokens = 30;
    let response = client.chat(request.clone()).await.expect("no error");
    assert!(!response.content.is_empty());
    assert!(response.usage.prompt_tokens > 0 && response.usage.completion_tokens > 0, "{:?}", response.usage);

    // streaming: the pieces add up to the answer
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let streamed = client.chat_stream(request, tx).await.expect("no error");
    let mut joined = String::new();
    while let Some(piece) = rx.recv().await {
        joined.push_str(&piece);
    }
    assert_eq!(joined, streamed.content);
    assert!(matches!(streamed.finish_reason, FinishReason::Stop | FinishReason::Length));
    assert!(streamed.first_token_ms.is_some());

    // structured output, constrained by the server
    let (request, format) = shapes::verdict_request("the page has a title", "title is 'Home'");
    let answer = llm::structured(&client, request, format).await.expect("no error");
    let _: Verdict = serde_json::from_value(answer.value).expect("no error");

    // a tool call
    let mut request = ChatRequest::new(vec![Message::user("Open https://example.com")]);
    request.tools = vec![ToolSpec {
        name: "browser_navigate".into(),
        description: "Open a URL in the browser.".into(),
        parameters: json!({"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]}),
    }];
    request.max_tokens = 80;
    let response = client.chat(request).await.expect("no error");
    assert_eq!(response.finish_reason, FinishReason::ToolCalls);
    assert_eq!(response.tool_calls[0].name, "browser_navigate");
    assert!(response.tool_calls[0].arguments.is_object());
}

#[tokio::test]
async fn a_server_that_rejects_the_request_is_a_clear_error() {
    let server = test_support::start_openai_compatible_server();
    // llama-cpp-python does not take OpenAI's json_schema response format: it answers with an error
    let mut config = OpenAiConfig::new(&format!("http://127.0.0.1:{}/v1", server.port), "smollm2");
    config.schema_mode = SchemaMode::JsonSchema;
    let provider = OpenAiProvider::new(config).expect("no error");
    let mut request = ChatRequest::new(vec![Message::user("hi")]);
    request.response_format = Some(shapes::verdict_format());
    let err = llm::Provider::complete(&provider, &request, None).await.expect_err("an error");
    let text = err.to_string();
    assert!(text.contains("answered"), "{text}");
    assert!(text.contains("json_schema"), "{text}");
}

#[tokio::test]
async fn an_unreachable_endpoint_opens_the_breaker() {
    let port = test_support::free_port(); // nothing listens there
    let client = crate::guarded(Arc::new(provider(port)));
    let request = ChatRequest::new(vec![Message::user("hi")]);
    let mut kinds = Vec::new();
    for _ in 0..6 {
        match client.chat(request.clone()).await {
            Err(Error::CircuitOpen(text)) => {
                assert!(text.contains("llm.call.llamacpp"), "{text}");
                assert!(kinds.iter().all(|k| *k == ErrorKind::Transport), "{kinds:?}");
                return;
            }
            Err(err) => {
                assert!(!err.to_string().contains("sk-test-key"), "the key leaked: {err}");
                kinds.push(err.kind());
            }
            Ok(_) => panic!("nothing listens on {port}"),
        }
    }
    panic!("the breaker never opened: {kinds:?}");
}
