"""The stand-ins (``mtst.standins``): one switch turns them all off with the same results, and a canary per
stand-in fails once the cost it avoids is gone from the dependency (then delete the stand-in)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mtst import standins


def _in_fresh_process(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def off() -> Iterator[None]:
    """The stand-ins off for the test; the environment decides again after it, however it ends (a run's
    ``training.standins`` sets the same process-wide switch)."""
    standins.set_enabled(False)
    try:
        yield
    finally:
        standins.set_enabled(None)


# --------------------------------------------------------------------------- canaries
def test_canary_a_torch_optimizer_still_imports_dynamo() -> None:
    """Why ``standins.adamw`` and ``standins.lbfgs`` exist: the first ``torch.optim.Optimizer`` a process
    builds imports ``torch._dynamo`` (1.7 s on two cores). When this fails, both can go."""
    for optimizer in ("AdamW([p], lr=1e-3)", "LBFGS([p])"):
        code = f"import sys, torch\np = torch.zeros(1, requires_grad=True)\ntorch.optim.{optimizer}\n"
        assert _in_fresh_process(code + "print('torch._dynamo' in sys.modules)") == "True", (
            f"torch.optim.{optimizer} no longer imports torch._dynamo: mtst.standins.adamw and .lbfgs can go"
        )


def test_canary_transformers_bert_still_builds_its_heavy_stack() -> None:
    """Why ``standins.bert`` exists: building transformers' ``BertModel`` imports ``torch._dynamo`` and
    ``torch.distributed.tensor`` (3 s of a short run's start-up on two cores). When this fails, it can go."""
    code = (
        "import sys\nfrom transformers import BertConfig, BertModel\n"
        "BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37))\n"
        "print(any(m in sys.modules for m in ('torch._dynamo', 'torch.distributed.tensor')))"
    )
    assert _in_fresh_process(code) == "True", "transformers' BertModel is light now: mtst.standins.bert can go"


def test_canary_a_transformers_tokenizer_still_imports_transformers() -> None:
    """Why ``standins.tokenizer`` exists: ``AutoTokenizer`` loads dozens of transformers modules (about 1-2 s
    on two cores) to run what ``tokenizers`` runs alone. When this fails, it can go."""
    code = (
        "import sys\nfrom transformers import AutoTokenizer\nfrom mtst.modeling.backbone import bundled_model_path\n"
        "AutoTokenizer.from_pretrained(bundled_model_path(), local_files_only=True)\n"
        "print(len([m for m in sys.modules if m.startswith('transformers')]))"
    )
    assert int(_in_fresh_process(code)) > 20, "AutoTokenizer is light now: mtst.standins.tokenizer can go"


# --------------------------------------------------------------------------- the switch
def test_the_switch_reads_the_environment_and_a_run_s_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert standins.enabled() and standins.enabled(bert=True)
    monkeypatch.setenv(standins.LEGACY_BERT_SWITCH, "0")  # the older switch: the BERT stand-ins only
    assert standins.enabled() and not standins.enabled(bert=True)
    monkeypatch.setenv(standins.ENV_SWITCH, "off")
    assert not standins.enabled()
    standins.set_enabled(True)  # a run's training.standins wins over the environment
    try:
        assert standins.enabled(bert=True)
    finally:
        standins.set_enabled(None)
    assert not standins.enabled()


def test_off_every_part_goes_through_the_dependency(off: None, tiny_backbone_dir: Path) -> None:
    from transformers import PreTrainedTokenizerBase

    from mtst.modeling.encoder import SentenceEncoder
    from mtst.standins.adamw import adamw
    from mtst.standins.bert import NativeBert
    from mtst.standins.lbfgs import minimise

    encoder = SentenceEncoder.from_pretrained(str(tiny_backbone_dir))
    assert not isinstance(encoder.backbone, NativeBert) and isinstance(encoder.tokenizer, PreTrainedTokenizerBase)
    assert isinstance(adamw([torch.zeros(2, requires_grad=True)], lr=1e-3), torch.optim.AdamW)
    w = torch.zeros(3, requires_grad=True)
    minimise([w], lambda: ((w - torch.tensor([1.0, 2.0, 3.0])) ** 2).sum(), max_iter=50)
    assert torch.allclose(w.detach(), torch.tensor([1.0, 2.0, 3.0]), atol=1e-5)


def test_a_run_gives_the_same_results_with_the_stand_ins_on_and_off(
    off: None, tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    """Optimizer steps (AdamW), a logistic warm start (L-BFGS), the BERT forward and the tokenizer: all four."""
    from mtst.config import validate_config
    from mtst.modeling.model import MultiTaskModel
    from mtst.training.trainer import train

    results = {}
    for on in (True, False):
        config = validate_config(
            {
                "model": {"backbone": str(tiny_backbone_dir), "max_length": 32},
                "tasks": {"category": {}, "sentiment": {}},
                "data": tiny_data,
                "training": {
                    "strategy": "full",
                    "max_steps": 3,
                    "min_steps": None,
                    "batch_size": 8,
                    "head_init": "logistic",
                    "precision": "fp32",
                    "standins": on,
                },
                "output_dir": str(tmp_path / str(on)),
            }
        )
        result = train(config, show_progress=False)
        results[on] = (result.test, MultiTaskModel.load(tmp_path / str(on)).state_dict())
    assert json.dumps(results[True][0], sort_keys=True) == json.dumps(results[False][0], sort_keys=True)
    for name, tensor in results[True][1].items():
        assert torch.allclose(tensor, results[False][1][name], atol=1e-6), name
