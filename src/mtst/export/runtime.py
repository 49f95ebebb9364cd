"""Running an export without torch: :class:`OnnxPredictor` (ONNX Runtime or OpenVINO, as the export was
written) predicts and encodes as :class:`~mtst.modeling.model.MultiTaskModel` does, and
:class:`ExportEncoder` is its encoder as ``mtst encode``, ``similarity``, ``search`` and the server use one."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtst.constants import ONNX_META
from mtst.errors import MtstError
from mtst.export.onnx import ONNX_NAME, PAIRS_NAME, check_precision  # noqa: F401
from mtst.modeling import tasktypes
from mtst.modeling.encoder import SentenceEncoder, pad_batch, sorted_chunks
from mtst.modeling.predictions import Outputs, check_tasks, needs_words, predict, softmax, text_words
from mtst.texts import as_texts


class OnnxPredictor:
    """Predictions from an export directory (no torch model needed): an ONNX graph through onnxruntime, or
    the OpenVINO model of ``--format openvino`` through OpenVINO."""

    def __init__(self, directory: str | Path, threads: int | None = None) -> None:
        from mtst.standins.tokenizer import load_tokenizer

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
            from mtst.export.openvino import OPENVINO_NAME, OpenVinoSession

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
