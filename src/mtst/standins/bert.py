"""A BERT encoder built without transformers' modelling code, under the same parameter names.

Every transformers model class pulls in transformers' model-building stack on first use
(``torch.distributed.tensor``, ``torch._dynamo``, the detection losses): 3 s of a short run's
start-up on 2 cores, more than loading the weights. BERT-family encoders (all-MiniLM, BERT, MiniLM,
BGE-small, E5-small...) are a few dozen lines of torch, so mtst builds them here: the module tree and
parameter names are those of transformers' ``BertModel`` without its pooler, and the forward pass is
the one transformers runs with SDPA attention (parity-tested in eval and training mode). Checkpoints,
LoRA targets, layer groups, the prefix cache and packed rows see the same module either way, and a
saved model or a sentence-transformers export loads in transformers unchanged.

A configuration this module does not cover (another architecture, relative positions, a decoder,
another activation) and a checkpoint whose weights do not map one to one load through transformers,
as does everything when the stand-ins are off (:mod:`mtst.standins`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtst.fileio import read_json_object, read_safetensors
from mtst.standins import enabled as standins_enabled

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
# checkpoint entries a BertModel without pooler never reads (pretraining heads, the pooler, position buffers)
_UNUSED = ("pooler.", "cls.", "embeddings.position_ids", "embeddings.token_type_ids")


def enabled() -> bool:
    """Whether BERT checkpoints load natively (the stand-ins' switch, :mod:`mtst.standins`)."""
    return standins_enabled(bert=True)


@dataclass(frozen=True)
class BertSettings:
    """The parts of a BERT ``config.json`` the encoder reads; ``raw`` keeps the whole file for saving."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int | None = 0
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BertSettings | None:
        """The settings of a plain BERT encoder, or None where the file asks for something this module
        does not compute (transformers then builds the model)."""
        plain = (
            raw.get("model_type") == "bert"
            and raw.get("hidden_act", "gelu") == "gelu"
            and raw.get("position_embedding_type", "absolute") == "absolute"
            and not raw.get("is_decoder", False)
            and not raw.get("add_cross_attention", False)
            and not raw.get("chunk_size_feed_forward", 0)
        )
        if not plain:
            return None
        try:
            settings = cls(
                vocab_size=int(raw["vocab_size"]),
                hidden_size=int(raw["hidden_size"]),
                num_hidden_layers=int(raw["num_hidden_layers"]),
                num_attention_heads=int(raw["num_attention_heads"]),
                intermediate_size=int(raw["intermediate_size"]),
                max_position_embeddings=int(raw["max_position_embeddings"]),
                type_vocab_size=int(raw.get("type_vocab_size", 2)),
                layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
                hidden_dropout_prob=float(raw.get("hidden_dropout_prob", 0.1)),
                attention_probs_dropout_prob=float(raw.get("attention_probs_dropout_prob", 0.1)),
                pad_token_id=raw.get("pad_token_id", 0),
                raw=dict(raw),
            )
        except (KeyError, TypeError, ValueError):
            return None
        if settings.hidden_size % settings.num_attention_heads:
            return None
        return settings

    def to_dict(self) -> dict[str, Any]:
        """The configuration as transformers writes it (what ``AutoConfig`` reads back)."""
        return dict(self.raw) | {"model_type": "bert"}

    def save_pretrained(self, directory: str | Path) -> None:
        """``config.json`` in ``directory``, as ``PretrainedConfig.save_pretrained`` writes it."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")


@dataclass
class EncoderOutput:
    """What the encoder returns: the last layer's token states (``BaseModelOutput``'s field name)."""

    last_hidden_state: torch.Tensor


