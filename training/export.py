"""Export a trained classifier as the artifact bundle of docs/design.md §5.

Steps: TorchScript-based ONNX export with dynamic batch and sequence axes (it gives a graph
that ONNX Runtime's BERT optimizer fuses into `Attention` / `SkipLayerNormalization`; the
dynamo exporter's graph does not fuse) → transformer optimisation → int8 dynamic quantisation
of the *unfused* graph (quantising the fused one fails) → parity against torch on fresh
inputs (fails loudly above the tolerance) → slice thresholds tuned on validation (indicator
F1) → reference profile, evaluation, manifest → atomic rename into place → registration in
the BentoML model store.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slicewise.core import contracts as c
from slicewise.core.errors import SlicewiseError
from slicewise.core.slice_rules import RULE_KINDS, SliceError, compile_rule, import_plugins
from training.backbone import load_tokenizer, token_batches
from training.checkpoint import TrainedModel
from training.config import ProjectConfig, SliceConfig
from training.evaluate import slice_metrics
from training.onnx_ops import optimize_onnx, quantize_onnx
from training.prepared import EncodedSplit, PreparedData
from training.slices import slice_evaluator

log = logging.getLogger("slicewise.training")
PARITY_TEXTS = [
    "I would not fly with them again, never.",
    "Is the flight delayed?",
    "ok",
    "What a wonderful day for a drive with the new car, I love it so much!!! http://t.co/x",
    "@united lost my bag again... no response from customer service #fail",
]


RulesFn = Callable[[list[str]], np.ndarray]


class ExportError(SlicewiseError, RuntimeError):
    """The export failed a check (e.g. ONNX/torch parity); nothing was written."""


def rules_fn(cfg: ProjectConfig) -> RulesFn:
    """Texts → the `slice_rules` input (float32 `[N, k]`, exact 0/1) from the config's rules."""
    evaluator = slice_evaluator(cfg)
    return lambda texts: evaluator.evaluate(texts).astype(np.float32)


def model_inputs(model: torch.nn.Module) -> list[str]:
    """The exported graph's inputs: `slice_rules` too when the head routes on rules."""
    return list(c.INPUT_NAMES) + ([c.SLICE_RULES_INPUT] if model.head.uses_rules else [])


@dataclass
class OnnxRunner:
    """Tokenizer + ONNX Runtime session: runs texts through an exported model.

    `rules` gives the `slice_rules` input for a batch of texts; needed when the graph takes it.
    """

    session: Any
    tokenizer: Any
    max_length: int
    rules: RulesFn | None = None

    @classmethod
    def open(
        cls,
        model_path: Path,
        tokenizer: Any,
        max_length: int,
        rules: RulesFn | None = None,
        providers: tuple[str, ...] = ("CPUExecutionProvider",),
    ) -> OnnxRunner:
        """Open `model_path` on `providers` (the CPU provider unless told otherwise).

        Raises:
            ExportError: the model takes `slice_rules` and no `rules` is given.
        """
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(model_path), opts, providers=list(providers))
        takes_rules = c.SLICE_RULES_INPUT in {i.name for i in session.get_inputs()}
        if takes_rules and rules is None:
            raise ExportError(f"{model_path} takes {c.SLICE_RULES_INPUT!r}; pass rules=")
        return cls(session, tokenizer, max_length, rules if takes_rules else None)

    def run(self, texts: list[str], batch_size: int = 64) -> dict[str, np.ndarray]:
        """Outputs for `texts`, in batches of like token count (`token_batches`), in input order."""
        parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {n: [] for n in c.OUTPUT_NAMES}
        for idx, feeds in token_batches(self.tokenizer, texts, self.max_length, batch_size):
            if self.rules is not None:
                feeds[c.SLICE_RULES_INPUT] = self.rules([texts[i] for i in idx])
            for name, arr in zip(
                c.OUTPUT_NAMES, self.session.run(list(c.OUTPUT_NAMES), feeds), strict=True
            ):
                parts[name].append((idx, arr))
        out = {}
        for name, chunks in parts.items():
            width = chunks[0][1].shape[1]
            full = np.zeros((len(texts), width), dtype=np.float32)
            for idx, arr in chunks:
                full[idx] = arr
            out[name] = full
        return out


