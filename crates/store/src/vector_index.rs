//! The in-process vector index of the SQLite backend: every embedding of the database in memory,
//! quantised to 8 bits for a fast scan over all of them on both cores (from 20,000 vectors, to one
//! bit a dimension, scanned on one core), the best candidates re-scored with their full 32-bit
//! vectors. Invariant: the index describes exactly one generation of the
//! knowledge tables; a search first checks the generation and reloads when another writer moved it.

use std::collections::HashMap;

use crate::knowledge::ScoredChunk;

/// How many candidates per wanted result the 8-bit scan keeps for exact re-scoring.
const RESCORE_FACTOR: usize = 8;
/// At least this many candidates are re-scored.
const MIN_RESCORE: usize = 64;
/// From this many vectors on, a 1-bit pass (one bit a dimension: above or below the index's mean)
/// picks the candidates instead of the 8-bit scan: 48 bytes a vector of 384 dimensions rather than
/// 384, so the pass stays in cache and takes a fraction of the time on one core.
const BITS_FROM: usize = 20_000;
/// How many candidates per wanted result the 1-bit pass keeps for exact re-scoring.
const BITS_FACTOR: usize = 100;
/// At least this many candidates of the 1-bit pass are re-scored.
const MIN_BITS_KEEP: usize = 2_000;
/// Filters whose scope counts are remembered per generation (sources prefixes vary; the map is
/// emptied when full rather than growing with every prefix ever asked for).
const COUNTS_KEPT: usize = 1_024;

/// A filter's tenant, project and source prefix.
type ScopeKey = (String, Option<String>, Option<String>);

/// One document's place in the index, for filters.
#[derive(Debug, Clone)]
pub(crate) struct IndexedDocument {
    pub(crate) tenant: String,
    pub(crate) project: String,
    pub(crate) source: String,
}

/// The vectors of one generation.
#[derive(Debug, Default)]
pub(crate) struct VectorIndex {
    pub(crate) generation: i64,
    dim: usize,
    chunk_ids: Vec<i64>,
    documents_of_chunks: Vec<u32>,
    documents: Vec<IndexedDocument>,
    /// Row-major, `dim` per chunk, unit vectors scaled by 127 (empty from `BITS_FROM` vectors,
    /// where the 1-bit pass replaces the 8-bit scan).
    quantized: Vec<i8>,
    /// Row-major, `dim` per chunk.
    full: Vec<f32>,
    /// The mean of the vectors, when the index has a 1-bit pass.
    mean: Vec<f32>,
    /// Row-major, `words` per chunk: bit i is set when dimension i is above the mean (empty below
    /// `BITS_FROM` vectors).
    bits: Vec<u64>,
    /// 64-bit words per chunk in `bits`.
    words: usize,
    /// Chunks in scope per filter, counted once per generation (the index is rebuilt, and this
    /// emptied, when the knowledge tables change).
    counts: std::sync::Mutex<HashMap<ScopeKey, usize>>,
}

/// Builds an index from rows of (chunk id, document id, embedding).
pub(crate) struct VectorIndexBuilder {
    index: VectorIndex,
    document_slots: HashMap<i64, u32>,
}

impl VectorIndexBuilder {
    pub(crate) fn new(generation: i64, dim: usize, documents: Vec<(i64, IndexedDocument)>) -> Self {
        let mut index = VectorIndex { generation, dim, ..VectorIndex::default() };
        let mut document_slots = HashMap::with_capacity(documents.len());
        for (id, document) in documents {
            let slot = u32::try_from(index.documents.len()).unwrap_or(u32::MAX);
            document_slots.insert(id, slot);
            index.documents.push(document);
        }
        Self { index, document_slots }
    }

    /// Adds one chunk; vectors of the wrong length or of unknown documents are skipped.
    pub(crate) fn push(&mut self, chunk_id: i64, document_id: i64, vector: &[f32]) {
        let Some(slot) = self.document_slots.get(&document_id) else { return };
        if vector.len() != self.index.dim {
            return;
        }
        self.index.chunk_ids.push(chunk_id);
        self.index.documents_of_chunks.push(*slot);
        self.index.full.extend_from_slice(vector);
    }

