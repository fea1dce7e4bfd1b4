-- Backups taken by `engram backup`, one row each when it ends (so a dump never holds a
-- row of its own that says "running"). The API pods export the latest success and the
-- failures from here, which the backup alerts read. Not a tenant table: backups are of
-- the whole database.
CREATE TABLE backup_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    status      text NOT NULL CHECK (status IN ('done', 'failed')),
    bytes       bigint,
    file        text,
    error       text
);
ALTER TABLE backup_runs SET ({autovacuum});
