//! The knowledge graph: what a document says about entities (extracted from its structure: the
//! document itself, its sections, the code symbols it defines, the modules it imports, the files and
//! URLs it links to, the symbols it names in backticks), and traversal over the stored graph —
//! neighbours, k-hop neighbourhoods, shortest paths and typed path patterns — with depth and
//! fan-out limits. Invariant: every traversal is bounded by its limits and stays in one tenant.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use store::knowledge::{Direction, Edge, Entity, EntityKey, NewMention, NewRelation};

use crate::Error;
use crate::chunk::{Chunk, DocumentKind, Heading};

/// Relation kinds the structural extractor writes.
pub mod relation {
    /// A document contains a section; a section contains a sub-section.
    pub const CONTAINS: &str = "contains";
    /// A document defines a code symbol.
    pub const DEFINES: &str = "defines";
    /// A document imports a module.
    pub const IMPORTS: &str = "imports";
    /// A document links to another document or URL.
    pub const LINKS_TO: &str = "links_to";
    /// A document names a code symbol (in backticks).
    pub const REFERENCES: &str = "references";
    /// A document mentions an entity an LLM found in its text ([`crate::llm_extract`]).
    pub const MENTIONS: &str = "mentions";
}

/// Entity kinds the structural extractor writes.
pub mod entity {
    /// A document, by source.
    pub const DOCUMENT: &str = "document";
    /// A section, as `source#heading`.
    pub const SECTION: &str = "section";
    /// A code symbol (function, type, class, …), by its name.
    pub const SYMBOL: &str = "symbol";
    /// An imported module, by its path.
    pub const MODULE: &str = "module";
    /// An external URL.
    pub const URL: &str = "url";
}

/// Entities, relations and mentions of one document, ready for the store.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Extracted {
    /// Distinct entities.
    pub entities: Vec<EntityKey>,
    /// Relations between them.
    pub relations: Vec<NewRelation>,
    /// Which chunks mention which entities.
    pub mentions: Vec<NewMention>,
}

#[derive(Default)]
struct Builder {
    out: Extracted,
    index: HashMap<EntityKey, usize>,
}

impl Builder {
    fn entity(&mut self, kind: &str, name: &str) -> usize {
        let key = EntityKey::new(kind, name.chars().take(512).collect::<String>());
        if let Some(index) = self.index.get(&key) {
            return *index;
        }
        let index = self.out.entities.len();
        self.index.insert(key.clone(), index);
        self.out.entities.push(key);
        index
    }

    fn relate(&mut self, source: usize, target: usize, kind: &str) {
        if source != target {
            self.out.relations.push(NewRelation { source, target, kind: kind.to_owned() });
        }
    }

    fn mention(&mut self, chunk: usize, entity: usize) {
        self.out.mentions.push(NewMention { chunk, entity });
    }
}

/// The chunk containing byte `offset`.
fn chunk_at(chunks: &[Chunk], offset: usize) -> Option<usize> {
    chunks.iter().position(|c| c.start <= offset && offset < c.end.max(c.start + 1))
}

