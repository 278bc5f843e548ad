"""Response schemas of the REST API (docs/design.md §6); they make the OpenAPI document precise."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Prediction(BaseModel):
    """One text's prediction."""

    id: str = Field(description="prediction id; send it back with /feedback")
    label: str
    confidence: float = Field(ge=0, le=1)
    probabilities: dict[str, float]
    slices: dict[str, float] = Field(
        description="membership per slice, in [0, 1]: exact 0 or 1 for slices whose rule the "
        "service evaluates (`membership` says which), the learned score otherwise"
    )
    slice_scores: dict[str, float] = Field(
        description="the model's learned indicator score per slice, in [0, 1] (what the "
        "slice-aware head routes on)"
    )
    active_slices: list[str] = Field(
        description="slices the text is in: exact membership 1, or a learned score at or above "
        "the slice's threshold"
    )


class PredictResponse(BaseModel):
    """Response of POST /predict."""

    model_config = {"protected_namespaces": ()}

    model_version: str
    membership: dict[str, Literal["rule", "learned"]] = Field(
        description="per slice: `rule` = `slices` is the slice rule evaluated exactly on the "
        "text; `learned` = `slices` is the model's score"
    )
    predictions: list[Prediction]


class FeedbackResponse(BaseModel):
    """Response of POST /feedback."""

    id: str
    label: str
    stored: bool
    replaced: str | None = Field(
        None, description="the label this one replaced (a correction), null for a first label"
    )
