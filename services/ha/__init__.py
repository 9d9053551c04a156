"""ha daemon."""
