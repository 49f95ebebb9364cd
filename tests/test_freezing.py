"""Freezing plans are pure functions of parameter names: tested without training."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtst.errors import ConfigError
from mtst.modeling.groups import count_layers, parameter_group
from mtst.modeling.model import MultiTaskModel
from mtst.training.planning.freezing import apply_trainable, parse_freeze

from .conftest import make_tasks

TASKS = ["category", "sentiment"]
L = 4
NAMES = [
    "encoder.backbone.embeddings.word_embeddings.weight",
    "encoder.backbone.embeddings.LayerNorm.weight",
    *[f"encoder.backbone.encoder.layer.{i}.attention.self.query.weight" for i in range(L)],
    *[f"encoder.backbone.encoder.layer.{i}.output.LayerNorm.bias" for i in range(L)],
    "heads.category.1.weight",
    "heads.sentiment.1.bias",
]
HEADS = {"heads.category", "heads.sentiment"}


def layers(*idx: int) -> set[str]:
    return {f"layers.{i}" for i in idx}


def test_parameter_groups() -> None:
    assert parameter_group(NAMES[0]) == "embeddings"
    assert parameter_group("encoder.backbone.encoder.layer.3.attention.self.query.weight") == "layers.3"
    assert parameter_group("heads.sentiment.1.bias") == "heads.sentiment"
    assert parameter_group("encoder.backbone.transformer.layer.1.ffn.lin1.weight") == "layers.1"  # DistilBERT
    assert parameter_group("encoder.backbone.final_layer_norm.weight") == "backbone_other"
    assert count_layers(NAMES) == L


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("layers.2-9", "out of range"),
        ("heads.nope", "unknown head"),
        ("decoder", "allowed forms"),
        ("layers.3-1", "out of range"),
    ],
)
def test_bad_freeze_names(item: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_freeze([item], L, TASKS)


@pytest.mark.parametrize("strategy", ["heads", "top_k", "full"])
def test_apply_trainable_on_a_real_model(tiny_backbone_dir: Path, strategy: str) -> None:
    from tests.test_plan import plan_for

    model = MultiTaskModel.from_backbone(make_tasks(), backbone=str(tiny_backbone_dir))
    groups = plan_for(strategy, num_layers=2, top_k=1).groups_at(0)
    apply_trainable(model, groups)
    for name, param in model.named_parameters():
        assert param.requires_grad == (parameter_group(name) in groups), name
    present = {parameter_group(n) for n, _ in model.named_parameters()}
    trainable = {parameter_group(n) for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == groups & present
    assert trainable  # every strategy here trains something


def test_lora_parameters_form_their_own_group() -> None:
    assert parameter_group("encoder.backbone.encoder.layer.3.attention.self.query.lora_A.default.weight") == "lora"
    assert parameter_group("encoder.backbone.encoder.layer.3.attention.self.query.base_layer.weight") == "layers.3"
