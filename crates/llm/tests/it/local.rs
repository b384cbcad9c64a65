use std::sync::Arc;

use llm::local::{LocalModel, LocalOptions};
use llm::shapes::{self, Plan, ToolChoice, Verdict, samples};
use llm::{ChatRequest, Error, FinishReason, JsonSchemaFormat, LlmClient, Message, ToolSpec};
use serde_json::json;

fn client() -> llm::Llm {
    let model = LocalModel::load(&test_support::llm_model(), LocalOptions::default()).expect("loading the local model");
    crate::guarded(Arc::new(model))
}

#[tokio::test]
async fn chats_and_counts_tokens() {
    let client = client();
    assert_eq!(client.provider(), "local");
    assert_eq!(client.model(), "SmolLM2-135M-Instruct.Q4_1");
    let mut request = ChatRequest::new(vec![
        Message::system("You are a helpful assistant."),
        Message::user("What is the capital of France?"),
    ]);
    request.max_tokens = 40;
    let response = client.chat(request.clone()).await.expect("no error");
    assert!(!response.content.trim().is_empty());
    assert!(response.usage.prompt_tokens > 10, "{:?}", response.usage);
    assert!(response.usage.completion_tokens > 0 && response.usage.completion_tokens <= 40);
    assert!(response.first_token_ms.is_some());
    assert_eq!(response.prompt_hash, request.prompt_hash());
    // temperature 0 is deterministic: the same question gets the same answer, whether the prompt
    // is read afresh or partly reused from the KV cache (same prefix, then a different question)
    let again = client.chat(request.clone()).await.expect("no error");
    assert_eq!(again.content, response.content);
    let mut other = request.clone();
    other.messages[1] = Message::user("What is the capital of Italy?");
    let other = client.chat(other).await.expect("no error");
    assert_ne!(other.content, response.content);
    let third = client.chat(request).await.expect("no error");
    assert_eq!(third.content, response.content);
}

#[tokio::test]
async fn streams_the_same_text_it_returns() {
    let client = client();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut request = ChatRequest::new(vec![Message::user("Name three colours.")]);
    request.max_tokens = 30;
    let response = client.chat_stream(request, tx).await.expect("no error");
    let mut streamed = String::new();
    let mut pieces = 0;
    while let Some(piece) = rx.recv().await {
        streamed.push_str(&piece);
        pieces += 1;
    }
    assert!(pieces > 1, "the answer came in {pieces} piece(s)");
    assert_eq!(streamed, response.content);
}

#[tokio::test]
async fn tool_choices_are_schema_valid() {
    let client = client();
    let names: Vec<&str> = samples::TOOLS.iter().map(|(name, _)| *name).collect();
    for step in samples::STEPS {
        let (request, format) = shapes::tool_choice_request(&samples::TOOLS, step);
        let answer = llm::structured(&client, request, format).await.expect("no error");
        let choice: ToolChoice = serde_json::from_value(answer.value).expect("no error");
        assert!(names.contains(&choice.tool.as_str()), "{step}: {choice:?}");
        assert!(choice.reason.chars().count() <= shapes::MAX_TEXT);
    }
}

#[tokio::test]
async fn plans_are_schema_valid() {
    let client = client();
    for goal in samples::GOALS {
        let (request, format) = shapes::plan_request(goal, "");
        let answer = llm::structured(&client, request, format).await.expect("no error");
        let plan = Plan::from_value(answer.value).expect("no error");
        assert!((1..=shapes::MAX_PLAN_STEPS).contains(&plan.steps.len()), "{goal}: {plan:?}");
        assert!(plan.steps.iter().all(|s| !s.id.is_empty() && !s.description.is_empty()));
    }
}

#[tokio::test]
async fn verdicts_are_schema_valid() {
    let client = client();
    for (criteria, result) in samples::VERDICTS {
        let (request, format) = shapes::verdict_request(criteria, result);
        let answer = llm::structured(&client, request, format).await.expect("no error");
        let verdict: Verdict = serde_json::from_value(answer.value).expect("no error");
        assert!(verdict.reason.chars().count() <= shapes::MAX_TEXT, "{verdict:?}");
    }
}

#[tokio::test]
async fn tool_calls_follow_the_tools_schema() {
    let client = client();
    let mut request = ChatRequest::new(vec![Message::user("Open https://example.com in the browser.")]);
    request.tools = vec![
        ToolSpec {
            name: "browser_navigate".into(),
            description: "Open a URL.".into(),
            parameters: json!({"type": "object", "properties": {"url": {"type": "string", "maxLength": 100}}, "required": ["url"], "additionalProperties": false}),
        },
        ToolSpec {
            name: "browser_close".into(),
            description: "Close the browser.".into(),
            parameters: json!({"type": "object", "properties": {}, "additionalProperties": false}),
        },
    ];
    request.max_tokens = 120;
    let response = client.chat(request.clone()).await.expect("no error");
    assert_eq!(response.finish_reason, FinishReason::ToolCalls);
    assert_eq!(response.tool_calls.len(), 1);
    let call = &response.tool_calls[0];
    let tool = request.tools.iter().find(|t| t.name == call.name).expect("a tool that was offered");
    assert!(jsonschema::is_valid(&tool.parameters, &call.arguments), "{call:?}");
    // the result goes back as a tool message
    let mut follow_up = ChatRequest::new(vec![
        Message::user("Open https://example.com in the browser."),
        Message { tool_calls: response.tool_calls.clone(), ..Message::assistant("") },
        Message::tool(call.id.clone(), "opened; title: Example Domain"),
        Message::user("What is the page's title?"),
    ]);
    follow_up.max_tokens = 30;
    assert!(!client.chat(follow_up).await.expect("no error").content.is_empty());
}

