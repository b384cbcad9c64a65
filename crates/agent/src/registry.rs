//! The tool registry: every tool the orchestrator may pick for a step — the MCP tools each toolset
//! lists, the roles online (`research`, `codegen`, `execute`) and `respond` (answer from the
//! results so far) — with health and figures from the store, and the ranking that picks the few
//! candidates the model chooses among.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use model::config::AgentPolicy;

/// Where a tool's calls go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// An MCP tool, through the gateway role.
    Mcp {
        /// Toolset.
        toolset: String,
        /// Tool.
        tool: String,
    },
    /// A worker role.
    Role {
        /// Service.
        service: String,
        /// Role.
        role: String,
        /// Intent.
        intent: String,
    },
    /// No call: the step is answered from the results so far.
    Respond,
}

/// One tool on offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolEntry {
    /// `toolset.tool` for MCP tools; the role's tool name otherwise.
    pub name: String,
    /// What it does (from `tools/list`, clipped).
    pub description: String,
    /// JSON Schema of its arguments.
    pub input_schema: Value,
    /// Where its calls go.
    pub target: Target,
    /// Its breaker is open (it is not offered).
    #[serde(default)]
    pub breaker_open: bool,
    /// Calls recorded in the last day.
    #[serde(default)]
    pub calls: u64,
    /// Share of those that succeeded.
    #[serde(default)]
    pub success_rate: Option<f64>,
    /// Their 95th percentile latency.
    #[serde(default)]
    pub p95_ms: Option<f64>,
    /// Calls need an operator's approval.
    #[serde(default)]
    pub needs_approval: bool,
}

/// The built-in `respond` tool.
pub fn respond_tool() -> ToolEntry {
    ToolEntry {
        name: "respond".into(),
        description: "Write the answer or report from the results of earlier steps, without calling anything.".into(),
        input_schema: json!({"type": "object", "properties": {}, "additionalProperties": false}),
        target: Target::Respond,
        breaker_open: false,
        calls: 0,
        success_rate: None,
        p95_ms: None,
        needs_approval: false,
    }
}

/// The tools of the worker roles whose role is online (`roles`), under `policy`.
pub fn role_tools(roles: &HashSet<String>, policy: &AgentPolicy) -> Vec<ToolEntry> {
    let mut tools = Vec::new();
    let role = |name: &str, role: &str, intent: &str, description: String, schema: Value| ToolEntry {
        name: name.into(),
        description,
        input_schema: schema,
        target: Target::Role { service: "agent".into(), role: role.into(), intent: intent.into() },
        breaker_open: false,
        calls: 0,
        success_rate: None,
        p95_ms: None,
        needs_approval: false,
    };
    if roles.contains("research") {
        tools.push(role(
            "research",
            "research",
            model::Intent::RESEARCH,
            "Search the indexed documents and answer a question with citations.".into(),
            json!({"type": "object", "properties": {"question": {"type": "string", "minLength": 1, "maxLength": 300}}, "required": ["question"], "additionalProperties": false}),
        ));
    }
    if roles.contains("codegen") && !policy.codegen.is_empty() {
        let languages: Vec<&str> = policy.codegen.keys().map(String::as_str).collect();
        tools.push(role(
            "codegen",
            "codegen",
            model::Intent::CODEGEN,
            format!("Write source code for a task and check that it compiles ({}).", languages.join(", ")),
            json!({"type": "object", "properties": {"task": {"type": "string", "minLength": 1, "maxLength": 300}, "language": {"type": "string", "enum": languages}}, "required": ["task", "language"], "additionalProperties": false}),
        ));
    }
    if roles.contains("execution") && !policy.commands.is_empty() {
        let names: Vec<&str> = policy.commands.keys().map(String::as_str).collect();
        let described: Vec<String> = policy
            .commands
            .iter()
            .map(|(name, rule)| format!("{name} ({})", rule.description.as_deref().unwrap_or("no description")))
            .collect();
        tools.push(role(
            "execute",
            "execution",
            model::Intent::EXECUTE,
            format!("Run one allowed command: {}.", described.join("; ")),
            json!({"type": "object", "properties": {"command": {"type": "string", "enum": names}, "args": {"type": "array", "maxItems": 8, "items": {"type": "string", "maxLength": 200}}}, "required": ["command", "args"], "additionalProperties": false}),
        ));
    }
    tools
}

