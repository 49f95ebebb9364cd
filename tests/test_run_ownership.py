"""A run owns its directory, says what it did, and stops on Ctrl-C with a way to continue."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from mtst.cli import main
from mtst.config import dump_config
from mtst.training.loop import TrainingLoop
from mtst.training.runtime.rundir import LOCK_FILE, RunLock
from mtst.training.state import TrainingInterrupted
from mtst.training.trainer import train

from .test_training import make_config


def _config_file(tmp_path: Path, tiny_backbone_dir: Path, tiny_data: dict[str, str], **training: Any) -> str:
    cfg = make_config(tiny_backbone_dir, tiny_data, tmp_path / "run", **training)
    path = tmp_path / "run.yaml"
    path.write_text(dump_config(cfg))
    return str(path)


def test_a_second_run_into_a_held_directory_is_refused_naming_the_holder(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config_file(tmp_path, tiny_backbone_dir, tiny_data, strategy="heads", max_steps=2)
    holder = RunLock(tmp_path / "run").acquire()  # another run holds the directory
    try:
        assert main(["train", cfg, "-q"]) == 2
        err = capsys.readouterr().err.replace("\n", " ")
        assert "in use by another mtst run" in err
        assert f"pid {os.getpid()}" in err
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [LOCK_FILE]  # nothing of the refused run
        assert main(["train", cfg, "-q", "--overwrite"]) == 2  # nor does --overwrite take a live run's directory
    finally:
        holder.release()
    assert main(["train", cfg, "-q"]) == 0  # free again
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # released at the end of the run


def test_a_stale_lock_is_taken_over(tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path) -> None:
    cfg = _config_file(tmp_path, tiny_backbone_dir, tiny_data, strategy="heads", max_steps=2)
    (tmp_path / "run").mkdir()
    # the lock of a run that crashed: its pid is written, but nobody holds the file
    (tmp_path / "run" / LOCK_FILE).write_text(json.dumps({"pid": 2**22 + 7, "host": "h", "started": "then"}))
    assert main(["train", cfg, "-q"]) == 0
    assert (tmp_path / "run" / "model").is_dir()
    assert "stale lock" in (tmp_path / "run" / "train.log").read_text()


def test_a_failed_start_leaves_no_directory_behind(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    cfg = _config_file(tmp_path, tiny_backbone_dir, {**tiny_data, "text_column": "body"})
    assert main(["train", cfg, "-q"]) == 2
    assert not (tmp_path / "run").exists()


def test_the_console_gets_a_summary_and_the_run_directory_the_whole_config(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config_file(tmp_path, tiny_backbone_dir, tiny_data, strategy="full", max_steps=3)
    assert main(["train", cfg, "-q"]) == 0
    err = capsys.readouterr().err
    assert "resolved config" not in err and "lr_backbone:" not in err
    assert "3 steps, " in err  # what ran, not just a step count
    log = (tmp_path / "run" / "train.log").read_text()
    assert "resolved config" in log and "lr_backbone:" in log
    assert main(["train", cfg, "-q", "--overwrite", "--verbose"]) == 0
    assert "lr_backbone:" in capsys.readouterr().err


def test_the_end_line_names_the_stages_that_ran(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    stage = {"enabled": True, "min_steps": 2, "max_steps": 2}
    cfg = make_config(tiny_backbone_dir, tiny_data, tmp_path / "run", strategy="frozen", contrastive=stage)
    result = train(cfg, show_progress=False)
    assert result.stages == ("contrastive stage 4 steps", "logistic heads")
    assert result.steps == 0


def test_ctrl_c_says_where_it_stopped_and_how_to_resume(
    tiny_backbone_dir: Path,
    tiny_data: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = _config_file(tmp_path, tiny_backbone_dir, tiny_data, strategy="full", epochs=3, checkpoint_every=2)
    checkpoint = TrainingLoop.checkpoint

    def interrupt_after_the_second(self: TrainingLoop, started: float) -> None:
        checkpoint(self, started)
        if self.state.global_step >= 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(TrainingLoop, "checkpoint", interrupt_after_the_second)
    assert main(["train", cfg, "-q"]) == 130
    err = capsys.readouterr().err.replace("\n", " ")
    assert "interrupted at step 4" in err
    assert f"mtst train --resume {tmp_path / 'run'}" in err
    assert "interrupted at step 4" in (tmp_path / "run" / "train.log").read_text()
    assert not (tmp_path / "run" / LOCK_FILE).exists()
    monkeypatch.setattr(TrainingLoop, "checkpoint", checkpoint)
    assert main(["train", "--resume", str(tmp_path / "run"), "-q"]) == 0
    assert "steps 4-" in capsys.readouterr().err


def test_ctrl_c_before_any_checkpoint_says_to_start_again(
    tiny_backbone_dir: Path, tiny_data: dict[str, str], tmp_path: Path
) -> None:
    cfg = make_config(tiny_backbone_dir, tiny_data, tmp_path / "run", strategy="full", max_steps=5)

    def stop(event: Any) -> None:
        raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="before any checkpoint"):
        train(cfg, callbacks=[stop], show_progress=False)


def test_an_output_dir_that_cannot_be_made_is_a_message(tmp_path: Path) -> None:
    from mtst.errors import MtstError

    (tmp_path / "a-file").write_text("x")
    with pytest.raises(MtstError, match="output_dir: cannot write to"):
        RunLock(tmp_path / "a-file" / "run").acquire()