#[tokio::test]
async fn an_answer_that_breaks_the_schema_is_an_error_not_a_value() {
    // the grammar cannot express uniqueItems, so the model writes ["a", "a"] twice; the
    // validator refuses both, and the caller gets an error naming the problem
    let client = client();
    let format = JsonSchemaFormat {
        name: "pair".into(),
        schema: json!({"type": "array", "items": {"enum": ["a"]}, "minItems": 2, "maxItems": 2, "uniqueItems": true}),
    };
    let request = ChatRequest::new(vec![Message::user("Give two letters.")]);
    match llm::structured(&client, request, format).await {
        Err(Error::InvalidOutput { schema, attempts, errors, output }) => {
            assert_eq!(schema, "pair");
            assert_eq!(attempts, 2);
            assert!(errors.contains("unique"), "{errors}");
            assert!(output.contains("\"a\""), "{output}");
        }
        other => panic!("expected InvalidOutput, got {other:?}"),
    }
}

#[tokio::test]
async fn dropping_a_call_stops_its_generation() {
    let client = client();
    // a grammar that forces about 3,000 tokens: the model cannot end early by itself
    let long = JsonSchemaFormat {
        name: "long".into(),
        schema: json!({"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "minItems": 1500, "maxItems": 1500}),
    };
    let mut request = ChatRequest::new(vec![Message::user("Count.")]);
    request.response_format = Some(long);
    request.max_tokens = 3_500;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.chat_stream(request, tx).await }
    });
    // wait for the first pieces, then cancel
    for _ in 0..5 {
        if rx.recv().await.is_none() {
            panic!("the generation ended early: {:?}", call.await);
        }
    }
    call.abort();
    let mut after = 0;
    while rx.recv().await.is_some() {
        after += 1;
    }
    assert!(after < 100, "{after} pieces arrived after the call was dropped");
    // the model is free again
    let mut short = ChatRequest::new(vec![Message::user("Say yes.")]);
    short.max_tokens = 5;
    assert!(client.chat(short).await.is_ok());
}

#[tokio::test]
async fn bad_requests_are_clear_errors() {
    let client = client();
    // longer than the context
    let mut request = ChatRequest::new(vec![Message::user("word ".repeat(6_000))]);
    request.max_tokens = 10;
    let err = client.chat(request).await.expect_err("an error");
    assert!(err.to_string().contains("context of 4096 tokens"), "{err}");
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    // a schema the grammar builder cannot take
    let mut request = ChatRequest::new(vec![Message::user("hi")]);
    request.response_format = Some(JsonSchemaFormat {
        name: "bad".into(),
        schema: json!({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}),
    });
    let err = client.chat(request).await.expect_err("an error");
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    // limits are checked before anything runs
    let mut request = ChatRequest::new(vec![Message::user("hi")]);
    request.max_tokens = 100_000;
    assert!(client.chat(request).await.expect_err("an error").to_string().contains("max_tokens"));
}

#[test]
fn a_missing_model_says_how_to_get_it() {
    let err = LocalModel::load(std::path::Path::new("/nonexistent/model.gguf"), LocalOptions::default())
        .expect_err("an error");
    assert!(matches!(err, Error::ModelMissing { .. }));
    assert!(err.to_string().contains("scripts/models install"), "{err}");
    let dir = tempfile::tempdir().expect("no error");
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"not a gguf file").expect("no error");
    let err = LocalModel::load(&junk, LocalOptions::default()).expect_err("an error");
    assert!(matches!(err, Error::Model { .. }), "{err}");
}

#[test]
fn one_load_per_path() {
    let a = LocalModel::load(&test_support::llm_model(), LocalOptions::default()).expect("no error");
    let b = LocalModel::load(&test_support::llm_model(), LocalOptions::default()).expect("no error");
    assert!(std::ptr::eq(a.info(), b.info()));
    assert!(a.info().params > 100_000_000 && a.info().params < 200_000_000, "{:?}", a.info());
}

#[tokio::test]
async fn every_call_is_counted_with_its_tokens_and_latency() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    // the test runs on one thread (current-thread runtime), where this recorder is installed
    let _guard = metrics::set_default_local_recorder(&recorder);
    let client = client();
    let mut request = ChatRequest::new(vec![Message::user("Say hello.")]);
    request.max_tokens = 8;
    let response = client.chat(request).await.expect("no error");
    let failed = client.chat(ChatRequest::new(vec![Message::user("word ".repeat(6_000))])).await;
    assert!(failed.is_err());
    let text = handle.render();
    let model = "SmolLM2-135M-Instruct.Q4_1";
    let line = |name: &str, labels: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && labels.split(',').all(|label| l.contains(label)))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} with {labels} in:\n{text}"))
    };
    let ok = format!("provider=\"local\",model=\"{model}\",outcome=\"ok\"");
    assert_eq!(line("cogo_llm_calls_total", &ok), 1.0);
    assert_eq!(line("cogo_llm_calls_total", "outcome=\"invalid_input\""), 1.0);
    assert_eq!(line("cogo_llm_tokens_total", "direction=\"in\""), response.usage.prompt_tokens as f64);
    assert_eq!(line("cogo_llm_tokens_total", "direction=\"out\""), response.usage.completion_tokens as f64);
    assert!(text.contains("cogo_llm_latency_ms"), "{text}");
}
