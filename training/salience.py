"""Aggregated input salience (after Ebert et al.): which words drive predictions, per gold and
predicted label, for correct vs misclassified texts and per slice, which salience patterns
recur, and which salient words look like shortcuts.

Attributions are computed on WordPieces and summed into the *original words* (whitespace
tokens of the text, via the tokenizer's offsets), which are then normalised with the
tokenizer's own normaliser (lower case, accents) and stripped of surrounding punctuation;
URLs become `<url>`. Shortcut patterns are judged on those words: `#hawks` is a hashtag,
`@united` a handle, `https://t.co/x` a URL, while the WordPiece continuation `##hawks` of
"seahawks" and the `t` of "don't" are neither (both were flagged before).

Per word, two attributions towards the predicted class: integrated gradients on the word
embeddings (captum `LayerIntegratedGradients`, baseline = [PAD] tokens between [CLS]/[SEP]) and
gradient × (input − baseline), IG's first-order term. IG's completeness error (attributions
sum vs `F(x) − F(baseline)`, relative to the latter) is measured per batch and the step count
doubled until it is within `tolerance` (or `max_steps`); the report gives the error reached
and the steps used. Aggregates: mean salience and count per word by gold label, predicted
label, outcome (correct / misclassified) and slice; k-means clusters of texts' salience
vectors with size, accuracy, label and slice composition; flagged words: a handle, URL,
hashtag or punctuation, or a word whose label association exists in the training data but not
in the evaluation data ("right for the wrong reason").
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from slicewise.core.errors import SlicewiseError
from training.config import ProjectConfig
from training.model import SliceAwareClassifier

URL = "<url>"
SHORTCUT_PATTERNS = {  # judged on whole, normalised words (see `words`)
    "handle": re.compile(r"^@\w+$"),
    "url": re.compile(rf"^{re.escape(URL)}$"),
    "hashtag": re.compile(r"^#\w+$"),
    "punctuation": re.compile(r"^[^\w\s]+$"),
}
_URL_RE = re.compile(r"^(https?://|www\.)|^\S+\.(com|co|org|net|ly|io)(/\S*)?$", re.IGNORECASE)
_EDGE_PUNCT = re.compile(r"^[^\w#@]+|[^\w]+$")


class SalienceError(SlicewiseError, ValueError):
    """Nothing to explain (e.g. texts that tokenise to nothing, an empty slice)."""


def normalise_word(word: str, tokenizer: Any = None) -> str:
    """A whitespace token as aggregated: URL → `<url>`; else the tokenizer's normalisation
    (lower case, accents off) with surrounding punctuation stripped (a leading `#`/`@` kept);
    pure punctuation stays as it is.
    """
    if _URL_RE.search(word):
        return URL
    norm = tokenizer.backend_tokenizer.normalizer if tokenizer is not None else None
    w = norm.normalize_str(word) if norm is not None else word.lower()
    stripped = _EDGE_PUNCT.sub("", w)
    return stripped if stripped and stripped not in "#@" else w


def words(text: str, tokenizer: Any = None) -> list[str]:
    """The normalised whitespace words of `text` (see `normalise_word`)."""
    return [normalise_word(m.group(), tokenizer) for m in re.finditer(r"\S+", text)]


@dataclass
class TokenSalience:
    """Per-text word salience (WordPiece attributions summed per original word)."""

    tokens: list[list[str]]
    ig: list[np.ndarray]
    gxi: list[np.ndarray]
    predicted: np.ndarray
    completeness: list[float] = field(default_factory=list)  # per text: |Σ IG − ΔF| / |ΔF|
    steps: list[int] = field(default_factory=list)  # IG steps used, per text


def _word_sums(
    text: str, offsets: list[tuple[int, int]], positions: list[int], values: list[np.ndarray]
) -> tuple[list[int], list[np.ndarray]]:
    """Sum per-piece values into the whitespace words their offsets fall in."""
    starts = [m.start() for m in re.finditer(r"\S+", text)]
    order: list[int] = []
    sums: dict[int, list[float]] = {}
    for p in positions:
        w = int(np.searchsorted(starts, offsets[p][0], side="right")) - 1
        if w not in sums:
            order.append(w)
            sums[w] = [0.0] * len(values)
        for k, v in enumerate(values):
            sums[w][k] += float(v[p])
    return order, [np.array([sums[w][k] for w in order]) for k in range(len(values))]


def explain(
    model: SliceAwareClassifier,
    tokenizer: Any,
    texts: list[str],
    max_length: int,
    n_steps: int = 16,
    batch_size: int = 16,
    progress: bool = True,
    tolerance: float = 0.05,
    max_steps: int = 128,
    slice_rules: np.ndarray | None = None,
) -> TokenSalience:
    """Integrated gradients and gradient × (input − baseline) per word, towards each text's
    predicted class.

    Args:
        model: the classifier (backbone + head).
        tokenizer: its fast tokenizer (offsets map pieces to words).
        texts: texts to explain.
        max_length: truncation length in WordPieces.
        n_steps: IG steps to start with.
        batch_size: texts per batch.
        progress: show a progress bar.
        tolerance: IG's mean relative completeness error per batch to reach, doubling steps.
        max_steps: the most IG steps tried.
        slice_rules: exact slice membership `[N, k]` of the texts (1/0), what the served
            model's `slice_rules` input gets; needed when the head routes on rules
            (`train.membership: rules`), ignored otherwise. The baseline keeps the text's
            membership: salience is the words' effect, not the slice rules'.

    Raises:
        SalienceError: when a text tokenises to nothing but special tokens, or a model that
            routes on rules gets no (or wrongly shaped) `slice_rules`.
    """
    from captum.attr import LayerIntegratedGradients

    model = model.eval()
    rules = _rules_input(model, slice_rules, len(texts))
    emb_layer = model.encoder.get_input_embeddings()
    pad_id = tokenizer.pad_token_id or 0
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)))

    def score(
        ids: torch.Tensor, mask: torch.Tensor, target: torch.Tensor, r: torch.Tensor | None
    ) -> torch.Tensor:
        return model(ids, mask, r)[0].gather(1, target[:, None]).squeeze(1)

    lig = LayerIntegratedGradients(lambda ids, mask, *r: model(ids, mask, *r)[0], emb_layer)
    out = TokenSalience([], [], [], np.zeros(len(texts), dtype=np.int64))
    for start in tqdm(
        range(0, len(texts), batch_size), desc="salience", unit="batch", disable=not progress
    ):
        chunk = texts[start : start + batch_size]
        enc = tokenizer(
            chunk,
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
            return_offsets_mapping=True,
        )
        ids, mask, offsets = enc["input_ids"], enc["attention_mask"], enc["offset_mapping"]
        content = mask.bool() & ~torch.isin(ids, special.to(ids.device))
        empty = (~content.any(1)).nonzero().flatten().tolist()
        if empty:
            i = start + empty[0]
            raise SalienceError(
                f"text {i} ({texts[i][:40]!r}) tokenises to nothing; remove empty texts"
            )
        baseline = torch.where(content, torch.full_like(ids, pad_id), ids)
        r = None if rules is None else rules[start : start + len(chunk)]
        with torch.no_grad():
            pred = model(ids, mask, r)[0].argmax(1)
            gap = (score(ids, mask, pred, r) - score(baseline, mask, pred, r)).abs()
        steps = n_steps
        while True:  # completeness: Σ attributions = F(x) − F(baseline) as steps → ∞
            ig, delta = lig.attribute(
                ids,
                baselines=baseline,
                additional_forward_args=(mask,) if r is None else (mask, r),
                target=pred,
                n_steps=steps,
                return_convergence_delta=True,
                # the steps run `internal_batch_size` rows at a time: without it all
                # texts × steps rows ran at once (128 steps of 16 texts: 23 GB, OOM-killed)
                internal_batch_size=batch_size * n_steps,
            )
            rel = delta.detach().abs() / gap.clamp(min=1e-3)
            if float(rel.mean()) <= tolerance or steps >= max_steps:
                break
            steps *= 2
        ig = ig.sum(-1).detach()
        embeds = emb_layer(ids).detach().requires_grad_(True)
        base_embeds = emb_layer(baseline).detach()
        hook = emb_layer.register_forward_hook(lambda *_, e=embeds: e)  # feed these through
        try:
            (grad,) = torch.autograd.grad(score(ids, mask, pred, r).sum(), embeds)
        finally:
            hook.remove()
        gxi = (grad * (embeds - base_embeds)).sum(-1).detach()
        out.predicted[start : start + len(chunk)] = pred.numpy()
        for row, text in enumerate(chunk):
            keep = content[row].nonzero().flatten().tolist()
            order, (ig_w, gxi_w) = _word_sums(
                text, offsets[row].tolist(), keep, [ig[row].numpy(), gxi[row].numpy()]
            )
            spans = re.findall(r"\S+", text)
            out.tokens.append([normalise_word(spans[w], tokenizer) for w in order])
            out.ig.append(ig_w)
            out.gxi.append(gxi_w)
            out.completeness.append(float(rel[row]))
            out.steps.append(steps)
    return out


def _rules_input(
    model: SliceAwareClassifier, slice_rules: np.ndarray | None, n: int
) -> torch.Tensor | None:
    """The `slice_rules` tensor a rules-routing model needs for `n` texts (None otherwise)."""
    if not model.head.uses_rules:
        return None
    k = model.head.num_slices
    if slice_rules is None:
        raise SalienceError(
            "this model routes on rule membership (train.membership: rules): pass slice_rules, "
            "the texts' exact slice membership [N, k] (e.g. PreparedSplit.membership)"
        )
    if np.shape(slice_rules) != (n, k):
        raise SalienceError(
            f"slice_rules has shape {np.shape(slice_rules)}; expected ({n}, {k}) (texts, slices)"
        )
    return torch.as_tensor(np.asarray(slice_rules, dtype=np.float32))


def label_association(
    texts: list[str], labels: np.ndarray, tokenizer: Any, num_classes: int
) -> dict[str, np.ndarray]:
    """P(label | word present) per normalised word (see `words`)."""
    counts: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(num_classes))
    for text, y in zip(texts, labels, strict=True):
        for w in set(words(text, tokenizer)):
            counts[w][y] += 1
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
    gold: np.ndarray | None = None,
) -> dict[str, Any]:
    """Top salient words by predicted label, gold label, outcome and slice; salience clusters;
    shortcut flags; IG's completeness error and its agreement with gradient × input.

    Args:
        sal: per-text word salience from `explain`.
        cfg: project config (labels, slices).
        membership: slice membership `[N, k]` of the explained texts.
        top: words per table.
        min_count: occurrences a word needs to enter a table.
        clusters: k-means clusters.
        train_assoc: `label_association` on the training data.
        eval_assoc: `label_association` on evaluation data.
        gold: gold class indices `[N]`: enables the gold-label and outcome tables and the
            clusters' accuracy.
    """
    n = len(sal.tokens)
    if not n:
        raise SalienceError("no texts to aggregate")
    if gold is not None and len(gold) != n:
        raise SalienceError(f"{len(gold)} gold labels for {n} explained texts")

    def table(rows: np.ndarray) -> list[dict[str, Any]]:
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

    pred = sal.predicted
    report: dict[str, Any] = {"texts": n}
    report["top_tokens_by_label"] = {
        lab: table(np.flatnonzero(pred == k)) for k, lab in enumerate(cfg.labels)
    }
    if gold is not None:
        report["top_tokens_by_gold_label"] = {
            lab: table(np.flatnonzero(gold == k)) for k, lab in enumerate(cfg.labels)
        }
        report["top_tokens_by_outcome"] = {
            "correct": table(np.flatnonzero(pred == gold)),
            "misclassified": table(np.flatnonzero(pred != gold)),
        }
        report["accuracy"] = float((pred == gold).mean())
    report["top_tokens_by_slice"] = {
        name: table(np.flatnonzero(membership[:, j])) for j, name in enumerate(cfg.slice_names)
    }
    report["clusters"] = _clusters(sal, cfg, membership, clusters, gold)
    report["shortcuts"] = _flags(report, cfg, top, train_assoc, eval_assoc)
    ig_gxi = [
        float(np.corrcoef(a, b)[0, 1])
        for a, b in zip(sal.ig, sal.gxi, strict=True)
        if len(a) > 2 and a.std() > 0 and b.std() > 0
    ]
    report["ig_vs_grad_x_input_correlation"] = float(np.mean(ig_gxi)) if ig_gxi else None
    if sal.completeness:
        err = np.array(sal.completeness)
        report["ig_completeness"] = {
            "mean_relative_error": float(err.mean()),
            "median_relative_error": float(np.median(err)),
            "p90_relative_error": float(np.percentile(err, 90)),
            "steps": dict(sorted(Counter(sal.steps).items())),
        }
    return report


def _clusters(
    sal: TokenSalience,
    cfg: ProjectConfig,
    membership: np.ndarray,
    k: int,
    gold: np.ndarray | None,
) -> list[dict[str, Any]]:
    """k-means over bag-of-word salience vectors of the 300 most frequent words."""
    if len(sal.tokens) < k:
        return []
    from sklearn.cluster import KMeans

    freq = Counter(t for toks in sal.tokens for t in toks)
    vocab = [t for t, _ in freq.most_common(300)]
    index = {t: i for i, t in enumerate(vocab)}
    mat = np.zeros((len(sal.tokens), len(vocab)), dtype=np.float32)
    for i, (toks, vals) in enumerate(zip(sal.tokens, sal.ig, strict=True)):
        for t, v in zip(toks, vals, strict=True):
            if t in index:
                mat[i, index[t]] += v
    km = KMeans(n_clusters=k, n_init=4, random_state=0).fit(mat)
    out = []
    for c in range(k):
        members = km.labels_ == c
        row: dict[str, Any] = {
            "size": int(members.sum()),
            "labels": Counter(cfg.labels[j] for j in sal.predicted[members]).most_common(),
            "slices": {
                s: round(float(membership[members, j].mean()), 3)
                for j, s in enumerate(cfg.slice_names)
                if members.any()
            },
            "top_tokens": [vocab[i] for i in np.argsort(-km.cluster_centers_[c])[:8]],
        }
        if gold is not None:
            row["accuracy"] = float((sal.predicted[members] == gold[members]).mean())
            row["gold_labels"] = Counter(cfg.labels[j] for j in gold[members]).most_common()
        out.append(row)
    return out


def _flags(
    report: dict[str, Any],
    cfg: ProjectConfig,
    top: int,
    train_assoc: dict[str, np.ndarray] | None,
    eval_assoc: dict[str, np.ndarray] | None,
) -> list[dict[str, Any]]:
    """Top salient words per predicted label that look like shortcuts, with the reasons."""
    flags = []
    for lab, rows in report["top_tokens_by_label"].items():
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
    return flags


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
        ("gold", report.get("top_tokens_by_gold_label", {})),
        ("outcome", report.get("top_tokens_by_outcome", {})),
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
        f"<li>{c['size']} texts, accuracy {c.get('accuracy', float('nan')):.2f}, labels "
        f"{c['labels']}, slices {c['slices']}: {', '.join(c['top_tokens'])}</li>"
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
    sal = explain(
        trained.model,
        tok,
        texts,
        cfg.backbone.max_length,
        n_steps=steps,
        slice_rules=part.membership[rows],
    )
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
