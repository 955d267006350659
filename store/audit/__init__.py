"""The audit trail: a hash-chained, signed, append-only record of every access."""
