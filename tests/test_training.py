"""Training engine on the tiny BERT: strategies, gradients, gradual stages, resume, NaN, CLI errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from mtst.cli import main
from mtst.config import RunConfig, validate_config
from mtst.modeling.groups import parameter_group
from mtst.training.planning.freezing import parse_freeze
from mtst.training.state import Callback
from mtst.training.trainer import StepEvent, TrainingError, setup_run, train


def make_config(tiny_backbone_dir: Path, tiny_data: dict[str, str], run_dir: Path, **training: Any) -> RunConfig:
    return validate_config(
        {
            "model": {"backbone": str(tiny_backbone_dir), "max_length": 32},
            "tasks": {"category": {}, "sentiment": {"hidden_size": 8}},
            "data": dict(tiny_data),
            "training": {
                "batch_size": 8,
                "epochs": 2,
                "min_steps": None,
                "lr_head": 1e-2,
                "lr_backbone": 1e-3,
                **training,
            },
            "output_dir": str(run_dir),
        }
    )


STRATEGIES = [
    ("heads", {}),
    ("top_k", {"top_k": 1}),
    ("gradual", {}),
    ("full", {}),
    ("full", {"freeze": ["embeddings", "layers.0"]}),
    ("full", {"freeze": ["heads.category"]}),
    ("full", {"precision": "bf16"}),
    ("lora", {}),
    ("lora", {"lora": {"full_top_k": 1, "r": 2}}),
]


@pytest.mark.parametrize(("strategy", "extra"), STRATEGIES)
def test_one_step_grads_and_frozen_params(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path, strategy: str, extra: dict
) -> None:
    """Trainable grads finite and non-zero; frozen parameters bit-identical after a step."""
    cfg = make_config(tiny_backbone_dir, tiny_data, tmp_path, strategy=strategy, max_grad_norm=None, **extra)
    loop = setup_run(cfg, show_progress=False)
    model = loop.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loop.batch_loss(np.arange(8)).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "every strategy here trains something"
    for name, p in model.named_parameters():
        if name in trainable:
            if name.endswith("word_embeddings.weight") or name.endswith("token_type_embeddings.weight"):
                continue  # only the rows of tokens seen get a gradient
            if "lora_A" in name:
                continue  # lora_B starts at zero, so lora_A's first gradient is zero by design
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    loop.optimizer.step()
    for name, p in model.named_parameters():
        if name in trainable:
            continue
        assert torch.equal(p, before[name]), f"frozen {name} changed"
    groups = {parameter_group(n) for n in trainable}
    if "freeze" in extra:
        assert not groups & parse_freeze(extra["freeze"], 2, ["category", "sentiment"])
    if strategy in ("heads", "gradual"):
        assert groups == {"heads.category", "heads.sentiment"}
    if strategy == "lora":
        top = {"layers.1"} if extra else set()  # (the tiny BERT has no backbone_other parameters)
        assert groups == {"heads.category", "heads.sentiment", "lora"} | top


def test_frozen_modules_run_in_eval_mode(tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path) -> None:
    cfg = make_config(tiny_backbone_dir, tiny_data, tmp_path, strategy="top_k", top_k=1)
    model = setup_run(cfg, show_progress=False).model
    layers = model.encoder.backbone.encoder.layer
    assert not layers[0].training and layers[1].training
    assert not model.encoder.backbone.embeddings.training
    assert model.heads["category"].training


def test_gradual_unfreezing_schedule(tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path) -> None:
    seen: list[set[str]] = []
    counts: list[int] = []

    def record(event: StepEvent) -> None:
        seen.append({parameter_group(n) for n, p in event.model.named_parameters() if p.requires_grad})
        counts.append(sum(p.numel() for p in event.model.parameters() if p.requires_grad))

    cfg = make_config(
        tiny_backbone_dir, tiny_data, tmp_path, strategy="gradual", max_steps=6, gradual={"stage_steps": 2}
    )
    result = train(cfg, callbacks=[record], show_progress=False)
    heads = {"heads.category", "heads.sentiment"}
    assert seen[0] == seen[1] == heads
    assert seen[2] == seen[3] == heads | {"layers.1"}
    assert seen[4] == seen[5] == heads | {"layers.0", "layers.1"}
    assert result.steps == 6
    # The reported count is what trains by the last stage, not the heads of the first.
    assert counts[0] < counts[-1] == result.trainable_parameters


def test_training_learns_and_writes_a_run_directory(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    cfg = make_config(tiny_backbone_dir, tiny_data, tmp_path / "run", strategy="full", epochs=6)
    result = train(cfg, show_progress=False)
    run = tmp_path / "run"
    assert {"config.yaml", "metrics.jsonl", "metrics.json", "model", "train.log", "checkpoint"} <= {
        p.name for p in run.iterdir()
    }
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 6 and history[-1]["train_loss"] < history[0]["train_loss"]
    assert result.test["category"]["accuracy"] >= 0.75
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["category/accuracy"] == result.test["category"]["accuracy"]


def test_frozen_strategy_fits_heads_in_closed_form(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    cfg = make_config(tiny_backbone_dir, tiny_data, tmp_path, strategy="frozen")
    result = train(cfg, show_progress=False)
    assert result.steps == 0 and result.trainable_parameters == 0
    assert result.test["category"]["accuracy"] > 0.5


def test_runs_at_different_precisions_share_one_process(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # Accelerate keeps one state per process; a second run at another precision must still start.
    for i, (precision, expected) in enumerate([("fp32", "no"), ("bf16", "bf16"), ("auto", "no")]):
        cfg = make_config(tiny_backbone_dir, tiny_data, tmp_path / str(i), strategy="full", precision=precision)
        loop = setup_run(cfg, show_progress=False)
        assert loop.accelerator.mixed_precision == expected  # auto: fp32 in this suite (conftest)
        # the run's passes without gradients (caches, validation, test) follow its steps' precision
        assert loop.model.encoder.inference_precision == ("bf16" if expected == "bf16" else "fp32")
        if i == 1:
            assert "steps of batch 8 in bf16" in capsys.readouterr().err  # the plan says so
            result = loop.fit()
            assert json.loads((result.run_dir / "metrics.json").read_text())["precision"] == "bf16"
        with loop.accelerator.autocast():
            logits = loop.model(loop.inputs.batcher.inputs(np.arange(4), loop.accelerator.device))["logits"]
        assert logits["category"].dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)


def test_frozen_strategy_leaves_a_frozen_head_as_it_was(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    seen: dict[str, torch.Tensor] = {}

    class Snapshot(Callback):
        def on_train_begin(self, event: StepEvent) -> None:
            seen["before"] = event.model.heads["category"][-1].weight.detach().clone()

        def on_train_end(self, event: StepEvent) -> None:
            seen["after"] = event.model.heads["category"][-1].weight.detach().clone()

    cfg = make_config(tiny_backbone_dir, tiny_data, tmp_path, strategy="frozen", freeze=["heads.category"])
    train(cfg, show_progress=False, callbacks=[Snapshot()])
    assert torch.equal(seen["before"], seen["after"])


def test_nan_loss_stops_the_run_naming_the_step(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    def poison(event: StepEvent) -> None:
        if event.state.global_step == 3:
            with torch.no_grad():
                event.model.heads["category"][-1].weight.fill_(float("nan"))

    cfg = make_config(tiny_backbone_dir, tiny_data, tmp_path / "run", strategy="heads", checkpoint_every=2)
    with pytest.raises(TrainingError, match="at step 4"):
        train(cfg, callbacks=[poison], show_progress=False)
    saved = load_file(str(tmp_path / "run" / "checkpoint" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in saved.values())


RESUME_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from mtst.config import validate_config
    from mtst.training.trainer import train
    import json
    cfg = validate_config(json.loads(sys.argv[1]))
    def kill(event):
        if event.state.global_step == 5:
            os.kill(os.getpid(), signal.SIGKILL)
    train(cfg, callbacks=[kill], show_progress=False)
    """
)


