"""The training loop: :meth:`TrainingLoop.fit` runs a :class:`TrainingPlan`'s stages in run order (each a
function of :mod:`mtst.training.stages` that returns what it did), the supervised steps, then the end of the
run (:mod:`~mtst.training.finish`), and tells callbacks; the run directory only writes.

Deterministic from the seed: batch order comes from a per-epoch generator and dropout from the torch RNG
saved in each checkpoint, so a resumed run ends where an uninterrupted one would.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mtst.errors import TrainingError
from mtst.evaluate import summary_metrics
from mtst.report import progress_bar
from mtst.training.finish import RunEnd, StagesDone, StartOutputs, finish_run
from mtst.training.planning.freezing import apply_trainable, set_train_mode
from mtst.training.planning.plan import trains_backbone
from mtst.training.result import TrainResult
from mtst.training.runtime.batches import epoch_batches, masked_lm_terms
from mtst.training.runtime.optim import GroupScheduler, all_reduce_gradients, build_optimizer
from mtst.training.stages.contrastive import run_contrastive
from mtst.training.stages.distill import end_figures, keep_loss, keep_texts, start_targets
from mtst.training.stages.headfit import WARM_START_ROWS, fit_closed_form, fit_heads, warm_start_c
from mtst.training.stages.model_init import starting_model
from mtst.training.stages.scoring import score_validation
from mtst.training.stages.selection import judge
from mtst.training.stages.stagecheck import Baseline, StageVerdict, fit_baseline, judge_stage, stage_checked
from mtst.training.state import Callback, LoopState, StepEvent, TrainingInterrupted, as_callbacks, interrupted

if TYPE_CHECKING:
    from rich.console import Console

    from mtst.training.inputs import RunInputs
    from mtst.training.planning.plan import TrainingPlan
    from mtst.training.runtime.rundir import RunDirectory, RunLock

logger = logging.getLogger("mtst")


class TrainingLoop:
    """Runs the plan on the inputs: optimizer, schedule, stage changes, caches, checkpoints."""

    def __init__(
        self,
        inputs: RunInputs,
        plan: TrainingPlan,
        accelerator: Any,
        run_dir: RunDirectory,
        console: Console,
        callbacks: Sequence[Callback | Callable[[StepEvent], None]] = (),
        show_progress: bool = True,
    ) -> None:
        self.inputs, self.plan, self.accelerator, self.run_dir = inputs, plan, accelerator, run_dir
        self.console = console
        self.tc = inputs.config.training
        self.model = inputs.model
        self.callbacks = as_callbacks(callbacks)
        self.show_progress = show_progress
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.state = LoopState()
        self.groups = plan.groups_at(0)
        apply_trainable(self.model, self.groups)
        self.optimizer: Any = None
        self.scheduler: GroupScheduler | None = None
        if not plan.closed_form:
            optimizer = build_optimizer(self.model, sorted(inputs.step_params), plan.group_lrs, self.tc.weight_decay)
            self.scheduler = GroupScheduler(
                optimizer, self.tc.schedule, plan.total_steps, plan.warmup_steps, self.tc.cycle_steps
            )
            self.optimizer = accelerator.prepare_optimizer(optimizer)
        self.setup_seconds = 0.0
        self.resumed_at: int | None = None  # the step a resumed run continued from (None: a fresh run)
        self.last_checkpoint: int | None = None  # the step of the newest checkpoint on disk
        self.lock: RunLock | None = None  # the run directory's, released when fit() ends
        self.best_heads: dict[str, torch.Tensor] | None = None  # the best model's heads, while the backbone is fixed
        self.running: str | None = None  # the stage under way (what an interruption message names)
        self.stages_done: StagesDone | None = None  # what the stages returned, once the run has them all
        self._params_key: frozenset[str] | None = None
        self._params: list[torch.nn.Parameter] = []

    # ----------------------------------------------------------------- events
    def _fire(self, hook: str, loss: float | None = None, evaluation: dict | None = None) -> None:
        """Call ``hook`` on every callback (the event is built only when someone listens)."""
        if not self.callbacks:
            return
        cache = self.inputs.cache
        boundary = cache.prefix.boundary if cache.prefix is not None else None
        event = StepEvent(self.state, self.model, self.plan, loss, evaluation, cache.mode, boundary)
        for callback in self.callbacks:
            getattr(callback, hook)(event)

    # ------------------------------------------------------------------ stages
    def set_stage(self, stage: int) -> None:
        """Make the trainable set that of ``stage`` (newly unfrozen groups warm up from here)."""
        new = set(self.plan.stages[stage])
        added = new - self.groups
        self.groups = new
        self.state.stage = stage
        apply_trainable(self.model, new)
        self.refresh_cache()
        if self.scheduler is not None:
            for group in sorted(added):
                self.scheduler.start_group(group)
        if added:
            logger.info("step %d: stage %d adds %s", self.state.global_step, stage, sorted(added))

    def refresh_cache(self) -> None:
        self.inputs.cache.refresh(self.groups)
        set_train_mode(self.model, self.groups)

    # -------------------------------------------------------------------- run
    def resume(self) -> None:
        saved = self.run_dir.load_checkpoint(self.model, self.optimizer)
        self.scheduler.load_state_dict(saved.pop("scheduler"))
        self.state = LoopState(**saved)
        self.groups = set(self.plan.stages[self.state.stage])
        apply_trainable(self.model, self.groups)
        self.run_dir.write_history(self.state.history)
        self.resumed_at = self.last_checkpoint = self.state.global_step  # the checkpoint holds what earlier stages did
        logger.info("resumed at step %d (epoch %d)", self.state.global_step, self.state.epoch)

    def fit(self) -> TrainResult:
        """The run, stage by stage in run order, each taking what it needs and returning what it did: the
        starting model's outputs (where the backbone will move), the contrastive stage, heads fitted, the
        supervised steps (``frozen``: its closed-form fit instead), then the end of the run. A resumed run
        starts at the steps: its checkpoint holds what the stages before them did. The run directory is
        given up at the end, however the run ends."""
        try:
            started = time.perf_counter() - self.state.train_seconds - self.setup_seconds
            self._fire("on_train_begin")
            try:
                start = self.record_start() if self.plan.keep.moves else None
                losses, baseline = self.contrastive_stage(start) if self.contrastive_pending else ([], None)
                if self.plan.head_init and not self.resumed:
                    self.warm_start_heads()
                verdict = None  # the contrastive stage checked on validation (closed-form heads only)
                if self.plan.closed_form:
                    verdict = self.closed_form_heads(baseline)
                else:
                    self.steps(started, start)
                del baseline  # its copy of the encoder is not kept to the end of the run
            except TrainingError as exc:
                logger.error("%s", exc)
                raise
            self.state.train_seconds = time.perf_counter() - started
            self._fire("on_train_end")
            self.stages_done = StagesDone(start, losses, verdict)
            return self.finish(self.stages_done)
        except KeyboardInterrupt:
            at = "the contrastive stage" if self.running == "contrastive" else None
            message = interrupted(self.run_dir.path, self.state, self.plan.total_steps, at, self.last_checkpoint)
            logger.warning("%s", message)
            raise TrainingInterrupted(message) from None
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None

    @property
    def resumed(self) -> bool:
        return self.resumed_at is not None

    @property
    def contrastive_pending(self) -> bool:
        return self.plan.contrastive is not None and not self.resumed

    def record_start(self) -> StartOutputs:
        """The starting model's outputs on the training texts (:func:`start_targets`) and its STS and
        carried-task figures, before anything moves; a resumed run reads them from the starting model."""
        inputs, tc = self.inputs, self.tc
        teacher = self.model
        if self.resumed:
            teacher = starting_model(inputs).to(self.accelerator.device)
            teacher.encoder.set_inference_precision(self.model.encoder.inference_precision)
        targets = start_targets(teacher, inputs.ids["train"], self.plan.keep, tc.seed, tc.eval_batch_size)
        texts = inputs.keep_ids if self.plan.keep.texts else []
        held = keep_texts(teacher, texts, self.plan.keep, tc.seed, tc.eval_batch_size)
        targets.before = end_figures(teacher, inputs, tc.eval_batch_size) if self.rank == 0 else {}
        logger.info("%s", self.plan.keep.describe())
        return StartOutputs(targets, held)

    def keep_term(self, feats: dict[str, Any], rows: np.ndarray, start: StartOutputs | None) -> torch.Tensor | None:
        """The keep terms of a batch (:func:`keep_loss`) toward the starting model's outputs; None where the
        plan holds nothing."""
        if start is None or not self.plan.keep.has_terms:
            return None
        term = keep_loss(self.model, feats, rows, start.targets, self.plan.keep)
        extra = start.texts.loss(self.model, len(rows), self.plan.keep) if start.texts is not None else None
        return term if extra is None else extra if term is None else term + extra

    def contrastive_stage(self, start: StartOutputs | None) -> tuple[list[float], Baseline | None]:
        """The contrastive stage (:func:`run_contrastive`), then the supervised plan's trainable set and cache:
        its loss at each step, and, where the stage is checked, heads fitted on the encoder before it
        (:mod:`.stagecheck`)."""
        inputs = self.inputs
        self.running = "contrastive"
        baseline = None
        if stage_checked(self.inputs, self.plan, self.world, self.resumed):
            baseline = fit_baseline(self.model, self.inputs, self.plan.closed_form_heads)
        progress = progress_bar(self.console, not self.show_progress, "loss {task.fields[loss]}")
        losses = run_contrastive(
            self.model,
            inputs.data.splits["train"],
            inputs.batcher,
            inputs.cache,
            self.plan.contrastive,
            self.tc.seed,
            self.accelerator,
            progress,
            keep=lambda feats, rows: self.keep_term(feats, rows, start),
        )
        apply_trainable(self.model, self.groups)
        self.refresh_cache()
        self.running = None
        return losses, baseline

    def closed_form_heads(self, baseline: Baseline | None) -> StageVerdict | None:
        """``frozen``: the heads fitted once (:func:`fit_closed_form`), scored, and the model kept (or, where
        the contrastive stage was checked against ``baseline`` and lost, the model before it)."""
        tc, train = self.tc, self.inputs.data.splits["train"]
        emb = self.inputs.cache.train_embeddings()
        fit_closed_form(self.model, train, tc.seed, emb, tc.eval_batch_size, self.plan.closed_form_heads)
        self.evaluate([])
        verdict = self.check_stage(baseline) if baseline is not None else None
        if "validation" not in self.inputs.data.splits:
            self.save_model()
        return verdict

    def check_stage(self, baseline: Baseline) -> StageVerdict:
        """Keep the tuned model, or put the one before the stage back where it scored higher on validation."""
        st = self.state
        verdict = judge_stage(baseline, self.model, self.inputs)
        self.console.print(verdict.describe(), markup=False)
        if verdict.kept:
            return verdict
        self.inputs.cache.invalidate()  # it holds the tuned encoder's embeddings
        st.best = None  # the model before the stage is the run's, whatever its score
        if len(baseline.rows) < len(self.inputs.data.splits["validation"]):
            self.evaluate([])  # the check compared a sample of the rows: the whole split is scored
        else:
            entry = {"step": st.global_step, "epoch": 0.0, "train_loss": None, "lr": 0.0}
            judge(st, baseline.figures[self.tc.metric], None, self.tc.metric)
            st.history.append({**entry, "validation": baseline.figures})
            self.save_model()
        st.history[-1]["stage_undone"] = True
        self.run_dir.write_history(st.history)
        return verdict

    def warm_start_heads(self) -> None:
        """Linear heads start at the logistic-regression optimum for the encoder as it stands
        (after a contrastive stage), fitted on a sample of the training rows; the strength is
        cross-validated for a model's only task and fixed beside others (:func:`warm_start_c`)."""
        emb = self.inputs.cache.train_embeddings()
        train = self.inputs.data.splits["train"]
        tc, tasks = self.tc, self.plan.head_init
        c = warm_start_c(len(self.inputs.config.tasks))
        fit_heads(self.model, train, tc.seed, emb, WARM_START_ROWS, tc.eval_batch_size, tasks, c)
        set_train_mode(self.model, self.groups)

    def steps(self, started: float, start: StartOutputs | None) -> None:
        """The supervised steps until the budget or early stopping, evaluating and checkpointing as they go
        (the keep terms pull toward ``start``, where it was recorded)."""
        tc, st, plan = self.tc, self.state, self.plan
        progress = progress_bar(self.console, not self.show_progress, "loss {task.fields[loss]}")
        bar = progress.add_task("training", total=plan.total_steps, completed=st.global_step, loss="-")
        running: list[float] = []
        train = self.inputs.data.splits["train"]
        with progress:
            while st.global_step < plan.total_steps and not st.stopped_early:
                rng = np.random.default_rng([tc.seed, st.epoch])
                batches = epoch_batches(
                    train, self.inputs.lengths, tc.batch_size, rng, tc.batching, tc.sampling, tc.temperature
                )
                set_train_mode(self.model, self.groups)
                b = st.batch_in_epoch  # local: ending the epoch resets the state's position, not this pass
                while b < len(batches) and st.global_step < plan.total_steps:
                    stage = plan.stage_at(st.global_step)
                    if stage != st.stage:
                        self.set_stage(stage)
                    micro = batches[b : b + tc.grad_accumulation]
                    loss = self._optimizer_step(micro, start)
                    b += len(micro)
                    st.batch_in_epoch = b
                    st.global_step += 1
                    running.append(loss)
                    progress.update(bar, completed=st.global_step, loss=f"{np.mean(running[-20:]):.4f}")
                    if tc.eval_every and st.global_step % tc.eval_every == 0:
                        self.evaluate(running)
                        running = []
                    if tc.checkpoint_every and st.global_step % tc.checkpoint_every == 0:
                        self.checkpoint(started)
                    if b >= len(batches):
                        self._end_epoch(running, started)
                        running = []
                    self._fire("on_step_end", loss=loss)
                    if st.stopped_early:
                        break
            if not st.history or st.history[-1]["step"] != st.global_step:
                self.evaluate(running)
                self.checkpoint(started)

    def _end_epoch(self, running: list[float], started: float) -> None:
        st = self.state
        st.epoch += 1
        st.batch_in_epoch = 0
        if not self.tc.eval_every or st.global_step >= self.plan.total_steps:
            self.evaluate(running)
        self.checkpoint(started)

    def evaluate(self, running: list[float]) -> None:
        """Score validation, keep the model if it is the best so far (:func:`judge` also decides when to
        stop), record the evaluation."""
        st, tc = self.state, self.tc
        entry: dict[str, Any] = {
            "step": st.global_step,
            "epoch": round(st.global_step / self.plan.steps_per_epoch, 3),
            "train_loss": float(np.mean(running)) if running else None,
            "lr": max(self.scheduler.get_last_lr()) if self.scheduler else 0.0,
        }
        inputs = self.inputs
        per_task = score_validation(self.model, inputs, inputs.cache, tc.eval_batch_size, self.rank, self.world)
        set_train_mode(self.model, self.groups)
        if per_task is not None:
            flat = summary_metrics(per_task, inputs.aux_tasks)
            entry["validation"] = flat
            if judge(st, flat[tc.metric], tc.early_stopping_patience, tc.metric):
                self.save_model()
        st.history.append(entry)
        self.run_dir.write_history(st.history)
        logger.info("eval %s", json.dumps(entry))
        self._fire("on_evaluate", evaluation=entry)

    def save_model(self) -> None:
        """Write the model as it stands as the run's model (and, while the backbone is fixed, keep its
        heads in memory for the test pass)."""
        self.run_dir.save_model(self.model)
        if self.run_dir.is_main and not self.plan.backbone_moves:
            self.best_heads = {k: v.detach().clone() for k, v in self.model.heads.state_dict().items()}

    def checkpoint(self, started: float) -> None:
        self.state.train_seconds = time.perf_counter() - started
        self.run_dir.save_checkpoint(self.model, self.optimizer, self.scheduler.state_dict(), dict(self.state.__dict__))
        self.last_checkpoint = self.state.global_step

    def finish(self, done: StagesDone) -> TrainResult:
        """Save the model where no validation chose one, then score the best model on test and write the
        summary (:func:`mtst.training.finish.finish_run`, from the record of what the stages left)."""
        if "validation" not in self.inputs.data.splits or not self.run_dir.model_dir.exists():
            self.save_model()
        return finish_run(self.end(done))

    def end(self, done: StagesDone) -> RunEnd:
        """What the stages did, as a record for the end of the run."""
        return RunEnd(
            self.inputs,
            self.plan,
            self.state,
            self.model,
            self.run_dir,
            self.accelerator,
            self.console,
            self.best_heads,
            self.resumed_at,
            len(done.contrastive_losses),
            done.verdict,
            done.start.targets if done.start else None,
            done.start.texts if done.start else None,
        )

    # ------------------------------------------------------------------- step
    def _optimizer_step(self, micro: list[tuple[np.ndarray, str | None]], start: StartOutputs | None) -> float:
        total = 0.0
        for rows, task in micro:
            rows = rows[self.rank :: self.world]  # this process's share of the global batch
            if not len(rows):
                continue
            loss = self.batch_loss(rows, task, start)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"loss became {loss.item()} at step {self.state.global_step + 1} (epoch {self.state.epoch + 1}); "
                    "training stopped and nothing from this step was saved. Lower training.lr_head / lr_backbone, "
                    "or check the data."
                )
            self.accelerator.backward(loss / len(micro))
            total += loss.item() / len(micro)
        if self.world > 1:
            total = all_reduce_gradients(self._trainable_params(), total, self.world)
        # Without a gradient scaler, Accelerate's wrappers add only per-step overhead (a package
        # lookup on every step, about 0.4 ms), which a cached heads-only epoch would notice.
        scaled = self.accelerator.scaler is not None
        if self.tc.max_grad_norm:
            clip = self.accelerator.clip_grad_norm_ if scaled else torch.nn.utils.clip_grad_norm_
            clip(self._trainable_params(), self.tc.max_grad_norm)
        optimizer = self.optimizer if scaled else self.optimizer.optimizer
        optimizer.step()
        self.scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return total

    def batch_loss(self, rows: np.ndarray, task: str | None = None, start: StartOutputs | None = None) -> torch.Tensor:
        """The weighted loss of training rows (one task's, or every task's), from the cache where one applies."""
        device = self.accelerator.device
        inputs = self.inputs
        batch = inputs.batcher.inputs(rows, device) if inputs.cache.mode is None else {}
        width = batch["input_ids"].shape[1] if batch else None
        labels = inputs.batcher.labels(rows, task, device, width)
        with self.accelerator.autocast():
            feats = inputs.cache.features(rows, device)
            tasks = [task] if task else None
            feats = self.model.encoder(batch) if feats is None else feats
            second = inputs.batcher.pair_embedding(self.model.encoder, rows, device, feats["sentence_embedding"])
            if second is not None:
                feats["pair_embedding"] = second
            feats = self.model.forward_heads(feats, tasks)
            loss, _ = self.model.compute_loss(feats, labels)
            extra = None
            if inputs.mlm_tasks:  # fresh span masks every step
                rng = [self.tc.seed, self.state.global_step, int(rows[0]), len(rows)]
                specs = {t: inputs.config.tasks[t] for t in inputs.mlm_tasks}
                extra = masked_lm_terms(self.model, inputs.batcher, specs, rows, batch, rng)
            # a frozen encoder keeps everything: no keep terms
            kept = self.keep_term(feats, rows, start) if trains_backbone(self.groups) else None
        for term in (extra, kept):
            loss = loss if term is None else loss + term
        return loss

    def _trainable_params(self) -> list[torch.nn.Parameter]:
        key = frozenset(self.groups)
        if self._params_key != key:
            self._params_key = key
            self._params = [p for p in self.model.parameters() if p.requires_grad]
        return self._params
