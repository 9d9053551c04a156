"""emon daemon."""
