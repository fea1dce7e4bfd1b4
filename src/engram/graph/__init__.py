"""The temporal knowledge graph: entity resolution, fact upsert, invalidation."""
