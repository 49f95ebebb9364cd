"""Keeping what a model knows: starting from a trained model (model.init), carried and continued heads,
the protection modes (safe, free, distill), the embedding term and the retention figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from rich.console import Console

from mtst.cli import main
from mtst.config import load_config, validate_config
from mtst.errors import ConfigError, DataError, ModelLoadError
from mtst.export import OnnxPredictor, export
from mtst.modeling.model import MultiTaskModel
from mtst.modeling.saved import is_model_dir
from mtst.training.planning.plan import KEEP_EMBEDDING, DataStats, KeepPlan, build_plan, embedding_weight
from mtst.training.stages.distill import keep_loss, keep_texts, report_sample, soft_target_loss, start_targets
from mtst.training.trainer import load_inputs, make_plan, train
from tests.conftest import SENTENCES

STATS = DataStats(24, {"sentiment": (8, 8, 8)})


def _config(backbone: Path | str, data: dict[str, str], run: Path, tasks: dict[str, Any], **training: Any) -> Any:
    """A config on the tiny backbone, or starting from a trained model (``model.init``) where given one."""
    model = {"init": str(backbone)} if is_model_dir(backbone) else {"backbone": str(backbone)}
    if "init" in training:
        model["init"] = str(training.pop("init"))
    return validate_config(
        {
            "model": {**model, "max_length": 32},
            "tasks": tasks,
            "data": dict(data),
            "training": {
                "batch_size": 8,
                "epochs": 3,
                "min_steps": None,
                "lr_head": 1e-2,
                "lr_backbone": 1e-3,
                **training,
            },
            "output_dir": str(run),
        }
    )


@pytest.fixture(scope="module")
def category_run(tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained model with one task, ``category`` (the starting model of the tests below)."""
    run = tmp_path_factory.mktemp("a") / "run"
    train(_config(tiny_backbone_dir, tiny_data, run, {"category": {}}, strategy="full"), show_progress=False)
    return run


def _free_and_distill(
    start: Path, data: dict[str, str], tmp_path: Path, keep: dict[str, float], **training: Any
) -> dict[str, dict]:
    """The retention of a ``full`` run adding ``sentiment`` to ``start``, under ``free`` and ``distill``
    with the same seed."""
    out = {}
    for protect in ("free", "distill"):
        cfg = _config(
            start,
            data,
            tmp_path / protect,
            {"sentiment": {}},
            strategy="full",
            keep={"protect": protect, **keep},
            **training,
        )
        out[protect] = train(cfg, show_progress=False).retention
    return out


def _probs(model: MultiTaskModel, task: str) -> np.ndarray:
    return model.predict_proba(SENTENCES, tasks=[task])[task]


# ------------------------------------------------------------------ the plan (pure)
def test_keep_plan_resolves_protection_from_what_moves(tiny_backbone_dir: Path, tiny_data: dict[str, str]) -> None:
    def plan(strategy: str, carried: tuple[str, ...] = (), **keep: Any) -> KeepPlan:
        cfg = _config(tiny_backbone_dir, tiny_data, Path("x"), {"sentiment": {}}, strategy=strategy, keep=keep)
        return build_plan(cfg, 2, STATS, carried=carried).keep

    assert plan("full", ("category",)) == KeepPlan("distill", ("category",), 0.0, 1.0, 2.0, "pretrained", True)
    assert plan("full", ("category",), protect="free").has_terms is False
    assert plan("full", ()).protect == "free"  # a new model: its embedding is not held unless asked
    assert plan("full", (), embedding=0.6).has_terms and plan("full", (), embedding=0.6).heads == 0.0
    assert embedding_weight(None, from_trained=True) == KEEP_EMBEDDING > 0  # auto, from model.init
    assert embedding_weight(None, from_trained=False) == 0.0 and embedding_weight(0.2, False) == 0.2
    assert plan("heads", ("category",)) == KeepPlan("safe", ("category",), 0.0, 0.0, 2.0, "pretrained", False)
    assert plan("frozen", ("category",), protect="safe").moves is False
    assert plan("lora", ("category",), heads=0.5).heads == 0.5
    # a continued head listed in freeze is an old head: held under distill, so no drift warning
    frozen = _config(
        tiny_backbone_dir, tiny_data, Path("x"), {"sentiment": {}}, strategy="full", freeze=["heads.sentiment"]
    )
    held = build_plan(frozen, 2, STATS, continued=("sentiment",))
    assert held.keep.old_heads == ("sentiment",) and held.keep.heads == 1.0 and held.warnings == ()
    assert "sentiment" in build_plan(frozen, 2, STATS).warnings[0]  # a new model's frozen head just drifts
    with pytest.raises(ConfigError, match=r"protect: safe keeps the encoder.*strategy .full. trains it"):
        plan("full", ("category",), protect="safe")
    # auto under safe: heads on the encoder as it is, no contrastive stage
    cfg = _config(tiny_backbone_dir, tiny_data, Path("x"), {"sentiment": {}}, keep={"protect": "safe"})
    from mtst.training.planning.recipe import apply_recipe

    resolved, recipe = apply_recipe(cfg, STATS)
    assert resolved.training.strategy == "frozen" and not resolved.training.contrastive.enabled
    assert "safe" in recipe.reason


