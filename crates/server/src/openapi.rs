//! `GET /api/openapi.json`: the OpenAPI 3.1 document of every route, built from the code: query
//! and body schemas come from the handlers' own types (schemars), response schemas from the types
//! the handlers return, access (public, token, admin) from the route policies in force.
//!
//! Invariant: every route of the router is described here and every path here is a route (a test
//! compares the two).

use axum::Json;
use axum::extract::State;
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use model::config::routes::Access;

use crate::AppState;
use crate::error::Body as ErrorBody;

/// Where a response schema comes from.
enum Reply {
    /// A JSON value of this schema.
    Json(Value),
    /// Text of this media type.
    Text(&'static str),
}

/// One operation.
struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    query: Option<Value>,
    body: Option<Value>,
    status: u16,
    reply: Reply,
}

/// The generator: JSON Schema 2020-12 (what OpenAPI 3.1 uses), definitions under components.
fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .for_serialize()
        .into_generator()
}

fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    generator.subschema_for::<T>().to_value()
}

/// A request type's schema (how it is deserialized), inlined.
fn input<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.meta_schema = None;
            s.inline_subschemas = true;
        })
        .into_generator();
    let mut value = generator.into_root_schema_for::<T>().to_value();
    if let Some(map) = value.as_object_mut() {
        map.remove("title");
    }
    value
}

/// The `parameters` of an operation: its path parameters and the properties of its query type.
fn parameters(path: &str, query: Option<&Value>) -> Vec<Value> {
    let mut parameters: Vec<Value> = path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let schema = match name {
                "id" => json!({ "type": "string", "format": "uuid", "pattern": "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", "minLength": 36, "maxLength": 36 }),
                "trace_id" => json!({ "type": "string", "pattern": "^[0-9a-f]{32}$", "minLength": 32, "maxLength": 32, "not": { "pattern": "^0{32}$" } }),
                "toolset" => json!({ "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "not": { "pattern": "\n" } }),
                "tool" => json!({ "type": "string", "pattern": "^[A-Za-z0-9_.-]{1,128}$", "not": { "pattern": "\n" } }),
                "step" => json!({ "type": "string", "pattern": "^r[0-9]{1,3}\\.s[1-6]$", "maxLength": 8 }),
                "path" => json!({ "type": "string", "pattern": "^(mcp|metrics|gate-run|full-scenario|docker-scenario|decisions)(/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127})*$" }),
                _ => json!({ "type": "string" }),
            };
            json!({ "name": name, "in": "path", "required": true, "schema": schema })
        })
        .collect();
    if let Some(query) = query {
        let required: Vec<&str> =
            query["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        for (name, schema) in query["properties"].as_object().into_iter().flatten() {
            let mut schema = schema.clone();
            let description = schema.as_object_mut().and_then(|s| s.remove("description"));
            let mut parameter =
                json!({ "name": name, "in": "query", "required": required.contains(&name.as_str()), "schema": schema });
            if let Some(description) = description {
                parameter["description"] = description;
            }
            parameters.push(parameter);
        }
    }
    parameters
}

/// A concrete path for a template, to ask the route policies about it.
fn sample_path(path: &str) -> String {
    path.split('/').map(|segment| if segment.starts_with('{') { "x" } else { segment }).collect::<Vec<_>>().join("/")
}

