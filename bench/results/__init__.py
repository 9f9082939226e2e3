"""Result documents: schema, durable io, and (later) validation and the empirical table."""
