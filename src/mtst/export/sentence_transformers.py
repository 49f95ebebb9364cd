"""``sentence-transformers``: the backbone, tokenizer, pooling (and normalise) modules in the layout
``SentenceTransformer(path)`` loads, so it gives the same embeddings; the task heads beside it
(``mtst_heads/``)."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from mtst.export.common import plain_model
from mtst.fileio import atomic_directory
from mtst.modeling.model import MultiTaskModel

HEADS_DIR = "mtst_heads"


def _drops_pooler(backbone: nn.Module) -> bool:
    """True when the backbone's class has a pooler that mtst removed (and can be built without one)."""
    import inspect

    from mtst.standins.bert import NativeBert

    if isinstance(backbone, NativeBert):  # transformers' BertModel without its pooler
        return True
    has_slot = hasattr(backbone, "pooler") and backbone.pooler is None
    return has_slot and "add_pooling_layer" in inspect.signature(type(backbone).__init__).parameters


def save_quietly(backbone: nn.Module, directory: Path) -> None:
    """``save_pretrained`` as safetensors, without transformers' progress bars."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        backbone.save_pretrained(directory, safe_serialization=True)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def export_sentence_transformers(model: MultiTaskModel, output: Path) -> Path:
    """A directory ``SentenceTransformer(output)`` loads, plus the heads in ``mtst_heads/``."""
    model = plain_model(model)
    encoder = model.encoder
    with atomic_directory(output) as tmp:
        save_quietly(encoder.backbone, tmp)
        encoder.tokenizer.save_pretrained(tmp)
        st_config: dict = {"max_seq_length": encoder.max_length, "do_lower_case": False}
        if _drops_pooler(encoder.backbone):
            # mtst strips BERT's unused pooler; without this, loading would report it missing and initialise it
            st_config["model_args"] = {"add_pooling_layer": False}
        (tmp / "sentence_bert_config.json").write_text(json.dumps(st_config, indent=2) + "\n")
        pooling_dir = tmp / "1_Pooling"
        pooling_dir.mkdir()
        (pooling_dir / "config.json").write_text(
            json.dumps(
                {
                    "word_embedding_dimension": encoder.dim,
                    "pooling_mode_cls_token": encoder.pooling == "cls",
                    "pooling_mode_mean_tokens": encoder.pooling == "mean",
                    "pooling_mode_max_tokens": encoder.pooling == "max",
                    "pooling_mode_mean_sqrt_len_tokens": False,
                    "pooling_mode_weightedmean_tokens": False,
                    "pooling_mode_lasttoken": False,
                    "include_prompt": True,
                },
                indent=2,
            )
            + "\n"
        )
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]
        if encoder.normalize:
            (tmp / "2_Normalize").mkdir()
            modules.append(
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
            )
        (tmp / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
        heads = tmp / HEADS_DIR
        heads.mkdir()
        config = model.config_dict()
        (heads / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in model.heads.state_dict().items()}
        save_file(state, str(heads / "heads.safetensors"), metadata={"format": "pt"})
    return output
