"""The artifact bundle: files, manifest, ONNX parity on fresh inputs, int8, atomicity."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from slicewise.core import contracts as c
from training.backbone import load_tokenizer
from training.export import ExportError, OnnxRunner, export_bundle, tune_thresholds
from training.train import load_checkpoint, train_model

FRESH = ["never seen before: not bad at all", "what?", "x", "great great great love it a lot " * 3]


def test_bundle_has_every_file_and_a_valid_manifest(tiny_bundle, tiny_config) -> None:
    names = {p.name for p in tiny_bundle.iterdir()}
    assert names == {
        "model.onnx",
        "model.int8.onnx",
        "tokenizer",
        "manifest.json",
        "reference.parquet",
        "eval.json",
    }
    b = c.Bundle.load(tiny_bundle)
    m = b.manifest
    assert m.labels == tiny_config.labels and m.slice_names == tiny_config.slice_names
    assert m.monitored_slices == ["negation", "question"]
    assert all(0.05 <= s.threshold <= 0.95 for s in m.slices)
    assert m.model_kind == "moa" and m.max_length == 16
    assert m.dataset_fingerprint and m.evaluation["fused_ops"].get("Attention") == 2
    assert max(m.evaluation["parity_max_abs_diff"].values()) <= 1e-4
    ev = json.loads((tiny_bundle / "eval.json").read_text())
    assert ev["slices"]["overall"]["size"] == 60 and "negation" in ev["slices"]
    # the evaluation is of the file served on CPU, which the retrain gate runs for production
    assert ev["runtime"] == "onnxruntime model.int8.onnx"
    assert m.evaluation["evaluated_file"] == "model.int8.onnx"


def test_onnx_io_names_and_dynamic_axes(tiny_bundle) -> None:
    s = ort.InferenceSession(str(tiny_bundle / "model.onnx"))
    assert [i.name for i in s.get_inputs()] == ["input_ids", "attention_mask"]
    assert all(i.type == "tensor(int64)" for i in s.get_inputs())
    assert all(
        isinstance(d, str) for i in s.get_inputs() for d in i.shape
    )  # batch + sequence dynamic
    assert [o.name for o in s.get_outputs()] == [
        "probabilities",
        "slice_membership",
        "slice_attention",
    ]


def test_onnx_matches_torch_on_fresh_inputs(tiny_bundle, tiny_config) -> None:
    ckpt = sorted((tiny_config.train.checkpoint_dir).glob("tiny-moa-*.pt"))[-1]
    _, trained = load_checkpoint(ckpt)
    tok = load_tokenizer(tiny_config.backbone)
    got = OnnxRunner.open(tiny_bundle / "model.onnx", tok, 16).run(FRESH, batch_size=3)
    enc = tok(FRESH, padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.inference_mode():
        want = trained.model(enc["input_ids"], enc["attention_mask"])
    for name, w in zip(c.OUTPUT_NAMES, want, strict=True):
        np.testing.assert_allclose(got[name], w.numpy(), atol=1e-4)


def test_int8_model_agrees_on_most_predictions(tiny_bundle, tiny_config) -> None:
    tok = load_tokenizer(tiny_config.backbone)
    texts = pd.read_csv(tiny_config.dataset.path)["text"].tolist()[:200]
    fp32 = OnnxRunner.open(tiny_bundle / "model.onnx", tok, 16).run(texts)["probabilities"]
    int8 = OnnxRunner.open(tiny_bundle / "model.int8.onnx", tok, 16).run(texts)["probabilities"]
    assert (fp32.argmax(1) == int8.argmax(1)).mean() > 0.9
    assert np.abs(fp32 - int8).max() < 0.2


def test_reference_profile_columns_follow_the_contract(tiny_bundle, tiny_config) -> None:
    ref = c.Bundle.load(tiny_bundle).reference()
    expected = [c.prob_column(x) for x in tiny_config.labels] + [
        c.PREDICTED_LABEL_COLUMN,
        c.CONFIDENCE_COLUMN,
    ]
    for s in tiny_config.slice_names:
        expected += [c.slice_score_column(s), c.learned_score_column(s), c.slice_fn_column(s)]
    expected += [c.TEXT_LENGTH_COLUMN, c.TRUE_LABEL_COLUMN]
    assert list(ref.columns) == expected and len(ref) == 61  # 10% of 600 after the stratified split
    probs = ref[[c.prob_column(x) for x in tiny_config.labels]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(ref[c.CONFIDENCE_COLUMN], probs.max(1), atol=1e-6)
    assert set(ref[c.slice_fn_column("negation")]) <= {0, 1}
    for s in tiny_config.slice_names:  # `slice_*` is the exact membership the service logs
        np.testing.assert_array_equal(ref[c.slice_score_column(s)], ref[c.slice_fn_column(s)])
        assert ref[c.learned_score_column(s)].between(0, 1).all()
        assert ref[c.learned_score_column(s)].nunique() > 2  # the learned score, not 0/1


def test_manifest_carries_each_slice_definition(tiny_bundle, tiny_config) -> None:
    manifest = c.Bundle.load(tiny_bundle).manifest
    rules = {s.name: s.rule.model_dump(exclude_none=True) for s in manifest.slices if s.rule}
    assert rules == {
        "negation": {"keywords": ["not"]},
        "question": {"regex": r"\?"},
        "short": {"word_count": {"max": 3}},
    }
    assert {s.membership for s in manifest.slices} == {"rule"}
    assert manifest.plugins == tiny_config.plugins


@pytest.mark.parametrize(
    ("slice_def", "words"),
    [
        ({"regex": "(unclosed"}, ["'question'", "invalid regular expression"]),
        ({"function": "no_such_module_xyz:fn"}, ["'question'", "cannot import"]),
    ],
)
def test_export_refuses_a_rule_that_does_not_compile(
    tiny_config, tiny_prepared, tmp_path, slice_def, words
) -> None:
    cfg = tiny_config.model_copy(deep=True)
    bad = cfg.slices[1]  # question; set past the config validator, as a hand-edited object
    bad.regex = None
    for key, value in slice_def.items():
        setattr(bad, key, value)
    trained = train_model(cfg, "sbl", prepared=tiny_prepared, progress=False)
    with pytest.raises(ExportError) as info:
        export_bundle(cfg, trained, tiny_prepared, tmp_path / "b", register=False, progress=False)
    for word in words:
        assert word in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_bundle_is_registered_in_the_model_store(tiny_bundle, bentoml_home) -> None:
    import bentoml

    version = c.Bundle.load(tiny_bundle).manifest.version
    model = bentoml.models.get(f"{c.MODEL_NAME}:{version}")
    assert model.info.metadata["monitored"] == ["negation", "question"]
    assert c.Bundle.load(model.path).manifest.version == version
    # re-exporting the same checkpoint gives the same version: the registration is replaced
    from training.registry import register_bundle

    assert register_bundle(c.Bundle.load(tiny_bundle)) == f"{c.MODEL_NAME}:{version}"
    assert (
        c.Bundle.load(bentoml.models.get(f"{c.MODEL_NAME}:{version}").path).manifest.version
        == version
    )


def test_int8_model_quantises_the_encoder_and_keeps_the_head_fp32(tiny_bundle) -> None:
    import onnx

    graph = onnx.load(str(Path(tiny_bundle) / c.MODEL_INT8_ONNX)).graph
    quantised = [n.name for n in graph.node if n.op_type == "MatMulInteger"]
    assert quantised and all(n.startswith("/encoder/") for n in quantised), quantised
    assert any(n.op_type == "MatMul" and n.name.startswith("/head/") for n in graph.node)


def test_thresholds_maximise_indicator_f1() -> None:
    scores = np.array([[0.1], [0.2], [0.7], [0.8], [0.35]])
    truth = np.array([[0], [0], [1], [1], [1]])
    assert tune_thresholds(scores, truth) == [0.35]


def test_parity_failure_leaves_nothing_behind(tiny_config, tiny_prepared, tmp_path) -> None:
    cfg = tiny_config.model_copy(deep=True)
    cfg.export.parity_tolerance = 1e-12  # fp32 kernels differ by ~1e-8: must fail loudly
    out = tmp_path / "bundle"
    trained = train_model(cfg, "sbl", prepared=tiny_prepared, progress=False)
    with pytest.raises(ExportError, match="parity check failed"):
        export_bundle(cfg, trained, tiny_prepared, out, register=False, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_from_before_the_moa_attention_width_still_loads(
    tiny_bundle, tiny_config, tmp_path
) -> None:
    ckpt = sorted((tiny_config.train.checkpoint_dir).glob("tiny-moa-*.pt"))[-1]
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    d = state["head"]["combiner.query.weight"].shape[1]
    del state["config"]["train"]["moa_attention_dim"]  # an older checkpoint: full-width q / k
    for name in ("combiner.query.weight", "combiner.key.weight"):
        state["head"][name] = torch.randn(d, d)
    torch.save(state, tmp_path / "old.pt")
    cfg, trained = load_checkpoint(tmp_path / "old.pt")
    assert cfg.train.moa_attention_dim == d
    assert trained.model.head.combiner.query.weight.shape == (d, d)


def test_served_outputs_come_from_the_training_embeddings_and_match_the_int8_file(
    tiny_bundle, tiny_config, tiny_prepared
) -> None:
    """Frozen + int8 embeddings: thresholds, int8 evaluation and the reference profile are the
    head on the training embeddings, checked against the served int8 file."""
    from training.export import SERVED_CHECK_FLOOR, SERVED_CHECK_SLACK

    ev = c.Bundle.load(tiny_bundle).manifest.evaluation
    assert ev["served_outputs"] == "head on the training embeddings"
    check = ev["served_check_mean_abs_diff"]
    assert (
        0
        <= check["head_vs_file"]
        <= max(SERVED_CHECK_FLOOR, SERVED_CHECK_SLACK * check["file_vs_file"])
    )
    ref = c.Bundle.load(tiny_bundle).reference()
    tok = load_tokenizer(tiny_config.backbone)
    int8 = OnnxRunner.open(tiny_bundle / c.MODEL_INT8_ONNX, tok, 16).run(
        tiny_prepared.splits["reference"].texts
    )["probabilities"]
    probs = ref[[c.prob_column(x) for x in tiny_config.labels]].to_numpy()
    assert np.abs(probs - int8).mean() <= 0.02
    assert (probs.argmax(1) == int8.argmax(1)).mean() > 0.95
    test = tiny_prepared.splits["test"]
    on_test = OnnxRunner.open(tiny_bundle / c.MODEL_INT8_ONNX, tok, 16).run(test.texts)
    accuracy = (on_test["probabilities"].argmax(1) == test.labels).mean()
    evaluated = json.loads((tiny_bundle / "eval.json").read_text())["slices"]["overall"]
    assert abs(evaluated["accuracy"] - accuracy) <= 0.05  # eval.json is the int8 file's


def test_served_outputs_fall_back_to_the_file_when_the_head_is_off(
    tiny_config, tiny_prepared, tiny_bundle
) -> None:
    """Embeddings that are not the served encoder's (rows shuffled: every text gets another's
    features) fail the check, and every split then runs through the served file."""
    from training.export import served_outputs

    _, trained = load_checkpoint(sorted(tiny_config.train.checkpoint_dir.glob("tiny-moa-*.pt"))[-1])
    val = tiny_prepared.splits["validation"]
    shuffled = copy.deepcopy(tiny_prepared)
    emb = shuffled.splits["validation"].embeddings
    emb[:] = emb[np.random.default_rng(0).permutation(len(emb))]
    tok = load_tokenizer(tiny_config.backbone)
    outputs, check = served_outputs(tiny_config, trained, shuffled, tiny_bundle, tok, None)
    assert check is None
    want = OnnxRunner.open(tiny_bundle / c.MODEL_INT8_ONNX, tok, 16).run(val.texts)
    np.testing.assert_array_equal(outputs(val)["probabilities"], want["probabilities"])
    _, check = served_outputs(tiny_config, trained, tiny_prepared, tiny_bundle, tok, None)
    assert check is not None  # the same call on the true embeddings takes the shortcut


def test_served_outputs_run_the_file_when_the_embeddings_are_not_the_served_ones(
    tiny_config, tiny_prepared, tiny_bundle
) -> None:
    from training.export import embeddings_are_served, served_outputs

    _, trained = load_checkpoint(sorted(tiny_config.train.checkpoint_dir.glob("tiny-moa-*.pt"))[-1])
    assert embeddings_are_served(tiny_config, trained, tiny_prepared)
    fp32_embedded = tiny_config.model_copy(deep=True)
    fp32_embedded.backbone.embed_runtime = "torch"  # int8 served, fp32 features trained on
    assert not embeddings_are_served(fp32_embedded, trained, tiny_prepared)
    trained.mode = "finetune"  # the encoder moved: the cached embeddings are not its features
    assert not embeddings_are_served(tiny_config, trained, tiny_prepared)
    tok = load_tokenizer(tiny_config.backbone)
    outputs, check = served_outputs(tiny_config, trained, tiny_prepared, tiny_bundle, tok, None)
    val = tiny_prepared.splits["validation"]
    want = OnnxRunner.open(tiny_bundle / c.MODEL_INT8_ONNX, tok, 16).run(val.texts)
    assert check is None
    np.testing.assert_array_equal(outputs(val)["probabilities"], want["probabilities"])
