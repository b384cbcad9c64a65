//! Graph extraction from text by an LLM, when one is configured (`cogo index --llm-extraction`):
//! each chunk is sent to the model with a JSON schema for entities (name and type) and the
//! relations between them; the answer is validated against the schema (`llm::structured`).
//!
//! Invariants:
//! - only what the text says is kept: an entity whose name does not occur in its chunk (ignoring
//!   case) is dropped, and so is a relation whose ends are not kept entities of the same chunk, so a
//!   small model's inventions never reach the graph;
//! - entity kinds come from a fixed list ([`KINDS`]) and relation names are short snake_case words;
//! - a failed call never fails the indexing run: the chunk keeps its structural graph, the failure
//!   is counted in the report and in `cogo_knowledge_llm_extractions_total{outcome="failed"}`.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use store::knowledge::{EntityKey, NewMention, NewRelation};

use crate::graph::{Extracted, relation};

/// Entity kinds the model may give.
pub const KINDS: &[&str] = &["person", "organization", "product", "component", "concept", "place", "event"];
/// Most entities kept from one chunk.
pub const MAX_ENTITIES: usize = 6;
/// Most relations kept from one chunk.
pub const MAX_RELATIONS: usize = 6;
/// Chunks of one document sent to the model by default (the rest keep their structural graph).
pub const DEFAULT_MAX_CHUNKS: usize = 16;
/// Tokens the model may write for one chunk.
const MAX_TOKENS: u32 = 768;

const SYSTEM: &str = "You extract a knowledge graph from technical text. List the named entities the text \
mentions (people, organizations, products, software components, concepts, places, events) with their type, \
and the relations the text states between them as short snake_case verbs (uses, part_of, depends_on, \
owns, located_in, ...). Use names exactly as written in the text. Do not invent anything.";

/// Extracts entities and relations from chunks with an LLM.
#[derive(Debug, Clone)]
pub struct LlmExtractor {
    client: Arc<dyn llm::LlmClient>,
    max_chunks: usize,
}

/// What the model found in one chunk, after grounding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// (kind, name) of each kept entity, as written in the chunk.
    pub entities: Vec<(String, String)>,
    /// (source, relation, target) between kept entities, as indexes into `entities`.
    pub relations: Vec<(usize, String, usize)>,
}

#[derive(Deserialize)]
struct Answer {
    entities: Vec<AnswerEntity>,
    relations: Vec<AnswerRelation>,
}

#[derive(Deserialize)]
struct AnswerEntity {
    name: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct AnswerRelation {
    source: String,
    relation: String,
    target: String,
}

impl LlmExtractor {
    /// An extractor asking `client`, on at most [`DEFAULT_MAX_CHUNKS`] chunks per document.
    pub fn new(client: Arc<dyn llm::LlmClient>) -> Self {
        Self { client, max_chunks: DEFAULT_MAX_CHUNKS }
    }

    /// At most `max_chunks` chunks of each document are sent to the model (1 to 10,000).
    pub fn with_max_chunks(mut self, max_chunks: usize) -> Self {
        self.max_chunks = max_chunks.clamp(1, 10_000);
        self
    }

    /// Chunks of one document sent to the model.
    pub fn max_chunks(&self) -> usize {
        self.max_chunks
    }

    /// The model that extracts, as `provider/model`.
    pub fn model(&self) -> String {
        format!("{}/{}", self.client.provider(), self.client.model())
    }

    /// The JSON schema the model answers with.
    pub fn schema() -> serde_json::Value {
        let name = json!({ "type": "string", "minLength": 2, "maxLength": 60 });
        json!({
            "type": "object",
            "properties": {
                "entities": { "type": "array", "maxItems": MAX_ENTITIES, "items": {
                    "type": "object",
                    "properties": { "name": name, "type": { "enum": KINDS } },
                    "required": ["name", "type"], "additionalProperties": false
                }},
                "relations": { "type": "array", "maxItems": MAX_RELATIONS, "items": {
                    "type": "object",
                    "properties": {
                        "source": name,
                        "relation": { "type": "string", "pattern": "^[a-z][a-z_]{1,39}$" },
                        "target": name
                    },
                    "required": ["source", "relation", "target"], "additionalProperties": false
                }}
            },
            "required": ["entities", "relations"], "additionalProperties": false
        })
    }

