"""The options several commands share, defined once: one spelling, one help text, values checked at parse time.

``--output``/``--overwrite``, ``--device``, ``--batch-size``, ``--seed``, ``--seeds``, ``--num-jets``,
``--workers``, ``--no-progress``, ``--figures``, ``--data-config``, ``--checkpoint``, ``--tokenizer``, ``--temperature``/``--top-k``,
``--epochs``, ``--patience``, ``--labels``/``--modes``. List-valued options take space-separated values
(``--seeds 0 1 2``). A bad value is reported by the parser as one line, ``argument --x: <message>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from ..errors import OmniJetError
from . import command_parser

#: How the studies draw N jets from several files (the --help of --max-jets, --max-real-jets).
SAMPLING_RULE = ("a mix of the files, each giving a share in proportion to its number of entries (from its first "
                 "entries; a file with fewer selected jets gives all it has), shuffled with --seed")


def study_parser(prog: str, doc: str, config, files: str | None = None):
    """(parser, defaults) of a study command: the parser with ``--output DIR`` and ``--overwrite`` (and the input
    jet files first, when ``files`` says what they are), and the field defaults of its ``config`` dataclass."""
    p = command_parser(prog, doc)
    if files:
        add_files_argument(p, files)
    add_output_options(p, kind="folder")
    return p, field_defaults(config)


def add_files_argument(p, what: str = "input jet files") -> None:
    """The input jet files (positional, one or more)."""
    p.add_argument("files", nargs="+", help=f"{what}: ROOT TTrees or parquet files, read through the data config")


def field_defaults(cls) -> dict:
    """Defaults of a dataclass's fields (for help texts), ``default_factory`` ones called."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def spaced(values) -> str:
    """``(100, 1000)`` -> ``"100 1000"`` (how a list default reads on the command line)."""
    return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


# --------------------------------------------------------------------------------------------------------
# value types (checked at parse time; argparse reports "argument --x: <message>")
# --------------------------------------------------------------------------------------------------------


#: Largest count any option takes (jets, epochs, sizes): anything above is a typo, and would overflow torch.
MAX_COUNT = 2**31 - 1
#: Largest --batch-size: jets held (and random numbers drawn) together.
MAX_BATCH = 2**20


def _number(kind, low, high, what, too_big=None):
    def parse(text):
        try:
            if not text.isascii():  # Python would read fullwidth or Arabic-Indic digits
                raise ValueError(text)
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if value != value or not low <= value:  # NaN, too small
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        if not value <= high:
            raise argparse.ArgumentTypeError(f"must be {too_big or what}, got {text!r}")
        return value

    parse.__name__ = what
    return parse


#: Whole number >= 1 (counts, sizes), at most MAX_COUNT.
positive_int = _number(int, 1, MAX_COUNT, "a whole number of at least 1", f"a whole number from 1 to {MAX_COUNT}")
#: Whole number >= 0, at most MAX_COUNT.
nonnegative_int = _number(int, 0, MAX_COUNT, "a whole number of at least 0", f"a whole number from 0 to {MAX_COUNT}")
#: Jets per batch: a whole number from 1 to MAX_BATCH.
batch_int = _number(int, 1, MAX_BATCH, "a whole number of at least 1",
                    f"a whole number from 1 to {MAX_BATCH} (jets held together in memory)")
#: Random seed: a whole number from 0 to 2**32 - 1.
seed_int = _number(int, 0, 2**32 - 1, "a seed, a whole number from 0 to 2**32 - 1")
#: Number >= 0 (GeV cuts).
nonnegative_float = _number(float, 0.0, float("inf"), "a number of at least 0")


def positive_float(text):
    """Number > 0 and finite (learning rates)."""
    try:
        value = float(text) if text.isascii() else float("nan")
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def temperature_value(text):
    """Sampling temperature: a finite number of at least ``MIN_TEMPERATURE`` (smaller ones overflow the logits)."""
    from ..models.sampling import MIN_TEMPERATURE

    value = positive_float(text)
    if value < MIN_TEMPERATURE:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_TEMPERATURE:g} (smaller ones overflow the logits; "
                                         f"use --top-k 1 for greedy sampling), got {text!r}")
    return value


#: Device types the commands run on (mps where torch has it).
DEVICE_TYPES = ("cpu", "cuda", "mps")


def torch_device(text: str) -> str:
    """A torch device this machine has: ``cpu``, ``cuda``, ``cuda:N`` (or ``mps`` on a Mac); ``auto``: cuda if
    available, else cpu."""
    import torch

    if text == "auto":
        return default_device()
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device: give e.g. cpu, cuda or cuda:1") from None
    if device.type not in DEVICE_TYPES:
        raise argparse.ArgumentTypeError(f"{text!r}: omnijet-weaver runs on cpu or cuda (cuda:N) devices, not on "
                                         f"{device.type!r}; use --device cpu or --device cuda")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has no CUDA device; use --device cpu")
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {count} CUDA device(s), cuda:0 to "
                                             f"cuda:{count - 1}")
        if device.index is None:
            return rank_cuda_device(os.environ.get("LOCAL_RANK"), count)
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has no MPS device; use --device cpu")
    return text