def test_resume_after_sigkill_matches_uninterrupted_run(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    settings = {"strategy": "gradual", "epochs": 3, "checkpoint_every": 2, "gradual": {"stage_steps": 3}}
    settings["precision"] = "fp32"  # the killed run is a child process, where auto may mean bf16
    settings["keep"] = {"embedding": 0.5}  # the resumed run records its start again, from the backbone
    straight = make_config(tiny_backbone_dir, tiny_data, tmp_path / "straight", **settings)
    train(straight, show_progress=False)

    killed = make_config(tiny_backbone_dir, tiny_data, tmp_path / "killed", **settings)
    proc = subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, json.dumps(killed.model_dump(mode="json"))],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    state = json.loads((tmp_path / "killed" / "checkpoint" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert main(["train", "--resume", str(tmp_path / "killed"), "--quiet"]) == 0

    a = load_file(str(tmp_path / "straight" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "checkpoint" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)
    history_a = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    history_b = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["validation"] for x in history_a] == [json.loads(x)["validation"] for x in history_b]


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        ("tasks: {a: {}}\ndata: {train: t.csv}\ntraining: {strategy: partial}\n", "training.strategy"),
        ("tasks: {a: {}}\ndata: {train: t.csv}\ntraining: {epocs: 3}\n", "training.epocs: unknown key"),
        ("tasks: {a: {}}\ndata: {train: missing.csv}\n", "no such file"),
        (
            "tasks: {y: {}}\ndata: {train: t.csv}\ntraining: {strategy: full, freeze: [backbone, heads]}\n",
            "nothing to train",
        ),
        ("tasks: {y: {}}\ndata: {train: t.csv, text_column: body}\n", "no column 'body'"),
        ("tasks: {y: {}}\ndata: {train: t.csv}\ntraining: {metric: f1}\n", "training.metric"),
    ],
)
def test_bad_config_or_data_exits_2(
    capsys: pytest.CaptureFixture[str], tiny_backbone_dir: Path, tmp_path: Path, config_text: str, message: str
) -> None:
    _write(tmp_path / "t.csv", "text,y\nhello there,a\ngood bye,b\n")
    cfg = _write(tmp_path / "c.yaml", config_text + f"model: {{backbone: {tiny_backbone_dir}}}\n")
    code = main(["train", cfg, "--quiet", "-o", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err.replace("\n", " ")


def test_checkpoints_hold_only_what_can_train(tiny_data: dict[str, str], tmp_path: Path) -> None:
    from tests.conftest import save_tiny_bert

    backbone = save_tiny_bert(tmp_path / "bert")
    cfg = make_config(backbone, tiny_data, tmp_path / "run", strategy="heads", max_steps=3)
    train(cfg, show_progress=False)
    saved = load_file(str(tmp_path / "run" / "checkpoint" / "model.safetensors"))
    assert saved and all(k.startswith("heads.") for k in saved)
    assert main(["train", "--resume", str(tmp_path / "run"), "--set", "training.max_steps=5", "-q"]) == 0
    save_tiny_bert(backbone, seed=9)  # the frozen weights a resume would rebuild are now different
    assert main(["train", "--resume", str(tmp_path / "run"), "--set", "training.max_steps=7", "-q"]) == 2


def test_tasks_labelled_on_the_same_rows_double_the_encoder_rate(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    console = Console(record=True, width=200)
    cfg = make_config(tiny_backbone_dir, tiny_data, tmp_path / "run", strategy="full", max_steps=1, lr_head=None)
    setup = setup_run(cfg, console=console, show_progress=False)
    # every fixture row carries both labels: two per row, so x2 for the encoder and the head that follows it
    assert setup.plan.lr_scale == 2.0
    assert set(setup.plan.group_lrs.values()) == {2e-3}
    assert "lr_backbone x2.00 = 0.002 (training.task_lr: per_row)" in console.export_text()
