-- Secrets (the seed's RemoteEnv): values sealed with XChaCha20-Poly1305 under the master key;
-- the name is bound to its ciphertext (associated data), so a row cannot be moved to another name.
CREATE TABLE secrets (
    name        TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL,
    nonce       BYTEA NOT NULL,
    ciphertext  BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
