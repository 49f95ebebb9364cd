"""The training engine: one config in, a run directory out.

Runs on Hugging Face Accelerate (one process on a CPU; several GPUs or
machines under ``accelerate launch``). The loop is deterministic from the
seed: batch order comes from a per-epoch generator and dropout from the torch
RNG saved in each checkpoint, so a resumed run ends where an uninterrupted
one would.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from mtst.config import RunConfig, head_lr
from mtst.data import MISSING, epoch_batches, load_task_data
from mtst.errors import ConfigError, MtstError
from mtst.evaluate import evaluate_split, score_split, summary_metrics, tokenize_split
from mtst.fileio import read_safetensors
from mtst.modeling.heads import fit_ridge, head_specs
from mtst.modeling.model import IGNORE_INDEX, WEIGHTS_NAME, MultiTaskModel, RowFeatures
from mtst.report import progress_bar
from mtst.training.batches import Batcher
from mtst.training.cache import FrozenWork, PrefixCache
from mtst.training.checkpoint import check_finite, load_checkpoint, save_checkpoint
from mtst.training.freezing import (
    apply_trainable,
    check_plan,
    count_layers,
    gradual_num_stages,
    set_train_mode,
    trainable_groups,
    trainable_names,
)
from mtst.training.lora import add_lora
from mtst.training.optim import GroupScheduler, build_optimizer, step_budget
from mtst.training.rundir import buffered_log, check_run_dir, peak_rss_mb, prepare_run_dir, write_history, write_summary

logger = logging.getLogger("mtst")

Callback = Callable[["Trainer"], None]


class TrainingError(MtstError):
    """Training cannot go on (e.g. the loss stopped being finite)."""


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


@dataclass
class LoopState:
    epoch: int = 0
    batch_in_epoch: int = 0
    global_step: int = 0
    stage: int = 0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Owns one run: data, model, optimiser, loop state and the run directory."""

    def __init__(
        self,
        config: RunConfig,
        console: Console | None = None,
        callbacks: Sequence[Callback] = (),
        show_progress: bool = True,
        overwrite: bool = False,
    ) -> None:
        self.config = config
        self.overwrite = overwrite
        self.tc = config.training
        self.console = console or Console(stderr=True)
        self.callbacks = list(callbacks)
        self.show_progress = show_progress
        self.run_dir = Path(config.output_dir)
        self.state = LoopState()

    # ------------------------------------------------------------------ setup
    def setup(self, resume: bool = False) -> None:
        tc = self.tc
        from accelerate import Accelerator

        self.accelerator = Accelerator(mixed_precision=self._precision(), cpu=not torch.cuda.is_available())
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        if not self.is_main:  # one voice: only rank 0 logs, shows progress and writes files
            self.console = Console(quiet=True)
            self.show_progress = False
        # Everything that can fail runs before the run directory is touched: a failed start writes nothing.
        check_run_dir(self.run_dir, resume, self.overwrite)
        with buffered_log() as early_log:
            set_seed(tc.seed)
            self._load_inputs()
            self._plan_groups()
            self.accelerator.wait_for_everyone()  # every process has checked the run directory and its inputs
            if self.is_main:
                prepare_run_dir(self.run_dir, self.config, resume, early_log)
            self.accelerator.wait_for_everyone()
        self._build_optimizer()
        self._build_frozen_work()
        if resume:
            self._resume()
        cache_start = time.perf_counter()
        self._refresh_cache()
        self.setup_cache_seconds = time.perf_counter() - cache_start
        # Gradual unfreezing trains more as it goes: report the most that ever trains (the
        # figure a comparison of strategies needs) and say what trains at the start.
        self.trainable_at_start = sum(p.numel() for p in self.raw_model.parameters() if p.requires_grad)
        self.trainable = sum(p.numel() for n, p in self.raw_model.named_parameters() if n in self.ever_trainable)
        self.total = sum(p.numel() for p in self.raw_model.parameters())

    def _load_inputs(self) -> None:
        """Data, labels, backbone and tokenised splits (every check on the user's inputs)."""
        self.task_names = list(self.config.tasks)
        self._check_metric()
        self.data = load_task_data(self.config)
        self.model = MultiTaskModel.from_backbone(
            head_specs(self.config, self.data),
            backbone=self.config.model.backbone,
            pooling=self.config.model.pooling,
            normalize=self.config.model.normalize,
            max_length=self.config.model.max_length,
        )
        encoder = self.model.encoder
        self.ids, self.word_ids = {}, {}
        for name, split in self.data.splits.items():
            self.ids[name], self.word_ids[name] = tokenize_split(self.model, split)
        self.batcher = Batcher(
            self.data.splits["train"],
            self.ids["train"],
            self.word_ids["train"],
            encoder.pad_id,
            list(self.config.tasks),
        )
        self.mlm_tasks = [t for t, spec in self.config.tasks.items() if spec.type == "masked_lm" and spec.weight > 0]
        self.aux_tasks = [t for t, spec in self.config.tasks.items() if spec.is_auxiliary]
        self.saved_tasks = [t for t, spec in self.config.tasks.items() if spec.keeps_head]
        truncated = sum(len(x) >= encoder.max_length for ids in self.ids.values() for x in ids)
        if truncated:
            note = f"{truncated} text(s) reach max_length={encoder.max_length} tokens and were truncated"
            logger.info(note)
            self.console.print(f"note: {note} (model.max_length raises the limit)")
        self.lengths = [len(x) for x in self.ids["train"]]

    def _plan_groups(self) -> None:
        """What trains at each stage, the step budget, and LoRA adapters where asked."""
        tc = self.tc
        self.num_layers = count_layers(n for n, _ in self.model.named_parameters())
        if tc.strategy == "lora":
            add_lora(self.model.encoder.backbone, tc.lora, self.num_layers)
        names = [n for n, _ in self.model.named_parameters()]
        self.stage_length = self._stage_length()
        self.n_stages = gradual_num_stages(self.num_layers, tc.gradual.layers_per_stage, tc.gradual.include_embeddings)
        self.groups = self._groups_at(0)
        for warning in check_plan(tc.strategy, self.groups, self.task_names):
            logger.warning(warning)
            self.console.print(f"[yellow]warning:[/yellow] {warning}")
        self.total_steps = self._total_steps()
        # Gradual unfreezing: the groups of every stage this run reaches (not the ones it never gets to).
        last_stage = min((self.total_steps - 1) // self.stage_length, self.n_stages - 1)
        ever = (
            set().union(*(self._groups_at(s) for s in range(last_stage + 1)))
            if tc.strategy == "gradual"
            else self.groups
        )
        apply_trainable(self.model, self.groups)
        self.ever_trainable = trainable_names(names, ever)
        if tc.strategy == "lora":
            saved = sorted(g for g in ever if g != "lora" and not g.startswith("heads."))
            self.model.lora = {**tc.lora.model_dump(), "saved_groups": saved}

    def _build_optimizer(self) -> None:
        tc = self.tc
        # No DDP wrapper: gradients are averaged across processes after backward (_sync_gradients),
        # which works the same for the plain, cached and masked-LM forward paths.
        self.model = self.model.to(self.accelerator.device)
        self.optimizer: Any = None
        self.scheduler: GroupScheduler | None = None
        if tc.strategy != "frozen":
            optimizer = build_optimizer(
                self.model,
                sorted(self.ever_trainable),
                tc.lr_backbone,
                head_lr(tc),
                tc.layer_decay,
                tc.weight_decay,
                self.num_layers,
                tc.lora.lr,
            )
            self.scheduler = GroupScheduler(
                optimizer, tc.schedule, self.total_steps, int(tc.warmup_ratio * self.total_steps), tc.cycle_steps
            )
            self.optimizer = self.accelerator.prepare_optimizer(optimizer)

    def _build_frozen_work(self) -> None:
        tc = self.tc
        token_tasks = [t for t, spec in self.raw_model.tasks.items() if spec.type == "token_classification"]
        self.frozen = FrozenWork(
            self.raw_model.encoder,
            self.ids,
            {name: split.texts for name, split in self.data.splits.items()},
            self.num_layers,
            tc.eval_batch_size,
            tc.cache_memory_mb,
            self.run_dir / "cache" / (f"rank{self.rank}" if self.world > 1 else ""),
            store_dir=Path(tc.cache_dir) if tc.cache_dir else None,
            enabled=tc.cache and not token_tasks and not self.mlm_tasks,
            note=self.console.print,
            cache_validation=self.world == 1,  # sharded evaluation runs the whole encoder
        )

    @property
    def raw_model(self) -> MultiTaskModel:
        """The model without its distributed wrapper (unwrapped once: unwrapping walks every module)."""
        if getattr(self, "_raw_model", None) is None:
            self._raw_model = self.accelerator.unwrap_model(self.model)
        return self._raw_model

    def _check_metric(self) -> None:
        allowed = ["mean_macro_f1", "mean_accuracy"]
        for name, task in self.config.tasks.items():
            if task.type == "classification":
                allowed += [f"{name}/macro_f1", f"{name}/accuracy"]
            elif task.type == "token_classification":
                allowed += [f"{name}/{m}" for m in ("f1", "precision", "recall", "accuracy")]
        if self.tc.metric not in allowed:
            raise ConfigError(f"training.metric: {self.tc.metric!r} is not one of: {', '.join(allowed)}")

    def _precision(self) -> str:
        wanted = self.tc.precision
        if wanted == "auto":
            return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
        if wanted == "fp16" and not torch.cuda.is_available():
            raise ConfigError("training.precision: fp16 needs a CUDA device; use bf16 or fp32 on a CPU")
        return {"fp32": "no"}.get(wanted, wanted)

    def _batches_per_epoch(self) -> int:
        train = self.data.splits["train"]
        labelled = int(np.any(np.stack([v != MISSING for v in train.labels.values()]), axis=0).sum())
        return max(1, -(-labelled // self.tc.batch_size))

    def _steps_per_epoch(self) -> int:
        return max(1, -(-self._batches_per_epoch() // self.tc.grad_accumulation))

    def _total_steps(self) -> int:
        tc = self.tc
        return step_budget(self._steps_per_epoch(), tc.epochs, tc.max_steps, tc.min_steps)

    def _stage_length(self) -> int:
        g = self.tc.gradual
        if g.stage_steps:
            return g.stage_steps
        return max(1, round((g.stage_epochs or 1.0) * self._steps_per_epoch()))

    def _groups_at(self, stage: int) -> set[str]:
        tc = self.tc
        return trainable_groups(
            tc.strategy,
            self.num_layers,
            self.task_names,
            tc.lora.full_top_k if tc.strategy == "lora" else tc.top_k,
            tc.freeze,
            stage,
            tc.gradual.layers_per_stage,
            tc.gradual.include_embeddings,
        )

    # ------------------------------------------------------------------- loop
    def _update_stage(self) -> None:
        if self.tc.strategy != "gradual":
            return
        stage = min(self.state.global_step // self.stage_length, self.n_stages - 1)
        if stage == self.state.stage:  # groups already match: set at setup, resume or the last change
            return
        new = self._groups_at(stage)
        added = new - self.groups
        self.groups = new
        self.state.stage = stage
        apply_trainable(self.raw_model, new)
        set_train_mode(self.model, new)
        self._refresh_cache()
        for group in sorted(added):
            self.scheduler.start_group(group)
        if added:
            logger.info("step %d: gradual unfreezing stage %d adds %s", self.state.global_step, stage, sorted(added))

    def _collate(self, rows: np.ndarray, task: str | None) -> tuple[dict, dict[str, torch.Tensor]]:
        device = self.accelerator.device
        batch = self.batcher.inputs(rows, device) if self.cache_mode is None else {}
        width = batch["input_ids"].shape[1] if batch else None
        return batch, self.batcher.labels(rows, task, device, width)

    def _mlm_loss(self, rows: np.ndarray, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Weighted masked-LM losses of the batch's texts (fresh span masks every step)."""
        total = None
        model = self.raw_model
        for task in self.mlm_tasks:
            spec = self.config.tasks[task]
            rng = np.random.default_rng([self.tc.seed, self.state.global_step, int(rows[0]), len(rows)])
            inputs, labels = self.batcher.masked(rows, batch, rng, model.encoder.tokenizer, spec)
            if not bool((labels != IGNORE_INDEX).any()):
                continue
            loss = model.masked_lm_loss(task, inputs, labels)
            total = loss * spec.weight if total is None else total + loss * spec.weight
        return total

    def fit(self) -> TrainResult:
        """Train until the step budget or early stopping, then test the best model."""
        tc = self.tc
        self._print_plan()
        # The one-off cache build counts as training time: it is the price of the cheap epochs.
        started = time.perf_counter() - self.state.train_seconds - self.setup_cache_seconds
        try:
            if tc.strategy == "frozen":
                self._fit_closed_form()
            else:
                self._loop(started)
        except TrainingError as exc:
            logger.error("%s", exc)
            raise
        self.state.train_seconds = time.perf_counter() - started
        return self._finish()

    def _loop(self, started: float) -> None:
        tc, st = self.tc, self.state
        progress = self._progress()
        task_id = progress.add_task("training", total=self.total_steps, completed=st.global_step, loss=float("nan"))
        running: list[float] = []
        with progress:
            while st.global_step < self.total_steps and not st.stopped_early:
                rng = np.random.default_rng([tc.seed, st.epoch])
                batches = epoch_batches(
                    self.data.splits["train"],
                    self.lengths,
                    tc.batch_size,
                    rng,
                    tc.batching,
                    tc.sampling,
                    tc.temperature,
                )
                set_train_mode(self.model, self.groups)
                b = st.batch_in_epoch
                while b < len(batches) and st.global_step < self.total_steps:
                    self._update_stage()
                    micro = batches[b : b + tc.grad_accumulation]
                    loss_value = self._optimizer_step(micro)
                    b += len(micro)
                    st.batch_in_epoch = b
                    st.global_step += 1
                    running.append(loss_value)
                    self.last_loss = loss_value
                    progress.update(task_id, completed=st.global_step, loss=float(np.mean(running[-20:])))
                    if tc.eval_every and st.global_step % tc.eval_every == 0:
                        self._evaluate_and_select(running)
                        running = []
                    if tc.checkpoint_every and st.global_step % tc.checkpoint_every == 0:
                        self._checkpoint(started)
                    if b >= len(batches):
                        self._end_epoch(running, started)
                        running = []
                    for callback in self.callbacks:
                        callback(self)
                    if st.stopped_early:
                        break
            if not st.history or st.history[-1]["step"] != st.global_step:
                self._evaluate_and_select(running)
                self._checkpoint(started)

    def _end_epoch(self, running: list[float], started: float) -> None:
        st = self.state
        st.epoch += 1
        st.batch_in_epoch = 0
        if not self.tc.eval_every or st.global_step >= self.total_steps:
            self._evaluate_and_select(running)
        self._checkpoint(started)

    def _optimizer_step(self, micro: list[tuple[np.ndarray, str | None]]) -> float:
        total = 0.0
        for rows, task in micro:
            rows = rows[self.rank :: self.world]  # this process's share of the global batch
            if not len(rows):
                continue
            batch, labels = self._collate(rows, task)
            with self.accelerator.autocast():
                feats = self._forward(rows, batch, [task] if task else None)
                loss, _ = self.raw_model.compute_loss(feats, labels)
                if self.mlm_tasks:
                    extra = self._mlm_loss(rows, batch)
                    loss = loss if extra is None else loss + extra
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"loss became {loss.item()} at step {self.state.global_step + 1} (epoch {self.state.epoch + 1}); "
                    "training stopped and nothing from this step was saved. Lower training.lr_head / lr_backbone, "
                    "or check the data."
                )
            self.accelerator.backward(loss / len(micro))
            total += loss.item() / len(micro)
        if self.world > 1:
            total = self._sync_gradients(total)
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

    def _sync_gradients(self, loss: float) -> float:
        """Average trainable gradients (and the loss) over processes in one all-reduce."""
        params = self._trainable_params()
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params] + [torch.tensor([loss], device=params[0].device)])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
            offset += p.numel()
        return float(flat[-1])

    # ---------------------------------------------------------------- caches
    @property
    def cache_mode(self) -> str | None:
        """``pooled``, ``prefix`` or None: which cache of frozen work the steps start from."""
        return self.frozen.mode

    @property
    def prefix(self) -> PrefixCache | None:
        return self.frozen.prefix

    def _refresh_cache(self) -> None:
        self.frozen.refresh(self.groups)
        set_train_mode(self.model, self.groups)

    def _forward(self, rows: np.ndarray, batch: dict, tasks: list[str] | None) -> dict[str, Any]:
        """Forward pass, starting from the cache where one applies."""
        feats = self.frozen.features(rows, self.accelerator.device)
        if feats is None:
            return self.model(batch, tasks=tasks)
        return self.raw_model.forward_heads(feats, tasks)

    def _trainable_params(self) -> list[torch.nn.Parameter]:
        key = frozenset(self.groups)
        if getattr(self, "_params_key", None) != key:
            self._params_key = key
            self._params = [p for p in self.raw_model.parameters() if p.requires_grad]
        return self._params

    def _progress(self) -> Any:
        return progress_bar(self.console, not self.show_progress, "loss {task.fields[loss]:.4f}")

    # ------------------------------------------------------------ evaluation
    def _evaluate_and_select(self, running: list[float]) -> None:
        st = self.state
        entry: dict[str, Any] = {
            "step": st.global_step,
            "epoch": round(st.global_step / self._steps_per_epoch(), 3),
            "train_loss": float(np.mean(running)) if running else None,
            "lr": max(self.scheduler.get_last_lr()) if self.scheduler else 0.0,
        }
        per_task = self._evaluate_validation()
        if per_task is not None:
            flat = summary_metrics(per_task, self.aux_tasks)
            entry["validation"] = flat
            score = flat[self.tc.metric]
            if st.best is None or score > st.best + 1e-12:
                st.best, st.best_step, st.bad_evals = score, st.global_step, 0
                if self.is_main:
                    self._save_model()
            else:
                st.bad_evals += 1
                if self.tc.early_stopping_patience and st.bad_evals >= self.tc.early_stopping_patience:
                    st.stopped_early = True
                    logger.info("early stopping at step %d: no gain in %s", st.global_step, self.tc.metric)
        st.history.append(entry)
        self._write_history()
        logger.info("eval %s", json.dumps(entry))

    def _evaluate_validation(self) -> dict[str, dict] | None:
        if "validation" not in self.data.splits:
            return None
        if self.cache_mode == "pooled" and "validation" in self.frozen.pooled:
            return self._evaluate_pooled("validation")
        cached = self.frozen.validation_features(self.accelerator.device)  # the trainable layers only
        per_task = self._evaluate(self.raw_model, "validation", cached)
        set_train_mode(self.model, self.groups)
        return per_task

    def _evaluate(self, model: MultiTaskModel, split_name: str, features: RowFeatures | None = None) -> dict[str, dict]:
        split, ids, word_ids = self.data.splits[split_name], self.ids[split_name], self.word_ids[split_name]
        return evaluate_split(model, split, ids, self.tc.eval_batch_size, word_ids, self.rank, self.world, features)

    def _evaluate_pooled(self, split_name: str) -> dict[str, dict]:
        model = self.raw_model
        model.eval()
        with torch.inference_mode():
            emb = self.frozen.embeddings(split_name).to(self.accelerator.device)
            feats = model.forward_heads({"sentence_embedding": emb})
        set_train_mode(self.model, self.groups)
        predictions = {task: logits.argmax(-1).cpu().numpy() for task, logits in feats["logits"].items()}
        return score_split(self.data.splits[split_name], predictions, self.data.labels)

    def _evaluate_test_pooled(self, model_dir: Path) -> dict[str, dict] | None:
        """Test scores from cached embeddings when the backbone never trained (None otherwise).

        The best model then differs from the live one only in its heads, so those are read
        from the saved weights; with ``cache_dir`` a repeated run encodes no test text at all.
        """
        backbone_trained = any(not n.startswith("heads.") for n in self.ever_trainable)
        if self.cache_mode != "pooled" or self.world > 1 or backbone_trained:
            return None
        heads = self.raw_model.heads
        live = {k: v.clone() for k, v in heads.state_dict().items()}
        saved, _ = read_safetensors(model_dir / WEIGHTS_NAME, "model weights")
        best = {k.removeprefix("heads."): v for k, v in saved.items() if k.startswith("heads.")}
        try:
            heads.load_state_dict(best, strict=False)
            scores = self._evaluate_pooled("test")
        finally:
            heads.load_state_dict(live)
        return {task: scores[task] for task in self.saved_tasks if task in scores}

    def _write_history(self) -> None:
        if self.is_main:
            write_history(self.run_dir, self.state.history)

    def _fit_closed_form(self) -> None:
        """``frozen``: no gradient step; linear heads are fitted by ridge regression on frozen embeddings."""
        model = self.raw_model
        model.eval()
        train = self.data.splits["train"]
        emb = self.frozen.pooled.get("train") if self.cache_mode == "pooled" else None
        if emb is None:
            emb = model.encoder.encode(train.texts, normalize=False, convert_to="torch")
        for task, spec in model.tasks.items():
            if spec.hidden_size or spec.type != "classification":
                logger.info("frozen: head %s keeps its initial weights (not a linear sentence head)", task)
                continue
            rows = train.rows_for(task)
            fit_ridge(model.heads[task][-1], emb[torch.as_tensor(rows)], train.labels[task][rows], spec.num_labels)
        self.state.global_step = 0
        self._evaluate_and_select([])
        if "validation" not in self.data.splits and self.is_main:
            self._save_model()

    def _save_model(self) -> None:
        """Write the run's model (the kept heads; adapters alone or merged, as configured)."""
        model = self.raw_model
        check_finite(model, self.ever_trainable)  # frozen weights cannot have turned non-finite
        if model.lora is not None and self.tc.lora.save == "merged":
            model = copy.deepcopy(model)
            model.merge_lora()
        model.save(self.run_dir / "model", tasks=self.saved_tasks)

    # ---------------------------------------------------------- checkpoints
    def _checkpoint(self, started: float) -> None:
        st = self.state
        st.train_seconds = time.perf_counter() - started
        state = {k: v for k, v in st.__dict__.items()}
        if not self.is_main:
            return
        save_checkpoint(
            self.run_dir, self.raw_model, self.optimizer, self.scheduler.state_dict(), state, self.ever_trainable
        )

    def _resume(self) -> None:
        saved = load_checkpoint(self.run_dir, self.raw_model, self.optimizer)
        self.scheduler.load_state_dict(saved.pop("scheduler"))
        self.state = LoopState(**saved)
        self.groups = self._groups_at(self.state.stage)
        apply_trainable(self.raw_model, self.groups)
        self._write_history()
        logger.info("resumed at step %d (epoch %d)", self.state.global_step, self.state.epoch)

    # ---------------------------------------------------------------- finish
    def _finish(self) -> TrainResult:
        st = self.state
        model_dir = self.run_dir / "model"
        if self.is_main and ("validation" not in self.data.splits or not model_dir.exists()):
            self._save_model()
        self.accelerator.wait_for_everyone()
        test = {}
        if "test" in self.data.splits:
            test = self._evaluate_test_pooled(model_dir)
            if test is None:
                test = self._evaluate(MultiTaskModel.load(model_dir), "test")
        validation = next((e["validation"] for e in st.history if e["step"] == st.best_step and "validation" in e), {})
        result = TrainResult(
            run_dir=self.run_dir,
            test=test,
            validation=validation,
            history=st.history,
            trainable_parameters=self.trainable,
            total_parameters=self.total,
            train_seconds=st.train_seconds,
            steps=st.global_step,
        )
        summary = {
            "strategy": self.tc.strategy,
            "steps": st.global_step,
            "best_step": st.best_step,
            "stopped_early": st.stopped_early,
            "train_seconds": round(st.train_seconds, 2),
            "trainable_parameters": self.trainable,
            "total_parameters": self.total,
            "train_rows": len(self.data.splits["train"]),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "validation": validation,
            "test": summary_metrics(test, self.aux_tasks) if test else {},
            "test_detail": test,
        }
        if self.is_main:
            write_summary(self.run_dir, summary)
        logger.info("finished: %s", json.dumps(summary["test"]))
        return result

    def _task_note(self, task: str) -> str:
        spec = self.config.tasks[task]
        kind = "masked LM" if spec.type == "masked_lm" else f"{len(self.data.labels[task])} labels"
        return f"{task} ({kind}{', auxiliary' if spec.is_auxiliary else ''})"

    def _print_plan(self) -> None:
        pct = 100.0 * self.trainable / max(1, self.total)
        train = self.data.splits["train"]
        sizes = ", ".join(f"{n} {len(s)}" for n, s in self.data.splits.items())
        self.console.print(
            f"[bold]mtst train[/bold] · {self.config.model.backbone} · strategy [bold]{self.tc.strategy}[/bold] · "
            f"rows: {sizes} · tasks: {', '.join(self._task_note(t) for t in self.task_names)}"
        )
        start = "" if self.trainable_at_start == self.trainable else f"{self.trainable_at_start:,} at the start, up to "
        self.console.print(
            f"trainable parameters: {start}{self.trainable:,} of {self.total:,} ({pct:.2f}%) · "
            f"{self.total_steps} steps of batch {self.tc.batch_size} · run dir {self.run_dir}"
        )
        logger.info("training on %d rows; %d trainable of %d parameters", len(train), self.trainable, self.total)


def train(
    config: RunConfig,
    resume: bool = False,
    console: Console | None = None,
    callbacks: Sequence[Callback] = (),
    show_progress: bool = True,
    overwrite: bool = False,
) -> TrainResult:
    """Train from a validated config; ``resume`` continues from the run directory's checkpoint.

    An ``output_dir`` that already holds files is refused unless ``overwrite`` (or ``resume``).
    """
    trainer = Trainer(config, console=console, callbacks=callbacks, show_progress=show_progress, overwrite=overwrite)
    trainer.setup(resume=resume)
    return trainer.fit()
