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


def test_onnx_embeddings_match_torch_and_the_encoder_is_exported_once(
    tiny_backbone_dir, tmp_path
) -> None:
    texts = ["a short one", "a much longer text with many more words in it", "mid", "ok ok"]
    emb = {}
    for runtime in ("torch", "onnx", "onnx-int8"):
        cfg = BackboneConfig(path=tiny_backbone_dir, max_length=16, embed_runtime=runtime)
        emb[runtime] = embed_texts(cfg, texts, batch_size=3, cache_dir=tmp_path, progress=False)
    np.testing.assert_allclose(emb["onnx"], emb["torch"], atol=1e-4)
    cos = (emb["onnx-int8"] * emb["torch"]).sum(1) / (
        np.linalg.norm(emb["onnx-int8"], axis=1) * np.linalg.norm(emb["torch"], axis=1)
    )
    assert cos.min() > 0.95 and not np.allclose(emb["onnx-int8"], emb["torch"], atol=1e-4)
    # one export (fp32 + int8 files) serves both runtimes; one embedding file per runtime
    assert sorted(p.name.split(".", 1)[1] for p in tmp_path.glob("encoder-*.onnx")) == [
        "fp32.onnx",
        "int8.onnx",
    ]
    assert len(list(tmp_path.glob("emb-*.npy"))) == 3
    assert not list(tmp_path.glob(".*tmp*"))


def test_project_config_embeds_with_the_encoder_it_serves(tiny_backbone_dir) -> None:
    from training.config import parse_config

    base = {"labels": ["a", "b"], "backbone": {"path": str(tiny_backbone_dir)}}
    assert parse_config(base).backbone.embed_runtime == "onnx-int8"
    fp32 = parse_config({**base, "export": {"quantize": False}})
    assert fp32.backbone.embed_runtime == "onnx"
    explicit = parse_config({**base, "backbone": {"path": ".", "embed_runtime": "torch"}})
    assert explicit.backbone.embed_runtime == "torch"


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_each_distinct_text_is_embedded_once_and_rows_keep_input_order(
    tiny_backbone_dir, runtime, monkeypatch
) -> None:
    import training.backbone as backbone

    seen: list[list[str]] = []
    inner = backbone._embed_torch if runtime == "torch" else backbone._embed_onnx

    def spy(cfg, texts, *a, **kw):
        seen.append(list(texts))
        return inner(cfg, texts, *a, **kw)

    monkeypatch.setattr(backbone, "_embed_torch" if runtime == "torch" else "_embed_onnx", spy)
    cfg = BackboneConfig(path=tiny_backbone_dir, max_length=16, embed_runtime=runtime)
    texts = ["b twice", "a short one", "b twice", "a longer one with more words", "b twice"]
    emb = embed_texts(cfg, texts, batch_size=2, progress=False)
    assert seen == [["b twice", "a short one", "a longer one with more words"]]
    assert emb.shape == (5, 32)
    np.testing.assert_array_equal(emb[0], emb[2])
    np.testing.assert_array_equal(emb[0], emb[4])
    alone = embed_texts(cfg, ["a longer one with more words"], progress=False)
    np.testing.assert_allclose(emb[3], alone[0], atol=1e-5)


def test_onnx_embedding_layouts_agree(tiny_backbone_dir, tmp_path) -> None:
    """One call on ONNX Runtime's pool and one single-threaded call per core: same vectors."""
    from training.backbone import _embed_onnx

    cfg = BackboneConfig(path=tiny_backbone_dir, max_length=16, embed_runtime="onnx")
    texts = [f"text number {i} " + "word " * (i % 7) for i in range(40)]
    one = _embed_onnx(cfg, texts, 8, tmp_path, False, calls=1)
    many = _embed_onnx(cfg, texts, 8, tmp_path, False, calls=3)
    np.testing.assert_allclose(one, many, atol=1e-5)
    assert np.abs(one).sum(1).min() > 0  # every row written


def test_batches_group_texts_by_token_count_not_characters(tiny_backbone_dir) -> None:
    """Long words are few tokens and short codes many: batches follow the tokens, so each pads
    only to its own longest text, and every text comes once, truncated at `max_length`."""
    from training.backbone import _batches, load_tokenizer

    cfg = BackboneConfig(path=tiny_backbone_dir, max_length=12)
    texts = ["x1 y2 z3 q4 w5", "hello", "a b c d e f g h i j k l m n o p", "hi", "x9 y8 z7 q6"]
    tokens = [
        len(ids) for ids in load_tokenizer(cfg)(texts, truncation=True, max_length=12)["input_ids"]
    ]
    seen: list[int] = []
    for idx, feeds in _batches(cfg, texts, 2):
        assert (
            feeds["input_ids"].dtype == np.int64
            and feeds["input_ids"].shape == feeds["attention_mask"].shape
        )
        assert feeds["input_ids"].shape[1] == max(tokens[i] for i in idx)  # no padding beyond
        assert feeds["attention_mask"].sum(1).tolist() == [tokens[i] for i in idx]
        seen.extend(idx.tolist())
    assert sorted(seen) == list(range(len(texts)))
    assert [tokens[i] for i in seen] == sorted(tokens)  # shortest in tokens first
    assert max(tokens) == 12
