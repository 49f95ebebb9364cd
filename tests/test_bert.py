"""The native BERT encoder: the module transformers builds, computed the same way, loaded without it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from mtst.modeling.backbone import load_backbone, resolve_backbone
from mtst.modeling.packing import block_mask, packed_inputs
from mtst.standins import ENV_SWITCH
from mtst.standins.bert import BertSettings, NativeBert, checkpoint_name, load_native, sdpa_mask
from mtst.training.runtime.cache import run_layers
from tests.conftest import SENTENCES, save_tiny_bert


def _transformers_bert(directory: Path) -> torch.nn.Module:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(directory, attn_implementation="sdpa")
    model.pooler = None
    return model


def _batch(directory: Path, texts: list[str] = SENTENCES) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    out = AutoTokenizer.from_pretrained(directory)(texts, padding=True, return_tensors="pt")
    return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}


@pytest.fixture(scope="module")
def pair(tiny_backbone_dir: Path) -> tuple[NativeBert, torch.nn.Module]:
    native = load_native(tiny_backbone_dir)
    assert isinstance(native, NativeBert)
    return native, _transformers_bert(tiny_backbone_dir)


def test_same_parameters_under_the_same_names(pair: tuple[NativeBert, torch.nn.Module]) -> None:
    native, reference = pair
    ours, theirs = native.state_dict(), reference.state_dict()
    assert ours.keys() == {k for k in theirs if k in ours} and len(ours) == len(list(reference.parameters()))
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize("texts", [SENTENCES, ["same length a", "same length b"]], ids=["padded", "no-padding"])
def test_eval_outputs_match_transformers_bit_for_bit(
    pair: tuple[NativeBert, torch.nn.Module], tiny_backbone_dir: Path, texts: list[str]
) -> None:
    native, reference = pair
    batch = _batch(tiny_backbone_dir, texts)
    with torch.inference_mode():
        ours = native.eval()(**batch).last_hidden_state
        theirs = reference.eval()(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    assert torch.equal(ours[real], theirs[real])


def test_training_mode_forward_and_gradients_match_transformers(tiny_backbone_dir: Path) -> None:
    """Dropout draws the same masks in the same order, so a training step is the same step."""
    native, reference = load_native(tiny_backbone_dir), _transformers_bert(tiny_backbone_dir)
    batch = _batch(tiny_backbone_dir)
    outputs = []
    for model in (native, reference):
        model.train()
        torch.manual_seed(7)
        out = model(**batch).last_hidden_state
        (out * batch["attention_mask"][..., None]).pow(2).sum().backward()
        outputs.append(out)
    real = batch["attention_mask"].bool()
    assert torch.equal(outputs[0][real], outputs[1][real])
    theirs = dict(reference.named_parameters())
    for name, param in native.named_parameters():
        assert param.grad is not None and torch.equal(param.grad, theirs[name].grad), name


def test_packed_rows_and_layer_by_layer_give_the_padded_pass(
    pair: tuple[NativeBert, torch.nn.Module], tiny_backbone_dir: Path
) -> None:
    """The two other ways mtst calls the encoder: a block-diagonal mask with restarting positions
    (packing), and its layers one by one under an additive mask (the prefix cache)."""
    native, _ = pair
    batch = _batch(tiny_backbone_dir)
    real = batch["attention_mask"].bool()
    with torch.inference_mode():
        padded = native.eval()(**batch).last_hidden_state
        packed = packed_inputs(batch["input_ids"], batch["attention_mask"])
        out = native(
            input_ids=packed["input_ids"],
            attention_mask=block_mask(packed["segment"], "4d"),
            position_ids=packed["position_ids"],
        ).last_hidden_state
        flat = out.reshape(-1, out.shape[-1])[packed["segment"].reshape(-1) >= 0]
        by_layer = run_layers(native, native.embeddings(input_ids=batch["input_ids"]), batch["attention_mask"], 0, 2)
    expected = padded.reshape(-1, padded.shape[-1])[packed["source"].reshape(-1)[packed["segment"].reshape(-1) >= 0]]
    assert torch.allclose(flat, expected, atol=1e-5)
    assert torch.allclose(by_layer[real], padded[real], atol=1e-5)


def test_sdpa_mask_forms() -> None:
    assert sdpa_mask(None) is None
    assert sdpa_mask(torch.ones(2, 5, dtype=torch.long)) is None  # no padding: SDPA's unmasked kernels
    padded = sdpa_mask(torch.tensor([[1, 1, 0]]))
    assert padded is not None and padded.dtype == torch.bool and padded.shape == (1, 1, 1, 3)
    three = sdpa_mask(torch.ones(2, 4, 4, dtype=torch.long))
    assert three is not None and three.dtype == torch.bool and three.shape == (2, 1, 4, 4)
    additive = torch.zeros(2, 1, 1, 4)
    assert sdpa_mask(additive) is additive


BASE: dict[str, Any] = {
    "model_type": "bert",
    "vocab_size": 100,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}


@pytest.mark.parametrize(
    ("change", "native"),
    [
        ({}, True),
        ({"hidden_act": "gelu"}, True),
        ({"model_type": "roberta"}, False),
        ({"position_embedding_type": "relative_key"}, False),
        ({"is_decoder": True}, False),
        ({"add_cross_attention": True}, False),
        ({"hidden_act": "gelu_new"}, False),
        ({"chunk_size_feed_forward": 16}, False),
        ({"num_attention_heads": 3}, False),
        ({"hidden_size": None}, False),
        ({"hidden_size": "wide"}, False),
    ],
)
def test_which_configurations_load_natively(change: dict[str, Any], native: bool) -> None:
    settings = BertSettings.from_dict(BASE | change)
    assert (settings is not None) is native
    if settings is not None:
        assert settings.to_dict()["hidden_size"] == 32


@pytest.mark.parametrize(
    ("name", "mapped"),
    [
        ("bert.encoder.layer.0.attention.self.query.weight", "encoder.layer.0.attention.self.query.weight"),
        ("embeddings.LayerNorm.gamma", "embeddings.LayerNorm.weight"),
        ("bert.encoder.layer.1.output.LayerNorm.beta", "encoder.layer.1.output.LayerNorm.bias"),
        ("bert.pooler.dense.weight", None),
        ("cls.predictions.bias", None),
        ("embeddings.position_ids", None),
    ],
)
def test_checkpoint_names(name: str, mapped: str | None) -> None:
    assert checkpoint_name(name) == mapped


def _rewrite_weights(source: Path, target: Path, edit: Any) -> Path:
    target.mkdir()
    for f in source.iterdir():
        if f.name != "model.safetensors":
            (target / f.name).write_bytes(f.read_bytes())
    save_file(edit(load_file(str(source / "model.safetensors"))), str(target / "model.safetensors"))
    return target


def test_a_task_model_checkpoint_loads_natively(tiny_backbone_dir: Path, tmp_path: Path) -> None:
    """``bert.``-prefixed weights with a pooler and a pretraining head, as BertForPreTraining saves them."""
    moved = _rewrite_weights(
        tiny_backbone_dir,
        tmp_path / "pretraining",
        lambda w: {f"bert.{k}": v for k, v in w.items()} | {"cls.predictions.bias": torch.zeros(3)},
    )
    model = load_native(moved)
    assert model is not None
    reference = load_native(tiny_backbone_dir)
    assert reference is not None
    theirs = reference.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())


def test_what_does_not_map_loads_through_transformers(
    tiny_backbone_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a weight missing: transformers decides (it initialises and warns)
    missing = _rewrite_weights(
        tiny_backbone_dir, tmp_path / "missing", lambda w: {k: v for k, v in w.items() if "layer.1.output." not in k}
    )
    assert load_native(missing) is None
    # a configuration this module does not compute
    relative = tmp_path / "relative"
    save_tiny_bert(relative, position_embedding_type="relative_key")
    assert load_native(relative) is None
    backbone, _ = load_backbone(resolve_backbone(str(relative)))
    assert type(backbone).__name__ == "BertModel"
    # switched off
    monkeypatch.setenv(ENV_SWITCH, "0")
    assert load_native(tiny_backbone_dir) is None
    backbone, _ = load_backbone(resolve_backbone(str(tiny_backbone_dir)))
    assert type(backbone).__name__ == "BertModel"


def test_saved_weights_load_in_transformers(pair: tuple[NativeBert, torch.nn.Module], tmp_path: Path) -> None:
    from transformers import BertModel

    native, _ = pair
    native.save_pretrained(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["model_type"] == "bert" and saved["hidden_size"] == 32
    reloaded = BertModel.from_pretrained(tmp_path / "out", add_pooling_layer=False, attn_implementation="sdpa")
    ours = native.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in reloaded.state_dict().items() if k in ours)
    assert set(ours) <= set(reloaded.state_dict())
    with pytest.raises(ValueError, match="safetensors"):
        native.save_pretrained(tmp_path / "pickled", safe_serialization=False)


def test_a_saved_model_loads_without_transformers_model_code(tiny_model: Any, tmp_path: Path) -> None:
    """The point of the module (and of ``mtst.standins.tokenizer``): loading a BERT backbone or a model trained
    on one does not import transformers at all (its imports cost seconds of every command's start-up)."""
    tiny_model.save(tmp_path / "model")
    code = (
        "import sys\n"
        "from mtst.modeling.model import MultiTaskModel\n"
        "from mtst.modeling.encoder import SentenceEncoder\n"
        f"m = MultiTaskModel.load({str(tmp_path / 'model')!r})\n"
        f"e = SentenceEncoder.from_pretrained({str(tiny_model.encoder.reference)!r})\n"
        "print(type(m.encoder.backbone).__name__, type(e.backbone).__name__)\n"
        "heavy = sorted(n for n in ('transformers', 'torch._dynamo') if n in sys.modules)\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "NativeBert NativeBert" and out[1] == "[]"


def test_a_model_saved_natively_loads_through_transformers_with_the_same_outputs(
    tiny_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mtst.modeling.model import MultiTaskModel

    tiny_model.save(tmp_path / "model")
    native = MultiTaskModel.load(tmp_path / "model")
    monkeypatch.setenv(ENV_SWITCH, "0")
    through_transformers = MultiTaskModel.load(tmp_path / "model")
    assert type(through_transformers.encoder.backbone).__name__ == "BertModel"
    assert isinstance(native.encoder.backbone, NativeBert)
    assert torch.equal(
        torch.as_tensor(native.encode(SENTENCES)), torch.as_tensor(through_transformers.encode(SENTENCES))
    )


def test_loading_a_backbone_draws_nothing_from_the_global_random_generator(tiny_backbone_dir: Path) -> None:
    """A run that loads the backbone mid-way (a resumed run records its starting embedding) repeats itself
    only if loading leaves the generator where it was, as transformers' ``from_pretrained`` does."""
    torch.manual_seed(3)
    before = torch.get_rng_state()
    backbone, _ = load_backbone(resolve_backbone(str(tiny_backbone_dir)))
    assert isinstance(backbone, NativeBert)
    assert torch.equal(torch.get_rng_state(), before)
