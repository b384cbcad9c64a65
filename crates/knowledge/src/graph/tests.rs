use super::*;
use crate::chunk::{ChunkOptions, chunk};

#[test]
fn definitions_and_imports_are_recognised() {
    assert_eq!(definition("pub async fn claim(&self) {"), Some(("function", "claim")));
    assert_eq!(definition("struct Lease {"), Some(("type", "Lease")));
    assert_eq!(definition("impl<T> Display for Lease<T> {"), Some(("impl", "Lease")));
    assert_eq!(definition("class Gateway(Base):"), Some(("type", "Gateway")));
    assert_eq!(definition("export default function render() {"), Some(("function", "render")));
    assert_eq!(definition("def handle(msg):"), Some(("function", "handle")));
    assert_eq!(definition("    let x = 1;"), None);
    assert_eq!(definition("fn 1x()"), None);
    assert_eq!(import("use store::knowledge::{Edge, Entity};").as_deref(), Some("store::knowledge"));
    assert_eq!(import("use tokio;").as_deref(), Some("tokio"));
    assert_eq!(import("import { x } from \"./bus.js\";").as_deref(), Some("./bus.js"));
    assert_eq!(import("from store.bus import claim").as_deref(), Some("store.bus"));
    assert_eq!(import("import os").as_deref(), Some("os"));
    assert_eq!(import("let a = 1;"), None);
}

#[test]
fn links_resolve_against_the_document_directory() {
    assert_eq!(resolve("docs/guide/a.md", "../b.md").as_deref(), Some("docs/b.md"));
    assert_eq!(resolve("docs/a.md", "./c/d.md").as_deref(), Some("docs/c/d.md"));
    assert_eq!(resolve("a.md", "../../etc/passwd"), None);
    assert_eq!(links("see [x](other.md#part) and [y](https://e.com/a \"t\")"), vec!["other.md", "https://e.com/a"]);
    assert_eq!(code_spans("call `Store::claim()` then `x` and `two words`"), vec!["claim"]);
}

#[test]
fn a_markdown_document_yields_its_structure() {
    let text = "# Bus\n\nThe bus calls `claim` (see [leases](leases.md)).\n\n## Leases\n\nMore.\n\n```rust\nfn not_a_def() {}\n```\n";
    let (chunks, headings) = chunk(text, DocumentKind::Markdown, ChunkOptions::default());
    let graph = extract("docs/bus.md", DocumentKind::Markdown, text, &chunks, &headings);
    let names: Vec<(String, String)> = graph.entities.iter().map(|e| (e.kind.clone(), e.name.clone())).collect();
    assert!(names.contains(&("document".into(), "docs/bus.md".into())), "{names:?}");
    assert!(names.contains(&("section".into(), "docs/bus.md#Leases".into())), "{names:?}");
    assert!(names.contains(&("document".into(), "docs/leases.md".into())), "{names:?}");
    assert!(names.contains(&("symbol".into(), "claim".into())), "{names:?}");
    assert!(!names.iter().any(|(_, n)| n == "not_a_def"), "fenced code is not scanned: {names:?}");
    let kinds: Vec<&str> = graph.relations.iter().map(|r| r.kind.as_str()).collect();
    for kind in ["contains", "links_to", "references"] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
    // section Leases sits under section Bus
    let bus = names.iter().position(|(_, n)| n == "docs/bus.md#Bus").expect("section");
    let leases = names.iter().position(|(_, n)| n == "docs/bus.md#Leases").expect("section");
    assert!(graph.relations.iter().any(|r| r.source == bus && r.target == leases && r.kind == "contains"));
    assert!(graph.mentions.iter().all(|m| m.chunk < chunks.len() && m.entity < graph.entities.len()));
}

#[test]
fn pattern_steps_parse_and_reject_garbage() {
    let step = PatternStep::parse(">defines:symbol").expect("valid");
    assert_eq!(
        (step.relation.as_deref(), step.direction, step.kind.as_deref()),
        (Some("defines"), Direction::Out, Some("symbol"))
    );
    let step = PatternStep::parse("<*").expect("valid");
    assert_eq!((step.relation, step.direction), (None, Direction::In));
    for bad in ["", ">", "a b", ">x:'; drop", ":kind"] {
        assert!(PatternStep::parse(bad).is_err(), "{bad:?}");
    }
}
