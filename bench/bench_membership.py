"""Slice membership as a user sees it, through a running `bentoml serve` of the demo bundle.

1. 1,500 held-out texts (the tweets demo's test split, seeded sample) are sent to `/predict`;
   each response's `active_slices` is compared, per slice, with the config's slicing functions
   (precision / recall; rule slices must be exact), next to what the learned indicator alone
   gives (`slice_scores` at or above the slice threshold: what `active_slices` was before).
2. The cost of evaluating the rules in the service: the same bundle served twice, rules on and
   off (`SLICEWISE_SLICE_RULES=0`), closed-loop load at concurrency 32, one text a request,
   interleaved rounds (on/off, off/on, ...), medians.
3. The evaluator alone: microseconds per text for the demo's six rules, 64-text batches.

Run: .venv/bin/python bench/bench_membership.py [--bundle .slicewise/bundle] [--url URL]
-> bench/results/membership.{json,md}
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import time

import httpx
import numpy as np
from common import ROOT, write
from loadgen import load

from slicewise.core import contracts as c
from slicewise.core.redis_server import LocalRedis
from slicewise.processes import BentoServer
from training.config import load_config
from training.data import load_dataset, split_dataset
from training.slices import slice_evaluator, slice_membership

parser = argparse.ArgumentParser()
parser.add_argument("--bundle", default=str(ROOT / ".slicewise" / "bundle"))
parser.add_argument("--url", default=None, help="a running service (default: start one)")
parser.add_argument("--count", type=int, default=1500)
parser.add_argument("--rounds", type=int, default=16, help="load rounds per setting")
parser.add_argument("--seconds", type=float, default=5.0, help="length of one load round")
args = parser.parse_args()

cfg = load_config()
bundle = c.Bundle.load(args.bundle)
test = split_dataset(load_dataset(cfg), cfg.dataset.split).test["text"].astype(str).tolist()
texts = random.Random(0).sample(test, args.count)
truth = slice_membership(texts, cfg)
names = cfg.slice_names
assert names == bundle.manifest.slice_names, "the bundle was not exported from the demo config"


def send(url: str, batch: int = 32) -> tuple[list[dict], dict]:
    """Every text through /predict; the predictions in order and the response's `membership`."""
    preds: list[dict] = []
    membership: dict = {}
    with httpx.Client(timeout=60) as client:
        for i in range(0, len(texts), batch):
            r = client.post(url + "/predict", json={"texts": texts[i : i + batch]})
            r.raise_for_status()
            body = r.json()
            membership = body["membership"]
            preds += body["predictions"]
    return preds, membership


