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

from mtst.constants import IGNORE_INDEX, ONNX_META
from mtst.errors import ModelLoadError
from mtst.fileio import atomic_directory, atomic_write_text, read_safetensors
from mtst.modeling import tasktypes
from mtst.modeling.backbone import check_no_pickle_only, strip_unused_pooler
from mtst.modeling.encoder import DEFAULT_BACKBONE, SentenceEncoder, eval_mode, pad_batch
from mtst.modeling.fingerprint import weight_fingerprint
from mtst.modeling.groups import parameter_group
from mtst.modeling.heads import HeadSpec, build_head
from mtst.modeling.lora import is_lora_param
from mtst.modeling.predictions import Outputs, check_tasks, needs_words, text_words
from mtst.modeling.predictions import predict as predict_records
from mtst.texts import as_names, as_texts
from mtst.version import __version__

# The encoder's output for a batch of row indices, computed from a cache rather than from token ids.
RowFeatures = Callable[[Sequence[int]], dict[str, torch.Tensor]]

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
        return weight_fingerprint([self.encoder.backbone.get_input_embeddings().weight], None, absolute=True)

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
        """Load a directory written by :meth:`save`; weights from safetensors only."""
        from mtst.modeling.bert import NativeBert, settings_of
        from mtst.modeling.tokenizer import load_tokenizer

        path = resolve_model_dir(directory)
        config = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))  # resolve_model_dir parsed it
        version = config.get("format_version", 1)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ModelLoadError(
                f"{path} was saved in mtst model format version {version}; this mtst reads versions up to "
                f"{FORMAT_VERSION}: upgrade mtst to load it"
            )
        weights = path / WEIGHTS_NAME
        if not weights.exists():
            check_no_pickle_only(path)
            raise ModelLoadError(f"{path} has no {WEIGHTS_NAME}")
        lora = config.get("lora")
        try:
            tasks = {name: HeadSpec(**spec) for name, spec in config["tasks"].items()}
            tokenizer = load_tokenizer(path)
            if lora:
                backbone = _lora_base(config["backbone"], path)
            elif (native := settings_of(path / BACKBONE_CONFIG_DIR)) is not None:
                backbone = NativeBert.to_load(native)  # its weights are in the model's own file, read below
            else:
                from transformers import AutoConfig, AutoModel

                backbone_config = AutoConfig.from_pretrained(path / BACKBONE_CONFIG_DIR, local_files_only=True)
                backbone = backbone_from_config(AutoModel, backbone_config)
        except ModelLoadError:
            raise
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
        if lora:
            model._attach_saved_lora(lora, path, config["backbone"])
        state, _ = read_safetensors(weights, "model weights")
        missing, unexpected = model.load_state_dict(state, strict=False)
        if lora:  # base weights come from the backbone; only the saved parts must all match
            missing = [k for k in missing if k.startswith("heads.") or is_lora_param(k)]
        if missing or unexpected:
            raise ModelLoadError(
                f"{weights} does not match its config.json (missing: {missing[:3]}, unexpected: {unexpected[:3]})"
            )
        model.eval()
        return model

    def _attach_saved_lora(self, lora: dict[str, Any], path: Path, reference: str) -> None:
        """Inject a saved model's adapters onto its (already loaded) base, after checking it is the same base."""
        from mtst.config import LoraSettings
        from mtst.modeling.groups import count_layers
        from mtst.modeling.lora import add_lora

        backbone = self.encoder.backbone
        settings = LoraSettings(**{k: v for k, v in lora.items() if k in LoraSettings.model_fields})
        add_lora(backbone, settings, count_layers(n for n, _ in backbone.named_parameters()))
        self.lora = settings.model_dump()
        if abs(self._fingerprint() - lora.get("backbone_fingerprint", self._fingerprint())) > 1e-2:
            raise ModelLoadError(
                f"{path}: its LoRA adapters were trained on other weights than the backbone now at "
                f"{reference!r}; load it where that backbone is unchanged"
            )


def _lora_base(reference: str, path: Path) -> nn.Module:
    """The pretrained backbone a LoRA model was trained on (its saved directory holds adapters only)."""
    from mtst.modeling.backbone import load_backbone, resolve_backbone

    try:
        source = resolve_backbone(reference)
    except ModelLoadError as exc:
        raise ModelLoadError(
            f"{path} holds LoRA adapters for the backbone {reference!r}, which cannot be found ({exc}); "
            "make it available, or save the run with training.lora.save=merged"
        ) from exc
    return load_backbone(source)[0]


def is_model_dir(path: str | Path) -> bool:
    """True for a directory written by :meth:`MultiTaskModel.save` (or a run holding one)."""
    try:
        return resolve_model_dir(path) is not None
    except ModelLoadError:
        return False


def is_export(path: str | Path) -> bool:
    """True for a directory written by ``mtst export --format onnx|openvino`` (commands run it directly)."""
    return (Path(path).expanduser() / ONNX_META).is_file()


def resolve_model_dir(path: str | Path) -> Path:
    """Accept a model directory or a training run directory (its ``model/``)."""
    base = Path(path).expanduser()
    if not base.exists():
        raise ModelLoadError(f"{base}: no such directory")
    if not base.is_dir():
        raise ModelLoadError(f"{base}: a file, not a model or run directory")
    if is_export(base):
        raise ModelLoadError(
            f"{base} is an mtst export (ONNX or OpenVINO), which `mtst predict`, `encode --model` and `serve` "
            "read; this command needs the model or run directory it was exported from"
        )
    for candidate in (base, base / "model"):
        cfg = candidate / CONFIG_NAME
        if cfg.is_file():
            try:
                data = json.loads(cfg.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(data, dict) and data.get("format") == "mtst":
                return candidate
    if is_run_dir(base):
        raise ModelLoadError(
            f"{base} is a training run that saved no model yet (it stopped before its first evaluation): "
            f"continue it with `mtst train --resume {base}`"
        )
    raise ModelLoadError(f"{base} is not an mtst model directory (no config.json with format 'mtst')")


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a training run's directory (its resolved config beside a log or a checkpoint)."""
    return (path / "config.yaml").is_file() and ((path / "train.log").is_file() or (path / "checkpoint").is_dir())


def load_encoder(reference: str, pooling: str | None = None, normalize: bool | None = None) -> SentenceEncoder:
    """An encoder from a saved mtst model or run, else from a backbone reference."""
    return SentenceEncoder.from_pretrained(reference, pooling=pooling, normalize=normalize)


def backbone_from_config(auto_model: Any, config: Any) -> nn.Module:
    """A backbone built from its saved config with the attention kernel ``from_pretrained`` picks (SDPA
    where the architecture has it), so a loaded model computes exactly what the trained one did.

    transformers 4.x saves ``_attn_implementation_autoset`` in the config and then builds from it with
    eager attention: the same weights, outputs off in the last bits.
    """
    try:
        return auto_model.from_config(config, attn_implementation="sdpa")
    except (ValueError, ImportError):  # an architecture without SDPA: its default kernel
        return auto_model.from_config(config)
