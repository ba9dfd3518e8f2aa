"""Default checkpoints shipped inside the package (``omnijet_weaver/models/weights/``); nothing is downloaded.

``gpt.pt`` is a generative model (it holds its tokenizer); ``vqvae.pt`` is the tokenizer on its own.
``scripts/train_defaults.sh`` is the recipe that made them.
"""

from __future__ import annotations

import os

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
#: File names of the packaged checkpoints.
PACKAGED = {"gpt": "gpt.pt", "tokenizer": "vqvae.pt"}


def packaged_path(name: str) -> str:
    """Path of a packaged checkpoint (``"gpt"`` or ``"tokenizer"``); a clear error if this install has none."""
    path = os.path.join(DATA_DIR, PACKAGED[name])
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"this omnijet-weaver install has no packaged {name} checkpoint ({path}); name one explicitly "
            f"(e.g. -o pretrained \"'out/gpt_best_epoch_state.pt'\" or --checkpoint ...)"
        )
    return path
