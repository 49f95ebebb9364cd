"""The run writer: the run directory, best-model selection and the final test pass.

Only process 0 writes; every process scores (sharded evaluation gathers
predictions from all of them). The best model by the validation metric is
saved as it is found, so a run cut short still leaves its best model.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.console import Console

from mtst.config import precision_name
from mtst.evaluate import evaluate_split, score_split, summary_metrics
from mtst.modeling.model import MultiTaskModel, RowFeatures
from mtst.training.checkpoint import check_finite, load_checkpoint, save_checkpoint
from mtst.training.freezing import set_train_mode
from mtst.training.headfit import fit_heads
from mtst.training.rundir import peak_rss_mb, prepare_run_dir, write_history, write_summary

if TYPE_CHECKING:
    import logging.handlers

    from mtst.training.loop import LoopState, TrainingLoop
    from mtst.training.plan import TrainingPlan
    from mtst.training.trainer import RunInputs

logger = logging.getLogger("mtst")


@dataclass
class TrainResult:
    run_dir: Path
    test: dict[str, dict]
    validation: dict[str, float]
    history: list[dict]
    trainable_parameters: int
    total_parameters: int
    train_seconds: float
    steps: int
    strategy: str = ""  # the strategy that ran (``auto`` resolved)
    stages: tuple[str, ...] = ()  # what ran, in words: "contrastive stage 200 steps", "logistic heads", ...


class RunWriter:
    """Owns ``output_dir``: config, log, metrics, checkpoints, the best model and the summary."""

    def __init__(
        self, inputs: RunInputs, plan: TrainingPlan, accelerator: Any, console: Console, is_main: bool
    ) -> None:
        self.inputs, self.plan, self.accelerator = inputs, plan, accelerator
        self.config = inputs.config
        self.tc = inputs.config.training
        self.run_dir = Path(inputs.config.output_dir)
        self.console = console
        self.is_main = is_main
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.best_heads: dict[str, torch.Tensor] | None = None  # the best model's heads, while the backbone is fixed

    # ---------------------------------------------------------------- files
    def prepare(self, resume: bool, early_log: logging.handlers.MemoryHandler | None) -> None:
        if self.is_main:
            prepare_run_dir(self.run_dir, self.config, resume, early_log)

    def write_history(self, history: list[dict]) -> None:
        if self.is_main:
            write_history(self.run_dir, history)

    def save_checkpoint(self, model: MultiTaskModel, optimizer: Any, scheduler: dict, state: LoopState) -> None:
        if self.is_main:
            names = self.inputs.tuned
            save_checkpoint(self.run_dir, model, optimizer, scheduler, dict(state.__dict__), names)

    def load_checkpoint(self, model: MultiTaskModel, optimizer: Any) -> dict[str, Any]:
        return load_checkpoint(self.run_dir, model, optimizer)

    def save_model(self, model: MultiTaskModel) -> None:
        """Write the run's model: the kept heads, and the backbone the strategy says to keep."""
        if not self.is_main:
            return
        check_finite(model, self.inputs.tuned)  # frozen weights cannot have turned non-finite
        groups = self.plan.saved_backbone_groups
        if model.lora is not None and groups is None:  # lora.save: merged
            model = copy.deepcopy(model)
            model.merge_lora()
        model.save(self.run_dir / "model", tasks=self.inputs.saved_tasks, backbone_groups=groups)
        if not self.plan.backbone_moves:
            self.best_heads = {k: v.detach().clone() for k, v in model.heads.state_dict().items()}

    # ----------------------------------------------------------- selection
    def record_evaluation(self, loop: TrainingLoop, running: list[float]) -> dict[str, Any]:
        """Score validation, keep the model if it is the best so far, count evaluations without gain."""
        st = loop.state
        entry: dict[str, Any] = {
            "step": st.global_step,
            "epoch": round(st.global_step / self.plan.steps_per_epoch, 3),
            "train_loss": float(np.mean(running)) if running else None,
            "lr": max(loop.scheduler.get_last_lr()) if loop.scheduler else 0.0,
        }
        per_task = self.score_validation(loop)
        if per_task is not None:
            flat = summary_metrics(per_task, self.inputs.aux_tasks)
            entry["validation"] = flat
            score = flat[self.tc.metric]
            if st.best is None or score > st.best + 1e-12:
                st.best, st.best_step, st.bad_evals = score, st.global_step, 0
                self.save_model(loop.model)
            else:
                st.bad_evals += 1
                if self.tc.early_stopping_patience and st.bad_evals >= self.tc.early_stopping_patience:
                    st.stopped_early = True
                    logger.info("early stopping at step %d: no gain in %s", st.global_step, self.tc.metric)
        st.history.append(entry)
        self.write_history(st.history)
        logger.info("eval %s", json.dumps(entry))
        return entry

    def score_validation(self, loop: TrainingLoop) -> dict[str, dict] | None:
        if "validation" not in self.inputs.data.splits:
            return None
        frozen = self.inputs.frozen
        if frozen.mode == "pooled" and "validation" in frozen.pooled:
            per_task = self._score_pooled(loop.model, "validation")
        else:
            cached = frozen.validation_features(self.accelerator.device)  # the trainable layers only
            per_task = self._score(loop.model, "validation", cached)
        set_train_mode(loop.model, loop.groups)
        return per_task

    def _score(self, model: MultiTaskModel, split_name: str, features: RowFeatures | None = None) -> dict[str, dict]:
        inputs = self.inputs
        split, ids, word_ids = inputs.data.splits[split_name], inputs.ids[split_name], inputs.word_ids[split_name]
        return evaluate_split(model, split, ids, self.tc.eval_batch_size, word_ids, self.rank, self.world, features)

    def _score_pooled(self, model: MultiTaskModel, split_name: str) -> dict[str, dict]:
        model.eval()
        with torch.inference_mode():
            emb = self.inputs.frozen.embeddings(split_name).to(self.accelerator.device)
            feats = model.forward_heads({"sentence_embedding": emb})
        predictions = {task: logits.argmax(-1).cpu().numpy() for task, logits in feats["logits"].items()}
        return score_split(self.inputs.data.splits[split_name], predictions, self.inputs.data.labels)

    # ----------------------------------------------------------- closed form
    def fit_closed_form(self, loop: TrainingLoop) -> None:
        """``frozen``: no gradient step; linear heads are fitted to convergence on frozen embeddings.

        Multinomial logistic regression (L-BFGS), its strength chosen by cross-validation on the training rows.
        """
        model, frozen = loop.model, self.inputs.frozen
        model.eval()
        emb = frozen.pooled.get("train") if frozen.mode == "pooled" else None
        fitted = loop.plan.closed_form_heads
        if len(fitted) < len(model.tasks):
            logger.info("heads in training.freeze keep their weights: %s", sorted(set(model.tasks) - set(fitted)))
        fit_heads(model, self.inputs.data.splits["train"], self.tc.seed, emb, None, self.tc.eval_batch_size, fitted)
        loop.evaluate([])
        if "validation" not in self.inputs.data.splits:
            self.save_model(model)

    # ---------------------------------------------------------------- finish
    def finish(self, loop: TrainingLoop) -> TrainResult:
        """Save the model where no validation chose one, score the best model on test, write the summary."""
        st, inputs = loop.state, self.inputs
        model_dir = self.run_dir / "model"
        if "validation" not in inputs.data.splits or not model_dir.exists():
            self.save_model(loop.model)
        self.accelerator.wait_for_everyone()
        test = self._test_scores(loop, model_dir) if "test" in inputs.data.splits else {}
        validation = next((e["validation"] for e in st.history if e["step"] == st.best_step and "validation" in e), {})
        total = sum(p.numel() for p in loop.model.parameters())
        trainable = inputs.trainable_parameters
        summary = {
            "strategy": self.tc.strategy,
            "precision": precision_name(self.accelerator.mixed_precision),
            "steps": st.global_step,
            "best_step": st.best_step,
            "stopped_early": st.stopped_early,
            "train_seconds": round(st.train_seconds, 2),
            "trainable_parameters": trainable,
            "total_parameters": total,
            "train_rows": len(inputs.data.splits["train"]),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "validation": validation,
            "test": summary_metrics(test, inputs.aux_tasks) if test else {},
            "test_detail": test,
        }
        if self.is_main:
            write_summary(self.run_dir, summary)
        logger.info("finished: %s", json.dumps(summary["test"]))
        return TrainResult(
            self.run_dir,
            test,
            validation,
            st.history,
            trainable,
            total,
            st.train_seconds,
            st.global_step,
            self.tc.strategy,
            stages_run(loop),
        )

    def _test_scores(self, loop: TrainingLoop, model_dir: Path) -> dict[str, dict]:
        """The best model on test: from cached embeddings when only heads trained, else loaded from disk.

        With a fixed backbone the best model differs from the live one only in its heads, so
        those are swapped in for the pass; with ``training.cache.dir`` a repeated run encodes no test text.
        """
        started = time.perf_counter()
        if self.inputs.frozen.mode != "pooled" or self.world > 1 or self.plan.backbone_moves:
            return self._score(MultiTaskModel.load(model_dir), "test")
        # kept in memory when this process saved the best model; read back after a resume
        best = self.best_heads if self.best_heads is not None else MultiTaskModel.read_heads(model_dir)
        heads = loop.model.heads
        live = {k: v.clone() for k, v in heads.state_dict().items()}
        try:
            heads.load_state_dict(best, strict=False)
            scores = self._score_pooled(loop.model, "test")
        finally:
            heads.load_state_dict(live)
        logger.info("test scored from cached embeddings in %.2fs", time.perf_counter() - started)
        return {task: scores[task] for task in self.inputs.saved_tasks if task in scores}


def stages_run(loop: TrainingLoop) -> tuple[str, ...]:
    """What this process ran, in the words the console ends with."""
    plan, st = loop.plan, loop.state
    stages = []
    if loop.contrastive_losses:
        stages.append(f"contrastive stage {len(loop.contrastive_losses)} steps")
    if plan.head_init and not loop.resumed:
        stages.append("heads warm-started by logistic regression")
    if plan.closed_form:
        stages.append("logistic heads")
    elif loop.resumed:
        stages.append(f"steps {loop.resumed_at}-{st.global_step} (resumed)")
    else:
        stages.append(f"{st.global_step} steps" + (" (stopped early)" if st.stopped_early else ""))
    return tuple(stages)
