//! The knowledge layer's parsers of documents and datasets: `knowledge::chunk::chunk` for every
//! `DocumentKind` (HTML through `html_to_text` first, as ingestion does), the structural graph
//! extraction over the chunks, the BEIR loader (`eval::Dataset::parse`) with its metrics, and the
//! graph pattern steps (`graph::PatternStep::parse`).
//!
//! Input: byte 0 chooses what is fuzzed (`& 7`: 0-3 one document kind, 4 BEIR, 5 pattern steps and
//! paths, 6-7 every kind); bytes 1 and 2 the chunk size and overlap; then, for documents, the source
//! name up to the first newline and the text; for BEIR, corpus, qrels and queries separated by
//! U+001E (record separator).
//!
//! Properties (ARCHITECTURE.md): a chunk is `text[start..end]` of its document, its offsets on
//! character boundaries and within the text; chunks hold at most `max_chars` characters; headings
//! sit in the text; the graph's relations and mentions name entities and chunks that exist; a
//! loaded dataset's judgements name documents of its corpus and its metrics lie in [0, 1].
#![no_main]

use std::collections::{HashMap, HashSet};

use knowledge::chunk::{self, ChunkOptions, DocumentKind};
use knowledge::eval::{Dataset, DatasetFile};
use libfuzzer_sys::fuzz_target;

const KINDS: [DocumentKind; 4] = [DocumentKind::Markdown, DocumentKind::Text, DocumentKind::Code, DocumentKind::Html];

fuzz_target!(|data: &[u8]| {
    let [mode, size, overlap, rest @ ..] = data else { return };
    let options = ChunkOptions { max_chars: 50 + usize::from(*size) * 8, overlap_chars: usize::from(*overlap) * 4 };
    // documents are read as UTF-8; what is not is not indexed
    let Ok(text) = std::str::from_utf8(rest) else { return };
    match mode & 7 {
        kind @ 0..=3 => document(text, KINDS[usize::from(kind)], options),
        4 => beir(text),
        5 => lines(text),
        _ => KINDS.into_iter().for_each(|kind| document(text, kind, options)),
    }
});

/// One document as ingestion treats it: HTML to text, chunks and headings, then the graph.
fn document(input: &str, kind: DocumentKind, options: ChunkOptions) {
    let (source, raw) = input.split_once('\n').unwrap_or(("docs/fuzz.md", input));
    let text = match kind {
        DocumentKind::Html => chunk::html_to_text(raw).0,
        _ => raw.to_owned(),
    };
    let (chunks, headings) = chunk::chunk(&text, kind, options);
    let max_chars = options.max_chars.clamp(100, 16_000);
    for piece in &chunks {
        assert!(piece.start <= piece.end && piece.end <= text.len(), "chunk {piece:?} outside {} bytes", text.len());
        assert!(
            text.is_char_boundary(piece.start) && text.is_char_boundary(piece.end),
            "chunk {piece:?} is not on character boundaries"
        );
        let words = &text[piece.start..piece.end];
        assert!(!words.trim().is_empty(), "an empty chunk {piece:?}");
        let count = words.chars().count();
        assert!(count <= max_chars, "a chunk of {count} characters, over {max_chars}: {piece:?}");
    }
    for heading in &headings {
        assert!((1..=6).contains(&heading.level), "{heading:?}");
        assert!(heading.start <= text.len() && text.is_char_boundary(heading.start), "{heading:?}");
        assert!(!heading.text.is_empty(), "{heading:?}");
    }
    let graph = knowledge::graph::extract(source, kind, &text, &chunks, &headings);
    for relation in &graph.relations {
        assert!(relation.source < graph.entities.len() && relation.target < graph.entities.len(), "{relation:?}");
        assert_ne!(relation.source, relation.target);
    }
    for mention in &graph.mentions {
        assert!(mention.chunk < chunks.len() && mention.entity < graph.entities.len(), "{mention:?}");
    }
}

/// A BEIR dataset from its three files.
fn beir(text: &str) {
    let mut files = text.splitn(3, '\u{1e}');
    let (corpus, qrels, queries) = (files.next().unwrap_or(""), files.next().unwrap_or(""), files.next().unwrap_or(""));
    let parsed = Dataset::parse(
        DatasetFile { name: "corpus.jsonl", text: corpus },
        DatasetFile { name: "qrels.tsv", text: qrels },
        DatasetFile { name: "queries.jsonl", text: queries },
    );
    let dataset = match parsed {
        Ok(dataset) => dataset,
        Err(err) => {
            let message = err.to_string();
            assert!(
                ["corpus.jsonl", "qrels.tsv", "queries.jsonl"].iter().any(|file| message.contains(file)),
                "{message}"
            );
            return;
        }
    };
    assert!(!dataset.queries.is_empty());
    // rankings list a document once (evaluate() keeps a document's best chunk)
    let mut seen = HashSet::new();
    let documents: Vec<String> =
        dataset.corpus.iter().filter(|(id, _, _)| seen.insert(id.as_str())).map(|(id, _, _)| id.clone()).collect();
    for (query, _) in &dataset.queries {
        let relevant: &HashMap<String, u32> = dataset.qrels.get(query).expect("a loaded query has judgements");
        for (document, grade) in relevant {
            assert!(seen.contains(document.as_str()), "judgement of {document:?}, not in the corpus");
            assert!(*grade > 0);
        }
        // the corpus in file order, and reversed, as rankings
        let ranked: Vec<String> = documents.iter().take(20).cloned().collect();
        let reversed: Vec<String> = documents.iter().rev().take(20).cloned().collect();
        for ranking in [&ranked, &reversed] {
            let (recall, ndcg, reciprocal_rank) = knowledge::eval::metrics_at_10(ranking, relevant);
            for (name, value) in [("recall", recall), ("nDCG", ndcg), ("MRR", reciprocal_rank)] {
                assert!((0.0..=1.0 + 1e-9).contains(&value), "{name}@10 is {value} for {relevant:?}");
            }
        }
    }
}

/// Graph pattern steps (`>defines:symbol`) and document paths, one per line.
fn lines(text: &str) {
    for line in text.lines().take(16) {
        if let Ok(step) = knowledge::graph::PatternStep::parse(line) {
            let body = line.strip_prefix(['>', '<', '-']).unwrap_or(line);
            assert_eq!(step.relation.is_none(), body.split(':').next() == Some("*"), "{line:?} → {step:?}");
        }
        if let Some(kind) = DocumentKind::of_path(line) {
            assert_eq!(DocumentKind::from_name(kind.name()), Some(kind));
        }
        let _ = knowledge::graph::definition(line);
        let _ = knowledge::graph::import(line);
    }
}