def export_onnx(model: torch.nn.Module, tokenizer: Any, path: Path, opset: int) -> None:
    """TorchScript-based ONNX export with dynamic batch and sequence axes.

    A head that routes on rules gets a third input, `slice_rules [batch, k]` (float32).
    """
    enc = tokenizer(PARITY_TEXTS[:2], padding=True, return_tensors="pt")
    inputs = model_inputs(model)
    args: tuple[torch.Tensor, ...] = (enc["input_ids"], enc["attention_mask"])
    if c.SLICE_RULES_INPUT in inputs:  # traced with 1/0 values; NaN follows the same graph
        args += (torch.ones(2, model.head.num_slices),)
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in c.INPUT_NAMES}
    axes.update({n: {0: "batch"} for n in (*inputs[len(c.INPUT_NAMES) :], *c.OUTPUT_NAMES)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated but fuses best
        torch.onnx.export(
            model.eval(),
            args,
            str(path),
            input_names=inputs,
            output_names=list(c.OUTPUT_NAMES),
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )


def convert_fp16(src: Path, dst: Path) -> None:
    """fp16 copy of a fused model for the CUDA provider (inputs and outputs keep their types).

    The final softmax and the slice sigmoids stay fp32 (`op_block_list`), so the served
    probabilities keep full precision. The CPU provider runs it too (through casts, slower than
    fp32): the service picks it only on CUDA.
    """
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    model.convert_float_to_float16(
        keep_io_types=True, op_block_list=["Softmax", "Sigmoid", "SoftmaxCrossEntropyLoss"]
    )
    model.save_model_to_file(str(dst))


def check_parity(model: torch.nn.Module, runner: OnnxRunner, tolerance: float) -> dict[str, float]:
    """Max abs difference ORT vs torch per output on fresh inputs (batch 1 and a mixed batch).

    A model that takes `slice_rules` gets the runner's rules for the texts on both sides.

    Raises:
        ExportError: when any output differs by more than `tolerance`.
    """
    worst = dict.fromkeys(c.OUTPUT_NAMES, 0.0)
    for texts in ([PARITY_TEXTS[3]], PARITY_TEXTS):
        enc = runner.tokenizer(
            texts, padding=True, truncation=True, max_length=runner.max_length, return_tensors="pt"
        )
        rules = None if runner.rules is None else torch.from_numpy(runner.rules(texts))
        with torch.inference_mode():
            expected = model(enc["input_ids"], enc["attention_mask"], rules)
        got = runner.run(texts, batch_size=len(texts)) if len(texts) > 1 else runner.run(texts)
        for name, e in zip(c.OUTPUT_NAMES, expected, strict=True):
            worst[name] = max(worst[name], float(np.abs(got[name] - e.numpy()).max()))
    bad = {k: v for k, v in worst.items() if v > tolerance}
    if bad:
        raise ExportError(f"ONNX/torch parity check failed: max abs diff {bad} exceeds {tolerance}")
    return worst


def tune_thresholds(scores: np.ndarray, membership: np.ndarray) -> list[float]:
    """Per slice, the threshold on the membership score that maximises indicator F1."""
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    out = []
    for j in range(scores.shape[1]):
        truth = membership[:, j].astype(bool)
        f1s = []
        for t in grid:
            pred = scores[:, j] >= t
            tp = float((pred & truth).sum())
            denom = float(pred.sum() + truth.sum())
            f1s.append(2 * tp / denom if denom else 0.0)
        best = max(f1s)
        # among equally good thresholds take the one closest to 0.5
        candidates = [t for t, f in zip(grid, f1s, strict=True) if f >= best - 1e-12]
        out.append(float(min(candidates, key=lambda t: abs(t - 0.5))))
    return out


def reference_profile(
    cfg: ProjectConfig,
    outputs: dict[str, np.ndarray],
    texts: list[str],
    labels: np.ndarray,
    membership: np.ndarray,
) -> Any:
    """The model's outputs on the reference split, in the columns of `slicewise.core.contracts`.

    Slice columns hold membership as the service returns it in `slices` (exact, from the slice
    rules), so the monitor cuts reference and production rows the same way.
    """
    import pandas as pd

    probs = outputs["probabilities"]
    cols: dict[str, Any] = {c.prob_column(lab): probs[:, i] for i, lab in enumerate(cfg.labels)}
    cols[c.PREDICTED_LABEL_COLUMN] = [cfg.labels[i] for i in probs.argmax(1)]
    cols[c.CONFIDENCE_COLUMN] = probs.max(1)
    for j, name in enumerate(cfg.slice_names):
        # `slice_<name>` is what the service logs as `slices`: every config slice has a rule
        # the service evaluates, so exact membership; the learned score is kept beside it
        cols[c.slice_score_column(name)] = membership[:, j].astype(np.float32)
        cols[c.learned_score_column(name)] = outputs["slice_membership"][:, j]
        cols[c.slice_fn_column(name)] = membership[:, j].astype(np.int8)
    cols[c.TEXT_LENGTH_COLUMN] = np.array([len(t) for t in texts], dtype=np.int64)
    cols[c.TRUE_LABEL_COLUMN] = [cfg.labels[i] for i in labels]
    return pd.DataFrame(cols)


def export_bundle(
    cfg: ProjectConfig,
    trained: TrainedModel,
    prepared: PreparedData,
    out_dir: str | Path | None = None,
    *,
    register: bool | None = None,
    progress: bool = True,
) -> c.Bundle:
    """Write the artifact bundle atomically into `out_dir` and (optionally) register it.

    Args:
        cfg: project config (export settings, slices, labels).
        trained: the model to export, with its provenance.
        prepared: the prepared data (validation for thresholds, test for the evaluation,
            reference for the reference profile).
        out_dir: bundle folder (default: `cfg.export.output_dir`).
        register: register in the BentoML model store (default: `cfg.export.register_model`).
        progress: show progress bars.

    Returns:
        The bundle, loaded back from `out_dir`.

    Raises:
        ExportError: parity failure or another failed check; `out_dir` is left as it was.
    """
    out = Path(out_dir or cfg.export.output_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        bundle = _write_bundle(cfg, trained, prepared, tmp, progress)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{trained.version}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bundle = c.Bundle.load(out)
    if cfg.export.register_model if register is None else register:
        from training.registry import register_bundle

        register_bundle(bundle)
    return bundle


def slice_rule(slice_cfg: SliceConfig) -> c.SliceRule:
    """A config slice's definition as the manifest carries it."""
    return c.SliceRule.model_validate(
        {k: getattr(slice_cfg, k) for k in RULE_KINDS if getattr(slice_cfg, k) is not None}
    )


def check_slice_rules(cfg: ProjectConfig) -> None:
    """Compile every slice rule as the service will (plugins imported first).

    Raises:
        ExportError: naming the slice whose rule does not compile; no bundle is written.
    """
    try:
        import_plugins(cfg.plugins)
        for s in cfg.slices:
            compile_rule(s.name, slice_rule(s))
    except SliceError as exc:
        raise ExportError(f"refusing to export: {exc}") from None


SERVED_CHECK_TEXTS = 256  # validation texts the served file runs to check the embedding path
# Dynamic int8 quantises activations per batch, so the served file's output for a text moves with
# its batch mates and padding: on the demo, 1,024 validation tweets in batches of 64 vs 256 differ
# by 0.03 in probability on average and in 3% of labels. So the head on the training embeddings
# is accepted when it is no farther from the served file than the file is from itself under
# another batching (mean |Δ probability| within SERVED_CHECK_SLACK of it, or below
# SERVED_CHECK_FLOOR); a wrong encoder, pooling or tokenizer is far outside that.
SERVED_CHECK_FLOOR = 0.01
SERVED_CHECK_SLACK = 1.5
SplitOutputs = Callable[[EncodedSplit], dict[str, np.ndarray]]


def head_outputs(head: torch.nn.Module, split: EncodedSplit, rules: RulesFn | None) -> dict:
    """The head's outputs (`c.OUTPUT_NAMES`) on a split's frozen embeddings."""
    assert split.texts is not None
    slice_rules = None if rules is None else torch.from_numpy(rules(split.texts))
    with torch.inference_mode():
        out = head.eval()(torch.from_numpy(split.embeddings), slice_rules)
    arrays = (out.probabilities, out.slice_membership, out.attention)
    return {n: a.float().numpy() for n, a in zip(c.OUTPUT_NAMES, arrays, strict=True)}


def embeddings_are_served(
    cfg: ProjectConfig, trained: TrainedModel, prepared: PreparedData
) -> bool:
    """Whether the training embeddings are what the served file's encoder computes: a frozen
    backbone, embedded by the exported encoder of the precision the bundle serves on CPU.
    """
    runtime = cfg.backbone.embed_runtime
    if runtime == "auto":
        runtime = "onnx-int8" if cfg.export.quantize else "onnx"
    served = "onnx-int8" if cfg.export.quantize else "onnx"
    return trained.mode == "frozen" and runtime == served and prepared.dim > 0


def served_outputs(
    cfg: ProjectConfig,
    trained: TrainedModel,
    prepared: PreparedData,
    dst: Path,
    tokenizer: Any,
    rules: RulesFn | None,
) -> tuple[SplitOutputs, dict[str, float] | None]:
    """Outputs of the served model (int8 when the bundle has it) per split, and the check.

    When the training embeddings come from the served encoder (`embeddings_are_served`), the
    outputs are the head on those embeddings: seconds instead of running the whole model over
    three splits again. The served file runs `SERVED_CHECK_TEXTS` validation texts in two
    batchings; the head must be as close to it as it is to itself (see `SERVED_CHECK_SLACK`).
    The check returned is `{"head_vs_file", "file_vs_file"}` (mean abs differences); if the
    head fails it, or the embeddings are not the served ones, the served file runs every split
    (the check is None).
    """
    served = dst / (c.MODEL_INT8_ONNX if cfg.export.quantize else c.MODEL_ONNX)
    runner = OnnxRunner.open(served, tokenizer, cfg.backbone.max_length, rules)
    from_file: SplitOutputs = lambda split: runner.run(split.texts)  # noqa: E731
    if not embeddings_are_served(cfg, trained, prepared):
        return from_file, None
    head = trained.model.head
    from_head: SplitOutputs = lambda split: head_outputs(head, split, rules)  # noqa: E731
    val = prepared.splits["validation"]
    idx = np.unique(np.linspace(0, len(val) - 1, min(len(val), SERVED_CHECK_TEXTS)).astype(int))
    sample = val.subset(idx)
    assert sample.texts is not None
    file_a = from_file(sample)["probabilities"]
    file_b = runner.run(sample.texts, batch_size=16)["probabilities"]
    check = {
        "head_vs_file": float(np.abs(from_head(sample)["probabilities"] - file_a).mean()),
        "file_vs_file": float(np.abs(file_b - file_a).mean()),
    }
    allowed = max(SERVED_CHECK_FLOOR, SERVED_CHECK_SLACK * check["file_vs_file"])
    if check["head_vs_file"] > allowed:
        log.warning(
            "the head on the training embeddings differs from %s by %.4f on average, more than "
            "the %.4f allowed (the file differs from itself by %.4f under another batching): "
            "running the served file on every split instead",
            served.name,
            check["head_vs_file"],
            allowed,
            check["file_vs_file"],
        )
        return from_file, None
    return from_head, check


def _write_bundle(
    cfg: ProjectConfig, trained: TrainedModel, prepared: PreparedData, dst: Path, progress: bool
) -> c.Bundle:
    check_slice_rules(cfg)
    model = trained.model.eval()
    tokenizer = load_tokenizer(cfg.backbone)
    tokenizer.save_pretrained(str(dst / c.TOKENIZER_DIR))
    raw = dst / "model.unfused.onnx"
    export_onnx(model, tokenizer, raw, cfg.export.opset)
    fused = optimize_onnx(raw, dst / c.MODEL_ONNX, model.encoder.config)
    if cfg.export.quantize:
        quantize_onnx(raw, dst / c.MODEL_INT8_ONNX)
    if cfg.export.fp16:
        convert_fp16(dst / c.MODEL_ONNX, dst / c.MODEL_FP16_ONNX)
    raw.unlink()
    for extra in dst.glob("*.onnx.data"):
        extra.unlink()
    rules = rules_fn(cfg) if model.head.uses_rules else None
    runner = OnnxRunner.open(dst / c.MODEL_ONNX, tokenizer, cfg.backbone.max_length, rules)
    parity = check_parity(model, runner, cfg.export.parity_tolerance)
    served, served_check = served_outputs(cfg, trained, prepared, dst, tokenizer, rules)

    val, test, ref = (prepared.splits[s] for s in ("validation", "test", "reference"))
    assert val.texts is not None and test.texts is not None and ref.texts is not None
    thresholds = tune_thresholds(served(val)["slice_membership"], val.membership)
    served_file = c.MODEL_INT8_ONNX if cfg.export.quantize else c.MODEL_ONNX
    evaluation = {  # of what the service runs on CPU: the retrain gate compares like with like
        "split": "test",
        "model_kind": trained.kind,
        "runtime": f"onnxruntime {served_file}",
        "slices": slice_metrics(
            test.labels,
            served(test)["probabilities"].argmax(1),
            test.membership,
            cfg.slice_names,
            cfg.labels,
        ),
    }
    (dst / c.EVAL_JSON).write_text(json.dumps(evaluation, indent=2))
    reference_profile(cfg, served(ref), ref.texts, ref.labels, ref.membership).to_parquet(
        dst / c.REFERENCE_PARQUET, index=False
    )

    slices = [
        c.SliceInfo(
            name=s.name,
            description=s.description,
            threshold=t,
            monitored=s.monitored,
            rule=slice_rule(s),
            membership="rule",
        )
        for s, t in zip(cfg.slices, thresholds, strict=True)
    ]
    manifest = c.Manifest(
        version=trained.version,
        created_at=c.utc_now_iso(),
        labels=cfg.labels,
        slices=slices,
        max_length=cfg.backbone.max_length,
        backbone=cfg.backbone.name,
        model_kind=trained.kind,
        inputs=model_inputs(model),
        training={
            "mode": trained.mode,
            "seed": trained.seed,
            "best_epoch": trained.best_epoch,
            "val_macro_f1": trained.val_macro_f1,
            "project": cfg.name,
            "hyperparameters": cfg.train.model_dump(mode="json"),
        },
        evaluation={
            "overall_macro_f1": evaluation["slices"]["overall"]["macro_f1"],
            "overall_accuracy": evaluation["slices"]["overall"]["accuracy"],
            "parity_max_abs_diff": parity,
            "fused_ops": fused,
            "has_int8": bool(cfg.export.quantize),
            "evaluated_file": served_file,
            "served_outputs": "head on the training embeddings"
            if served_check is not None
            else "ONNX Runtime on the served file",
            "served_check_mean_abs_diff": served_check,
        },
        dataset_fingerprint=prepared.fingerprint,
        plugins=cfg.plugins,
    )
    (dst / c.MANIFEST_JSON).write_text(manifest.model_dump_json(indent=2))
    return c.Bundle.load(dst)


def train_and_export(
    cfg: ProjectConfig | None,
    *,
    checkpoint: Path | None = None,
    out_dir: str | Path | None = None,
    register: bool | None = None,
) -> c.Bundle:
    """`slicewise export` (and `make run`'s first step): a checkpoint, or a model trained now,
    written as the artifact bundle.

    Args:
        cfg: project config; None: the config stored in `checkpoint`.
        checkpoint: a checkpoint from `slicewise train`; None: train `cfg.train.kind` now.
        out_dir: bundle folder (default: `cfg.export.output_dir`).
        register: register in the BentoML model store (default: `cfg.export.register_model`).

    Returns:
        The bundle, loaded back from `out_dir`.

    Raises:
        ExportError: a failed check (parity, ...); `out_dir` is left as it was.
    """
    from training.checkpoint import load_checkpoint
    from training.prepared import prepare_data
    from training.train import train_model

    if checkpoint is not None:
        saved_cfg, trained = load_checkpoint(checkpoint)
        cfg = cfg or saved_cfg
        prepared = prepare_data(cfg)
    else:
        if cfg is None:
            raise ExportError("export needs a config or a checkpoint")
        prepared = prepare_data(cfg)
        trained = train_model(cfg, prepared=prepared)
    return export_bundle(cfg, trained, prepared, out_dir, register=register)