/// Extracts the structural graph of one document.
pub fn extract(source: &str, kind: DocumentKind, text: &str, chunks: &[Chunk], headings: &[Heading]) -> Extracted {
    let mut graph = Builder::default();
    let document = graph.entity(entity::DOCUMENT, source);
    for index in 0..chunks.len() {
        graph.mention(index, document);
    }
    // sections: document contains top-level sections, sections contain deeper ones
    let mut path: Vec<(usize, usize)> = Vec::new();
    for heading in headings {
        let section = graph.entity(entity::SECTION, &format!("{source}#{}", heading.text));
        while path.last().is_some_and(|(level, _)| *level >= heading.level) {
            path.pop();
        }
        let parent = path.last().map_or(document, |(_, id)| *id);
        graph.relate(parent, section, relation::CONTAINS);
        path.push((heading.level, section));
        if let Some(chunk) = chunk_at(chunks, heading.start) {
            graph.mention(chunk, section);
        }
    }
    let mut offset = 0;
    let mut in_fence = false;
    for line in text.split_inclusive('\n') {
        let at = offset;
        offset += line.len();
        let chunk = chunk_at(chunks, at);
        match kind {
            DocumentKind::Code => {
                if let Some((_, name)) = definition(line) {
                    let symbol = graph.entity(entity::SYMBOL, name);
                    graph.relate(document, symbol, relation::DEFINES);
                    if let Some(chunk) = chunk {
                        graph.mention(chunk, symbol);
                    }
                }
                if let Some(module) = import(line) {
                    let module = graph.entity(entity::MODULE, &module);
                    graph.relate(document, module, relation::IMPORTS);
                    if let Some(chunk) = chunk {
                        graph.mention(chunk, module);
                    }
                }
            }
            DocumentKind::Markdown | DocumentKind::Text | DocumentKind::Html | DocumentKind::Pdf => {
                let trimmed = line.trim_start();
                if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
                    in_fence = !in_fence;
                    continue;
                }
                if in_fence {
                    continue;
                }
                for target in links(line) {
                    let target = if target.starts_with("http://") || target.starts_with("https://") {
                        graph.entity(entity::URL, &target)
                    } else {
                        match resolve(source, &target) {
                            Some(path) => graph.entity(entity::DOCUMENT, &path),
                            None => continue,
                        }
                    };
                    graph.relate(document, target, relation::LINKS_TO);
                    if let Some(chunk) = chunk {
                        graph.mention(chunk, target);
                    }
                }
                for name in code_spans(line) {
                    let symbol = graph.entity(entity::SYMBOL, &name);
                    graph.relate(document, symbol, relation::REFERENCES);
                    if let Some(chunk) = chunk {
                        graph.mention(chunk, symbol);
                    }
                }
            }
        }
    }
    graph.out
}

/// The symbol a line of code defines, with its kind (`fn`, `struct`, `class`, `def`, …).
pub fn definition(line: &str) -> Option<(&'static str, &str)> {
    const MODIFIERS: [&str; 14] = [
        "pub",
        "pub(crate)",
        "pub(super)",
        "export",
        "default",
        "async",
        "unsafe",
        "const",
        "static",
        "public",
        "private",
        "protected",
        "abstract",
        "final",
    ];
    const KEYWORDS: [(&str, &str); 13] = [
        ("fn", "function"),
        ("def", "function"),
        ("func", "function"),
        ("function", "function"),
        ("struct", "type"),
        ("enum", "type"),
        ("trait", "type"),
        ("class", "type"),
        ("interface", "type"),
        ("type", "type"),
        ("mod", "module"),
        ("impl", "impl"),
        ("macro_rules!", "macro"),
    ];
    let mut words = line.split_whitespace().peekable();
    while words.peek().is_some_and(|w| MODIFIERS.contains(w)) {
        words.next();
    }
    let word = words.next()?;
    // `impl<T>` is `impl`
    let keyword = if word.starts_with("impl<") { "impl" } else { word };
    let (_, kind) = KEYWORDS.iter().find(|(k, _)| *k == keyword)?;
    let rest = words.next()?;
    let rest = if *kind == "impl" {
        // `impl<T> Trait for Type` names Type; `impl Type` names Type
        let tail: Vec<&str> = line.split_whitespace().collect();
        match tail.iter().position(|w| *w == "for") {
            Some(i) => tail.get(i + 1).copied()?,
            None => rest,
        }
    } else {
        rest
    };
    let name_end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
    let name = &rest[..name_end];
    (!name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit())).then_some((kind, name))
}

