"""The strategy report's figures and sentences, on synthetic results (no training)."""

from __future__ import annotations

from typing import Any

import pytest

from mtst.compare.report import build_sections, recommend
from mtst.compare.summary import summarize


def run(
    label: str,
    seed: int,
    score: float,
    seconds: float,
    fraction: float = 1.0,
    drift: float | None = None,
    sts: float | None = None,
    pooling: str | None = None,
    stale: dict | None = None,
) -> dict[str, Any]:
    return {
        "label": label,
        "seed": seed,
        "fraction": fraction,
        "pooling": pooling,
        "model_mb": 1.0,
        "drift": drift,
        "sts": sts,
        "stale_heads": stale,
        "metrics": {
            "test": {"mean_macro_f1": score, "topic/accuracy": score},
            "test_detail": {"topic": {"accuracy": score + 0.01, "macro_f1": score}},
            "train_seconds": seconds,
            "trainable_parameters": 100,
            "total_parameters": 1000,
            "peak_rss_mb": 500.0,
            "train_rows": int(1000 * fraction),
        },
    }


def payload(runs: list[dict[str, Any]], sts_base: float | None = None) -> dict[str, Any]:
    return {"metric": "mean_macro_f1", "seeds": [0, 1], "runs": runs, "encoders": {"sts_base": sts_base}}


def test_summarize_averages_seeds_per_strategy_and_fraction() -> None:
    rows = summarize(
        payload(
            [
                run("full", 0, 0.80, 30, drift=0.1),
                run("full", 1, 0.90, 50, drift=0.3),
                run("heads", 0, 0.70, 2),
                run("frozen", 0, 0.60, 1, pooling="max"),  # a linear probe: not a strategy row
            ]
        )
    )
    by = {r.label: r for r in rows}
    assert set(by) == {"full", "heads"}
    assert by["full"].mean == pytest.approx(0.85) and by["full"].std == pytest.approx(0.05)
    assert by["full"].train_seconds == pytest.approx(40) and by["full"].drift == pytest.approx(0.2)
    assert by["full"].tasks["topic"]["accuracy"] == pytest.approx([0.81, 0.91])
    assert by["heads"].std == 0.0 and by["heads"].drift is None


def test_recommend_names_the_winner_its_margin_and_the_cheap_option() -> None:
    runs = [run("full", s, 0.90 + 0.01 * s, 100) for s in (0, 1)] + [run("heads", s, 0.902, 2) for s in (0, 1)]
    sentences = recommend(payload(runs), summarize(payload(runs)))
    assert sentences[0].startswith("**Recommended: `full`.**") and "90.5" in sentences[0]
    assert "within the noise of the runner-up `heads`" in sentences[1]
    assert "When training time matters, `heads`" in sentences[2]
    quick = [run("full", s, 0.90, 0.3) for s in (0, 1)] + [run("heads", s, 0.89, 0.4) for s in (0, 1)]
    sentence = recommend(payload(quick), summarize(payload(quick)))[1]
    assert "(0.3 s vs 0.4 s)" in sentence and "0 s vs 0 s" not in sentence


def test_auto_rows_name_the_strategy_the_recipe_chose() -> None:
    runs = [run("auto", 0, 0.92, 80), run("heads", 0, 0.80, 2), run("auto", 0, 0.7, 3, fraction=0.1)]
    runs[0]["metrics"]["strategy"], runs[2]["metrics"]["strategy"] = "full", "frozen"
    rows = summarize(payload(runs))
    by = {(r.label, r.fraction): r for r in rows}
    assert by[("auto", 1.0)].display == "auto (full)" and by[("auto", 0.1)].display == "auto (frozen)"
    assert by[("heads", 1.0)].display == "heads"  # other labels are strategies already
    assert recommend(payload(runs), rows)[0].startswith("**Recommended: `auto (full)`.**")
    table = build_sections(payload(runs), rows, {})[1]["tables"][0][1]
    assert table[0][0] == "`auto (full)`"


def test_recommend_calls_a_clear_gap_a_lead_and_follows_the_data_size() -> None:
    runs = [
        run("full", 0, 0.95, 100),
        run("heads", 0, 0.80, 2),
        run("full", 0, 0.60, 30, fraction=0.1),
        run("heads", 0, 0.70, 1, fraction=0.1),
    ]
    sentences = recommend(payload(runs), summarize(payload(runs)))
    assert "15.0 points ahead of the runner-up `heads`" in sentences[1]
    assert "trains in 2 s but is 15.0 points behind" in sentences[2]
    assert any(s.startswith("The winner changes with data size: `heads` at 10%") for s in sentences)


def test_recommend_reports_forgetting_and_stale_heads() -> None:
    stale = {"from": "heads", "tasks": {"topic": {"before": 0.9, "after": 0.6}}}
    runs = [
        run("full", 0, 0.95, 100, drift=0.2, sts=0.5, stale=stale),
        run("gradual", 0, 0.90, 60, drift=0.05, sts=0.8),
        run("heads", 0, 0.85, 2, drift=0.0),
    ]
    sentences = recommend(payload(runs, sts_base=0.82), summarize(payload(runs, sts_base=0.82)))
    text = " ".join(sentences)
    assert "scores 90.0 there and 60.0 on the `full` backbone" in text
    assert "largest loss is `full` (50.0)" in text and "`gradual` keeps the most (80.0)" in text
    titles = [s["title"] for s in build_sections(payload(runs, 0.82), summarize(payload(runs, 0.82)), {})]
    assert titles == [
        "Recommendation",
        "Strategies",
        "Heads left on a moved backbone",
        "General similarity (STS) before and after",
    ]
