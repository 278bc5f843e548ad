"""Per-slice evaluation: accuracy and macro-F1 overall and per slice, over kinds and seeds.

`evaluate_project` trains every kind in `cfg.train.compare` for every seed on the same frozen
embeddings and writes `evaluation.json`, `evaluation.md` and `evaluation.png` (a grouped bar
chart of macro-F1 per slice with ± std error bars).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from tqdm.auto import tqdm

from training.config import KINDS, ConfigError, ProjectConfig


def slice_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    membership: np.ndarray,
    slice_names: Sequence[str],
    labels: Sequence[str],
) -> dict[str, dict[str, float]]:
    """Accuracy, macro-F1 and size for `overall` and for each slice (rows where membership is set).

    Macro-F1 averages over every class of `labels`, so slice numbers compare with overall ones.
    """
    classes = list(range(len(labels)))

    def one(mask: np.ndarray) -> dict[str, float]:
        n = int(mask.sum())
        if n == 0:
            return {"accuracy": float("nan"), "macro_f1": float("nan"), "size": 0}
        t, p = y_true[mask], y_pred[mask]
        return {
            "accuracy": float(accuracy_score(t, p)),
            "macro_f1": float(f1_score(t, p, labels=classes, average="macro", zero_division=0)),
            "size": n,
        }

    out = {"overall": one(np.ones(len(y_true), dtype=bool))}
    for j, name in enumerate(slice_names):
        out[name] = one(membership[:, j].astype(bool))
    return out


def head_slice_metrics(
    cfg: ProjectConfig, head: Any, split: Any, embeddings: np.ndarray | None = None
) -> dict[str, dict[str, float]]:
    """`slice_metrics` of a frozen-mode head's predictions on a split (int labels); `embeddings`
    replaces the split's own (e.g. a projection of them).
    """
    from training.train import predict_head

    probs = predict_head(
        head, split.embeddings if embeddings is None else embeddings, split.membership
    )
    pred = probs["probabilities"].argmax(1)
    return slice_metrics(split.labels, pred, split.membership, cfg.slice_names, cfg.labels)


def monitored_mean(
    metrics: dict[str, dict[str, float]], monitored: Sequence[str], key: str = "macro_f1"
) -> float:
    """Mean of `key` over the monitored slices."""
    vals = [metrics[s][key] for s in monitored if s in metrics]
    return float(np.nanmean(vals)) if vals else float("nan")


def aggregate(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean and std over seeds of each slice's accuracy and macro-F1 (size from the first run)."""
    out: dict[str, dict[str, float]] = {}
    for name in runs[0]:
        row: dict[str, float] = {"size": runs[0][name]["size"]}
        for key in ("accuracy", "macro_f1"):
            vals = np.array([r[name][key] for r in runs], dtype=float)
            row[key], row[f"{key}_std"] = float(np.mean(vals)), float(np.std(vals))
        out[name] = row
    return out


