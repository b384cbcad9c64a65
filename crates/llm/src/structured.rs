//! Structured output: ask for JSON of a schema, check the answer against the schema, and give the
//! model one chance to repair an invalid answer. An answer that is still invalid is an error,
//! never a value.

use serde_json::Value;

use crate::{ChatRequest, ChatResponse, Error, JsonSchemaFormat, LlmClient, Message, Role, telemetry};

/// How many answers are asked for at most: the first and one repair.
pub const MAX_ATTEMPTS: u32 = 2;
/// Most errors quoted back to the model in the repair round.
const MAX_QUOTED_ERRORS: usize = 5;

/// A schema-valid answer.
#[derive(Debug, Clone)]
pub struct Structured {
    /// The JSON value, valid against the schema.
    pub value: Value,
    /// The provider's answer that held it.
    pub response: ChatResponse,
    /// Answers asked for (2 when the first was repaired).
    pub attempts: u32,
    /// The answers rejected on the way, each with what was wrong with it.
    pub rejected: Vec<(String, String)>,
}

/// Takes the JSON value out of a model's answer: the whole text, or the first JSON object or
/// array in it (small models like to wrap JSON in code fences or add a sentence).
pub fn extract_json(text: &str) -> Result<Value, String> {
    let trimmed = text.trim();
    if let Ok(value) = serde_json::from_str::<Value>(trimmed) {
        return Ok(value);
    }
    let Some(start) = trimmed.find(['{', '[']) else {
        return Err("the answer holds no JSON object or array".into());
    };
    let mut values = serde_json::Deserializer::from_str(&trimmed[start..]).into_iter::<Value>();
    match values.next() {
        Some(Ok(value)) => Ok(value),
        Some(Err(err)) => Err(format!("the answer is not valid JSON: {err}")),
        None => Err("the answer holds no JSON value".into()),
    }
}

fn check(validator: &jsonschema::Validator, text: &str) -> Result<Value, String> {
    let value = extract_json(text)?;
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .take(MAX_QUOTED_ERRORS)
        .map(|err| {
            let path = err.instance_path().to_string();
            if path.is_empty() { err.to_string() } else { format!("at {path}: {err}") }
        })
        .collect();
    if errors.is_empty() { Ok(value) } else { Err(errors.join("; ")) }
}

fn excerpt(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

/// Asks `client` for JSON matching `format`, validates it, repairs once. The request's own
/// `response_format` is replaced by `format`; its tools must be empty.
pub async fn structured(
    client: &dyn LlmClient,
    mut request: ChatRequest,
    format: JsonSchemaFormat,
) -> Result<Structured, Error> {
    let validator = jsonschema::validator_for(&format.schema)
        .map_err(|err| Error::Invalid(format!("response_format.schema ({}): {err}", format.name)))?;
    if !client.constrains_output() {
        // the provider cannot constrain decoding: say the schema in the prompt
        let instruction = format!(
            "Answer with only a JSON value (no prose, no code fences) that matches this JSON Schema:\n{}",
            format.schema
        );
        match request.messages.first_mut() {
            Some(first) if first.role == Role::System => {
                first.content.push_str("\n\n");
                first.content.push_str(&instruction);
            }
            _ => request.messages.insert(0, Message::system(instruction)),
        }
    }
    request.response_format = Some(format.clone());
    let mut rejected = Vec::new();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let response = client.chat(request.clone()).await?;
        match check(&validator, &response.content) {
            Ok(value) => return Ok(Structured { value, response, attempts, rejected }),
            Err(errors) => {
                telemetry::invalid_output(client.provider(), client.model());
                tracing::warn!(provider = client.provider(), model = client.model(), schema = %format.name,
                    attempt = attempts, %errors, "the model's answer does not match the schema");
                if attempts >= MAX_ATTEMPTS {
                    return Err(Error::InvalidOutput {
                        schema: format.name,
                        attempts,
                        errors,
                        output: excerpt(&response.content, 2_000),
                    });
                }
                request.messages.push(Message::assistant(excerpt(&response.content, 4_000)));
                request.messages.push(Message::user(format!(
                    "That answer does not match the schema {}: {errors}. Reply again with only the corrected JSON.",
                    format.name
                )));
                rejected.push((response.content, errors));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_json_from_prose_and_fences() {
        assert_eq!(extract_json(r#"{"a":1}"#).expect("no error"), serde_json::json!({"a": 1}));
        assert_eq!(extract_json("```json\n{\"a\": [1, 2]}\n```").expect("no error"), serde_json::json!({"a": [1, 2]}));
        assert_eq!(
            extract_json("Sure! {\"ok\": true} hope it helps").expect("no error"),
            serde_json::json!({"ok": true})
        );
        assert!(extract_json("no json here").expect_err("an error").contains("no JSON"));
        assert!(extract_json("{\"a\": ").expect_err("an error").contains("not valid JSON"));
    }

    #[test]
    fn check_reports_the_path_of_each_error() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"ok": {"type": "boolean"}, "reason": {"type": "string", "maxLength": 5}},
            "required": ["ok", "reason"],
            "additionalProperties": false
        });
        let validator = jsonschema::validator_for(&schema).expect("no error");
        assert!(check(&validator, r#"{"ok": true, "reason": "fine"}"#).is_ok());
        let errors = check(&validator, r#"{"ok": "yes", "reason": "far too long"}"#).expect_err("an error");
        assert!(errors.contains("/ok"), "{errors}");
        assert!(errors.contains("/reason"), "{errors}");
        assert!(check(&validator, r#"{"ok": true}"#).expect_err("an error").contains("reason"));
    }
}
