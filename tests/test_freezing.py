"""Freezing plans are pure functions of parameter names: tested without training."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtst.errors import ConfigError
from mtst.modeling.model import MultiTaskModel
from mtst.training.freezing import (
    apply_trainable,
    check_plan,
    count_layers,
    gradual_num_stages,
    parameter_group,
    parse_freeze,
    strategy_groups,
    trainable_groups,
)

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
    ("strategy", "expected"),
    [
        ("frozen", set()),
        ("heads", HEADS),
        ("top_k", HEADS | layers(2, 3) | {"backbone_other"}),
        ("gradual", HEADS),
        ("full", HEADS | layers(0, 1, 2, 3) | {"embeddings", "backbone_other"}),
    ],
)
def test_strategy_groups(strategy: str, expected: set[str]) -> None:
    assert strategy_groups(strategy, L, TASKS, top_k=2) == expected


def test_freeze_list_combines_with_presets() -> None:
    groups = trainable_groups("full", L, TASKS, freeze=["embeddings", "layers.0-1", "heads.category"])
    assert groups == {"heads.sentiment", "backbone_other"} | layers(2, 3)
    assert trainable_groups("full", L, TASKS, freeze=["backbone"]) == HEADS
    assert trainable_groups("top_k", L, TASKS, top_k=3, freeze=["layers.1"]) == HEADS | layers(2, 3) | {
        "backbone_other"
    }


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


def test_gradual_stages_unfreeze_top_layer_first() -> None:
    stage = lambda s, **kw: trainable_groups("gradual", L, TASKS, stage=s, **kw)  # noqa: E731
    assert stage(0) == HEADS
    assert stage(1) == HEADS | layers(3) | {"backbone_other"}
    assert stage(2) == HEADS | layers(2, 3) | {"backbone_other"}
    assert stage(4) == stage(9) == HEADS | layers(0, 1, 2, 3) | {"backbone_other"}
    assert stage(1, per_stage=2) == HEADS | layers(2, 3) | {"backbone_other"}
    assert "embeddings" in stage(5, include_embeddings=True)
    assert gradual_num_stages(L) == 5
    assert gradual_num_stages(L, per_stage=2, include_embeddings=True) == 4


def test_nothing_to_train_is_an_error_not_a_no_op() -> None:
    with pytest.raises(ConfigError, match="nothing to train"):
        check_plan("heads", trainable_groups("heads", L, TASKS, freeze=["heads"]), TASKS)
    assert check_plan("frozen", set(), TASKS) == []


def test_frozen_head_on_moving_backbone_warns() -> None:
    warnings = check_plan("full", trainable_groups("full", L, TASKS, freeze=["heads.category"]), TASKS)
    assert len(warnings) == 1 and "category" in warnings[0] and "drift" in warnings[0]
    assert check_plan("heads", trainable_groups("heads", L, TASKS, freeze=["heads.category"]), TASKS) == []


@pytest.mark.parametrize("strategy", ["heads", "top_k", "full"])
def test_apply_trainable_on_a_real_model(tiny_backbone_dir: Path, strategy: str) -> None:
    model = MultiTaskModel.from_backbone(make_tasks(), backbone=str(tiny_backbone_dir))
    groups = trainable_groups(strategy, 2, TASKS, top_k=1)
    apply_trainable(model, groups)
    for name, param in model.named_parameters():
        assert param.requires_grad == (parameter_group(name) in groups), name
    present = {parameter_group(n) for n, _ in model.named_parameters()}
    trainable = {parameter_group(n) for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == groups & present
    assert trainable  # every strategy here trains something


def test_lora_parameters_form_their_own_group() -> None:
    from mtst.training.freezing import strategy_groups

    assert parameter_group("encoder.backbone.encoder.layer.3.attention.self.query.lora_A.default.weight") == "lora"
    assert parameter_group("encoder.backbone.encoder.layer.3.attention.self.query.base_layer.weight") == "layers.3"
    assert strategy_groups("lora", 6, ["a"], top_k=0) == {"heads.a", "lora"}
    assert strategy_groups("lora", 6, ["a"], top_k=2) == {"heads.a", "lora", "layers.4", "layers.5", "backbone_other"}
