-- Tenants, API keys and the hash-chained, append-only audit log (issue 6).

-- The registry of tenants. It has no tenant_id: it is the list the platform admin
-- manages; the API reads it to refuse a disabled tenant's credentials.
CREATE TABLE tenants (
    id          text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{{0,62}}$'),
    name        text NOT NULL,
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tenants (id, name) VALUES ({default_tenant}, 'default tenant');

-- API keys: only a SHA-256 of the secret is kept. key_id is the public half of the
-- key ("egk_<key_id>_<secret>") and finds the row before the tenant is known.
CREATE TABLE api_keys (
    tenant_id       text NOT NULL REFERENCES tenants (id),
    key_id          text NOT NULL UNIQUE,
    name            text NOT NULL,
    role            text NOT NULL CHECK (role IN ('admin', 'writer', 'reader', 'auditor')),
    read_protected  boolean NOT NULL DEFAULT false,
    secret_sha256   bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text NOT NULL,
    expires_at      timestamptz,
    revoked_at      timestamptz,
    PRIMARY KEY (tenant_id, key_id)
);
SELECT engram_isolate_tenants('api_keys');
-- Authentication looks a key up by its id alone (the tenant comes from the row): only
-- the one row whose id the caller already holds, read-only.
CREATE POLICY api_key_lookup ON api_keys FOR SELECT
    USING (key_id = current_setting('app.api_key_id', true));

-- The audit log: one hash chain per tenant (seq 1, 2, ...; hash covers prev_hash).
CREATE TABLE audit_log (
    tenant_id   text NOT NULL,
    seq         bigint NOT NULL CHECK (seq >= 1),
    at          timestamptz NOT NULL,
    actor       text NOT NULL,
    action      text NOT NULL,
    resource    text NOT NULL,
    outcome     text NOT NULL,
    status      integer,
    reason      text,
    request_id  text,
    client      text,
    details     jsonb,
    prev_hash   text NOT NULL,
    hash        text NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX audit_log_at_idx ON audit_log (tenant_id, at);
SELECT engram_isolate_tenants('audit_log');

-- Append-only for everyone short of a superuser who disables the triggers (and that
-- is what `engram audit verify` and the signed checkpoints are for).
CREATE FUNCTION engram_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION engram_audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION engram_audit_append_only();
