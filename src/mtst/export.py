"""Leaving Python: a trained model as a sentence-transformers directory or one ONNX graph.

* ``sentence-transformers``: the backbone, tokenizer, pooling (and normalise)
  modules in the layout ``SentenceTransformer(path)`` loads, so it gives the
  same embeddings; the task heads are saved beside it (``mtst_heads/``).
* ``onnx``: encoder and every prediction head in one graph with dynamic batch
  and sequence length, inputs ``input_ids`` and ``attention_mask``, outputs
  ``sentence_embedding`` (before normalisation) and ``logits_<task>``; the
  tokenizer and an ``mtst_onnx.json`` (tasks, labels, pooling) go beside it,
  which is all :class:`OnnxPredictor` needs. ``quantize="int8"`` adds dynamic
  int8 quantisation of the weights (onnxruntime).

LoRA adapters are merged into the backbone first.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from mtst.constants import ONNX_META
from mtst.errors import MtstError
from mtst.fileio import atomic_directory
from mtst.modeling import tasktypes
from mtst.modeling.encoder import SentenceEncoder, pad_batch, sorted_chunks
from mtst.modeling.model import MultiTaskModel
from mtst.modeling.predictions import Outputs, check_tasks, needs_words, predict, softmax, text_words
from mtst.texts import as_texts

ONNX_NAME = "model.onnx"
PAIRS_NAME = "pairs.onnx"  # the pair heads, where the model has pair tasks
HEADS_DIR = "mtst_heads"


def _plain(model: MultiTaskModel) -> MultiTaskModel:
    """The model with LoRA adapters folded in (a copy; the caller's model is untouched)."""
    if model.lora is None:
        return model
    merged = copy.deepcopy(model)
    merged.merge_lora()
    return merged


def _drops_pooler(backbone: nn.Module) -> bool:
    """True when the backbone's class has a pooler that mtst removed (and can be built without one)."""
    import inspect

    from mtst.modeling.bert import NativeBert

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
    model = _plain(model)
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


class _Graph(nn.Module):
    """Encoder + prediction heads as a tensor-in, tensors-out module for tracing."""

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model
        self.tasks = model.text_tasks

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.model({"input_ids": input_ids, "attention_mask": attention_mask}, tasks=self.tasks)
        return (feats["sentence_embedding"], *(feats["logits"][t] for t in self.tasks))


class _PairGraph(nn.Module):
    """The pair heads on two texts' pooled embeddings (the encoder graph gives them)."""

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model
        self.tasks = [t for t in model.prediction_tasks if t not in model.text_tasks]

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.model.forward_heads({"sentence_embedding": first, "pair_embedding": second}, self.tasks)
        return tuple(feats["logits"][t] for t in self.tasks)


def _export_pair_heads(model: MultiTaskModel, path: Path) -> list[str]:
    """``pairs.onnx``: the pair heads, from the two embeddings of each pair to each pair task's logits."""
    graph = _PairGraph(model).eval()
    outputs = [f"logits_{t}" for t in graph.tasks]
    sample = torch.randn(2, model.encoder.dim)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad(), warnings.catch_warnings(), _quiet_logger("torch.onnx"):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (sample, sample.flip(0)),
            str(path),
            input_names=["first", "second"],
            output_names=outputs,
            dynamic_shapes={"first": {0: batch}, "second": {0: batch}},
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return outputs


@contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Errors only from ``name`` meanwhile: the ONNX exporter logs a warning per torchvision operator it
    skips when torchvision is not installed, which an mtst graph never uses."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def export_onnx(model: MultiTaskModel, output: Path, quantize: str | None = None) -> Path:
    """One ONNX graph for encoder and heads, with the tokenizer and task metadata beside it."""
    with atomic_directory(output) as tmp:
        _write_onnx(model, tmp, quantize)
    return output


def check_precision(precision: str | None) -> None:
    """Refuse a reduced inference precision for an export: its precision was fixed when it was written
    (``--quantize``); ``fp32`` and ``auto`` (the best the export has) run it as it is."""
    if precision not in (None, "fp32", "auto"):
        raise MtstError(
            f"--precision {precision}: an export runs at the precision it was written with (--quantize at "
            "export); --precision applies to a trained model"
        )


def export_openvino(
    model: MultiTaskModel, output: Path, quantize: str | None = None, calibration: Sequence[str] | None = None
) -> Path:
    """The ONNX export read into OpenVINO (``openvino_model.xml``/``.bin`` instead of ``model.onnx``);
    ``quantize="int8"`` quantises it statically on ``calibration`` texts (default: the bundled demo's)."""
    from mtst.export_openvino import (
        OPENVINO_NAME,
        calibration_inputs,
        convert,
        demo_texts,
        note_slow_int8,
        require_openvino,
    )

    if quantize not in (None, "int8"):
        raise MtstError(f"--quantize: {quantize!r} is not supported; use int8")
    require_openvino(quantize)  # a missing extra fails before anything is traced or written
    if quantize == "int8":
        note_slow_int8()
    with atomic_directory(output) as tmp:
        _write_onnx(model, tmp, None)
        inputs = None
        if quantize == "int8":
            texts = list(calibration) if calibration is not None else demo_texts()
            inputs = calibration_inputs(model.encoder.tokenizer, texts, model.encoder.max_length)
        convert(tmp / ONNX_NAME, tmp / OPENVINO_NAME, inputs)
        (tmp / ONNX_NAME).unlink()
        meta = json.loads((tmp / ONNX_META).read_text(encoding="utf-8"))
        meta.update(
            runtime="openvino",
            quantize=quantize,
            calibration_texts=None if inputs is None else len(inputs),
        )
        (tmp / ONNX_META).write_text(json.dumps(meta, indent=2) + "\n")
    return output


def _write_onnx(model: MultiTaskModel, tmp: Path, quantize: str | None) -> None:
    """The ONNX export's files, written into ``tmp``."""
    try:
        import onnx
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise MtstError("ONNX export needs onnx, onnxscript and onnxruntime: pip install 'mtst[onnx]'") from exc
    model = _plain(model).eval()
    graph = _Graph(model).eval()
    sample = model.encoder.tokenize(["an example sentence for export", "a second one"])
    outputs = ["sentence_embedding", *(f"logits_{t}" for t in graph.tasks)]
    batch, seq = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=2, max=model.encoder.max_length)
    with torch.no_grad(), warnings.catch_warnings(), _quiet_logger("torch.onnx"):
        warnings.simplefilter("ignore")  # the exporter's notes on axis names and deprecations
        torch.onnx.export(
            graph,
            (sample["input_ids"], sample["attention_mask"]),
            str(tmp / ONNX_NAME),
            input_names=["input_ids", "attention_mask"],
            output_names=outputs,
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        plain = tmp / "model.fp32.onnx"
        graph_proto = onnx.load(str(tmp / ONNX_NAME))
        del graph_proto.graph.value_info[:]  # the exporter's traced shapes confuse re-inference
        onnx.save(graph_proto, str(plain))
        (tmp / ONNX_NAME).unlink()
        # One scale per output channel: with one per tensor the embeddings of all-MiniLM-L6-v2 fell to
        # cosine 0.958 of fp32's; per channel they keep 0.992 (benchmarks/README.md, "Inference precision").
        quantize_dynamic(str(plain), str(tmp / ONNX_NAME), weight_type=QuantType.QInt8, per_channel=True)
        plain.unlink()
    elif quantize is not None:
        raise MtstError(f"--quantize: {quantize!r} is not supported; use int8")
    pair_outputs = (
        _export_pair_heads(model, tmp / PAIRS_NAME) if len(model.text_tasks) < len(graph.model.prediction_tasks) else []
    )
    model.encoder.tokenizer.save_pretrained(tmp)
    meta = {**model.config_dict(model.prediction_tasks), "outputs": outputs, "quantize": quantize}
    if pair_outputs:
        meta["pair_outputs"] = pair_outputs
    (tmp / ONNX_META).write_text(json.dumps(meta, indent=2) + "\n")


class OnnxPredictor:
    """Predictions from an export directory (no torch model needed): an ONNX graph through onnxruntime, or
    the OpenVINO model of ``--format openvino`` through OpenVINO."""

    def __init__(self, directory: str | Path, threads: int | None = None) -> None:
        from mtst.modeling.tokenizer import load_tokenizer

        path = Path(directory)
        if not (path / ONNX_META).exists():
            raise MtstError(f"{path}: not an mtst ONNX export (no {ONNX_META}); create one with mtst export")
        self.meta = json.loads((path / ONNX_META).read_text(encoding="utf-8"))
        self.runtime = self.meta.get("runtime", "onnxruntime")
        self.tokenizer = load_tokenizer(path)
        self.tasks = {t: spec for t, spec in self.meta["tasks"].items() if spec["type"] != "masked_lm"}
        self.encoder = ExportEncoder(self)  # what encode, similarity, search and the server read of an encoder
        pairs = path / PAIRS_NAME if self.meta.get("pair_outputs") else None
        if self.runtime == "openvino":
            from mtst.export_openvino import OPENVINO_NAME, OpenVinoSession

            int8 = self.meta.get("quantize") == "int8"
            self.session: Any = OpenVinoSession(path / OPENVINO_NAME, threads, int8)
            self.pair_session: Any = None if pairs is None else OpenVinoSession(pairs, threads, int8)
            return
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MtstError("the onnx backend needs onnxruntime: pip install 'mtst[onnx]'") from exc
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path / ONNX_NAME), options, providers=["CPUExecutionProvider"])
        self.pair_session = None
        if pairs is not None:
            self.pair_session = ort.InferenceSession(str(pairs), options, providers=["CPUExecutionProvider"])

    def run(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        words: Sequence[Sequence[str]] | None = None,
        progress: Callable[[int], Any] | None = None,
        max_padding: float | None = None,
    ) -> dict[str, list[Any]]:
        """Raw outputs (embedding and logits per task) per text, in input order.

        With ``words`` (one word list per text) the texts are tokenised from
        those words, as token tasks are, and ``"word_ids"`` maps each
        sub-token to its word. ``max_padding``: see
        :meth:`SentenceEncoder.length_sorted_batches <mtst.modeling.encoder.SentenceEncoder.length_sorted_batches>`.
        """
        out: dict[str, list[Any]] = {name: [None] * len(texts) for name in [*self.meta["outputs"], "word_ids"]}
        if not texts:
            return out
        inputs: Any = [list(w) for w in words] if words is not None else list(texts)
        enc = self.tokenizer(
            inputs,
            is_split_into_words=words is not None,
            truncation=True,
            max_length=self.meta["max_length"],
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        ids: list[list[int]] = enc["input_ids"]
        pad_id = self.tokenizer.pad_token_id or 0
        # Longest first, as the torch model batches: each batch pads to its own longest text only, and with
        # max_padding (the server's) it ends before padding passes that share of its tokens.
        for chunk in sorted_chunks(ids, batch_size, max_padding):
            batch = pad_batch([ids[i] for i in chunk], pad_id)
            values = self.session.run(None, {k: v.numpy() for k, v in batch.items()})
            for name, value in zip(self.meta["outputs"], values, strict=True):
                for row, i in enumerate(chunk):
                    out[name][i] = value[row] if value.ndim == 2 else value[row, : len(ids[i])]
            if words is not None:
                for i in chunk:
                    out["word_ids"][i] = enc.word_ids(i)
            if progress is not None:
                progress(len(chunk))
        return out

    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        normalize: bool | None = None,
        convert_to: str = "numpy",
        progress: Callable[[int], Any] | None = None,
    ) -> Any:
        """Sentence embeddings, normalised as the model was unless ``normalize`` says otherwise (the
        arguments of :meth:`SentenceEncoder.encode <mtst.modeling.encoder.SentenceEncoder.encode>`)."""
        items, single = as_texts(texts)
        dim = self.meta["embedding_dim"]
        raw = self.run(items, batch_size, progress=progress)["sentence_embedding"]
        emb = np.stack(raw).astype(np.float32) if items else np.zeros((0, dim), dtype=np.float32)
        if self.meta["normalize"] if normalize is None else normalize:
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        if single:
            emb = emb[0]
        return torch.from_numpy(emb) if convert_to == "torch" else emb

    @property
    def prediction_tasks(self) -> list[str]:
        return list(self.tasks)

    @property
    def text_tasks(self) -> list[str]:
        """Prediction tasks that read one text (every task but pair tasks)."""
        return [t for t, spec in self.tasks.items() if spec["type"] not in tasktypes.PAIR_TYPES]

    def eval(self) -> OnnxPredictor:
        """Nothing to switch (an export has no dropout); for code written against the torch model."""
        return self

    def task_specs(self) -> dict[str, Any]:
        """The prediction tasks and their specs (the :class:`~mtst.modeling.predictions.Predictor` protocol)."""
        return self.tasks

    def outputs(
        self,
        texts: Sequence[str],
        tasks: Sequence[str],
        batch_size: int = 32,
        max_padding: float | None = None,
        pairs: Sequence[str] | None = None,
    ) -> Outputs:
        """Embeddings and every asked task's probabilities from one run of the graph (words first for token
        tasks; with ``pairs``, the second texts too, then the pair heads' graph; ``max_padding`` bounds
        each batch's padding, as the server asks)."""
        names = check_tasks(self.tasks, tasks)
        if pairs is not None:
            return self._pair_outputs(texts, pairs, names, batch_size)
        words = text_words(texts) if needs_words(self.tasks, names) else None
        word_lists = (
            None if words is None else [[w for w, _, _ in ws] or [t] for ws, t in zip(words, texts, strict=True)]
        )
        raw = self.run(texts, batch_size, words=word_lists, max_padding=max_padding)
        probs: dict[str, Any] = {}
        for task in names:
            spec = self.tasks[task]
            if spec["type"] in tasktypes.SENTENCE_TYPES:
                width = tasktypes.num_outputs(spec["type"], spec["labels"])
                logits = np.asarray(raw[f"logits_{task}"], dtype=np.float32).reshape(len(texts), width)
                probs[task] = tasktypes.activate_np(spec, logits)
            else:
                probs[task] = [softmax(x) for x in raw[f"logits_{task}"]]  # (sub-tokens, labels) each
        emb = np.stack(raw["sentence_embedding"]) if texts else np.zeros((0, self.meta["embedding_dim"]))
        return Outputs(emb, probs, raw["word_ids"] if words is not None else None, words)

    def _pair_outputs(self, first: Sequence[str], second: Sequence[str], names: list[str], batch_size: int) -> Outputs:
        dim = self.meta["embedding_dim"]
        raw = self.run([*first, *second], batch_size)["sentence_embedding"]
        emb = np.stack(raw).astype(np.float32) if raw else np.zeros((0, dim), dtype=np.float32)
        u, v = emb[: len(first)], emb[len(first) :]
        return Outputs(u, self.pair_outputs(u, v, names))

    def pair_outputs(self, first: np.ndarray, second: np.ndarray, tasks: Sequence[str]) -> dict[str, np.ndarray]:
        """Pair tasks' outputs from the pooled embeddings of each pair's two texts (row-aligned)."""
        if not len(first) or self.pair_session is None:
            specs = {t: self.tasks[t] for t in tasks}
            return {
                t: np.zeros((0, tasktypes.num_outputs(s["type"], s["labels"])), np.float32) for t, s in specs.items()
            }
        values = self.pair_session.run(None, {"first": first.astype(np.float32), "second": second.astype(np.float32)})
        logits = dict(zip(self.meta["pair_outputs"], values, strict=True))
        return {t: tasktypes.activate_np(self.tasks[t], logits[f"logits_{t}"]) for t in tasks}

    def predict(
        self,
        texts: str | Sequence[str],
        tasks: str | Sequence[str] | None = None,
        batch_size: int = 32,
        pairs: str | Sequence[str] | None = None,
    ) -> list[dict] | dict:
        """The records of :meth:`MultiTaskModel.predict`: labels and probabilities, or entity spans."""
        return predict(self, texts, tasks, batch_size, pairs)