    pub(crate) fn build(mut self) -> VectorIndex {
        // lookups by chunk id search `chunk_ids`: keep it sorted (rows come in id order already)
        if !self.index.chunk_ids.is_sorted() {
            let dim = self.index.dim;
            let mut order: Vec<usize> = (0..self.index.chunk_ids.len()).collect();
            order.sort_by_key(|row| self.index.chunk_ids[*row]);
            let old = std::mem::take(&mut self.index);
            self.index = VectorIndex {
                generation: old.generation,
                dim,
                chunk_ids: order.iter().map(|row| old.chunk_ids[*row]).collect(),
                documents_of_chunks: order.iter().map(|row| old.documents_of_chunks[*row]).collect(),
                documents: old.documents,
                full: order.iter().flat_map(|row| old.full[row * dim..(row + 1) * dim].iter().copied()).collect(),
                ..VectorIndex::default()
            };
        }
        let (rows, dim) = (self.index.len(), self.index.dim);
        if rows >= BITS_FROM && dim > 0 {
            let mut mean = vec![0f64; dim];
            for vector in self.index.full.chunks_exact(dim) {
                for (sum, value) in mean.iter_mut().zip(vector) {
                    *sum += f64::from(*value);
                }
            }
            self.index.mean = mean.into_iter().map(|sum| (sum / rows as f64) as f32).collect();
            self.index.words = dim.div_ceil(64);
            let mut bits = Vec::with_capacity(rows * self.index.words);
            for vector in self.index.full.chunks_exact(dim) {
                bits.extend(sign_bits(vector, &self.index.mean));
            }
            self.index.bits = bits;
        } else {
            self.index.quantized = self.index.full.iter().map(|v| quantize(*v)).collect();
        }
        self.index
    }
}

impl VectorIndex {
    /// How many vectors it holds.
    pub(crate) fn len(&self) -> usize {
        self.chunk_ids.len()
    }

    /// The dimension of the vectors (0 before an embedding model is recorded).
    pub(crate) fn dim(&self) -> usize {
        self.dim
    }

    /// The document of a chunk of this generation.
    pub(crate) fn document_of(&self, chunk_id: i64) -> Option<&IndexedDocument> {
        let row = self.chunk_ids.binary_search(&chunk_id).ok()?;
        self.documents.get(self.documents_of_chunks[row] as usize)
    }

    /// How many chunks belong to documents that pass `allow`.
    pub(crate) fn count(&self, allow: impl Fn(&IndexedDocument) -> bool) -> usize {
        let allowed: Vec<bool> = self.documents.iter().map(allow).collect();
        self.documents_of_chunks.iter().filter(|slot| allowed[**slot as usize]).count()
    }

