"""Errors of the V2X layers.

::

    V2xError
     +-- V2xEncodeError (also ValueError)   a value the standard cannot carry
     +-- V2xDecodeError (also ValueError)   bytes that are not a valid message or packet
     +-- V2xConfigError (also ValueError)   a setting that cannot be used
"""

from __future__ import annotations


class V2xError(Exception):
    """Root of the V2X errors."""


class V2xEncodeError(V2xError, ValueError):
    """A value is outside what the message or header can carry; the message names the field."""


class V2xDecodeError(V2xError, ValueError):
    """Bytes that cannot be decoded; the message gives the reason."""


class V2xConfigError(V2xError, ValueError):
    """A V2X setting that cannot be used; the message names it and what is allowed."""
