-- The bus: messages, dead letters, events, presence and circuit states (PostgreSQL).

-- UUIDv7 (48-bit unix ms, version 7, variant 10, random rest) for ids made inside statements.
CREATE OR REPLACE FUNCTION cogo_uuid_v7() RETURNS uuid AS $$
  SELECT encode(
    set_bit(set_bit(
      overlay(uuid_send(gen_random_uuid())
              PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
              FROM 1 FOR 6),
      52, 1), 53, 1),
    'hex')::uuid
$$ LANGUAGE sql VOLATILE;

CREATE TABLE agent_messages (
    id              uuid PRIMARY KEY,
    created_at      timestamptz NOT NULL,
    tenant          text NOT NULL,
    project_id      text,
    service         text NOT NULL,
    role            text NOT NULL,
    shard           text NOT NULL DEFAULT '',
    intent          text NOT NULL,
    payload         jsonb NOT NULL,
    trace_id        text NOT NULL,
    parent_id       uuid,
    idempotency_key text,
    priority        integer NOT NULL DEFAULT 0,
    status          text NOT NULL CHECK (status IN ('queued', 'claimed', 'done', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL,
    run_at          timestamptz NOT NULL,
    claimed_by      text,
    claimed_at      timestamptz,
    lease_until     timestamptz,
    done_at         timestamptz,
    last_error      text,
    last_error_at   timestamptz,
    result          jsonb,
    result_url      text
);

-- A duplicate enqueue returns the existing row.
CREATE UNIQUE INDEX agent_messages_idempotency ON agent_messages (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Hot path: only the ready part of the table is indexed for claiming, by tenant so claims can
-- share a batch fairly among tenants (and find the tenants with work by a loose index scan).
CREATE INDEX agent_messages_ready ON agent_messages (service, role, tenant, priority DESC, run_at, id)
    WHERE status = 'queued';
CREATE INDEX agent_messages_leases ON agent_messages (lease_until) WHERE status = 'claimed';
CREATE INDEX agent_messages_trace ON agent_messages (trace_id);
CREATE INDEX agent_messages_finished ON agent_messages (done_at) WHERE status IN ('done', 'failed');

ALTER TABLE agent_messages SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02);

CREATE TABLE agent_messages_dlq (
    message_id       uuid PRIMARY KEY,
    dead_lettered_at timestamptz NOT NULL,
    tenant           text NOT NULL,
    service          text NOT NULL,
    role             text NOT NULL,
    intent           text NOT NULL,
    reason           text NOT NULL,
    last_error       text,
    original         jsonb NOT NULL,
    requeued_at      timestamptz
);
CREATE INDEX agent_messages_dlq_open ON agent_messages_dlq (dead_lettered_at) WHERE requeued_at IS NULL;

-- Append-only, partitioned by day so retention is a cheap DROP of old partitions. `seq` orders
-- events by insertion (UUIDv7 ids made in one millisecond do not).
CREATE SEQUENCE bus_events_seq;
CREATE TABLE bus_events (
    seq         bigint NOT NULL DEFAULT nextval('bus_events_seq'),
    id          uuid NOT NULL,
    created_at  timestamptz NOT NULL,
    event_type  text NOT NULL,
    message_id  uuid,
    trace_id    text,
    tenant      text NOT NULL,
    service     text NOT NULL,
    role        text NOT NULL,
    shard       text NOT NULL DEFAULT '',
    reason      text,
    payload     jsonb NOT NULL DEFAULT 'null',
    PRIMARY KEY (seq, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE bus_events_default PARTITION OF bus_events DEFAULT;
CREATE INDEX bus_events_trace ON bus_events (trace_id, seq) WHERE trace_id IS NOT NULL;
CREATE INDEX bus_events_message ON bus_events (message_id) WHERE message_id IS NOT NULL;

-- Creates the daily partitions of bus_events from `from_day` for `days` days (idempotent).
CREATE OR REPLACE FUNCTION cogo_ensure_event_partitions(from_day date, days integer) RETURNS void AS $$
DECLARE
    day date;
    name text;
BEGIN
    FOR i IN 0..days - 1 LOOP
        day := from_day + i;
        name := 'bus_events_' || to_char(day, 'YYYYMMDD');
        IF to_regclass(name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF bus_events FOR VALUES FROM (%L) TO (%L)',
                           name, day::timestamptz, (day + 1)::timestamptz);
        END IF;
    END LOOP;
END
$$ LANGUAGE plpgsql;

CREATE TABLE agent_presence (
    agent_id       text PRIMARY KEY,
    service        text NOT NULL,
    roles          jsonb NOT NULL,
    shard          text NOT NULL DEFAULT '',
    host           text NOT NULL,
    version        text NOT NULL,
    status         text NOT NULL CHECK (status IN ('online', 'offline')),
    started_at     timestamptz NOT NULL,
    last_heartbeat timestamptz NOT NULL,
    capabilities   jsonb NOT NULL DEFAULT '{}'
);

-- The last known state of each breaker in each process, so summaries cover every process.
CREATE TABLE circuit_states (
    key        text NOT NULL,
    agent_id   text NOT NULL,
    state      text NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    open_until timestamptz,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (key, agent_id)
);
