-- The bus: messages, dead letters, events, presence and circuit states (SQLite).
-- Times are INTEGER microseconds since the Unix epoch (UTC); ids are 16-byte UUIDv7 BLOBs;
-- JSON is TEXT.

CREATE TABLE agent_messages (
    id              BLOB PRIMARY KEY,
    created_at      INTEGER NOT NULL,
    tenant          TEXT NOT NULL,
    project_id      TEXT,
    service         TEXT NOT NULL,
    role            TEXT NOT NULL,
    shard           TEXT NOT NULL DEFAULT '',
    intent          TEXT NOT NULL,
    payload         TEXT NOT NULL,
    trace_id        TEXT NOT NULL,
    parent_id       BLOB,
    idempotency_key TEXT,
    priority        INTEGER NOT NULL DEFAULT 0,
    status          TEXT NOT NULL CHECK (status IN ('queued', 'claimed', 'done', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    run_at          INTEGER NOT NULL,
    claimed_by      TEXT,
    claimed_at      INTEGER,
    lease_until     INTEGER,
    done_at         INTEGER,
    last_error      TEXT,
    last_error_at   INTEGER,
    result          TEXT,
    result_url      TEXT
) WITHOUT ROWID;

CREATE UNIQUE INDEX agent_messages_idempotency ON agent_messages (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Claims share a batch fairly among tenants, found by a loose scan of this index.
CREATE INDEX agent_messages_ready ON agent_messages (service, role, tenant, priority DESC, run_at, id)
    WHERE status = 'queued';
CREATE INDEX agent_messages_leases ON agent_messages (lease_until) WHERE status = 'claimed';
CREATE INDEX agent_messages_trace ON agent_messages (trace_id);
CREATE INDEX agent_messages_finished ON agent_messages (done_at) WHERE status IN ('done', 'failed');

CREATE TABLE agent_messages_dlq (
    message_id       BLOB PRIMARY KEY,
    dead_lettered_at INTEGER NOT NULL,
    tenant           TEXT NOT NULL,
    service          TEXT NOT NULL,
    role             TEXT NOT NULL,
    intent           TEXT NOT NULL,
    reason           TEXT NOT NULL,
    last_error       TEXT,
    original         TEXT NOT NULL,
    requeued_at      INTEGER
) WITHOUT ROWID;
CREATE INDEX agent_messages_dlq_open ON agent_messages_dlq (dead_lettered_at) WHERE requeued_at IS NULL;

-- `seq` orders events by insertion.
CREATE TABLE bus_events (
    seq         INTEGER PRIMARY KEY,
    id          BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    event_type  TEXT NOT NULL,
    message_id  BLOB,
    trace_id    TEXT,
    tenant      TEXT NOT NULL,
    service     TEXT NOT NULL,
    role        TEXT NOT NULL,
    shard       TEXT NOT NULL DEFAULT '',
    reason      TEXT,
    payload     TEXT NOT NULL DEFAULT 'null'
);
CREATE INDEX bus_events_trace ON bus_events (trace_id, seq) WHERE trace_id IS NOT NULL;
CREATE INDEX bus_events_message ON bus_events (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX bus_events_created ON bus_events (created_at);

CREATE TABLE agent_presence (
    agent_id       TEXT PRIMARY KEY,
    service        TEXT NOT NULL,
    roles          TEXT NOT NULL,
    shard          TEXT NOT NULL DEFAULT '',
    host           TEXT NOT NULL,
    version        TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('online', 'offline')),
    started_at     INTEGER NOT NULL,
    last_heartbeat INTEGER NOT NULL,
    capabilities   TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE circuit_states (
    key        TEXT NOT NULL,
    agent_id   TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    open_until INTEGER,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (key, agent_id)
);