/// The module a line of code imports (`use a::b::C;`, `import x from "y"`, `from a import b`,
/// `import a.b`, `require("x")`).
pub fn import(line: &str) -> Option<String> {
    let trimmed = line.trim();
    if let Some(rest) = trimmed.strip_prefix("use ").or_else(|| trimmed.strip_prefix("pub use ")) {
        let path = rest.trim_end_matches(';').split(['{', ' ']).next()?;
        // `use a::b::{C, D}` imports from a::b; `use a::b::C` from a::b; `use a` is a itself
        let module = match path.strip_suffix("::") {
            Some(module) => module,
            None => path.rsplit_once("::").map_or(path, |(module, _)| module),
        };
        return (!module.is_empty() && module.len() <= 200).then(|| module.to_owned());
    }
    if let Some(rest) = trimmed.strip_prefix("from ") {
        let module = rest.split_whitespace().next()?;
        return (module.len() <= 200).then(|| module.trim_matches(['"', '\'']).to_owned());
    }
    if trimmed.starts_with("import ") || trimmed.contains("require(") {
        if let Some(quote) = trimmed.find(['"', '\'']) {
            let rest = &trimmed[quote + 1..];
            let end = rest.find(['"', '\''])?;
            return (end > 0 && end <= 200).then(|| rest[..end].to_owned());
        }
        let module = trimmed.strip_prefix("import ")?.split([' ', ',', ';']).next()?;
        return (!module.is_empty() && module.len() <= 200).then(|| module.to_owned());
    }
    None
}

/// Targets of Markdown links `[text](target)` and HTML-less bare links on a line.
fn links(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(open) = rest.find("](") {
        let after = &rest[open + 2..];
        let Some(close) = after.find(')') else { break };
        let target = after[..close].split_whitespace().next().unwrap_or("");
        let target = target.split('#').next().unwrap_or("");
        if !target.is_empty() && !target.starts_with("mailto:") && target.len() <= 500 {
            out.push(target.to_owned());
        }
        rest = &after[close..];
    }
    out
}

/// Identifiers in backticks: `Store::claim` → `claim`, `claim()` → `claim`; only code-like spans
/// (one word of identifier characters, optionally with `::`, `.` and `()`).
fn code_spans(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut parts = line.split('`');
    parts.next();
    while let Some(span) = parts.next() {
        let _closing = parts.next();
        let span = span.trim().trim_end_matches("()");
        if span.is_empty() || span.len() > 100 || span.contains(char::is_whitespace) {
            continue;
        }
        if !span.chars().all(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '.') {
            continue;
        }
        let name = span.rsplit([':', '.']).next().unwrap_or(span);
        if name.len() >= 3 && name.chars().any(char::is_alphabetic) && !name.chars().all(|c| c.is_ascii_digit()) {
            out.push(name.to_owned());
        }
    }
    out
}

/// A relative link resolved against the linking document's directory (`../a.md` from `docs/b.md`
/// is `a.md`); `None` when it climbs above the root.
fn resolve(source: &str, target: &str) -> Option<String> {
    let target = target.trim_start_matches("./");
    let mut parts: Vec<&str> = match source.rsplit_once('/') {
        Some((dir, _)) if !target.starts_with('/') => dir.split('/').collect(),
        _ => Vec::new(),
    };
    for part in target.trim_start_matches('/').split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Bounds on a traversal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TraversalLimits {
    /// Most hops (1 to 6).
    pub depth: usize,
    /// Most relations followed from one entity.
    pub fan_out: usize,
    /// Most entities visited in all.
    pub max_nodes: usize,
}

impl Default for TraversalLimits {
    fn default() -> Self {
        Self { depth: 2, fan_out: 50, max_nodes: 2_000 }
    }
}

impl TraversalLimits {
    fn checked(self) -> Result<Self, Error> {
        if !(1..=6).contains(&self.depth) {
            return Err(Error::Invalid(format!("traversal depth must be 1 to 6, got {}", self.depth)));
        }
        if !(1..=1_000).contains(&self.fan_out) {
            return Err(Error::Invalid(format!("fan-out must be 1 to 1000, got {}", self.fan_out)));
        }
        if !(1..=store::knowledge::limits::MAX_FRONTIER).contains(&self.max_nodes) {
            return Err(Error::Invalid(format!(
                "max_nodes must be 1 to {}, got {}",
                store::knowledge::limits::MAX_FRONTIER,
                self.max_nodes
            )));
        }
        Ok(self)
    }
}

/// What a traversal found: the entities reached (with their hop count) and the relations used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Subgraph {
    /// Entities reached, with the number of hops from the nearest start.
    pub nodes: Vec<GraphNode>,
    /// Relations followed.
    pub edges: Vec<Edge>,
    /// Whether a limit cut the traversal short.
    pub truncated: bool,
}