def output_file(text: str) -> str:
    """An output file name, ``~`` expanded (the rest is checked by :func:`omnijet_weaver.io.files.check_output_path`)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a file name")
    return os.path.expanduser(text)


def output_folder(text: str) -> Path:
    """A report folder, ``~`` expanded: not empty, not an existing file."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a folder name")
    path = Path(os.path.expanduser(text))
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is a file; give a folder for the report")
    return path


def existing_file(text: str) -> str:
    """A path that is an existing file."""
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"{text!r} does not exist" if not os.path.exists(text)
                                         else f"{text!r} is not a file")
    return text


def data_config_file(text: str) -> str:
    """A weaver data config: a YAML file, or the name of a shipped one (``qg_top``, ``jetclass``, ...), read and
    checked at parse time (:func:`omnijet_weaver.weaver.dataset.check_data_config`: YAML, weaver's options, the
    inputs the models read)."""
    from ..weaver.configs import data_config, list_configs
    from ..weaver.dataset import check_data_config

    path = os.path.expanduser(text)
    if not os.path.exists(path):
        try:
            path = str(data_config(text))
        except OmniJetError:
            raise argparse.ArgumentTypeError(f"{text!r} is neither a file nor a shipped data config (choose from "
                                             f"{', '.join(list_configs('data'))}, or give a YAML file)") from None
    try:  # parsed and checked now, before any work: YAML, weaver's options, ParT's kin inputs
        check_data_config(path)
    except OmniJetError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return path


def default_device() -> str:
    """``cuda`` if torch sees a GPU (``cuda:LOCAL_RANK`` under torchrun: :func:`rank_cuda_device`), else ``cpu``."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return rank_cuda_device(os.environ.get("LOCAL_RANK"), torch.cuda.device_count())


def rank_cuda_device(local_rank, count: int) -> str:
    """The GPU of a process: ``cuda:LOCAL_RANK`` under torchrun (each rank of a node on its own GPU), plain
    ``cuda`` (the current device) otherwise. ``local_rank``: the ``LOCAL_RANK`` text or None; ``count``: the
    GPUs this process sees. More ranks on a node than GPUs is refused (two ranks on one GPU would share its
    memory and run at half speed)."""
    if local_rank is None:
        return "cuda"
    try:
        rank = int(local_rank)
    except ValueError:
        raise argparse.ArgumentTypeError(f"LOCAL_RANK={local_rank!r} is not a whole number: launch with torchrun "
                                         f"or unset LOCAL_RANK") from None
    if rank >= count:
        raise argparse.ArgumentTypeError(f"LOCAL_RANK={rank} but this machine has {count} CUDA device(s): launch "
                                         f"torchrun with --nproc_per_node {count} or fewer, or use --device cpu")
    return f"cuda:{rank}"


# --------------------------------------------------------------------------------------------------------
# the shared options: one spelling, one help text
# --------------------------------------------------------------------------------------------------------


def add_output_options(p, kind: str = "file", suffixes=(".root", ".parquet")) -> None:
    """``--output`` (required) and ``--overwrite``. ``kind``: ``"file"`` (ending in one of ``suffixes``) or
    ``"folder"`` (a report folder; ``args.output`` is then a :class:`~pathlib.Path`)."""
    if kind == "folder":
        p.add_argument("--output", required=True, type=output_folder, metavar="DIR",
                       help="report folder; an existing non-empty one is refused unless --overwrite")
    else:
        p.add_argument("--output", required=True, type=output_file, metavar="FILE",
                       help=f"output file ({' or '.join(suffixes)}); an existing one is refused unless --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --output (a folder only when it holds a report of this command)")


def add_device_option(p) -> None:
    """``--device`` (checked at parse time; default ``auto``)."""
    p.add_argument("--device", type=torch_device, default="auto",
                   help="torch device, e.g. cpu, cuda, cuda:1 (default auto: cuda if available, else cpu)")


def add_batch_size_option(p, default: int, what: str) -> None:
    """``--batch-size``: jets per batch (``what`` says of what)."""
    p.add_argument("--batch-size", type=batch_int, default=default, metavar="N",
                   help=f"jets per batch: {what} (default {default})")


def add_seed_option(p, default: int, what: str) -> None:
    """``--seed``: one random seed (``what`` says what it seeds)."""
    p.add_argument("--seed", type=seed_int, default=default,
                   help=f"random seed, 0 to 2**32 - 1: {what}; same seed, same result (default {default})")


def add_seeds_option(p, default, what: str) -> None:
    """``--seeds``: several random seeds, space-separated."""
    p.add_argument("--seeds", type=seed_int, nargs="+", default=list(default), metavar="SEED",
                   help=f"random seeds, 0 to 2**32 - 1, space-separated: {what} (default {spaced(default)})")


def add_num_jets_option(p, default, what: str, required: bool | None = None) -> None:
    """``--num-jets``: a number of jets (required when ``required``; by default when ``default`` is None)."""
    required = default is None if required is None else required
    p.add_argument("--num-jets", type=positive_int, default=default, required=required, metavar="N",
                   help=f"number of jets: {what}" + ("" if default is None else f" (default {default})"))


def add_workers_option(p, what: str) -> None:
    """``--workers``: parallel worker processes (default: all cores)."""
    p.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help=f"parallel worker processes: {what} (default: all cores, {os.cpu_count()})")


def add_progress_option(p) -> None:
    """``--no-progress`` (``dest`` ``progress``: True unless given)."""
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


class _FiguresAction(argparse.Action):
    """``--figures png pdf`` -> ["png", "pdf"]; ``--figures none`` -> [] (``none`` goes alone)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if "none" in values and len(values) > 1:
            parser.error(f"argument {option_string}: none goes alone, got {' '.join(values)}")
        setattr(namespace, self.dest, [] if values == ["none"] else list(dict.fromkeys(values)))


