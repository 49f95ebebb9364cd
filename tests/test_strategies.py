"""Every strategy through one shared tester (peft's TEST_CASES style): cache, resume, save/load, ONNX.

Adding a strategy adds a row to ``CASES``; every aspect then runs on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mtst.cli import main
from mtst.config import validate_config
from mtst.errors import MtstError
from mtst.modeling.model import MultiTaskModel
from mtst.training.planning.strategies import NAMES
from mtst.training.trainer import StepEvent, train

from .conftest import SENTENCES, save_tiny_bert

CASES: dict[str, dict[str, Any]] = {
    "frozen": {"strategy": "frozen"},
    "heads": {"strategy": "heads"},
    "top_k": {"strategy": "top_k", "top_k": 1},
    "gradual": {"strategy": "gradual", "gradual": {"stage_steps": 2}},
    "full": {"strategy": "full", "layer_decay": 0.8},
    "lora": {"strategy": "lora", "lora": {"r": 2}},
    "lora_merged": {"strategy": "lora", "lora": {"r": 2, "save": "merged", "full_top_k": 1}},
    # a contrastive stage first: through the prefix cache (frozen, top_k), every layer (full), adapters (lora)
    "frozen_contrastive": {"strategy": "frozen", "contrastive": {"enabled": True, "top_k": 1, "max_steps": 3}},
    "top_k_contrastive": {"strategy": "top_k", "top_k": 1, "contrastive": {"enabled": True, "max_steps": 3}},
    "full_contrastive": {"strategy": "full", "contrastive": {"enabled": True, "max_steps": 3}},
    "lora_contrastive": {"strategy": "lora", "lora": {"r": 2}, "contrastive": {"enabled": True, "max_steps": 3}},
}
ASPECTS = ("cache", "resume", "save_load", "onnx")


def test_every_strategy_has_a_case() -> None:
    assert {c["strategy"] for c in CASES.values()} == set(NAMES)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No dropout anywhere, so cached and uncached runs can agree to the last digit."""
    return save_tiny_bert(
        tmp_path_factory.mktemp("bert-nodrop"), seed=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """Each case's run with its own settings, trained once for every aspect that reads it (never changed)."""
    return {}


class StrategyTester:
    """The checks every strategy must pass, on fresh run directories under ``root``; the case's run with its
    own settings is trained once (``shared``) and read by every check that needs no other."""

    def __init__(
        self,
        backbone: Path,
        data: dict[str, str],
        root: Path,
        case: dict[str, Any],
        shared: dict[str, tuple[Path, Any]] | None = None,
        name: str = "",
        shared_root: Any = None,
    ) -> None:
        self.backbone, self.data, self.root, self.case = backbone, data, root, case
        self.shared, self.name = shared if shared is not None else {}, name
        self.shared_root = shared_root or (lambda: root)  # where the shared run goes: it outlives one test

    def run(self) -> tuple[Path, Any]:
        """The case's run as it is configured (caches on, no checkpoint option): its directory and result."""
        if self.name not in self.shared:
            config = self.config("run")
            config = config.model_copy(update={"output_dir": str(self.shared_root() / "run")})
            self.shared[self.name] = (Path(config.output_dir), train(config, show_progress=False))
        return self.shared[self.name]

    def config(self, name: str, **extra: Any) -> Any:
        training = {"batch_size": 8, "max_steps": 6, "min_steps": None, "lr_backbone": 1e-3, **self.case, **extra}
        return validate_config(
            {
                "model": {"backbone": str(self.backbone), "max_length": 32},
                "tasks": {"category": {"dropout": 0.0}, "sentiment": {"dropout": 0.0}},
                "data": dict(self.data),
                "training": training,
                "output_dir": str(self.root / name),
            }
        )

    def check_cache(self) -> None:
        """Caches of frozen work change nothing: same validation history and test figures."""
        cached = self.run()[1]  # caches are on by default
        assert self.config("cached").training.cache.enabled
        plain = train(self.config("plain", cache=False), show_progress=False)
        assert cached.steps == plain.steps
        for a, b in zip(cached.history, plain.history, strict=True):
            assert a.get("validation", {}) == pytest.approx(b.get("validation", {}), abs=1e-6)
        assert cached.test.keys() == plain.test.keys()
        for task in cached.test:
            assert cached.test[task]["accuracy"] == pytest.approx(plain.test[task]["accuracy"], abs=1e-6)

    def check_resume(self) -> None:
        """A run stopped after a checkpoint and resumed ends where an uninterrupted one does."""
        straight = train(self.config("straight", checkpoint_every=2), show_progress=False)
        if self.case["strategy"] == "frozen":  # nothing to resume: no step, no checkpoint
            with pytest.raises(MtstError, match="no checkpoint"):
                train(self.config("straight"), resume=True, show_progress=False)
            return

        class Stop(Exception):
            pass

        def stop(event: StepEvent) -> None:
            if event.state.global_step == 3:
                raise Stop

        with pytest.raises(Stop):
            train(self.config("stopped", checkpoint_every=2), callbacks=[stop], show_progress=False)
        assert main(["train", "--resume", str(self.root / "stopped"), "-q"]) == 0
        resumed = json.loads((self.root / "stopped" / "metrics.json").read_text())
        assert resumed["steps"] == straight.steps
        assert resumed["test"] == pytest.approx(
            json.loads((self.root / "straight" / "metrics.json").read_text())["test"]
        )

    def check_save_load(self) -> dict[str, Any]:
        """The saved model loads alone and scores on test what the run reported."""
        saved, result = self.run()
        model = MultiTaskModel.load(saved)
        if self.case["strategy"] == "lora":
            merged = self.case["lora"].get("save") == "merged"
            assert (model.lora is None) == merged
        from mtst.evaluate import evaluate_file

        scores = evaluate_file(model, self.data["test"])
        for task, m in result.test.items():
            assert scores[task]["accuracy"] == pytest.approx(m["accuracy"], abs=1e-6), task
        return result.test

    def check_onnx(self) -> None:
        """The ONNX export of the saved model predicts what the torch model does."""
        pytest.importorskip("onnxruntime")
        from mtst.export import OnnxPredictor, export

        saved = self.run()[0]
        model = MultiTaskModel.load(saved)
        out = export(saved, "onnx", self.root / "onnx")
        ours, theirs = model.predict(SENTENCES), OnnxPredictor(out).predict(SENTENCES)
        for a, b in zip(ours, theirs, strict=True):
            for task in a:
                assert a[task]["label"] == b[task]["label"]
                assert np.allclose(
                    list(a[task]["probabilities"].values()), list(b[task]["probabilities"].values()), atol=1e-4
                )


@pytest.mark.parametrize("aspect", ASPECTS)
@pytest.mark.parametrize("case", list(CASES))
def test_strategy(
    case: str,
    aspect: str,
    backbone: Path,
    tiny_data: dict[str, str],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    runs: dict[str, tuple[Path, Any]],
) -> None:
    shared_root = lambda: tmp_path_factory.mktemp(case)  # noqa: E731  (made only when the shared run is)
    tester = StrategyTester(backbone, tiny_data, tmp_path, CASES[case], runs, case, shared_root)
    getattr(tester, f"check_{aspect}")()
