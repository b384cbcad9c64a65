-- The HNSW graph of the knowledge embeddings holds half-precision copies of the vectors
-- (`halfvec`, pgvector 0.7 or later): a search visits thousands of vectors, and at 100k MiniLM
-- embeddings the index is 116 MB instead of 195 and the search 10 to 20 % faster. The table keeps
-- full precision, and the search re-scores its hits with it. An index made before this migration is rebuilt here,
-- once: on a large index this takes minutes (about 3 minutes for 100k vectors on two cores),
-- during which knowledge writes wait.
DO $$
DECLARE
    dim integer;
    index_oid regclass := to_regclass('knowledge_embeddings_hnsw');
BEGIN
    IF index_oid IS NOT NULL AND pg_get_indexdef(index_oid) NOT LIKE '%halfvec%' THEN
        SELECT embedding_dim INTO dim FROM knowledge_settings WHERE id = 1;
        DROP INDEX knowledge_embeddings_hnsw;
        IF dim IS NOT NULL THEN
            EXECUTE format('CREATE INDEX knowledge_embeddings_hnsw ON knowledge_embeddings
                USING hnsw ((embedding::halfvec(%s)) halfvec_cosine_ops) WITH (m = 24, ef_construction = 128)', dim);
        END IF;
    END IF;
END
$$;
