"""Self-describing checkpoints.

weaver saves ``model.state_dict()``. Every omnijet-weaver model derives from :class:`Configurable`, which
puts its kind and constructor options into that state dict (``<prefix>_extra_state``). So a file written
by ``weaver --model-prefix out/vqvae`` can be loaded with :func:`load_model` alone, without repeating any
option, and a file of the wrong kind or of other sizes fails with a message that says so.

A file is untrusted input: its description is checked against the constructor's arguments and, on the meta
device (nothing allocated), against the tensors the file holds, before the model is built for real; non-finite
weights are refused (:func:`build`). Every problem is a :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import warnings

import torch
from torch import nn

from ..errors import CheckpointError, OmniJetError

#: Bumped when the meaning of a stored config changes incompatibly.
FORMAT_VERSION = 1

#: The most values (parameters and buffers together) a described model may have: far above any OmniJet-alpha
#: model (the paper's has a few million), so a description that claims more is refused before anything is built.
MAX_MODEL_VALUES = 2_000_000_000

#: The largest integer a description may hold: every integer option of our models is a size, a count or a
#: number of steps, and none comes near this.
MAX_OPTION_INT = 2**24

#: What a refused description is told to do.
NOT_OURS = "the file is corrupted or was not written by omnijet-weaver: use another checkpoint"

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
            f"{where}: the checkpoint holds a {_short(state['kind'])}, but a {expected_kind!r} is expected"
        )
    version = state.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{where}: the checkpoint's format version {_short(version)} is not a whole number; "
                              f"{NOT_OURS}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: the checkpoint has format version {_short(version)}, newer than this "
            f"omnijet-weaver ({FORMAT_VERSION}); upgrade omnijet-weaver"
        )
    if "config" in state and not isinstance(state["config"], dict):
        raise CheckpointError(f"{where}: the checkpoint's options are a {type(state['config']).__name__}, not a "
                              f"dict; {NOT_OURS}")
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
        with warnings.catch_warnings():  # torch's warnings on odd bytes ("Detected pickle protocol 208"): what we
            warnings.simplefilter("ignore")  # load is checked in full below, a bad file gets one error line
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
    """Build the model described by ``state`` and load its weights (strict).

    The description is checked before any tensor is allocated: its options must be plain values that the model's
    constructor takes (:func:`check_config`); the model is built first on the meta device (no memory, at most
    :data:`MAX_MODEL_VALUES` values) and its tensor names and shapes are compared with the file's; the file's
    floating-point tensors must be finite. Anything wrong raises :class:`CheckpointError` naming ``where``.
    """
    try:
        desc = describe(state)
    except CheckpointError as err:
        raise CheckpointError(_at(where, err)) from None
    if not isinstance(desc, dict) or "kind" not in desc:
        raise CheckpointError(f"{where}: the checkpoint carries no omnijet-weaver description; {NOT_OURS}")
    kind = desc["kind"]
    if not isinstance(kind, str):
        raise CheckpointError(f"{where} holds a model of kind {_short(kind)}, no kind of ours; {NOT_OURS}")
    if kinds is not None and kind not in kinds:
        raise CheckpointError(f"{where} holds a {kind!r}, but one of {sorted(kinds)} is expected")
    if kind not in _REGISTRY:
        raise CheckpointError(f"{where} holds an unknown model kind {kind!r}")
    check_extra_state(desc, kind, where=where)
    if "config" not in desc:
        raise CheckpointError(f"{where}: its description has no options ('config'); {NOT_OURS}")
    cls = _REGISTRY[kind]
    config = check_config(cls, desc["config"], where)
    num_tensors = sum(isinstance(v, torch.Tensor) for v in state.values())
    with _on_meta(2 * num_tensors + 64):
        meta = _construct(cls, config, where)
    _compare(meta, state, where)
    model = _construct(cls, config, where)
    try:
        model.load_state_dict(state)
    except (RuntimeError, CheckpointError) as err:
        raise CheckpointError(f"{where} does not match its own description: {err}") from None
    return model


def check_config(cls, config, where="description") -> dict:
    """``config`` if it can be the options of ``cls`` (else raise :class:`CheckpointError`): a dict of plain
    values (no tensors, finite floats, integers of at most :data:`MAX_OPTION_INT`), each key an argument of
    ``cls``'s constructor, each value of the type the constructor's annotation (or default) gives, no integer
    option negative, no argument without default missing. Nested descriptions are checked when they are built."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: the options of its {cls.kind!r} are a {type(config).__name__}, not a dict; "
                              f"{NOT_OURS}")
    params = {name: p for name, p in inspect.signature(cls.__init__).parameters.items()
              if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    open_ended = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())
    for key, value in config.items():
        if not isinstance(key, str) or (key not in params and not open_ended):
            raise CheckpointError(f"{where}: {_short(key)} is not an option of {cls.__name__} ({', '.join(params)}); "
                                  f"{NOT_OURS}")
        problem = _plain_problem(value)
        types = _accepted_types(params[key]) if problem is None and key in params else None
        if types is not None and not any(_fits(value, t) for t in types):
            problem = f"{_short(value)} is not {' or '.join(dict.fromkeys(_TYPE_WORDS[t] for t in types))}"
        elif types is not None and int in types and type(value) is int and value < 0:
            problem = f"{value} is negative"
        if problem is not None:
            raise CheckpointError(f"{where}: option {key} of its {cls.kind!r}: {problem}; {NOT_OURS}")
    missing = [name for name, p in params.items() if p.default is p.empty and name not in config]
    if missing:
        raise CheckpointError(f"{where}: its {cls.kind!r} lacks the option(s) {', '.join(missing)}; {NOT_OURS}")
    return dict(config)


