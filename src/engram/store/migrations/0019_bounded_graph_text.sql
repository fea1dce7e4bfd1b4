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
