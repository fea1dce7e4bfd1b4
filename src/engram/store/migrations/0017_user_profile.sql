-- A user's protected fields in one ciphertext: `profile_enc` seals a JSON object holding
-- those of `email`, `first_name`, `last_name` (the identity, when its class is protected)
-- and `metadata` (the original object, when any of its values is protected). Its
-- associated data names the column `profile`. A page of a hundred users is then a
-- hundred fields to open, not four hundred, and a new user one seal, not four.
--
-- Users written before this migration keep their per-field ciphertexts (`email_enc`,
-- `first_name_enc`, `last_name_enc`, `metadata_enc`), which are still read; a change to
-- such a user stores the new form and clears the old.
ALTER TABLE users ADD COLUMN profile_enc bytea;
