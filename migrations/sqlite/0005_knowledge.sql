-- The knowledge layer: documents, their chunks (with embeddings and a full-text index), and the
-- knowledge graph (entities, relations between them, mentions of entities in chunks).
-- One row of settings records the embedding model the index was built with and a generation that
-- every write bumps, so other processes know when to reload their in-memory vector index.
CREATE TABLE knowledge_settings (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    embedding_model  TEXT,
    embedding_dim    INTEGER,
    generation       INTEGER NOT NULL DEFAULT 0
);
INSERT INTO knowledge_settings (id, generation) VALUES (1, 0);

CREATE TABLE knowledge_documents (
    id            INTEGER PRIMARY KEY,
    tenant        TEXT NOT NULL,
    project       TEXT NOT NULL,
    source        TEXT NOT NULL,
    kind          TEXT NOT NULL,
    title         TEXT,
    content_hash  TEXT NOT NULL,
    bytes         INTEGER NOT NULL,
    chunk_count   INTEGER NOT NULL,
    indexed_at    INTEGER NOT NULL,
    UNIQUE (tenant, project, source)
);

CREATE TABLE knowledge_chunks (
    id            INTEGER PRIMARY KEY,
    document_id   INTEGER NOT NULL REFERENCES knowledge_documents (id) ON DELETE CASCADE,
    ordinal       INTEGER NOT NULL,
    heading       TEXT,
    text          TEXT NOT NULL,
    start_offset  INTEGER NOT NULL,
    end_offset    INTEGER NOT NULL,
    content_hash  TEXT NOT NULL,
    embedding     BLOB NOT NULL,
    UNIQUE (document_id, ordinal)
);
CREATE INDEX knowledge_chunks_hash ON knowledge_chunks (content_hash);

CREATE VIRTUAL TABLE knowledge_chunks_fts USING fts5 (
    heading, text, content = 'knowledge_chunks', content_rowid = 'id', tokenize = 'porter unicode61'
);
CREATE TRIGGER knowledge_chunks_fts_insert AFTER INSERT ON knowledge_chunks BEGIN
    INSERT INTO knowledge_chunks_fts (rowid, heading, text) VALUES (new.id, new.heading, new.text);
END;
CREATE TRIGGER knowledge_chunks_fts_delete AFTER DELETE ON knowledge_chunks BEGIN
    INSERT INTO knowledge_chunks_fts (knowledge_chunks_fts, rowid, heading, text)
        VALUES ('delete', old.id, old.heading, old.text);
END;

CREATE TABLE knowledge_entities (
    id       INTEGER PRIMARY KEY,
    tenant   TEXT NOT NULL,
    project  TEXT NOT NULL,
    kind     TEXT NOT NULL,
    name     TEXT NOT NULL,
    UNIQUE (tenant, project, kind, name)
);
CREATE INDEX knowledge_entities_name ON knowledge_entities (tenant, project, name);

CREATE TABLE knowledge_relations (
    id           INTEGER PRIMARY KEY,
    source_id    INTEGER NOT NULL REFERENCES knowledge_entities (id) ON DELETE CASCADE,
    target_id    INTEGER NOT NULL REFERENCES knowledge_entities (id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    document_id  INTEGER NOT NULL REFERENCES knowledge_documents (id) ON DELETE CASCADE
);
CREATE INDEX knowledge_relations_source ON knowledge_relations (source_id, kind);
CREATE INDEX knowledge_relations_target ON knowledge_relations (target_id, kind);
CREATE INDEX knowledge_relations_document ON knowledge_relations (document_id);

CREATE TABLE knowledge_mentions (
    chunk_id   INTEGER NOT NULL REFERENCES knowledge_chunks (id) ON DELETE CASCADE,
    entity_id  INTEGER NOT NULL REFERENCES knowledge_entities (id) ON DELETE CASCADE,
    PRIMARY KEY (chunk_id, entity_id)
) WITHOUT ROWID;
CREATE INDEX knowledge_mentions_entity ON knowledge_mentions (entity_id);
