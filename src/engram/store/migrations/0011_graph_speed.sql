-- Entity names are only ever compared within one user's entities, by an exact scan of
-- that user's rows (store/entities.py, store/retrieval.py): the HNSW index on them was
-- never read, and maintaining it was most of the cost of inserting an entity (2-5 ms
-- of HNSW graph search per row on the 2-core machine; the extraction job's largest cost).
DROP INDEX IF EXISTS entities_name_embedding_idx;

