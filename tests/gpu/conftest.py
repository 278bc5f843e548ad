"""`gpu`-marked tests skip, naming what is missing, unless torch and ONNX Runtime both see CUDA."""

from __future__ import annotations

import pytest


def cuda_missing() -> str | None:
    """Why CUDA cannot be used here, or None when torch and ONNX Runtime both have it."""
    import onnxruntime as ort
    import torch

    if not torch.cuda.is_available():
        return "torch sees no CUDA GPU"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime build has no CUDA provider (install onnxruntime-gpu)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    reason = cuda_missing() if gpu_items else None
    for item in gpu_items if reason else []:
        item.add_marker(pytest.mark.skip(reason=f"needs a CUDA GPU: {reason}"))
