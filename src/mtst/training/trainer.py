"""One config in, a run directory out: inputs are checked, a plan is made, the loop carries it out.

Runs on Hugging Face Accelerate (one process on a CPU; several GPUs or
machines under ``accelerate launch``). Everything that can fail on the user's
inputs (config, data, labels, backbone, the output directory) is checked
before anything is written, so a failed start leaves no trace.
"""

from __future__ import annotations

import logging
import logging.handlers
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape

from mtst.config import RunConfig, load_config, precision_name, resolve_precision, validate_config
from mtst.data import MISSING, Split, TaskData, labelled_split, load_task_data
from mtst.data.files import read_texts
from mtst.errors import DataError
from mtst.evaluate import model_sources, read_sts, tokenize_pairs, tokenize_split
from mtst.modeling.encoder import native_bf16
from mtst.modeling.heads import head_specs
from mtst.modeling.model import MultiTaskModel
from mtst.standins import set_enabled as set_standins
from mtst.training.inputs import RunInputs
from mtst.training.loop import TrainingError, TrainingLoop
from mtst.training.planning.freezing import trainable_names
from mtst.training.planning.heads import fitted_by, mark_normalized_inputs
from mtst.training.planning.plan import DataStats, TrainingPlan, build_plan
from mtst.training.planning.recipe import apply_recipe
from mtst.training.planning.strategies import GroupContext, get_strategy
from mtst.training.result import TrainResult
from mtst.training.runtime.batches import Batcher
from mtst.training.runtime.cache import RunCache
from mtst.training.runtime.precision import RunAccelerator, make_accelerator
from mtst.training.runtime.rundir import RunDirectory, RunLock, buffered_log, check_run_dir
from mtst.training.stages.distill import report_sample
from mtst.training.stages.model_init import build_start, check_start, load_start
from mtst.training.state import Callback, LoopState, StepEvent

logger = logging.getLogger("mtst")

__all__ = [
    "Callback",
    "LoopState",
    "RunInputs",
    "StepEvent",
    "TrainResult",
    "TrainingError",
    "TrainingLoop",
    "setup_run",
    "train",
]


def train(
    config: RunConfig | dict[str, Any] | str | Path,
    resume: bool = False,
    console: Console | None = None,
    callbacks: Sequence[Callback | Callable[[StepEvent], None]] = (),
    show_progress: bool = True,
    overwrite: bool = False,
) -> TrainResult:
    """Train from a config: a :class:`RunConfig`, a dict of the YAML's keys (validated the same way), or the
    path of a YAML file. ``resume`` continues from the run directory's checkpoint.

    ``callbacks`` are :class:`Callback` objects, or functions called with a :class:`StepEvent`
    after each optimizer step. See :func:`setup_run` for ``overwrite``.
    """
    return setup_run(as_config(config), resume, console, callbacks, show_progress, overwrite).fit()


def as_config(config: Any) -> RunConfig:
    """The Python API's config boundary: a RunConfig as is, a dict validated, a path read (load_config)."""
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, dict):
        return validate_config(config)
    if isinstance(config, (str, Path)):
        return load_config(config)
    raise TypeError(f"config: expected a RunConfig, a dict or a YAML path, got {type(config).__name__}")


def setup_run(
    config: RunConfig,
    resume: bool = False,
    console: Console | None = None,
    callbacks: Sequence[Callback | Callable[[StepEvent], None]] = (),
    show_progress: bool = True,
    overwrite: bool = False,
) -> TrainingLoop:
    """Check the inputs, make the plan, prepare the run directory: a loop ready to :meth:`~TrainingLoop.fit`.

    An ``output_dir`` that already holds files is refused unless ``overwrite`` (or ``resume``).
    """
    console = console or Console(stderr=True)
    if config.training.standins is not None:  # before anything is loaded or built; it holds for the process
        set_standins(config.training.standins)
    accelerator = _accelerator(config.training.precision)
    is_main = accelerator.is_main_process
    if not is_main:  # one voice: only rank 0 logs, shows progress and writes files
        console, show_progress = Console(quiet=True), False
    with buffered_log() as early_log:  # held until the run directory has its train.log
        lock = RunLock(Path(config.output_dir)).acquire() if is_main else None
        try:
            loop = _setup(config, resume, console, callbacks, show_progress, overwrite, accelerator, early_log)
        except BaseException:
            if lock is not None:
                lock.release(failed_start=True)
            raise
    loop.lock = lock
    return loop


