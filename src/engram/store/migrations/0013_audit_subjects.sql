-- Pseudonyms of the users and sessions that audit records name (issue 8). The audit log
-- is append-only and hash-chained, so it must never hold a user or session id: request
-- paths carry a random pseudonym ("user:3f9c...", "session:a81e...") instead, and this
-- table maps it back while the subject exists. Erasure deletes the user's rows here,
-- after which the records left in the chain name nobody, and the chain still verifies.
CREATE TABLE audit_subjects (
    tenant_id   text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('user', 'session')),
    subject_id  text NOT NULL,
    user_id     text,  -- the user it belongs to (a session's owner); erasure finds it so
    pseudonym   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, kind, subject_id),
    UNIQUE (tenant_id, pseudonym)
);
CREATE INDEX audit_subjects_user_idx ON audit_subjects (tenant_id, user_id);
SELECT engram_isolate_tenants('audit_subjects');
ALTER TABLE audit_subjects SET ({autovacuum});
