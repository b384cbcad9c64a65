//! Retrieval evaluation on BEIR-format data (`corpus.jsonl`, `queries.jsonl`, `qrels/test.tsv`
//! or `qrels.tsv`): the corpus is indexed into a scope of its own, every query is run in full-text,
//! vector and hybrid mode, and recall@10, nDCG@10 and MRR are reported per mode.
//! Invariant: a relevance judgement that names a document not in the corpus is an error, not a
//! silent zero.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use store::knowledge::KnowledgeScope;

use crate::Error;
use crate::embed::Embedder;
use crate::index::{Indexer, InlineDocument, Progress};
use crate::search::{SearchMode, SearchRequest, Searcher};

/// A loaded dataset.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// Documents: id → (title, text).
    pub corpus: Vec<(String, String, String)>,
    /// Queries: id → text (only those with judgements).
    pub queries: Vec<(String, String)>,
    /// Judgements: query id → relevant document ids with grades.
    pub qrels: HashMap<String, HashMap<String, u32>>,
}

#[derive(Deserialize)]
struct CorpusLine {
    #[serde(rename = "_id")]
    id: String,
    #[serde(default)]
    title: String,
    text: String,
}

#[derive(Deserialize)]
struct QueryLine {
    #[serde(rename = "_id")]
    id: String,
    text: String,
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|err| Error::Io { path: path.display().to_string(), source: err })
}

/// Highest relevance grade a qrels file may give (BEIR's are 0 to 2 or 3). nDCG's gain is
/// `2^grade - 1`: grades from 1024 up would make it infinite and the score NaN.
pub const MAX_GRADE: u32 = 100;

/// One file of a BEIR dataset, as text: what errors call it (its path) and its contents.
#[derive(Debug, Clone, Copy)]
pub struct DatasetFile<'a> {
    /// The name errors give the file (its path).
    pub name: &'a str,
    /// The file's text.
    pub text: &'a str,
}

impl Dataset {
    /// Loads a BEIR directory.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let corpus_path = dir.join("corpus.jsonl");
        let corpus = read(&corpus_path)?;
        let qrels_path = [dir.join("qrels/test.tsv"), dir.join("qrels.tsv")]
            .into_iter()
            .find(|p| p.is_file())
            .ok_or_else(|| Error::Invalid(format!("{} has neither qrels/test.tsv nor qrels.tsv", dir.display())))?;
        let qrels = read(&qrels_path)?;
        let queries_path = dir.join("queries.jsonl");
        let queries = read(&queries_path)?;
        let (corpus_name, qrels_name, queries_name) =
            (corpus_path.display().to_string(), qrels_path.display().to_string(), queries_path.display().to_string());
        Self::parse(
            DatasetFile { name: &corpus_name, text: &corpus },
            DatasetFile { name: &qrels_name, text: &qrels },
            DatasetFile { name: &queries_name, text: &queries },
        )
    }

    /// Parses the three files of a BEIR dataset (`corpus.jsonl`, the qrels TSV and `queries.jsonl`)
    /// from their text; errors name the file and line.
    pub fn parse(corpus: DatasetFile<'_>, qrels: DatasetFile<'_>, queries: DatasetFile<'_>) -> Result<Self, Error> {
        let mut dataset = Self::default();
        for (number, line) in corpus.text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed: CorpusLine = serde_json::from_str(line).map_err(|err| {
                Error::Invalid(format!(
                    "{} line {}: {err} (expected {{\"_id\", \"title\", \"text\"}})",
                    corpus.name,
                    number + 1
                ))
            })?;
            dataset.corpus.push((parsed.id, parsed.title, parsed.text));
        }
        let documents: HashSet<&str> = dataset.corpus.iter().map(|(id, _, _)| id.as_str()).collect();
        for (number, line) in qrels.text.lines().enumerate() {
            let fields: Vec<&str> = line.split('\t').collect();
            if fields.len() < 3 || (number == 0 && fields[0] == "query-id") {
                continue;
            }
            let grade: u32 = fields[2].trim().parse().map_err(|_| {
                Error::Invalid(format!(
                    "{} line {}: score {:?} is not a whole number",
                    qrels.name,
                    number + 1,
                    fields[2]
                ))
            })?;
            if grade > MAX_GRADE {
                return Err(Error::Invalid(format!(
                    "{} line {}: score {grade} is out of range: relevance grades are 0 to {MAX_GRADE}",
                    qrels.name,
                    number + 1
                )));
            }
            if !documents.contains(fields[1]) {
                return Err(Error::Invalid(format!(
                    "{} line {}: document {:?} is not in corpus.jsonl",
                    qrels.name,
                    number + 1,
                    fields[1]
                )));
            }
            if grade > 0 {
                dataset.qrels.entry(fields[0].to_owned()).or_default().insert(fields[1].to_owned(), grade);
            }
        }
        for (number, line) in queries.text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed: QueryLine = serde_json::from_str(line).map_err(|err| {
                Error::Invalid(format!("{} line {}: {err} (expected {{\"_id\", \"text\"}})", queries.name, number + 1))
            })?;
            if dataset.qrels.contains_key(&parsed.id) {
                dataset.queries.push((parsed.id, parsed.text));
            }
        }
        if dataset.queries.is_empty() {
            return Err(Error::Invalid(format!("{}: no query has a relevance judgement", queries.name)));
        }
        Ok(dataset)
    }
}

