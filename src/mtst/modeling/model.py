"""The multi-task model: one shared encoder, any number of named heads.

A forward pass threads one features dict through the pipeline:
``input_ids/attention_mask -> token_embeddings -> sentence_embedding ->
logits[task]``. Saved models are a directory holding ``config.json``,
``model.safetensors``, the backbone's own config and the tokenizer, so the
directory is self-contained and never needs a pickle.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from mtst.constants import IGNORE_INDEX
from mtst.errors import ModelLoadError
from mtst.fileio import atomic_directory, atomic_write_text, read_safetensors
from mtst.modeling import tasktypes
from mtst.modeling.encoder import DEFAULT_BACKBONE, SentenceEncoder, eval_mode, pad_batch
from mtst.modeling.groups import parameter_group
from mtst.modeling.heads import HeadSpec, build_head
from mtst.modeling.lora import is_lora_param
from mtst.modeling.predictions import Outputs, check_tasks, needs_words, text_words
from mtst.modeling.predictions import predict as predict_records
from mtst.modeling.saved import (
    BACKBONE_CONFIG_DIR,
    CONFIG_NAME,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    attach_saved_lora,
    base_fingerprint,
    build_backbone,
    check_weights,
    load_backbone_weights,
    read_saved,
    resolve_model_dir,
)
from mtst.texts import as_names, as_texts
from mtst.version import __version__

# The encoder's output for a batch of row indices, computed from a cache rather than from token ids.
RowFeatures = Callable[[Sequence[int]], dict[str, torch.Tensor]]


class MultiTaskModel(nn.Module):
    """Shared :class:`SentenceEncoder` + ``heads`` (an ``nn.ModuleDict``)."""

    def __init__(self, encoder: SentenceEncoder, tasks: dict[str, HeadSpec]) -> None:
        super().__init__()
        self.encoder = encoder
        self.tasks = dict(tasks)
        self.lora: dict[str, Any] | None = None
        vocab = encoder.backbone.get_input_embeddings().num_embeddings
        heads = {}
        for name, spec in self.tasks.items():
            # The MLM head draws its init from a forked RNG: adding one leaves every other head as it was.
            with torch.random.fork_rng(devices=[]) if spec.type == "masked_lm" else nullcontext():
                heads[name] = build_head(spec, encoder.dim, vocab)
        self.heads = nn.ModuleDict(heads)

    @property
    def prediction_tasks(self) -> list[str]:
        """Tasks that predict labels (every task but masked-LM objectives)."""
        return [name for name, spec in self.tasks.items() if spec.type != "masked_lm"]

    @classmethod
    def from_backbone(
        cls,
        tasks: dict[str, HeadSpec],
        backbone: str = DEFAULT_BACKBONE,
        pooling: str | None = None,
        normalize: bool | None = None,
        max_length: int | None = None,
    ) -> MultiTaskModel:
        encoder = SentenceEncoder.from_pretrained(backbone, pooling=pooling, normalize=normalize, max_length=max_length)
        return cls(encoder, tasks)

    # ----------------------------------------------------------------- forward
    def forward(self, features: dict[str, Any], tasks: Sequence[str] | None = None) -> dict[str, Any]:
        """Adds ``logits``: a dict task -> tensor, for the tasks asked (default all)."""
        self.encoder(features)
        return self.forward_heads(features, tasks)

    def forward_heads(self, features: dict[str, Any], tasks: Sequence[str] | None = None) -> dict[str, Any]:
        """Heads only, on features that already hold the embeddings (e.g. from a cache). Pair tasks run
        where the features hold the second texts' embeddings (``pair_embedding``, row-aligned)."""
        names = self.prediction_tasks if tasks is None else [t for t in tasks if t in self.prediction_tasks]
        if "pair_embedding" not in features:
            names = [t for t in names if self.tasks[t].type not in tasktypes.PAIR_TYPES]
        features["logits"] = {name: self.head_logits(name, features) for name in names}
        return features

    def head_logits(self, name: str, features: dict[str, Any]) -> torch.Tensor:
        """One head's logits on features that hold its input (the sentence or token embeddings; a pair
        similarity task's output is the cosine of the two texts' embeddings, a column of one)."""
        if self.tasks[name].type == "pair_similarity":
            u, v = features["sentence_embedding"], features["pair_embedding"]
            return F.cosine_similarity(u.float(), v.float(), dim=-1)[:, None]
        return self.heads[name](self._head_input(name, features))

    def _head_input(self, name: str, features: dict[str, Any]) -> torch.Tensor:
        spec = self.tasks[name]
        if spec.type == "pair_classification":  # Sentence-BERT's classifier input
            u, v = features["sentence_embedding"], features["pair_embedding"]
            return torch.cat([u, v, (u - v).abs(), u * v], dim=-1)
        x = features[spec.input_key]
        return F.normalize(x, dim=-1) if spec.normalize_input else x

    def masked_lm_loss(self, task: str, features: dict[str, Any], labels: torch.Tensor) -> torch.Tensor:
        """MLM loss of ``task``'s head on masked inputs (labels ``-100`` except at masked tokens)."""
        from mtst.modeling.mlm import mlm_loss

        self.encoder.embed_tokens(features)
        weight = self.encoder.backbone.get_input_embeddings().weight
        return mlm_loss(self.heads[task], features["token_embeddings"], weight, labels)

    def compute_loss(
        self, features: dict[str, Any], labels: dict[str, torch.Tensor], weights: dict[str, float] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted sum of per-task losses (cross-entropy; binary cross-entropy for multi-label tasks,
        MSE or Huber for regression: :func:`mtst.modeling.tasktypes.loss`).

        Label ``-100`` (a NaN target for multi-label and regression tasks) marks "no label for this
        task": such rows count for the other tasks only. A task with no labelled row in the batch adds
        nothing (rather than a NaN from an empty mean).
        """
        per_task: dict[str, torch.Tensor] = {}
        total: torch.Tensor | None = None
        for name, target in labels.items():
            if name not in features["logits"]:
                continue
            logits = features["logits"][name]
            spec = self.tasks[name]
            if spec.type in ("multi_label", "regression", "pair_similarity"):
                loss = tasktypes.loss(spec, logits, target)
                if loss is None:
                    continue
            else:
                flat_target = target.reshape(-1)
                if not bool((flat_target != IGNORE_INDEX).any()):
                    continue
                loss = F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]).float(), flat_target, ignore_index=IGNORE_INDEX
                )
            per_task[name] = loss
            weight = (weights or {}).get(name, spec.weight)
            total = loss * weight if total is None else total + loss * weight
        if total is None:
            total = features["sentence_embedding"].sum() * 0.0
        return total, per_task

    # ----------------------------------------------------------------- predict
    @torch.inference_mode()
    def predict_proba(
        self, texts: str | Sequence[str], tasks: str | Sequence[str] | None = None, batch_size: int = 32
    ) -> dict[str, Any]:
        """Class probabilities per task, in input order.

        Sentence tasks give an ``(n, num_labels)`` array (per-label probabilities for a multi-label task,
        an ``(n, 1)`` column of values for a regression task); token tasks a list
        of ``(num_tokens, num_labels)`` arrays, one per text. One string gives each task's row for it.
        """
        items, single = as_texts(texts)
        names = as_names(tasks)
        out = self.predict_proba_ids(self.encoder.tokenize_ids(items), names, batch_size)
        return {t: p[0] for t, p in out.items()} if single else out

    @torch.inference_mode()
    def predict_proba_ids(
        self,
        ids: Sequence[Sequence[int]],
        tasks: Sequence[str] | None = None,
        batch_size: int = 32,
        features: RowFeatures | None = None,
        pair_ids: Sequence[Sequence[int] | None] | None = None,
    ) -> dict[str, Any]:
        """:meth:`predict_proba` on texts already tokenised (no padding; ``pair_ids``: second texts)."""
        return self.outputs_ids(ids, tasks, batch_size, features=features, pair_ids=pair_ids)[1]

    @torch.inference_mode()
    def outputs_ids(
        self,
        ids: Sequence[Sequence[int]],
        tasks: Sequence[str] | None = None,
        batch_size: int = 32,
        max_padding: float | None = None,
        features: RowFeatures | None = None,
        pair_ids: Sequence[Sequence[int] | None] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Sentence embeddings and per-task probabilities from one forward pass over tokenised texts.

        Token tasks give one probability row per sub-token. ``max_padding``
        bounds each batch's padding (see ``SentenceEncoder.length_sorted_batches``).
        ``features``, where given, supplies the encoder's output for a batch of row
        indices (a cache of frozen work), and only the heads run here. ``pair_ids``: each row's second
        text, for pair tasks (a row without one reads its own text twice; its pair outputs mean nothing).
        """
        names = check_tasks(self.task_specs(), tasks)
        pairs = [n for n in names if self.tasks[n].type in tasktypes.PAIR_TYPES]
        if pairs and pair_ids is None:
            raise ValueError(f"pair task(s) {', '.join(pairs)} need a second text per row")
        emb = np.zeros((len(ids), self.encoder.dim), dtype=np.float32)
        out: dict[str, Any] = {
            n: (
                np.zeros((len(ids), self.tasks[n].num_labels), dtype=np.float32)
                if self.tasks[n].type in tasktypes.SCORED_TYPES
                else [None] * len(ids)
            )
            for n in names
        }
        with eval_mode(self):
            for chunk, batch in self.encoder.length_sorted_batches(ids, batch_size, max_padding):
                feats = self.encoder(batch) if features is None else features(chunk)
                if pairs and pair_ids is not None:
                    second = pad_batch([pair_ids[i] or ids[i] for i in chunk], self.encoder.pad_id)
                    second = {k: v.to(self.encoder.device) for k, v in second.items()}
                    feats["pair_embedding"] = self.encoder(second)["sentence_embedding"]
                feats = self.forward_heads(feats, names)
                emb[chunk] = feats["sentence_embedding"].float().cpu().numpy()
                for name in names:
                    probs = tasktypes.activate(self.tasks[name], feats["logits"][name]).cpu().numpy()
                    if self.tasks[name].type in tasktypes.SCORED_TYPES:
                        out[name][chunk] = probs
                    else:
                        for row, i in enumerate(chunk):
                            out[name][i] = probs[row, : len(ids[i])]
        return emb, out

    @torch.inference_mode()
    def pair_outputs(self, first: np.ndarray, second: np.ndarray, tasks: Sequence[str]) -> dict[str, np.ndarray]:
        """Pair tasks' outputs from the pooled embeddings of each pair's two texts (row-aligned): what a
        server computes once the texts of many requests went through the encoder together."""
        if not len(first):
            return {t: np.zeros((0, self.tasks[t].num_labels), dtype=np.float32) for t in tasks}
        device = next(self.parameters()).device
        feats = {
            "sentence_embedding": torch.as_tensor(first, device=device),
            "pair_embedding": torch.as_tensor(second, device=device),
        }
        with eval_mode(self):
            logits = self.forward_heads(feats, tasks)["logits"]
        return {t: tasktypes.activate(self.tasks[t], logits[t]).cpu().numpy() for t in tasks}

    @property
    def text_tasks(self) -> list[str]:
        """Prediction tasks that read one text (every task but pair tasks)."""
        return [t for t in self.prediction_tasks if self.tasks[t].type not in tasktypes.PAIR_TYPES]

    def task_specs(self) -> dict[str, HeadSpec]:
        """The prediction tasks and their specs (the :class:`~mtst.modeling.predictions.Predictor` protocol)."""
        return {name: self.tasks[name] for name in self.prediction_tasks}

    @torch.inference_mode()
    def outputs(
        self,
        texts: Sequence[str],
        tasks: Sequence[str],
        batch_size: int = 32,
        max_padding: float | None = None,
        pairs: Sequence[str] | None = None,
    ) -> Outputs:
        """Embeddings and every asked task's probabilities from one forward pass over ``texts``.

        With a token task among ``tasks`` the texts are split into words first (their tags
        and spans need the words); sentence tasks read the same pass. ``pairs``: the second text of
        each pair, for pair tasks (``texts`` are then the first ones).
        """
        specs = self.task_specs()
        names = check_tasks(specs, tasks)
        if pairs is not None:
            tokenize = self.encoder.tokenize_ids
            emb, probs = self.outputs_ids(
                tokenize(list(texts)), names, batch_size, max_padding, None, tokenize(list(pairs))
            )
            return Outputs(emb, probs)
        if needs_words(specs, names):
            words = text_words(texts)
            ids, word_ids = self.encoder.tokenize_words(texts, [[w for w, _, _ in ws] or None for ws in words])
            emb, probs = self.outputs_ids(ids, names, batch_size, max_padding)
            return Outputs(emb, probs, word_ids, words)
        emb, probs = self.outputs_ids(self.encoder.tokenize_ids(list(texts)), names, batch_size, max_padding)
        return Outputs(emb, probs)

    def predict(
        self,
        texts: str | Sequence[str],
        tasks: str | Sequence[str] | None = None,
        batch_size: int = 32,
        pairs: str | Sequence[str] | None = None,
    ) -> list[dict] | dict:
        """One dict per text (per pair, with ``pairs``: the second texts); one string gives one dict.

        Sentence tasks give ``{"label", "probabilities"}``; token tasks give
        ``{"entities": [{"type", "text", "start", "end", "score"}], "words", "tags"}``
        with character offsets into the input text (:func:`mtst.modeling.predictions.records`).
        """
        return predict_records(self, texts, tasks, batch_size, pairs)

    def encode(self, texts: str | Sequence[str], **kwargs: Any) -> np.ndarray | torch.Tensor:
        return self.encoder.encode(texts, **kwargs)

    # -------------------------------------------------------------- save/load
    def config_dict(self, tasks: Sequence[str] | None = None) -> dict[str, Any]:
        from importlib.metadata import version

        names = list(self.tasks) if tasks is None else list(tasks)
        config = {
            "format": "mtst",
            "format_version": FORMAT_VERSION,
            "backbone": self.encoder.reference,
            "pooling": self.encoder.pooling,
            "normalize": self.encoder.normalize,
            "max_length": self.encoder.max_length,
            "embedding_dim": self.encoder.dim,
            # unset (None) keys left out: a model that uses no newer setting stays readable by older releases
            "tasks": {name: self.tasks[name].model_dump(exclude_none=True) for name in names},
            "versions": {"mtst": __version__, "torch": torch.__version__, "transformers": version("transformers")},
        }
        if self.lora is not None:
            config["lora"] = self.lora
        return config

    def save(
        self, directory: str | Path, tasks: Sequence[str] | None = None, backbone_groups: Sequence[str] | None = None
    ) -> Path:
        """Write the model directory atomically (a crash never leaves half a model).

        ``tasks`` keeps only those heads (e.g. to drop auxiliary ones). With
        ``backbone_groups`` (a LoRA model) only the adapters, the heads and
        those groups are saved; the rest is read from the backbone when loaded.
        """
        names = list(self.tasks) if tasks is None else list(tasks)
        target = Path(directory)
        state = {
            k: v.detach().contiguous().cpu()
            for k, v in self.state_dict().items()
            if not k.startswith("heads.") or k.split(".")[1] in names
        }
        if self.lora is not None and backbone_groups is not None:
            keep = set(backbone_groups)
            state = {
                k: v
                for k, v in state.items()
                if is_lora_param(k) or parameter_group(k) in keep or k.startswith("heads.")
            }
        with atomic_directory(target) as tmp:
            config = self.config_dict(names)
            if self.lora is not None:
                saved = {"saved_groups": list(backbone_groups)} if backbone_groups is not None else {}
                config["lora"] = {**self.lora, **saved, "backbone_fingerprint": self._fingerprint()}
            (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
            save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            self.encoder.backbone.config.save_pretrained(tmp / BACKBONE_CONFIG_DIR)
            self.encoder.tokenizer.save_pretrained(tmp)
        return target

    @staticmethod
    def write_task_specs(directory: str | Path, specs: dict[str, HeadSpec]) -> None:
        """Replace some tasks' specs in a saved model's config (settings learnt after its weights were
        written, such as multi-label thresholds); the file is replaced whole."""
        path = resolve_model_dir(directory) / CONFIG_NAME
        config = json.loads(path.read_text(encoding="utf-8"))
        for task, spec in specs.items():
            config["tasks"][task] = spec.model_dump(exclude_none=True)
        atomic_write_text(path, json.dumps(config, indent=2) + "\n")

    def _fingerprint(self) -> float:
        """A cheap checksum of the frozen base weights (adapters are only valid on the same backbone)."""
        return base_fingerprint(self.encoder.backbone)

    def merge_lora(self) -> int:
        """Fold LoRA adapters into the backbone; the model then saves and loads as a plain one."""
        from mtst.modeling.lora import merge_lora

        merged = merge_lora(self.encoder.backbone)
        self.lora = None
        return merged

    @staticmethod
    def read_heads(directory: str | Path) -> dict[str, torch.Tensor]:
        """The head weights of a saved model (keys as in ``model.heads.state_dict()``)."""
        path = resolve_model_dir(directory)
        weights, _ = read_safetensors(path / WEIGHTS_NAME, "model weights", prefix="heads.")
        return {k.removeprefix("heads."): v for k, v in weights.items()}

    @classmethod
    def load(cls, directory: str | Path) -> MultiTaskModel:
        """Load a directory written by :meth:`save`; weights from safetensors only (:mod:`mtst.modeling.saved`)."""
        saved = read_saved(directory)
        backbone, tokenizer = build_backbone(saved)
        config = saved.config
        try:
            tasks = {name: HeadSpec(**spec) for name, spec in config["tasks"].items()}
        except Exception as exc:
            raise ModelLoadError(f"cannot load model from {saved.path}: {exc}") from exc
        encoder = SentenceEncoder.with_saved_settings(backbone, tokenizer, config)
        model = cls(encoder, tasks)  # heads first, then adapters: the order the RNG has always been drawn in
        model.lora = attach_saved_lora(backbone, saved)
        missing, unexpected = load_backbone_weights(backbone, saved)
        heads = {k.removeprefix("heads."): v for k, v in saved.state.items() if k.startswith("heads.")}
        missing_heads, unexpected_heads = model.heads.load_state_dict(heads, strict=False)
        missing += [f"heads.{k}" for k in missing_heads]
        unexpected += [f"heads.{k}" for k in unexpected_heads]
        check_weights(saved, missing, unexpected)
        model.eval()
        return model


def load_encoder(reference: str, pooling: str | None = None, normalize: bool | None = None) -> SentenceEncoder:
    """An encoder from a saved mtst model or run, else from a backbone reference."""
    return SentenceEncoder.from_pretrained(reference, pooling=pooling, normalize=normalize)
