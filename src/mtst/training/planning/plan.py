"""The training plan: what a run will do, computed from the resolved config and the data's statistics.

Pure: no model, no torch. The plan names the trainable groups of every stage,
their learning rates, the step budget and warm-up, which groups ever train
(and so what a checkpoint holds), whether caches of frozen work may apply and
what the saved model keeps of the backbone. The loop only carries it out, so
the whole plan is unit-testable and printable before a run starts.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from mtst.config import RunConfig, TrainingSection
from mtst.errors import ConfigError
from mtst.training.planning.freezing import backbone_groups, parse_freeze
from mtst.training.planning.heads import warm_started
from mtst.training.planning.strategies import GroupContext, Strategy, get_strategy

logger = logging.getLogger("mtst")

MAX_STRETCH_EPOCHS = 10


@dataclass(frozen=True)
class DataStats:
    """What the plan needs to know of the data: rows that carry at least one label, the rows per
    class of each sentence classification task (in label order; a multi-label task's rows that carry
    each label), and how many rows carry each set of those tasks' labels (empty: not counted; the plan
    then estimates it from the totals). ``task_rows``: a task's labelled rows where they are not the
    sum of its class counts (a multi-label row counts once per label it carries)."""

    labelled_rows: int
    class_counts: dict[str, tuple[int, ...]] = field(default_factory=dict)
    task_sets: dict[frozenset[str], int] = field(default_factory=dict)
    task_rows: dict[str, int] = field(default_factory=dict)

    def rows_of(self, task: str) -> int:
        """The labelled rows of a task of ``class_counts``."""
        return self.task_rows.get(task, sum(self.class_counts.get(task, ())))

    def labels_per_row(self, tasks: tuple[str, ...]) -> float:
        """Mean number of ``tasks`` labelled on a row that has a label for any of them: 2 where two
        tasks label the same rows, 1 where each row belongs to one task."""
        labels = sum(self.rows_of(t) for t in tasks)
        wanted = set(tasks)
        rows = sum(n for s, n in self.task_sets.items() if s & wanted) if self.task_sets else self.labelled_rows
        return min(float(len(tasks)), max(1.0, labels / max(1, rows)))


@dataclass(frozen=True)
class ContrastivePlan:
    """What the contrastive stage trains, for how long, at which rate, with which loss."""

    groups: frozenset[str]
    tasks: tuple[str, ...]
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    loss: str
    temperature: float
    num_layers: int
    packing: bool = True  # rows run packed where the backbone allows (contrastive.packing)

    def describe(self) -> str:
        layers = sum(g.startswith("layers.") for g in self.groups)
        if "lora" in self.groups:
            part = "the LoRA adapters"
        elif "embeddings" in self.groups:
            part = "the whole backbone"
        elif layers == self.num_layers:
            part = f"all {layers} layers"
        else:
            part = f"the top {layers} of {self.num_layers} layers"
        return f"contrastive stage: {self.steps} steps of {self.batch_size} rows on {part}, {self.loss} loss"


@dataclass(frozen=True)
class KeepPlan:
    """What the run keeps of its starting model (``training.keep``), resolved: ``protect`` is ``safe``
    wherever the backbone never moves; the terms' weights are 0 where they do not apply."""

    protect: str
    old_heads: tuple[str, ...] = ()  # heads this run does not train: carried from model.init, or frozen
    embedding: float = 0.0
    heads: float = 0.0
    temperature: float = 2.0
    start: str = "pretrained"  # what the run starts from, in words: "pretrained" or the model.init path
    moves: bool = False  # the backbone moves in some stage
    texts: str | None = None  # training.keep.texts, where the terms hold them too

    @property
    def has_terms(self) -> bool:
        return self.embedding > 0 or (self.heads > 0 and bool(self.old_heads))

    def describe(self) -> str:
        if not self.moves:
            return "the encoder does not move: its embedding and every old head are kept exactly"
        if not self.has_terms:
            held = "the embedding or the old heads" if self.old_heads else "the embedding"
            why = "keep.protect: free" if self.protect == "free" else "keep.embedding: 0"
            return f"nothing holds {held} ({why}); the end of the run says how far it moved"
        terms = [f"embedding x{self.embedding:g}"] if self.embedding > 0 else []
        if self.heads > 0 and self.old_heads:
            terms.append(f"old heads {', '.join(self.old_heads)} x{self.heads:g} (T={self.temperature:g})")
        on = f"the training texts and {self.texts}" if self.texts else "the training texts"
        return f"keeping the {self.start} model's outputs on {on}: {'; '.join(terms)}"


