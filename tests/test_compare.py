"""``mtst compare`` on the tiny model: the sweep, the report files, the recommendation, drift, resume."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml

from mtst.cli import main
from mtst.compare.report import recommend
from mtst.compare.summary import summarize
from mtst.compare.sweep import parse_strategies, plan_runs, run_config
from mtst.errors import ConfigError


def test_parse_strategies() -> None:
    parsed = parse_strategies("frozen,top_k:3,lora:16")
    assert parsed[1] == ("top_k:3", {"strategy": "top_k", "top_k": 3})
    assert parsed[2][1]["lora"] == {"r": 16, "alpha": 32}
    with pytest.raises(ConfigError, match="allowed: auto, frozen"):
        parse_strategies("frozen,everything")
    assert parse_strategies("auto,full")[0] == ("auto", {"strategy": "auto"})  # the default recipe
    with pytest.raises(ConfigError, match="only top_k:K and lora:RANK"):
        parse_strategies("auto:2")
    with pytest.raises(ConfigError, match="only top_k:K and lora:RANK"):
        parse_strategies("full:2")


def test_plan_and_run_config(tmp_path: Path) -> None:
    runs = plan_runs(parse_strategies("heads,full"), [1, 2], [0.5, 1.0], ["cls"])
    assert len(runs) == 2 * 2 * 2 + 1 and len({r.name for r in runs}) == len(runs)
    raw = run_config(
        {"training": {"lora": {"dropout": 0.2}}},
        plan_runs(parse_strategies("lora:4"), [7], [0.5])[0],
        tmp_path / "r",
        tmp_path / "c",
    )
    assert raw["training"]["lora"] == {"dropout": 0.2, "r": 4, "alpha": 8}
    assert raw["training"]["seed"] == 7 and raw["data"]["train_fraction"] == 0.5


@pytest.fixture
def compare_config(tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path) -> Path:
    cfg = {
        "model": {"backbone": str(tiny_backbone_dir), "max_length": 32},
        "tasks": {"category": {}, "sentiment": {}},
        "data": dict(tiny_data),
        "training": {"batch_size": 8, "epochs": 2, "min_steps": None, "lr_head": 1e-2, "lr_backbone": 1e-3},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_compare_sweep_report_and_resume(compare_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sts = tmp_path / "sts.csv"
    with sts.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sentence1", "sentence2", "score"])
        writer.writerows(
            [
                ["a good pan", "a great pan", 4.5],
                ["a dull novel", "the pan rusted", 0.5],
                ["i loved every page", "a wonderful novel", 4.0],
                ["broke off", "cleans up easily", 1.0],
            ]
        )
    out = tmp_path / "report"
    args = [
        "compare",
        str(compare_config),
        "--strategies",
        "frozen,heads,full,auto",
        "--train-fractions",
        "0.5,1",
        "--poolings",
        "cls,max",
        "--sts",
        str(sts),
        "-o",
        str(out),
        "-q",
    ]
    assert main(args) == 0
    payload = json.loads((out / "results.json").read_text())
    assert {r["label"] for r in payload["runs"]} == {"frozen", "heads", "full", "auto"}
    assert len(payload["runs"]) == 4 * 2 + 2
    auto = next(r for r in payload["runs"] if r["label"] == "auto" and r["fraction"] == 1.0)
    assert auto["metrics"]["strategy"] in {"frozen", "full"}  # the recipe's choice, recorded by the run
    for run in payload["runs"]:
        assert {"test", "trainable_parameters", "train_seconds", "peak_rss_mb"} <= set(run["metrics"])
        assert run["model_mb"] > 0
    drift = {r["label"]: r["drift"] for r in payload["runs"] if r["fraction"] == 1.0 and r["pooling"] is None}
    assert drift["frozen"] == pytest.approx(0, abs=1e-5) and drift["heads"] == pytest.approx(0, abs=1e-5)
    assert drift["full"] > 1e-4
    cosine = {
        r["label"]: r["metrics"]["retention"]["embedding"]["cosine"] for r in payload["runs"] if r["pooling"] is None
    }
    assert cosine["frozen"] == cosine["heads"] == 1.0 and cosine["full"] < 1.0  # each run's own retention record
    full_run = next(r for r in payload["runs"] if r["label"] == "full" and r["fraction"] == 1.0)
    assert set(full_run["stale_heads"]["tasks"]) == {"category", "sentiment"}
    assert "sts" in full_run and "sts_base" in payload["encoders"]
    assert set(payload["encoders"]["sts_by_pooling"]) == {"cls", "max"}

    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for name in ("metric_vs_parameters", "metric_vs_time", "learning_curves", "drift"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
        assert f"plots/{name}.png" in md
    assert html.count("data:image/png;base64,") == 4 and "<table>" in html
    rows = summarize(payload)
    best = max((r for r in rows if r.fraction == 1.0), key=lambda r: r.mean)
    first = recommend(payload, rows)[0]
    assert f"Recommended: `{best.display}`" in first and f"{100 * best.mean:.1f}" in first
    assert f"Recommended: `{best.display}`" in md
    # A strategy that moves the encoder less and keeps more similarity is named beside the best.
    kept = dataclasses.replace(
        best, label="gradual", primary=[best.mean - 0.05], drift=0.01, sts=max(r.sts or 0 for r in rows) + 0.05
    )
    assert any("`gradual` keeps the most" in line for line in recommend(payload, [*rows, kept]))
    printed = capsys.readouterr().out
    assert re.search(rf"Recommended: {re.escape(best.display)}\.", printed)
    assert f"auto ({auto['metrics']['strategy']})" in printed  # the table names the recipe's choice
    assert f"{best.train_rows:,} training rows" in printed  # the table is the full-data one, not the 50% one
    assert "kept" in printed and "kept" in md  # the retention column, in the terminal and in the report

    # A second call finds every run finished and repeats none of them.
    stamps = {p: p.stat().st_mtime for p in (out / "runs").glob("*/metrics.json")}
    assert main(args) == 0
    assert stamps == {p: p.stat().st_mtime for p in (out / "runs").glob("*/metrics.json")}
    assert "reusing finished run" in capsys.readouterr().err


def test_compare_bad_options_fail_before_running(compare_config: Path, tmp_path: Path) -> None:
    assert main(["compare", str(compare_config), "--train-fractions", "0,1", "-o", str(tmp_path / "x")]) == 2
    assert main(["compare", str(compare_config), "--poolings", "avg", "-o", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_a_failed_run_is_reported_beside_the_others(
    compare_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "report"
    args = ["compare", str(compare_config), "--strategies", "heads,lora", "-o", str(out), "-q"]
    args += ["--set", "training.lora.target_modules=[no_such_layer]"]  # only the lora run reads it
    assert main(args) == 1
    payload = json.loads((out / "results.json").read_text())
    assert [r["label"] for r in payload["runs"]] == ["heads"]
    assert [f["label"] for f in payload["failed"]] == ["lora"]
    assert "no_such_layer" in payload["failed"][0]["error"]
    md = (out / "report.md").read_text()
    assert "Runs that failed" in md and "lora-f1-s42" in md
    assert "1 of 2 runs failed" in capsys.readouterr().err.replace("\n", " ")


def test_every_run_failing_is_an_error_that_names_them(compare_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    (out / "plots").mkdir(parents=True)
    for stale in ("report.md", "report.html", "plots/metric_vs_time.png"):  # an earlier sweep's report
        (out / stale).write_text("Recommended: `full`")
    (out / "notes.txt").write_text("the user's own file")
    args = ["compare", str(compare_config), "--strategies", "lora", "-o", str(out), "-q"]
    assert main([*args, "--set", "training.lora.target_modules=[no_such_layer]"]) == 2
    assert json.loads((out / "results.json").read_text())["failed"][0]["name"] == "lora-f1-s42"
    # the report described other results: it goes with them; nothing else in the folder is touched
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["notes.txt", "results.json"]
    assert not (out / "plots").exists()


def test_the_sweep_hears_the_progress_of_the_run_it_started(compare_config: Path, tmp_path: Path) -> None:
    from mtst.compare.sweep import execute
    from mtst.config import load_config

    raw = load_config(compare_config, []).model_dump(mode="json")
    raw["output_dir"] = str(tmp_path / "run")
    raw["training"]["strategy"] = "full"
    seen: list[dict] = []
    metrics, _ = execute(raw, tmp_path / "run", seen.append)
    assert metrics["steps"] > 0
    assert seen and seen[-1]["description"] == "training" and seen[-1]["completed"] == seen[-1]["total"]
    assert not (tmp_path / "run" / "progress.json").exists()
