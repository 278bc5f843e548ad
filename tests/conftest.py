"""Fixtures shared by every test folder.

- `tiny_backbone_dir`: a randomly initialised 2-layer BERT (hidden 32) saved with the real
  all-MiniLM-L6-v2 tokenizer, so tests exercise real tokenisation on a model that runs in ms.
- `redis_server`: a real `redis-server` process on a free port (function-scoped: tests may stop
  and restart it); `redis_url` for a session-wide one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from slicewise.redis_server import LocalRedis  # noqa: E402

TINY_BERT = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    max_position_embeddings=128,
)


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from training.backbone import default_backbone_path

    out = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(default_backbone_path()))
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, **TINY_BERT))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture
def redis_server() -> Iterator[LocalRedis]:
    server = LocalRedis().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    server = LocalRedis().start()
    yield server.url
    server.stop()
