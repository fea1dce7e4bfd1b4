-- A fact's words for full-text search, small enough for facts_user_text_idx, whose
-- btree rows hold at most ~2.7 kB: the text's tsvector, or without positions when that
-- is too large, or else the words of the text's first 300 characters. A row too large
-- for the index made the whole extraction fail ("index row requires ... bytes").
CREATE FUNCTION engram_fact_words(cfg regconfig, body text) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN pg_column_size(v) <= 2000 THEN v
                WHEN pg_column_size(strip(v)) <= 2000 THEN strip(v)
                ELSE strip(to_tsvector(cfg, left(body, 300))) END
    FROM to_tsvector(cfg, body) AS v
$$;

-- An entity named from the text of a message whose class is declared (its metadata's or
-- its session's `sensitivity`, e.g. phi) keeps its name only as ciphertext: `name` holds
-- the class marker (`[PHI]`), `normalized_name` a key of its own that no other name
-- matches, and `name_embedding` the marker's. The extractor resolves such names by
-- opening them; a reader allowed protected fields sees the name.
ALTER TABLE entities ADD COLUMN name_enc bytea;
CREATE INDEX entities_sealed_name_idx ON entities (tenant_id, user_id)
    WHERE name_enc IS NOT NULL;
