"""The slice-aware head (baseline / SBL / MoA) and the full classifier that is exported.

On a pooled representation `h ∈ R^d` (docs/design.md §4), with `K = k + 1` slices (user slices plus
the always-on `base`):

- indicator heads `q_s = sigmoid(w_sᵀ h + b_s)` (slice membership scores),
- experts `r_s = E_s(h) = ReLU(W_s h + c_s) ∈ R^d`,
- a shared predictor head `P`, `v_s = P(r_s)`, confidence `c_s = max softmax(v_s)`,
- a combiner that turns `(h, r, q, c)` into one representation `z` and attention weights,
- the final head `ŷ = softmax(H z)`.

The three kinds differ **only in the combiner**:

- `baseline`: `z = r_base` (a plain two-layer head); attention is one-hot on `base`. It has
  only the `base` expert, but still has indicator heads, so every prediction carries slice
  membership scores.
- `sbl` (Chen et al. 2019): `a = softmax_s(q_s · c_s / τ)`, `z = Σ_s a_s r_s`.
- `moa`: SBL's `z_a` mixed per example with a dual attention of the base representation over
  the experts, `b = softmax_s(⟨W_q h, W_k r_s⟩ / √a)` (query/key width `a`, default 64),
  `z_b = Σ_s b_s r_s`, by a learned gate
  `g = sigmoid(w_gᵀ h)`: `z = g · z_a + (1 − g) · z_b`. The reported `slice_attention` is the
  effective mixture `g · a + (1 − g) · b`. The gate's bias starts at 2 (g ≈ 0.88), so training
  starts from SBL rather than from an even mix with an untrained attention.

Membership (`train.membership`): `learned` routes on the indicators `q_s`; `rules` routes on
the exact membership of rule-evaluated slices instead (`slice_rules [B, k]`, 1/0, NaN for a
slice that could not be evaluated, whose `q_s` then stands) and on 1 for `base`. The
indicators are trained and reported either way; only what the combiner sees changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.backbone import mean_pool
from training.config import KINDS, MEMBERSHIPS, Kind, Membership


@dataclass
class HeadOutput:
    """Everything the loss and the exporter need from one forward pass."""

    logits: torch.Tensor  # [B, C]
    indicator_logits: torch.Tensor  # [B, K]; column 0 is `base`
    slice_logits: torch.Tensor  # [B, K, C], v_s
    attention: torch.Tensor  # [B, K]

    @property
    def probabilities(self) -> torch.Tensor:
        """Class probabilities `[B, C]`."""
        return self.logits.softmax(-1)

    @property
    def slice_membership(self) -> torch.Tensor:
        """User-slice membership scores `[B, k]` (no `base`)."""
        return torch.sigmoid(self.indicator_logits[:, 1:])


class Combiner(nn.Module):
    """Baseline combiner: the base expert only."""

    def forward(
        self, h: torch.Tensor, r: torch.Tensor, q: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return `(z [B, d], attention [B, K])` from `h [B,d]`, `r [B,K,d]`, `q, c [B,K]`."""
        attention = torch.zeros_like(q)
        attention[:, 0] = 1.0
        return r[:, 0], attention


