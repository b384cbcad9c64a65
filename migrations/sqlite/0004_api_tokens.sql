-- API tokens scoped to one tenant: only a SHA-256 of the secret part is kept; the token is shown once.
CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    name        TEXT NOT NULL,
    hash        BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