def add_figures_option(p, default) -> None:
    """``--figures FORMAT...``: the formats of a report's figures, or ``none`` (tables only, no matplotlib)."""
    from ..evaluation.plots import FIGURE_FORMATS

    p.add_argument("--figures", nargs="+", action=_FiguresAction, choices=[*FIGURE_FORMATS, "none"], default=None,
                   metavar="FORMAT",
                   help=f"formats of the figures, space-separated: {', '.join(FIGURE_FORMATS)}, or none for the "
                        f"tables alone (default {spaced(default)})")


def add_data_config_option(p, required: bool = False) -> None:
    """``--data-config``: a weaver data config, file or shipped name (optional: the studies use ``qg_top``)."""
    p.add_argument("--data-config", type=data_config_file, default=None, required=required, metavar="CONFIG",
                   help="weaver data config (inputs, selection, labels): a YAML file or a shipped one by name (see "
                        "omnijet-weaver-configs)"
                        + ("" if required else "; default: qg_top (top vs QCD, JetClass layout)"))


def add_checkpoint_option(p, dest: str = "checkpoint", more: str = "") -> None:
    """``--checkpoint``: a generative checkpoint (default: the packaged model); ``more``: what it is used for."""
    p.add_argument("--checkpoint", dest=dest, type=existing_file, default=None, metavar="PT",
                   help="generative checkpoint (weaver ... omnijet_gpt.py, or save_model); default: the packaged "
                        "model" + (f"; {more}" if more else ""))


def add_tokenizer_option(p) -> None:
    """``--tokenizer``: a tokenizer checkpoint (default: the packaged tokenizer)."""
    p.add_argument("--tokenizer", type=existing_file, default=None, metavar="PT",
                   help="tokenizer checkpoint (weaver ... omnijet_vqvae.py, or save_model); default: the packaged "
                        "tokenizer")


def add_sampling_options(p) -> None:
    """``--temperature``, ``--top-k`` and ``--guidance`` (generate, gen-fidelity)."""
    p.add_argument("--temperature", type=temperature_value, default=1.0,
                   help="sampling temperature, a finite number > 0 (default 1; --top-k 1 for greedy sampling)")
    p.add_argument("--top-k", type=positive_int, default=None, metavar="K",
                   help="sample among the K most likely tokens only (default: all)")
    p.add_argument("--guidance", type=nonnegative_float, default=None, metavar="W",
                   help="with --class: classifier-free guidance scale, the logits uncond + W * (cond - uncond) "
                        "(default: the checkpoint's own scale, 1.4 for the packaged conditional model, else 1: "
                        "plain conditional sampling; W > 1 sharpens the class, about twice the sampling cost; "
                        "0: unconditional)")


def add_epochs_option(p, default: int, what: str) -> None:
    """``--epochs``: training epochs."""
    p.add_argument("--epochs", type=positive_int, default=default, metavar="N",
                   help=f"training epochs: {what} (default {default})")


def add_patience_option(p, default: int, off: bool = False) -> None:
    """``--patience``: early stopping on the validation loss (``off``: 0 turns it off)."""
    p.add_argument("--patience", type=nonnegative_int if off else positive_int, default=default, metavar="N",
                   help="early stopping: epochs without a lower validation loss before training stops"
                        + ("; 0 = off (all epochs, best epoch by validation accuracy)" if off else "")
                        + f" (default {default})")


def add_tagger_options(p, defaults: dict) -> None:
    """``--labels`` and ``--modes`` of the tagger studies (demo, transfer)."""
    from ..weaver.runner import MODES

    p.add_argument("--labels", type=positive_int, nargs="+", default=list(defaults["labels"]), metavar="N",
                   help=f"numbers of labelled training jets, balanced over the classes, space-separated "
                        f"(default {spaced(defaults['labels'])})")
    p.add_argument("--modes", nargs="+", default=list(defaults["modes"]), choices=list(MODES), metavar="MODE",
                   help=f"tagger modes, space-separated: {', '.join(MODES)} (frozen = backbone fixed; default "
                        f"{spaced(defaults['modes'])})")
