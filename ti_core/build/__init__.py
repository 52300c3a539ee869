"""Arena state -> envelope: the builder and the helpers that coerce, check and summarise
a state (verdict, source metrics)."""
