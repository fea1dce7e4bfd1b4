-- Foundation: users, sessions, messages with embeddings and full-text search.
-- Placeholders in braces are filled by the migration runner with psycopg.sql
-- (identifiers and integer literals only; never user input).

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE engram_meta (
    key        text PRIMARY KEY,
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    tenant_id   text NOT NULL,
    user_id     text NOT NULL,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    uuid        uuid NOT NULL DEFAULT gen_random_uuid(),
    email       text,
    first_name  text,
    last_name   text,
    metadata    jsonb NOT NULL DEFAULT jsonb_build_object(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX users_order_idx ON users (tenant_id, id);

CREATE TABLE sessions (
    tenant_id   text NOT NULL,
    session_id  text NOT NULL,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    uuid        uuid NOT NULL DEFAULT gen_random_uuid(),
    user_id     text,
    metadata    jsonb NOT NULL DEFAULT jsonb_build_object(),
    fact_rating_instruction jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz,
    PRIMARY KEY (tenant_id, session_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, user_id) ON DELETE CASCADE
);
CREATE INDEX sessions_user_idx ON sessions (tenant_id, user_id, id);
CREATE INDEX sessions_order_idx ON sessions (tenant_id, id);

CREATE TABLE messages (
    tenant_id   text NOT NULL,
    uuid        uuid NOT NULL,
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    session_id  text NOT NULL,
    user_id     text,
    role        text NOT NULL DEFAULT '',
    role_type   text NOT NULL,
    content     text NOT NULL,
    metadata    jsonb NOT NULL DEFAULT jsonb_build_object(),
    token_count integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    embedding   vector({dims}) NOT NULL,
    search_text tsvector NOT NULL,
    PRIMARY KEY (tenant_id, uuid),
    FOREIGN KEY (tenant_id, session_id) REFERENCES sessions (tenant_id, session_id) ON DELETE CASCADE
);
CREATE INDEX messages_session_idx ON messages (tenant_id, session_id, seq);
CREATE INDEX messages_user_idx ON messages (tenant_id, user_id, seq);
CREATE INDEX messages_search_text_idx ON messages USING gin (search_text);
{vector_index}

-- Row-Level Security: every tenant table, enabled and forced, keyed on the
-- per-transaction setting app.tenant_id (missing setting = no rows).
CREATE FUNCTION engram_isolate_tenants(tbl regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE format('CREATE POLICY tenant_isolation ON %s'
                   ' USING (tenant_id = current_setting(''app.tenant_id'', true))'
                   ' WITH CHECK (tenant_id = current_setting(''app.tenant_id'', true))', tbl);
END;
$$;
SELECT engram_isolate_tenants('users');
SELECT engram_isolate_tenants('sessions');
SELECT engram_isolate_tenants('messages');

ALTER TABLE users SET ({autovacuum});
ALTER TABLE sessions SET ({autovacuum});
ALTER TABLE messages SET ({autovacuum});
