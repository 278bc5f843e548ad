"""Aggregated input salience (after Ebert et al.): which tokens drive predictions, per slice and
per label, which salience patterns recur, and which salient tokens look like shortcuts.

Per token, two attributions towards the predicted class: integrated gradients on the word
embeddings (captum `LayerIntegratedGradients`, baseline = [PAD] tokens between [CLS]/[SEP]) and
gradient × input. They are aggregated per label and per slice (mean salience and frequency
per token), salience vectors over the most frequent tokens are clustered with k-means, and a
salient token is flagged as a likely shortcut when it is a handle, URL piece, hashtag or
punctuation, or when its association with a label exists in the training data but not in the
evaluation data ("right for the wrong reason").
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from slicewise.core.errors import SlicewiseError
from training.config import ProjectConfig
from training.model import SliceAwareClassifier

SHORTCUT_PATTERNS = {
    "handle": re.compile(r"^@|^@?\w*_\w*$"),
    "url": re.compile(r"^(http|https|www|co|com|t)$|://|\.co"),
    "hashtag": re.compile(r"^#"),
    "punctuation": re.compile(r"^[^\w\s]+$"),
}


class SalienceError(SlicewiseError, ValueError):
    """Nothing to explain (e.g. texts that tokenise to nothing, an empty slice)."""


@dataclass
class TokenSalience:
    """Per-text token salience."""

    tokens: list[list[str]]
    ig: list[np.ndarray]
    gxi: list[np.ndarray]
    predicted: np.ndarray


def explain(
    model: SliceAwareClassifier,
    tokenizer: Any,
    texts: list[str],
    max_length: int,
    n_steps: int = 16,
    batch_size: int = 16,
    progress: bool = True,
) -> TokenSalience:
    """Integrated gradients and gradient × input per token, towards each text's predicted class.

    Raises:
        SalienceError: when a text tokenises to nothing but special tokens.
    """
    from captum.attr import LayerIntegratedGradients

    model = model.eval()
    emb_layer = model.encoder.get_input_embeddings()
    pad_id = tokenizer.pad_token_id or 0
    special = set(tokenizer.all_special_ids)

    def forward(ids: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return model(ids, mask)[0].gather(1, target[:, None]).squeeze(1)

    lig = LayerIntegratedGradients(lambda ids, mask: model(ids, mask)[0], emb_layer)
    out = TokenSalience([], [], [], np.zeros(len(texts), dtype=np.int64))
    for start in tqdm(
        range(0, len(texts), batch_size), desc="salience", unit="batch", disable=not progress
    ):
        chunk = texts[start : start + batch_size]
        enc = tokenizer(
            chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        ids, mask = enc["input_ids"], enc["attention_mask"]
        content = mask.bool() & ~torch.isin(ids, torch.tensor(sorted(special)))
        empty = (~content.any(1)).nonzero().flatten().tolist()
        if empty:
            i = start + empty[0]
            raise SalienceError(
                f"text {i} ({texts[i][:40]!r}) tokenises to nothing; remove empty texts"
            )
        with torch.no_grad():
            pred = model(ids, mask)[0].argmax(1)
        baseline = torch.where(content, torch.full_like(ids, pad_id), ids)
        ig = lig.attribute(
            ids, baselines=baseline, additional_forward_args=(mask,), target=pred, n_steps=n_steps
        )
        ig = ig.sum(-1).detach()
        embeds = emb_layer(ids).detach().requires_grad_(True)
        hook = emb_layer.register_forward_hook(
            lambda *_, e=embeds: e
        )  # feed these embeddings through
        try:
            score = forward(ids, mask, pred).sum()
            (grad,) = torch.autograd.grad(score, embeds)
        finally:
            hook.remove()
        gxi = (grad * embeds).sum(-1).detach()
        out.predicted[start : start + len(chunk)] = pred.numpy()
        for row in range(len(chunk)):
            keep = content[row].nonzero().flatten()
            out.tokens.append(tokenizer.convert_ids_to_tokens(ids[row, keep].tolist()))
            out.ig.append(ig[row, keep].numpy())
            out.gxi.append(gxi[row, keep].numpy())
    return out


def label_association(
    texts: list[str], labels: np.ndarray, tokenizer: Any, num_classes: int
) -> dict[str, np.ndarray]:
    """P(label | token present) per token (word pieces, lower-cased by the tokenizer)."""
    counts: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(num_classes))
    for text, y in zip(texts, labels, strict=True):
        for tok in set(tokenizer.tokenize(text)):
            counts[tok][y] += 1
    return {t: c / c.sum() for t, c in counts.items()}


def aggregate(
    sal: TokenSalience,
    cfg: ProjectConfig,
    membership: np.ndarray,
    top: int = 15,
    min_count: int = 3,
    clusters: int = 4,
    train_assoc: dict[str, np.ndarray] | None = None,
    eval_assoc: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Top salient tokens per label and per slice, salience clusters, shortcut flags."""
    if not sal.tokens:
        raise SalienceError("no texts to aggregate")

    def table(rows: list[int]) -> list[dict[str, Any]]:
        agg: dict[str, list[float]] = defaultdict(list)
        for i in rows:
            for tok, v in zip(sal.tokens[i], sal.ig[i], strict=True):
                agg[tok].append(float(v))
        items = [
            {"token": t, "mean_salience": float(np.mean(v)), "count": len(v)}
            for t, v in agg.items()
            if len(v) >= min_count
        ]
        return sorted(items, key=lambda r: r["mean_salience"], reverse=True)[:top]

    by_label = {
        lab: table([i for i in range(len(sal.tokens)) if sal.predicted[i] == k])
        for k, lab in enumerate(cfg.labels)
    }
    by_slice = {}
    for j, name in enumerate(cfg.slice_names):
        rows = np.flatnonzero(membership[:, j]).tolist()
        by_slice[name] = table(rows) if rows else []

    # k-means over bag-of-token salience vectors of the most frequent tokens
    freq = Counter(t for toks in sal.tokens for t in toks)
    vocab = [t for t, _ in freq.most_common(300)]
    index = {t: i for i, t in enumerate(vocab)}
    mat = np.zeros((len(sal.tokens), len(vocab)), dtype=np.float32)
    for i, (toks, vals) in enumerate(zip(sal.tokens, sal.ig, strict=True)):
        for t, v in zip(toks, vals, strict=True):
            if t in index:
                mat[i, index[t]] += v
    cluster_out = []
    if len(sal.tokens) >= clusters:
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=clusters, n_init=4, random_state=0).fit(mat)
        for c in range(clusters):
            members = km.labels_ == c
            centre = km.cluster_centers_[c]
            cluster_out.append(
                {
                    "size": int(members.sum()),
                    "labels": Counter(cfg.labels[k] for k in sal.predicted[members]).most_common(),
                    "top_tokens": [vocab[i] for i in np.argsort(-centre)[:8]],
                }
            )

    flags = []
    for lab, rows in by_label.items():
        k = cfg.labels.index(lab)
        for r in rows[: max(5, top // 2)]:
            tok = r["token"]
            reasons = [name for name, pat in SHORTCUT_PATTERNS.items() if pat.search(tok)]
            if train_assoc is not None and tok in train_assoc:
                p_train = float(train_assoc[tok][k])
                p_eval = (
                    float(eval_assoc[tok][k])
                    if eval_assoc is not None and tok in eval_assoc
                    else None
                )
                if p_train >= 0.8 and (p_eval is None or p_eval < p_train - 0.3):
                    reasons.append(
                        f"label correlation only in training data (P({lab}|token) train {p_train:.2f}, "
                        f"eval {'absent' if p_eval is None else f'{p_eval:.2f}'})"
                    )
            if reasons:
                flags.append(
                    {
                        "token": tok,
                        "label": lab,
                        "mean_salience": r["mean_salience"],
                        "reasons": reasons,
                    }
                )
    ig_gxi = [
        float(np.corrcoef(a, b)[0, 1])
        for a, b in zip(sal.ig, sal.gxi, strict=True)
        if len(a) > 2 and a.std() > 0 and b.std() > 0
    ]
    return {
        "texts": len(sal.tokens),
        "top_tokens_by_label": by_label,
        "top_tokens_by_slice": by_slice,
        "clusters": cluster_out,
        "shortcuts": flags,
        "ig_vs_grad_x_input_correlation": float(np.mean(ig_gxi)) if ig_gxi else None,
    }


def write_report(report: dict[str, Any], out_dir: Path) -> Path:
    """`salience.json`, one PNG per label and slice, and `salience.html` linking them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "salience.json").write_text(json.dumps(report, indent=2))
    sections = []
    for group, tables in (
        ("label", report["top_tokens_by_label"]),
        ("slice", report["top_tokens_by_slice"]),
    ):
        for name, rows in tables.items():
            if not rows:
                continue
            png = f"{group}-{name}.png"
            fig, ax = plt.subplots(figsize=(6, 0.3 * len(rows) + 1))
            flagged = {f["token"] for f in report["shortcuts"]}
            ax.barh(
                [r["token"] for r in rows][::-1],
                [r["mean_salience"] for r in rows][::-1],
                color=["tab:red" if r["token"] in flagged else "tab:blue" for r in rows][::-1],
            )
            ax.set_title(f"top salient tokens, {group} {name} (red = flagged shortcut)")
            ax.set_xlabel("mean integrated-gradients salience")
            fig.tight_layout()
            fig.savefig(out_dir / png, dpi=100)
            plt.close(fig)
            sections.append(f"<h3>{group}: {name}</h3><img src='{png}'>")
    flags = "".join(
        f"<li><b>{f['token']}</b> ({f['label']}): {'; '.join(f['reasons'])}</li>"
        for f in report["shortcuts"]
    )
    clusters = "".join(
        f"<li>{c['size']} texts, labels {c['labels']}: {', '.join(c['top_tokens'])}</li>"
        for c in report["clusters"]
    )
    html = (
        f"<html><head><meta charset='utf-8'><title>slicewise salience</title></head><body>"
        f"<h1>Aggregated salience over {report['texts']} texts</h1>"
        f"<h2>Possible shortcuts</h2><ul>{flags or '<li>none</li>'}</ul>"
        f"<h2>Salience clusters</h2><ul>{clusters}</ul><h2>Top tokens</h2>{''.join(sections)}</body></html>"
    )
    (out_dir / "salience.html").write_text(html)
    return out_dir / "salience.html"


@dataclass
class SalienceRun:
    """What `slicewise salience` made: the aggregated report and where its HTML is."""

    report: dict[str, Any]
    html: Path


def run_salience(
    cfg: ProjectConfig,
    *,
    checkpoint: Path | None = None,
    count: int = 1000,
    split: str = "train",
    steps: int = 16,
    out: Path = Path(".slicewise/salience"),
) -> SalienceRun:
    """Explain `count` texts of `split` with a trained model and write the salience report.

    Args:
        cfg: project config (data, slices, backbone).
        checkpoint: model checkpoint; default: the newest one of this project.
        count: how many texts (a seeded random sample of the split) to explain.
        split: `train`, `validation` or `test`.
        steps: integrated-gradients steps.
        out: report folder (salience.json, .html, PNGs).

    Returns:
        The report (per slice / label salience, clusters, shortcuts) and its HTML path.

    Raises:
        SalienceError: no checkpoint, or nothing to explain.
    """
    from training.backbone import load_tokenizer
    from training.checkpoint import latest_checkpoint, load_checkpoint
    from training.prepared import prepare_data

    checkpoint = checkpoint or latest_checkpoint(cfg)
    if checkpoint is None:
        raise SalienceError(
            f"no checkpoint in {cfg.train.checkpoint_dir}; run `slicewise train` first"
        )
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
    return SalienceRun(report, write_report(report, out))
