"""Redis -> consumers: point lookups, tailing, consumer groups with dead letters, lag, and
reconnecting after an outage."""
