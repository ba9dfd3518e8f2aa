"""Command-line entry points (see ``setup.cfg``: ``omnijet-weaver-*``)."""

import os
import sys


def fail(message: str, code: int = 2):
    """Print a one-line cause to stderr and exit non-zero."""
    name = os.path.basename(sys.argv[0]) or "omnijet-weaver"
    if name.endswith(".py"):  # run as python -m omnijet_weaver.cli.<name>
        name = "omnijet-weaver-" + name[:-3].replace("_", "-")
    print(f"{name}: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(code)


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) when not launched by torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def part_path(path: str, rank: int, world: int) -> str:
    """``out.parquet`` -> ``out.part1of4.parquet`` under torchrun (one file per rank), else unchanged."""
    if world <= 1:
        return path
    base, ext = os.path.splitext(path)
    return f"{base}.part{rank}of{world}{ext}"


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
