"""`slicewise` subcommands of the training package: train, export, evaluate, retrain, label,
commentary learn, salience.

Each command only parses options and calls an importable function; torch is imported inside,
so `slicewise --help` stays fast. Errors: `slicewise.cli.Commands` (exit code 2, one line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer()

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Project YAML. Default: the built-in tweets demo."),
]


@app.command()
def train(
    config: ConfigOpt = None,
    kind: Annotated[
        str | None, typer.Option(help="baseline, sbl or moa (default: config's train.kind)")
    ] = None,
    mode: Annotated[
        str | None, typer.Option(help="frozen or finetune (default: config's train.mode)")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    commentary: Annotated[
        Path | None, typer.Option(help="Learned example weights from `slicewise commentary learn`.")
    ] = None,
) -> None:
    """Train the slice-aware model and save a checkpoint.

    Example: `slicewise train --kind moa` (demo config, frozen MiniLM backbone).
    """
    from training.commentary import Commentary
    from training.config import load_config
    from training.train import prepare_data, train_model

    cfg = load_config(config)
    if mode:
        cfg.train.mode = mode  # type: ignore[assignment]
    weights = None
    prepared = None
    if commentary is not None:
        prepared = prepare_data(cfg, embed=cfg.train.mode == "frozen")
        weights = Commentary.load(
            commentary, prepared.fingerprint, len(prepared.splits["train"])
        ).weights
    trained = train_model(cfg, kind, seed, sample_weight=weights, prepared=prepared)  # type: ignore[arg-type]
    typer.echo(f"trained {trained.kind} ({trained.mode}) val macro-F1 {trained.val_macro_f1:.4f}")
    typer.echo(f"checkpoint: {trained.checkpoint}")


@app.command()
def export(
    config: ConfigOpt = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint from `slicewise train`; default: train now.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Bundle directory (default: config's export.output_dir).")
    ] = None,
    register: Annotated[bool, typer.Option(help="Register in the BentoML model store.")] = True,
) -> None:
    """Export the artifact bundle (ONNX fp32 + int8, tokenizer, manifest, reference profile).

    Example: `slicewise export --out .slicewise/bundle`.
    """
    from training.config import load_config
    from training.export import export_bundle
    from training.train import load_checkpoint, prepare_data, train_model

    if checkpoint is not None:
        cfg, trained = load_checkpoint(checkpoint)
        if config is not None:
            cfg = load_config(config)
        prepared = prepare_data(cfg)
    else:
        cfg = load_config(config)
        prepared = prepare_data(cfg)
        trained = train_model(cfg, prepared=prepared)
    bundle = export_bundle(cfg, trained, prepared, out, register=register)
    ev = bundle.manifest.evaluation
    typer.echo(f"bundle: {bundle.path}  version: {bundle.manifest.version}")
    typer.echo(
        f"test macro-F1 {ev['overall_macro_f1']:.4f}; parity max abs diff "
        f"{max(ev['parity_max_abs_diff'].values()):.1e}"
    )
    for s in bundle.manifest.slices:
        typer.echo(
            f"  slice {s.name:<12} threshold {s.threshold:.2f}{'  (monitored)' if s.monitored else ''}"
        )


@app.command()
def evaluate(
    config: ConfigOpt = None,
    out: Annotated[Path, typer.Option(help="Folder for evaluation.json / .md / .png.")] = Path(
        ".slicewise/evaluation"
    ),
    kinds: Annotated[
        str | None, typer.Option(help="Comma-separated kinds (default: config's train.compare).")
    ] = None,
    seeds: Annotated[
        str | None, typer.Option(help="Comma-separated seeds (default: config's train.seeds).")
    ] = None,
) -> None:
    """Compare baseline / SBL / MoA per slice: mean ± std over seeds, JSON + markdown + PNG.

    Example: `slicewise evaluate --kinds baseline,moa --seeds 0,1,2 --out eval/`.
    """
    from training.config import load_config
    from training.evaluate import evaluate_project, markdown_table

    cfg = load_config(config)
    result = evaluate_project(
        cfg,
        kinds.split(",") if kinds else None,
        [int(s) for s in seeds.split(",")] if seeds else None,
        out,
    )
    typer.echo(markdown_table(result))
    typer.echo(f"written: {out}/evaluation.json, evaluation.md, evaluation.png")


@app.command()
def retrain(
    config: ConfigOpt = None,
    redis_url: Annotated[
        str, typer.Option(envvar="REDIS_URL", help="Redis with the prediction log.")
    ] = "redis://127.0.0.1:6379/0",
    production: Annotated[
        Path | None, typer.Option(help="Production bundle folder when Redis names no version.")
    ] = None,
    report_dir: Annotated[Path, typer.Option(help="Where the run report goes.")] = Path(
        ".slicewise/reports"
    ),
    shuffle_labels: Annotated[
        bool, typer.Option(help="Train on shuffled labels (a deliberately worse candidate).")
    ] = False,
    reason: Annotated[
        str | None, typer.Option(help="Why this run started (the webhook passes the alert).")
    ] = None,
) -> None:
    """Train a candidate on labelled + feedback data; promote it only if no watched slice gets worse.

    Example: `slicewise retrain --redis-url redis://127.0.0.1:6379/0`.
    """
    import json

    from training.config import load_config
    from training.retrain import retrain as run

    cfg = load_config(config)
    report = run(cfg, redis_url, production, report_dir, shuffle_labels, reason=reason)
    typer.echo(
        json.dumps(
            {
                "outcome": report.outcome,
                "candidate": report.candidate_version,
                "production": report.production_version,
                "decision": report.decision,
                "error": report.error,
            },
            indent=2,
        )
    )
    if report.outcome == "failed":
        raise typer.Exit(1)


@app.command()
def label(
    config: ConfigOpt = None,
    out: Annotated[Path, typer.Option(help="Parquet file for the probabilistic labels.")] = Path(
        ".slicewise/weak_labels.parquet"
    ),
    extend: Annotated[
        bool, typer.Option(help="Extend LF votes through the embedding space (Epoxy).")
    ] = True,
    train_head_too: Annotated[
        bool,
        typer.Option(
            "--train-head",
            help="Also train the slice-aware head on the weak labels and report test macro-F1.",
        ),
    ] = False,
) -> None:
    """Weakly label the training split with the config's LFs (+ Epoxy extension, tuned on validation).

    Example: `slicewise label --train-head` (demo LFs; prints the LF table and label accuracy).
    """
    import numpy as np
    import pandas as pd

    from training.config import load_config
    from training.evaluate import head_slice_metrics
    from training.train import EncodedSplit, prepare_data, train_head
    from training.weak import apply_lfs, lf_analysis
    from training.weak.pipeline import weak_labels

    cfg = load_config(config)
    prepared = prepare_data(cfg)
    tr, va = prepared.splits["train"], prepared.splits["validation"]
    L = np.concatenate([apply_lfs(tr.texts, cfg), apply_lfs(va.texts, cfg)])
    typer.echo(
        lf_analysis(L[: len(tr)], [x.name for x in cfg.labeling_functions], cfg.labels, tr.labels)
        .round(3)
        .to_string()
    )
    dev_idx = np.arange(len(tr), len(tr) + len(va))
    res = weak_labels(
        cfg, L, np.concatenate([tr.embeddings, va.embeddings]), va.labels, dev_idx, extend
    )
    probs, covered = res.probs[: len(tr)], res.covered[: len(tr)]
    acc = float((probs[covered].argmax(1) == tr.labels[covered]).mean())
    typer.echo(
        f"coverage {covered.mean():.3f}, label accuracy on covered {acc:.3f} (vs the gold train labels)"
    )
    balance = ", ".join(
        f"{lab} {p:.2f}" for lab, p in zip(cfg.labels, res.stats["class_balance"], strict=True)
    )
    typer.echo(f"class balance ({res.stats['class_balance_source']}): {balance}")
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(probs, columns=[f"p_{lab}" for lab in cfg.labels])
    frame.insert(0, "text", tr.texts)
    frame["covered"] = covered
    tmp = out.with_name(out.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(out)  # never a half-written labels file
    typer.echo(f"written: {out}")
    if train_head_too:
        weak = EncodedSplit(
            tr.embeddings[covered], probs[covered].astype(np.float32), tr.membership[covered]
        )
        head = train_head(cfg, cfg.train.kind, weak, va).head
        m = head_slice_metrics(cfg, head, prepared.splits["test"])
        typer.echo(
            f"{cfg.train.kind} head on weak labels: test macro-F1 {m['overall']['macro_f1']:.4f}"
        )


commentary_app = typer.Typer(help="Learned example weights (commentaries).", no_args_is_help=True)
app.add_typer(commentary_app, name="commentary")


@commentary_app.command("learn")
def commentary_learn(
    config: ConfigOpt = None,
    kind: Annotated[str, typer.Option(help="Head kind used in the inner training runs.")] = "sbl",
    out: Annotated[
        Path | None, typer.Option(help="Output .npz (default: next to the dataset).")
    ] = None,
    report: Annotated[Path, typer.Option(help="Folder for commentary.md / commentary.png.")] = Path(
        ".slicewise/commentary"
    ),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Learn per-example weights by backprop through short inner training runs of the head.

    Example: `slicewise commentary learn`, then `slicewise train --commentary <printed path>`.
    """
    from training.commentary import commentary_report, default_path, learn_commentary
    from training.config import load_config
    from training.train import prepare_data

    cfg = load_config(config)
    prepared = prepare_data(cfg)
    com = learn_commentary(cfg, prepared, kind, seed)  # type: ignore[arg-type]
    path = com.save(out or default_path(cfg, prepared.fingerprint))
    typer.echo(commentary_report(com, cfg, prepared, report))
    typer.echo(
        f"written: {path} (reuse with `slicewise train --commentary {path}`); report in {report}"
    )