fn operations(g: &mut SchemaGenerator) -> Vec<Op> {
    use crate::goal_routes::{ApprovalBody, GoalBody, GoalsQuery};
    use crate::knowledge_routes::{IngestBody, NeighborsQuery, PathQuery, SearchQuery, StatsQuery};
    use crate::mcp_routes::{CallBody, EnqueueBody, WindowQuery};
    use crate::routes::{EventQuery, MessageQuery, StreamQuery};
    let message = schema::<model::Message>(g);
    let event = schema::<model::event::Event>(g);
    let messages = schema::<store::Page<model::Message>>(g);
    let events = schema::<store::Page<model::event::Event>>(g);
    let dead_letters = schema::<store::Page<store::DeadLetter>>(g);
    let presence = schema::<model::presence::Presence>(g);
    let mcp_summary = schema::<store::McpSummary>(g);
    let mcp_series = schema::<store::McpSeries>(g);
    let circuits = schema::<resilience::CircuitSummary>(g);
    let queues = schema::<store::QueueStats>(g);
    let health = schema::<mcp::ToolsetHealth>(g);
    let config = schema::<model::config::McpConfig>(g);
    let hit = schema::<knowledge::SearchHit>(g);
    let evidence = schema::<knowledge::Evidence>(g);
    let subgraph = schema::<knowledge::graph::Subgraph>(g);
    let graph_path = schema::<knowledge::graph::GraphPath>(g);
    let entity = schema::<store::knowledge::Entity>(g);
    let knowledge_stats = schema::<store::knowledge::KnowledgeStats>(g);
    let index_report = schema::<knowledge::IndexReport>(g);
    let goal = schema::<model::goal::Goal>(g);
    let any = json!({});
    let number_or_null = json!({ "type": ["number", "null"] });
    let string_or_null = json!({ "type": ["string", "null"] });
    let object = |properties: Value, required: &[&str]| json!({ "type": "object", "properties": properties, "required": required });
    let op = |method, path, summary, query: Option<Value>, body: Option<Value>, status, reply| Op {
        method,
        path,
        summary,
        query,
        body,
        status,
        reply,
    };
    vec![
        op(
            "get",
            "/healthz",
            "Liveness",
            None,
            None,
            200,
            Reply::Json(object(json!({ "status": { "type": "string" } }), &["status"])),
        ),
        op(
            "get",
            "/readyz",
            "Readiness: the store answers",
            None,
            None,
            200,
            Reply::Json(object(
                json!({ "status": { "type": "string" }, "backend": { "type": "string" } }),
                &["status"],
            )),
        ),
        op("get", "/metrics", "Prometheus metrics of this process", None, None, 200, Reply::Text("text/plain")),
        op("get", "/", "The dashboard (an HTML page served by the binary)", None, None, 200, Reply::Text("text/html")),
        op(
            "get",
            "/assets/{path}",
            "A dashboard asset (script, style sheet or icon) built into the binary",
            None,
            None,
            200,
            Reply::Text("text/javascript"),
        ),
        op("get", "/api/openapi.json", "This document", None, None, 200, Reply::Json(json!({ "type": "object" }))),
        op(
            "get",
            "/api/messages",
            "Messages, filtered, newest first, keyset pages",
            Some(input::<MessageQuery>()),
            None,
            200,
            Reply::Json(messages),
        ),
        op("get", "/api/messages/{id}", "One message", None, None, 200, Reply::Json(message.clone())),
        op(
            "get",
            "/api/events",
            "Events, filtered, in order, keyset pages",
            Some(input::<EventQuery>()),
            None,
            200,
            Reply::Json(events.clone()),
        ),
        op(
            "get",
            "/api/events/stream",
            "Live events (server-sent events; resume with Last-Event-ID)",
            Some(input::<StreamQuery>()),
            None,
            200,
            Reply::Text("text/event-stream"),
        ),
        op(
            "get",
            "/api/traces/{trace_id}",
            "A trace's messages and events in order",
            None,
            None,
            200,
            Reply::Json(object(
                json!({ "trace_id": { "type": "string" }, "messages": { "type": "array", "items": message.clone() }, "events": { "type": "array", "items": event } }),
                &["trace_id", "messages", "events"],
            )),
        ),
        op(
            "get",
            "/api/dlq",
            "Dead letters, filtered, keyset pages",
            Some(input::<MessageQuery>()),
            None,
            200,
            Reply::Json(dead_letters),
        ),
        op("post", "/api/dlq/{id}/requeue", "Requeue a dead letter (once)", None, None, 200, Reply::Json(message)),
        op(
            "get",
            "/api/agents",
            "Processes and their presence",
            None,
            None,
            200,
            Reply::Json(object(json!({ "agents": { "type": "array", "items": presence } }), &["agents"])),
        ),
        op(
            "get",
            "/api/edge/connect",
            "The edge workers' WebSocket (an edge worker token only): JSON frames of the edge protocol",
            None,
            None,
            101,
            Reply::Text("application/json"),
        ),
        op(
            "get",
            "/api/metrics/summary",
            "MCP, circuits, bus and agents, computed from the store",
            None,
            None,
            200,
            Reply::Json(object(
                json!({ "summary": object(json!({
                    "mcp": mcp_summary.clone(),
                    "circuits": circuits,
                    "bus": object(json!({ "ready": { "type": "integer" }, "delayed": { "type": "integer" }, "claimed": { "type": "integer" }, "oldestReadyAgeMs": { "type": ["integer", "null"] }, "queues": { "type": "array", "items": queues } }), &["ready", "delayed", "claimed", "queues"]),
                    "agents": object(json!({ "online": { "type": "integer" }, "total": { "type": "integer" } }), &["online", "total"]),
                }), &["mcp", "circuits", "bus", "agents"]) }),
                &["summary"],
            )),
        ),
        op(
            "post",
            "/api/mcp/enqueue",
            "Enqueue an MCP call for the gateway role",
            None,
            Some(input::<EnqueueBody>()),
            201,
            Reply::Json(object(
                json!({ "id": { "type": "string", "format": "uuid" }, "trace_id": { "type": "string" }, "status": { "type": "string" }, "duplicate": { "type": "boolean" } }),
                &["id", "trace_id", "status", "duplicate"],
            )),
        ),
        op("get", "/api/mcp/config", "mcp.json, secrets redacted", None, None, 200, Reply::Json(config)),
        op(
            "get",
            "/api/mcp/health",
            "Every toolset pinged in parallel",
            None,
            None,
            200,
            Reply::Json(object(
                json!({ "ok": { "type": "boolean" }, "toolsets": { "type": "array", "items": health } }),
                &["ok", "toolsets"],
            )),
        ),
        op(
            "get",
            "/api/mcp/ping/{toolset}/{tool}",
            "Ping a toolset and check it lists the tool",
            None,
            None,
            200,
            Reply::Json(object(
                json!({ "ok": { "type": "boolean" }, "latency_ms": { "type": "number" }, "error": string_or_null.clone() }),
                &["ok", "latency_ms", "error"],
            )),
        ),
        op(
            "post",
            "/api/mcp/{toolset}/{tool}",
            "Call a tool now (with the retry policy); each attempt is recorded as an event",
            None,
            Some(input::<CallBody>()),
            200,
            Reply::Json(object(
                json!({ "ok": { "type": "boolean" }, "result": any.clone(), "error": string_or_null, "error_kind": { "type": "string" }, "latency_ms": number_or_null, "trace_id": { "type": "string" }, "artifacts": { "type": "string" } }),
                &["ok", "result", "error", "latency_ms", "trace_id"],
            )),
        ),
        op(
            "get",
            "/api/metrics/mcp/summary",
            "MCP calls, failures, p50/p95, overall and per toolset.tool",
            Some(input::<WindowQuery>()),
            None,
            200,
            Reply::Json(object(json!({ "mcp": mcp_summary }), &["mcp"])),
        ),
        op(
            "get",
            "/api/metrics/mcp/series",
            "MCP calls, failures and p50/p95 latency over time in equal buckets, for one toolset.tool or all",
            Some(input::<crate::mcp_routes::SeriesQuery>()),
            None,
            200,
            Reply::Json(object(json!({ "series": mcp_series }), &["series"])),
        ),
        op(
            "get",
            "/api/metrics/mcp/events",
            "Events of the MCP service",
            Some(input::<EventQuery>()),
            None,
            200,
            Reply::Json(events),
        ),
        op(
            "get",
            "/api/metrics/mcp/artifacts/summary",
            "MCP artifact directories per toolset",
            None,
            None,
            200,
            Reply::Json(object(json!({ "artifacts": { "type": "object" } }), &["artifacts"])),
        ),
        op(
            "get",
            "/api/artifacts/{path}",
            "An artifact file (JSON, image, text), or a directory's entries; `path` is <family>/<name>/… with plain names",
            None,
            None,
            200,
            Reply::Json(object(
                json!({ "path": { "type": "string" }, "entries": { "type": "array", "items": object(json!({ "name": { "type": "string" }, "dir": { "type": "boolean" }, "bytes": { "type": "integer" } }), &["name", "dir", "bytes"]) } }),
                &["path", "entries"],
            )),
        ),
        op(
            "post",
            "/api/goals",
            "Give the orchestrator a goal: it is stored and scheduled; follow it with GET /api/goals/{id}",
            None,
            Some(input::<GoalBody>()),
            201,
            Reply::Json(goal.clone()),
        ),
        op(
            "get",
            "/api/goals",
            "Goals, newest first (a tenant token sees its tenant's)",
            Some(input::<GoalsQuery>()),
            None,
            200,
            Reply::Json(object(
                json!({ "goals": { "type": "array", "items": goal.clone() }, "next": { "type": ["string", "null"] } }),
                &["goals", "next"],
            )),
        ),
        op(
            "get",
            "/api/goals/{id}",
            "A goal with its plan, steps, approvals and decision records (plan, select, evaluate, replan, answer)",
            None,
            None,
            200,
            Reply::Json(object(
                json!({ "goal": goal.clone(), "decisions": { "type": "array", "items": { "type": "object" } } }),
                &["goal", "decisions"],
            )),
        ),
        op(
            "post",
            "/api/goals/{id}/approvals/{step}",
            "Approve or reject a step waiting for an operator; an approved goal resumes",
            None,
            Some(input::<ApprovalBody>()),
            200,
            Reply::Json(goal.clone()),
        ),
        op("post", "/api/goals/{id}/cancel", "Cancel a goal that has not ended", None, None, 200, Reply::Json(goal)),
        op(
            "post",
            "/api/knowledge/ingest",
            "Index inline documents (chunked, embedded, graph extracted); unchanged ones are skipped",
            None,
            Some(input::<IngestBody>()),
            200,
            Reply::Json(index_report),
        ),
        op(
            "get",
            "/api/knowledge/search",
            "Hybrid search (full text + vectors, fused); each hit with document, chunk, offsets and scores",
            Some(input::<SearchQuery>()),
            None,
            200,
            Reply::Json(object(
                json!({ "tenant": { "type": "string" }, "hits": { "type": "array", "items": hit } }),
                &["tenant", "hits"],
            )),
        ),
        op(
            "get",
            "/api/knowledge/graphrag",
            "Search hits plus evidence chunks reached through the knowledge graph, each with its path",
            Some(input::<SearchQuery>()),
            None,
            200,
            Reply::Json(object(
                json!({ "tenant": { "type": "string" }, "evidence": { "type": "array", "items": evidence } }),
                &["tenant", "evidence"],
            )),
        ),
        op(
            "get",
            "/api/knowledge/graph/neighbors",
            "Entities within depth hops of a named entity, and the relations between them",
            Some(input::<NeighborsQuery>()),
            None,
            200,
            Reply::Json(object(json!({ "start": entity, "graph": subgraph }), &["start", "graph"])),
        ),
        op(
            "get",
            "/api/knowledge/graph/path",
            "A shortest path between two named entities (null when none within depth)",
            Some(input::<PathQuery>()),
            None,
            200,
            Reply::Json(object(json!({ "path": { "anyOf": [graph_path, { "type": "null" }] } }), &["path"])),
        ),
        op(
            "get",
            "/api/knowledge/stats",
            "Documents, chunks, entities and relations in the index, and its embedding model",
            Some(input::<StatsQuery>()),
            None,
            200,
            Reply::Json(knowledge_stats),
        ),
        op(
            "post",
            "/api/metrics/snapshot",
            "Write the summary and the Prometheus text as a snapshot artifact",
            None,
            None,
            201,
            Reply::Json(object(
                json!({ "path": { "type": "string" }, "files": { "type": "array", "items": { "type": "string" } } }),
                &["path", "files"],
            )),
        ),
    ]
}

