"""Epoxy as a classifier (no training) vs trained heads, on the demo and on SMS spam.

Per dataset: Epoxy thresholds tuned on the validation split (train + validation voters, the
validation rows scored against gold); `EpoxyClassifier` fitted on the train split's LF votes
(extended, label model) labels the validation and test splits from their own LF votes and
their nearest training voters, with no training. Beside it: the label model on the LF votes
alone (no extension), a MoA head trained on the weak labels of the covered training rows
(LFs + extension: the retrain path's labelling), and a MoA head trained on gold labels.
Macro-F1 over every row (a row no LF reaches gets the class balance's argmax).

SMS spam (training/configs/sms_spam.yaml) has no LFs in its config; the bench adds six keyword
/ regex LFs written for it (below), so its label matrix is not drawn from the label model's
assumptions. Validation numbers decide whether the retrain path uses the extension
(bench/results/epoxy_classifier.md says which).

Run: .venv/bin/python bench/bench_epoxy.py  -> bench/results/epoxy_classifier.{json,md}
"""

from __future__ import annotations

import numpy as np
from common import ROOT, write
from sklearn.metrics import f1_score

from training.config import load_config
from training.evaluate import head_slice_metrics
from training.prepared import EncodedSplit
from training.train import prepare_data, train_head
from training.weak import ABSTAIN, TripletLabelModel, apply_lfs
from training.weak.epoxy import (
    EpoxyClassifier,
    extend_votes,
    nearest_votes,
    prepare_embeddings,
    tune_thresholds,
)

SMS_LFS = [
    {"name": "lf_prize", "label": "spam", "regex": r"(?i)\b(prize|winner|won|claim|reward|cash)\b"},
    {"name": "lf_free", "label": "spam", "regex": r"(?i)\b(free|txt|text|reply|stop|mobile)\b"},
    {"name": "lf_money_or_number", "label": "spam", "regex": r"£|\$|\b0[789]\d{8,}\b|\b\d{5}\b"},
    {"name": "lf_casual", "label": "ham", "regex": r"(?i)\b(lol|haha|ok|okay|u|ur|gonna|wanna)\b"},
    {"name": "lf_first_person", "label": "ham", "regex": r"(?i)\b(i'm|i'll|im|my|me)\b"},
    {
        "name": "lf_home_time",
        "label": "ham",
        "regex": r"(?i)\b(home|tonight|later|tomorrow|sleep)\b",
    },
]


def macro_f1(probs: np.ndarray, gold: np.ndarray, num_classes: int) -> float:
    return float(f1_score(gold, probs.argmax(1), average="macro", labels=list(range(num_classes))))


def run(name: str, cfg) -> dict:
    prep = prepare_data(cfg, progress=False)
    tr, va, te = (prep.splits[s] for s in ("train", "validation", "test"))
    C = len(cfg.labels)
    L_tr, L_va, L_te = (apply_lfs(s.texts, cfg) for s in (tr, va, te))
    L_all = np.concatenate([L_tr, L_va])
    gold_all = np.concatenate([tr.labels, va.labels])
    dev = np.arange(len(tr), len(L_all))
    sim, vote = nearest_votes(
        L_all, prepare_embeddings(np.concatenate([tr.embeddings, va.embeddings]))
    )
    thresholds = tune_thresholds(
        L_all, sim, vote, gold_all, dev, cfg.weak_supervision.threshold_grid
    )
    names = [lf.name for lf in cfg.labeling_functions]
    epoxy = EpoxyClassifier.fit(L_tr, tr.embeddings, C, thresholds, lf_names=names)
    lfs_only = TripletLabelModel(C).fit(L_tr, names)
    out: dict = {"thresholds": dict(zip(names, thresholds, strict=True)), "splits": {}}
    for split_name, split, L in (("validation", va, L_va), ("test", te, L_te)):
        probs, covered = epoxy.predict_proba(L, split.embeddings)
        own = (L != ABSTAIN).any(1)
        out["splits"][split_name] = {
            "epoxy_macro_f1": macro_f1(probs, split.labels, C),
            "epoxy_coverage": float(covered.mean()),
            "epoxy_covered_accuracy": float(
                (probs[covered].argmax(1) == split.labels[covered]).mean()
            ),
            "lfs_only_macro_f1": macro_f1(lfs_only.predict_proba(L), split.labels, C),
            "lfs_only_coverage": float(own.mean()),
        }
    # heads on weak labels of the covered training rows, without and with extension
    L_ext = extend_votes(L_all, sim, vote, thresholds)[: len(tr)]
    for label, L in (("head_on_lf_labels", L_tr), ("head_on_extended_labels", L_ext)):
        probs = TripletLabelModel(C).fit(L, names).predict_proba(L)
        cov = (L != ABSTAIN).any(1)
        weak = EncodedSplit(tr.embeddings[cov], probs[cov].astype(np.float32), tr.membership[cov])
        head = train_head(cfg, "moa", weak, va, progress=False).head
        for split_name, split in (("validation", va), ("test", te)):
            m = head_slice_metrics(cfg, head, split)
            out["splits"][split_name][f"{label}_macro_f1"] = m["overall"]["macro_f1"]
        out[f"{label}_train_coverage"] = float(cov.mean())
    gold_head = train_head(cfg, "moa", tr, va, progress=False).head
    for split_name, split in (("validation", va), ("test", te)):
        m = head_slice_metrics(cfg, gold_head, split)
        out["splits"][split_name]["head_on_gold_macro_f1"] = m["overall"]["macro_f1"]
    out["n"] = {"train": len(tr), "validation": len(va), "test": len(te)}
    print(name, out, flush=True)
    return out


demo = load_config()
sms = load_config(ROOT / "training" / "configs" / "sms_spam.yaml")
sms = sms.model_validate({**sms.model_dump(), "labeling_functions": SMS_LFS})
results = {"demo (tweets)": run("demo", demo), "SMS spam": run("sms", sms)}

ROWS = [
    ("Epoxy classifier: extended LF votes + label model, no training", "epoxy_macro_f1"),
    ("label model on the LF votes alone", "lfs_only_macro_f1"),
    ("MoA head trained on LF labels (covered rows)", "head_on_lf_labels_macro_f1"),
    ("MoA head trained on extended LF labels (covered rows)", "head_on_extended_labels_macro_f1"),
    ("MoA head trained on gold labels", "head_on_gold_macro_f1"),
]
lines = [
    "| macro-F1 (validation / test) | " + " | ".join(results) + " |",
    "|---|" + "---:|" * len(results),
]
for label, key in ROWS:
    cells = [
        f"{r['splits']['validation'][key]:.4f} / {r['splits']['test'][key]:.4f}"
        for r in results.values()
    ]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
lines.append("")
for name, r in results.items():
    t = r["splits"]["test"]
    ext_helps = (
        r["splits"]["validation"]["head_on_extended_labels_macro_f1"]
        > r["splits"]["validation"]["head_on_lf_labels_macro_f1"]
    )
    lines.append(
        f"- {name}: test coverage {t['lfs_only_coverage']:.3f} by the LFs, "
        f"{t['epoxy_coverage']:.3f} with the extension (accuracy on covered rows "
        f"{t['epoxy_covered_accuracy']:.3f}); on validation the head on extended labels is "
        f"{'better' if ext_helps else 'not better'} than on LF labels."
    )
write("epoxy_classifier", results, "\n".join(lines))
