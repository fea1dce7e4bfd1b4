-- Semantic memory: episodes (the unit of extraction), entities and bi-temporal facts.

CREATE TABLE episodes (
    tenant_id     text NOT NULL,
    uuid          uuid NOT NULL,
    user_id       text,
    session_id    text NOT NULL,
    message_uuids uuid[] NOT NULL,
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'done', 'failed')),
    extractor     text,
    attempts      integer NOT NULL DEFAULT 0,
    error         text,
    usage         jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    processed_at  timestamptz,
    PRIMARY KEY (tenant_id, uuid),
    FOREIGN KEY (tenant_id, session_id) REFERENCES sessions (tenant_id, session_id) ON DELETE CASCADE
);
CREATE INDEX episodes_status_idx ON episodes (tenant_id, status, created_at);

ALTER TABLE messages ADD COLUMN episode_uuid uuid;

CREATE TABLE entities (
    tenant_id       text NOT NULL,
    uuid            uuid NOT NULL DEFAULT gen_random_uuid(),
    user_id         text NOT NULL,
    name            text NOT NULL,
    normalized_name text NOT NULL,
    labels          text[] NOT NULL DEFAULT ARRAY[]::text[],
    aliases         text[] NOT NULL DEFAULT ARRAY[]::text[],
    summary         text,
    name_embedding  vector({dims}) NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, uuid),
    UNIQUE (tenant_id, user_id, normalized_name),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, user_id) ON DELETE CASCADE
);
CREATE INDEX entities_aliases_idx ON entities USING gin (aliases);
{entity_index}

-- Which messages mention which entities: append-only rows, so that a much-mentioned
-- entity (the user) is never rewritten per episode.
CREATE TABLE entity_mentions (
    tenant_id    text NOT NULL,
    entity_uuid  uuid NOT NULL,
    message_uuid uuid NOT NULL,
    PRIMARY KEY (tenant_id, entity_uuid, message_uuid),
    FOREIGN KEY (tenant_id, entity_uuid) REFERENCES entities (tenant_id, uuid) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, message_uuid) REFERENCES messages (tenant_id, uuid) ON DELETE CASCADE
);
CREATE INDEX entity_mentions_message_idx ON entity_mentions (tenant_id, message_uuid);

CREATE TABLE facts (
    tenant_id      text NOT NULL,
    uuid           uuid NOT NULL DEFAULT gen_random_uuid(),
    user_id        text NOT NULL,
    source_uuid    uuid NOT NULL,
    target_uuid    uuid NOT NULL,
    relation       text NOT NULL,
    fact           text NOT NULL,
    exclusive      boolean NOT NULL DEFAULT false,
    fact_embedding vector({dims}) NOT NULL,
    search_text    tsvector NOT NULL,
    valid_at       timestamptz,
    invalid_at     timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expired_at     timestamptz,
    episodes       uuid[] NOT NULL,
    rating         real,
    PRIMARY KEY (tenant_id, uuid),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, user_id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, source_uuid) REFERENCES entities (tenant_id, uuid) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, target_uuid) REFERENCES entities (tenant_id, uuid) ON DELETE CASCADE
);
CREATE INDEX facts_user_valid_idx ON facts (tenant_id, user_id, source_uuid, relation)
    WHERE expired_at IS NULL AND invalid_at IS NULL;
CREATE INDEX facts_source_idx ON facts (tenant_id, source_uuid);
CREATE INDEX facts_target_idx ON facts (tenant_id, target_uuid);
CREATE INDEX facts_episodes_idx ON facts USING gin (episodes);
CREATE INDEX facts_search_text_idx ON facts USING gin (search_text);
{fact_index}

-- Provenance: deleting messages (directly, or through their session or user) removes
-- them from the facts and entities they support, and deletes those left with none.
CREATE FUNCTION engram_forget_messages() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    WITH gone AS (SELECT tenant_id, array_agg(uuid) AS ids FROM old_rows GROUP BY tenant_id),
    calc AS (
        SELECT f.tenant_id, f.uuid,
               ARRAY(SELECT unnest(f.episodes) EXCEPT SELECT unnest(gone.ids)) AS keep
        FROM facts f JOIN gone ON f.tenant_id = gone.tenant_id AND f.episodes && gone.ids),
    dropped AS (
        DELETE FROM facts f USING calc c
        WHERE f.tenant_id = c.tenant_id AND f.uuid = c.uuid AND cardinality(c.keep) = 0)
    UPDATE facts f SET episodes = c.keep FROM calc c
    WHERE f.tenant_id = c.tenant_id AND f.uuid = c.uuid AND cardinality(c.keep) > 0;

    -- Mentions went with their messages (foreign key); drop entities of the affected
    -- users that nothing mentions and no fact uses any more.
    DELETE FROM entities e
    WHERE (e.tenant_id, e.user_id) IN (SELECT DISTINCT tenant_id, user_id FROM old_rows)
      AND NOT EXISTS (SELECT 1 FROM entity_mentions m
                      WHERE m.tenant_id = e.tenant_id AND m.entity_uuid = e.uuid)
      AND NOT EXISTS (SELECT 1 FROM facts f WHERE f.tenant_id = e.tenant_id
                      AND (f.source_uuid = e.uuid OR f.target_uuid = e.uuid));
    RETURN NULL;
END;
$$;
CREATE TRIGGER messages_forget AFTER DELETE ON messages
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION engram_forget_messages();

SELECT engram_isolate_tenants('episodes');
SELECT engram_isolate_tenants('entities');
SELECT engram_isolate_tenants('entity_mentions');
SELECT engram_isolate_tenants('facts');

ALTER TABLE episodes SET ({autovacuum});
ALTER TABLE entities SET ({autovacuum});
ALTER TABLE facts SET ({autovacuum});
ALTER TABLE entity_mentions SET ({autovacuum});
