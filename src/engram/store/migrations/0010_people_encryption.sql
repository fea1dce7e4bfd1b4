-- Field-level encryption of users and sessions, as 0005 did for messages: a user's
-- e-mail, first and last name (personal data by nature: at least pii) and the metadata
-- values of users and sessions. A protected field's plain column keeps its redacted
-- form; the ciphertext column holds the value, bound to the row's uuid.
--
-- The class columns hold 0 none, 1 pii, 2 phi, 3 secret, or -1: not classified yet (a
-- row written before this migration, while encryption was off, or restored from an
-- archive made before it). Every re-encryption run (`engram keys reencrypt`) classifies
-- and seals those rows; `engram keys status` counts them.

-- The class of e-mail, first and last name taken as one group, so it says which of them
-- must have a ciphertext.
ALTER TABLE users ADD COLUMN identity_sensitivity smallint NOT NULL DEFAULT -1;
ALTER TABLE users ADD COLUMN email_enc bytea;
ALTER TABLE users ADD COLUMN first_name_enc bytea;
ALTER TABLE users ADD COLUMN last_name_enc bytea;
-- The class of the metadata object (its highest value), and the whole object encrypted
-- when any value is protected (`metadata` then holds the redacted object).
ALTER TABLE users ADD COLUMN metadata_sensitivity smallint NOT NULL DEFAULT -1;
ALTER TABLE users ADD COLUMN metadata_enc bytea;
ALTER TABLE sessions ADD COLUMN metadata_sensitivity smallint NOT NULL DEFAULT -1;
ALTER TABLE sessions ADD COLUMN metadata_enc bytea;

-- The re-encryption run walks ciphertexts in uuid order, and classifies what is not yet.
CREATE INDEX users_encrypted_idx ON users (tenant_id, uuid)
    WHERE email_enc IS NOT NULL OR first_name_enc IS NOT NULL OR last_name_enc IS NOT NULL
       OR metadata_enc IS NOT NULL;
CREATE INDEX sessions_encrypted_idx ON sessions (tenant_id, uuid) WHERE metadata_enc IS NOT NULL;
CREATE INDEX users_unclassified_idx ON users (tenant_id, uuid)
    WHERE identity_sensitivity < 0 OR metadata_sensitivity < 0;
CREATE INDEX sessions_unclassified_idx ON sessions (tenant_id, uuid)
    WHERE metadata_sensitivity < 0;
