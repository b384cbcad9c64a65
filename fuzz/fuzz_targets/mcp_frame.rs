//! MCP frames from the wire: a WebSocket text frame decoded as the client decodes it
//! (`mcp::tool_answer_of_frame`), and what the gateway makes of a tool's result
//! (`Gateway::answer_artifacts`: secrets scrubbed, base64 images taken out as files), plus
//! `mcp::redact` and `Gateway::scrub_text`.
//!
//! Input: the first line is a secret registered with the gateway, the rest is the frame.
//! Properties: nothing panics; no string or key of what the gateway keeps contains the secret
//! (images aside: their bytes are the tool's); image files are named `image-<n>.<ext>` and each one
//! is referenced by the item it was taken from; redacted values of secret-looking keys are `***`.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8 (the transport checks before the client sees them)
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (secret, frame) = text.split_once('\n').unwrap_or(("", text));
    let gateway = mcp::Gateway::new(
        Default::default(),
        breakers(),
        artifacts::Artifacts::local(&std::env::temp_dir()).expect("an artifact store"),
        "fuzz",
    )
        .with_scrubbed_values([secret.to_owned()]);
    // the gateway ignores values under 4 characters: they would blank ordinary text
    let secret = (secret.chars().count() >= 4).then_some(secret);

    if let Some((result, _is_error)) = mcp::tool_answer_of_frame(frame) {
        check_answer(&gateway, secret, result);
    }
    if let Ok(value) = serde_json::from_str::<Value>(frame) {
        // any JSON as a result, also shapes rmcp would not pass on
        let result = value.get("result").cloned().unwrap_or(value);
        check_redact(&result, &mcp::redact(&result));
        let (scrubbed, files) = gateway.answer_artifacts(json!({ "w": result.clone() }));
        assert!(files.is_empty(), "files taken from a result without content");
        if let Some(secret) = secret {
            assert_no_secret(&scrubbed, secret, "the scrubbed result");
        }
        check_answer(&gateway, secret, result);
    }
    if let Some(secret) = secret {
        let scrubbed = gateway.scrub_text(frame);
        assert!(!scrubbed.contains(secret), "scrub_text left the secret {secret:?} in {scrubbed:?}");
    }
});

/// The breakers every gateway here shares (nothing is called through them).
fn breakers() -> Arc<resilience::Breakers> {
    static BREAKERS: OnceLock<Arc<resilience::Breakers>> = OnceLock::new();
    BREAKERS
        .get_or_init(|| {
            let retry: model::config::RetryFile = model::config::parse("retry", "{}").expect("empty retry file");
            let breaker: model::config::BreakerFile =
                model::config::parse("breaker", "{}").expect("empty breaker file");
            let policies = Arc::new(resilience::Policies::new(&retry, &breaker));
            Arc::new(resilience::Breakers::new(policies, None))
        })
        .clone()
}

/// The default MIME type the gateway gives an image that names none.
const DEFAULT_MIME: &str = "application/octet-stream";

fn check_answer(gateway: &mcp::Gateway, secret: Option<&str>, result: Value) {
    // the result only scrubbed (wrapped, it has no `content` to take images from; a one-letter key
    // cannot hold a secret of 4 characters or more)
    let (mut wrapped, _) = gateway.answer_artifacts(json!({ "w": result.clone() }));
    let scrubbed = wrapped["w"].take();
    let (kept, files) = gateway.answer_artifacts(result);
    for (index, (name, _)) in files.iter().enumerate() {
        assert!(name.starts_with(&format!("image-{index}.")), "image file {index} is named {name:?}");
        assert!(model::artifact::safe_segment(name).is_ok(), "image file name {name:?}");
    }
    // the items the gateway replaced: image references `{type, mimeType, file, bytes}` or
    // `{type, mimeType, dropped}`
    let before: &[Value] = scrubbed.get("content").and_then(Value::as_array).map_or(&[], Vec::as_slice);
    let after: &[Value] = kept.get("content").and_then(Value::as_array).map_or(&[], Vec::as_slice);
    assert_eq!(before.len(), after.len(), "items were added or lost");
    let replaced: Vec<bool> = before.iter().zip(after).map(|(b, a)| b != a).collect();
    let referenced: Vec<(&str, u64)> = after
        .iter()
        .zip(&replaced)
        .filter(|(_, replaced)| **replaced)
        .filter_map(|(item, _)| Some((item.get("file")?.as_str()?, item.get("bytes")?.as_u64()?)))
        .collect();
    assert_eq!(referenced.len(), files.len(), "every image file is referenced once: {kept}");
    for ((name, bytes), (file, size)) in files.iter().zip(&referenced) {
        assert_eq!((name.as_str(), bytes.len() as u64), (*file, *size));
    }
    for (item, _) in after.iter().zip(&replaced).filter(|(_, replaced)| **replaced) {
        assert_eq!(item["type"], "image", "a replaced item that is not an image reference: {item}");
        assert!(item.get("file").is_some() != item.get("dropped").is_some(), "{item}");
    }
    let Some(secret) = secret else { return };
    assert_no_secret(&scrubbed, secret, "the scrubbed result");
    // what the gateway wrote itself may contain any word; the MIME type came from the tool
    for (item, _) in after.iter().zip(&replaced).filter(|(_, replaced)| **replaced) {
        if item["mimeType"] != DEFAULT_MIME {
            assert_no_secret(&item["mimeType"], secret, "an image's MIME type");
        }
    }
    let mut rest = kept.clone();
    if let Some(items) = rest.get_mut("content").and_then(Value::as_array_mut) {
        items.retain(|item| item.get("type").and_then(Value::as_str) != Some("image"));
    }
    assert_no_secret(&rest, secret, "the kept result");
}

fn assert_no_secret(value: &Value, secret: &str, what: &str) {
    match value {
        Value::String(text) => assert!(!text.contains(secret), "{what} contains the secret {secret:?}: {text:?}"),
        Value::Array(items) => items.iter().for_each(|item| assert_no_secret(item, secret, what)),
        Value::Object(map) => {
            for (key, item) in map {
                assert!(!key.contains(secret), "{what} has the secret {secret:?} in the key {key:?}");
                assert_no_secret(item, secret, what);
            }
        }
        _ => {}
    }
}

/// The key fragments `mcp::redact` treats as secret (gateway.rs `SECRET_KEYS`).
const SECRET_KEYS: [&str; 8] =
    ["password", "secret", "token", "api_key", "apikey", "authorization", "cookie", "credential"];

/// `redacted` is `original` with the values of secret-looking keys replaced by `***`.
fn check_redact(original: &Value, redacted: &Value) {
    match (original, redacted) {
        (Value::Object(before), Value::Object(after)) => {
            assert_eq!(before.len(), after.len());
            for ((key, value), (key_after, value_after)) in before.iter().zip(after) {
                assert_eq!(key, key_after);
                let lower = key.to_ascii_lowercase();
                if SECRET_KEYS.iter().any(|word| lower.contains(word)) {
                    assert_eq!(value_after, "***", "{key:?} was not redacted");
                } else {
                    check_redact(value, value_after);
                }
            }
        }
        (Value::Array(before), Value::Array(after)) => {
            assert_eq!(before.len(), after.len());
            before.iter().zip(after).for_each(|(b, a)| check_redact(b, a));
        }
        _ => assert_eq!(original, redacted),
    }
}
