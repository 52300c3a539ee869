"""The embedded, file-backed Redis-compatible store used when no server is configured."""