def _tracing() -> bool:
    """Under an exporter or compiler a data-dependent branch would be baked into the graph."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()


def sdpa_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """An attention mask in the form SDPA takes: None where every token is real (SDPA's fused kernels
    then run unmasked), else a boolean ``(batch, 1, query or 1, key)`` mask, True where attention is
    allowed. Takes a ``(batch, key)`` 0/1 padding mask, a ``(batch, query, key)`` or
    ``(batch, 1, query, key)`` 0/1 or boolean mask (packed rows), or an additive float mask (kept)."""
    if mask is None:
        return None
    if mask.dim() == 2:
        if not _tracing() and bool(mask.all()):
            return None
        return mask.bool()[:, None, None, :]
    if mask.dim() == 3:
        mask = mask[:, None]
    return mask if mask.dtype == torch.bool or mask.is_floating_point() else mask.bool()


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertSettings) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        length = input_ids.shape[1]
        words = self.word_embeddings(input_ids)
        if token_type_ids is None:  # every token of segment 0, looked up as BertModel does (the same gradient sums)
            token_type_ids = torch.zeros_like(input_ids)
        types = self.token_type_embeddings(token_type_ids)
        if position_ids is None:
            position_ids = torch.arange(length, device=input_ids.device)[None]
        positions = self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(words + types + positions))


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertSettings) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_size**-0.5
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        shape = (*hidden.shape[:-1], -1, self.head_size)
        q = self.query(hidden).view(shape).transpose(1, 2)
        k = self.key(hidden).view(shape).transpose(1, 2)
        v = self.value(hidden).view(shape).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout.p if self.training else 0.0, scale=self.scaling
        )
        return out.transpose(1, 2).reshape(*hidden.shape[:-1], -1).contiguous()


class BertResidualOutput(nn.Module):
    """A projection back to the hidden size, dropout, then LayerNorm over it plus the residual: BERT's
    ``attention.output`` (from the hidden size) and ``output`` (from the intermediate size)."""

    def __init__(self, config: BertSettings, in_features: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertSettings) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertResidualOutput(config, config.hidden_size)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(hidden, mask), hidden)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertSettings) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(hidden))


class BertLayer(nn.Module):
    def __init__(self, config: BertSettings) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertResidualOutput(config, config.intermediate_size)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """One layer; ``attention_mask`` as :func:`sdpa_mask` gives it (or an additive float mask)."""
        attended = self.attention(hidden, attention_mask)
        return self.output(self.intermediate(attended), attended)


class BertEncoder(nn.Module):
    def __init__(self, config: BertSettings) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))


class NativeBert(nn.Module):
    """transformers' ``BertModel`` (no pooler, SDPA attention) under the same names and call."""

    def __init__(self, config: BertSettings, init: bool = True) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        if init:
            self.apply(self._init_weights)

    @classmethod
    def to_load(cls, config: BertSettings) -> NativeBert:
        """A model whose weights are about to be loaded, built without drawing from the global random
        generator (as transformers' ``from_pretrained`` does): loading a model mid-run must not change
        the dropout masks and initialisations that follow, or a resumed run would not repeat itself."""
        with torch.random.fork_rng(devices=[]):
            return cls(config, init=False)  # torch's own initialisation only: every weight is overwritten

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """BERT's initialisation (normal, std 0.02), for a model built from its config before its weights load."""
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> EncoderOutput:
        hidden = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids)
        mask = sdpa_mask(attention_mask)
        for layer in self.encoder.layer:
            hidden = layer(hidden, attention_mask=mask)
        return EncoderOutput(last_hidden_state=hidden)

    def save_pretrained(self, directory: str | Path, safe_serialization: bool = True) -> None:
        """``config.json`` and ``model.safetensors`` as transformers' ``BertModel`` writes them (safetensors only)."""
        from safetensors.torch import save_file

        if not safe_serialization:
            raise ValueError("mtst saves weights as safetensors only")
        out = Path(directory)
        self.config.save_pretrained(out)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt"})


def settings_of(directory: Path) -> BertSettings | None:
    """The native settings of a model directory's ``config.json``, or None (not covered, unreadable, switched off)."""
    if not enabled():
        return None
    raw = read_json_object(directory / CONFIG_FILE)
    return BertSettings.from_dict(raw) if raw is not None else None


def checkpoint_name(name: str) -> str | None:
    """A checkpoint entry's name in :class:`NativeBert`, or None for one it never reads: the ``bert.``
    prefix of task models dropped and old LayerNorm names (``gamma``, ``beta``) renamed, as transformers does."""
    name = name.removeprefix("bert.")
    if name.startswith(_UNUSED):
        return None
    if ".LayerNorm." in name or name.startswith("LayerNorm."):
        name = name.replace(".gamma", ".weight").replace(".beta", ".bias")
    return name


def load_native(directory: str | Path) -> NativeBert | None:
    """The BERT encoder in ``directory`` (config.json and safetensors weights), or None where this module
    does not cover its configuration or its weights do not map one to one (transformers loads it then)."""
    directory = Path(directory)
    config = settings_of(directory)
    if config is None:
        return None
    index = directory / WEIGHTS_INDEX
    if index.exists():
        weight_map = (read_json_object(index) or {}).get("weight_map")
        if not isinstance(weight_map, dict):
            return None
        files = sorted({str(f) for f in weight_map.values()})
    elif (directory / WEIGHTS_FILE).exists():
        files = [WEIGHTS_FILE]
    else:
        return None
    state: dict[str, torch.Tensor] = {}
    for file in files:
        for key, value in read_safetensors(directory / file, "backbone weights")[0].items():
            name = checkpoint_name(key)
            if name is not None:
                state[name] = value
    model = NativeBert.to_load(config)  # not on "meta": initialising an embedding there imports torch._dynamo (2 s)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if set(state) != set(expected) or any(tuple(state[k].shape) != tuple(expected[k]) for k in expected):
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        logger.debug("native BERT: %s does not map (missing %s, unexpected %s)", directory, missing[:3], extra[:3])
        return None
    model.load_state_dict({k: v.float().contiguous() for k, v in state.items()}, strict=True, assign=True)
    return model