/// Second success answers: (method, path, status, description).
const ALSO_SUCCESS: [(&str, &str, u16, &str); 1] =
    [("post", "/api/mcp/enqueue", 200, "A message with this idempotency key exists: that message")];

/// Status codes every operation may answer with, besides its own.
const ERROR_STATUSES: [(u16, &str); 10] = [
    (400, "The request is malformed or breaks a rule"),
    (401, "A token is needed and missing or wrong"),
    (403, "The token is valid but not enough (admin needed)"),
    (404, "No such thing, or the route is not allowed"),
    (405, "The path answers other methods (see Allow)"),
    (408, "The request took longer than the limit"),
    (409, "The thing is in a state that forbids the operation"),
    (413, "The body is larger than the limit"),
    (429, "Too many requests: see Retry-After"),
    (503, "A dependency is unavailable; try again"),
];

/// The whole document for the route policies in force.
pub(crate) fn document(routes: &model::config::RoutePolicies) -> Value {
    let mut g = generator();
    let error = schema::<ErrorBody<'static>>(&mut g);
    let mut paths = Map::new();
    for op in operations(&mut g) {
        let access = routes.decide(&op.method.to_ascii_uppercase(), &sample_path(op.path));
        let mut responses = Map::new();
        let content = match &op.reply {
            Reply::Json(schema) => json!({ "application/json": { "schema": schema } }),
            Reply::Text(media) => json!({ *media: { "schema": { "type": "string" } } }),
        };
        responses.insert(op.status.to_string(), json!({ "description": "Success", "content": content.clone() }));
        if let Some((_, _, status, description)) =
            ALSO_SUCCESS.iter().find(|(method, path, _, _)| *method == op.method && *path == op.path)
        {
            responses.insert(status.to_string(), json!({ "description": description, "content": content }));
        }
        for (status, description) in ERROR_STATUSES {
            responses.insert(
                status.to_string(),
                json!({ "description": description, "content": { "application/json": { "schema": error } } }),
            );
        }
        let mut operation = json!({
            "summary": op.summary,
            "operationId": format!("{}{}", op.method, op.path.replace(['/', '{', '}', '.'], "_")),
            "parameters": parameters(op.path, op.query.as_ref()),
            "responses": responses,
            "x-cogo-access": match access { Some(Access::Public) => "public", Some(Access::Token) => "token", Some(Access::Admin) => "admin", None => "denied" },
        });
        operation["security"] = match access {
            Some(Access::Public) => json!([]),
            Some(Access::Token) => json!([{ "bearer": [] }, { "admin": [] }]),
            _ => json!([{ "admin": [] }]),
        };
        if let Some(body) = op.body {
            operation["requestBody"] =
                json!({ "required": true, "content": { "application/json": { "schema": body } } });
        }
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        entry[op.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "COGO API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Routes are denied unless route_policies.json allows them; `x-cogo-access` says what each needs.",
        },
        "paths": paths,
        "components": {
            "schemas": g.take_definitions(true),
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "An API token (or the admin token)" },
                "admin": { "type": "apiKey", "in": "header", "name": "x-admin-token", "description": "The admin token" },
            },
        },
    })
}

