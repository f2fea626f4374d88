"""What every service shares: settings, logging, database, broker and streams, outbox relay,
idempotent consumer (inbox), health checks, embedded servers."""
