"""Background jobs: the procrastinate queue in PostgreSQL and its tasks."""
