//! The knowledge tables on SQLite: documents written whole in one `BEGIN IMMEDIATE` transaction,
//! FTS5 for full text, and the in-process vector index, reloaded when the generation moves.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::{QueryBuilder, Row, Sqlite};

use super::{SqliteBus, at, us};
use crate::Error;
use crate::error::db;
use crate::knowledge::{
    Direction, Edge, Entity, KnowledgeFilter, KnowledgeScope, KnowledgeStats, NewDocument, PRUNE_FROM_CHUNKS,
    ScoredChunk, StoredChunk, StoredDocument, bytes_vector, check_model, checked_graph, limits, query_terms,
    required_terms, vector_bytes,
};
use crate::vector_index::{IndexedDocument, VectorIndex, VectorIndexBuilder};

/// An FTS5 query matching any of `terms` (each quoted, so none is read as an operator).
fn fts_expression(terms: &[String]) -> String {
    terms.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(" OR ")
}

/// Rows per multi-row insert (SQLite allows 32766 bound values).
const INSERT_BATCH: usize = 500;

/// The cached vector index of this process.
#[derive(Debug, Default)]
pub(crate) struct VectorCache {
    current: tokio::sync::RwLock<Option<Arc<VectorIndex>>>,
    loading: tokio::sync::Mutex<()>,
}

fn push_filter(builder: &mut QueryBuilder<Sqlite>, filter: &KnowledgeFilter) {
    builder.push(" AND d.tenant = ").push_bind(filter.tenant.clone());
    if let Some(project) = &filter.project {
        builder.push(" AND d.project = ").push_bind(project.clone());
    }
    if let Some(prefix) = &filter.source_prefix {
        builder.push(" AND substr(d.source, 1, ").push_bind(prefix.chars().count() as i64);
        builder.push(") = ").push_bind(prefix.clone());
    }
}

fn document_from(row: &sqlx::sqlite::SqliteRow) -> Result<StoredDocument, sqlx::Error> {
    Ok(StoredDocument {
        id: row.try_get("id")?,
        scope: KnowledgeScope { tenant: row.try_get("tenant")?, project: row.try_get("project")? },
        source: row.try_get("source")?,
        kind: row.try_get("kind")?,
        title: row.try_get("title")?,
        content_hash: row.try_get("content_hash")?,
        bytes: row.try_get("bytes")?,
        chunk_count: row.try_get("chunk_count")?,
        indexed_at: at(row.try_get("indexed_at")?),
    })
}

impl SqliteBus {
    async fn kb_recorded_model(&self) -> Result<(Option<(String, i64)>, i64), Error> {
        let row = sqlx::query("SELECT embedding_model, embedding_dim, generation FROM knowledge_settings WHERE id = 1")
            .fetch_one(&self.reader)
            .await
            .map_err(db("reading the knowledge settings"))?;
        let model: Option<String> = row.try_get(0).map_err(db("reading the knowledge settings"))?;
        let dim: Option<i64> = row.try_get(1).map_err(db("reading the knowledge settings"))?;
        let generation: i64 = row.try_get(2).map_err(db("reading the knowledge settings"))?;
        Ok((model.zip(dim), generation))
    }

    pub(crate) async fn kb_analyze(&self) -> Result<(), Error> {
        sqlx::query("PRAGMA optimize")
            .execute(&self.writer)
            .await
            .map_err(db("refreshing the knowledge tables' statistics"))?;
        Ok(())
    }

    pub(crate) async fn kb_prepare(&self, model: &str, dim: usize, reset: bool) -> Result<(), Error> {
        let (recorded, _) = self.kb_recorded_model().await?;
        if !reset && check_model(recorded, model, dim)? {
            return Ok(());
        }
        let mut tx = self.begin("preparing the knowledge index").await?;
        if reset {
            for table in ["knowledge_mentions", "knowledge_relations", "knowledge_entities", "knowledge_documents"] {
                sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
                    .execute(&mut *tx)
                    .await
                    .map_err(db("clearing the knowledge index"))?;
            }
        }
        sqlx::query(
            "UPDATE knowledge_settings SET embedding_model = ?, embedding_dim = ?, generation = generation + 1 WHERE id = 1",
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
             FROM knowledge_documents WHERE tenant = ? AND project = ? ORDER BY source",
        )
        .bind(&scope.tenant)
        .bind(&scope.project)
        .fetch_all(&self.reader)
        .await
        .map_err(db("listing knowledge documents"))?;
        rows.iter().map(document_from).collect::<Result<_, _>>().map_err(db("reading knowledge documents"))
    }

