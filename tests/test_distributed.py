"""Several processes (gloo on CPU): sharded batches, averaged gradients, one writer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import free_port, save_tiny_bert

HELPER = Path(__file__).parent / "helpers" / "ddp_train.py"


def test_two_processes_match_one(tmp_path: Path, tiny_data: dict[str, str]) -> None:
    # No dropout anywhere, so one process with the global batch and two with half each compute the same step.
    backbone = save_tiny_bert(tmp_path / "bert", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    weights = {}
    for procs in (1, 2):
        out = tmp_path / f"out{procs}"
        out.mkdir()
        cfg = {
            "model": {"backbone": str(backbone), "max_length": 32},
            "tasks": {"category": {"dropout": 0.0}, "sentiment": {"dropout": 0.0}},
            "data": dict(tiny_data),
            "training": {
                "strategy": "full",
                "batch_size": 8,
                "max_steps": 5,
                "lr_backbone": 1e-3,
                "lr_head": 1e-2,
                "cache": False,
                "precision": "fp32",  # half batches round differently in bf16; the sums match in fp32
            },
            "output_dir": str(out / "run"),
        }
        (out / "cfg.yaml").write_text(yaml.safe_dump(cfg))
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={procs}",
            f"--master_port={free_port()}",
            str(HELPER),
            str(out / "cfg.yaml"),
            str(out),
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (out / "world.txt").read_text() == str(procs)
        weights[procs] = [load_file(str(out / f"weights-rank{r}-of{procs}.safetensors")) for r in range(procs)]
        assert (out / "run" / "metrics.json").exists() and (out / "run" / "model").exists()
    rank0, rank1 = weights[2]
    single = weights[1][0]
    for name, value in single.items():
        assert torch.equal(rank0[name], rank1[name]), f"{name} differs between ranks"
        assert torch.allclose(rank0[name], value, atol=1e-5), f"{name}: 2 processes differ from 1"
    assert any(
        not torch.equal(
            value,
            load_file(str(tmp_path / "bert" / "model.safetensors")).get(name.removeprefix("encoder.backbone."), value),
        )
        for name, value in single.items()
    ), "training moved weights"
