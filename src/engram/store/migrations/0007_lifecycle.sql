-- Lifecycle: per-tenant retention policy, the archive catalogue and erasure receipts.

-- A tenant's retention policy; without a row the configured defaults apply.
CREATE TABLE retention_policies (
    tenant_id         text NOT NULL,
    retention_days    integer CHECK (retention_days >= 1),      -- NULL: keep sessions forever
    action            text NOT NULL CHECK (action IN ('archive', 'delete')),
    fact_cleanup_days integer CHECK (fact_cleanup_days >= 1),   -- NULL: keep invalidated facts
    updated_at        timestamptz NOT NULL DEFAULT now(),
    updated_by        text NOT NULL,
    PRIMARY KEY (tenant_id)
);
SELECT engram_isolate_tenants('retention_policies');

-- One row per archival of a session. 'writing' is the checkpoint of an attempt in
-- progress (its blobs may be partial); it becomes 'archived' in the same transaction
-- that deletes the session's rows, so a crash leaves either the rows or the archive.
CREATE TABLE archives (
    tenant_id       text NOT NULL,
    archive_id      uuid NOT NULL,
    session_id      text NOT NULL,
    user_id         text,
    state           text NOT NULL DEFAULT 'writing'
                    CHECK (state IN ('writing', 'archived', 'restored')),
    store           text NOT NULL,
    prefix          text NOT NULL,
    counts          jsonb NOT NULL DEFAULT jsonb_build_object(),
    bytes           bigint NOT NULL DEFAULT 0,
    manifest_sha256 text,
    started_at      timestamptz NOT NULL DEFAULT now(),
    archived_at     timestamptz,
    restored_at     timestamptz,
    PRIMARY KEY (tenant_id, archive_id)
);
CREATE INDEX archives_session_idx ON archives (tenant_id, session_id, started_at);
CREATE INDEX archives_user_idx ON archives (tenant_id, user_id);
CREATE UNIQUE INDEX archives_writing_idx ON archives (tenant_id, session_id)
    WHERE state = 'writing';
SELECT engram_isolate_tenants('archives');

-- Proof that a user's data was erased; it outlives the erasure. It keeps the user id
-- (the data subject must be named to answer "was I erased?") and its SHA-256, so that
-- an operator may blank the id later and still match a receipt by hash.
CREATE TABLE erasure_receipts (
    tenant_id      text NOT NULL,
    receipt_id     uuid NOT NULL,
    user_id        text,
    user_id_sha256 text NOT NULL,
    state          text NOT NULL CHECK (state IN ('running', 'completed')),
    requested_by   text NOT NULL,
    counts         jsonb NOT NULL DEFAULT jsonb_build_object(),
    started_at     timestamptz NOT NULL DEFAULT now(),
    completed_at   timestamptz,
    PRIMARY KEY (tenant_id, receipt_id)
);
CREATE UNIQUE INDEX erasure_receipts_running_idx ON erasure_receipts (tenant_id, user_id_sha256)
    WHERE state = 'running';
CREATE INDEX erasure_receipts_user_idx ON erasure_receipts (tenant_id, user_id_sha256, started_at);
SELECT engram_isolate_tenants('erasure_receipts');
