"""Self-describing checkpoints.

weaver saves ``model.state_dict()``. Every omnijet-weaver model derives from :class:`Configurable`, which
puts its kind and constructor options into that state dict (``<prefix>_extra_state``). So a file written
by ``weaver --model-prefix out/vqvae`` can be loaded with :func:`load_model` alone, without repeating any
option, and a file of the wrong kind or of other sizes fails with a message that says so.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..errors import CheckpointError  # noqa: F401 (re-exported)

#: Bumped when the meaning of a stored config changes incompatibly.
FORMAT_VERSION = 1

_REGISTRY: dict[str, type] = {}




def register(cls):
    """Class decorator: make ``cls`` loadable by its ``kind`` from a checkpoint."""
    _REGISTRY[cls.kind] = cls
    return cls


class Configurable(nn.Module):
    """A module whose constructor options travel inside its ``state_dict``.

    Subclasses set ``kind`` (a stable string) and call ``self.save_config(**options)`` in ``__init__``
    with exactly the keyword arguments that rebuild them. Options must be plain Python values
    (numbers, strings, bools, None, lists/tuples/dicts of them), so that ``torch.load(weights_only=True)``
    reads them.
    """

    kind = "configurable"

    def save_config(self, **options):
        self.config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()}

    def get_extra_state(self):
        return {"kind": self.kind, "format_version": FORMAT_VERSION, "config": dict(self.config)}

    def set_extra_state(self, state):
        check_extra_state(state, expected_kind=self.kind, config=self.config, where=type(self).__name__)

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        if torch.onnx.is_in_onnx_export():
            # the ONNX exporter lists the weights with state_dict() and calls .detach() on every entry:
            # leave out the models' descriptions (``*_extra_state`` dicts), which are no tensors
            for key in [k for k, v in state.items() if not isinstance(v, torch.Tensor)]:
                del state[key]
        return state


def check_extra_state(state, expected_kind, config=None, where="model"):
    """Raise :class:`CheckpointError` unless ``state`` describes a ``expected_kind`` with ``config``."""
    if not isinstance(state, dict) or "kind" not in state:
        raise CheckpointError(f"{where}: the checkpoint carries no omnijet-weaver description")
    if state["kind"] != expected_kind:
        raise CheckpointError(
            f"{where}: the checkpoint holds a {state['kind']!r}, but a {expected_kind!r} is expected"
        )
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: the checkpoint has format version {state['format_version']}, newer than this "
            f"omnijet-weaver ({FORMAT_VERSION}); upgrade omnijet-weaver"
        )
    if config is not None:
        stored = state.get("config", {})
        diff = {k: (stored.get(k), config.get(k)) for k in set(stored) | set(config) if stored.get(k) != config.get(k)}
        if diff:
            detail = ", ".join(f"{k}: checkpoint {a!r} vs model {b!r}" for k, (a, b) in sorted(diff.items()))
            raise CheckpointError(
                f"{where}: the checkpoint was made with other options ({detail}); build the model from the "
                f"checkpoint (omnijet_weaver.load_model) or pass the same options"
            )


def read_state_dict(path) -> dict:
    """Read a state dict from ``path`` onto the CPU, with a clear error for missing or foreign files."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and format errors all mean "not a checkpoint"
        raise CheckpointError(f"{path!r} is not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path!r} holds a {type(state).__name__}, not a state dict")
    return state


def describe(state: dict, prefix: str = "") -> dict:
    """The ``{"kind", "config", ...}`` description stored at ``prefix`` of a state dict (or raise)."""
    key = prefix + "_extra_state"
    if key not in state:
        raise CheckpointError(
            "the file is not an omnijet-weaver checkpoint (no %r entry); was it written by another network?" % key
        )
    return state[key]


def sub_state(state: dict, prefix: str) -> dict:
    """The entries of ``state`` under ``prefix.`` with the prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in state.items() if k.startswith(prefix + ".")}


def build(state: dict, kinds=None, where="checkpoint") -> nn.Module:
    """Build the model described by ``state`` and load its weights (strict)."""
    desc = describe(state)
    kind = desc.get("kind")
    if kinds is not None and kind not in kinds:
        raise CheckpointError(f"{where} holds a {kind!r}, but one of {sorted(kinds)} is expected")
    if kind not in _REGISTRY:
        raise CheckpointError(f"{where} holds an unknown model kind {kind!r}")
    check_extra_state(desc, kind, where=where)
    model = _REGISTRY[kind](**desc["config"])
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{where} does not match its own description: {err}") from None
    return model


def load_model(path, kinds=None, map_location="cpu") -> nn.Module:
    """Load any omnijet-weaver checkpoint written by weaver (``*_state.pt``) or by :func:`save_model`.

    Args:
        path: the ``.pt`` file.
        kinds: accepted model kinds (e.g. ``{"vqvae", "binned"}``); others raise :class:`CheckpointError`.
        map_location: device for the returned model.
    Returns:
        the model in eval mode.
    """
    model = build(read_state_dict(path), kinds=kinds, where=repr(os.fspath(path)))
    return model.to(map_location).eval()


def save_model(model: nn.Module, path) -> None:
    """Save ``model.state_dict()`` atomically (temporary name, then rename)."""
    from ..atomic import atomic_output

    with atomic_output(path) as tmp:
        torch.save(model.state_dict(), tmp)


def from_description(desc: dict, kinds=None, where="description") -> nn.Module:
    """Instantiate (untrained weights) the model that a stored ``{"kind", "config"}`` describes."""
    kind = desc.get("kind") if isinstance(desc, dict) else None
    if kind not in _REGISTRY or (kinds is not None and kind not in kinds):
        raise CheckpointError(f"{where}: cannot build a model of kind {kind!r} here")
    return _REGISTRY[kind](**desc["config"])


def description(model: Configurable) -> dict:
    """``{"kind", "config"}`` of a model, to nest a submodule's description in a parent's config."""
    return {"kind": model.kind, "config": dict(model.config)}
