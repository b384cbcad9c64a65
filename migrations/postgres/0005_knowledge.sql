-- The knowledge layer: documents, their chunks (with a full-text index), and the knowledge graph
-- (entities, relations between them, mentions of entities in chunks).
-- Embeddings live in knowledge_embeddings, created by the store when an index first records its
-- embedding model: its vector column has the model's dimension and needs the pgvector extension,
-- which the bus alone does not.
CREATE TABLE knowledge_settings (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    embedding_model  TEXT,
    embedding_dim    BIGINT,
    generation       BIGINT NOT NULL DEFAULT 0
);
INSERT INTO knowledge_settings (id, generation) VALUES (1, 0);

CREATE TABLE knowledge_documents (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant        TEXT NOT NULL,
    project       TEXT NOT NULL,
    source        TEXT NOT NULL,
    kind          TEXT NOT NULL,
    title         TEXT,
    content_hash  TEXT NOT NULL,
    bytes         BIGINT NOT NULL,
    chunk_count   BIGINT NOT NULL,
    indexed_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant, project, source)
);

CREATE TABLE knowledge_chunks (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_id   BIGINT NOT NULL REFERENCES knowledge_documents (id) ON DELETE CASCADE,
    ordinal       BIGINT NOT NULL,
    heading       TEXT,
    text          TEXT NOT NULL,
    start_offset  BIGINT NOT NULL,
    end_offset    BIGINT NOT NULL,
    content_hash  TEXT NOT NULL,
    tsv           TSVECTOR GENERATED ALWAYS AS
                      (to_tsvector('english', coalesce(heading, '') || ' ' || text)) STORED,
    UNIQUE (document_id, ordinal)
);
CREATE INDEX knowledge_chunks_hash ON knowledge_chunks (content_hash);
CREATE INDEX knowledge_chunks_tsv ON knowledge_chunks USING gin (tsv);

CREATE TABLE knowledge_entities (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant   TEXT NOT NULL,
    project  TEXT NOT NULL,
    kind     TEXT NOT NULL,
    name     TEXT NOT NULL,
    UNIQUE (tenant, project, kind, name)
);
CREATE INDEX knowledge_entities_name ON knowledge_entities (tenant, project, name);

CREATE TABLE knowledge_relations (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_id    BIGINT NOT NULL REFERENCES knowledge_entities (id) ON DELETE CASCADE,
    target_id    BIGINT NOT NULL REFERENCES knowledge_entities (id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    document_id  BIGINT NOT NULL REFERENCES knowledge_documents (id) ON DELETE CASCADE
);
CREATE INDEX knowledge_relations_source ON knowledge_relations (source_id, kind);
CREATE INDEX knowledge_relations_target ON knowledge_relations (target_id, kind);
CREATE INDEX knowledge_relations_document ON knowledge_relations (document_id);

CREATE TABLE knowledge_mentions (
    chunk_id   BIGINT NOT NULL REFERENCES knowledge_chunks (id) ON DELETE CASCADE,
    entity_id  BIGINT NOT NULL REFERENCES knowledge_entities (id) ON DELETE CASCADE,
    PRIMARY KEY (chunk_id, entity_id)
);
CREATE INDEX knowledge_mentions_entity ON knowledge_mentions (entity_id);