/// An entity in a traversal's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GraphNode {
    /// The entity.
    #[serde(flatten)]
    pub entity: Entity,
    /// Hops from the nearest start.
    pub depth: usize,
}

/// A path between two entities: entities in order and the relations between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GraphPath {
    /// The entities, start to end.
    pub nodes: Vec<Entity>,
    /// The relations, `nodes.len() - 1` of them.
    pub edges: Vec<Edge>,
}

/// One step of a typed path pattern: follow relations of `relation` (any when `None`) in
/// `direction`, to entities of `kind` (any when `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PatternStep {
    /// The relation kind.
    #[serde(default)]
    pub relation: Option<String>,
    /// Which way.
    #[serde(default)]
    pub direction: Direction,
    /// The kind of entity the step ends at.
    #[serde(default)]
    pub kind: Option<String>,
}

impl PatternStep {
    /// Parses `relation>kind`, `<relation`, `-relation-kind`…: `>` out, `<` in, `-` both;
    /// `*` for any relation; `:kind` to require the end's kind. Example: `>defines:symbol`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let (direction, rest) = match text.chars().next() {
            Some('>') => (Direction::Out, &text[1..]),
            Some('<') => (Direction::In, &text[1..]),
            Some('-') => (Direction::Both, &text[1..]),
            _ => (Direction::Out, text),
        };
        let (relation, kind) = match rest.split_once(':') {
            Some((relation, kind)) => (relation, Some(kind)),
            None => (rest, None),
        };
        let valid =
            |s: &str| !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !(relation == "*" || valid(relation)) || kind.is_some_and(|k| !valid(k)) {
            return Err(Error::Invalid(format!(
                "pattern step {text:?}: write [>|<|-]RELATION[:KIND], e.g. >defines:symbol or <links_to, * for any relation"
            )));
        }
        Ok(Self { relation: (relation != "*").then(|| relation.to_owned()), direction, kind: kind.map(str::to_owned) })
    }
}

fn other_end(edge: &Edge, from: i64) -> i64 {
    if edge.source == from { edge.target } else { edge.source }
}

/// Relations of `ids` in `direction`, at most `fan_out` per entity.
async fn step(
    store: &store::Store,
    tenant: &str,
    ids: &[i64],
    direction: Direction,
    kinds: &[String],
    fan_out: usize,
) -> Result<Vec<Edge>, Error> {
    let edges = store.knowledge_edges(tenant, ids, direction, kinds, (ids.len() * fan_out).min(100_000)).await?;
    let wanted: HashSet<i64> = ids.iter().copied().collect();
    let mut per_node: HashMap<i64, usize> = HashMap::new();
    let mut out = Vec::with_capacity(edges.len());
    for edge in edges {
        let from = match direction {
            Direction::Out => edge.source,
            Direction::In => edge.target,
            Direction::Both if wanted.contains(&edge.source) => edge.source,
            Direction::Both => edge.target,
        };
        let count = per_node.entry(from).or_default();
        if *count < fan_out {
            *count += 1;
            out.push(edge);
        }
    }
    Ok(out)
}