/// Scores of one mode.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ModeScores {
    /// `fulltext`, `vector` or `hybrid`.
    pub mode: String,
    /// Mean recall@10.
    pub recall_at_10: f64,
    /// Mean nDCG@10.
    pub ndcg_at_10: f64,
    /// Mean reciprocal rank (of the first relevant document in the top 10).
    pub mrr: f64,
    /// Mean search latency in milliseconds.
    pub mean_ms: f64,
}

/// The evaluation's result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EvalReport {
    /// Documents in the corpus.
    pub documents: usize,
    /// Queries evaluated.
    pub queries: usize,
    /// One entry per mode.
    pub modes: Vec<ModeScores>,
}

/// Indexes the dataset into `scope` and evaluates every query in each mode. Documents are ranked
/// by their best chunk. `threshold` is the hybrid score threshold (0 keeps every hit).
pub async fn evaluate<E: Embedder + ?Sized>(
    store: &store::Store,
    embedder: std::sync::Arc<E>,
    scope: &KnowledgeScope,
    dataset: &Dataset,
    threshold: f32,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<EvalReport, Error> {
    let indexer = Indexer::new(store.clone(), embedder.clone());
    let inline: Vec<InlineDocument> = dataset
        .corpus
        .iter()
        .map(|(id, title, text)| InlineDocument {
            source: id.clone(),
            text: if title.is_empty() { text.clone() } else { format!("{title}\n\n{text}") },
            kind: Some(crate::index::InlineKind::Text),
        })
        .collect();
    indexer.index_inline(scope, inline, progress).await?;
    let searcher = Searcher::new(store.clone(), embedder);
    let mut report = EvalReport { documents: dataset.corpus.len(), queries: dataset.queries.len(), modes: Vec::new() };
    for mode in [SearchMode::Fulltext, SearchMode::Vector, SearchMode::Hybrid] {
        let mut scores = ModeScores { mode: mode.name().to_owned(), ..ModeScores::default() };
        let mut total_ms = 0.0;
        for (query_id, text) in &dataset.queries {
            let mut request = SearchRequest::new(text.clone());
            request.mode = mode;
            request.project = Some(scope.project.clone());
            request.top_k = 50;
            request.threshold = if mode == SearchMode::Hybrid { threshold } else { 0.0 };
            let started = std::time::Instant::now();
            let hits = searcher.search(&scope.tenant, &request).await?;
            total_ms += started.elapsed().as_secs_f64() * 1000.0;
            // rank documents by their best chunk
            let mut ranked: Vec<String> = Vec::new();
            for hit in hits {
                if !ranked.contains(&hit.chunk.source) {
                    ranked.push(hit.chunk.source);
                }
            }
            ranked.truncate(10);
            let relevant = dataset.qrels.get(query_id).cloned().unwrap_or_default();
            let (recall, ndcg, rr) = metrics_at_10(&ranked, &relevant);
            scores.recall_at_10 += recall;
            scores.ndcg_at_10 += ndcg;
            scores.mrr += rr;
        }
        let n = dataset.queries.len().max(1) as f64;
        scores.recall_at_10 /= n;
        scores.ndcg_at_10 /= n;
        scores.mrr /= n;
        scores.mean_ms = total_ms / n;
        report.modes.push(scores);
    }
    Ok(report)
}

/// Recall@10, nDCG@10 (graded gains) and reciprocal rank of one ranked list.
pub fn metrics_at_10(ranked: &[String], relevant: &HashMap<String, u32>) -> (f64, f64, f64) {
    if relevant.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let top = &ranked[..ranked.len().min(10)];
    let found = top.iter().filter(|id| relevant.contains_key(*id)).count();
    let recall = found as f64 / relevant.len() as f64;
    let dcg: f64 = top
        .iter()
        .enumerate()
        .map(|(i, id)| relevant.get(id).map_or(0.0, |g| (2f64.powi(*g as i32) - 1.0) / ((i + 2) as f64).log2()))
        .sum();
    let mut grades: Vec<u32> = relevant.values().copied().collect();
    grades.sort_unstable_by(|a, b| b.cmp(a));
    let ideal: f64 =
        grades.iter().take(10).enumerate().map(|(i, g)| (2f64.powi(*g as i32) - 1.0) / ((i + 2) as f64).log2()).sum();
    let ndcg = if ideal > 0.0 { dcg / ideal } else { 0.0 };
    let rr = top.iter().position(|id| relevant.contains_key(id)).map_or(0.0, |i| 1.0 / (i + 1) as f64);
    (recall, ndcg, rr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_hand_computed_values() {
        let relevant: HashMap<String, u32> = [("a".to_owned(), 1), ("b".to_owned(), 1)].into();
        let ranked: Vec<String> = ["x", "a", "y", "b"].iter().map(|s| s.to_string()).collect();
        let (recall, ndcg, rr) = metrics_at_10(&ranked, &relevant);
        assert!((recall - 1.0).abs() < 1e-9);
        assert!((rr - 0.5).abs() < 1e-9);
        let dcg = 1.0 / 3f64.log2() + 1.0 / 5f64.log2();
        let ideal = 1.0 + 1.0 / 3f64.log2();
        assert!((ndcg - dcg / ideal).abs() < 1e-9);
        assert_eq!(metrics_at_10(&[], &relevant), (0.0, 0.0, 0.0));
    }

    #[test]
    fn a_grade_out_of_range_is_refused() {
        // found by the `ingest` fuzz target: a grade of 1024 made nDCG@10 NaN
        let file = |name, text| DatasetFile { name, text };
        let corpus = file("corpus.jsonl", "{\"_id\": \"d\", \"text\": \"x\"}\n");
        let queries = file("queries.jsonl", "{\"_id\": \"q\", \"text\": \"x\"}\n");
        let err = Dataset::parse(corpus, file("qrels.tsv", "q\td\t1024\n"), queries).expect_err("grade 1024");
        assert!(err.to_string().contains("qrels.tsv line 1: score 1024 is out of range"), "{err}");
        let dataset = Dataset::parse(corpus, file("qrels.tsv", "q\td\t100\n"), queries).expect("grade 100");
        let (_, ndcg, _) = metrics_at_10(&["d".to_owned()], &dataset.qrels["q"]);
        assert!((ndcg - 1.0).abs() < 1e-9, "{ndcg}");
    }

    #[test]
    fn a_broken_dataset_names_the_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("corpus.jsonl"), "{\"_id\": \"d1\", \"text\": \"x\"}\n").expect("write");
        std::fs::write(dir.path().join("queries.jsonl"), "{\"_id\": \"q1\", \"text\": \"x\"}\n").expect("write");
        std::fs::write(dir.path().join("qrels.tsv"), "query-id\tcorpus-id\tscore\nq1\td2\t1\n").expect("write");
        let err = Dataset::load(dir.path()).expect_err("unknown document").to_string();
        assert!(err.contains("qrels.tsv line 2") && err.contains("d2"), "{err}");
        std::fs::write(dir.path().join("corpus.jsonl"), "{\"id\": 1}\n").expect("write");
        let err = Dataset::load(dir.path()).expect_err("bad corpus").to_string();
        assert!(err.contains("corpus.jsonl line 1"), "{err}");
    }
}