/// A copy of a tool's schema a grammar can follow and a small model always finishes: only the
/// keywords the grammar knows, every free string bounded, every array bounded, no extra properties.
pub fn bounded_schema(schema: &Value) -> Value {
    const KEEP: [&str; 12] = [
        "type",
        "properties",
        "required",
        "items",
        "enum",
        "const",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
    ];
    let Some(object) = schema.as_object() else { return json!({"type": "object"}) };
    let mut out = serde_json::Map::new();
    for (key, value) in object {
        if !KEEP.contains(&key.as_str()) {
            continue;
        }
        let value = match key.as_str() {
            "properties" => match value.as_object() {
                Some(props) => Value::Object(props.iter().map(|(k, v)| (k.clone(), bounded_schema(v))).collect()),
                None => continue,
            },
            "items" => bounded_schema(value),
            _ => value.clone(),
        };
        out.insert(key.clone(), value);
    }
    let kind = out.get("type").cloned();
    let is = |name: &str| {
        kind.as_ref().is_some_and(|k| k == name || k.as_array().is_some_and(|a| a.iter().any(|t| t == name)))
    };
    if is("string") && !out.contains_key("enum") && !out.contains_key("const") {
        let max = out.get("maxLength").and_then(Value::as_u64).unwrap_or(300).min(300);
        out.insert("maxLength".into(), json!(max));
    }
    if is("array") {
        let max = out.get("maxItems").and_then(Value::as_u64).unwrap_or(8).min(8);
        out.insert("maxItems".into(), json!(max));
    }
    if is("object") {
        out.insert("additionalProperties".into(), json!(false));
        out.entry("properties").or_insert_with(|| json!({}));
    }
    if kind.is_none() && !out.contains_key("enum") && !out.contains_key("const") {
        // an untyped value: a bounded string is what a small model can give
        out.insert("type".into(), json!("string"));
        out.insert("maxLength".into(), json!(300));
    }
    Value::Object(out)
}

/// A candidate for a step, with how it was scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The tool.
    pub name: String,
    /// Final score (higher is better).
    pub score: f64,
    /// Similarity of the step to the tool's name and description (0 to 1).
    pub similarity: f64,
}

/// Words of `text`, lower-cased, without stop words (for the similarity without an embedder).
fn words(text: &str) -> HashSet<String> {
    const STOP: [&str; 16] =
        ["the", "a", "an", "of", "to", "and", "or", "in", "on", "for", "with", "its", "it", "is", "by", "from"];
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 1)
        .map(|w| w.to_lowercase())
        .filter(|w| !STOP.contains(&w.as_str()))
        .collect()
}

/// Word-overlap similarity (Dice coefficient), 0 to 1.
pub fn lexical_similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (words(a), words(b));
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let shared = a.intersection(&b).count() as f64;
    2.0 * shared / (a.len() + b.len()) as f64
}

/// Cosine similarity of two unit vectors, clamped to 0 to 1.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    f64::from(dot).clamp(0.0, 1.0)
}