/// The neighbourhood of `start` up to `limits.depth` hops.
pub async fn neighbourhood(
    store: &store::Store,
    tenant: &str,
    start: &[i64],
    direction: Direction,
    kinds: &[String],
    limits: TraversalLimits,
) -> Result<Subgraph, Error> {
    let limits = limits.checked()?;
    let mut depth_of: BTreeMap<i64, usize> = start.iter().map(|id| (*id, 0)).collect();
    let mut frontier: Vec<i64> = start.to_vec();
    let mut edges = Vec::new();
    let mut seen_edges = HashSet::new();
    let mut truncated = false;
    for depth in 1..=limits.depth {
        if frontier.is_empty() {
            break;
        }
        let found = step(store, tenant, &frontier, direction, kinds, limits.fan_out).await?;
        let from: HashSet<i64> = frontier.iter().copied().collect();
        let mut next = Vec::new();
        for edge in found {
            let near = if from.contains(&edge.source) { edge.source } else { edge.target };
            let far = other_end(&edge, near);
            if !depth_of.contains_key(&far) {
                if depth_of.len() >= limits.max_nodes {
                    truncated = true;
                    continue;
                }
                depth_of.insert(far, depth);
                next.push(far);
            }
            if seen_edges.insert((edge.source, edge.target, edge.kind.clone(), edge.document_id)) {
                edges.push(edge);
            }
        }
        frontier = next;
    }
    let ids: Vec<i64> = depth_of.keys().copied().collect();
    let entities = store.knowledge_entities(tenant, &ids).await?;
    let mut nodes: Vec<GraphNode> = entities
        .into_iter()
        .map(|entity| {
            let depth = depth_of.get(&entity.id).copied().unwrap_or(0);
            GraphNode { entity, depth }
        })
        .collect();
    nodes.sort_by(|a, b| a.depth.cmp(&b.depth).then(a.entity.id.cmp(&b.entity.id)));
    Ok(Subgraph { nodes, edges, truncated })
}

/// A shortest path from `from` to `to` (relations followed either way), at most `limits.depth` hops.
pub async fn shortest_path(
    store: &store::Store,
    tenant: &str,
    from: i64,
    to: i64,
    kinds: &[String],
    limits: TraversalLimits,
) -> Result<Option<GraphPath>, Error> {
    let limits = limits.checked()?;
    if from == to {
        let nodes = store.knowledge_entities(tenant, &[from]).await?;
        return Ok((!nodes.is_empty()).then_some(GraphPath { nodes, edges: Vec::new() }));
    }
    // breadth-first from both ends; each side remembers the edge it arrived by
    let mut parents: [HashMap<i64, Option<Edge>>; 2] = [HashMap::from([(from, None)]), HashMap::from([(to, None)])];
    let mut frontiers: [Vec<i64>; 2] = [vec![from], vec![to]];
    let mut meeting = None;
    let mut hops = 0;
    'search: while hops < limits.depth && !frontiers[0].is_empty() && !frontiers[1].is_empty() {
        let side = usize::from(frontiers[1].len() < frontiers[0].len());
        let found = step(store, tenant, &frontiers[side], Direction::Both, kinds, limits.fan_out).await?;
        hops += 1;
        let current: HashSet<i64> = frontiers[side].iter().copied().collect();
        let mut next = Vec::new();
        for edge in found {
            let near = if current.contains(&edge.source) { edge.source } else { edge.target };
            let far = other_end(&edge, near);
            if parents[side].contains_key(&far) {
                continue;
            }
            if parents[side].len() + parents[1 - side].len() >= limits.max_nodes {
                break 'search;
            }
            parents[side].insert(far, Some(edge));
            if parents[1 - side].contains_key(&far) {
                meeting = Some(far);
                break 'search;
            }
            next.push(far);
        }
        frontiers[side] = next;
    }
    let Some(meeting) = meeting else { return Ok(None) };
    let walk = |side: usize| {
        let mut edges = Vec::new();
        let mut node = meeting;
        while let Some(Some(edge)) = parents[side].get(&node) {
            let previous = other_end(edge, node);
            edges.push(edge.clone());
            node = previous;
        }
        edges
    };
    let mut edges = walk(0);
    edges.reverse();
    edges.extend(walk(1));
    let mut order = vec![from];
    for edge in &edges {
        let last = *order.last().unwrap_or(&from);
        order.push(other_end(edge, last));
    }
    let entities: HashMap<i64, Entity> =
        store.knowledge_entities(tenant, &order).await?.into_iter().map(|e| (e.id, e)).collect();
    let nodes = order.iter().filter_map(|id| entities.get(id).cloned()).collect::<Vec<_>>();
    if nodes.len() != order.len() {
        return Ok(None);
    }
    Ok(Some(GraphPath { nodes, edges }))
}

