"""The end of a run: the best model's thresholds, its test scores, what it kept of the start, the summary.

:meth:`TrainingLoop.finish <mtst.training.loop.TrainingLoop.finish>` calls :func:`finish_run` once the
steps are done (or the contrastive stage and closed-form heads are, for ``frozen``); it reads the loop's
state and writes only through the run directory.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from mtst.config import precision_name
from mtst.evaluate import summary_metrics
from mtst.modeling.model import MultiTaskModel
from mtst.modeling.tasktypes import fit_method
from mtst.training.keep import MOVED_COSINE, end_figures, retention
from mtst.training.plan import KEEP_EMBEDDING
from mtst.training.result import TrainResult, stages_run, summary
from mtst.training.rundir import peak_rss_mb
from mtst.training.scoring import score_test
from mtst.training.thresholds import tune, tuned_tasks

if TYPE_CHECKING:
    from mtst.training.loop import TrainingLoop

logger = logging.getLogger("mtst")


def finish_run(loop: TrainingLoop) -> TrainResult:
    """Save the model where no validation chose one, score the best model on test, write the summary."""
    st, inputs, tc = loop.state, loop.inputs, loop.tc
    if "validation" not in inputs.data.splits or not loop.run_dir.model_dir.exists():
        loop.save_model()
    loop.accelerator.wait_for_everyone()
    # the best model's encoder is the live one unless the steps moved it (its old heads never train)
    reload = loop.plan.backbone_moves and loop.run_dir.is_main
    best = MultiTaskModel.load(loop.run_dir.model_dir).to(loop.accelerator.device) if reload else loop.model
    best.encoder.set_inference_precision(loop.model.encoder.inference_precision)
    if loop.run_dir.is_main:
        tune_thresholds(loop, best, reload)
    loop.accelerator.wait_for_everyone()
    test = {}
    if "test" in inputs.data.splits:
        test = score_test(
            loop.model,
            inputs,
            inputs.cache,
            loop.run_dir.model_dir,
            loop.plan.backbone_moves,
            loop.best_heads,
            tc.eval_batch_size,
            loop.rank,
            loop.world,
            best_model=best if reload else None,
        )
    kept = retained(loop, best) if loop.run_dir.is_main else {}
    chosen = (e["validation"] for e in reversed(st.history) if e["step"] == st.best_step and "validation" in e)
    validation = next(chosen, {})  # the last: an undone contrastive stage adds an entry at the same step
    phases = loop.plan.phases(loop.resumed)
    fitted = loop.plan.head_init or best.prediction_tasks
    method = fit_method([best.tasks[t].type for t in fitted if t in best.tasks])
    stages = stages_run(phases, len(loop.contrastive_losses), st.global_step, st.stopped_early, loop.resumed_at, method)
    check = loop.stage_verdict.as_record() if loop.stage_verdict is not None else None
    if check is not None and not check["kept"]:
        stages = (*stages, "stage undone (validation)")
    result = TrainResult(
        loop.run_dir.path,
        test,
        validation,
        st.history,
        inputs.trainable_parameters,
        sum(p.numel() for p in loop.model.parameters()),
        st.train_seconds,
        st.global_step,
        tc.strategy,
        stages,
        kept,
        check,
    )
    precision = precision_name(loop.accelerator.mixed_precision)
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
    loop.run_dir.write_summary(record)
    logger.info("finished: %s", json.dumps(record["test"]))
    return result


def tune_thresholds(loop: TrainingLoop, best: MultiTaskModel, reloaded: bool) -> None:
    """Multi-label heads' decision thresholds, tuned on the best model (:mod:`mtst.training.thresholds`)
    and written into the saved model; the live model takes them too (the test pass may read it)."""
    if not tuned_tasks(best, loop.inputs):
        return
    live = None
    if not reloaded and loop.best_heads is not None:  # the best heads, swapped in for the pass
        live = {k: v.clone() for k, v in best.heads.state_dict().items()}
        best.heads.load_state_dict(loop.best_heads, strict=False)
    try:
        cached = None if loop.plan.backbone_moves else loop.inputs.cache.train_embeddings()
        values = tune(best, loop.inputs, loop.plan.closed_form_heads, cached, loop.tc.seed, loop.tc.eval_batch_size)
    finally:
        if live is not None:
            best.heads.load_state_dict(live)
    for model in {id(best): best, id(loop.model): loop.model}.values():
        for task, cut in values.items():
            model.tasks[task] = model.tasks[task].model_copy(update={"thresholds": cut})
    MultiTaskModel.write_task_specs(loop.run_dir.model_dir, {t: best.tasks[t] for t in values})


def retained(loop: TrainingLoop, best: MultiTaskModel) -> dict[str, Any]:
    """What the best model kept of the start (:func:`mtst.training.keep.retention`), with a note where the
    sentence embedding moved."""
    inputs, tc = loop.inputs, loop.tc
    after = end_figures(best, inputs, tc.eval_batch_size)
    keep = loop.plan.keep
    cached = None if loop.plan.backbone_moves else inputs.cache.train_embeddings()  # the end encoder's, if held
    kept = retention(best, inputs.ids["train"], loop.targets, keep, tc.eval_batch_size, after, cached, loop.keep_texts)
    logger.info("retention: %s", json.dumps(kept))
    cosine = kept["embedding"]["cosine"]
    if keep.moves and keep.embedding == 0 and cosine < MOVED_COSINE:
        note = (
            f"the sentence embedding moved (cosine {cosine:.2f} to its start): encode, search and similarity "
            f"now rank texts differently; training.keep.embedding: {KEEP_EMBEDDING} holds it, at some cost in "
            "accuracy (docs/keep.md)"
        )
        logger.warning(note)
        loop.console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    return kept
