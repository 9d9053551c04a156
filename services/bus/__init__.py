"""bus daemon."""