def precision_recall(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    tp = float((pred & true).sum())
    return {
        "precision": tp / pred.sum() if pred.sum() else float("nan"),
        "recall": tp / true.sum() if true.sum() else float("nan"),
        "members": int(true.sum()),
    }


def bootstrap_ci(ratios: list[float], n: int = 10_000) -> list[float]:
    """90% bootstrap interval of the cost `1 - median(on/off ratio)` over the rounds."""
    rng = np.random.default_rng(0)
    draws = rng.choice(np.asarray(ratios), (n, len(ratios)))
    costs = 1 - np.median(draws, axis=1)
    return [float(np.quantile(costs, 0.05)), float(np.quantile(costs, 0.95))]


def stage_seconds(url: str) -> dict[str, float]:
    """Seconds the service spent per inference stage so far (`slicewise_inference_seconds`:
    tokenize, rules, infer, postprocess), read from its /metrics."""
    text = httpx.get(url + "/metrics", timeout=30).text
    found = re.findall(
        r'^slicewise_inference_seconds_sum\{[^}]*stage="(\w+)"[^}]*\} ([0-9.eE+-]+)$', text, re.M
    )
    out: dict[str, float] = {}
    for stage, value in found:
        out[stage] = out.get(stage, 0.0) + float(value)
    return out


rds = LocalRedis().start()
servers = {}
try:
    if args.url:
        url_on = args.url
    else:
        for mode, flag in (("on", "1"), ("off", "0")):
            servers[mode] = BentoServer(
                {
                    "SLICEWISE_MODEL_DIR": str(bundle.path),
                    "REDIS_URL": rds.url,
                    "SLICEWISE_SLICE_RULES": flag,
                },
                log_file=ROOT / ".slicewise" / f"bench_membership_{mode}.log",
            ).start()
        url_on = servers["on"].url
    preds, membership = send(url_on)
    active = np.array([[n in p["active_slices"] for n in names] for p in preds])
    thresholds = bundle.manifest.thresholds
    learned = np.array([[p["slice_scores"][n] >= thresholds[n] for n in names] for p in preds])
    per_slice = {
        n: {
            "membership": membership[n],
            "monitored": n in cfg.monitored_slices,
            "served": precision_recall(active[:, j], truth[:, j]),
            "learned_indicator": precision_recall(learned[:, j], truth[:, j]),
        }
        for j, n in enumerate(names)
    }

    cost: dict = {}
    if servers:
        asyncio.run(load(servers["on"].url, texts, 3))
        asyncio.run(load(servers["off"].url, texts, 3))
        runs: dict[str, list[dict]] = {"on": [], "off": []}
        for r in range(args.rounds):
            order = ("on", "off") if r % 2 == 0 else ("off", "on")
            for mode in order:
                runs[mode].append(asyncio.run(load(servers[mode].url, texts, args.seconds)))
        med = {
            mode: {k: statistics.median(x[k] for x in v) for k in v[0]} for mode, v in runs.items()
        }
        ratios = [a["rps"] / b["rps"] for a, b in zip(runs["on"], runs["off"], strict=True)]
        cost = {
            "runs": runs,
            "median": med,
            "throughput_cost": 1 - med["on"]["rps"] / med["off"]["rps"],
            "round_ratio_on_off": ratios,
            "median_round_cost": 1 - statistics.median(ratios),
            "median_round_cost_ci90": bootstrap_ci(ratios),
            "stage_seconds": {mode: stage_seconds(srv.url) for mode, srv in servers.items()},
        }
finally:
    for srv in servers.values():
        srv.stop()
    rds.stop()

evaluator = slice_evaluator(cfg)
batches = [texts[i : i + 64] for i in range(0, len(texts), 64)]
timings = []
for _ in range(5):
    t0 = time.perf_counter()
    for b in batches:
        evaluator.evaluate(b)
    timings.append((time.perf_counter() - t0) / len(texts))
us_per_text = statistics.median(timings) * 1e6


def fmt(v: dict) -> str:
    return f"{v['precision']:.3f} | {v['recall']:.3f}"


rows = "\n".join(
    f"| {n}{' (monitored)' if v['monitored'] else ''} | {v['membership']} | "
    f"{v['served']['members']} | {fmt(v['served'])} | {fmt(v['learned_indicator'])} |"
    for n, v in per_slice.items()
)
md = f"""{args.count} held-out demo tweets (test split) through `bentoml serve` of bundle
{bundle.manifest.version} ({bundle.manifest.model_kind}); `active_slices` against the config's
slicing functions:

| slice | membership | members | served precision | served recall | learned indicator precision | learned indicator recall |
|---|---|---:|---:|---:|---:|---:|
{rows}

The last two columns are what `active_slices` was before membership became exact: the model's
learned indicator (`slice_scores` ≥ the slice threshold tuned on validation).
"""
if cost:
    on, off = cost["median"]["on"], cost["median"]["off"]
    on_stages = cost["stage_seconds"]["on"]
    lo, hi = cost["median_round_cost_ci90"]
    rules_share = on_stages.get("rules", 0.0) / max(1e-9, sum(on_stages.values()))
    cost["rules_stage_share"] = rules_share
    md += f"""
Rule evaluation cost (concurrency 32, one text a request, {args.rounds}×{args.seconds:.0f}s
interleaved rounds per setting, medians; 2 CPU cores shared with other jobs):

| rules | req/s | p50 ms | p99 ms | errors |
|---|---:|---:|---:|---:|
| on | {on["rps"]:.1f} | {on["p50_ms"]:.0f} | {on["p99_ms"]:.0f} | {on["errors"]:.0f} |
| off (`SLICEWISE_SLICE_RULES=0`) | {off["rps"]:.1f} | {off["p50_ms"]:.0f} | {off["p99_ms"]:.0f} | {off["errors"]:.0f} |

Throughput cost of the rules, from the median of the per-round on/off ratios (each round runs
both settings back to back, so a slow spell of the shared machine hits both):
**{100 * cost["median_round_cost"]:+.1f}%** (90% bootstrap interval
{100 * lo:+.1f}% to {100 * hi:+.1f}%; ratios {", ".join(f"{x:.3f}" for x in cost["round_ratio_on_off"])});
{100 * cost["throughput_cost"]:+.1f}% from the ratio of the two medians above.

Inside the rules-on service, over all of the load above (`slicewise_inference_seconds` per
stage): the rules stage took **{100 * rules_share:.2f}%** of the model path's time (tokenize
{on_stages.get("tokenize", 0):.1f} s, rules {on_stages.get("rules", 0):.2f} s, infer
{on_stages.get("infer", 0):.1f} s, postprocess {on_stages.get("postprocess", 0):.1f} s); a cost
this small cannot be resolved by the throughput rounds on a shared machine.
"""
md += f"""
The evaluator alone (`slicewise.core.slice_rules`, the demo's six rules, 64-text batches, median
of 5 passes): **{us_per_text:.1f} µs per text**."""
if cost:
    # closed loop on 2 cores: one request (one text) costs about cores / (req/s) of CPU time
    per_request_us = 2 / cost["median"]["off"]["rps"] * 1e6
    cost["evaluator_share_of_request"] = us_per_text / per_request_us
    md += f""" One request costs about {per_request_us / 1000:.0f} ms of CPU
here (2 cores / {cost["median"]["off"]["rps"]:.1f} req/s, rules off), so the rules are
**{100 * cost["evaluator_share_of_request"]:.2f}%** of it, measured under the same load."""
md += "\n"
write(
    "membership",
    {
        "bundle_version": bundle.manifest.version,
        "texts": args.count,
        "per_slice": per_slice,
        "rules_cost": cost,
        "evaluator_us_per_text": us_per_text,
    },
    md,
)
