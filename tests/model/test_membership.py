"""`train.membership: rules`: the combiner routes on the rules' membership, in torch and in ONNX."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from slicewise.core import contracts as c
from training.backbone import load_tokenizer
from training.config import ConfigError, parse_config
from training.export import OnnxRunner, export_bundle, rules_fn
from training.model import SliceAwareHead
from training.train import load_checkpoint, predict_head, train_head, train_model

FRESH = ["never seen before: not bad at all", "what?", "x", "not good good good ?"]
NAN = float("nan")


def _heads(kind: str) -> tuple[SliceAwareHead, SliceAwareHead]:
    """A learned and a rules head of `kind` with the same weights (temperature 0.1)."""
    torch.manual_seed(0)
    learned = SliceAwareHead(16, 3, 2, kind, 0.0, 0.1, 8, "learned").eval()
    rules = SliceAwareHead(16, 3, 2, kind, 0.0, 0.1, 8, "rules").eval()
    rules.load_state_dict(learned.state_dict())
    return learned, rules


@pytest.mark.parametrize("kind", ["sbl", "moa"])
def test_rules_attention_follows_the_given_membership(kind: str) -> None:
    _, head = _heads(kind)
    h = torch.randn(6, 16)
    in_first = head(h, torch.tensor([[1.0, 0.0]] * 6))
    in_second = head(h, torch.tensor([[0.0, 1.0]] * 6))
    # membership moves attention towards the member slice's expert, and the output with it
    assert (in_first.attention[:, 1] > in_second.attention[:, 1]).all()
    assert (in_second.attention[:, 2] > in_first.attention[:, 2]).all()
    assert (in_first.probabilities - in_second.probabilities).abs().max() > 1e-4
    # the indicators are still computed and reported, whatever the rules say
    torch.testing.assert_close(in_first.slice_membership, in_second.slice_membership)


@pytest.mark.parametrize("kind", ["sbl", "moa"])
def test_nan_rule_falls_back_to_the_indicator(kind: str) -> None:
    _, head = _heads(kind)
    h = torch.randn(6, 16)
    q = head(h, torch.zeros(6, 2)).slice_membership
    with_nan = head(h, torch.tensor([[1.0, NAN]] * 6))
    with_q = head(h, torch.stack([torch.ones(6), q[:, 1]], 1))
    torch.testing.assert_close(with_nan.attention, with_q.attention)
    torch.testing.assert_close(with_nan.probabilities, with_q.probabilities)


@pytest.mark.parametrize("kind", ["baseline", "sbl", "moa"])
def test_learned_mode_and_the_baseline_ignore_the_rules(kind: str) -> None:
    learned, rules = _heads(kind)
    h = torch.randn(6, 16)
    a, b = learned(h, torch.ones(6, 2)), learned(h, torch.zeros(6, 2))
    torch.testing.assert_close(a.probabilities, b.probabilities)
    torch.testing.assert_close(a.probabilities, learned(h).probabilities)
    if kind == "baseline":  # no combiner input to replace: rules == learned, no extra input
        assert not rules.uses_rules
        torch.testing.assert_close(rules(h).probabilities, a.probabilities)


def test_rules_head_needs_rules_of_the_right_shape() -> None:
    _, head = _heads("sbl")
    with pytest.raises(ValueError, match="pass slice_rules"):
        head(torch.randn(2, 16))
    with pytest.raises(ValueError, match=r"expected \(2, 2\)"):
        head(torch.randn(2, 16), torch.ones(2, 3))


def test_config_validates_membership(tiny_config) -> None:
    data = tiny_config.model_dump(mode="json")
    data["train"]["membership"] = "rules"
    assert parse_config(data).train.membership == "rules"
    assert parse_config({"labels": ["a", "b"]}).train.membership == "learned"
    data["train"]["membership"] = "rule"
    with pytest.raises(ConfigError, match=r"train\.membership: Input should be 'learned' or"):
        parse_config(data, "p.yaml")


@pytest.fixture(scope="module")
def rules_config(tiny_config):
    cfg = tiny_config.model_copy(deep=True)
    cfg.train.membership = "rules"
    return cfg


def test_rules_head_trains_and_routes_on_the_slice_rule(rules_config, tiny_prepared) -> None:
    tr, va = tiny_prepared.splits["train"], tiny_prepared.splits["validation"]
    res = train_head(rules_config, "sbl", tr, va, seed=0, progress=False)
    assert res.head.uses_rules
    out = predict_head(res.head, va.embeddings, va.membership)
    neg = va.membership[:, 0]
    # the `negation` expert gets more attention inside the slice than outside it
    assert out["slice_attention"][neg, 1].mean() > out["slice_attention"][~neg, 1].mean()
    acc = (out["probabilities"].argmax(1) == va.labels).mean()
    assert acc > 0.8


@pytest.fixture(scope="module")
def rules_bundle(rules_config, tiny_prepared, tmp_path_factory):
    trained = train_model(rules_config, "moa", seed=0, prepared=tiny_prepared, progress=False)
    out = tmp_path_factory.mktemp("rules-bundle") / "bundle"
    bundle = export_bundle(rules_config, trained, tiny_prepared, out, register=False)
    return bundle, trained


def test_rules_bundle_takes_slice_rules_and_lists_it(rules_bundle) -> None:
    bundle, _ = rules_bundle
    assert bundle.manifest.inputs == ["input_ids", "attention_mask", c.SLICE_RULES_INPUT]
    assert bundle.manifest.training["hyperparameters"]["membership"] == "rules"
    for name in (c.MODEL_ONNX, c.MODEL_INT8_ONNX):
        s = ort.InferenceSession(str(bundle.path / name))
        inputs = {i.name: i for i in s.get_inputs()}
        assert list(inputs) == bundle.manifest.inputs
        rules = inputs[c.SLICE_RULES_INPUT]
        assert rules.type == "tensor(float)" and isinstance(rules.shape[0], str)
    assert max(bundle.manifest.evaluation["parity_max_abs_diff"].values()) <= 1e-4


@pytest.mark.parametrize("variant", ["exact", "flipped", "nan"])
def test_onnx_with_slice_rules_matches_torch(rules_bundle, rules_config, variant) -> None:
    bundle, trained = rules_bundle
    exact = rules_fn(rules_config)(FRESH)
    given = {"exact": exact, "flipped": 1 - exact, "nan": exact.copy()}[variant]
    if variant == "nan":
        given[:, 1] = np.nan  # `question` not evaluated: the model uses its indicator
    tok = load_tokenizer(rules_config.backbone)
    by_text = dict(zip(FRESH, given, strict=True))  # the runner reorders texts by length
    runner = OnnxRunner.open(
        bundle.path / c.MODEL_ONNX, tok, 16, lambda texts: np.stack([by_text[t] for t in texts])
    )
    got = runner.run(FRESH, batch_size=len(FRESH))
    enc = tok(FRESH, padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.inference_mode():
        want = trained.model(enc["input_ids"], enc["attention_mask"], torch.from_numpy(given))
    for name, w in zip(c.OUTPUT_NAMES, want, strict=True):
        np.testing.assert_allclose(got[name], w.numpy(), atol=1e-4)
    if variant == "flipped":  # the rules input really reaches the graph's attention
        exact_out = OnnxRunner.open(
            bundle.path / c.MODEL_ONNX, tok, 16, rules_fn(rules_config)
        ).run(FRESH, batch_size=len(FRESH))
        assert np.abs(exact_out["slice_attention"] - got["slice_attention"]).max() > 1e-3


def test_checkpoint_without_the_membership_setting_loads_as_learned(
    rules_bundle, rules_config, tmp_path
) -> None:
    ckpt = sorted(rules_config.train.checkpoint_dir.glob("tiny-moa-*.pt"))[-1]
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["config"]["train"]["membership"] == "rules"
    cfg, trained = load_checkpoint(ckpt)
    assert trained.model.head.uses_rules and cfg.train.membership == "rules"
    del state["config"]["train"]["membership"]  # a checkpoint from before the setting
    torch.save(state, tmp_path / "old.pt")
    cfg, trained = load_checkpoint(tmp_path / "old.pt")
    assert cfg.train.membership == "learned" and not trained.model.head.uses_rules


@pytest.mark.parametrize("evaluate_rules", [True, False])
def test_service_runtime_feeds_the_rules_input(rules_bundle, rules_config, evaluate_rules) -> None:
    from service.runtime import ModelRuntime

    bundle, trained = rules_bundle
    runtime = ModelRuntime.load(bundle, prefer_int8=False, evaluate_rules=evaluate_rules)
    got, _ = runtime.predict(FRESH)
    # rules on: the core evaluator's exact membership; off: NaN, the learned indicators route
    rules = rules_fn(rules_config)(FRESH)
    given = rules if evaluate_rules else np.full_like(rules, np.nan)
    tok = load_tokenizer(rules_config.backbone)
    enc = tok(FRESH, padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.inference_mode():
        want = trained.model(enc["input_ids"], enc["attention_mask"], torch.from_numpy(given))
    for name, w in zip(c.OUTPUT_NAMES, want, strict=True):
        np.testing.assert_allclose(got[name], w.numpy(), atol=1e-4)
    if evaluate_rules:
        np.testing.assert_array_equal(got["slices"], rules)