/// Paths from `start` that follow `pattern` step by step; at most `limit` paths.
pub async fn match_pattern(
    store: &store::Store,
    tenant: &str,
    start: &[i64],
    pattern: &[PatternStep],
    fan_out: usize,
    limit: usize,
) -> Result<Vec<GraphPath>, Error> {
    if pattern.is_empty() || pattern.len() > 6 {
        return Err(Error::Invalid(format!("a pattern has 1 to 6 steps, got {}", pattern.len())));
    }
    let fan_out = fan_out.clamp(1, 1_000);
    let limit = limit.clamp(1, 1_000);
    // partial paths: (entity ids, edges)
    let mut paths: Vec<(Vec<i64>, Vec<Edge>)> = start.iter().map(|id| (vec![*id], Vec::new())).collect();
    let mut kinds_of: HashMap<i64, Entity> = HashMap::new();
    for step_pattern in pattern {
        let ends: Vec<i64> =
            paths.iter().filter_map(|(nodes, _)| nodes.last().copied()).collect::<HashSet<_>>().into_iter().collect();
        if ends.is_empty() {
            break;
        }
        let relation: Vec<String> = step_pattern.relation.iter().cloned().collect();
        let edges = step(store, tenant, &ends, step_pattern.direction, &relation, fan_out).await?;
        let far_ids: Vec<i64> = edges
            .iter()
            .flat_map(|e| [e.source, e.target])
            .collect::<HashSet<_>>()
            .into_iter()
            .filter(|id| !kinds_of.contains_key(id))
            .collect();
        for entity in store.knowledge_entities(tenant, &far_ids).await? {
            kinds_of.insert(entity.id, entity);
        }
        let mut by_end: HashMap<i64, Vec<&Edge>> = HashMap::new();
        for edge in &edges {
            match step_pattern.direction {
                Direction::Out => by_end.entry(edge.source).or_default().push(edge),
                Direction::In => by_end.entry(edge.target).or_default().push(edge),
                Direction::Both => {
                    by_end.entry(edge.source).or_default().push(edge);
                    by_end.entry(edge.target).or_default().push(edge);
                }
            }
        }
        let mut next = Vec::new();
        for (nodes, path_edges) in &paths {
            let Some(end) = nodes.last().copied() else { continue };
            for edge in by_end.get(&end).into_iter().flatten() {
                let far = other_end(edge, end);
                if nodes.contains(&far) {
                    continue;
                }
                if let Some(kind) = &step_pattern.kind
                    && kinds_of.get(&far).is_none_or(|e| &e.kind != kind)
                {
                    continue;
                }
                let mut nodes = nodes.clone();
                nodes.push(far);
                let mut path_edges = path_edges.clone();
                path_edges.push((*edge).clone());
                next.push((nodes, path_edges));
                if next.len() >= limit * 10 {
                    break;
                }
            }
        }
        paths = next;
    }
    let start_entities = store.knowledge_entities(tenant, start).await?;
    for entity in start_entities {
        kinds_of.insert(entity.id, entity);
    }
    Ok(paths
        .into_iter()
        .filter(|(nodes, _)| nodes.len() == pattern.len() + 1)
        .take(limit)
        .filter_map(|(nodes, edges)| {
            let nodes = nodes.iter().map(|id| kinds_of.get(id).cloned()).collect::<Option<Vec<_>>>()?;
            Some(GraphPath { nodes, edges })
        })
        .collect())
}

#[cfg(test)]
mod tests;
