-- Goals: what the orchestrator was asked to achieve, with its working state (plans, steps and their
-- results, budget used, approvals), so a restarted orchestrator resumes where it stopped. Every write
-- names the version it read.
CREATE TABLE goals (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    trace_id    TEXT NOT NULL,
    goal        TEXT NOT NULL,
    status      TEXT NOT NULL,
    state       TEXT NOT NULL,
    answer      TEXT,
    error       TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    version     INTEGER NOT NULL
);
CREATE INDEX goals_tenant_id ON goals (tenant, id);
CREATE INDEX goals_open ON goals (status) WHERE status NOT IN ('succeeded', 'failed', 'cancelled');
CREATE INDEX goals_trace ON goals (trace_id);
