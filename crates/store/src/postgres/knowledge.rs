//! The knowledge tables on PostgreSQL: documents written whole in one transaction with array
//! inserts, `tsvector` full text, and pgvector's HNSW index for vectors (its table created with the
//! model's dimension when the index first records its model).

use std::collections::{HashMap, HashSet};

use pgvector::Vector;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};

use super::PgBus;
use crate::Error;
use crate::error::db;
use crate::knowledge::{
    COMMON_SHARE, Direction, Edge, Entity, KnowledgeFilter, KnowledgeScope, KnowledgeStats, NewDocument,
    PRUNE_FROM_CHUNKS, ScoredChunk, StoredChunk, StoredDocument, check_model, checked_graph, limits, query_terms,
};

/// The advisory lock that serialises preparing the knowledge index across processes.
const PREPARE_LOCK: i64 = 0x636f_676f_6b62;

type Tx = sqlx::Transaction<'static, Postgres>;

/// BM25 on PostgreSQL, part 1: the table's chunk count (the planner's estimate; counted when the
/// table was never analyzed) and statistics of its most common lexemes,
/// then the query's words (bound next, a `text[]`), each with its `tsquery` and an estimate of
/// its chunk count (the least frequent of its lexemes; one not among the most common is taken at
/// the list's lowest frequency). Stop words drop out.
const BM25_WORDS: &str = "WITH stats AS MATERIALIZED (
    SELECT s.most_common_elems::text::text[] AS elems, s.most_common_elem_freqs AS freqs,
           (CASE WHEN c.reltuples >= 0 THEN c.reltuples ELSE (SELECT count(*) FROM knowledge_chunks) END)::float8 AS total
    FROM pg_class c LEFT JOIN pg_stats s
      ON s.schemaname = current_schema() AND s.tablename = 'knowledge_chunks' AND s.attname = 'tsv'
    WHERE c.oid = 'knowledge_chunks'::regclass
), words AS MATERIALIZED (
    SELECT u.i, q, st.total,
           coalesce((SELECT min(coalesce(st.freqs[array_position(st.elems, l)], st.freqs[cardinality(st.elems) + 1]))
                     FROM unnest(tsvector_to_array(to_tsvector('english', u.w))) l), 0)::float8 * st.total AS df
    FROM stats st, unnest(";
/// Part 2: the words' statistics over the whole query.
const BM25_PLAN: &str = "::text[]) WITH ORDINALITY AS u(w, i), plainto_tsquery('english', u.w) q
    WHERE numnode(q) > 0
), plan AS (
    SELECT w.*, count(*) OVER () AS n_words, bool_and(w.df > w.total * ";
/// Part 3 (after the share of chunks that makes a word common): which words select candidates.
/// Pruning (the conditions follow, bound) leaves a word out when it is common and the rarer words
/// before it could already fill the results.
const BM25_PRUNE: &str = ") OVER () AS all_common,
           coalesce(sum(w.df) OVER (ORDER BY w.df, w.i ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS reach
    FROM words w
), t AS MATERIALIZED (
    SELECT i, q, df, total, NOT (";
/// Part 4: the candidates, chunks with any selecting word (the filter follows).
const BM25_CANDIDATES: &str = ") AS selects FROM plan
), m AS MATERIALIZED (
    SELECT c.id, c.tsv FROM knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id
    WHERE c.tsv @@ (SELECT string_agg(q::text, ' | ')::tsquery FROM t WHERE selects)";
/// Part 5: each candidate's words, each word's inverse document frequency, the scores and
/// whether a word was pruned (the limit follows).
const BM25_SCORE: &str = "
), hits AS MATERIALIZED (
    SELECT m.id, t.i, length(m.tsv)::float8 AS dl FROM m JOIN t ON m.tsv @@ t.q
), idf AS MATERIALIZED (
    SELECT t.i, ln(1 + (greatest(t.total, x.n) - x.n + 0.5) / (x.n + 0.5)) AS w
    FROM t LEFT JOIN (SELECT i, count(*)::float8 AS n FROM hits GROUP BY i) c USING (i)
    CROSS JOIN LATERAL (SELECT CASE WHEN t.selects THEN coalesce(c.n, 0) ELSE t.df END AS n) x
), avgdl AS (SELECT greatest(avg(dl), 1) AS a FROM hits)
SELECT h.id, sum(idf.w * 2.2 / (1 + 1.2 * (0.25 + 0.75 * h.dl / avgdl.a)))::real AS score,
       (SELECT bool_or(NOT selects) FROM t) AS pruned
FROM hits h JOIN idf USING (i), avgdl
GROUP BY h.id ORDER BY score DESC, h.id LIMIT ";

fn push_filter(builder: &mut QueryBuilder<Postgres>, filter: &KnowledgeFilter) {
    builder.push(" AND d.tenant = ").push_bind(filter.tenant.clone());
    if let Some(project) = &filter.project {
        builder.push(" AND d.project = ").push_bind(project.clone());
    }
    if let Some(prefix) = &filter.source_prefix {
        builder.push(" AND starts_with(d.source, ").push_bind(prefix.clone()).push(")");
    }
}

fn is_missing_extension(err: &sqlx::Error) -> bool {
    match err {
        // undefined_file (no control file), feature_not_supported, undefined_object
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("58P01" | "0A000" | "42704")),
        _ => false,
    }
}

impl PgBus {
    async fn kb_recorded_model(&self) -> Result<Option<(String, i64)>, Error> {
        let row = sqlx::query("SELECT embedding_model, embedding_dim FROM knowledge_settings WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(db("reading the knowledge settings"))?;
        let model: Option<String> = row.try_get(0).map_err(db("reading the knowledge settings"))?;
        let dim: Option<i64> = row.try_get(1).map_err(db("reading the knowledge settings"))?;
        Ok(model.zip(dim))
    }

    async fn kb_dim(&self) -> Result<usize, Error> {
        match self.kb_recorded_model().await? {
            Some((_, dim)) => Ok(usize::try_from(dim).unwrap_or(0)),
            None => Err(Error::InvalidKnowledge {
                detail: "the index has no embedding model yet: prepare it before writing documents".into(),
            }),
        }
    }

    pub(crate) async fn kb_analyze(&self) -> Result<(), Error> {
        sqlx::query(
            "ANALYZE knowledge_documents, knowledge_chunks, knowledge_entities, knowledge_relations, knowledge_mentions",
        )
        .execute(&self.pool)
        .await
        .map_err(db("refreshing the knowledge tables' statistics"))?;
        Ok(())
    }

    pub(crate) async fn kb_prepare(&self, model: &str, dim: usize, reset: bool) -> Result<(), Error> {
        if !reset && check_model(self.kb_recorded_model().await?, model, dim)? {
            return Ok(());
        }
        if dim == 0 || dim > 16_000 {
            return Err(Error::InvalidKnowledge { detail: format!("embedding dimension {dim} is outside 1..16000") });
        }
        let mut tx = self.pool.begin().await.map_err(db("preparing the knowledge index"))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PREPARE_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db("locking the knowledge settings"))?;
        sqlx::query("CREATE EXTENSION IF NOT EXISTS vector").execute(&mut *tx).await.map_err(|err| {
            if is_missing_extension(&err) {
                Error::NoVectorExtension { source: err }
            } else {
                db("enabling pgvector")(err)
            }
        })?;
        let recorded: Option<(Option<String>, Option<i64>)> =
            sqlx::query_as("SELECT embedding_model, embedding_dim FROM knowledge_settings WHERE id = 1 FOR UPDATE")
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("reading the knowledge settings"))?;
        let recorded = recorded.and_then(|(model, dim)| model.zip(dim));
        if !reset && check_model(recorded.clone(), model, dim)? {
            return tx.commit().await.map_err(db("committing the knowledge settings"));
        }
        if reset || recorded.is_some_and(|(_, recorded_dim)| recorded_dim != dim as i64) {
            sqlx::query("DROP TABLE IF EXISTS knowledge_embeddings")
                .execute(&mut *tx)
                .await
                .map_err(db("dropping the old embeddings"))?;
            for table in ["knowledge_documents", "knowledge_entities"] {
                sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
                    .execute(&mut *tx)
                    .await
                    .map_err(db("clearing the knowledge index"))?;
            }
        }
        let create = format!(
            "CREATE TABLE IF NOT EXISTS knowledge_embeddings (
                 chunk_id   BIGINT PRIMARY KEY REFERENCES knowledge_chunks (id) ON DELETE CASCADE,
                 embedding  vector({dim}) NOT NULL
             )"
        );
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&mut *tx)
            .await
            .map_err(db("creating the embeddings table"))?;
        // the graph holds half-precision copies: half the bytes a visit reads (at 100k MiniLM
        // embeddings 116 MB instead of 195, searches 10 to 20 % faster); hits are re-scored in
        // full precision
        let index = format!(
            "CREATE INDEX IF NOT EXISTS knowledge_embeddings_hnsw ON knowledge_embeddings
             USING hnsw ((embedding::halfvec({dim})) halfvec_cosine_ops) WITH (m = 24, ef_construction = 128)"
        );
        sqlx::query(sqlx::AssertSqlSafe(index)).execute(&mut *tx).await.map_err(db("creating the HNSW index"))?;
        sqlx::query(
            "UPDATE knowledge_settings SET embedding_model = $1, embedding_dim = $2, generation = generation + 1 WHERE id = 1",
        )
        .bind(model)
        .bind(dim as i64)
        .execute(&mut *tx)
        .await
        .map_err(db("recording the embedding model"))?;
        tx.commit().await.map_err(db("committing the knowledge settings"))
    }

    pub(crate) async fn kb_documents(&self, scope: &KnowledgeScope) -> Result<Vec<StoredDocument>, Error> {
        let rows = sqlx::query(
            "SELECT id, tenant, project, source, kind, title, content_hash, bytes, chunk_count, indexed_at
             FROM knowledge_documents WHERE tenant = $1 AND project = $2 ORDER BY source",
        )
        .bind(&scope.tenant)
        .bind(&scope.project)
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing knowledge documents"))?;
        rows.iter()
            .map(|row| {
                Ok(StoredDocument {
                    id: row.try_get("id")?,
                    scope: KnowledgeScope { tenant: row.try_get("tenant")?, project: row.try_get("project")? },
                    source: row.try_get("source")?,
                    kind: row.try_get("kind")?,
                    title: row.try_get("title")?,
                    content_hash: row.try_get("content_hash")?,
                    bytes: row.try_get("bytes")?,
                    chunk_count: row.try_get("chunk_count")?,
                    indexed_at: row.try_get("indexed_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db("reading knowledge documents"))
    }

    pub(crate) async fn kb_embeddings_by_hash(&self, hashes: &[String]) -> Result<HashMap<String, Vec<f32>>, Error> {
        if hashes.is_empty() || self.kb_recorded_model().await?.is_none() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query(
            "SELECT DISTINCT ON (c.content_hash) c.content_hash, e.embedding
             FROM knowledge_chunks c JOIN knowledge_embeddings e ON e.chunk_id = c.id
             WHERE c.content_hash = ANY($1)",
        )
        .bind(hashes)
        .fetch_all(&self.pool)
        .await
        .map_err(db("looking up known embeddings"))?;
        let mut found = HashMap::with_capacity(rows.len());
        for row in rows {
            let hash: String = row.try_get(0).map_err(db("reading known embeddings"))?;
            let vector: Vector = row.try_get(1).map_err(db("reading known embeddings"))?;
            found.insert(hash, vector.to_vec());
        }
        Ok(found)
    }

    pub(crate) async fn kb_put_document(&self, document: NewDocument) -> Result<i64, Error> {
        let dim = self.kb_dim().await?;
        let (relations, mentions) = checked_graph(&document, dim)?;
        let scope = &document.scope;
        let mut tx = self.pool.begin().await.map_err(db("writing a knowledge document"))?;
        let stale_entities = delete_document(&mut tx, scope, &document.source).await?;
        let document_id: i64 = sqlx::query_scalar(
            "INSERT INTO knowledge_documents (tenant, project, source, kind, title, content_hash, bytes, chunk_count, indexed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(&scope.tenant)
        .bind(&scope.project)
        .bind(&document.source)
        .bind(&document.kind)
        .bind(&document.title)
        .bind(&document.content_hash)
        .bind(document.bytes)
        .bind(document.chunks.len() as i64)
        .bind(self.now())
        .fetch_one(&mut *tx)
        .await
        .map_err(db("inserting a knowledge document"))?;

        let ordinals: Vec<i64> = (0..document.chunks.len() as i64).collect();
        let headings: Vec<Option<String>> = document.chunks.iter().map(|c| c.heading.clone()).collect();
        let texts: Vec<String> = document.chunks.iter().map(|c| c.text.clone()).collect();
        let starts: Vec<i64> = document.chunks.iter().map(|c| c.start).collect();
        let ends: Vec<i64> = document.chunks.iter().map(|c| c.end).collect();
        let hashes: Vec<String> = document.chunks.iter().map(|c| c.content_hash.clone()).collect();
        let rows = sqlx::query(
            "INSERT INTO knowledge_chunks (document_id, ordinal, heading, text, start_offset, end_offset, content_hash)
             SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[])
             RETURNING id, ordinal",
        )
        .bind(document_id)
        .bind(&ordinals)
        .bind(&headings)
        .bind(&texts)
        .bind(&starts)
        .bind(&ends)
        .bind(&hashes)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("inserting knowledge chunks"))?;
        let mut chunk_ids: Vec<i64> = vec![0; document.chunks.len()];
        for row in rows {
            let id: i64 = row.try_get(0).map_err(db("reading chunk ids"))?;
            let ordinal: i64 = row.try_get(1).map_err(db("reading chunk ids"))?;
            if let Some(slot) = usize::try_from(ordinal).ok().and_then(|o| chunk_ids.get_mut(o)) {
                *slot = id;
            }
        }
        let vectors: Vec<Vector> = document.chunks.iter().map(|c| Vector::from(c.embedding.clone())).collect();
        sqlx::query(
            "INSERT INTO knowledge_embeddings (chunk_id, embedding) SELECT * FROM UNNEST($1::bigint[], $2::vector[])",
        )
        .bind(&chunk_ids)
        .bind(&vectors)
        .execute(&mut *tx)
        .await
        .map_err(db("inserting embeddings"))?;

        let kinds: Vec<String> = document.entities.iter().map(|e| e.kind.clone()).collect();
        let names: Vec<String> = document.entities.iter().map(|e| e.name.clone()).collect();
        let rows = sqlx::query(
            "INSERT INTO knowledge_entities (tenant, project, kind, name)
             SELECT $1, $2, * FROM UNNEST($3::text[], $4::text[])
             ON CONFLICT (tenant, project, kind, name) DO UPDATE SET name = EXCLUDED.name
             RETURNING id, kind, name",
        )
        .bind(&scope.tenant)
        .bind(&scope.project)
        .bind(&kinds)
        .bind(&names)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("recording knowledge entities"))?;
        let mut by_key: HashMap<(String, String), i64> = HashMap::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.try_get(0).map_err(db("reading entity ids"))?;
            by_key.insert(
                (row.try_get(1).map_err(db("reading entity ids"))?, row.try_get(2).map_err(db("reading entity ids"))?),
                id,
            );
        }
        let entity_ids: Vec<i64> = document
            .entities
            .iter()
            .map(|e| by_key.get(&(e.kind.clone(), e.name.clone())).copied())
            .collect::<Option<_>>()
            .ok_or(Error::Internal { what: "an upserted entity was not returned" })?;

        let sources: Vec<i64> = relations.iter().map(|r| entity_ids[r.source]).collect();
        let targets: Vec<i64> = relations.iter().map(|r| entity_ids[r.target]).collect();
        let relation_kinds: Vec<String> = relations.iter().map(|r| r.kind.clone()).collect();
        sqlx::query(
            "INSERT INTO knowledge_relations (source_id, target_id, kind, document_id)
             SELECT *, $4 FROM UNNEST($1::bigint[], $2::bigint[], $3::text[])",
        )
        .bind(&sources)
        .bind(&targets)
        .bind(&relation_kinds)
        .bind(document_id)
        .execute(&mut *tx)
        .await
        .map_err(db("recording knowledge relations"))?;
        let mentions: HashSet<(i64, i64)> =
            mentions.iter().map(|m| (chunk_ids[m.chunk], entity_ids[m.entity])).collect();
        let (mention_chunks, mention_entities): (Vec<i64>, Vec<i64>) = mentions.into_iter().unzip();
        sqlx::query(
            "INSERT INTO knowledge_mentions (chunk_id, entity_id) SELECT * FROM UNNEST($1::bigint[], $2::bigint[])",
        )
        .bind(&mention_chunks)
        .bind(&mention_entities)
        .execute(&mut *tx)
        .await
        .map_err(db("recording knowledge mentions"))?;
        let kept: HashSet<i64> = entity_ids.iter().copied().collect();
        let stale: Vec<i64> = stale_entities.into_iter().filter(|id| !kept.contains(id)).collect();
        delete_orphans(&mut tx, &stale).await?;
        tx.commit().await.map_err(db("committing a knowledge document"))?;
        Ok(document_id)
    }

    pub(crate) async fn kb_delete_documents(&self, scope: &KnowledgeScope, sources: &[String]) -> Result<u64, Error> {
        if sources.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await.map_err(db("deleting knowledge documents"))?;
        let mut deleted = 0;
        for source in sources {
            let stale = delete_document(&mut tx, scope, source).await?;
            delete_orphans(&mut tx, &stale).await?;
            deleted += 1;
        }
        tx.commit().await.map_err(db("committing deleted knowledge documents"))?;
        Ok(deleted)
    }

    /// Ranks chunks by BM25 (k1 1.2, b 0.75; a word counts once a chunk, chunk length in
    /// lexemes) over the chunks that have any query word, computed in one statement.
    ///
    /// Each query word's chunk count comes from the candidates themselves, exact for every word
    /// that selects candidates; a word left out of the selection (`prune`, a large index, a word
    /// in more than 1 % of the chunks by the column's statistics of most common lexemes) is
    /// counted from those statistics. A pruned search that finds fewer than `limit` chunks runs
    /// again unpruned, as on SQLite. `ts_rank_cd` is not used: it has no inverse document
    /// frequency, and computing its cover density cost two thirds of the search's time.
    pub(crate) async fn kb_fulltext(
        &self,
        filter: &KnowledgeFilter,
        query: &str,
        limit: usize,
        prune: bool,
    ) -> Result<Vec<ScoredChunk>, Error> {
        let terms = query_terms(query);
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let limit = limit.min(limits::MAX_CANDIDATES);
        let (hits, pruned) = self.kb_bm25(filter, &terms, limit, prune).await?;
        if pruned && hits.len() < limit {
            return Ok(self.kb_bm25(filter, &terms, limit, false).await?.0);
        }
        Ok(hits)
    }

    async fn kb_bm25(
        &self,
        filter: &KnowledgeFilter,
        terms: &[String],
        limit: usize,
        prune: bool,
    ) -> Result<(Vec<ScoredChunk>, bool), Error> {
        let mut builder = QueryBuilder::<Postgres>::new(BM25_WORDS);
        builder.push_bind(terms.to_vec());
        builder.push(BM25_PLAN).push_bind(COMMON_SHARE).push(BM25_PRUNE);
        builder.push_bind(prune).push(" AND n_words >= 2 AND total >= ").push_bind(PRUNE_FROM_CHUNKS as f64);
        builder.push(" AND NOT all_common AND df > total * ").push_bind(COMMON_SHARE);
        builder.push(" AND reach >= ").push_bind(limit as f64);
        builder.push(BM25_CANDIDATES);
        push_filter(&mut builder, filter);
        builder.push(BM25_SCORE).push_bind(limit as i64);
        let rows = builder.build().fetch_all(&self.pool).await.map_err(db("searching the full-text index"))?;
        // no rows: whether a word was pruned is unknown, so the search counts as pruned
        let pruned = match rows.first() {
            Some(row) => row.try_get::<Option<bool>, _>(2).map_err(db("reading full-text hits"))?.unwrap_or(false),
            None => prune,
        };
        let hits = rows
            .iter()
            .map(|row| Ok(ScoredChunk { chunk_id: row.try_get(0)?, score: row.try_get(1)? }))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db("reading full-text hits"))?;
        Ok((hits, pruned))
    }

    pub(crate) async fn kb_vector(
        &self,
        filter: &KnowledgeFilter,
        vector: &[f32],
        limit: usize,
        exact: bool,
    ) -> Result<Vec<ScoredChunk>, Error> {
        // An iterative scan keeps walking the graph until enough hits pass the filter, but its
        // bookkeeping made every walk about a quarter slower (100k vectors: 9.2-10.6 ms against
        // 7.4-8.2 at ef_search 200). A filter by project or source is likely selective and starts
        // iterative; a search of a whole tenant walks plainly first and again iteratively only
        // when the tenant's share of the graph's candidates came back short.
        let selective = filter.project.is_some() || filter.source_prefix.is_some();
        let first = self.kb_vector_once(filter, vector, limit, exact, selective && !exact).await;
        let wanted = limit.min(limits::MAX_CANDIDATES);
        let result = match first {
            Ok(hits) if hits.len() < wanted && !selective && !exact => {
                self.kb_vector_once(filter, vector, limit, exact, true).await
            }
            other => other,
        };
        match result {
            Ok(hits) if hits.len() >= wanted => Ok(hits),
            // the statement names the query's dimension rather than reading the index's first
            // (one round trip less); a short answer (over no rows, a query of the wrong dimension
            // fails nothing) or a failure is checked against the recorded model
            Ok(hits) => {
                self.kb_check_dim(vector.len()).await?;
                Ok(hits)
            }
            Err(err) => {
                self.kb_check_dim(vector.len()).await?;
                Err(err)
            }
        }
    }

    /// An error when a query of `query_dim` dimensions cannot search the index (or it has none).
    async fn kb_check_dim(&self, query_dim: usize) -> Result<(), Error> {
        let dim = self.kb_dim().await?;
        if query_dim != dim {
            return Err(crate::knowledge::query_dimension_mismatch(query_dim, dim));
        }
        Ok(())
    }

    async fn kb_vector_once(
        &self,
        filter: &KnowledgeFilter,
        vector: &[f32],
        limit: usize,
        exact: bool,
        iterative: bool,
    ) -> Result<Vec<ScoredChunk>, Error> {
        let dim = vector.len();
        let limit = limit.min(limits::MAX_CANDIDATES);
        // candidates the graph walks: several times the results wanted, at least 200 (on 100k
        // MiniLM embeddings of short texts, the m 24 / ef_construction 128 graph at ef_search 200
        // gave recall@10 0.96; at 150 0.94, at 100 0.90); set with the transaction's BEGIN, in one
        // round trip, with the scan's kind. The plan is always the graph's scan, so the prepared
        // statement's generic plan serves every query (planning each one for its vector took
        // 0.8 ms, the generic plan's check 0.1)
        let ef_search = (limit * 4).clamp(200, 1000);
        let scan = if iterative { "relaxed_order" } else { "off" };
        let mut tx = self
            .pool
            .begin_with(sqlx::AssertSqlSafe(format!(
                "BEGIN; SET LOCAL hnsw.ef_search = {ef_search}; SET LOCAL hnsw.iterative_scan = {scan}; \
                 SET LOCAL plan_cache_mode = force_generic_plan"
            )))
            .await
            .map_err(db("searching vectors"))?;
        // the query vector is bound first, so it is $1 wherever the text names it; the index
        // orders by half-precision distance, so it yields a margin of extra results (10, or a
        // fifth of those wanted) and the full-precision scores pick and order the best
        let order = if exact {
            "(e.embedding <=> $1) + 0".to_owned()
        } else {
            format!("e.embedding::halfvec({dim}) <=> $1::halfvec({dim})")
        };
        let mut builder =
            QueryBuilder::<Postgres>::new("SELECT chunk_id, score FROM (SELECT e.chunk_id, (1 - (e.embedding <=> ");
        builder.push_bind(Vector::from(vector.to_vec()));
        builder.push(
            "))::real AS score FROM knowledge_embeddings e
             JOIN knowledge_chunks c ON c.id = e.chunk_id JOIN knowledge_documents d ON d.id = c.document_id
             WHERE true",
        );
        push_filter(&mut builder, filter);
        builder.push(format!(" ORDER BY {order} LIMIT ")).push_bind((limit + (limit / 5).max(10)) as i64);
        builder.push(") best ORDER BY score DESC, chunk_id LIMIT ").push_bind(limit as i64);
        let rows = builder.build().fetch_all(&mut *tx).await.map_err(db("searching vectors"))?;
        tx.commit().await.map_err(db("finishing the vector search"))?;
        let mut hits = rows
            .iter()
            .map(|row| Ok(ScoredChunk { chunk_id: row.try_get(0)?, score: row.try_get(1)? }))
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(db("reading vector hits"))?;
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(hits)
    }

    pub(crate) async fn kb_chunks(&self, tenant: &str, ids: &[i64]) -> Result<Vec<StoredChunk>, Error> {
        let rows = sqlx::query(
            "SELECT c.id, c.document_id, d.source, d.title, d.tenant, d.project, c.ordinal, c.heading, c.text,
                    c.start_offset, c.end_offset
             FROM knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id
             WHERE d.tenant = $1 AND c.id = ANY($2)",
        )
        .bind(tenant)
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading knowledge chunks"))?;
        rows.iter()
            .map(|row| {
                Ok(StoredChunk {
                    id: row.try_get(0)?,
                    document_id: row.try_get(1)?,
                    source: row.try_get(2)?,
                    title: row.try_get(3)?,
                    scope: KnowledgeScope { tenant: row.try_get(4)?, project: row.try_get(5)? },
                    ordinal: row.try_get(6)?,
                    heading: row.try_get(7)?,
                    text: row.try_get(8)?,
                    start: row.try_get(9)?,
                    end: row.try_get(10)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db("reading knowledge chunks"))
    }

    pub(crate) async fn kb_find_entities(
        &self,
        filter: &KnowledgeFilter,
        name: &str,
        kind: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entity>, Error> {
        let rows = sqlx::query(
            "SELECT id, kind, name FROM knowledge_entities
             WHERE tenant = $1 AND ($2::text IS NULL OR project = $2) AND name = $3 AND ($4::text IS NULL OR kind = $4)
             ORDER BY id LIMIT $5",
        )
        .bind(&filter.tenant)
        .bind(&filter.project)
        .bind(name)
        .bind(kind)
        .bind(limit.min(limits::MAX_CANDIDATES) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db("finding entities"))?;
        rows.iter().map(entity_from).collect::<Result<_, _>>().map_err(db("reading entities"))
    }

    pub(crate) async fn kb_entities(&self, tenant: &str, ids: &[i64]) -> Result<Vec<Entity>, Error> {
        let rows = sqlx::query("SELECT id, kind, name FROM knowledge_entities WHERE tenant = $1 AND id = ANY($2)")
            .bind(tenant)
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading entities"))?;
        rows.iter().map(entity_from).collect::<Result<_, _>>().map_err(db("reading entities"))
    }

    pub(crate) async fn kb_edges(
        &self,
        tenant: &str,
        ids: &[i64],
        direction: Direction,
        kinds: &[String],
        limit: usize,
    ) -> Result<Vec<Edge>, Error> {
        if ids.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let (outgoing, incoming) = match direction {
            Direction::Out => (true, false),
            Direction::In => (false, true),
            Direction::Both => (true, true),
        };
        let rows = sqlx::query(
            "SELECT r.source_id, r.target_id, r.kind, r.document_id FROM knowledge_relations r
             JOIN knowledge_documents d ON d.id = r.document_id
             WHERE $3 AND r.source_id = ANY($1) AND d.tenant = $2 AND (cardinality($5::text[]) = 0 OR r.kind = ANY($5))
             UNION ALL
             SELECT r.source_id, r.target_id, r.kind, r.document_id FROM knowledge_relations r
             JOIN knowledge_documents d ON d.id = r.document_id
             WHERE $4 AND r.target_id = ANY($1) AND d.tenant = $2 AND (cardinality($5::text[]) = 0 OR r.kind = ANY($5))
             LIMIT $6",
        )
        .bind(ids)
        .bind(tenant)
        .bind(outgoing)
        .bind(incoming)
        .bind(kinds)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db("following relations"))?;
        rows.iter()
            .map(|row| {
                Ok(Edge {
                    source: row.try_get(0)?,
                    target: row.try_get(1)?,
                    kind: row.try_get(2)?,
                    document_id: row.try_get(3)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db("reading relations"))
    }

    pub(crate) async fn kb_chunk_entities(&self, chunk_ids: &[i64]) -> Result<Vec<(i64, i64)>, Error> {
        sqlx::query_as("SELECT chunk_id, entity_id FROM knowledge_mentions WHERE chunk_id = ANY($1)")
            .bind(chunk_ids)
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading mentions"))
    }

    pub(crate) async fn kb_entity_chunks(&self, entity_ids: &[i64], limit: usize) -> Result<Vec<(i64, i64)>, Error> {
        sqlx::query_as("SELECT entity_id, chunk_id FROM knowledge_mentions WHERE entity_id = ANY($1) LIMIT $2")
            .bind(entity_ids)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading mentions"))
    }

    pub(crate) async fn kb_stats(&self, filter: &KnowledgeFilter) -> Result<KnowledgeStats, Error> {
        let mut builder = QueryBuilder::<Postgres>::new(
            "SELECT count(*), coalesce(sum(d.chunk_count), 0)::bigint,
                    (SELECT count(*) FROM knowledge_relations r WHERE r.document_id = ANY(array_agg(d.id)))
             FROM knowledge_documents d WHERE true",
        );
        push_filter(&mut builder, filter);
        let row = builder.build().fetch_one(&self.pool).await.map_err(db("counting knowledge documents"))?;
        let entities: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM knowledge_entities WHERE tenant = $1 AND ($2::text IS NULL OR project = $2)",
        )
        .bind(&filter.tenant)
        .bind(&filter.project)
        .fetch_one(&self.pool)
        .await
        .map_err(db("counting entities"))?;
        let recorded = self.kb_recorded_model().await?;
        Ok(KnowledgeStats {
            documents: row.try_get(0).map_err(db("counting knowledge documents"))?,
            chunks: row.try_get(1).map_err(db("counting knowledge documents"))?,
            relations: row.try_get(2).map_err(db("counting knowledge documents"))?,
            entities,
            embedding_model: recorded.as_ref().map(|(model, _)| model.clone()),
            embedding_dim: recorded.map(|(_, dim)| dim),
        })
    }
}

fn entity_from(row: &PgRow) -> Result<Entity, sqlx::Error> {
    Ok(Entity { id: row.try_get(0)?, kind: row.try_get(1)?, name: row.try_get(2)? })
}

async fn delete_document(tx: &mut Tx, scope: &KnowledgeScope, source: &str) -> Result<Vec<i64>, Error> {
    let id: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM knowledge_documents WHERE tenant = $1 AND project = $2 AND source = $3 FOR UPDATE",
    )
    .bind(&scope.tenant)
    .bind(&scope.project)
    .bind(source)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db("finding a knowledge document"))?;
    let Some(id) = id else { return Ok(Vec::new()) };
    let touched: Vec<i64> = sqlx::query_scalar(
        "SELECT source_id FROM knowledge_relations WHERE document_id = $1
         UNION SELECT target_id FROM knowledge_relations WHERE document_id = $1
         UNION SELECT m.entity_id FROM knowledge_mentions m JOIN knowledge_chunks c ON c.id = m.chunk_id WHERE c.document_id = $1",
    )
    .bind(id)
    .fetch_all(&mut **tx)
    .await
    .map_err(db("finding the entities of a knowledge document"))?;
    sqlx::query("DELETE FROM knowledge_documents WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(db("deleting a knowledge document"))?;
    Ok(touched)
}

async fn delete_orphans(tx: &mut Tx, candidates: &[i64]) -> Result<(), Error> {
    if candidates.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "DELETE FROM knowledge_entities e WHERE e.id = ANY($1)
           AND NOT EXISTS (SELECT 1 FROM knowledge_mentions m WHERE m.entity_id = e.id)
           AND NOT EXISTS (SELECT 1 FROM knowledge_relations r WHERE r.source_id = e.id)
           AND NOT EXISTS (SELECT 1 FROM knowledge_relations r WHERE r.target_id = e.id)",
    )
    .bind(candidates)
    .execute(&mut **tx)
    .await
    .map_err(db("removing orphaned entities"))
    .map(drop)
}
