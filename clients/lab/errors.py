"""The one exception the lab raises."""
from __future__ import annotations


class LabError(Exception):
    """A lab operation could not be done; the message says what, where, and why."""