@dataclass(frozen=True)
class TrainingPlan:
    strategy: str
    num_layers: int
    stages: tuple[frozenset[str], ...]  # trainable groups per stage, the freeze list applied
    stage_steps: int | None  # optimizer steps per stage (None: one stage)
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    head_lr: float
    group_lrs: dict[str, float]  # base learning rate of every group that ever trains
    closed_form: bool
    cache: bool  # frozen work may be cached (the config allows it and no task needs raw tokens)
    saved_backbone_groups: tuple[str, ...] | None  # None: the saved model holds the whole backbone
    warnings: tuple[str, ...] = ()
    contrastive: ContrastivePlan | None = None  # a stage before the supervised steps
    head_init: tuple[str, ...] = ()  # heads fitted by logistic regression before the first step
    closed_form_heads: tuple[str, ...] = ()  # closed_form: the heads it fits (not those in ``freeze``)
    shared_by: tuple[str, ...] = ()  # classification tasks that train the encoder together (2 or more)
    lr_scale: float = 1.0  # lr_backbone's multiplier for them (training.task_lr)
    keep: KeepPlan = field(default_factory=lambda: KeepPlan("safe"))

    def stage_at(self, step: int) -> int:
        return _stage_index(step, self.stage_steps, len(self.stages))

    def groups_at(self, step: int) -> set[str]:
        return set(self.stages[self.stage_at(step)])

    @property
    def last_stage(self) -> int:
        return self.stage_at(max(0, self.total_steps - 1))

    @property
    def step_groups(self) -> set[str]:
        """Every group that trains at some step of this run (not stages it never reaches)."""
        return set().union(*self.stages[: self.last_stage + 1])

    @property
    def backbone_moves(self) -> bool:
        """The backbone changes during the supervised steps (not counting a contrastive stage before them)."""
        return trains_backbone(self.step_groups)

    @property
    def trained_groups(self) -> set[str]:
        """Every group any stage trains, the contrastive stage included (what checkpoints keep)."""
        return _with_contrastive(self.step_groups, self.contrastive)

    def phases(self, resumed: bool = False) -> tuple[str, ...]:
        """The driver's stages, in order: ``contrastive``, ``warm_start`` (heads fitted before the first
        step), then ``closed_form`` (``frozen``'s fit) or ``steps``. A resumed run starts at the steps:
        its checkpoint holds what the stages before them did."""
        first = (
            () if resumed else (("contrastive",) if self.contrastive else ()) + (("warm_start",) * bool(self.head_init))
        )
        # the starting model's outputs, recorded before anything moves (a resumed run records them again)
        record = ("start_outputs",) if self.keep.moves else ()
        return (*record, *first, "closed_form" if self.closed_form else "steps")