class SBLCombiner(Combiner):
    """Slice-Based Learning: attention from membership × confidence."""

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature

    def slice_attention(self, q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """`a = softmax_s(q_s · c_s / τ)`."""
        return torch.softmax(q * c / self.temperature, dim=-1)

    def forward(
        self, h: torch.Tensor, r: torch.Tensor, q: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`z = Σ_s a_s r_s` with SBL's attention `a`."""
        a = self.slice_attention(q, c)
        return torch.einsum("bk,bkd->bd", a, r), a


class MoACombiner(SBLCombiner):
    """Mixture of attentions: SBL plus a dual attention of `h` over the experts, gated."""

    def __init__(self, d: int, temperature: float = 1.0, attention_dim: int = 64) -> None:
        super().__init__(temperature)
        self.query = nn.Linear(d, attention_dim, bias=False)
        self.key = nn.Linear(d, attention_dim, bias=False)
        self.gate = nn.Linear(d, 1)
        nn.init.constant_(
            self.gate.bias, 2.0
        )  # start close to SBL (g ≈ 0.88); the dual attention earns its share
        self.scale = 1.0 / math.sqrt(attention_dim)

    def forward(
        self, h: torch.Tensor, r: torch.Tensor, q: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`z = g · z_a + (1 − g) · z_b` with SBL's `a` and the dual attention `b`."""
        a = self.slice_attention(q, c)
        # ⟨W_q h, W_k r_s⟩ = ⟨W_kᵀ W_q h, r_s⟩: two d×a products per example instead of K
        scores = torch.einsum("bd,bkd->bk", self.query(h) @ self.key.weight, r) * self.scale
        b = torch.softmax(scores, dim=-1)
        g = torch.sigmoid(self.gate(h))  # [B, 1]
        mix = g * a + (1 - g) * b
        return torch.einsum("bk,bkd->bd", mix, r), mix


class SliceAwareHead(nn.Module):
    """Indicator heads, slice experts, a shared predictor and a combiner on pooled `h`."""

    def __init__(
        self,
        d: int,
        num_classes: int,
        num_slices: int,
        kind: Kind = "moa",
        dropout: float = 0.1,
        temperature: float = 1.0,
        attention_dim: int = 64,
        membership: Membership = "learned",
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown model kind {kind!r}; use one of {KINDS}")
        if membership not in MEMBERSHIPS:
            raise ValueError(f"unknown membership {membership!r}; use one of {MEMBERSHIPS}")
        self.kind, self.d, self.num_classes, self.num_slices = kind, d, num_classes, num_slices
        self.membership = membership
        big_k = num_slices + 1
        self.dropout = nn.Dropout(dropout)
        self.indicator = nn.Linear(d, big_k)
        # All experts as one batched linear map: weight [K, d, d]; the baseline has `base` only.
        experts = 1 if kind == "baseline" else big_k
        self.expert_weight = nn.Parameter(torch.empty(experts, d, d))
        self.expert_bias = nn.Parameter(torch.zeros(experts, d))
        for w in self.expert_weight:
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        self.predictor = nn.Linear(d, num_classes)  # P, shared by the slices
        self.final = nn.Linear(d, num_classes)  # H
        self.combiner: Combiner = {
            "baseline": lambda: Combiner(),
            "sbl": lambda: SBLCombiner(temperature),
            "moa": lambda: MoACombiner(d, temperature, attention_dim),
        }[kind]()

    @property
    def uses_rules(self) -> bool:
        """True when the combiner routes on `slice_rules` (an input of the exported graph).

        The baseline's combiner never reads membership, so it never needs the rules.
        """
        return self.membership == "rules" and self.kind != "baseline"

    def forward(self, h: torch.Tensor, slice_rules: torch.Tensor | None = None) -> HeadOutput:
        """Run the head on pooled representations `h [B, d]`.

        Args:
            h: pooled representations `[B, d]`.
            slice_rules: exact user-slice membership `[B, k]` (1/0; NaN = not evaluated, use
                `q_s`). Required with `membership="rules"`, ignored with `"learned"`.

        Raises:
            ValueError: a rules-membership head called without `slice_rules`, or with the
                wrong shape.
        """
        h = self.dropout(h)
        indicator_logits = self.indicator(h)
        r = torch.relu(torch.einsum("bd,ked->bke", h, self.expert_weight) + self.expert_bias)
        slice_logits = self.predictor(self._expert_dropout(r))  # [B, K, C]
        q = torch.sigmoid(indicator_logits)
        c = slice_logits.softmax(-1).amax(-1)
        z, attention = self.combiner(h, r, self.routing_membership(q, slice_rules), c)
        return HeadOutput(self.final(self.dropout(z)), indicator_logits, slice_logits, attention)

    def routing_membership(self, q: torch.Tensor, slice_rules: torch.Tensor | None) -> torch.Tensor:
        """What the combiner routes on `[B, K]`: `q`, or the rules' membership where evaluated."""
        if not self.uses_rules:
            return q
        if slice_rules is None:
            raise ValueError(
                "this head routes on rule membership (train.membership: rules); pass "
                "slice_rules [batch, k]"
            )
        if slice_rules.shape != (q.shape[0], self.num_slices):
            raise ValueError(
                f"slice_rules has shape {tuple(slice_rules.shape)}; expected "
                f"({q.shape[0]}, {self.num_slices}) (batch, user slices)"
            )
        rules = slice_rules.to(q.dtype)
        user = torch.where(torch.isnan(rules), q[:, 1:], rules)
        return torch.cat([torch.ones_like(q[:, :1]), user], dim=1)

    def _expert_dropout(self, r: torch.Tensor) -> torch.Tensor:
        """Dropout on `r [B, K, d]` with one mask per example shared by its experts.

        Drawing `B·d` instead of `B·K·d` random numbers: per-element dropout on `r` was a
        third of a training step's time on CPU.
        """
        p = self.dropout.p
        if not self.training or p == 0:
            return r
        keep = torch.rand(r.shape[0], 1, r.shape[2], device=r.device) >= p
        return r * keep / (1 - p)


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-example CE for int labels `[B]` or soft labels `[B, C]`."""
    if target.dim() == logits.dim():
        return -(target * logits.log_softmax(-1)).sum(-1)
    return F.cross_entropy(logits, target, reduction="none")


def head_loss(
    out: HeadOutput,
    target: torch.Tensor,
    membership: torch.Tensor,
    lambda_ind: float = 1.0,
    lambda_pred: float = 1.0,
    sample_weight: torch.Tensor | None = None,
    slice_experts: bool = True,
) -> torch.Tensor:
    """`CE(ŷ, y) + λ_ind Σ_s BCE(q_s, 1[x ∈ s]) + λ_pred Σ_s CE_{x ∈ s}(v_s, y)` (docs/design.md §4).

    Args:
        out: the head's output.
        target: int labels `[B]` or soft labels `[B, C]`.
        membership: user-slice membership `[B, k]` (0/1); `base` is added as all ones.
        lambda_ind: weight of the indicator loss (summed over the K slices).
        lambda_pred: weight of the per-slice predictor loss, each slice's CE averaged over its
            members in the batch.
        sample_weight: optional per-example weights `[B]` (commentaries), normalised to mean 1
            within each class of the batch (int labels) or over the batch (soft labels): they
            re-weight examples against others of their class and never change the class balance.
        slice_experts: False for the baseline, whose prediction uses no slice experts: the
            per-slice predictor term is then left out, keeping it a plain head.
    """
    b = target.shape[0]
    if sample_weight is None:
        w = torch.ones(b, device=target.device)
    elif target.dim() == 1:
        c = out.logits.shape[1]
        zeros = sample_weight.new_zeros(c)  # on the inputs' device (CUDA, meta, ...)
        total = zeros.index_add(0, target, sample_weight)
        count = zeros.index_add(0, target, torch.ones_like(sample_weight))
        w = sample_weight * (count / total.clamp(min=1e-12))[target]
    else:
        w = sample_weight / sample_weight.mean().clamp(min=1e-12)
    member = torch.cat([torch.ones(b, 1, device=membership.device), membership.float()], dim=1)
    loss = (w * _cross_entropy(out.logits, target)).mean()
    if lambda_ind:
        bce = F.binary_cross_entropy_with_logits(out.indicator_logits, member, reduction="none")
        loss = loss + lambda_ind * (w[:, None] * bce).sum(1).mean()
    if lambda_pred and slice_experts:
        k = member.shape[1]
        per_slice = torch.stack(
            [_cross_entropy(out.slice_logits[:, s], target) for s in range(k)], 1
        )
        denom = member.sum(0).clamp(min=1.0)
        loss = loss + lambda_pred * ((w[:, None] * per_slice * member).sum(0) / denom).sum()
    return loss


class SliceAwareClassifier(nn.Module):
    """Backbone encoder + mean pooling + slice-aware head: the exported graph."""

    def __init__(self, encoder: nn.Module, head: SliceAwareHead) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled backbone representation `h [B, d]`."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        slice_rules: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(probabilities [B, C], slice_membership [B, k], slice_attention [B, K])`.

        `slice_rules [B, k]` is needed when the head routes on rules (`head.uses_rules`).
        """
        out = self.head(self.embed(input_ids, attention_mask), slice_rules)
        return out.probabilities, out.slice_membership, out.attention