/// `GET /api/openapi.json`.
pub(crate) async fn openapi(State(state): State<AppState>) -> Json<Value> {
    Json(document(&state.routes))
}

/// The document of the minimal server: only the routes it serves.
pub(crate) async fn openapi_minimal(State(state): State<AppState>) -> Json<Value> {
    Json(minimal_document(&state.routes))
}

/// [`document`] cut down to [`crate::routes::MINIMAL_ROUTES`].
pub(crate) fn minimal_document(routes: &model::config::RoutePolicies) -> Value {
    let mut doc = document(routes);
    if let Some(paths) = doc["paths"].as_object_mut() {
        paths.retain(|path, _| crate::routes::MINIMAL_ROUTES.iter().any(|(_, p)| p == path));
        for (path, ops) in paths.iter_mut() {
            if let Some(ops) = ops.as_object_mut() {
                ops.retain(|method, _| crate::routes::MINIMAL_ROUTES.contains(&(method.as_str(), path.as_str())));
            }
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    #[test]
    fn sample_paths_fill_parameters() {
        assert_eq!(super::sample_path("/api/mcp/ping/{toolset}/{tool}"), "/api/mcp/ping/x/x");
        let params = super::parameters("/api/messages/{id}", None);
        assert_eq!(params[0]["name"], "id");
    }
}
