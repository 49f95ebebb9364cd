"""Inference precision: bf16 inference stays close to fp32, never touches training passes, and is chosen
by name with clear errors (CLI included)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mtst.cli import main
from mtst.errors import ModelLoadError
from mtst.modeling.encoder import SentenceEncoder

from .conftest import SENTENCES


def test_bf16_inference_is_close_to_fp32_but_not_the_same(tiny_encoder: SentenceEncoder) -> None:
    fp32 = tiny_encoder.encode(SENTENCES, convert_to="torch")
    assert tiny_encoder.set_inference_precision("bf16") == "bf16"
    bf16 = tiny_encoder.encode(SENTENCES, convert_to="torch")
    assert bf16.dtype == torch.float32
    assert not torch.equal(fp32, bf16)  # the autocast did run
    assert torch.nn.functional.cosine_similarity(fp32, bf16).min() > 0.99


def test_bf16_inference_leaves_training_passes_in_fp32(tiny_encoder: SentenceEncoder) -> None:
    batch = tiny_encoder.tokenize(SENTENCES[:3])
    tiny_encoder.eval()
    with torch.enable_grad():
        fp32 = tiny_encoder({k: v.clone() for k, v in batch.items()})["sentence_embedding"]
        tiny_encoder.set_inference_precision("bf16")
        kept = tiny_encoder({k: v.clone() for k, v in batch.items()})["sentence_embedding"]
    assert torch.equal(fp32, kept)


def test_precision_names(tiny_encoder: SentenceEncoder) -> None:
    assert tiny_encoder.inference_precision == "fp32"
    assert tiny_encoder.set_inference_precision("auto") == "fp32"  # the suite's CPU has no native bf16
    with pytest.raises(ModelLoadError, match="allowed: fp32, bf16, auto"):
        tiny_encoder.set_inference_precision("int4")


def test_cli_encode_in_bf16_and_onnx_refuses_it(
    capsys: pytest.CaptureFixture[str], tiny_backbone_dir: Path, tmp_path: Path
) -> None:
    args = ["encode", "hello there", "good bye", "--model", str(tiny_backbone_dir)]
    assert main(args) == 0
    fp32 = [json.loads(line)["embedding"] for line in capsys.readouterr().out.splitlines()]
    assert main([*args, "--precision", "bf16"]) == 0
    bf16 = [json.loads(line)["embedding"] for line in capsys.readouterr().out.splitlines()]
    assert len(bf16) == 2 and bf16 != fp32
    assert main([*args, "--precision", "int4"]) == 2
    from mtst.constants import ONNX_META

    (tmp_path / ONNX_META).write_text("{}")
    code = main(["predict", str(tmp_path), "a text", "--backend", "onnx", "--precision", "bf16"])
    assert code == 2
    assert "--precision bf16: an export runs at the precision it was written with" in capsys.readouterr().err


def test_a_training_step_under_bf16_autocast_stays_in_bf16(tiny_encoder: SentenceEncoder) -> None:
    """The inference switch must not turn off the autocast a bf16 training step runs the encoder under."""
    dtypes: list[torch.dtype] = []
    layer = next(m for m in tiny_encoder.backbone.modules() if isinstance(m, torch.nn.Linear))
    layer.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    batch = tiny_encoder.tokenize(SENTENCES[:3])
    for precision in ("fp32", "bf16"):
        tiny_encoder.set_inference_precision(precision)
        with torch.enable_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            tiny_encoder({k: v.clone() for k, v in batch.items()})
    assert dtypes == [torch.bfloat16, torch.bfloat16]
