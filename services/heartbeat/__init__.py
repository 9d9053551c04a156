"""heartbeat daemon."""