    pub(crate) async fn kb_embeddings_by_hash(&self, hashes: &[String]) -> Result<HashMap<String, Vec<f32>>, Error> {
        let mut found = HashMap::new();
        for batch in hashes.chunks(INSERT_BATCH) {
            let mut builder = QueryBuilder::<Sqlite>::new(
                "SELECT content_hash, embedding FROM knowledge_chunks WHERE content_hash IN (",
            );
            let mut list = builder.separated(", ");
            for hash in batch {
                list.push_bind(hash.clone());
            }
            builder.push(") GROUP BY content_hash");
            let rows = builder.build().fetch_all(&self.reader).await.map_err(db("looking up known embeddings"))?;
            for row in rows {
                let hash: String = row.try_get(0).map_err(db("reading known embeddings"))?;
                let bytes: Vec<u8> = row.try_get(1).map_err(db("reading known embeddings"))?;
                found.insert(hash, bytes_vector(&bytes));
            }
        }
        Ok(found)
    }

    pub(crate) async fn kb_put_document(&self, document: NewDocument) -> Result<i64, Error> {
        let (recorded, _) = self.kb_recorded_model().await?;
        let Some((_, dim)) = recorded else {
            return Err(Error::InvalidKnowledge {
                detail: "the index has no embedding model yet: prepare it before writing documents".into(),
            });
        };
        let (relations, mentions) = checked_graph(&document, usize::try_from(dim).unwrap_or(0))?;
        let now = us(self.now());
        let mut tx = self.begin("writing a knowledge document").await?;
        let scope = &document.scope;
        let stale_entities = delete_document(&mut tx, scope, &document.source).await?;

        let document_id: i64 = sqlx::query_scalar(
            "INSERT INTO knowledge_documents (tenant, project, source, kind, title, content_hash, bytes, chunk_count, indexed_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&scope.tenant)
        .bind(&scope.project)
        .bind(&document.source)
        .bind(&document.kind)
        .bind(&document.title)
        .bind(&document.content_hash)
        .bind(document.bytes)
        .bind(document.chunks.len() as i64)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(db("inserting a knowledge document"))?;

        let mut chunk_ids: Vec<i64> = vec![0; document.chunks.len()];
        for (batch_index, batch) in document.chunks.chunks(INSERT_BATCH).enumerate() {
            let mut builder = QueryBuilder::<Sqlite>::new(
                "INSERT INTO knowledge_chunks (document_id, ordinal, heading, text, start_offset, end_offset, content_hash, embedding) ",
            );
            builder.push_values(batch.iter().enumerate(), |mut row, (offset, chunk)| {
                row.push_bind(document_id)
                    .push_bind((batch_index * INSERT_BATCH + offset) as i64)
                    .push_bind(chunk.heading.clone())
                    .push_bind(chunk.text.clone())
                    .push_bind(chunk.start)
                    .push_bind(chunk.end)
                    .push_bind(chunk.content_hash.clone())
                    .push_bind(vector_bytes(&chunk.embedding));
            });
            builder.push(" RETURNING id, ordinal");
            let rows = builder.build().fetch_all(&mut *tx).await.map_err(db("inserting knowledge chunks"))?;
            for row in rows {
                let id: i64 = row.try_get(0).map_err(db("reading chunk ids"))?;
                let ordinal: i64 = row.try_get(1).map_err(db("reading chunk ids"))?;
                if let Some(slot) = usize::try_from(ordinal).ok().and_then(|o| chunk_ids.get_mut(o)) {
                    *slot = id;
                }
            }
        }

        let mut entity_ids: Vec<i64> = vec![0; document.entities.len()];
        for (batch_index, batch) in document.entities.chunks(INSERT_BATCH).enumerate() {
            let mut builder =
                QueryBuilder::<Sqlite>::new("INSERT INTO knowledge_entities (tenant, project, kind, name) ");
            builder.push_values(batch, |mut row, entity| {
                row.push_bind(scope.tenant.clone())
                    .push_bind(scope.project.clone())
                    .push_bind(entity.kind.clone())
                    .push_bind(entity.name.clone());
            });
            builder.push(" ON CONFLICT (tenant, project, kind, name) DO UPDATE SET name = excluded.name RETURNING id, kind, name");
            let rows = builder.build().fetch_all(&mut *tx).await.map_err(db("recording knowledge entities"))?;
            let mut by_key: HashMap<(String, String), i64> = HashMap::with_capacity(rows.len());
            for row in rows {
                let id: i64 = row.try_get(0).map_err(db("reading entity ids"))?;
                let kind: String = row.try_get(1).map_err(db("reading entity ids"))?;
                let name: String = row.try_get(2).map_err(db("reading entity ids"))?;
                by_key.insert((kind, name), id);
            }
            for (offset, entity) in batch.iter().enumerate() {
                let id = by_key
                    .get(&(entity.kind.clone(), entity.name.clone()))
                    .copied()
                    .ok_or(Error::Internal { what: "an upserted entity was not returned" })?;
                entity_ids[batch_index * INSERT_BATCH + offset] = id;
            }
        }

        for batch in relations.chunks(INSERT_BATCH) {
            let mut builder = QueryBuilder::<Sqlite>::new(
                "INSERT INTO knowledge_relations (source_id, target_id, kind, document_id) ",
            );
            builder.push_values(batch, |mut row, relation| {
                row.push_bind(entity_ids[relation.source])
                    .push_bind(entity_ids[relation.target])
                    .push_bind(relation.kind.clone())
                    .push_bind(document_id);
            });
            builder.build().execute(&mut *tx).await.map_err(db("recording knowledge relations"))?;
        }
        let mentions: HashSet<(i64, i64)> =
            mentions.iter().map(|m| (chunk_ids[m.chunk], entity_ids[m.entity])).collect();
        let mentions: Vec<(i64, i64)> = mentions.into_iter().collect();
        for batch in mentions.chunks(INSERT_BATCH) {
            let mut builder = QueryBuilder::<Sqlite>::new("INSERT INTO knowledge_mentions (chunk_id, entity_id) ");
            builder.push_values(batch, |mut row, (chunk, entity)| {
                row.push_bind(*chunk).push_bind(*entity);
            });
            builder.build().execute(&mut *tx).await.map_err(db("recording knowledge mentions"))?;
        }
        let kept: HashSet<i64> = entity_ids.iter().copied().collect();
        let stale: Vec<i64> = stale_entities.into_iter().filter(|id| !kept.contains(id)).collect();
        delete_orphans(&mut tx, &stale).await?;
        bump_generation(&mut tx).await?;
        tx.commit().await.map_err(db("committing a knowledge document"))?;
        Ok(document_id)
    }

    pub(crate) async fn kb_delete_documents(&self, scope: &KnowledgeScope, sources: &[String]) -> Result<u64, Error> {
        if sources.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin("deleting knowledge documents").await?;
        let mut deleted = 0;
        for source in sources {
            let stale = delete_document(&mut tx, scope, source).await?;
            delete_orphans(&mut tx, &stale).await?;
            deleted += 1;
        }
        bump_generation(&mut tx).await?;
        tx.commit().await.map_err(db("committing deleted knowledge documents"))?;
        Ok(deleted)
    }

    pub(crate) async fn kb_fulltext(
        &self,
        filter: &KnowledgeFilter,
        query: &str,
        limit: usize,
        prune: bool,
    ) -> Result<Vec<ScoredChunk>, Error> {
        let terms = query_terms(query);
        let limit = limit.min(limits::MAX_CANDIDATES);
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let all = fts_expression(&terms);
        // the vector index knows every chunk's document: it sizes the filter's share of the index
        // and filters hits without a join
        let index = self.kb_vector_index().await?;
        let total = index.len();
        let required = if prune && terms.len() >= 2 && total as u64 >= PRUNE_FROM_CHUNKS {
            let counts = self.kb_term_counts(&terms).await?;
            required_terms(&counts, total as u64, limit).map(|required| fts_expression(&required))
        } else {
            None
        };
        let admitted =
            |document: &IndexedDocument| filter.admits(&document.tenant, &document.project, &document.source);
        let in_scope = index.count_in_scope(filter);
        if in_scope == 0 && total > 0 {
            return Ok(Vec::new());
        }
        // When the filter keeps most of the index, rank without the join and filter the best hits
        // in memory, asking for enough that `limit` pass; a chunk newer than the index, or too few
        // passing, takes the joined query.
        if total > 0 && in_scope * 2 >= total {
            let fetch = (limit * total).div_ceil(in_scope).min(limits::MAX_CANDIDATES * 2);
            let rows = self.kb_fulltext_rows(None, &all, required.as_deref(), fetch).await?;
            let complete = rows.len() < fetch;
            let mut hits = Vec::with_capacity(limit);
            let mut unknown = false;
            for hit in rows {
                match index.document_of(hit.chunk_id) {
                    Some(document) if admitted(document) => hits.push(hit),
                    Some(_) => {}
                    None => unknown = true,
                }
            }
            if !unknown && (hits.len() >= limit || complete) {
                hits.truncate(limit);
                return Ok(hits);
            }
        }
        self.kb_fulltext_rows(Some(filter), &all, required.as_deref(), limit).await
    }

    /// How many chunks hold each term (one statement for all of them).
    async fn kb_term_counts(&self, terms: &[String]) -> Result<Vec<(String, u64)>, Error> {
        let mut builder = QueryBuilder::<Sqlite>::new("SELECT ");
        let mut columns = builder.separated(", ");
        for term in terms {
            columns.push("(SELECT count(*) FROM knowledge_chunks_fts WHERE knowledge_chunks_fts MATCH ");
            columns.push_bind_unseparated(fts_expression(std::slice::from_ref(term)));
            columns.push_unseparated(")");
        }
        let row = builder.build().fetch_one(&self.reader).await.map_err(db("counting full-text terms"))?;
        terms
            .iter()
            .enumerate()
            .map(|(i, term)| Ok((term.clone(), row.try_get::<i64, _>(i)?.max(0) as u64)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db("counting full-text terms"))
    }

    /// The best chunks for `all` by BM25 (heading weighted twice), only among chunks that match
    /// `required` when given, and of documents passing `filter` when given.
    async fn kb_fulltext_rows(
        &self,
        filter: Option<&KnowledgeFilter>,
        all: &str,
        required: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ScoredChunk>, Error> {
        let mut builder = QueryBuilder::<Sqlite>::new(
            "SELECT f.rowid, -bm25(knowledge_chunks_fts, 2.0, 1.0) AS score FROM knowledge_chunks_fts f",
        );
        if filter.is_some() {
            // CROSS JOIN keeps the full-text index the outer loop: one index query, not one per chunk
            builder.push(
                " CROSS JOIN knowledge_chunks c ON c.id = f.rowid CROSS JOIN knowledge_documents d ON d.id = c.document_id",
            );
        }
        builder.push(" WHERE knowledge_chunks_fts MATCH ").push_bind(all.to_owned());
        if let Some(required) = required {
            // `+` keeps the planner from running the full-text query once per candidate: the
            // candidates become a lookup table and BM25 is computed only for chunks in it
            builder
                .push(" AND +f.rowid IN (SELECT rowid FROM knowledge_chunks_fts WHERE knowledge_chunks_fts MATCH ")
                .push_bind(required.to_owned())
                .push(")");
        }
        if let Some(filter) = filter {
            push_filter(&mut builder, filter);
        }
        builder.push(" ORDER BY score DESC LIMIT ").push_bind(limit as i64);
        let rows = builder.build().fetch_all(&self.reader).await.map_err(db("searching the full-text index"))?;
        rows.iter()
            .map(|row| Ok(ScoredChunk { chunk_id: row.try_get(0)?, score: row.try_get::<f64, _>(1)? as f32 }))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db("reading full-text hits"))
    }

    pub(crate) async fn kb_vector(
        &self,
        filter: &KnowledgeFilter,
        vector: &[f32],
        limit: usize,
        exact: bool,
    ) -> Result<Vec<ScoredChunk>, Error> {
        let index = self.kb_vector_index().await?;
        if index.dim() > 0 && vector.len() != index.dim() {
            return Err(crate::knowledge::query_dimension_mismatch(vector.len(), index.dim()));
        }
        let filter = filter.clone();
        let vector = vector.to_vec();
        let limit = limit.min(limits::MAX_CANDIDATES);
        tokio::task::spawn_blocking(move || {
            index.search(&vector, limit, exact, |document| {
                filter.admits(&document.tenant, &document.project, &document.source)
            })
        })
        .await
        .map_err(|_| Error::Internal { what: "the vector search task stopped" })
    }

    /// The vector index of the current generation, loaded when another writer moved it.
    async fn kb_vector_index(&self) -> Result<Arc<VectorIndex>, Error> {
        let (recorded, generation) = self.kb_recorded_model().await?;
        if let Some(index) = self.vectors.current.read().await.as_ref()
            && index.generation == generation
        {
            return Ok(index.clone());
        }
        let _loading = self.vectors.loading.lock().await;
        if let Some(index) = self.vectors.current.read().await.as_ref()
            && index.generation == generation
        {
            return Ok(index.clone());
        }
        let dim = recorded.map(|(_, dim)| usize::try_from(dim).unwrap_or(0)).unwrap_or(0);
        let documents = sqlx::query("SELECT id, tenant, project, source FROM knowledge_documents")
            .fetch_all(&self.reader)
            .await
            .map_err(db("loading documents for the vector index"))?;
        let documents = documents
            .iter()
            .map(|row| {
                Ok((
                    row.try_get(0)?,
                    IndexedDocument { tenant: row.try_get(1)?, project: row.try_get(2)?, source: row.try_get(3)? },
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(db("reading documents for the vector index"))?;
        let mut builder = VectorIndexBuilder::new(generation, dim, documents);
        let mut rows = sqlx::query("SELECT id, document_id, embedding FROM knowledge_chunks").fetch(&self.reader);
        use futures_util::TryStreamExt;
        while let Some(row) = rows.try_next().await.map_err(db("loading embeddings for the vector index"))? {
            let id: i64 = row.try_get(0).map_err(db("reading embeddings"))?;
            let document: i64 = row.try_get(1).map_err(db("reading embeddings"))?;
            let bytes: &[u8] = row.try_get(2).map_err(db("reading embeddings"))?;
            builder.push(id, document, &bytes_vector(bytes));
        }
        let index = Arc::new(builder.build());
        tracing::debug!(generation, vectors = index.len(), "loaded the vector index");
        *self.vectors.current.write().await = Some(index.clone());
        Ok(index)
    }

    pub(crate) async fn kb_chunks(&self, tenant: &str, ids: &[i64]) -> Result<Vec<StoredChunk>, Error> {
        let mut chunks = Vec::with_capacity(ids.len());
        for batch in ids.chunks(INSERT_BATCH) {
            let mut builder = QueryBuilder::<Sqlite>::new(
                "SELECT c.id, c.document_id, d.source, d.title, d.tenant, d.project, c.ordinal, c.heading, c.text,
                        c.start_offset, c.end_offset
                 FROM knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id
                 WHERE d.tenant = ",
            );
            builder.push_bind(tenant.to_owned()).push(" AND c.id IN (");
            let mut list = builder.separated(", ");
            for id in batch {
                list.push_bind(*id);
            }
            builder.push(")");
            let rows = builder.build().fetch_all(&self.reader).await.map_err(db("reading knowledge chunks"))?;
            for row in rows {
                chunks.push(chunk_from(&row).map_err(db("reading knowledge chunks"))?);
            }
        }
        Ok(chunks)
    }

    pub(crate) async fn kb_find_entities(
        &self,
        filter: &KnowledgeFilter,
        name: &str,
        kind: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entity>, Error> {
        let mut builder = QueryBuilder::<Sqlite>::new("SELECT id, kind, name FROM knowledge_entities WHERE tenant = ");
        builder.push_bind(filter.tenant.clone());
        if let Some(project) = &filter.project {
            builder.push(" AND project = ").push_bind(project.clone());
        }
        builder.push(" AND name = ").push_bind(name.to_owned());
        if let Some(kind) = kind {
            builder.push(" AND kind = ").push_bind(kind.to_owned());
        }
        builder.push(" ORDER BY id LIMIT ").push_bind(limit.min(limits::MAX_CANDIDATES) as i64);
        let rows = builder.build().fetch_all(&self.reader).await.map_err(db("finding entities"))?;
        rows.iter().map(entity_from).collect::<Result<_, _>>().map_err(db("reading entities"))
    }

    pub(crate) async fn kb_entities(&self, tenant: &str, ids: &[i64]) -> Result<Vec<Entity>, Error> {
        let mut entities = Vec::with_capacity(ids.len());
        for batch in ids.chunks(INSERT_BATCH) {
            let mut builder =
                QueryBuilder::<Sqlite>::new("SELECT id, kind, name FROM knowledge_entities WHERE tenant = ");
            builder.push_bind(tenant.to_owned()).push(" AND id IN (");
            let mut list = builder.separated(", ");
            for id in batch {
                list.push_bind(*id);
            }
            builder.push(")");
            let rows = builder.build().fetch_all(&self.reader).await.map_err(db("reading entities"))?;
            for row in &rows {
                entities.push(entity_from(row).map_err(db("reading entities"))?);
            }
        }
        Ok(entities)
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
        let mut edges = Vec::new();
        for batch in ids.chunks(INSERT_BATCH) {
            let mut builder = QueryBuilder::<Sqlite>::new("");
            let sides: &[(&str, &str)] = match direction {
                Direction::Out => &[("r.source_id", "r.target_id")],
                Direction::In => &[("r.target_id", "r.source_id")],
                Direction::Both => &[("r.source_id", "r.target_id"), ("r.target_id", "r.source_id")],
            };
            for (position, (from, _)) in sides.iter().enumerate() {
                if position > 0 {
                    builder.push(" UNION ALL ");
                }
                builder.push(format!(
                    // CROSS JOIN: relations by their entity index first, then the tenant check
                    "SELECT r.source_id, r.target_id, r.kind, r.document_id FROM knowledge_relations r
                     CROSS JOIN knowledge_documents d ON d.id = r.document_id WHERE {from} IN ("
                ));
                let mut list = builder.separated(", ");
                for id in batch {
                    list.push_bind(*id);
                }
                builder.push(") AND d.tenant = ").push_bind(tenant.to_owned());
                if !kinds.is_empty() {
                    builder.push(" AND r.kind IN (");
                    let mut list = builder.separated(", ");
                    for kind in kinds {
                        list.push_bind(kind.clone());
                    }
                    builder.push(")");
                }
            }
            builder.push(" LIMIT ").push_bind((limit - edges.len().min(limit)) as i64);
            let rows = builder.build().fetch_all(&self.reader).await.map_err(db("following relations"))?;
            for row in &rows {
                edges.push(edge_from(row).map_err(db("reading relations"))?);
            }
            if edges.len() >= limit {
                break;
            }
        }
        edges.truncate(limit);
        Ok(edges)
    }

    pub(crate) async fn kb_chunk_entities(&self, chunk_ids: &[i64]) -> Result<Vec<(i64, i64)>, Error> {
        self.kb_pairs("SELECT chunk_id, entity_id FROM knowledge_mentions WHERE chunk_id IN (", chunk_ids, None).await
    }

    pub(crate) async fn kb_entity_chunks(&self, entity_ids: &[i64], limit: usize) -> Result<Vec<(i64, i64)>, Error> {
        self.kb_pairs(
            "SELECT entity_id, chunk_id FROM knowledge_mentions WHERE entity_id IN (",
            entity_ids,
            Some(limit),
        )
        .await
    }

    async fn kb_pairs(&self, head: &'static str, ids: &[i64], limit: Option<usize>) -> Result<Vec<(i64, i64)>, Error> {
        let mut pairs = Vec::new();
        for batch in ids.chunks(INSERT_BATCH) {
            let mut builder = QueryBuilder::<Sqlite>::new(head);
            let mut list = builder.separated(", ");
            for id in batch {
                list.push_bind(*id);
            }
            builder.push(")");
            if let Some(limit) = limit {
                builder.push(" LIMIT ").push_bind(limit as i64);
            }
            let rows = builder.build().fetch_all(&self.reader).await.map_err(db("reading mentions"))?;
            for row in rows {
                pairs.push((
                    row.try_get(0).map_err(db("reading mentions"))?,
                    row.try_get(1).map_err(db("reading mentions"))?,
                ));
            }
        }
        Ok(pairs)
    }

    pub(crate) async fn kb_stats(&self, filter: &KnowledgeFilter) -> Result<KnowledgeStats, Error> {
        let mut builder = QueryBuilder::<Sqlite>::new(
            "SELECT count(*), coalesce(sum(d.chunk_count), 0) FROM knowledge_documents d WHERE 1 = 1",
        );
        push_filter(&mut builder, filter);
        let row = builder.build().fetch_one(&self.reader).await.map_err(db("counting knowledge documents"))?;
        let documents: i64 = row.try_get(0).map_err(db("counting knowledge documents"))?;
        let chunks: i64 = row.try_get(1).map_err(db("counting knowledge documents"))?;
        let mut builder = QueryBuilder::<Sqlite>::new("SELECT count(*) FROM knowledge_entities d WHERE d.tenant = ");
        builder.push_bind(filter.tenant.clone());
        if let Some(project) = &filter.project {
            builder.push(" AND d.project = ").push_bind(project.clone());
        }
        let entities: i64 =
            builder.build_query_scalar().fetch_one(&self.reader).await.map_err(db("counting entities"))?;
        let mut builder = QueryBuilder::<Sqlite>::new(
            "SELECT count(*) FROM knowledge_relations r JOIN knowledge_documents d ON d.id = r.document_id WHERE 1 = 1",
        );
        push_filter(&mut builder, filter);
        let relations: i64 =
            builder.build_query_scalar().fetch_one(&self.reader).await.map_err(db("counting relations"))?;
        let (recorded, _) = self.kb_recorded_model().await?;
        Ok(KnowledgeStats {
            documents,
            chunks,
            entities,
            relations,
            embedding_model: recorded.as_ref().map(|(model, _)| model.clone()),
            embedding_dim: recorded.map(|(_, dim)| dim),
        })
    }
}

fn chunk_from(row: &sqlx::sqlite::SqliteRow) -> Result<StoredChunk, sqlx::Error> {
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
}

fn entity_from(row: &sqlx::sqlite::SqliteRow) -> Result<Entity, sqlx::Error> {
    Ok(Entity { id: row.try_get(0)?, kind: row.try_get(1)?, name: row.try_get(2)? })
}

fn edge_from(row: &sqlx::sqlite::SqliteRow) -> Result<Edge, sqlx::Error> {
    Ok(Edge { source: row.try_get(0)?, target: row.try_get(1)?, kind: row.try_get(2)?, document_id: row.try_get(3)? })
}

/// Deletes one document (its chunks, mentions and relations go with it); returns the entities it
/// touched, which may now be orphans.
async fn delete_document(tx: &mut super::Tx, scope: &KnowledgeScope, source: &str) -> Result<Vec<i64>, Error> {
    let id: Option<i64> =
        sqlx::query_scalar("SELECT id FROM knowledge_documents WHERE tenant = ? AND project = ? AND source = ?")
            .bind(&scope.tenant)
            .bind(&scope.project)
            .bind(source)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db("finding a knowledge document"))?;
    let Some(id) = id else { return Ok(Vec::new()) };
    let touched: Vec<i64> = sqlx::query_scalar(
        "SELECT source_id FROM knowledge_relations WHERE document_id = ?1
         UNION SELECT target_id FROM knowledge_relations WHERE document_id = ?1
         UNION SELECT m.entity_id FROM knowledge_mentions m JOIN knowledge_chunks c ON c.id = m.chunk_id WHERE c.document_id = ?1",
    )
    .bind(id)
    .fetch_all(&mut **tx)
    .await
    .map_err(db("finding the entities of a knowledge document"))?;
    sqlx::query("DELETE FROM knowledge_documents WHERE id = ?")
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(db("deleting a knowledge document"))?;
    Ok(touched)
}

/// Removes entities that no relation and no mention refers to any more.
async fn delete_orphans(tx: &mut super::Tx, candidates: &[i64]) -> Result<(), Error> {
    for batch in candidates.chunks(INSERT_BATCH) {
        let mut builder = QueryBuilder::<Sqlite>::new("DELETE FROM knowledge_entities WHERE id IN (");
        let mut list = builder.separated(", ");
        for id in batch {
            list.push_bind(*id);
        }
        builder.push(
            ") AND NOT EXISTS (SELECT 1 FROM knowledge_mentions m WHERE m.entity_id = knowledge_entities.id)
              AND NOT EXISTS (SELECT 1 FROM knowledge_relations r WHERE r.source_id = knowledge_entities.id)
              AND NOT EXISTS (SELECT 1 FROM knowledge_relations r WHERE r.target_id = knowledge_entities.id)",
        );
        builder.build().execute(&mut **tx).await.map_err(db("removing orphaned entities"))?;
    }
    Ok(())
}

async fn bump_generation(tx: &mut super::Tx) -> Result<(), Error> {
    sqlx::query("UPDATE knowledge_settings SET generation = generation + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await
        .map_err(db("moving the knowledge generation"))
        .map(drop)
}
