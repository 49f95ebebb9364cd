"""LoRA: what trains, what is saved, and merging."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtst.config import validate_config
from mtst.errors import ConfigError, ModelLoadError
from mtst.modeling.model import MultiTaskModel
from mtst.training.trainer import setup_run
from tests.conftest import SENTENCES, save_tiny_bert


def lora_config(backbone: Path, tiny_data: dict[str, str], run_dir: Path, **lora: object) -> dict:
    return {
        "model": {"backbone": str(backbone), "max_length": 32},
        "tasks": {"category": {}, "sentiment": {"hidden_size": 8}},
        # No validation split: the saved model is the last one, comparable with the live model.
        "data": {"train": tiny_data["train"], "test": tiny_data["test"]},
        "training": {
            "strategy": "lora",
            "batch_size": 8,
            "max_steps": 4,
            "lora": {"r": 4, "alpha": 8, "lr": 1e-2, **lora},
        },
        "output_dir": str(run_dir),
    }


def test_only_adapters_and_heads_change(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from rich.console import Console

    cfg = validate_config(lora_config(tiny_backbone_dir, tiny_data, tmp_path))
    loop = setup_run(cfg, show_progress=False, console=Console(stderr=True, width=200))
    model = loop.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loop.fit()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "training moved something"
    assert all("lora_" in n or n.startswith("heads.") for n in changed), sorted(changed)[:5]
    assert any("lora_A" in n for n in changed) and any("lora_B" in n for n in changed)
    # Exact count: r x (in + out) for query and value in each of 2 layers (hidden 32), plus both heads.
    heads = sum(p.numel() for n, p in model.named_parameters() if n.startswith("heads."))
    expected = 2 * 2 * 4 * (32 + 32) + heads
    assert loop.inputs.trainable_parameters == expected
    printed = re.search(r"trainable parameters: ([\d,]+) of", capsys.readouterr().err)
    assert printed and int(printed.group(1).replace(",", "")) == expected


def test_saved_run_holds_adapters_and_heads_only(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    cfg = validate_config(lora_config(tiny_backbone_dir, tiny_data, tmp_path))
    loop = setup_run(cfg, show_progress=False)
    loop.fit()
    saved = load_file(str(tmp_path / "model" / "model.safetensors"))
    assert saved and all("lora_" in k or k.startswith("heads.") for k in saved)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["lora"]["r"] == 4
    loaded = MultiTaskModel.load(tmp_path)
    live = loop.model.eval()
    a = live.predict_proba(SENTENCES)["category"]
    b = loaded.predict_proba(SENTENCES)["category"]
    assert abs(a - b).max() < 1e-6


def test_merged_model_gives_the_same_outputs(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    cfg = validate_config(lora_config(tiny_backbone_dir, tiny_data, tmp_path / "run", save="merged"))
    loop = setup_run(cfg, show_progress=False)
    loop.fit()
    live = copy.deepcopy(loop.model).eval()
    with torch.no_grad():  # make the adapters matter for the comparison
        for n, p in live.named_parameters():
            if "lora_B" in n:
                p.add_(0.05 * torch.randn_like(p))
    reference = live.encode(SENTENCES, normalize=False, convert_to="torch")
    merged = copy.deepcopy(live)
    assert merged.merge_lora() == 4
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert torch.allclose(merged.encode(SENTENCES, normalize=False, convert_to="torch"), reference, atol=1e-5)
    # lora.save=merged writes a plain model directory that loads without adapters.
    plain = MultiTaskModel.load(tmp_path / "run")
    assert plain.lora is None
    assert not any("lora_" in k for k in load_file(str(tmp_path / "run" / "model" / "model.safetensors")))


def test_full_top_layers_above_adapters(tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path) -> None:
    cfg = validate_config(lora_config(tiny_backbone_dir, tiny_data, tmp_path, full_top_k=1))
    loop = setup_run(cfg, show_progress=False)
    names = [n for n, _ in loop.model.named_parameters()]
    assert any("layer.0." in n and "lora_" in n for n in names)
    assert not any("layer.1." in n and "lora_" in n for n in names)
    loop.fit()
    saved = load_file(str(tmp_path / "model" / "model.safetensors"))
    assert any("layer.1." in k and "lora_" not in k for k in saved), "the fully trained top layer is saved"
    loaded = MultiTaskModel.load(tmp_path)
    a = loop.model.eval().predict_proba(SENTENCES)["sentiment"]
    assert abs(loaded.predict_proba(SENTENCES)["sentiment"] - a).max() < 1e-6


def test_adapters_refuse_another_backbone(tiny_data: dict[str, str], tmp_path: Path) -> None:
    backbone = save_tiny_bert(tmp_path / "bert", seed=3)
    cfg = validate_config(lora_config(backbone, tiny_data, tmp_path / "run", save="adapters"))
    loop = setup_run(cfg, show_progress=False)
    loop.fit()
    save_tiny_bert(backbone, seed=4)  # the backbone directory now holds other weights
    with pytest.raises(ModelLoadError, match="other weights"):
        MultiTaskModel.load(tmp_path / "run")


def test_unknown_target_module_is_named(tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path) -> None:
    cfg = validate_config(lora_config(tiny_backbone_dir, tiny_data, tmp_path, target_modules=["q_proj"]))
    with pytest.raises(ConfigError, match=r"q_proj.*query"):
        setup_run(cfg, show_progress=False)
