"""`slicewise` subcommands of the training package: train, export, evaluate, retrain, label,
commentary learn, salience.

Each command only parses options, calls one importable function and prints; torch is
imported inside, so `slicewise --help` stays fast. Option values are checked by their type
(`--kind` and `--mode` are `Literal`s: a typo exits 2 naming the choices before any data is
read); config overrides go through `training.config.override` (validated, never assigned
silently). Errors: `slicewise.cli.Commands` (exit code 2, one line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from slicewise.cli.options import ConfigOpt, RedisOpt
from training.config import Kind, Mode

app = typer.Typer()


@app.command()
def train(
    config: ConfigOpt = None,
    kind: Annotated[
        Kind | None, typer.Option(help="Head kind (default: config's train.kind).")
    ] = None,
    mode: Annotated[
        Mode | None, typer.Option(help="Backbone frozen or finetuned (default: train.mode).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    commentary: Annotated[
        Path | None, typer.Option(help="Learned example weights from `slicewise commentary learn`.")
    ] = None,
) -> None:
    """Train the slice-aware model and save a checkpoint.

    Example: `slicewise train --kind moa` (demo config, frozen MiniLM backbone).
    """
    from training.config import load_config, override
    from training.train import train_project

    cfg = load_config(config)
    cfg.train = override(cfg.train, "command line", mode=mode, kind=kind)
    trained = train_project(cfg, seed=seed, commentary=commentary)
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
    from training.export import train_and_export

    cfg = load_config(config) if config is not None or checkpoint is None else None
    bundle = train_and_export(cfg, checkpoint=checkpoint, out_dir=out, register=register)
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
    from training.config import load_config, override
    from training.evaluate import evaluate_project, markdown_table

    cfg = load_config(config)
    cfg.train = override(
        cfg.train,
        "command line",
        compare=kinds.split(",") if kinds else None,
        seeds=seeds.split(",") if seeds else None,
    )
    result = evaluate_project(cfg, cfg.train.compare, cfg.train.seeds, out)
    typer.echo(markdown_table(result))
    typer.echo(f"written: {out}/evaluation.json, evaluation.md, evaluation.png")


@app.command()
def retrain(
    config: ConfigOpt = None,
    redis_url: RedisOpt = "redis://127.0.0.1:6379/0",
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
    report = run(
        cfg,
        redis_url=redis_url,
        production_dir=production,
        report_dir=report_dir,
        shuffle_labels=shuffle_labels,
        reason=reason,
    )
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
    from training.config import load_config
    from training.weak.pipeline import label_training_split

    cfg = load_config(config)
    run = label_training_split(cfg, out=out, extend=extend, train_head=train_head_too)
    res = run.labels
    typer.echo(run.lf_table.round(3).to_string())
    typer.echo(
        f"coverage {res.covered.mean():.3f}, label accuracy on covered {run.accuracy:.3f} "
        "(vs the gold train labels)"
    )
    balance = ", ".join(
        f"{lab} {p:.2f}" for lab, p in zip(cfg.labels, res.stats["class_balance"], strict=True)
    )
    typer.echo(f"class balance ({res.stats['class_balance_source']}): {balance}")
    typer.echo(f"written: {run.path}")
    if run.head_macro_f1 is not None:
        typer.echo(f"{cfg.train.kind} head on weak labels: test macro-F1 {run.head_macro_f1:.4f}")


commentary_app = typer.Typer(help="Learned example weights (commentaries).", no_args_is_help=True)
app.add_typer(commentary_app, name="commentary")


@commentary_app.command("learn")
def commentary_learn(
    config: ConfigOpt = None,
    kind: Annotated[Kind, typer.Option(help="Head kind used in the inner training runs.")] = "sbl",
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
    from training.prepared import prepare_data

    cfg = load_config(config)
    prepared = prepare_data(cfg)
    com = learn_commentary(cfg, prepared, kind=kind, seed=seed)
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
        Literal["train", "validation", "test"],
        typer.Option(help="Split whose texts are explained."),
    ] = "train",
    steps: Annotated[int, typer.Option(help="Integrated-gradients steps.")] = 16,
    out: Annotated[Path, typer.Option(help="Report folder (salience.json, .html, PNGs).")] = Path(
        ".slicewise/salience"
    ),
) -> None:
    """Aggregated token salience per slice and label, salience clusters, likely shortcuts.

    Example: `slicewise salience --count 500` (needs a checkpoint from `slicewise train`).
    """
    from training.config import load_config
    from training.salience import run_salience

    run = run_salience(
        load_config(config), checkpoint=checkpoint, count=count, split=split, steps=steps, out=out
    )
    for f in run.report["shortcuts"][:10]:
        typer.echo(f"possible shortcut: {f['token']!r} ({f['label']}): {'; '.join(f['reasons'])}")
    typer.echo(f"report: {run.html}")