def _short(value, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _at(where: str, err) -> str:
    """The message of ``err``, prefixed with ``where`` unless it names it already."""
    text = str(err)
    return text if where in text else f"{where}: {text}"


def _plain_problem(value, at: str = ""):
    """What keeps ``value`` from being a plain description value (None, bool, int, finite float, str, and lists
    and string-keyed dicts of them), or None if it is one; ``at``: where in the option it is (``[i]``, ``.key``)."""
    where = f"at {at[1:] if at.startswith('.') else at}: " if at else ""
    if at.count(".") + at.count("[") > 16:
        return f"{where}nested too deeply"
    if value is None or isinstance(value, (bool, str)):
        return None
    if isinstance(value, int):
        return None if abs(value) <= MAX_OPTION_INT else (
            f"{where}{_short(value)} is beyond any size of our models (at most {MAX_OPTION_INT})")
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where}{value!r} is not a finite number"
    if isinstance(value, (list, tuple)):
        return next(filter(None, (_plain_problem(v, f"{at}[{i}]") for i, v in enumerate(value))), None)
    if isinstance(value, dict):
        for k, v in value.items():
            problem = (f"{where}the key {_short(k)} is not a string" if not isinstance(k, str)
                       else _plain_problem(v, f"{at}.{k}"))
            if problem is not None:
                return problem
        return None
    return f"{where}a {type(value).__name__} is not a plain value"


#: Constructor annotations (strings, ``from __future__ import annotations``) -> the types they accept.
_ANNOTATION_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "dict": dict, "list": list,
                     "tuple": tuple, "None": type(None)}
_TYPE_WORDS = {int: "an int", float: "a number", bool: "a bool", str: "a string", dict: "a dict", list: "a list",
               tuple: "a list", type(None): "None"}


def _accepted_types(param):
    """The types a constructor argument accepts (from its annotation, else its default), or None (any)."""
    ann = param.annotation
    if isinstance(ann, str):
        names = [name.strip() for name in ann.split("|")]
        return tuple(_ANNOTATION_TYPES[n] for n in names) if all(n in _ANNOTATION_TYPES for n in names) else None
    if isinstance(ann, type) and ann in _ANNOTATION_TYPES.values():
        return (ann,)
    if ann is param.empty and param.default is not param.empty and param.default is not None:
        kind = type(param.default)
        if kind in (list, tuple):
            return (list, tuple)
        return (kind,) if kind in _ANNOTATION_TYPES.values() else None
    return None


def _fits(value, kind) -> bool:
    """Whether ``value`` passes for a ``kind`` (an int for a float, 0 / 1 for a bool, a tuple for a list)."""
    if kind is bool:
        return isinstance(value, bool) or (type(value) is int and value in (0, 1))
    if kind is int:
        return type(value) is int
    if kind is float:
        return type(value) in (int, float)
    if kind in (list, tuple):
        return isinstance(value, (list, tuple))
    return isinstance(value, kind)


