"""skyge: a Linux high-availability cluster suite."""
__version__ = "0.1.0"