    /// Asks the model about one chunk's `text` and keeps what the text supports.
    pub async fn chunk(&self, text: &str) -> Result<Found, llm::Error> {
        let excerpt: String = text.chars().take(llm::MAX_MESSAGE_CHARS.min(4_000)).collect();
        let mut request = llm::ChatRequest::new(vec![llm::Message::system(SYSTEM), llm::Message::user(excerpt)]);
        request.max_tokens = MAX_TOKENS;
        request.temperature = 0.0;
        let format = llm::JsonSchemaFormat { name: "knowledge_graph".into(), schema: Self::schema() };
        let answer = llm::structured(self.client.as_ref(), request, format).await;
        let outcome = if answer.is_ok() { "ok" } else { "failed" };
        metrics::counter!(model::metrics::KNOWLEDGE_LLM_EXTRACTIONS_TOTAL, "outcome" => outcome).increment(1);
        let answer: Answer = serde_json::from_value(answer?.value)
            .map_err(|err| llm::Error::Invalid(format!("knowledge_graph answer: {err}")))?;
        Ok(ground(text, answer))
    }
}

/// `name` with runs of white space as single spaces and none at the ends.
fn single_spaced(name: &str) -> String {
    name.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Keeps the entities named in `text` and the relations between them.
fn ground(text: &str, answer: Answer) -> Found {
    let haystack = text.to_lowercase();
    let mut found = Found::default();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for entity in answer.entities {
        let name = single_spaced(&entity.name);
        let key = name.to_lowercase();
        if name.chars().count() < 2
            || !KINDS.contains(&entity.kind.as_str())
            || !haystack.contains(&key)
            || by_name.contains_key(&key)
            || found.entities.len() >= MAX_ENTITIES
        {
            continue;
        }
        by_name.insert(key, found.entities.len());
        found.entities.push((entity.kind, name));
    }
    for relation in answer.relations {
        let end = |name: &str| by_name.get(&single_spaced(name).to_lowercase()).copied();
        let (Some(source), Some(target)) = (end(&relation.source), end(&relation.target)) else { continue };
        let valid = relation.relation.len() >= 2
            && relation.relation.len() <= 40
            && relation.relation.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if source != target && valid && found.relations.len() < MAX_RELATIONS {
            found.relations.push((source, relation.relation, target));
        }
    }
    found
}

/// Adds what the model found in chunk `chunk` to a document's graph: the entities (kinds of
/// [`KINDS`]), `document mentions entity`, the chunk's mentions, and the relations between them.
pub fn merge(graph: &mut Extracted, document: usize, chunk: usize, found: &Found) {
    let mut index: HashMap<EntityKey, usize> =
        graph.entities.iter().enumerate().map(|(n, key)| (key.clone(), n)).collect();
    let mut ids = Vec::with_capacity(found.entities.len());
    for (kind, name) in &found.entities {
        let key = EntityKey::new(kind, name.clone());
        let id = *index.entry(key.clone()).or_insert_with(|| {
            graph.entities.push(key);
            graph.entities.len() - 1
        });
        ids.push(id);
        let mentions = NewMention { chunk, entity: id };
        if !graph.mentions.contains(&mentions) {
            graph.mentions.push(mentions);
        }
        let link = NewRelation { source: document, target: id, kind: relation::MENTIONS.to_owned() };
        if !graph.relations.contains(&link) {
            graph.relations.push(link);
        }
    }
    for (source, kind, target) in &found.relations {
        let edge = NewRelation { source: ids[*source], target: ids[*target], kind: kind.clone() };
        if edge.source != edge.target && !graph.relations.contains(&edge) {
            graph.relations.push(edge);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(value: serde_json::Value) -> Answer {
        serde_json::from_value(value).expect("answer")
    }

    #[test]
    fn only_what_the_text_names_is_kept() {
        let text = "The Gateway calls the Figma server through a circuit breaker.";
        let found = ground(
            text,
            answer(json!({
                "entities": [
                    { "name": "gateway", "type": "component" },
                    { "name": "Figma  server", "type": "product" },
                    { "name": "Kubernetes", "type": "product" },
                    { "name": "Gateway", "type": "concept" },
                    { "name": "circuit breaker", "type": "alien" }
                ],
                "relations": [
                    { "source": "Gateway", "relation": "calls", "target": "figma server" },
                    { "source": "Gateway", "relation": "runs_on", "target": "Kubernetes" },
                    { "source": "gateway", "relation": "Calls Loudly", "target": "Figma server" },
                    { "source": "gateway", "relation": "is", "target": "gateway" }
                ]
            })),
        );
        assert_eq!(
            found.entities,
            [("component".to_owned(), "gateway".to_owned()), ("product".to_owned(), "Figma server".to_owned())]
        );
        assert_eq!(found.relations, [(0, "calls".to_owned(), 1)]);
    }

    #[test]
    fn merged_entities_are_deduplicated_and_linked_to_their_document_and_chunk() {
        let mut graph = Extracted { entities: vec![EntityKey::new("document", "a.md")], ..Default::default() };
        let found = Found {
            entities: vec![("component".into(), "gateway".into()), ("product".into(), "Figma".into())],
            relations: vec![(0, "calls".into(), 1)],
        };
        merge(&mut graph, 0, 0, &found);
        merge(&mut graph, 0, 1, &found);
        assert_eq!(graph.entities.len(), 3);
        assert_eq!(graph.mentions.len(), 4, "{:?}", graph.mentions);
        let kinds: Vec<&str> = graph.relations.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["mentions", "mentions", "calls"]);
    }
}
