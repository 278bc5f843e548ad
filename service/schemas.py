"""Response schemas of the REST API (DESIGN §6); they make the OpenAPI document precise."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Prediction(BaseModel):
    """One text's prediction."""

    id: str = Field(description="prediction id; send it back with /feedback")
    label: str
    confidence: float = Field(ge=0, le=1)
    probabilities: dict[str, float]
    slices: dict[str, float] = Field(description="membership score per slice, in [0, 1]")
    active_slices: list[str] = Field(
        description="slices whose score is at or above their threshold"
    )


class PredictResponse(BaseModel):
    """Response of POST /predict."""

    model_config = {"protected_namespaces": ()}

    model_version: str
    predictions: list[Prediction]


class FeedbackResponse(BaseModel):
    """Response of POST /feedback."""

    id: str
    label: str
    stored: bool
    replaced: str | None = Field(
        None, description="the label this one replaced (a correction), null for a first label"
    )
