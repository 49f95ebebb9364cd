"""The end of a run: the best model's thresholds, its test scores, what it kept of the start, the summary.

The loop hands :func:`finish_run` a :class:`RunEnd` once its stages are done (the steps, or the
contrastive stage and closed-form heads for ``frozen``); it reads that record and writes only through
the run directory.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mtst.config import precision_name
from mtst.evaluate import summary_metrics
from mtst.modeling.model import MultiTaskModel
from mtst.training.planning.heads import fitted_by
from mtst.training.planning.plan import KEEP_EMBEDDING
from mtst.training.result import TrainResult, stages_run, summary
from mtst.training.runtime.rundir import peak_rss_mb
from mtst.training.stages.distill import MOVED_COSINE, end_figures, retention
from mtst.training.stages.scoring import score_test
from mtst.training.stages.thresholds import tune, tuned_tasks

if TYPE_CHECKING:
    import torch
    from rich.console import Console

    from mtst.config import TrainingSection
    from mtst.training.inputs import RunInputs
    from mtst.training.planning.plan import TrainingPlan
    from mtst.training.runtime.rundir import RunDirectory
    from mtst.training.stages.distill import KeepTexts, StartTargets
    from mtst.training.stages.stagecheck import StageVerdict
    from mtst.training.state import LoopState

logger = logging.getLogger("mtst")


@dataclass(frozen=True)
class StartOutputs:
    """The starting model's outputs, recorded before anything moves: the keep terms pull toward them and
    the end of the run measures against them."""

    targets: StartTargets
    texts: KeepTexts | None  # the same on training.keep.texts, where given


@dataclass(frozen=True)
class StagesDone:
    """What each stage of a run returned, for the end of the run (and for a caller to inspect)."""

    start: StartOutputs | None
    contrastive_losses: list[float]  # the contrastive stage's loss at each of its steps (none: no stage ran)
    verdict: StageVerdict | None  # the contrastive stage checked on validation, where it was


@dataclass(frozen=True)
class RunEnd:
    """What the stages of a run leave for its end: a record, read here and nowhere written."""

    inputs: RunInputs
    plan: TrainingPlan
    state: LoopState
    model: MultiTaskModel  # the live model (the best one, unless the steps moved its backbone)
    run_dir: RunDirectory
    accelerator: Any
    console: Console
    best_heads: dict[str, torch.Tensor] | None  # the best model's heads, while the backbone is fixed
    resumed_at: int | None  # the step a resumed run continued from (None: a fresh run)
    contrastive_steps: int  # the contrastive stage's steps (0: none ran)
    stage_verdict: StageVerdict | None  # the contrastive stage checked on validation, where it was
    targets: StartTargets | None  # the starting model's outputs, where the backbone moved
    keep_texts: KeepTexts | None  # and on training.keep.texts

    @property
    def resumed(self) -> bool:
        return self.resumed_at is not None

    @property
    def tc(self) -> TrainingSection:
        return self.inputs.config.training

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes


def finish_run(end: RunEnd) -> TrainResult:
    """Score the best model (saved by the stages) on test, measure what it kept, write the summary."""
    st, inputs, tc = end.state, end.inputs, end.tc
    end.accelerator.wait_for_everyone()
    # the best model's encoder is the live one unless the steps moved it (its old heads never train)
    reload = end.plan.backbone_moves and end.run_dir.is_main
    best = MultiTaskModel.load(end.run_dir.model_dir).to(end.accelerator.device) if reload else end.model
    best.encoder.set_inference_precision(end.model.encoder.inference_precision)
    if end.run_dir.is_main:
        tune_thresholds(end, best, reload)
    end.accelerator.wait_for_everyone()
    test = {}
    if "test" in inputs.data.splits:
        test = score_test(
            end.model,
            inputs,
            inputs.cache,
            end.run_dir.model_dir,
            end.plan.backbone_moves,
            end.best_heads,
            tc.eval_batch_size,
            end.rank,
            end.world,
            best_model=best if reload else None,
        )
    kept = retained(end, best) if end.run_dir.is_main else {}
    chosen = (e["validation"] for e in reversed(st.history) if e["step"] == st.best_step and "validation" in e)
    validation = next(chosen, {})  # the last: an undone contrastive stage adds an entry at the same step
    check = end.stage_verdict.as_record() if end.stage_verdict is not None else None
    result = TrainResult(
        end.run_dir.path,
        test,
        validation,
        st.history,
        inputs.trainable_parameters,
        sum(p.numel() for p in end.model.parameters()),
        st.train_seconds,
        st.global_step,
        tc.strategy,
        stages_of(end, best),
        kept,
        check,
    )
    precision = precision_name(end.accelerator.mixed_precision)
    record = summary(
        result,
        precision,
        st.best_step,
        st.stopped_early,
        train_rows=len(inputs.data.splits["train"]),
        peak_rss_mb=round(peak_rss_mb(), 1),
        validation=validation,
        test=summary_metrics(test, inputs.aux_tasks) if test else {},
        test_detail=test,
        retention=kept,
        **({"stage_check": check} if check is not None else {}),
    )
    end.run_dir.write_summary(record)
    logger.info("finished: %s", json.dumps(record["test"]))
    return result


def stages_of(end: RunEnd, best: MultiTaskModel) -> tuple[str, ...]:
    """What the run did, in the words the console ends with (an undone contrastive stage says so)."""
    st = end.state
    method = fitted_by(best, end.plan.head_init)
    phases = end.plan.phases(end.resumed)
    stages = stages_run(phases, end.contrastive_steps, st.global_step, st.stopped_early, end.resumed_at, method)
    if end.stage_verdict is not None and not end.stage_verdict.kept:
        stages = (*stages, "stage undone (validation)")
    return stages


def tune_thresholds(end: RunEnd, best: MultiTaskModel, reloaded: bool) -> None:
    """Multi-label heads' decision thresholds, tuned on the best model (:mod:`mtst.training.stages.thresholds`)
    and written into the saved model; the live model takes them too (the test pass may read it)."""
    if not tuned_tasks(best, end.inputs):
        return
    live = None
    if not reloaded and end.best_heads is not None:  # the best heads, swapped in for the pass
        live = {k: v.clone() for k, v in best.heads.state_dict().items()}
        best.heads.load_state_dict(end.best_heads, strict=False)
    try:
        cached = None if end.plan.backbone_moves else end.inputs.cache.train_embeddings()
        values = tune(best, end.inputs, end.plan.closed_form_heads, cached, end.tc.seed, end.tc.eval_batch_size)
    finally:
        if live is not None:
            best.heads.load_state_dict(live)
    for model in {id(best): best, id(end.model): end.model}.values():
        for task, cut in values.items():
            model.tasks[task] = model.tasks[task].model_copy(update={"thresholds": cut})
    MultiTaskModel.write_task_specs(end.run_dir.model_dir, {t: best.tasks[t] for t in values})


def retained(end: RunEnd, best: MultiTaskModel) -> dict[str, Any]:
    """What the best model kept of the start (:func:`mtst.training.stages.distill.retention`), with a note where the
    sentence embedding moved."""
    inputs, tc = end.inputs, end.tc
    after = end_figures(best, inputs, tc.eval_batch_size)
    keep = end.plan.keep
    cached = None if end.plan.backbone_moves else inputs.cache.train_embeddings()  # the end encoder's, if held
    kept = retention(best, inputs.ids["train"], end.targets, keep, tc.eval_batch_size, after, cached, end.keep_texts)
    logger.info("retention: %s", json.dumps(kept))
    cosine = kept["embedding"]["cosine"]
    if keep.moves and keep.embedding == 0 and cosine < MOVED_COSINE:
        note = (
            f"the sentence embedding moved (cosine {cosine:.2f} to its start): encode, search and similarity "
            f"now rank texts differently; training.keep.embedding: {KEEP_EMBEDDING} holds it, at some cost in "
            "accuracy (docs/keep.md)"
        )
        logger.warning(note)
        end.console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    return kept