def test_only_moving_runs_record_the_start_and_it_comes_first(
    tiny_backbone_dir: Path, tiny_data: dict[str, str]
) -> None:
    cfg = _config(tiny_backbone_dir, tiny_data, Path("x"), {"sentiment": {}}, strategy="full")
    assert build_plan(cfg, 2, STATS).phases() == ("start_outputs", "steps")
    assert build_plan(cfg, 2, STATS).phases(resumed=True) == ("start_outputs", "steps")  # targets again
    frozen = _config(tiny_backbone_dir, tiny_data, Path("x"), {"sentiment": {}}, strategy="frozen")
    assert build_plan(frozen, 2, STATS).phases() == ("closed_form",)


# ------------------------------------------------------------------ the terms (pure)
def test_soft_target_loss_is_zero_at_the_target_and_positive_elsewhere() -> None:
    t = torch.tensor([[2.0, -1.0, 0.5]])
    assert soft_target_loss(t, t, 2.0).abs().max() < 1e-6
    assert float(soft_target_loss(torch.zeros(1, 3), t, 2.0)) > 0


def test_report_sample_is_every_row_up_to_the_limit_then_a_seeded_sample() -> None:
    assert list(report_sample(5, 0)) == [0, 1, 2, 3, 4]
    a, b = report_sample(5000, 1, 100), report_sample(5000, 1, 100)
    assert len(a) == 100 and np.array_equal(a, b) and np.all(np.diff(a) > 0)


def test_keep_terms_pull_the_encoder_and_leave_the_old_head(tiny_model: MultiTaskModel) -> None:
    model = tiny_model
    ids = model.encoder.tokenize_ids(SENTENCES)
    keep = KeepPlan("distill", ("category",), 0.6, 1.0, 2.0, "pretrained", True)
    targets = start_targets(model, ids, keep, 0, 4)
    model.eval()  # dropout off: the loss is the drift alone
    model.heads["category"].requires_grad_(False)
    with torch.no_grad():
        start = model(model.encoder.tokenize(SENTENCES))  # a features dict is filled in: one per pass
        assert float(keep_loss(model, start, np.arange(5), targets, keep)) < 1e-5  # at the start: nothing lost
        for p in model.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    loss = keep_loss(model, model(model.encoder.tokenize(SENTENCES)), np.arange(5), targets, keep)
    assert loss.item() > 1e-3
    loss.backward()
    grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in model.heads["category"].parameters())


