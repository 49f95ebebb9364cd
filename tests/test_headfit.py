"""Heads warm-started by logistic regression (``training.head_init: logistic``) before gradient steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mtst.config import validate_config
from mtst.modeling.logistic import fit_logistic
from mtst.training.planning.plan import DataStats, build_plan
from mtst.training.stages.headfit import WARM_START_C
from mtst.training.trainer import setup_run


def _plan(**training: Any):
    config = validate_config({"tasks": {"a": {}, "b": {}}, "data": {"train": "x.csv"}, "training": training})
    return build_plan(config, 4, DataStats(labelled_rows=48, class_counts={"a": (24, 24), "b": (16, 16, 16)}))


def test_the_plan_warm_starts_the_heads_that_train() -> None:
    assert _plan(strategy="full", head_init="random").head_init == ()
    # auto, where the backbone trains from the start: a lone head of few classes starts random ...
    assert _plan(strategy="full", freeze=["heads.b"]).head_init == ()
    one = validate_config({"tasks": {"a": {}}, "data": {"train": "x.csv"}, "training": {"strategy": "full"}})
    assert build_plan(one, 4, DataStats(labelled_rows=48, class_counts={"a": (24, 24)})).head_init == ()
    # ... heads that share the encoder with another classification task start fitted
    assert _plan(strategy="full").head_init == ("a", "b")
    assert _plan(strategy="heads").head_init == ("a", "b")  # auto: fitted where it starts frozen
    assert _plan(strategy="gradual").head_init == ("a", "b")
    assert _plan(strategy="gradual", head_init="random").head_init == ()
    many = DataStats(labelled_rows=400, class_counts={"a": (20,) * 20, "b": (100,) * 4})
    config = validate_config(
        {"tasks": {"a": {}, "b": {}}, "data": {"train": "x.csv"}, "training": {"strategy": "full"}}
    )
    # auto: a head of many classes starts fitted, and b beside it as it shares the encoder; alone, only "a"
    assert build_plan(config, 4, many).head_init == ("a", "b")
    assert build_plan(config, 4, DataStats(400, {"a": (20,) * 20})).head_init == ("a",)
    assert _plan(strategy="full", head_init="logistic").head_init == ("a", "b")
    assert _plan(strategy="full", head_init="logistic", freeze=["heads.b"]).head_init == ("a",)
    assert _plan(strategy="gradual", head_init="logistic").head_init == ("a", "b")
    assert _plan(strategy="frozen", head_init="logistic").head_init == ()  # its heads are the closed-form fit


def test_an_unknown_head_init_names_the_field_and_the_choices() -> None:
    from mtst.errors import ConfigError

    with pytest.raises(ConfigError, match=r"head_init.*'auto'.*'logistic'.*'random'"):
        validate_config({"tasks": {"a": {}}, "data": {"train": "x.csv"}, "training": {"head_init": "zeros"}})


def _config(backbone: Path, data: dict[str, str], out: Path, **training: Any) -> Any:
    return validate_config(
        {
            "model": {"backbone": str(backbone), "max_length": 32},
            "tasks": {"category": {}, "sentiment": {"hidden_size": 8}},
            "data": {"train": data["train"], "test": data["test"]},
            "training": {"strategy": "full", "max_steps": 2, "head_init": "logistic", **training},
            "output_dir": str(out),
        }
    )


def test_linear_heads_start_at_the_logistic_optimum(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    loop = setup_run(_config(tiny_backbone_dir, tiny_data, tmp_path / "run"), show_progress=False)
    model = loop.model
    mlp_before = {k: v.clone() for k, v in model.heads["sentiment"].state_dict().items()}
    train = loop.inputs.data.splits["train"]
    loop.warm_start_heads()
    assert model.tasks["category"].normalize_input and not model.tasks["sentiment"].normalize_input
    emb = model.encoder.encode(train.texts, normalize=False, convert_to="torch")
    expected = fit_logistic(torch.nn.functional.normalize(emb, dim=-1), train.labels["category"], 2, seed=42)
    linear = model.heads["category"][-1]
    assert torch.allclose(linear.weight, expected.weight.float(), atol=1e-4)
    assert torch.allclose(linear.bias, expected.bias.float(), atol=1e-4)
    for k, v in model.heads["sentiment"].state_dict().items():  # not a linear head: left as it was
        assert torch.equal(v, mlp_before[k]), k
    # the tiny data's categories are word-separable: the fitted head already gets the training rows right
    with torch.no_grad():
        logits = model.forward_heads({"sentence_embedding": emb})["logits"]["category"]
    assert float(np.mean(logits.argmax(-1).numpy() == train.labels["category"])) == 1.0


def test_the_warm_start_runs_before_the_steps_and_not_again_on_resume(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mtst.training import loop as loop_module

    calls: list[tuple[str, ...]] = []
    real = loop_module.fit_heads

    def spy(*args: Any, **kwargs: Any) -> None:
        calls.append(args[6] if len(args) > 6 else kwargs.get("only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(loop_module, "fit_heads", spy)
    config = _config(tiny_backbone_dir, tiny_data, tmp_path / "run", checkpoint_every=1)
    setup_run(config, show_progress=False).fit()
    assert calls == [("category", "sentiment")]  # the MLP head is skipped inside, with a log line
    more = config.model_copy(update={"training": config.training.model_copy(update={"max_steps": 3})})
    setup_run(more, resume=True, show_progress=False).fit()
    assert len(calls) == 1  # resumed: the checkpoint holds the fitted (and trained) heads


def test_the_warm_start_cross_validates_its_strength_only_for_a_lone_task(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mtst.training import loop as loop_module

    strengths: list[float | None] = []
    real = loop_module.fit_heads

    def spy(*args: Any, **kwargs: Any) -> None:
        strengths.append(args[7])
        return real(*args, **kwargs)

    monkeypatch.setattr(loop_module, "fit_heads", spy)
    setup_run(_config(tiny_backbone_dir, tiny_data, tmp_path / "two"), show_progress=False).warm_start_heads()
    lone = _config(tiny_backbone_dir, tiny_data, tmp_path / "one")
    lone = lone.model_copy(update={"tasks": {"category": lone.tasks["category"]}})
    setup_run(lone, show_progress=False).warm_start_heads()
    assert strengths == [WARM_START_C, None]  # beside another task: fixed; alone: cross-validated
