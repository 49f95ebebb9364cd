"""Shared fixtures: a tiny random BERT for fast tests, the real backbone for slow ones."""

from __future__ import annotations

import csv
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch

from mtst.modeling.backbone import bundled_model_path
from mtst.modeling.encoder import SentenceEncoder
from mtst.modeling.heads import HeadSpec
from mtst.modeling.model import MultiTaskModel

if os.environ.get("PYTEST_XDIST_WORKER"):  # parallel workers share the cores: one thread each
    torch.set_num_threads(1)

SENTENCES = [
    "The battery lasts two full days.",
    "Terrible customer service, never again.",
    "ok",
    "This blender is loud but it crushes ice like nothing else and cleans up fast.",
    "Arrived late.",
]


@pytest.fixture(autouse=True)
def fp32_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """``precision: auto`` takes bf16 on CPUs that have it natively; the suite's figures must not depend
    on the machine, so here ``auto`` means fp32 and a test that wants bf16 says ``precision: bf16``."""
    monkeypatch.setattr("mtst.training.trainer.native_bf16", lambda cuda=None: False)
    monkeypatch.setattr("mtst.modeling.encoder.native_bf16", lambda cuda=None: False)


def save_tiny_bert(directory: Path, seed: int = 0, **config: Any) -> Path:
    """A random BERT (hidden 32) saved as safetensors, with the real tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_path(), local_files_only=True)
    torch.manual_seed(seed)
    settings = {
        "vocab_size": tokenizer.vocab_size,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
        **config,
    }
    BertModel(BertConfig(**settings)).save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT (hidden 32) for the fast tests."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def tiny_encoder(tiny_backbone_dir: Path) -> SentenceEncoder:
    return SentenceEncoder.from_pretrained(str(tiny_backbone_dir))


def make_tasks(head_type: str = "classification") -> dict[str, HeadSpec]:
    return {
        "category": HeadSpec(type="classification", labels=["books", "kitchen", "toys"]),
        "sentiment": HeadSpec(type=head_type, labels=["negative", "neutral", "positive"], hidden_size=16),
    }


@pytest.fixture
def tiny_model(tiny_backbone_dir: Path) -> MultiTaskModel:
    torch.manual_seed(0)
    return MultiTaskModel.from_backbone(make_tasks(), backbone=str(tiny_backbone_dir))


@pytest.fixture(scope="session")
def real_encoder() -> SentenceEncoder:
    return SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")


WORDS = {
    ("books", "positive"): "a wonderful gripping novel i loved every page",
    ("books", "negative"): "a dull boring novel with a terrible ending",
    ("kitchen", "positive"): "this pan cooks great and cleans up easily",
    ("kitchen", "negative"): "the pan rusted and the handle broke off",
}


def _rows(n: int, offset: int = 0) -> list[dict[str, str]]:
    keys = list(WORDS)
    return [
        {"text": f"{WORDS[keys[i % 4]]} {i + offset}", "category": keys[i % 4][0], "sentiment": keys[i % 4][1]}
        for i in range(n)
    ]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("data")
    out = {}
    for split, n in (("train", 24), ("validation", 8), ("test", 8)):
        path = d / f"{split}.csv"
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["text", "category", "sentiment"])
            writer.writeheader()
            writer.writerows(_rows(n, offset=100 * len(out)))
        out[split] = str(path)
    return out


def free_port() -> int:
    """A TCP port nothing listens on (for servers and process groups started by tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def trained_run(tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of the tiny model (heads only, 4 steps), trained once: tests read it, never change it."""
    import json

    from mtst.cli import main

    root = tmp_path_factory.mktemp("trained")
    config = root / "run.yaml"
    config.write_text(
        "\n".join(
            [
                f"model: {{backbone: {json.dumps(str(tiny_backbone_dir))}, max_length: 32}}",
                "tasks: {category: {}, sentiment: {}}",
                "data: {" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in tiny_data.items()) + "}",
                "training: {strategy: heads, max_steps: 4, batch_size: 8, min_steps: null, precision: fp32}",
                f"output_dir: {json.dumps(str(root / 'run'))}",
            ]
        )
        + "\n"
    )
    assert main(["train", str(config), "-q"]) == 0
    return root / "run"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests on the real model first: under parallel workers (``-n``) the longest start early, so no
    worker is left with one at the end while the others wait."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
