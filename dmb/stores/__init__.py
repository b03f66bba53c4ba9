"""Store access: Postgres (primary and replica), Redis, Kafka, and schema migrations."""
