"""Tokenizer + ONNX Runtime session for one bundle, and where bundles come from.

CUDA is used when ONNX Runtime has the CUDA provider and a session on it starts; otherwise
the CPU provider (with the int8 model when the bundle has one and the settings allow). The
active provider is reported by `ModelRuntime.provider`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from service.membership import SliceMembership
from slicewise.core import contracts as c

log = logging.getLogger("slicewise.service")


def load_tokenizer(bundle: c.Bundle) -> Tokenizer:
    """The bundle's fast tokenizer with truncation to `max_length` and padding to the batch."""
    path = bundle.tokenizer_dir / "tokenizer.json"
    if not path.exists():
        raise c.BundleError(f"model bundle {bundle.path} has no tokenizer/tokenizer.json")
    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(bundle.manifest.max_length)
    pad_id = tok.token_to_id("[PAD]") or 0
    tok.enable_padding(pad_id=pad_id, pad_token="[PAD]")
    return tok


def choose_providers(prefer_gpu: bool = True) -> list[str]:
    """CUDA first when this onnxruntime build has it, CPU always as the fallback."""
    available = ort.get_available_providers()
    if prefer_gpu and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@dataclass
class Timings:
    """Seconds spent per stage in the last call."""

    tokenize: float = 0.0
    infer: float = 0.0
    rules: float = 0.0


@dataclass
class ModelRuntime:
    """One loaded bundle: tokenizer, ORT session, manifest and the provider actually used."""

    bundle: c.Bundle
    session: ort.InferenceSession
    tokenizer: Tokenizer
    provider: str
    model_file: Path
    membership: SliceMembership

    @classmethod
    def load(
        cls,
        bundle: c.Bundle,
        prefer_int8: bool = True,
        threads: int = 0,
        evaluate_rules: bool = True,
    ) -> ModelRuntime:
        """Open the bundle's model on the best provider and run one warm-up inference.

        `threads`: ONNX Runtime intra-op threads per call (0: its default, one per core). The
        service runs several calls at once, one thread each: on 2 cores that served 19% more
        requests than one call at a time on two threads, whose thread pool stalls whenever the
        HTTP thread takes a core. `evaluate_rules`: evaluate the bundle's slice rules exactly
        (`service/membership.py`); off, every slice's membership is the learned score.
        """
        providers = choose_providers()
        on_gpu = providers[0] == "CUDAExecutionProvider"
        model_file = bundle.model_file(prefer_int8=prefer_int8 and not on_gpu)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        session = ort.InferenceSession(str(model_file), opts, providers=providers)
        provider = session.get_providers()[0]
        if on_gpu and provider != "CUDAExecutionProvider":  # pragma: no cover - needs a GPU build
            log.warning("CUDA provider is installed but did not start; serving on %s", provider)
        membership = SliceMembership.from_manifest(bundle.manifest, evaluate_rules)
        runtime = cls(bundle, session, load_tokenizer(bundle), provider, model_file, membership)
        runtime.predict(["warm-up"])
        log.info(
            "loaded model %s (%s) on %s; slice membership: %s",
            bundle.manifest.version,
            model_file.name,
            provider,
            membership.modes,
        )
        return runtime

    @property
    def version(self) -> str:
        """The served model version."""
        return self.bundle.manifest.version

    def predict(self, texts: list[str]) -> tuple[dict[str, np.ndarray], Timings]:
        """Model outputs for a batch of texts plus `slices` (membership: exact 0/1 for rule
        slices, the learned `slice_membership` score otherwise), and where the time went
        (thread-safe). A model whose manifest lists the `slice_rules` input (trained with
        `train.membership: rules`) is fed the same exact membership, NaN where a slice is not
        evaluated (its learned indicator then stands in).
        """
        t0 = time.perf_counter()
        enc = self.tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        }
        t1 = time.perf_counter()
        exact, failed = self.membership.evaluate(texts)
        if c.SLICE_RULES_INPUT in self.bundle.manifest.inputs:  # the model routes on the rules
            feeds[c.SLICE_RULES_INPUT] = self.membership.model_input(exact, failed)
        t2 = time.perf_counter()
        outs = dict(zip(c.OUTPUT_NAMES, self.session.run(list(c.OUTPUT_NAMES), feeds), strict=True))
        t3 = time.perf_counter()
        outs["slices"] = self.membership.combine(outs["slice_membership"], exact, failed)
        return outs, Timings(t1 - t0, t3 - t2, t2 - t1 + time.perf_counter() - t3)
