"""Tokenizer + ONNX Runtime session for one bundle, and where bundles come from.

CUDA is used when ONNX Runtime has the CUDA provider and a session on it starts, with the
bundle's fp16 model when it has one (`export.fp16`); otherwise the CPU provider (with the int8
model when the bundle has one and the settings allow). The active provider is reported by
`ModelRuntime.provider`.
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
_ENV_ARENA: list[bool] = []  # whether this process registered its shared CPU arena (once)


def use_same_as_requested_arena(opts: ort.SessionOptions) -> None:
    """Make `opts` use a process-wide CPU arena that grows by what is requested
    (`kSameAsRequested`) instead of ONNX Runtime's default doubling (`kNextPowerOfTwo`).
    """
    if not _ENV_ARENA:
        info = ort.OrtMemoryInfo(
            "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
        )
        cfg = ort.OrtArenaCfg({"arena_extend_strategy": 1})  # 1: kSameAsRequested
        ort.create_and_register_allocator(info, cfg)
        _ENV_ARENA.append(True)
    opts.add_session_config_entry("session.use_env_allocators", "1")


def load_tokenizer(bundle: c.Bundle) -> Tokenizer:
    """The bundle's fast tokenizer with truncation to `max_length` (batches pad themselves)."""
    path = bundle.tokenizer_dir / "tokenizer.json"
    if not path.exists():
        raise c.BundleError(f"model bundle {bundle.path} has no tokenizer/tokenizer.json")
    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(bundle.manifest.max_length)
    tok.no_padding()
    return tok


def length_buckets(lengths: np.ndarray, min_size: int = 4, ratio: float = 1.5) -> list[np.ndarray]:
    """Row indices grouped by token length, shortest first, so each group pads to its own longest.

    A new group starts where the length exceeds `ratio` × the group's shortest and the group
    already has `min_size` rows (smaller groups cost more in per-call overhead than they save).
    Groups of 4 or more ran 4-8% more texts per CPU second than groups of 8 or more at the batch
    sizes the service forms (8 to 16) and no fewer at 4 (bench/bench_buckets.py).
    """
    order = np.argsort(lengths, kind="stable")
    groups, start = [], 0
    for i in range(1, len(order) + 1):
        if i == len(order) or (
            i - start >= min_size and lengths[order[i]] > ratio * lengths[order[start]]
        ):
            groups.append(order[start:i])
            start = i
    return groups


def choose_providers(prefer_gpu: bool = True) -> list[str]:
    """CUDA first when this onnxruntime build has it, CPU always as the fallback."""
    available = ort.get_available_providers()
    if prefer_gpu and "CUDAExecutionProvider" in available:
        preload = getattr(ort, "preload_dlls", None)  # onnxruntime-gpu ≥ 1.21
        if preload is not None:  # pragma: no cover - needs a GPU build
            try:  # the CUDA/cuDNN libraries of the nvidia-* wheels (`onnxruntime-gpu[cuda,cudnn]`)
                preload()
            except Exception as exc:  # the session start below reports what is still missing
                log.warning("onnxruntime.preload_dlls failed: %s", exc)
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
    pad_id: int = 0

    @classmethod
    def load(
        cls,
        bundle: c.Bundle,
        prefer_int8: bool = True,
        threads: int = 0,
        evaluate_rules: bool = True,
        prefer_fp16: bool = True,
        memory: tuple[bool, bool] = (True, True),
        arena_same_as_requested: bool = False,
    ) -> ModelRuntime:
        """Open the bundle's model on the best provider and run one warm-up inference.

        `threads`: ONNX Runtime intra-op threads per call (0: its default, one per core). The
        service runs several calls at once, one thread each: on 2 cores that served 19% more
        requests than one call at a time on two threads, whose thread pool stalls whenever the
        HTTP thread takes a core. `evaluate_rules`: evaluate the bundle's slice rules exactly
        (`service/membership.py`); off, every slice's membership is the learned score.
        `memory`: ONNX Runtime's CPU memory arena and memory pattern, on or off;
        `arena_same_as_requested`: the arena grows by what is requested, not by doubling.
        """
        providers = choose_providers()
        on_gpu = providers[0] == "CUDAExecutionProvider"
        model_file = bundle.model_file(
            prefer_int8=prefer_int8 and not on_gpu, prefer_fp16=prefer_fp16 and on_gpu
        )
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.enable_cpu_mem_arena, opts.enable_mem_pattern = memory
        if memory[0] and arena_same_as_requested and providers[0] == "CPUExecutionProvider":
            use_same_as_requested_arena(opts)
        session = ort.InferenceSession(str(model_file), opts, providers=providers)
        provider = session.get_providers()[0]
        if on_gpu and provider != "CUDAExecutionProvider":  # pragma: no cover - needs a GPU build
            log.warning("CUDA provider is installed but did not start; serving on %s", provider)
            if model_file.name == c.MODEL_FP16_ONNX:  # no fp16 kernels on the CPU provider
                model_file = bundle.model_file(prefer_int8=prefer_int8)
                session = ort.InferenceSession(str(model_file), opts, providers=providers[1:])
        membership = SliceMembership.from_manifest(bundle.manifest, evaluate_rules)
        tokenizer = load_tokenizer(bundle)
        pad_id = tokenizer.token_to_id("[PAD]") or 0
        runtime = cls(bundle, session, tokenizer, provider, model_file, membership, pad_id)
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

        The batch runs as length buckets (`length_buckets`): each pads to its own longest text
        instead of the batch's, so short tweets stop paying for a long one.
        """
        t0 = time.perf_counter()
        ids = [e.ids for e in self.tokenizer.encode_batch(texts)]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        tokenize = time.perf_counter() - t0
        t1 = time.perf_counter()
        exact, failed = self.membership.evaluate(texts)
        rule_input = (
            self.membership.model_input(exact, failed)
            if c.SLICE_RULES_INPUT in self.bundle.manifest.inputs  # the model routes on the rules
            else None
        )
        rules = time.perf_counter() - t1
        infer = 0.0
        outs: dict[str, np.ndarray] = {}
        for group in length_buckets(lengths):
            t1 = time.perf_counter()
            width = int(lengths[group].max())
            input_ids = np.full((len(group), width), self.pad_id, dtype=np.int64)
            for row, i in enumerate(group):
                input_ids[row, : lengths[i]] = ids[i]
            mask = (np.arange(width) < lengths[group, None]).astype(np.int64)
            feeds = {"input_ids": input_ids, "attention_mask": mask}
            if rule_input is not None:
                feeds[c.SLICE_RULES_INPUT] = rule_input[group]
            t2 = time.perf_counter()
            res = self.session.run(list(c.OUTPUT_NAMES), feeds)
            infer += time.perf_counter() - t2
            tokenize += t2 - t1
            for name, arr in zip(c.OUTPUT_NAMES, res, strict=True):
                if name not in outs:
                    outs[name] = np.empty((len(texts), *arr.shape[1:]), dtype=arr.dtype)
                outs[name][group] = arr
        t3 = time.perf_counter()
        outs["slices"] = self.membership.combine(outs["slice_membership"], exact, failed)
        outs["rule_failed"] = failed  # [B, r]: cells whose slicing function raised
        return outs, Timings(tokenize, infer, rules + time.perf_counter() - t3)