def _setup(
    config: RunConfig,
    resume: bool,
    console: Console,
    callbacks: Sequence[Callback | Callable[[StepEvent], None]],
    show_progress: bool,
    overwrite: bool,
    accelerator: RunAccelerator,
    early_log: logging.handlers.MemoryHandler,
) -> TrainingLoop:
    check_run_dir(Path(config.output_dir), resume, overwrite)
    set_seed(config.training.seed)
    inputs, plan = make_plan(load_inputs(config, console))
    for warning in plan.warnings:
        logger.warning(warning)
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    run_dir = RunDirectory(
        Path(config.output_dir),
        inputs.config,
        accelerator.is_main_process,
        inputs.trained_params,
        inputs.saved_tasks,
        plan.saved_backbone_groups,
    )
    accelerator.wait_for_everyone()  # every process has checked the run directory and its inputs
    run_dir.prepare(resume, early_log)
    accelerator.wait_for_everyone()
    inputs.model.to(accelerator.device)  # in place: every part of the run holds this one model
    inputs.model.encoder.set_inference_precision(run_inference_precision(accelerator.mixed_precision))
    inputs = replace(inputs, cache=_run_cache(inputs, plan, accelerator, console))
    loop = TrainingLoop(inputs, plan, accelerator, run_dir, console, callbacks, show_progress)
    if resume:
        loop.resume()
    if not loop.contrastive_pending:  # a contrastive stage changes the weights the caches would hold
        started = time.perf_counter()
        loop.refresh_cache()
        loop.setup_seconds = time.perf_counter() - started  # the cache build counts as training time
    _print_plan(inputs, plan, console, precision_name(accelerator.mixed_precision), loop.resumed_at)
    return loop


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_inputs(config: RunConfig, console: Console) -> RunInputs:
    """Data, labels, backbone and tokenised splits: every check on the user's inputs."""
    m = config.model
    starting = load_start(m.init) if m.init else None
    if starting is not None:
        check_start(config, starting)
    data = load_task_data(config)
    carried: tuple[str, ...] = ()
    continued: tuple[str, ...] = ()
    if starting is not None:
        start = build_start(config, data, head_specs(config, data), starting)
        model, carried, continued = start.model, start.carried, start.continued
    else:
        model = MultiTaskModel.from_backbone(
            head_specs(config, data),
            backbone=m.backbone,
            pooling=m.pooling,
            normalize=m.normalize,
            max_length=m.max_length,
        )
    encoder = model.encoder
    ids, word_ids, pair_ids = {}, {}, {}
    for name, split in data.splits.items():
        ids[name], word_ids[name] = tokenize_split(model, split)
        pair_ids[name] = tokenize_pairs(model, split)
    truncated = sum(len(x) >= encoder.max_length for split_ids in ids.values() for x in split_ids)
    if truncated:
        note = f"{truncated} text(s) reach max_length={encoder.max_length} tokens and were truncated"
        logger.info(note)
        console.print(f"note: {note} (model.max_length raises the limit)", markup=False)
    tasks = config.tasks
    return RunInputs(
        config=config,
        data=data,
        model=model,
        ids=ids,
        word_ids=word_ids,
        batcher=Batcher(
            data.splits["train"], ids["train"], word_ids["train"], encoder.pad_id, list(tasks), pair_ids["train"]
        ),
        pair_ids=pair_ids,
        lengths=[len(x) for x in ids["train"]],
        mlm_tasks=[t for t, spec in tasks.items() if spec.type == "masked_lm" and spec.weight > 0],
        aux_tasks=[t for t, spec in tasks.items() if spec.is_auxiliary],
        saved_tasks=[t for t in model.tasks if t in carried or (t in tasks and tasks[t].keeps_head)],
        carried=carried,
        continued=continued,
        sts=read_sts(config.data.sts, "data.sts") if config.data.sts else None,
        carried_test=carried_test_split(config, model, carried),
        keep_ids=keep_text_ids(config, model),
    )


def keep_text_ids(config: RunConfig, model: MultiTaskModel) -> list[list[int]]:
    """``training.keep.texts`` tokenised: every text up to ``texts_limit``, else a seeded sample of them."""
    kc = config.training.keep
    if not kc.texts:
        return []
    try:
        texts = read_texts(kc.texts, kc.text_column or config.data.text_column)
    except DataError as exc:
        hint = "; training.keep.text_column names the column that holds them" if "no column" in str(exc) else ""
        raise DataError(f"training.keep.texts: {exc}{hint}") from exc
    picked = report_sample(len(texts), config.training.seed, kc.texts_limit, stream=11)
    return model.encoder.tokenize_ids([texts[i] for i in picked])