    /// How many chunks are in the filter's scope, counted on the first search of this generation
    /// with this filter and remembered (at most `COUNTS_KEPT` filters) until the index is rebuilt.
    pub(crate) fn count_in_scope(&self, filter: &crate::knowledge::KnowledgeFilter) -> usize {
        let key = (filter.tenant.clone(), filter.project.clone(), filter.source_prefix.clone());
        if let Some(count) = self.counts.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return *count;
        }
        let count = self.count(|d| filter.admits(&d.tenant, &d.project, &d.source));
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.len() >= COUNTS_KEPT {
            counts.clear();
        }
        counts.insert(key, count);
        count
    }

    /// The `limit` nearest chunks to `query` (a unit vector) among documents that pass `allow`,
    /// by cosine similarity; `exact` skips the 8-bit pass (for measuring the recall of the fast one).
    pub(crate) fn search(
        &self,
        query: &[f32],
        limit: usize,
        exact: bool,
        allow: impl Fn(&IndexedDocument) -> bool + Sync,
    ) -> Vec<ScoredChunk> {
        if query.len() != self.dim || self.len() == 0 || limit == 0 {
            return Vec::new();
        }
        let allowed: Vec<bool> = self.documents.iter().map(&allow).collect();
        let candidates = if exact {
            self.scan(
                limit,
                &allowed,
                #[inline(always)]
                |row| dot_f32(query, &self.full[row * self.dim..(row + 1) * self.dim]),
            )
        } else {
            let rough: Vec<usize> = if self.bits.is_empty() {
                let quantized: Vec<i8> = query.iter().map(|v| quantize(*v)).collect();
                let keep = (limit * RESCORE_FACTOR).max(MIN_RESCORE);
                self.scan(
                    keep,
                    &allowed,
                    #[inline(always)]
                    |row| dot_i8(&quantized, &self.quantized[row * self.dim..(row + 1) * self.dim]) as f32,
                )
                .into_iter()
                .map(|(row, _)| row)
                .collect()
            } else {
                self.nearest_by_bits(query, (limit * BITS_FACTOR).max(MIN_BITS_KEEP), &allowed)
            };
            let mut rescored: Vec<(usize, f32)> = rough
                .into_iter()
                .map(|row| (row, dot_f32(query, &self.full[row * self.dim..(row + 1) * self.dim])))
                .collect();
            rescored.sort_by(|a, b| b.1.total_cmp(&a.1));
            rescored.truncate(limit);
            rescored
        };
        candidates.into_iter().map(|(row, score)| ScoredChunk { chunk_id: self.chunk_ids[row], score }).collect()
    }

    /// The `keep` allowed rows whose bits differ least from the query's (ties at the boundary
    /// broken by row order): distances into a histogram, then the rows under the cut.
    fn nearest_by_bits(&self, query: &[f32], keep: usize, allowed: &[bool]) -> Vec<usize> {
        let wanted = sign_bits(query, &self.mean);
        let mut histogram = vec![0usize; self.words * 64 + 1];
        let distances: Vec<u16> = (0..self.len())
            .map(|row| {
                if !allowed[self.documents_of_chunks[row] as usize] {
                    return u16::MAX;
                }
                let bits = &self.bits[row * self.words..(row + 1) * self.words];
                let distance: u32 = bits.iter().zip(&wanted).map(|(a, b)| (a ^ b).count_ones()).sum();
                let distance = u16::try_from(distance).unwrap_or(u16::MAX - 1);
                if let Some(slot) = histogram.get_mut(usize::from(distance)) {
                    *slot += 1;
                }
                distance
            })
            .collect();
        // the smallest distance `cut` with at least `keep` rows at or below it
        let mut cut = histogram.len();
        let mut seen = 0;
        for (distance, count) in histogram.iter().enumerate() {
            seen += count;
            if seen >= keep {
                cut = distance;
                break;
            }
        }
        let mut below: Vec<usize> = Vec::with_capacity(keep);
        let mut at_cut: Vec<usize> = Vec::new();
        for (row, distance) in distances.iter().enumerate() {
            let distance = usize::from(*distance);
            if distance < cut {
                below.push(row);
            } else if distance == cut {
                at_cut.push(row);
            }
        }
        let room = keep.saturating_sub(below.len());
        below.extend(at_cut.into_iter().take(room));
        below
    }

    /// The best `keep` rows by `score`, scanning the two halves of the index on two threads.
    fn scan(&self, keep: usize, allowed: &[bool], score: impl Fn(usize) -> f32 + Sync) -> Vec<(usize, f32)> {
        let rows = self.len();
        let threads = if rows >= 20_000 { 2 } else { 1 };
        let part = rows.div_ceil(threads);
        let best_of = |from: usize, to: usize| {
            let mut top = TopK::new(keep);
            for row in from..to {
                if allowed[self.documents_of_chunks[row] as usize] {
                    top.offer(row, score(row));
                }
            }
            top.into_sorted()
        };
        let mut merged = if threads == 1 {
            best_of(0, rows)
        } else {
            std::thread::scope(|scope| {
                let second = scope.spawn(|| best_of(part, rows));
                let mut first = best_of(0, part);
                first.extend(second.join().unwrap_or_default());
                first
            })
        };
        merged.sort_by(|a, b| b.1.total_cmp(&a.1));
        merged.truncate(keep);
        merged
    }
}

