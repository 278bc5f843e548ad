"""Finetune mode: backbone + slice-aware head trained end to end on token batches.

Same loss and early stopping as frozen mode; the backbone gets `cfg.train.finetune_lr`, the
head `cfg.train.lr`. Uses CUDA when available (the reason to finetune at all).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from tqdm.auto import tqdm

from slicewise.core.contracts import new_version
from training.backbone import load_encoder, load_tokenizer
from training.config import ProjectConfig
from training.model import Kind, SliceAwareClassifier, head_loss
from training.train import PreparedData, TrainedModel, _set_seed, macro_f1, new_head


def finetune(
    cfg: ProjectConfig,
    kind: Kind,
    prepared: PreparedData,
    seed: int = 0,
    sample_weight: np.ndarray | None = None,
    progress: bool = True,
) -> TrainedModel:
    """Train backbone and head end to end; return the best model on validation macro-F1."""
    t = cfg.train
    gen = _set_seed(seed)
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

    @torch.inference_mode()
    def val_f1() -> float:
        model.eval()
        preds = []
        for s in range(0, len(val), 256):
            rules = torch.from_numpy(val.membership[s : s + 256].astype(np.float32))
            probs, _, _ = model(**encode(val.texts[s : s + 256]), slice_rules=rules.to(device))
            preds.append(probs.argmax(1).cpu().numpy())
        return macro_f1(val.labels, np.concatenate(preds), len(cfg.labels))

    batch = min(t.batch_size, 32)
    best = (-1.0, 0, copy.deepcopy(model.state_dict()))
    for epoch in range(t.finetune_epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen).split(batch)
        for idx in tqdm(
            order, desc=f"finetune {kind} epoch {epoch}", unit="batch", disable=not progress
        ):
            i = idx.numpy()
            rules = torch.from_numpy(train.membership[i].astype(np.float32)).to(device)
            out = model.head(model.embed(**encode([train.texts[j] for j in i])), rules)
            loss = head_loss(
                out,
                torch.from_numpy(train.labels[i]).to(device),
                torch.from_numpy(train.membership[i]).to(device),
                t.lambda_ind,
                t.lambda_pred,
                None if w is None else w[idx].to(device),
                slice_experts=kind != "baseline",
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        f1 = val_f1()
        if f1 > best[0]:
            best = (f1, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= t.patience:
            break
    model.load_state_dict(best[2])
    model = model.cpu().eval()
    return TrainedModel(model, kind, seed, "finetune", new_version(), best[0], best[1])
