-- A message's metadata gets its own class, as users' and sessions' metadata have since
-- 0010: 0 none, 1 pii, 2 phi, 3 secret, or -1 not classified yet. A message's declared
-- `sensitivity` (its own, or its session's) is now the least class of its metadata
-- values, not only of its content; `sensitivity` stays the message's class (the higher
-- of content and metadata).
--
-- Rows stored before this migration had their metadata classified by the detectors
-- alone. Those whose class may differ now (a declared class and values beside it) or is
-- not known exactly (sealed metadata: its class was folded into `sensitivity`) get -1,
-- and the next re-encryption run (`engram keys reencrypt`) classifies and seals them;
-- the others had nothing to protect and keep 0. A row restored from an archive made
-- before this migration takes the column default, -1, and is classified the same way.
ALTER TABLE messages ADD COLUMN metadata_sensitivity smallint NOT NULL DEFAULT 0;
ALTER TABLE messages ALTER COLUMN metadata_sensitivity SET DEFAULT -1;

-- The owner marks every tenant's rows: row-level security is lifted for this one
-- statement (inside the migration's transaction) and forced again at once.
ALTER TABLE messages NO FORCE ROW LEVEL SECURITY;
ALTER TABLE sessions NO FORCE ROW LEVEL SECURITY;
UPDATE messages m SET metadata_sensitivity = -1
WHERE m.metadata_enc IS NOT NULL
   OR (m.metadata - 'sensitivity' <> jsonb_build_object()
       AND (m.metadata ? 'sensitivity'
            OR EXISTS (SELECT 1 FROM sessions s
                       WHERE s.tenant_id = m.tenant_id AND s.session_id = m.session_id
                         AND s.metadata ? 'sensitivity')));
ALTER TABLE messages FORCE ROW LEVEL SECURITY;
ALTER TABLE sessions FORCE ROW LEVEL SECURITY;

-- The re-encryption run and `engram keys status` find the rows still to classify.
CREATE INDEX messages_unclassified_idx ON messages (tenant_id, uuid)
    WHERE metadata_sensitivity < 0;
