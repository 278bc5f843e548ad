"""One base class for every error slicewise raises on purpose.

The CLI catches `SlicewiseError` once and prints its message (exit code 2); the service maps
the request errors among them to 4xx responses. Each subclass names the part that failed;
the message says what to fix.
"""

from __future__ import annotations


class SlicewiseError(Exception):
    """Base class: an error whose message tells the user what to fix."""
