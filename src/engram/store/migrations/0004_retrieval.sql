-- Hybrid retrieval: a user's entities and facts without scanning other users'.
CREATE INDEX entities_user_idx ON entities (tenant_id, user_id);
CREATE INDEX facts_user_idx ON facts (tenant_id, user_id);

-- Keep vectors in the row (no TOAST detour per candidate) where they fit a page.
ALTER TABLE messages ALTER COLUMN embedding SET STORAGE {vector_storage};
ALTER TABLE facts ALTER COLUMN fact_embedding SET STORAGE {vector_storage};
ALTER TABLE entities ALTER COLUMN name_embedding SET STORAGE {vector_storage};