def carried_test_split(config: RunConfig, model: MultiTaskModel, carried: tuple[str, ...]) -> Split | None:
    """``data.test``'s rows scored for the carried tasks whose label column it has (None: none has one)."""
    tasks = [t for t in carried if t in model.prediction_tasks]
    if not config.data.test or not tasks:
        return None
    sources = model_sources(model, tasks)
    try:
        return labelled_split(
            config.data.test,
            sources,
            {t: model.tasks[t].labels for t in tasks},
            config.data.text_column,
            config.data.tokens_column,
            required=False,
        )
    except DataError as exc:
        raise DataError(f"data.test: {exc}") from None


def data_stats(config: RunConfig, data: TaskData) -> DataStats:
    """Labelled rows, rows per class of every main sentence classification task, and rows per set
    of those tasks labelled together."""
    train = data.splits["train"]
    counts, task_rows = {}, {}
    for task, spec in config.tasks.items():
        if spec.is_auxiliary:
            continue
        if spec.type == "classification":
            y = train.labels[task][train.rows_for(task)]
            counts[task] = tuple(int(c) for c in np.bincount(y, minlength=len(data.labels[task])))
        elif spec.type == "multi_label":
            rows = train.rows_for(task)
            counts[task] = tuple(int(c) for c in train.targets[task][rows].sum(0))
            task_rows[task] = len(rows)
    names = list(counts)
    sets: dict[frozenset[str], int] = {}
    if names:
        labelled = np.stack([train.labels[t] != MISSING for t in names], axis=1)
        patterns, rows = np.unique(labelled, axis=0, return_counts=True)
        sets = {
            frozenset(t for t, on in zip(names, p, strict=True) if on): int(n)
            for p, n in zip(patterns, rows, strict=True)
            if p.any()
        }
    return DataStats(len(train.labelled_rows()), counts, sets, task_rows)


def make_plan(inputs: RunInputs) -> tuple[RunInputs, TrainingPlan]:
    """The plan for these inputs, and the inputs that go with it; the strategy prepares the model
    (e.g. LoRA adapters) to match it.

    ``strategy: auto`` is resolved here, from the data (:mod:`mtst.training.planning.recipe`); the choice is
    logged and the returned inputs hold the resolved config (what the run directory records).
    """
    num_layers = inputs.num_layers
    token_tasks = any(spec.type == "token_classification" for spec in inputs.config.tasks.values())
    raw_tokens = token_tasks or bool(inputs.mlm_tasks)
    pairs = any(spec.pair_columns for spec in inputs.config.tasks.values())
    stats = data_stats(inputs.config, inputs.data)
    config, recipe = apply_recipe(inputs.config, stats, raw_tokens, pairs)
    if recipe is not None:
        logger.info("recipe (training.strategy: auto): %s", recipe.reason)
    # the caches hold one embedding per row: token tasks need every token's state, pair tasks two texts
    plan = build_plan(config, num_layers, stats, raw_tokens or pairs, inputs.carried_heads, inputs.continued)
    get_strategy(plan.strategy).prepare(inputs.model, GroupContext(num_layers, tuple(config.tasks), config.training))
    if plan.head_init:  # the warm start fits heads on the normalised embedding, as ``frozen`` does
        mark_normalized_inputs(inputs.model, plan.head_init)
    params = dict(inputs.model.named_parameters())
    trained_params = trainable_names(params, plan.trained_groups)
    planned = replace(
        inputs,
        config=config,
        recipe=recipe,
        step_params=trainable_names(params, plan.step_groups),
        trained_params=trained_params,
        trainable_parameters=sum(params[n].numel() for n in trained_params),
    )
    if plan.contrastive is not None:
        logger.info("%s", plan.contrastive.describe())
    return planned, plan


def run_inference_precision(mixed_precision: str) -> str:
    """The precision of a run's passes without gradients (caches, validation, test, keep targets): bf16 where
    its steps run in bf16, so a small run does not score its test split at half the speed it trained at
    (embeddings at cosine 0.99999 of fp32's; benchmarks/README.md "Inference precision"); else fp32."""
    return "bf16" if mixed_precision == "bf16" else "fp32"


