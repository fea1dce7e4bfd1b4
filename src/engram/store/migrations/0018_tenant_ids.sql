-- Users' and sessions' integer `id` (Zep v2's `id`, and their creation order) counted per
-- tenant. One identity sequence per table numbered every tenant's rows, so a tenant
-- could tell from the gaps between its own ids how many users and sessions the others
-- created. Each tenant now has its own counter per table.
--
-- Rows keep the ids they have. Every tenant's counter starts past the last id the old
-- sequence gave (recorded here), so a new id never repeats an old one, not even one of
-- an archived session that comes back later with its own id.
CREATE TABLE tenant_counters (
    tenant_id  text NOT NULL,
    name       text NOT NULL CHECK (name IN ('users', 'sessions')),
    last       bigint NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
SELECT engram_isolate_tenants('tenant_counters');
ALTER TABLE tenant_counters SET ({autovacuum});

-- Writers wait here (not for long: dropping an identity changes the catalog only) so
-- that no id is handed out between reading the sequences and dropping them.
LOCK TABLE users, sessions IN SHARE ROW EXCLUSIVE MODE;
INSERT INTO engram_meta (key, value) VALUES ('id_floor', jsonb_build_object(
    'users', coalesce(pg_sequence_last_value(pg_get_serial_sequence('users', 'id')), 0),
    'sessions', coalesce(pg_sequence_last_value(pg_get_serial_sequence('sessions', 'id')), 0)));
ALTER TABLE users ALTER COLUMN id DROP IDENTITY;
ALTER TABLE sessions ALTER COLUMN id DROP IDENTITY;

-- The next id of the row's tenant and table; a row inserted with an id (a session
-- restored from its archive) keeps it. The counter row stays locked until the insert
-- commits: one tenant's new users (and, apart, its new sessions) are numbered one
-- transaction at a time, in the order they commit.
CREATE FUNCTION engram_tenant_id() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id IS NULL THEN
        INSERT INTO tenant_counters AS c (tenant_id, name, last)
        VALUES (NEW.tenant_id, TG_TABLE_NAME, 1 + coalesce(
            (SELECT (value ->> TG_TABLE_NAME)::bigint FROM engram_meta WHERE key = 'id_floor'),
            0))
        ON CONFLICT (tenant_id, name) DO UPDATE SET last = c.last + 1
        RETURNING last INTO NEW.id;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER users_tenant_id BEFORE INSERT ON users
    FOR EACH ROW EXECUTE FUNCTION engram_tenant_id();
CREATE TRIGGER sessions_tenant_id BEFORE INSERT ON sessions
    FOR EACH ROW EXECUTE FUNCTION engram_tenant_id();