FORMATS = ("sentence-transformers", "onnx", "openvino")


def export(
    run: str | Path,
    fmt: str,
    output: Path,
    quantize: str | None = None,
    calibration: Sequence[str] | None = None,
) -> Path:
    """Export a run or model directory; ``fmt`` is one of :data:`FORMATS`. ``calibration``: texts for
    ``openvino`` int8 (default: the bundled demo's)."""
    if fmt not in FORMATS:
        raise MtstError(f"--format: {fmt!r}; use {', '.join(FORMATS)}")
    if quantize and fmt == "sentence-transformers":
        raise MtstError("--quantize applies to --format onnx or openvino")
    if calibration is not None and not (fmt == "openvino" and quantize == "int8"):
        raise MtstError("--calibration applies to --format openvino --quantize int8 (static int8 needs texts)")
    model = MultiTaskModel.load(run)
    if (
        output.exists()
        and any(output.iterdir())
        and not (output / "modules.json").exists()
        and not (output / ONNX_META).exists()
    ):
        raise MtstError(f"{output} exists and is not an earlier export; choose an empty or new directory")
    if fmt == "onnx":
        return export_onnx(model, output, quantize)
    if fmt == "openvino":
        return export_openvino(model, output, quantize, calibration)
    return export_sentence_transformers(model, output)


class ExportEncoder:
    """The encoder of an export, as ``mtst encode``, ``similarity``, ``search`` and the server use one."""

    def __init__(self, predictor: OnnxPredictor) -> None:
        meta = predictor.meta
        self.predictor = predictor
        self.pooling: str = meta["pooling"]
        self.normalize: bool = meta["normalize"]
        self.dim: int = meta["embedding_dim"]
        self.max_length: int = meta["max_length"]
        self.reference: str = meta.get("backbone", "")
        runtime = meta.get("runtime", "onnxruntime")
        self.inference_precision = f"{meta.get('quantize') or 'fp32'} ({runtime})"

    def encode(self, texts: str | Sequence[str], batch_size: int = 32, **kwargs: Any) -> Any:
        if kwargs.get("normalize") is None:
            kwargs["normalize"] = self.normalize  # the export's setting, or what the caller set on this encoder
        return self.predictor.encode(texts, batch_size, **kwargs)

    # The torch encoder's own, which only call ``self.encode``.
    similarity = SentenceEncoder.similarity
    search = SentenceEncoder.search
