"""The multi-task model: one shared encoder, any number of named heads.

A forward pass threads one features dict through the pipeline:
``input_ids/attention_mask -> token_embeddings -> sentence_embedding ->
logits[task]``. Saved models are a directory holding ``config.json``,
``model.safetensors``, the backbone's own config and the tokenizer, so the
directory is self-contained and never needs a pickle.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from mtst import __version__
from mtst.encoder import DEFAULT_BACKBONE, SentenceEncoder, check_no_pickle_only, eval_mode, strip_unused_pooler
from mtst.errors import ModelLoadError
from mtst.heads import HeadSpec, build_head

IGNORE_INDEX = -100
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
BACKBONE_CONFIG_DIR = "backbone"
FORMAT_VERSION = 1


class MultiTaskModel(nn.Module):
    """Shared :class:`SentenceEncoder` + ``heads`` (an ``nn.ModuleDict``)."""

    def __init__(self, encoder: SentenceEncoder, tasks: dict[str, HeadSpec]) -> None:
        super().__init__()
        self.encoder = encoder
        self.tasks = dict(tasks)
        self.heads = nn.ModuleDict({name: build_head(spec, encoder.dim) for name, spec in self.tasks.items()})

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
        """Heads only, on features that already hold the embeddings (e.g. from a cache)."""
        names = list(self.tasks) if tasks is None else list(tasks)
        features["logits"] = {name: self.heads[name](features[self.tasks[name].input_key]) for name in names}
        return features

    def compute_loss(
        self, features: dict[str, Any], labels: dict[str, torch.Tensor], weights: dict[str, float] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted sum of per-task cross-entropies.

        Label ``-100`` marks "no label for this task": such rows count for the
        other tasks only. A task with no labelled row in the batch adds nothing
        (rather than a NaN from an empty mean).
        """
        per_task: dict[str, torch.Tensor] = {}
        total: torch.Tensor | None = None
        for name, target in labels.items():
            if name not in features["logits"]:
                continue
            logits = features["logits"][name]
            flat_target = target.reshape(-1)
            if not bool((flat_target != IGNORE_INDEX).any()):
                continue
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat_target, ignore_index=IGNORE_INDEX)
            per_task[name] = loss
            weight = (weights or {}).get(name, self.tasks[name].weight)
            total = loss * weight if total is None else total + loss * weight
        if total is None:
            total = features["sentence_embedding"].sum() * 0.0
        return total, per_task

    # ----------------------------------------------------------------- predict
    @torch.inference_mode()
    def predict_proba(
        self, texts: Sequence[str], tasks: Sequence[str] | None = None, batch_size: int = 32
    ) -> dict[str, list[np.ndarray]] | dict[str, np.ndarray]:
        """Class probabilities per task, in input order.

        Sentence tasks give an ``(n, num_labels)`` array; token tasks a list
        of ``(num_tokens, num_labels)`` arrays, one per text.
        """
        return self.predict_proba_ids(self.encoder.tokenize_ids(list(texts)), tasks, batch_size)

    @torch.inference_mode()
    def predict_proba_ids(
        self, ids: Sequence[Sequence[int]], tasks: Sequence[str] | None = None, batch_size: int = 32
    ) -> dict[str, Any]:
        """:meth:`predict_proba` on texts already tokenised (no padding)."""
        names = list(self.tasks) if tasks is None else list(tasks)
        unknown = [n for n in names if n not in self.tasks]
        if unknown:
            raise ModelLoadError(f"unknown task(s) {', '.join(unknown)}; this model has: {', '.join(self.tasks)}")
        out: dict[str, Any] = {
            n: (
                np.zeros((len(ids), self.tasks[n].num_labels), dtype=np.float32)
                if self.tasks[n].type == "classification"
                else [None] * len(ids)
            )
            for n in names
        }
        with eval_mode(self):
            for chunk, batch in self.encoder.length_sorted_batches(ids, batch_size):
                logits = self(batch, tasks=names)["logits"]
                for name in names:
                    probs = logits[name].float().softmax(-1).cpu().numpy()
                    if self.tasks[name].type == "classification":
                        out[name][chunk] = probs
                    else:
                        for row, i in enumerate(chunk):
                            out[name][i] = probs[row, : len(ids[i])]
        return out

    def predict(self, texts: Sequence[str], tasks: Sequence[str] | None = None, batch_size: int = 32) -> list[dict]:
        """One dict per text: ``{task: {"label": ..., "probabilities": {label: p}}}``."""
        probs = self.predict_proba(texts, tasks=tasks, batch_size=batch_size)
        rows: list[dict] = [{} for _ in texts]
        for name, values in probs.items():
            labels = self.tasks[name].labels
            for i, p in enumerate(values):
                if self.tasks[name].type == "classification":
                    rows[i][name] = {
                        "label": labels[int(np.argmax(p))],
                        "probabilities": {lab: round(float(x), 6) for lab, x in zip(labels, p, strict=True)},
                    }
                else:
                    rows[i][name] = {"tags": [labels[int(j)] for j in np.argmax(p, axis=-1)]}
        return rows

    def encode(self, texts: str | Sequence[str], **kwargs: Any) -> np.ndarray | torch.Tensor:
        return self.encoder.encode(texts, **kwargs)

    # -------------------------------------------------------------- save/load
    def config_dict(self) -> dict[str, Any]:
        import transformers

        return {
            "format": "mtst",
            "format_version": FORMAT_VERSION,
            "backbone": self.encoder.reference,
            "pooling": self.encoder.pooling,
            "normalize": self.encoder.normalize,
            "max_length": self.encoder.max_length,
            "embedding_dim": self.encoder.dim,
            "tasks": {name: spec.model_dump() for name, spec in self.tasks.items()},
            "versions": {"mtst": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
        }

    def save(self, directory: str | Path) -> Path:
        """Write the model directory atomically (a crash never leaves half a model)."""
        target = Path(directory)
        with atomic_directory(target) as tmp:
            (tmp / CONFIG_NAME).write_text(json.dumps(self.config_dict(), indent=2) + "\n", encoding="utf-8")
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            self.encoder.backbone.config.save_pretrained(tmp / BACKBONE_CONFIG_DIR)
            self.encoder.tokenizer.save_pretrained(tmp)
        return target

    @classmethod
    def load(cls, directory: str | Path) -> MultiTaskModel:
        """Load a directory written by :meth:`save`; weights from safetensors only."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        path = resolve_model_dir(directory)
        config = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
        weights = path / WEIGHTS_NAME
        if not weights.exists():
            check_no_pickle_only(path)
            raise ModelLoadError(f"{path} has no {WEIGHTS_NAME}")
        try:
            backbone_config = AutoConfig.from_pretrained(path / BACKBONE_CONFIG_DIR, local_files_only=True)
            backbone = AutoModel.from_config(backbone_config)
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            tasks = {name: HeadSpec(**spec) for name, spec in config["tasks"].items()}
        except Exception as exc:
            raise ModelLoadError(f"cannot load model from {path}: {exc}") from exc
        strip_unused_pooler(backbone)
        encoder = SentenceEncoder(
            backbone,
            tokenizer,
            pooling=config["pooling"],
            normalize=config["normalize"],
            max_length=config["max_length"],
            reference=config["backbone"],
        )
        model = cls(encoder, tasks)
        state = load_file(str(weights))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelLoadError(
                f"{weights} does not match its config.json (missing: {missing[:3]}, unexpected: {unexpected[:3]})"
            )
        model.eval()
        return model


def is_model_dir(path: str | Path) -> bool:
    """True for a directory written by :meth:`MultiTaskModel.save` (or a run holding one)."""
    try:
        return resolve_model_dir(path) is not None
    except ModelLoadError:
        return False


def resolve_model_dir(path: str | Path) -> Path:
    """Accept a model directory or a training run directory (its ``model/``)."""
    base = Path(path).expanduser()
    for candidate in (base, base / "model"):
        cfg = candidate / CONFIG_NAME
        if cfg.is_file():
            try:
                data = json.loads(cfg.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(data, dict) and data.get("format") == "mtst":
                return candidate
    raise ModelLoadError(f"{base} is not an mtst model directory (no config.json with format 'mtst')")


def load_encoder(reference: str, pooling: str | None = None, normalize: bool | None = None) -> SentenceEncoder:
    """An encoder from a saved mtst model or run, else from a backbone reference."""
    if is_model_dir(reference):
        encoder = MultiTaskModel.load(reference).encoder
        if pooling:
            encoder.pooling = pooling
        if normalize is not None:
            encoder.normalize = normalize
        return encoder
    return SentenceEncoder.from_pretrained(reference, pooling=pooling, normalize=normalize)


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a scratch directory that replaces ``target`` only once fully written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    old = target.with_name(f".{target.name}.old")
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    if old.exists():
        shutil.rmtree(old)