@app.command()
def salience(
    config: ConfigOpt = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Model checkpoint (default: the newest one of this project)."),
    ] = None,
    count: Annotated[int, typer.Option(help="Texts to explain.")] = 1000,
    split: Annotated[
        str, typer.Option(help="Split whose texts are explained: train, validation or test.")
    ] = "train",
    steps: Annotated[int, typer.Option(help="Integrated-gradients steps.")] = 16,
    out: Annotated[Path, typer.Option(help="Report folder (salience.json, .html, PNGs).")] = Path(
        ".slicewise/salience"
    ),
) -> None:
    """Aggregated token salience per slice and label, salience clusters, likely shortcuts.

    Example: `slicewise salience --count 500` (needs a checkpoint from `slicewise train`).
    """
    import numpy as np

    from training.backbone import load_tokenizer
    from training.config import load_config
    from training.salience import (
        SalienceError,
        aggregate,
        explain,
        label_association,
        write_report,
    )
    from training.train import load_checkpoint, prepare_data

    cfg = load_config(config)
    if checkpoint is None:
        found = sorted(
            Path(cfg.train.checkpoint_dir).glob(f"{cfg.name}-*.pt"),
            key=lambda p: p.stat().st_mtime,
        )
        if not found:
            raise SalienceError(
                f"no checkpoint in {cfg.train.checkpoint_dir}; run `slicewise train` first"
            )
        checkpoint = found[-1]
    _, trained = load_checkpoint(checkpoint)
    prepared = prepare_data(cfg, embed=False)
    part, evaluation = prepared.splits[split], prepared.splits["test"]
    rows = np.random.default_rng(0).permutation(len(part))[:count]
    texts = [part.texts[i] for i in rows]  # type: ignore[index]
    tok = load_tokenizer(cfg.backbone)
    sal = explain(trained.model, tok, texts, cfg.backbone.max_length, n_steps=steps)
    report = aggregate(
        sal,
        cfg,
        part.membership[rows],
        train_assoc=label_association(
            prepared.splits["train"].texts,
            prepared.splits["train"].labels,
            tok,
            len(cfg.labels),
        ),
        eval_assoc=label_association(evaluation.texts, evaluation.labels, tok, len(cfg.labels)),
    )
    html = write_report(report, out)
    for f in report["shortcuts"][:10]:
        typer.echo(f"possible shortcut: {f['token']!r} ({f['label']}): {'; '.join(f['reasons'])}")
    typer.echo(f"report: {html}")
