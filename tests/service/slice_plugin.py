"""A plugin module with a registered slicing function, as a user's project would ship one
(imported by the service through the manifest's `plugins`)."""

from __future__ import annotations

from slicewise.core.slice_rules import slicing_function


@slicing_function(name="shouting")
def shouting(text: str) -> bool:
    """A fully upper-case word of three letters or more."""
    return any(w.isupper() and len(w) >= 3 for w in text.split())


def explodes_on_boom(text: str) -> bool:
    """Raises on texts containing 'boom' (a slicing function with a bug)."""
    if "boom" in text:
        raise RuntimeError("boom")
    return text.startswith("a")
