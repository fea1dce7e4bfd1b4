-- Hybrid retrieval: find the entities a message mentions, and messages by role quickly.
CREATE INDEX entities_episodes_idx ON entities USING gin (episodes);
CREATE INDEX entities_user_idx ON entities (tenant_id, user_id);
CREATE INDEX facts_user_idx ON facts (tenant_id, user_id);
