-- Hybrid retrieval: a user's entities and facts without scanning other users'.
CREATE INDEX entities_user_idx ON entities (tenant_id, user_id);
CREATE INDEX facts_user_idx ON facts (tenant_id, user_id);