/// A unit vector's component scaled to a signed byte.
fn quantize(value: f32) -> i8 {
    (value * 127.0).round().clamp(-127.0, 127.0) as i8
}

/// One bit a dimension, set when the value is above the mean's, packed into 64-bit words.
fn sign_bits(vector: &[f32], mean: &[f32]) -> Vec<u64> {
    vector
        .chunks(64)
        .zip(mean.chunks(64))
        .map(|(values, means)| {
            values.iter().zip(means).enumerate().fold(
                0u64,
                |word, (bit, (value, mean))| {
                    if value > mean { word | (1 << bit) } else { word }
                },
            )
        })
        .collect()
}

#[inline(always)]
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    // eight independent sums let the compiler keep them in vector registers
    let mut sums = [0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for lane in 0..8 {
            sums[lane] += a[i * 8 + lane] * b[i * 8 + lane];
        }
    }
    let mut total: f32 = sums.iter().sum();
    for i in chunks * 8..a.len() {
        total += a[i] * b[i];
    }
    total
}

#[inline(always)]
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    // products summed in adjacent pairs: the shape of `pmaddwd`/`vpmaddwd` (8 or 16 multiply-adds
    // per instruction), which the compiler uses for it (AVX2 with the build's x86-64-v3 target)
    let mut sums = [0i32; 8];
    let chunks = a.len() / 16;
    for i in 0..chunks {
        let x = &a[i * 16..i * 16 + 16];
        let y = &b[i * 16..i * 16 + 16];
        for lane in 0..8 {
            sums[lane] += i32::from(x[2 * lane]) * i32::from(y[2 * lane])
                + i32::from(x[2 * lane + 1]) * i32::from(y[2 * lane + 1]);
        }
    }
    let mut total: i32 = sums.iter().sum();
    for i in chunks * 16..a.len() {
        total += i32::from(a[i]) * i32::from(b[i]);
    }
    total
}

/// The best `k` (row, score) pairs seen, kept in a small min-heap.
struct TopK {
    k: usize,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<Scored>>,
}

#[derive(PartialEq)]
struct Scored(f32, usize);

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

impl TopK {
    fn new(k: usize) -> Self {
        Self { k, heap: std::collections::BinaryHeap::with_capacity(k + 1) }
    }

    fn offer(&mut self, row: usize, score: f32) {
        if self.heap.len() < self.k {
            self.heap.push(std::cmp::Reverse(Scored(score, row)));
        } else if let Some(worst) = self.heap.peek()
            && score > worst.0.0
        {
            self.heap.pop();
            self.heap.push(std::cmp::Reverse(Scored(score, row)));
        }
    }

    fn into_sorted(self) -> Vec<(usize, f32)> {
        let mut out: Vec<(usize, f32)> = self.heap.into_iter().map(|entry| (entry.0.1, entry.0.0)).collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: Vec<f32>) -> Vec<f32> {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }

    fn document(tenant: &str) -> IndexedDocument {
        IndexedDocument { tenant: tenant.into(), project: "p".into(), source: "s".into() }
    }

    #[test]
    fn finds_the_nearest_and_respects_filters() {
        let mut builder = VectorIndexBuilder::new(1, 3, vec![(10, document("a")), (11, document("b"))]);
        builder.push(1, 10, &unit(vec![1.0, 0.0, 0.0]));
        builder.push(2, 10, &unit(vec![0.7, 0.7, 0.0]));
        builder.push(3, 11, &unit(vec![1.0, 0.01, 0.0]));
        builder.push(4, 99, &unit(vec![1.0, 0.0, 0.0])); // unknown document: skipped
        builder.push(5, 10, &[1.0]); // wrong dimension: skipped
        let index = builder.build();
        assert_eq!(index.len(), 3);
        let query = unit(vec![1.0, 0.0, 0.0]);
        for exact in [true, false] {
            let hits = index.search(&query, 2, exact, |_| true);
            assert_eq!(hits.iter().map(|h| h.chunk_id).collect::<Vec<_>>(), vec![1, 3]);
            let hits = index.search(&query, 5, exact, |d| d.tenant == "a");
            assert_eq!(hits.iter().map(|h| h.chunk_id).collect::<Vec<_>>(), vec![1, 2]);
            assert!((hits[0].score - 1.0).abs() < 1e-5);
        }
        assert!(index.search(&[1.0], 2, false, |_| true).is_empty());
    }

