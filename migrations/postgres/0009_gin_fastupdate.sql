-- Full-text searches read the chunks' GIN index directly. With `fastupdate` on (PostgreSQL's
-- default), new entries collect in a pending list that every search scans in full until a vacuum
-- or an autoanalyze merges it: after writing 100k chunks the list held 341 pages, and a search spent
-- 7.9 ms of its 16.5 there (0.5 ms once merged). Writes now update the index itself (tens of
-- microseconds a chunk, against milliseconds to embed it), and the list left by earlier writes is
-- merged here, once.
ALTER INDEX knowledge_chunks_tsv SET (fastupdate = off);
SELECT gin_clean_pending_list('knowledge_chunks_tsv'::regclass);