def evaluate_project(
    cfg: ProjectConfig,
    kinds: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    out_dir: str | Path = "evaluation",
    *,
    prepared: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train each kind for each seed on frozen embeddings and evaluate on the test split.

    Args:
        cfg: project config.
        kinds: head kinds to compare (default: `cfg.train.compare`).
        seeds: seeds per kind (default: `cfg.train.seeds`).
        out_dir: folder for `evaluation.json`, `.md` and `.png`.
        prepared: the prepared data when the caller has it (else prepared here).
        progress: show progress bars.

    Returns:
        (and writes as `evaluation.json`) `{"kinds": {kind: {"seeds": [...], "mean": {...}}},
        "monitored": [...], "summary": {kind: {...}}}`.

    Raises:
        ConfigError: an unknown kind, or no seeds.
    """
    from training.prepared import prepare_data
    from training.train import train_head

    kinds = list(kinds or cfg.train.compare)
    seeds = list(seeds if seeds is not None else cfg.train.seeds)
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not seeds:
        raise ConfigError(
            f"evaluate: unknown kind(s) {unknown}; use {', '.join(KINDS)}"
            if unknown
            else "evaluate: no seeds given; pass at least one seed"
        )
    prepared = prepared or prepare_data(cfg, progress)
    train, val, test = (prepared.splits[s] for s in ("train", "validation", "test"))
    result: dict[str, Any] = {
        "project": cfg.name,
        "monitored": cfg.monitored_slices,
        "seeds": seeds,
        "dataset_fingerprint": prepared.fingerprint,
        "kinds": {},
        "summary": {},
    }
    jobs = [(k, s) for k in kinds for s in seeds]
    per_kind: dict[str, list[dict[str, dict[str, float]]]] = {k: [] for k in kinds}
    for kind, seed in tqdm(jobs, desc="evaluate", unit="model", disable=not progress):
        res = train_head(cfg, kind, train, val, seed=seed, progress=False)  # type: ignore[arg-type]
        per_kind[kind].append(head_slice_metrics(cfg, res.head, test))
    for kind, runs in per_kind.items():
        mean = aggregate(runs)
        monitored = [monitored_mean(r, cfg.monitored_slices) for r in runs]
        result["kinds"][kind] = {"seeds": runs, "mean": mean}
        result["summary"][kind] = {
            "overall_macro_f1": mean["overall"]["macro_f1"],
            "overall_macro_f1_std": mean["overall"]["macro_f1_std"],
            "monitored_macro_f1": float(np.mean(monitored)),
            "monitored_macro_f1_std": float(np.std(monitored)),
        }
    write_report(result, Path(out_dir))
    return result


def markdown_table(result: dict[str, Any]) -> str:
    """Per-slice macro-F1 (mean ± std over seeds) for each kind, plus the summary rows."""
    kinds = list(result["kinds"])
    first = result["kinds"][kinds[0]]["mean"]
    head = "| slice | size | " + " | ".join(f"{k} macro-F1" for k in kinds) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(kinds)]
    for name in first:
        mark = " (monitored)" if name in result["monitored"] else ""
        means = [result["kinds"][k]["mean"][name] for k in kinds]
        cells = [f"{m['macro_f1']:.4f} ± {m['macro_f1_std']:.4f}" for m in means]
        lines.append(f"| {name}{mark} | {first[name]['size']} | " + " | ".join(cells) + " |")
    cells = [
        f"{result['summary'][k]['monitored_macro_f1']:.4f} ± {result['summary'][k]['monitored_macro_f1_std']:.4f}"
        for k in kinds
    ]
    lines.append("| **mean over monitored slices** | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(result: dict[str, Any], out_dir: Path) -> None:
    """Write `evaluation.json`, `evaluation.md` and `evaluation.png` into `out_dir` (atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".evaluation-", dir=out_dir))
    try:  # write everything aside, then move into place: no half-written report
        (tmp / "evaluation.json").write_text(json.dumps(_json_safe(result), indent=2))
        (tmp / "evaluation.md").write_text(markdown_table(result))
        _bar_chart(result, tmp / "evaluation.png")
        for name in ("evaluation.json", "evaluation.md", "evaluation.png"):
            os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _json_safe(obj: Any) -> Any:
    """NaN (a slice with no rows) becomes null, so the file is strict JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _bar_chart(result: dict[str, Any], path: Path) -> None:
    """Grouped bars: macro-F1 per slice (x) and kind (colour), ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(result["kinds"])
    names = list(result["kinds"][kinds[0]]["mean"])
    x = np.arange(len(names))
    width = 0.8 / len(kinds)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names)), 4))
    for i, kind in enumerate(kinds):
        mean = result["kinds"][kind]["mean"]
        ax.bar(
            x + i * width,
            [mean[n]["macro_f1"] for n in names],
            width,
            yerr=[mean[n]["macro_f1_std"] for n in names],
            capsize=3,
            label=kind,
        )
    labels = [
        f"{n}\n(n={result['kinds'][kinds[0]]['mean'][n]['size']})"
        + ("*" if n in result["monitored"] else "")
        for n in names
    ]
    ax.set_xticks(x + width * (len(kinds) - 1) / 2, labels, fontsize=8)
    lo = np.nanmin([result["kinds"][k]["mean"][n]["macro_f1"] for k in kinds for n in names])
    ax.set_ylim(max(0.0, float(lo) - 0.1) if np.isfinite(lo) else 0.0, 1.0)
    ax.set_ylabel("macro-F1 (test, mean ± std over seeds)")
    ax.set_title(f"{result['project']}: macro-F1 per slice (* = monitored)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