# ------------------------------------------------------------------ model.init
def test_safe_keeps_carried_heads_bit_identical_and_they_survive_every_export(
    category_run: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    cfg = _config(category_run, tiny_data, tmp_path / "b", {"sentiment": {}}, keep={"protect": "safe"})
    result = train(cfg, show_progress=False)
    start, end = MultiTaskModel.load(category_run), MultiTaskModel.load(tmp_path / "b")
    assert list(end.tasks) == ["category", "sentiment"]
    assert np.array_equal(_probs(start, "category"), _probs(end, "category"))
    assert np.array_equal(start.encode(SENTENCES), end.encode(SENTENCES))
    kept = json.loads((tmp_path / "b" / "metrics.json").read_text())["retention"]
    assert kept["protect"] == "safe" and kept["embedding"]["cosine"] == 1.0
    assert kept["tasks"]["category"]["agreement"] == 1.0
    assert kept["tasks"]["category"]["test"]["start"] == kept["tasks"]["category"]["test"]["end"]  # data.test has it
    assert result.retention == kept
    # the carried task answers in the ONNX export and in the sentence-transformers export
    onnx = OnnxPredictor(export(tmp_path / "b", "onnx", tmp_path / "onnx"))
    ours = end.predict(SENTENCES, tasks=["category"])
    assert [r["category"]["label"] for r in onnx.predict(SENTENCES, tasks=["category"])] == [
        r["category"]["label"] for r in ours
    ]
    st = export(tmp_path / "b", "sentence-transformers", tmp_path / "st")
    assert set(json.loads((st / "mtst_heads" / "config.json").read_text())["tasks"]) == {"category", "sentiment"}


def test_distill_keeps_more_than_free_with_the_same_seed(
    category_run: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    kept = _free_and_distill(category_run, tiny_data, tmp_path, {"embedding": 5.0, "heads": 5.0}, epochs=6)
    free, distill = kept["free"], kept["distill"]
    assert distill["embedding"]["cosine"] > free["embedding"]["cosine"] + 0.01
    assert distill["tasks"]["category"]["agreement"] >= free["tasks"]["category"]["agreement"]
    assert free["embedding"]["cosine"] < 0.99  # the backbone did move: the comparison means something


def test_a_continued_task_starts_from_its_head(category_run: Path, tiny_data: dict[str, str], tmp_path: Path) -> None:
    cfg = _config(
        category_run,
        tiny_data,
        tmp_path / "c",
        {"category": {}, "sentiment": {}},
        strategy="heads",
        freeze=["heads.category"],
    )
    inputs, plan = make_plan(load_inputs(cfg, Console(quiet=True)))
    assert inputs.continued == ("category",) and inputs.carried == ()
    assert plan.head_init == ("sentiment",)  # a continued head is not fitted again
    start = MultiTaskModel.load(category_run)
    for a, b in zip(start.heads["category"].parameters(), inputs.model.heads["category"].parameters(), strict=True):
        assert torch.equal(a, b)


def test_labels_other_than_the_models_are_refused_naming_task_and_labels(
    category_run: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    cfg = _config(category_run, tiny_data, tmp_path / "d", {"category": {"labels": ["books", "garden"]}})
    with pytest.raises(ConfigError, match=r"tasks\.category\.labels differ.*books, garden.*books, kitchen"):
        load_inputs(cfg, Console(quiet=True))
    renamed = {"category": {"label_column": "sentiment"}}  # other values in that column: a new label set
    with pytest.raises(ConfigError, match=r"tasks\.category: the training data has label\(s\) 'negative'"):
        load_inputs(_config(category_run, tiny_data, tmp_path / "e", renamed), Console(quiet=True))
    with pytest.raises(ModelLoadError, match=r"model\.init: .*nope: no such directory"):
        load_inputs(
            _config(tmp_path / "nope", tiny_data, tmp_path / "h", {"category": {}}, init=tmp_path / "nope"),
            Console(quiet=True),
        )
    with pytest.raises(ConfigError, match=r"model\.pooling is .cls., the model.s is .mean."):
        bad = _config(category_run, tiny_data, tmp_path / "f", {"sentiment": {}}).model_dump()
        bad["model"]["pooling"] = "cls"
        load_inputs(validate_config(bad), Console(quiet=True))
    # a shorter (or longer) cut changes what the carried heads and the embedding compute: refused, never
    # reported as kept exactly
    for length in (16, 64):
        bad = _config(category_run, tiny_data, tmp_path / "m", {"sentiment": {}}).model_dump()
        bad["model"]["max_length"] = length
        with pytest.raises(ConfigError, match=rf"model\.max_length is {length}, the model.s is 32"):
            load_inputs(validate_config(bad), Console(quiet=True))
    assert not (tmp_path / "m").exists()


def test_a_subset_of_the_models_labels_is_reindexed_to_its_order(category_run: Path, tmp_path: Path) -> None:
    path = tmp_path / "kitchen_only.csv"
    path.write_text("text,category\n" + "".join(f"pan {i},kitchen\n" for i in range(6)) + "book,books\n")
    cfg = _config(category_run, {"train": str(path)}, tmp_path / "g", {"category": {}}, strategy="heads")
    inputs = load_inputs(cfg, Console(quiet=True))
    start = MultiTaskModel.load(category_run)
    assert inputs.data.labels["category"] == start.tasks["category"].labels
    kitchen = start.tasks["category"].labels.index("kitchen")
    assert list(inputs.data.splits["train"].labels["category"][:6]) == [kitchen] * 6


def test_lora_on_a_lora_model_saves_a_model_that_loads_with_every_task(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    a = tmp_path / "a"
    train(_config(tiny_backbone_dir, tiny_data, a, {"category": {}}, strategy="lora"), show_progress=False)
    assert MultiTaskModel.load(a).lora is not None
    cfg = _config(a, tiny_data, tmp_path / "b", {"sentiment": {}}, strategy="lora")
    result = train(cfg, show_progress=False)
    end = MultiTaskModel.load(tmp_path / "b")  # saved whole: adapters alone would need a's merged base
    assert set(end.tasks) == {"category", "sentiment"} and end.lora is None
    assert result.retention["tasks"]["category"]["agreement"] > 0.5


def test_retention_appears_in_metrics_and_in_the_console(
    tiny_backbone_dir: Path,
    tiny_data: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("mtst.training.finish.MOVED_COSINE", 0.999)  # the tiny model moves little in a few steps
    sts = tmp_path / "sts.jsonl"
    sts.write_text(
        "".join(
            json.dumps({"sentence1": a, "sentence2": b, "score": s}) + "\n"
            for a, b, s in [
                ("a good book", "a great novel", 4.5),
                ("a good book", "the pan rusted", 0.5),
                ("i loved it", "i liked it", 4.0),
            ]
        )
    )
    cfg = _config(tiny_backbone_dir, tiny_data, tmp_path / "run", {"category": {}}, strategy="full")
    raw = cfg.model_dump(mode="json")
    raw["data"]["sts"] = str(sts)
    path = tmp_path / "config.yaml"
    import yaml

    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path), "-q"]) == 0
    kept = json.loads((tmp_path / "run" / "metrics.json").read_text())["retention"]
    assert 0 < kept["embedding"]["cosine"] <= 1 and set(kept["embedding"]["sts"]) == {"start", "end"}
    assert kept["protect"] == "free" and kept["start"] == "pretrained"
    printed = capsys.readouterr()
    assert "embedding (cosine to start)" in printed.out and "STS" in printed.out
    assert kept["embedding"]["cosine"] < 0.999  # not held on a new model: the run says what moved
    assert "the sentence embedding moved" in " ".join(printed.err.split())
    # mtst evaluate --sts: the same Spearman for the saved model
    assert main(["evaluate", str(tmp_path / "run"), "--sts", str(sts)]) == 0
    assert "STS" in capsys.readouterr().out


def test_a_carried_token_head_is_distilled_per_token_and_saved(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    from tests.conftest import make_tasks

    torch.manual_seed(0)
    tasks = {
        "tags": make_tasks()["category"].model_copy(update={"type": "token_classification", "labels": ["O", "B-X"]})
    }
    start = MultiTaskModel.from_backbone(tasks, backbone=str(tiny_backbone_dir), max_length=32).save(
        tmp_path / "tagger"
    )
    retained = _free_and_distill(start, tiny_data, tmp_path, {"heads": 5.0})
    kept = {protect: r["tasks"]["tags"]["agreement"] for protect, r in retained.items()}
    for protect in kept:
        end = MultiTaskModel.load(tmp_path / protect)
        assert (
            set(end.tasks) == {"tags", "sentiment"} and end.predict(["a good pan"], tasks=["tags"])[0]["tags"]["words"]
        )
    assert kept["distill"] >= kept["free"] and kept["distill"] > 0.9


def test_the_retention_table_shows_start_and_end_only_where_measured() -> None:
    from rich.console import Console as RichConsole

    from mtst.report import retention_table

    def shown(kept: dict) -> str:
        console = RichConsole(record=True, width=120)
        console.print(retention_table(kept))
        return console.export_text()

    plain = shown({"protect": "free", "embedding": {"cosine": 0.61}, "tasks": {}})
    assert "0.610" in plain and "start -> end" not in plain and "keep.protect free" in plain
    full = shown(
        {
            "protect": "distill",
            "embedding": {"cosine": 0.95, "sts": {"start": 0.82, "end": 0.815}},
            "tasks": {"coarse": {"agreement": 0.97, "test": {"start": {"accuracy": 0.97}, "end": {"accuracy": 0.968}}}},
        }
    )
    assert "STS 82.0 -> 81.5" in full and "97.0%" in full and "test accuracy 97.0 -> 96.8" in full
    assert "keep.texts" not in full
    texts = shown(
        {
            "protect": "distill",
            "embedding": {"cosine": 0.95, "keep_texts": {"cosine": 0.981}},
            "tasks": {"coarse": {"agreement": 0.97, "keep_texts": {"agreement": 0.994, "rows": 1000}}},
        }
    )
    lines = [line for line in texts.splitlines() if "on keep.texts" in line]
    assert len(lines) == 2 and "0.981" in lines[0] and "99.4%" in lines[1]
    assert retention_table({}) is None


def test_a_row_without_recorded_start_outputs_is_an_error_not_another_rows_target() -> None:
    from mtst.training.stages.distill import StartTargets

    targets = StartTargets(np.array([0, 2]), torch.zeros(2, 4), {}, np.array([0, 2]))
    assert targets.positions([2, 0]).tolist() == [1, 0]
    for missing in ([1], [3], [0, 7]):
        with pytest.raises(ValueError, match="no start outputs recorded"):
            targets.positions(missing)


OLD_DOMAIN = [
    "Where is the nearest train station?",
    "How many legs does a spider have?",
    "Who wrote the first dictionary?",
    "What time does the museum open on Sundays?",
    "Why is the sky blue in the afternoon?",
    "Which river is the longest in Europe?",
    "When was the telephone invented?",
    "How far is the moon from the earth?",
    "What does a carpenter do all day?",
    "Who painted the ceiling of the chapel?",
]


def test_keep_texts_are_drawn_in_length_runs_and_pull_the_encoder_back(tiny_model: MultiTaskModel) -> None:
    model = tiny_model
    ids = model.encoder.tokenize_ids(OLD_DOMAIN)
    keep = KeepPlan("distill", ("category",), 0.6, 1.0, 2.0, "pretrained", True, "old.txt")
    texts = keep_texts(model, ids, keep, 0, 4)
    assert texts is not None and keep_texts(model, ids, KeepPlan("distill", ("category",), 0.0, 0.0), 0, 4) is None
    first = [texts.draw(4) for _ in range(2)]
    assert sorted(np.concatenate([*first, texts.draw(2)]).tolist()) == list(range(10))  # one pass: every text once
    assert len(texts.draw(4)) == 4  # and on into the next pass
    model.eval()  # dropout off: the loss is the drift alone
    with torch.no_grad():
        assert float(texts.loss(model, 10, keep)) < 1e-5  # at the start: nothing lost
        for p in model.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    loss = texts.loss(model, 16, keep)  # more than there are: all of them
    assert loss is not None and loss.item() > 1e-3
    loss.backward()
    grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_a_run_holds_keep_texts_and_reports_them(category_run: Path, tiny_data: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("\n".join(OLD_DOMAIN) + "\n")
    keep = {"protect": "distill", "texts": str(tmp_path / "old.txt")}
    cfg = _config(category_run, tiny_data, tmp_path / "run", {"sentiment": {}}, strategy="full", keep=keep)
    inputs, plan = make_plan(load_inputs(cfg, Console(quiet=True)))
    assert len(inputs.keep_ids) == len(OLD_DOMAIN) and plan.keep.texts == str(tmp_path / "old.txt")
    assert "and " + str(tmp_path / "old.txt") in plan.keep.describe()
    kept = train(cfg, show_progress=False).retention
    figures = kept["tasks"]["category"]["keep_texts"]
    assert figures["rows"] == len(OLD_DOMAIN) and 0.5 <= figures["agreement"] <= 1
    assert 0.5 < kept["embedding"]["keep_texts"]["cosine"] <= 1.0001


def test_keep_texts_are_read_before_the_run_and_named_in_errors_and_warnings(
    category_run: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    cfg = _config(category_run, tiny_data, tmp_path / "a", {"sentiment": {}}, keep={"texts": str(tmp_path / "no.txt")})
    with pytest.raises(DataError, match=r"training\.keep\.texts: .*no\.txt: no such file"):
        load_inputs(cfg, Console(quiet=True))
    assert not (tmp_path / "a").exists()
    (tmp_path / "old.csv").write_text("question\n" + "\n".join(OLD_DOMAIN) + "\n")
    cfg = _config(category_run, tiny_data, tmp_path / "b", {"sentiment": {}}, keep={"texts": str(tmp_path / "old.csv")})
    with pytest.raises(DataError, match=r"training\.keep\.texts: .*old\.csv: no column 'text'.*keep\.text_column"):
        load_inputs(cfg, Console(quiet=True))
    keep = {"texts": str(tmp_path / "old.csv"), "text_column": "question"}  # the old file's own column
    cfg = _config(category_run, tiny_data, tmp_path / "b", {"sentiment": {}}, keep=keep)
    assert len(load_inputs(cfg, Console(quiet=True)).keep_ids) == len(OLD_DOMAIN)
    (tmp_path / "old.txt").write_text("\n".join(OLD_DOMAIN) + "\n")
    cfg = _config(
        category_run,
        tiny_data,
        tmp_path / "c",
        {"sentiment": {}},
        strategy="heads",
        keep={"texts": str(tmp_path / "old.txt"), "texts_limit": 4},
    )
    inputs, plan = make_plan(load_inputs(cfg, Console(quiet=True)))
    assert len(inputs.keep_ids) == 4 and plan.keep.texts is None  # a seeded sample; unused: nothing moves
    assert any("training.keep.texts is not used: the encoder does not move" in w for w in plan.warnings)


def test_keep_texts_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "old.txt").write_text("a question?\n")
    (tmp_path / "conf" / "run.yaml").write_text(
        "tasks: {sentiment: {}}\ndata: {train: t.csv}\ntraining: {keep: {texts: old.txt}}\n"
    )
    cfg = load_config(tmp_path / "conf" / "run.yaml")
    assert cfg.training.keep.texts == str(tmp_path / "conf" / "old.txt")


def test_a_run_that_did_not_finish_is_not_a_silent_starting_model(
    trained_run: Path, tiny_data: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from mtst.cli import main
    from mtst.training.runtime.rundir import RunLock

    killed = tmp_path / "killed"
    shutil.copytree(trained_run, killed)
    (killed / "metrics.json").unlink()  # killed after an evaluation: its model/ is the best so far
    cfg = _config(killed, tiny_data, tmp_path / "next", {"sentiment": {}}, strategy="heads")
    with pytest.raises(ModelLoadError, match=r"did not finish.*mtst train --resume .*killed.*or name .*killed/model"):
        load_inputs(cfg, Console(quiet=True))
    lock = RunLock(killed).acquire()  # the same run, still training
    try:
        with pytest.raises(ModelLoadError, match=r"is still training"):
            load_inputs(cfg, Console(quiet=True))
    finally:
        lock.release()
    chosen = _config(killed / "model", tiny_data, tmp_path / "next", {"sentiment": {}}, strategy="heads")
    assert load_inputs(chosen, Console(quiet=True)).continued == (
        "sentiment",
    )  # its model, named on purpose, starts a run
    shutil.rmtree(killed / "model")  # killed before its first evaluation
    with pytest.raises(ModelLoadError, match=r"did not finish.*mtst train --resume"):
        load_inputs(cfg, Console(quiet=True))
    assert main(["predict", str(killed), "some text"]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "saved no model yet" in err and "mtst train --resume" in err
    assert not (tmp_path / "next").exists()
