from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtst.cli import main

from .conftest import SENTENCES


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_encode_arguments_piped_output_is_jsonl(capsys: pytest.CaptureFixture[str], tiny_backbone_dir: Path) -> None:
    code, out, _ = run(capsys, "encode", "hello there", "good bye", "--model", str(tiny_backbone_dir))
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in rows] == ["hello there", "good bye"]
    assert len(rows[0]["embedding"]) == 32


@pytest.mark.parametrize("suffix", [".npy", ".jsonl"])
def test_encode_file_to_output(
    capsys: pytest.CaptureFixture[str], tiny_backbone_dir: Path, tmp_path: Path, suffix: str
) -> None:
    src = tmp_path / "in.csv"
    src.write_text("id,body\n" + "\n".join(f'{i},"{t}"' for i, t in enumerate(SENTENCES)) + "\n")
    out_file = tmp_path / f"out{suffix}"
    code, _, _ = run(
        capsys,
        "encode",
        "-i",
        str(src),
        "--text-column",
        "body",
        "-o",
        str(out_file),
        "--model",
        str(tiny_backbone_dir),
        "--normalize",
    )
    assert code == 0
    if suffix == ".npy":
        emb = np.load(out_file)
    else:
        emb = np.array([json.loads(line)["embedding"] for line in out_file.read_text().splitlines()])
    assert emb.shape == (len(SENTENCES), 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_similarity_and_search(capsys: pytest.CaptureFixture[str], tiny_backbone_dir: Path, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "similarity", "same text", "same text", "--model", str(tiny_backbone_dir))
    assert code == 0 and float(out) == pytest.approx(1.0, abs=1e-5)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n")
    code, out, _ = run(
        capsys, "search", "--corpus", str(corpus), "--query", SENTENCES[1], "-k", "2", "--model", str(tiny_backbone_dir)
    )
    hits = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(hits) == 2
    assert hits[0]["text"] == SENTENCES[1] and hits[0]["rank"] == 1


def _bad_utf8(tmp_path: Path) -> list[str]:
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    return ["encode", "-i", str(bad)]


def _missing_column(tmp_path: Path) -> list[str]:
    f = tmp_path / "rows.jsonl"
    f.write_text('{"body": "hello"}\n')
    return ["encode", "-i", str(f)]


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda _: ["encode", ""], "empty"),
        (lambda _: ["encode", "   "], "empty"),
        (_bad_utf8, "not valid UTF-8"),
        (_missing_column, "no column 'text'"),
        (lambda _: ["encode", "x", "--pooling", "median"], "median"),
        (lambda t: ["encode", "x", "--model", str(t / "no-such-model")], "no such directory"),
        (lambda _: ["encode"], "nothing to encode"),
        (lambda t: ["encode", "x", "-o", str(t / "out.csv")], ".npy or .jsonl"),
    ],
)
def test_bad_inputs_exit_2_and_write_nothing(
    capsys: pytest.CaptureFixture[str], tiny_backbone_dir: Path, tmp_path: Path, make_args, message: str
) -> None:
    args = make_args(tmp_path)
    if "--model" not in args:
        args += ["--model", str(tiny_backbone_dir)]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "result.npy")]
    before = set(tmp_path.iterdir())
    code, out, err = run(capsys, *args)
    assert code == 2
    assert message in err
    assert set(tmp_path.iterdir()) == before
    assert out == ""


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from mtst.version import __version__

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith(f"mtst {__version__} torch ")
    assert " transformers " in out and " peft " in out and " accelerate " in out


def test_a_missing_model_path_is_named_as_missing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "predict", str(tmp_path / "nowhere"), "some text")
    assert code == 2 and f"{tmp_path / 'nowhere'}: no such directory" in err.replace("\n", "")


def test_messages_keep_square_brackets(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """An error naming an extra (``mtst[onnx]``) or a path like ``runs/[a]`` prints it whole: the console's
    markup must not read them as style tags."""
    missing = tmp_path / "[bold]" / "run[onnx]"
    code, _, err = run(capsys, "predict", str(missing), "some text")
    assert code == 2 and f"{missing}: no such directory" in err.replace("\n", "")


def test_saved_files_are_readable_as_any_other_file(tiny_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import os
    import stat

    tiny_model.save(tmp_path / "m")
    (tmp_path / "plain").write_text("x")
    usual = stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)
    for path in (tmp_path / "m").rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == usual, path.name


def test_every_serve_setting_is_an_option_that_reaches_the_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import dataclasses

    import mtst.serve
    from mtst.config import ServeSettings

    seen = {}
    monkeypatch.setattr(mtst.serve, "serve", lambda run, host, port, settings, announce: seen.update(s=settings))
    args = ["--max-batch", "8", "--max-padding", "0.5", "--batch-wait-ms", "2", "--no-packing", "--max-texts", "3"]
    assert main(["serve", str(tmp_path), *args]) == 0
    settings = seen["s"]
    assert (settings.max_batch, settings.max_padding, settings.batch_wait_ms) == (8, 0.5, 2.0)
    assert (settings.packing, settings.max_texts) == (False, 3)
    assert main(["serve", str(tmp_path)]) == 0
    assert seen["s"] == ServeSettings()  # the options' defaults are the settings' own
    assert main(["serve", str(tmp_path), "--max-padding", "1.5"]) == 2  # out of range: refused
    from typer.main import get_command

    from mtst.cli import app

    options = {p.name for p in get_command(app).commands["serve"].params}  # type: ignore[attr-defined]
    renamed = {"max_body_bytes": "max_body_mb", "timeout_s": "timeout", "read_timeout_s": "read_timeout"}
    for field in dataclasses.fields(ServeSettings):
        assert renamed.get(field.name, field.name) in options, field.name


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(trained_run: Path, tmp_path: Path) -> None:
    """``mtst encode ... | head -1``: status 0 and nothing on stderr once the reader has what it wanted."""
    import subprocess
    import sys

    texts = tmp_path / "many.txt"
    texts.write_text("".join(f"text number {i}\n" for i in range(800)))  # output well over a pipe's buffer
    command = [sys.executable, "-m", "mtst", "encode", "--model", str(trained_run), "--input", str(texts)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().startswith(b'{"text": "text number 0"')
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and b"Traceback" not in err and b"Broken pipe" not in err, err[-500:]
