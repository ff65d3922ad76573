"""Errors raised by the collectors."""

from __future__ import annotations


class CollectionError(Exception):
    """A sample cannot be taken at all.

    Raised only when a source without which no meaningful host sample
    exists (``/proc/meminfo``) is missing or malformed; optional sources
    are dropped from the sample instead.
    """