/// `text` with every URL replaced by "web page URL": an address says little about what a step
/// does, and would drown the words that do in an embedding.
pub fn without_urls(text: &str) -> String {
    text.split_whitespace()
        .map(|word| if looks_like_url(word) { "web page URL" } else { word })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` without its URLs (not even a placeholder word).
pub fn drop_urls(text: &str) -> String {
    text.split_whitespace().filter(|word| !looks_like_url(word)).collect::<Vec<_>>().join(" ")
}

/// The URLs in `text`, in order.
pub fn urls_in(text: &str) -> Vec<String> {
    text.split_whitespace()
        .filter(|w| looks_like_url(w))
        .map(|w| w.trim_matches(|c: char| matches!(c, '(' | ')' | '"' | '\'' | ',' | '.')).to_owned())
        .collect()
}

fn looks_like_url(word: &str) -> bool {
    let word = word.trim_matches(|c: char| matches!(c, '(' | ')' | '"' | '\'' | ',' | '.'));
    word.starts_with("http://") || word.starts_with("https://") || word.starts_with("file://")
}

/// How well the step can feed the tool's required arguments: a step naming a URL fits a tool that
/// requires one; a required argument the step names by name fits a little. 0 to 0.3.
pub fn fit_bonus(text: &str, tool: &ToolEntry) -> f64 {
    let required: Vec<&str> = tool
        .input_schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let lower = text.to_lowercase();
    let has_url = text.split_whitespace().any(looks_like_url);
    let mut bonus: f64 = 0.0;
    for name in required {
        let key = name.to_lowercase();
        if has_url && (key == "url" || key == "uri" || key == "href") {
            bonus += 0.2;
        } else if lower.contains(&key) {
            bonus += 0.05;
        }
    }
    bonus.min(0.3)
}

/// Verbs that open a step which only reports what earlier steps found.
const REPORTING_VERBS: [&str; 10] =
    ["report", "tell", "answer", "summarize", "summarise", "state", "return", "give", "present", "describe"];

/// Verbs that mean the step must act (visit, run, look up, write) even when it also reports.
const ACTING_WORDS: [&str; 14] = [
    "open",
    "navigate",
    "visit",
    "run",
    "execute",
    "search",
    "find",
    "look",
    "fetch",
    "download",
    "click",
    "screenshot",
    "write",
    "generate",
];

/// A step that only reports (`"Report the title of the page"`): it starts with a reporting verb and
/// asks for no action. Such a step is answered from earlier results with `respond`, never by
/// calling a tool again: small models tend to pick a random tool for it.
pub fn is_reporting_step(description: &str) -> bool {
    let lower = description.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
    // "The second step is to report …": the verb after a leading "… step is to"
    let start = words.windows(2).position(|w| w == ["is", "to"]).map(|i| i + 2).filter(|i| *i <= 5).unwrap_or(0);
    let Some(first) = words.get(start) else { return false };
    REPORTING_VERBS.contains(first) && !words.iter().any(|w| ACTING_WORDS.contains(w))
}

/// The text a tool is matched on.
pub fn tool_text(tool: &ToolEntry) -> String {
    let name = tool.name.rsplit('.').next().unwrap_or(&tool.name).replace('_', " ");
    format!("{name}: {}", tool.description)
}

/// Ranks `tools` for a step given each tool's similarity to it: the feedback loop weighs in the
/// success rate (a tool that keeps failing sinks) and the p95 latency (slow tools lose ties).
/// Tools with an open breaker are left out. Best first.
pub fn rank(tools: &[ToolEntry], similarities: &[f64]) -> Vec<Candidate> {
    let mut ranked: Vec<Candidate> = tools
        .iter()
        .zip(similarities)
        .filter(|(tool, _)| !tool.breaker_open)
        .map(|(tool, similarity)| {
            let reliability = match (tool.success_rate, tool.calls) {
                (Some(rate), calls) if calls >= 3 => 0.4 + 0.6 * rate,
                _ => 0.9,
            };
            let slowness = tool.p95_ms.map(|p95| (p95 / 60_000.0).min(0.1)).unwrap_or(0.0);
            Candidate { name: tool.name.clone(), score: similarity * reliability - slowness, similarity: *similarity }
        })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.name.cmp(&b.name)));
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, description: &str) -> ToolEntry {
        ToolEntry { name: name.into(), description: description.into(), ..respond_tool() }
    }

    #[test]
    fn reporting_steps_are_told_from_acting_ones() {
        for text in [
            "Report the title of the page",
            "The second step is to report the title of the page.",
            "Summarize the results",
            "Tell the user what the command printed",
        ] {
            assert!(is_reporting_step(text), "{text}");
        }
        for text in [
            "The first step is to open the page http://127.0.0.1/ and report its title.",
            "Open the page and report its title",
            "Print the word hello with the echo command",
            "Report the title after you navigate to the page",
            "Search the documents and answer",
            "",
        ] {
            assert!(!is_reporting_step(text), "{text}");
        }
    }

    #[test]
    fn ranking_drops_open_breakers_and_sinks_failing_tools() {
        let mut tools = vec![tool("a", "x"), tool("b", "x"), tool("c", "x")];
        tools[0].breaker_open = true;
        tools[1].calls = 10;
        tools[1].success_rate = Some(0.1);
        let ranked = rank(&tools, &[0.9, 0.8, 0.7]);
        let names: Vec<&str> = ranked.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["c", "b"]);
    }

    #[test]
    fn bounded_schema_bounds_strings_and_drops_unknown_keywords() {
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"url": {"type": "string", "description": "where", "format": "uri"}, "n": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}},
            "required": ["url"]
        });
        let bounded = bounded_schema(&schema);
        assert_eq!(
            bounded,
            json!({"type": "object", "properties": {"url": {"type": "string", "maxLength": 300}, "n": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string", "maxLength": 300}, "maxItems": 8}}, "required": ["url"], "additionalProperties": false})
        );
    }

    #[test]
    fn lexical_similarity_prefers_shared_words() {
        let open = lexical_similarity("Open the page in the browser", "navigate: Navigate to a URL in the browser");
        let figma = lexical_similarity("Open the page in the browser", "get figma data: Read a Figma file");
        assert!(open > figma, "{open} > {figma}");
    }
}
