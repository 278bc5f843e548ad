"""Finetune mode: backbone + slice-aware head trained end to end on token batches.

Same loss and the same loop (`training.fit.fit`, early stopping on validation macro-F1) as
frozen mode; the backbone gets `cfg.train.finetune_lr`, the head `cfg.train.lr`. Uses CUDA
when available (the reason to finetune at all).
"""

from __future__ import annotations

import numpy as np
import torch

from slicewise.core.contracts import new_version
from training.backbone import load_encoder, load_tokenizer
from training.checkpoint import TrainedModel
from training.config import Kind, ProjectConfig
from training.fit import fit, macro_f1, new_head, set_seed
from training.model import SliceAwareClassifier, head_loss
from training.prepared import PreparedData


def finetune(
    cfg: ProjectConfig,
    kind: Kind,
    prepared: PreparedData,
    *,
    seed: int = 0,
    sample_weight: np.ndarray | None = None,
    progress: bool = True,
) -> TrainedModel:
    """Train backbone and head end to end; return the best model on validation macro-F1.

    Args:
        cfg: project config (`cfg.train`: epochs, learning rates, patience).
        kind: `baseline`, `sbl` or `moa`.
        prepared: the prepared data (texts are enough: `prepare_data(cfg, embed=False)`).
        seed: makes the run deterministic (on CPU).
        sample_weight: optional per-example weights of the training split.
        progress: show a progress bar per epoch.

    Returns:
        The classifier of the best epoch, on CPU in eval mode (not yet checkpointed).
    """
    t = cfg.train
    gen = set_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(cfg.backbone)
    encoder = load_encoder(cfg.backbone)
    model = SliceAwareClassifier(encoder, new_head(cfg, kind, encoder.config.hidden_size)).to(
        device
    )
    opt = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": t.finetune_lr},
            {"params": model.head.parameters(), "lr": t.lr},
        ],
        weight_decay=t.weight_decay,
    )
    train, val = prepared.splits["train"], prepared.splits["validation"]
    assert train.texts is not None and val.texts is not None
    train_texts, val_texts = train.texts, val.texts
    w = None if sample_weight is None else torch.as_tensor(sample_weight, dtype=torch.float32)

    def encode(texts: list[str]) -> dict[str, torch.Tensor]:
        enc = tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=cfg.backbone.max_length,
            return_tensors="pt",
        )
        return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        i = idx.numpy()
        rules = torch.from_numpy(train.membership[i].astype(np.float32)).to(device)
        out = model.head(model.embed(**encode([train_texts[j] for j in i])), rules)
        return head_loss(
            out,
            torch.from_numpy(train.labels[i]).to(device),
            torch.from_numpy(train.membership[i]).to(device),
            t.lambda_ind,
            t.lambda_pred,
            None if w is None else w[idx].to(device),
            slice_experts=kind != "baseline",
        )

    @torch.inference_mode()
    def validate() -> dict[str, float]:
        model.eval()
        preds = []
        for s in range(0, len(val), 256):
            rules = torch.from_numpy(val.membership[s : s + 256].astype(np.float32))
            probs, _, _ = model(**encode(val_texts[s : s + 256]), slice_rules=rules.to(device))
            preds.append(probs.argmax(1).cpu().numpy())
        return {"val_macro_f1": macro_f1(val.labels, np.concatenate(preds), len(cfg.labels))}

    res = fit(
        model,
        opt,
        batch_loss,
        n=len(train),
        batch_size=min(t.batch_size, 32),
        epochs=t.finetune_epochs,
        generator=gen,
        validate=validate,
        patience=t.patience,
        progress=progress,
        desc=f"finetune {kind}",
        bar_per_batch=True,
    )
    model = model.cpu().eval()
    return TrainedModel(
        model, kind, seed, "finetune", new_version(), res.best_score, res.best_epoch
    )
