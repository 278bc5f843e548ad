"""Backbone loading and the frozen-embedding cache, on the tiny BERT."""

from __future__ import annotations

import numpy as np
import pytest

from training.backbone import BackboneError, backbone_path, default_backbone_path, embed_texts
from training.config import BackboneConfig


def test_default_backbone_ships_in_the_package() -> None:
    path = default_backbone_path()
    assert (path / "model.safetensors").exists() and (path / "tokenizer.json").exists()


def test_embeddings_are_order_independent_and_cached(tiny_backbone_dir, tmp_path) -> None:
    cfg = BackboneConfig(path=tiny_backbone_dir, max_length=16)
    texts = ["a short one", "a much longer text with many more words in it", "mid length text"]
    emb = embed_texts(cfg, texts, batch_size=2, cache_dir=tmp_path, progress=False)
    assert emb.shape == (3, 32) and emb.dtype == np.float32
    single = embed_texts(cfg, [texts[1]], progress=False)
    np.testing.assert_allclose(emb[1], single[0], atol=1e-5)
    assert len(list(tmp_path.glob("emb-*.npy"))) == 1
    again = embed_texts(cfg, texts, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(emb, again)


def test_backbone_path_that_is_not_a_model(tmp_path) -> None:
    with pytest.raises(BackboneError, match=r"no config\.json"):
        backbone_path(BackboneConfig(path=tmp_path))
