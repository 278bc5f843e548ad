"""`slicewise retrain`: train a candidate on fresh data, gate it per slice, promote or reject.

Data = the project's labelled training split + feedback labels joined to logged texts (needs
raw-text logging) + optionally weak labels for logged texts without feedback
(`training.weak`: the config's labeling functions and the triplet label model, with the Epoxy
extension when it beats the LFs' own labels on validation, see `weak_examples`). Hard labels
(labelled data, feedback) and weak soft labels are trained on together as `[N, C]` targets: a
hard label is a one-hot row.

The candidate is exported to a scratch folder and compared with the production model on the
same held-out test split (both through ONNX Runtime). Promotion registers the candidate and
writes its version to the Redis key the service watches; the outcome is counted in Redis
(exported by the monitor as `slicewise_retrain_runs_total`) and a run report is written. A crash
midway leaves production untouched and counts as `failed`.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis

from slicewise.core import contracts as c
from slicewise.core.errors import SlicewiseError
from slicewise.core.feedback import read_feedback_labels
from slicewise.core.log_entries import logged_records
from training.config import ProjectConfig
from training.promotion import GateDecision, promotion_gate

log = logging.getLogger("slicewise.retrain")


class RetrainError(SlicewiseError, RuntimeError):
    """Retraining cannot start (no production model, mismatched labels or slices, …)."""


@dataclass
class RetrainReport:
    """What one retrain run did."""

    outcome: str  # promoted | rejected | failed
    candidate_version: str | None
    production_version: str | None
    decision: dict[str, Any] = field(default_factory=dict)
    data: dict[str, int] = field(default_factory=dict)
    candidate_metrics: dict[str, Any] = field(default_factory=dict)
    production_metrics: dict[str, Any] = field(default_factory=dict)
    reason: Any = None
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None


def production_bundle(client: redis.Redis, fallback_dir: Path | None) -> c.Bundle:
    """The model in production: the version named in Redis, else `fallback_dir`, else `:latest`."""
    version = client.get(c.PRODUCTION_VERSION_KEY)
    if version:
        return c.resolve_bundle(None, f"{c.MODEL_NAME}:{version.decode()}")
    return c.resolve_bundle(str(fallback_dir) if fallback_dir else None, f"{c.MODEL_NAME}:latest")


def feedback_examples(
    client: redis.Redis, labels: list[str], count: int = 100_000
) -> tuple[list[str], list[str]]:
    """(texts, labels) of logged predictions that received feedback and have their text logged
    (each prediction once, with its current label).
    """
    feedback = read_feedback_labels(client, count)
    texts, ys = [], []
    for rec in logged_records(client, count):
        if rec.id in feedback and rec.text is not None and feedback[rec.id] in labels:
            texts.append(rec.text)
            ys.append(feedback[rec.id])
    return texts, ys


def logged_texts(client: redis.Redis, exclude: set[str], count: int = 100_000) -> list[str]:
    """Texts of logged predictions (raw-text logging on) whose id is not in `exclude`."""
    return [
        r.text for r in logged_records(client, count) if r.text is not None and r.id not in exclude
    ]


def weak_examples(
    cfg: ProjectConfig, texts: list[str], prepared: Any = None
) -> tuple[list[str], np.ndarray]:
    """(covered texts, probabilistic labels) from the config's LFs and the triplet label model.

    With `prepared` (its train and validation splits) and `weak_supervision.extend` on, the
    Epoxy extension is tried: thresholds tuned on validation, and the logged texts are labelled
    by the extended votes (`EpoxyClassifier`) only when those beat the LFs' own on validation
    (`choose_extension`); else the LFs' votes go to the label model as they are.
    """
    from training.weak import ABSTAIN, LFError, apply_lfs
    from training.weak.pipeline import fit_label_model

    if len(cfg.labeling_functions) < 3 or not texts:
        return [], np.zeros((0, len(cfg.labels)), np.float32)
    L = apply_lfs(texts, cfg, warn_silent=False)
    if prepared is not None and cfg.weak_supervision.extend:
        extended = _extended_labels(cfg, texts, L, prepared)
        if extended is not None:
            return extended
    covered = (L != ABSTAIN).any(1)
    try:
        probs = fit_label_model(cfg, L).predict_proba(L)
    except LFError as exc:
        log.warning("no weak labels for logged traffic: %s", exc)
        return [], np.zeros((0, len(cfg.labels)), np.float32)
    return [t for t, k in zip(texts, covered, strict=True) if k], probs[covered].astype(np.float32)


def _extended_labels(
    cfg: ProjectConfig, texts: list[str], L: np.ndarray, prepared: Any
) -> tuple[list[str], np.ndarray] | None:
    """Logged texts labelled by extended votes, or None when that does not help on validation."""
    from training.backbone import embed_texts
    from training.weak import LFError, apply_lfs
    from training.weak.epoxy import choose_extension

    tr, va = prepared.splits["train"], prepared.splits["validation"]
    balance = cfg.weak_supervision.class_balance
    try:
        choice = choose_extension(
            apply_lfs(tr.texts, cfg, warn_silent=False),
            tr.embeddings,
            apply_lfs(va.texts, cfg, warn_silent=False),
            va.embeddings,
            va.labels,
            len(cfg.labels),
            cfg.weak_supervision.threshold_grid,
            None if balance is None else np.asarray(balance),
        )
    except LFError as exc:
        log.warning("no Epoxy extension for logged traffic: %s", exc)
        return None
    log.info("Epoxy extension on validation (macro-F1): %s", choice.validation_macro_f1)
    if choice.classifier is None:
        return None
    emb = embed_texts(
        cfg.backbone, texts, cfg.train.embed_batch_size, cfg.train.cache_dir, progress=False
    )
    probs, covered = choice.classifier.predict_proba(L, emb)
    return [t for t, k in zip(texts, covered, strict=True) if k], probs[covered].astype(np.float32)


def soft_targets(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """`[N, C]` float32 training targets: int labels `[N]` become one-hot rows, soft rows stay."""
    if labels.ndim == 2:
        return labels.astype(np.float32, copy=False)
    return np.eye(num_classes, dtype=np.float32)[labels]


def _append(split: Any, cfg: ProjectConfig, texts: list[str], labels: np.ndarray) -> Any:
    """`split` plus `texts` (embedded, sliced) labelled `labels` (int `[n]` or soft `[n, C]`)."""
    from training.backbone import embed_texts
    from training.prepared import EncodedSplit
    from training.slices import slice_membership

    emb = embed_texts(
        cfg.backbone, texts, cfg.train.embed_batch_size, cfg.train.cache_dir, progress=False
    )
    old, new = split.labels, labels
    if old.ndim != new.ndim:  # hard + weak: train on soft targets, hard labels one-hot
        old, new = soft_targets(old, len(cfg.labels)), soft_targets(new, len(cfg.labels))
    return EncodedSplit(
        np.concatenate([split.embeddings, emb]),
        np.concatenate([old, new]),
        np.concatenate([split.membership, slice_membership(texts, cfg)]),
        (split.texts or []) + texts,
    )


def retrain(
    cfg: ProjectConfig,
    redis_url: str,
    *,
    production_dir: Path | None = None,
    report_dir: Path = Path(".slicewise/reports"),
    shuffle_labels: bool = False,
    use_feedback: bool = True,
    reason: Any = None,
    use_weak_labels: bool = True,
    progress: bool = True,
) -> RetrainReport:
    """Run one retrain: data, candidate, gate, promote or reject. Never raises after start-up;
    a failure is reported (outcome `failed`) and production stays as it was.

    Args:
        cfg: project config (`promotion` holds ε and δ).
        redis_url: Redis with the prediction log, feedback and the production key.
        production_dir: production bundle folder when Redis names no version.
        report_dir: where the run report (JSON) goes.
        shuffle_labels: train on shuffled labels (a deliberately worse candidate, for tests).
        use_feedback: add logged texts that got feedback labels.
        reason: why the run started (the webhook passes the alert); kept in the report.
        use_weak_labels: add logged texts without feedback, labelled by the LFs + label model.
        progress: show progress bars.

    Returns:
        The report: outcome (`promoted`, `rejected`, `failed`), versions, gate decision, data.

    Raises:
        RetrainError: before start-up only (no production model, labels or slices differ).
    """
    client = redis.Redis.from_url(redis_url)
    report = RetrainReport("failed", None, None, reason=reason)
    scratch = Path(tempfile.mkdtemp(prefix="slicewise-candidate-"))
    try:
        try:
            production: c.Bundle | None = production_bundle(client, production_dir)
        except c.BundleError:
            production = None  # first run on an empty store: the candidate becomes production
        if production is not None:
            report.production_version = production.manifest.version
            m = production.manifest
            if m.labels != cfg.labels or m.slice_names != cfg.slice_names:
                raise RetrainError(
                    f"production model {m.version} has labels {m.labels} and slices {m.slice_names}; "
                    f"the config has {cfg.labels} / {cfg.slice_names}"
                )
        report = _train_and_gate(
            cfg,
            client,
            production,
            scratch,
            report,
            shuffle_labels,
            use_feedback,
            progress,
            use_weak_labels,
        )
    except Exception as exc:  # recorded, production untouched
        report.outcome, report.error = "failed", f"{type(exc).__name__}: {exc}"
        log.error("retrain failed: %s", report.error)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        report.finished_at = time.time()
        _record(client, report, report_dir)
    return report


def _train_and_gate(
    cfg: ProjectConfig,
    client: redis.Redis,
    production: c.Bundle | None,
    scratch: Path,
    report: RetrainReport,
    shuffle_labels: bool,
    use_feedback: bool,
    progress: bool,
    use_weak_labels: bool = True,
) -> RetrainReport:
    from training.backbone import load_tokenizer
    from training.evaluate import slice_metrics
    from training.export import OnnxRunner, export_bundle
    from training.train import label_ids, prepare_data, train_model

    prepared = prepare_data(cfg, progress)
    train = prepared.splits["train"]
    report.data["labelled"] = len(train)
    # Logged texts that are also in the validation or test split never train the candidate: the
    # gate judges it on the test split (and validation picks its thresholds), so a text learned
    # with its feedback label there would inflate its scores (the demo replays held-out data).
    held_out = {t for name in ("validation", "test") for t in prepared.splits[name].texts or []}
    excluded = 0
    if use_feedback:
        texts, labels = feedback_examples(client, cfg.labels)
        keep = [t not in held_out for t in texts]
        excluded += keep.count(False)
        texts = [t for t, k in zip(texts, keep, strict=True) if k]
        labels = [y for y, k in zip(labels, keep, strict=True) if k]
        if texts:
            train = _append(train, cfg, texts, label_ids(labels, cfg.labels))
        report.data["feedback"] = len(texts)
    if use_weak_labels:  # logged texts without feedback, labelled by the LFs + label model
        feedback_ids = set(read_feedback_labels(client))
        logged = logged_texts(client, feedback_ids)
        unseen = [t for t in logged if t not in held_out]
        excluded += len(logged) - len(unseen)
        weak_texts, weak_probs = weak_examples(
            cfg, unseen, prepared if cfg.train.mode == "frozen" else None
        )
        if weak_texts:
            train = _append(train, cfg, weak_texts, weak_probs)
        report.data["weak"] = len(weak_texts)
    report.data["held_out_excluded"] = excluded
    if excluded:
        log.info(
            "retrain: %d logged texts are in the validation/test split: not trained on", excluded
        )
    if shuffle_labels:  # a deliberately worse candidate, for testing the gate
        train.labels = np.random.default_rng(0).permutation(train.labels)
        report.data["shuffled_labels"] = 1
    prepared.splits["train"] = train
    trained = train_model(cfg, prepared=prepared, progress=progress)
    candidate = export_bundle(
        cfg, trained, prepared, scratch / "bundle", register=False, progress=progress
    )
    report.candidate_version = candidate.manifest.version
    report.candidate_metrics = json.loads((candidate.path / c.EVAL_JSON).read_text())["slices"]

    if production is None:
        decision = GateDecision(True, ["no production model yet: the first candidate is promoted"])
    else:
        test = prepared.splits["test"]
        assert test.texts is not None
        runner = OnnxRunner.open(  # the file it serves on CPU, as the candidate's eval.json
            production.model_file(prefer_int8=cfg.export.quantize),
            load_tokenizer(cfg.backbone),
            production.manifest.max_length,
        )
        prod_pred = runner.run(test.texts)["probabilities"].argmax(1)
        report.production_metrics = slice_metrics(
            test.labels, prod_pred, test.membership, cfg.slice_names, cfg.labels
        )
        decision = promotion_gate(
            report.candidate_metrics,
            report.production_metrics,
            cfg.monitored_slices,
            max_overall_drop=cfg.promotion.max_overall_drop,
            max_slice_drop=cfg.promotion.max_slice_drop,
        )
    report.decision = decision.as_dict()
    if decision.promote:
        from training.registry import register_bundle

        register_bundle(candidate)
        promote(client, candidate.manifest.version, report.decision)
        report.outcome = "promoted"
    else:
        report.outcome = "rejected"
    log.info("retrain %s: %s", report.outcome, "; ".join(decision.reasons))
    return report


def promote(client: redis.Redis, version: str, decision: dict[str, Any]) -> None:
    """Write the promotion record of `version` (the service hot-swaps only to versions that
    have one) and make it the production version, in one transaction.
    """
    record = {"version": version, "promoted_at": c.utc_now_iso(), "decision": decision}
    pipe = client.pipeline(transaction=True)
    pipe.set(c.promotion_record_key(version), json.dumps(record, default=str))
    pipe.set(c.PRODUCTION_VERSION_KEY, version)
    pipe.execute()


def _record(client: redis.Redis, report: RetrainReport, report_dir: Path) -> None:
    data = json.dumps(vars(report), indent=2, default=str)
    report_dir.mkdir(parents=True, exist_ok=True)
    name = report.candidate_version or time.strftime("%Y%m%d-%H%M%S")
    (report_dir / f"retrain-{name}.json").write_text(data)
    try:
        client.hincrby(c.RETRAIN_OUTCOMES_KEY, report.outcome, 1)
        client.lpush(c.RETRAIN_RUNS_KEY, data)
        client.ltrim(c.RETRAIN_RUNS_KEY, 0, 99)
    except redis.RedisError as exc:
        log.error("could not record the retrain outcome in Redis: %s", exc)