    #[test]
    fn chunks_pushed_out_of_order_are_found_by_id_with_their_documents() {
        let mut builder = VectorIndexBuilder::new(1, 2, vec![(10, document("a")), (11, document("b"))]);
        builder.push(30, 11, &unit(vec![0.0, 1.0]));
        builder.push(5, 10, &unit(vec![1.0, 0.0]));
        builder.push(17, 10, &unit(vec![1.0, 1.0]));
        let index = builder.build();
        assert_eq!(index.document_of(30).map(|d| d.tenant.as_str()), Some("b"));
        assert_eq!(index.document_of(5).map(|d| d.tenant.as_str()), Some("a"));
        assert!(index.document_of(6).is_none());
        assert_eq!(index.count(|d| d.tenant == "a"), 2);
        assert_eq!(index.count(|_| false), 0);
        // the vectors moved with their ids
        let hits = index.search(&unit(vec![0.0, 1.0]), 1, true, |_| true);
        assert_eq!(hits[0].chunk_id, 30);
        let hits = index.search(&unit(vec![1.0, 0.0]), 1, false, |_| true);
        assert_eq!(hits[0].chunk_id, 5);
    }

    #[test]
    fn the_quantised_scans_agree_with_the_exact_one() {
        let dim = 48;
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / u32::MAX as f32) - 0.25
        };
        // below BITS_FROM the 8-bit scan picks the candidates, from it the 1-bit pass
        for rows in [5_000, 30_000] {
            let documents = vec![(1, document("a"))];
            let mut builder = VectorIndexBuilder::new(1, dim, documents);
            for id in 0..rows {
                let v: Vec<f32> = (0..dim).map(|_| next()).collect();
                builder.push(id, 1, &unit(v));
            }
            let index = builder.build();
            let one_bit = rows as usize >= BITS_FROM;
            assert_eq!(index.bits.is_empty(), !one_bit, "{rows} vectors");
            // only the copy the search reads is kept
            assert_eq!(index.quantized.is_empty(), one_bit, "{rows} vectors");
            let mut agree = 0;
            for _ in 0..20 {
                let query = unit((0..dim).map(|_| next()).collect());
                let exact: Vec<i64> = index.search(&query, 10, true, |_| true).iter().map(|h| h.chunk_id).collect();
                let fast: Vec<i64> = index.search(&query, 10, false, |_| true).iter().map(|h| h.chunk_id).collect();
                agree += fast.iter().filter(|id| exact.contains(id)).count();
            }
            assert!(agree >= 190, "recall@10 at {rows} vectors: {agree}/200");
        }
    }

    #[test]
    fn scope_counts_are_remembered_per_filter() {
        let mut builder = VectorIndexBuilder::new(1, 2, vec![(10, document("a")), (11, document("b"))]);
        builder.push(1, 10, &unit(vec![1.0, 0.0]));
        builder.push(2, 10, &unit(vec![0.0, 1.0]));
        builder.push(3, 11, &unit(vec![1.0, 1.0]));
        let index = builder.build();
        let filter = |tenant: &str, prefix: Option<&str>| crate::knowledge::KnowledgeFilter {
            tenant: tenant.into(),
            project: None,
            source_prefix: prefix.map(Into::into),
        };
        for _ in 0..2 {
            assert_eq!(index.count_in_scope(&filter("a", None)), 2);
            assert_eq!(index.count_in_scope(&filter("b", None)), 1);
            assert_eq!(index.count_in_scope(&filter("a", Some("x"))), 0);
            assert_eq!(index.count_in_scope(&filter("c", None)), 0);
        }
        assert_eq!(index.counts.lock().map(|c| c.len()).unwrap_or(0), 4);
    }
}
