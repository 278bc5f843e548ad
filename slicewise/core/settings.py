"""Settings every layer reads: the validated-section base, `MonitorConfig`, and overrides.

The project YAML (`training/config.py`'s `ProjectConfig`, docs/design.md §3) is the one
settings source; its `monitor` section is defined here, in the core, so that the monitor
reads the same validated model the config file fills. Command-line options override a
section through `override`, which validates the result with the section's own rules: a bad
value is a `ConfigError`, never a silent assignment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slicewise.core.errors import SlicewiseError

S = TypeVar("S", bound=BaseModel)


class ConfigError(SlicewiseError, ValueError):
    """The project configuration is invalid; the message lists every problem."""


class Section(BaseModel):
    """A config section: unknown keys are errors (a misspelt key never passes silently)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class MonitorConfig(Section):
    """Drift monitor settings (docs/design.md §9)."""

    window_size: int = Field(5000, gt=0, description="last N predictions")
    window_minutes: float | None = Field(None, gt=0, description="or the last T minutes")
    min_rows: int = Field(50, gt=0, description="below this a slice reports insufficient data")
    drift_share: float = Field(0.5, gt=0, le=1, description="share of drifted columns = drift")
    interval_seconds: float = Field(60.0, gt=0)
    port: int = Field(9101, ge=0, lt=65536, description="/metrics port; 0 = do not serve")
    report_dir: Path | None = Field(
        Path(".slicewise/reports"), description="JSON + HTML report per pass; null = none"
    )
    report_html_every: int = Field(
        10, gt=0, description="the Evidently HTML report every N passes (the JSON every pass)"
    )
    report_html_rows: int = Field(
        100_000, gt=0, description="the HTML report compares the newest N rows of the window"
    )


def override(section: S, source: str = "option", **changes: Any) -> S:
    """A copy of `section` with `changes` applied and validated (None values are skipped).

    Args:
        section: a validated config section (e.g. `cfg.monitor`, `cfg.train`).
        source: what the changes came from, for the error message (e.g. `command line`).
        **changes: field name -> new value; None means "keep the section's value".

    Returns:
        A new section of the same type; `section` itself is unchanged.

    Raises:
        ConfigError: a value the section's rules reject, naming the field and the rule.
    """
    given = {k: v for k, v in changes.items() if v is not None}
    try:
        return type(section).model_validate({**section.model_dump(), **given})
    except ValidationError as exc:
        problems = [
            f"{source}: {'.'.join(str(p) for p in e['loc'])}={e.get('input')!r}: "
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        ]
        raise ConfigError("; ".join(problems)) from None
