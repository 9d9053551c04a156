"""lock daemon."""
