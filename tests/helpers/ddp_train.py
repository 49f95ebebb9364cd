"""Train a few steps from a config (under torchrun) and save each rank's final weights."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from mtst.config import load_config
from mtst.training.trainer import setup_run


def main() -> None:
    config, out = Path(sys.argv[1]), Path(sys.argv[2])
    loop = setup_run(load_config(config), show_progress=False)
    loop.fit()
    rank, world = loop.rank, loop.world
    state = {k: v.detach().contiguous().cpu() for k, v in loop.model.state_dict().items()}
    save_file(state, str(out / f"weights-rank{rank}-of{world}.safetensors"))
    if rank == 0:
        (out / "world.txt").write_text(str(world))
    torch.distributed.destroy_process_group() if torch.distributed.is_initialized() else None


if __name__ == "__main__":
    main()
