-- Field-level encryption: the data keys (wrapped) and where protected fields keep their
-- ciphertext. A protected field's plain column holds its redacted form (what full-text
-- search and, by default, the embedding see); the ciphertext column holds the value.

CREATE TABLE data_keys (
    tenant_id  text NOT NULL,
    key_id     uuid NOT NULL,
    version    integer NOT NULL CHECK (version >= 1),
    user_id    text,                        -- NULL: the tenant's own key
    state      text NOT NULL CHECK (state IN ('primary', 'active', 'disabled', 'destroyed')),
    provider   text,
    kek_id     text,
    wrapped    bytea,                       -- NULL once destroyed
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key_id, version),
    CHECK ((state = 'destroyed') = (wrapped IS NULL))
);
-- One key per (tenant, user): two processes creating it at once keep the first.
CREATE UNIQUE INDEX data_keys_owner_idx ON data_keys (tenant_id, coalesce(user_id, ''))
    WHERE version = 1;
SELECT engram_isolate_tenants('data_keys');

-- sensitivity: 0 none, 1 pii, 2 phi, 3 secret (the highest class found in the field).
ALTER TABLE messages ADD COLUMN sensitivity smallint NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN content_enc bytea;
-- The whole metadata object, when any of its values is protected (`metadata` then holds
-- the redacted object).
ALTER TABLE messages ADD COLUMN metadata_enc bytea;
ALTER TABLE facts ADD COLUMN sensitivity smallint NOT NULL DEFAULT 0;
ALTER TABLE facts ADD COLUMN fact_enc bytea;
ALTER TABLE entities ADD COLUMN summary_enc bytea;

-- Which rows the re-encryption job still has to move: ciphertexts name their key
-- version in bytes 17..20, so the job and `engram keys status` scan by that.
CREATE INDEX messages_encrypted_idx ON messages (tenant_id, uuid)
    WHERE content_enc IS NOT NULL OR metadata_enc IS NOT NULL;
CREATE INDEX facts_encrypted_idx ON facts (tenant_id, uuid) WHERE fact_enc IS NOT NULL;

-- The coverage metric counts protected rows and their ciphertexts.
CREATE INDEX messages_sensitive_idx ON messages (tenant_id, sensitivity)
    WHERE sensitivity > 0;
CREATE INDEX facts_sensitive_idx ON facts (tenant_id, sensitivity) WHERE sensitivity > 0;

-- Progress of re-encryption runs (checkpointed per table), one row per run.
CREATE TABLE reencrypt_runs (
    tenant_id    text NOT NULL,
    id           bigint GENERATED ALWAYS AS IDENTITY,
    status       text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),
    checkpoint   jsonb NOT NULL DEFAULT jsonb_build_object(),
    rows_done    bigint NOT NULL DEFAULT 0,
    passes       integer NOT NULL DEFAULT 0,
    error        text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    PRIMARY KEY (tenant_id, id)
);
SELECT engram_isolate_tenants('reencrypt_runs');