def build_plan(
    config: RunConfig,
    num_layers: int,
    stats: DataStats,
    raw_token_tasks: bool = False,
    carried: tuple[str, ...] = (),
    continued: tuple[str, ...] = (),
) -> TrainingPlan:
    """The plan of ``config`` for a backbone of ``num_layers`` layers and data with ``stats``.

    ``raw_token_tasks``: a token or masked-LM task needs every token's state, so no cache applies.
    ``carried`` / ``continued``: the ``model.init`` model's prediction tasks that the config does not
    name / that it trains further. A plan that leaves nothing to train is a :class:`ConfigError`."""
    tc = config.training
    strategy = get_strategy(tc.strategy)
    tasks = tuple(config.tasks)
    ctx = GroupContext(num_layers, tasks, tc)
    frozen = _frozen_groups(tc, strategy, ctx)
    stages = tuple(frozenset(strategy.stage_groups(s, ctx) - frozen) for s in range(strategy.num_stages(ctx)))
    batches = max(1, -(-stats.labelled_rows // tc.batch_size))
    steps_per_epoch = max(1, -(-batches // tc.grad_accumulation))
    total = step_budget(steps_per_epoch, tc.epochs, tc.max_steps, tc.min_steps)
    if not stages[0] and not strategy.closed_form:
        raise ConfigError(
            f"training: strategy {tc.strategy!r} with this freeze list leaves nothing to train; "
            "use strategy 'frozen' for an evaluation-only baseline"
        )
    stage_steps = strategy.stage_steps(ctx, steps_per_epoch) if len(stages) > 1 else None
    ever = set().union(*stages[: _stage_index(max(0, total - 1), stage_steps, len(stages)) + 1])
    contrastive = contrastive_plan(config, ctx, stages[-1], frozen, stats)
    saved = strategy.saved_backbone_groups(_with_contrastive(ever, contrastive))
    shared = sharing_tasks(ever, stats)
    scale = task_lr_scale(tc.task_lr, shared, stats)
    scaled = tc.model_copy(update={"lr_backbone": tc.lr_backbone * scale})
    keep = keep_plan(config, trains_backbone(_with_contrastive(ever, contrastive)), carried, continued, frozen)
    head_lr = strategy.head_lr(scaled)  # an explicit lr_head, or lora.lr, stays as written
    lrs = {g: group_lr(g, num_layers, scaled.lr_backbone, head_lr, tc.layer_decay, tc.lora.lr) for g in sorted(ever)}
    return TrainingPlan(
        strategy=tc.strategy,
        num_layers=num_layers,
        stages=stages,
        stage_steps=stage_steps,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        warmup_steps=int(tc.warmup_ratio * total),
        head_lr=head_lr,
        group_lrs=lrs,
        closed_form=strategy.closed_form,
        cache=tc.cache.enabled and not raw_token_tasks,
        # a run from model.init saves its whole backbone: adapters alone would need model.init's merged base
        saved_backbone_groups=None if saved is None or tc.lora.save == "merged" or config.model.init else tuple(saved),
        warnings=tuple(_warnings(stages[0], tasks, carried, keep, config.training.keep.texts)),
        contrastive=contrastive,
        head_init=warm_started(config, strategy, ever, continued, stats.class_counts, bool(shared)),
        closed_form_heads=tuple(t for t in tasks if f"heads.{t}" not in frozen) if strategy.closed_form else (),
        shared_by=shared,
        lr_scale=scale,
        keep=keep,
    )


def _frozen_groups(tc: TrainingSection, strategy: Strategy, ctx: GroupContext) -> set[str]:
    """The groups ``training.freeze`` names, and the whole backbone under ``keep.protect: safe`` (refused
    for a strategy that trains the encoder)."""
    frozen = parse_freeze(tc.freeze, ctx.num_layers, ctx.tasks)
    if tc.keep.protect == "safe":
        moving = trains_backbone(set().union(*(strategy.stage_groups(s, ctx) for s in range(strategy.num_stages(ctx)))))
        if moving:
            raise ConfigError(
                f"training.keep.protect: safe keeps the encoder as it is, but strategy {tc.strategy!r} trains it; "
                "use strategy auto, frozen or heads, or keep.protect distill (the encoder moves, held to its start)"
            )
        frozen |= backbone_groups(ctx.num_layers) | {"lora"}
    return frozen


# The embedding term's weight where it is on (training.keep.embedding: auto from a trained model): at
# 0.6 STS-B stayed at 81.2-81.6 after the default run on SST-2 and TREC at 64 rows per class (82.0 at the
# start; 60-67 unheld) within 0.3 of their accuracy; on the two-task demo it cost 5 points of sentiment
# (benchmarks/README.md "Keeping what the model knows"), so a new model does not hold it by default.
KEEP_EMBEDDING = 0.6


def embedding_weight(configured: float | None, from_trained: bool) -> float:
    """``keep.embedding`` resolved: as written, else KEEP_EMBEDDING from a trained model and 0 on a new one."""
    if configured is not None:
        return configured
    return KEEP_EMBEDDING if from_trained else 0.0


def keep_plan(
    config: RunConfig, moves: bool, carried: tuple[str, ...], continued: tuple[str, ...], frozen: set[str]
) -> KeepPlan:
    """``training.keep`` resolved for this run: the old heads (carried, or continued but frozen), the
    protection in force and its terms' weights."""
    kc = config.training.keep
    old = carried + tuple(t for t in continued if f"heads.{t}" in frozen and config.tasks[t].type != "masked_lm")
    protect = ("distill" if kc.protect == "auto" else kc.protect) if moves else "safe"
    distill = protect == "distill"
    embedding = embedding_weight(kc.embedding, bool(config.model.init)) if distill else 0.0
    heads = kc.heads if distill and old else 0.0
    if distill and not (embedding > 0 or heads > 0):
        protect = "free"  # nothing to hold (a new model, its embedding not held): the encoder moves freely
    texts = kc.texts if protect == "distill" else None
    return KeepPlan(protect, old, embedding, heads, kc.temperature, config.model.init or "pretrained", moves, texts)


def trains_backbone(groups: set[str] | frozenset[str]) -> bool:
    """Whether any of ``groups`` is a backbone group (not a head)."""
    return any(not g.startswith("heads.") for g in groups)


def sharing_tasks(ever: set[str], stats: DataStats) -> tuple[str, ...]:
    """Classification tasks whose heads train while the backbone does: two or more share the
    encoder's steps (empty when the backbone never trains, or one task does)."""
    if not trains_backbone(ever):
        return ()
    tasks = tuple(t for t in stats.class_counts if f"heads.{t}" in ever)
    return tasks if len(tasks) > 1 else ()


def task_lr_scale(task_lr: str, shared: tuple[str, ...], stats: DataStats) -> float:
    """``lr_backbone``'s multiplier where the ``shared`` classification tasks train the encoder together.

    Their gradients are near-orthogonal (benchmarks/task_gradients.py), so AdamW's normalised step
    is split between the tasks a row carries, each moving a fraction
    of what it would alone. ``per_row`` (the default) multiplies
    by the labels per row: x2 where two tasks label the same rows, x1 where each row belongs to
    one task (there each task already gets its own rows' steps). ``sqrt`` and ``linear`` multiply
    by the root of, or by, the number of tasks whatever the rows (benchmarks/README.md "Multi-task")."""
    if len(shared) < 2 or task_lr == "fixed":
        return 1.0
    if task_lr == "per_row":
        return stats.labels_per_row(shared)
    return math.sqrt(len(shared)) if task_lr == "sqrt" else float(len(shared))


def contrastive_plan(
    config: RunConfig, ctx: GroupContext, last_stage: frozenset[str], frozen: set[str], stats: DataStats
) -> ContrastivePlan | None:
    """The contrastive stage of this run, or None (off, or no classification task to learn from).

    It trains the backbone groups of the strategy's last stage; where the backbone never trains
    (``frozen``, ``heads``), every layer or the top ``contrastive.top_k``. The ``freeze`` list still applies.
    """
    cc = config.training.contrastive
    if not cc.enabled:
        return None
    limit = cc.max_classes or 10**9
    tasks = tuple(t for t, counts in stats.class_counts.items() if 2 <= sum(c > 0 for c in counts) <= limit)
    if len(tasks) < len(stats.class_counts):
        left_out = sorted(set(stats.class_counts) - set(tasks))
        logger.info("contrastive stage: %s sit(s) out (one class, or more than contrastive.max_classes)", left_out)
    backbone = {g for g in last_stage if not g.startswith("heads.")}
    groups = frozenset((backbone or ctx.top_layers(cc.top_k or ctx.num_layers)) - frozen)
    if not tasks or not groups:
        logger.info("contrastive stage skipped: %s", "no classification task" if not tasks else "nothing to train")
        return None
    # batches take turns between tasks, so each task gets the steps it would get alone: sharing the
    # encoder must not cut a task's share (measured: SST-2 + TREC on one budget lost 4 points on TREC)
    steps = sum(
        contrastive_steps(stats.rows_of(t), cc.batch_size, cc.epochs, cc.min_steps, cc.max_steps) for t in tasks
    )
    return ContrastivePlan(
        groups=groups,
        tasks=tasks,
        steps=steps,
        batch_size=cc.batch_size,
        lr=config.training.lora.lr if "lora" in groups else cc.lr,
        warmup_steps=int(cc.warmup_ratio * steps),
        loss=cc.loss,
        temperature=cc.temperature,
        num_layers=ctx.num_layers,
        packing=cc.packing,
    )


def _with_contrastive(groups: set[str], contrastive: ContrastivePlan | None) -> set[str]:
    """``groups`` and what the contrastive stage trains."""
    return groups | (set(contrastive.groups) if contrastive else set())


def contrastive_steps(rows: int, batch_size: int, epochs: float, min_steps: int, max_steps: int) -> int:
    """``epochs`` passes over ``rows`` in batches of ``batch_size`` (all rows when fewer), clamped to
    [min_steps, max_steps]: the stage's cost grows with the data up to a bound."""
    steps = math.ceil(epochs * rows / max(1, min(batch_size, rows)))
    return int(min(max_steps, max(min_steps, steps)))


def _stage_index(step: int, stage_steps: int | None, num_stages: int) -> int:
    return 0 if not stage_steps else min(step // stage_steps, num_stages - 1)


def _warnings(
    groups: frozenset[str], tasks: tuple[str, ...], carried: tuple[str, ...], keep: KeepPlan, texts: str | None = None
) -> list[str]:
    """A head that does not train while the backbone does, and that nothing holds, drifts: say so."""
    held = set(keep.old_heads) if keep.heads > 0 else set()
    drifting = [t for t in (*tasks, *carried) if f"heads.{t}" not in groups and t not in held]
    out = []
    if trains_backbone(groups) and drifting:
        out.append(
            f"head(s) {', '.join(drifting)} are frozen while the backbone trains (keep.protect: {keep.protect}): "
            "their inputs will drift under them and their accuracy can fall; from a trained model, keep.protect "
            "distill holds them to their outputs and safe freezes the backbone too (retention: metrics.json)"
        )
    if texts and not keep.texts:
        why = "the encoder does not move" if not keep.moves else f"keep.protect: {keep.protect} holds nothing"
        out.append(f"training.keep.texts is not used: {why} (it holds the keep terms on those texts under distill)")
    return out


def group_lr(
    group: str, num_layers: int, lr_backbone: float, lr_head: float, layer_decay: float, lr_lora: float | None = None
) -> float:
    """LR of layer l (0-based, L layers) = lr_backbone x decay^(L-1-l); embeddings get decay^L.

    LoRA adapters have their own LR (adapters start at zero and need larger steps).
    """
    if group.startswith("heads."):
        return lr_head
    if group == "lora":
        return lr_lora if lr_lora is not None else lr_backbone
    if group.startswith("layers."):
        return lr_backbone * layer_decay ** (num_layers - 1 - int(group.split(".")[1]))
    if group == "embeddings":
        return lr_backbone * layer_decay**num_layers
    return lr_backbone


def step_budget(steps_per_epoch: int, epochs: float, max_steps: int | None, min_steps: int | None) -> int:
    """Optimizer steps of a run: ``max_steps`` if set, else ``epochs`` worth, raised to ``min_steps``.

    Small data needs optimizer steps, not epochs (with a validation split the best
    checkpoint is kept), so a short run is stretched, to at most MAX_STRETCH_EPOCHS
    epochs to bound overfitting.
    """
    if max_steps:
        return max_steps
    steps = max(1, math.ceil(epochs * steps_per_epoch))
    if min_steps and steps < min_steps:
        stretched = min(min_steps, MAX_STRETCH_EPOCHS * steps_per_epoch)
        if stretched > steps:
            logger.info("training.min_steps: %d steps instead of %d", stretched, steps)
            steps = stretched
    return steps