def _accelerator(wanted: str) -> RunAccelerator:
    """An accelerator at ``training.precision`` resolved for this device (:mod:`mtst.training.runtime.precision`)."""
    cuda = torch.cuda.is_available()
    return make_accelerator(resolve_precision(wanted, cuda, native_bf16(cuda)), cuda)


def _run_cache(inputs: RunInputs, plan: TrainingPlan, accelerator: Any, console: Console) -> RunCache:
    tc = inputs.config.training
    world, rank = accelerator.num_processes, accelerator.process_index
    return RunCache(
        inputs.model.encoder,
        inputs.ids,
        {name: split.texts for name, split in inputs.data.splits.items()},
        plan.num_layers,
        tc.eval_batch_size,
        tc.cache.memory_mb,
        Path(inputs.config.output_dir) / "cache" / (f"rank{rank}" if world > 1 else ""),
        store_dir=Path(tc.cache.dir) if tc.cache.dir else None,
        enabled=plan.cache,
        note=console.print,
        cache_validation=world == 1,  # sharded evaluation runs the whole encoder
    )


def _print_plan(
    inputs: RunInputs, plan: TrainingPlan, console: Console, precision: str, resumed_at: int | None
) -> None:
    config, data = inputs.config, inputs.data
    total = sum(p.numel() for p in inputs.model.parameters())
    at_start = sum(p.numel() for p in inputs.model.parameters() if p.requires_grad)
    trainable = inputs.trainable_parameters
    sizes = ", ".join(f"{n} {len(s)}" for n, s in data.splits.items())
    origin = f"{config.model.init} (model.init)" if config.model.init else config.model.backbone
    notes = []
    for task, spec in config.tasks.items():
        named = {"masked_lm": "masked LM", "regression": "a number", "pair_similarity": "a score per pair"}
        kind = named[spec.type] if spec.type in named else f"{len(data.labels[task])} labels"
        notes.append(f"{task} ({kind}{', auxiliary' if spec.is_auxiliary else ''})")
    console.print(
        f"[bold]mtst train[/bold] · {escape(origin)} · strategy [bold]{plan.strategy}[/bold] · "
        f"rows: {sizes} · tasks: {escape(', '.join(notes))}"
    )
    for note in data.notes:
        console.print(note, markup=False)
    # Gradual unfreezing trains more as it goes: say what trains at the start and the most that ever does.
    start = "" if at_start == trainable else f"{at_start:,} at the start, up to "
    in_precision = f" in {precision}" if precision != "fp32" else ""  # where steps autocast
    method = fitted_by(inputs.model, plan.head_init)
    steps = (
        f"linear heads fitted by {method}"
        if plan.closed_form
        else f"{plan.total_steps} steps of batch {config.training.batch_size}{in_precision}"
    )
    console.print(
        f"trainable parameters: {start}{trainable:,} of {total:,} ({100.0 * trainable / max(1, total):.2f}%) · "
        f"{steps} · run dir {config.output_dir}",
        markup=False,
    )
    if config.model.init:
        new = [t for t in config.tasks if t not in inputs.continued]
        parts = [f"continues {', '.join(inputs.continued)}"] if inputs.continued else []
        parts += [f"carries {', '.join(inputs.carried)} unchanged"] if inputs.carried else []
        parts += [f"adds {', '.join(new)}"] if new else []
        console.print(f"starting from {config.model.init}: {'; '.join(parts)}", markup=False)
    if inputs.recipe is not None:
        console.print(f"recipe (strategy auto): {inputs.recipe.reason}", markup=False)
    if plan.keep.moves or plan.keep.old_heads:
        console.print(plan.keep.describe(), markup=False)
    if resumed_at is not None:
        console.print(f"resumed from the checkpoint at step {resumed_at}: earlier stages are not run again")
    elif plan.contrastive is not None:
        console.print(f"{plan.contrastive.describe()}{in_precision}, then the {plan.strategy} strategy")
    if plan.head_init and resumed_at is None:
        console.print(f"head(s) {', '.join(plan.head_init)} start fitted by {method} (head_init)")
    if plan.lr_scale != 1.0:
        console.print(
            f"{len(plan.shared_by)} classification tasks train the encoder together ({', '.join(plan.shared_by)}): "
            f"lr_backbone x{plan.lr_scale:.2f} = {plan.lr_scale * config.training.lr_backbone:.3g} "
            f"(training.task_lr: {config.training.task_lr})"
        )
    logger.info("training on %d rows; %d trainable of %d parameters", len(data.splits["train"]), trainable, total)
