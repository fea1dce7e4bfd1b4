-- Field-level encryption of users and sessions, as 0005 did for messages: a user's
-- e-mail, first and last name (personal data by nature: at least pii) and the metadata
-- values of users and sessions. A protected field's plain column keeps its redacted
-- form; the ciphertext column holds the value, bound to the row's uuid.

-- identity_sensitivity: the class of e-mail, first and last name taken as one group
-- (0 none, 1 pii, 2 phi, 3 secret), so it says which of them must have a ciphertext.
-- Rows written before this migration hold their identity in clear: they get 1 (pii, the
-- least class of those fields), so the coverage metric counts them as protected fields
-- without ciphertext until the re-encryption run seals them; new rows always set it.
-- (A column default, not an UPDATE: Row-Level Security would hide the rows from one.)
ALTER TABLE users ADD COLUMN identity_sensitivity smallint NOT NULL DEFAULT 1;
ALTER TABLE users ALTER COLUMN identity_sensitivity SET DEFAULT 0;
ALTER TABLE users ADD COLUMN email_enc bytea;
ALTER TABLE users ADD COLUMN first_name_enc bytea;
ALTER TABLE users ADD COLUMN last_name_enc bytea;
-- The class of the metadata object (its highest value), and the whole object encrypted
-- when any value is protected (`metadata` then holds the redacted object).
ALTER TABLE users ADD COLUMN metadata_sensitivity smallint NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN metadata_enc bytea;
ALTER TABLE sessions ADD COLUMN metadata_sensitivity smallint NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN metadata_enc bytea;

-- The re-encryption run walks ciphertexts in uuid order.
CREATE INDEX users_encrypted_idx ON users (tenant_id, uuid)
    WHERE email_enc IS NOT NULL OR first_name_enc IS NOT NULL OR last_name_enc IS NOT NULL
       OR metadata_enc IS NOT NULL;
CREATE INDEX sessions_encrypted_idx ON sessions (tenant_id, uuid) WHERE metadata_enc IS NOT NULL;