@contextlib.contextmanager
def _on_meta(max_tensors: int):
    """Build modules on the meta device (nothing allocated), refusing one that registers more than
    ``max_tensors`` tensors or :data:`MAX_MODEL_VALUES` values in all (counted as they are registered, so even
    a description that asks for 10**10 blocks stops early); :func:`_construct` adds the file to the error."""
    from torch.nn.modules import module as torch_module

    counts = [0, 0]

    def hook(module, name, tensor):
        if tensor is None:
            return
        counts[0] += 1
        counts[1] += tensor.numel()
        if counts[0] > max_tensors:
            raise CheckpointError(f"its description asks for more tensors than the file holds; {NOT_OURS}")
        if counts[1] > MAX_MODEL_VALUES:
            raise CheckpointError(f"its description asks for a model of more than {MAX_MODEL_VALUES:.0e} values, "
                                  f"far beyond any model of ours; {NOT_OURS}")

    hooks = [torch_module.register_module_parameter_registration_hook(hook),
             torch_module.register_module_buffer_registration_hook(hook)]
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a dry run: e.g. "Initializing zero-element tensors is a no-op"
            yield
    finally:
        for h in hooks:
            h.remove()


def _construct(cls, config: dict, where: str) -> nn.Module:
    """``cls(**config)``, any error of the constructor raised as :class:`CheckpointError` naming ``where``."""
    try:
        return cls(**config)
    except OmniJetError as err:
        raise CheckpointError(_at(where, err)) from None
    except Exception as err:  # crafted values (negative sizes, strings for ints, ...) fail in many ways
        raise CheckpointError(f"{where}: its description ({cls.kind!r} with {_short(config, 200)}) cannot be built "
                              f"({type(err).__name__}: {err}); {NOT_OURS}") from None


def _few(names, n: int = 3) -> str:
    names = [str(k) if isinstance(k, str) else _short(k) for k in names]
    return ", ".join(names[:n]) + (f" (and {len(names) - n} more)" if len(names) > n else "")


def _compare(meta: nn.Module, state: dict, where: str) -> None:
    """Raise :class:`CheckpointError` unless ``state`` holds exactly the tensors of ``meta`` (a model built on
    the meta device from the file's description), with the same shapes, finite where floating-point, and
    submodule descriptions that ``meta``'s submodules accept."""
    expected = meta.state_dict()
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = []
    for k, v in expected.items():
        got = state.get(k)
        if k not in state or not isinstance(v, torch.Tensor):
            continue
        if not isinstance(got, torch.Tensor) or got.layout != torch.strided:
            wrong.append(f"{k} is a {type(got).__name__}, not a dense tensor")
        elif got.shape != v.shape:
            wrong.append(f"{k} has shape {list(got.shape)} but the description gives {list(v.shape)}")
    if missing:
        problems.append(f"tensors missing: {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected entries: {_few(unexpected)}")
    if wrong:
        problems.append(_few(wrong))
    if problems:
        raise CheckpointError(f"{where} does not match its own description ({'; '.join(problems)}); {NOT_OURS}")
    for k, v in expected.items():
        if not isinstance(v, torch.Tensor):  # a submodule's ``_extra_state``: its own description
            try:
                meta.get_submodule(k[: -len("_extra_state")].rstrip(".")).set_extra_state(state[k])
            except CheckpointError as err:
                raise CheckpointError(f"{where} does not match its own description: {err}") from None
        elif (v.is_floating_point() or v.is_complex()) and not torch.isfinite(state[k]).all():
            raise CheckpointError(f"{where}: tensor {k} holds NaN/inf values: the training diverged or the file is "
                                  f"corrupted; use another checkpoint")


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
    if not isinstance(kind, str) or kind not in _REGISTRY or (kinds is not None and kind not in kinds):
        raise CheckpointError(f"{where}: cannot build a model of kind {_short(kind)} here")
    if "config" not in desc:
        raise CheckpointError(f"{where}: the description of its {kind!r} has no options ('config')")
    cls = _REGISTRY[kind]
    return _construct(cls, check_config(cls, desc["config"], where), where)


def description(model: Configurable) -> dict:
    """``{"kind", "config"}`` of a model, to nest a submodule's description in a parent's config."""
    return {"kind": model.kind, "config": dict(model.config)}
