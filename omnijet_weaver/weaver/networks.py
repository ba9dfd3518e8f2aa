"""Model builders behind the weaver network configs in ``network_configs/``.

weaver executes a network-config file as a throw-away module, so the configs stay ten lines long and all
logic lives here. ``-o name value`` options arrive as keyword arguments; weaver itself adds
``for_inference``, ``use_amp`` and ``compile_model``: ``compile_model`` (weaver's ``--compile``) rounds the
trimmed sequence length up to a multiple of :data:`COMPILE_ROUND_TO` (:func:`compile_friendly`), the others
are accepted and ignored (the tagger takes ``for_inference``).
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys

import torch

from ..constants import MAX_PARTICLES
from ..errors import ConfigError, OmniJetError
from ..models.gpt import BACKBONE_OPTIONS
from .dataset import check_inputs  # the one input check, shared with the commands (re-exported)

#: Keyword arguments weaver passes to every get_model().
WEAVER_KWARGS = ("for_inference", "use_amp", "compile_model")

#: Under ``--compile`` the trimmed sequence length is a multiple of this (weaver's ParT: ``round_to_32``).
COMPILE_ROUND_TO = 32


def compile_friendly(model, options: dict):
    """``model`` with its feature transform rounding the trimmed length up to :data:`COMPILE_ROUND_TO` when
    weaver passes ``compile_model=True`` (``--compile``), so that a compiled model sees at most
    ``128 / 32 = 4`` sequence lengths instead of one per batch; unchanged otherwise."""
    if options.get("compile_model"):
        tokenizer = getattr(model, "tokenizer", model)
        tokenizer.transform.round_to = COMPILE_ROUND_TO
    return model


def _called_by_weaver(depth: int = 8) -> bool:
    """Whether weaver-core's own code (module ``weaver`` or ``weaver.*``) is among the callers (up to ``depth``
    frames above the caller of this function)."""
    frame = sys._getframe(2)
    for _ in range(depth):
        if frame is None:
            return False
        name = frame.f_globals.get("__name__") or ""
        if name == "weaver" or name.startswith("weaver."):
            return True
        frame = frame.f_back
    return False


def weaver_run_args():
    """The parsed command line of the weaver run that is calling us (the ``args`` of weaver's
    ``model_setup(args, data_config)``, which calls get_model), or None when weaver is not among the callers."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__") or ""
        args = frame.f_locals.get("args")
        if (name == "weaver" or name.startswith("weaver.")) and hasattr(args, "load_model_weights"):
            return args
        frame = frame.f_back
    return None


def _weights_file(run) -> tuple[str | None, str | None]:
    """(state file, prefix) of weaver's ``--load-model-weights FILE[:PREFIX]``; (None, None) without it."""
    value = getattr(run, "load_model_weights", None)
    if not value:
        return None, None
    path, _, prefix = str(value).partition(":")
    return path, prefix or None


def check_weaver_weights(model, run, network: str) -> None:
    """What weaver will do with ``model`` after get_model, checked first (weaver would not say a word):

    - ``--load-model-weights`` (after ``--exclude-model-weights``) must match at least one of the model's tensors
      by name, and those it matches must have the model's shapes: weaver loads non-strictly, so a ParT
      checkpoint would load nothing and train from random weights, and a checkpoint of other sizes fails with a
      long size-mismatch traceback;
    - an ``lr_mult`` pattern of ``--optimizer-option`` (ParT's fine-tuning recipe ``("fc.*", 50)``) must match
      a parameter name: weaver would multiply the learning rate of none.

    Raises :class:`ConfigError` (one line) naming the problem and what to give instead."""
    import ast
    import re

    from ..models.checkpoint import read_state_dict

    own = model.state_dict()
    path, prefix = _weights_file(run)
    if path is not None:
        state = read_state_dict(path)
        if prefix:
            state = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
        excluded = [p for p in (getattr(run, "exclude_model_weights", None) or "").split(",") if p]
        tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)
                   and not any(re.match(p, k) for p in excluded)}
        matched = [k for k in tensors if k in own and isinstance(own[k], torch.Tensor)]
        if not matched:
            example = next(iter(tensors), "none")
            raise ConfigError(
                f"{network}: --load-model-weights {path}: none of its {len(tensors)} tensors (e.g. {example!r}) "
                f"matches a parameter of {network} (e.g. 'backbone.blocks.0.attn.qkv.weight'), so weaver would "
                "load nothing and train from random weights; give an omnijet-weaver checkpoint (a generative one "
                "from omnijet_gpt.py, or a tagger's), or -o pretrained for a generative checkpoint")
        wrong = [k for k in matched
                 if tensors[k].shape != own[k].shape and not _trimmed_embedding(k, tensors[k], own[k])]
        if wrong:
            k = wrong[0]
            raise ConfigError(
                f"{network}: --load-model-weights {path}: {len(wrong)} tensors have other sizes than the model's "
                f"(e.g. {k}: {tuple(tensors[k].shape)} in the file, {tuple(own[k].shape)} here); leave out the "
                "size options (-o embed_dim, ...) so that the sizes come from a generative checkpoint, or give "
                "the sizes it was trained with")
    options = dict(getattr(run, "optimizer_option", None) or [])
    if "lr_mult" in options:
        try:
            pattern = ast.literal_eval(options["lr_mult"])[0]
        except (ValueError, SyntaxError, TypeError, IndexError):
            return  # weaver's own error
        names = [n for n, p in model.named_parameters()]
        if not any(re.match(str(pattern), n) for n in names):
            heads = sorted({n.rsplit(".", 1)[0] for n in names if n.startswith("head.")})
            raise ConfigError(
                f"{network}: --optimizer-option lr_mult pattern {pattern!r} matches no parameter (ParT's head is "
                f"fc.*, ours is head.*: {', '.join(heads)}); use e.g. --optimizer-option lr_mult '(\"head.*\",50)'")


def _trimmed_embedding(key: str, theirs, ours) -> bool:
    """A conditional backbone's embedding (class token rows after the vocabulary) loads into an unconditional
    one: the backbone keeps the first rows (:class:`~omnijet_weaver.models.gpt.Backbone`)."""
    return key.endswith("embed.weight") and theirs.dim() == 2 and theirs.shape[1:] == ours.shape[1:] \
        and theirs.shape[0] > ours.shape[0]


def one_line_in_weaver(network: str):
    """Decorator of the builders behind a network config (``get_model``, ``get_train_fn``, ...): when weaver calls
    them, an error of ours (:class:`~omnijet_weaver.errors.OmniJetError`: a missing or corrupted checkpoint, an
    option that cannot work) is one line ``<network>: error: <message>`` on stderr and exit code 2, as from our
    commands, instead of a traceback through weaver; called from Python, the error is raised as usual."""

    def decorate(builder):
        @functools.wraps(builder)
        def wrapped(*args, **kwargs):
            try:
                return builder(*args, **kwargs)
            except OmniJetError as err:
                if not _called_by_weaver():
                    raise
                text = " ".join(str(err).split())
                print(f"{network}: error: {text.removeprefix(network + ': ')}", file=sys.stderr, flush=True)
                raise SystemExit(2) from None

        return wrapped

    return decorate


def split_options(cls, options: dict, network: str, extra=()) -> tuple[dict, dict]:
    """Split ``-o`` options into ``cls``'s constructor arguments and ``extra`` ones; reject unknown names."""
    known = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self",) + tuple(extra)]
    ctor, rest = {}, {}
    for key, value in options.items():
        if key in WEAVER_KWARGS and key not in known:
            continue
        if key in extra:
            rest[key] = value
        elif key in known:
            ctor[key] = value
        else:
            raise TypeError(
                f"{network}: unknown network option -o {key} ...; known options: {', '.join(known + list(extra))}"
            )
    return ctor, rest


def model_info(data_config, output_names=("output",)) -> dict:
    """weaver's model_info (input names/shapes and dynamic axes, used for ONNX export and FLOPs)."""
    shapes = {k: ((1,) + tuple(s[1:])) for k, s in data_config.input_shapes.items()}
    return {
        "input_names": list(data_config.input_names),
        "input_shapes": shapes,
        "output_names": list(output_names),
        "dynamic_axes": {
            **{k: {0: "N", 2: "n_" + k.split("_")[0]} for k in data_config.input_names},
            **{k: {0: "N"} for k in output_names},
        },
    }


@one_line_in_weaver("omnijet_vqvae")
def vqvae_model(data_config, **options):
    """get_model() of ``omnijet_vqvae.py``: a :class:`~omnijet_weaver.models.tokenizer.VQVAE` built from ``-o``
    options (its constructor arguments; the paper's values by default)."""
    from ..models.tokenizer import VQVAE

    check_inputs(data_config, "omnijet_vqvae")
    ctor, _ = split_options(VQVAE, options, "omnijet_vqvae")
    ctor.setdefault("max_particles", MAX_PARTICLES)
    model = compile_friendly(VQVAE(**ctor), options)
    return model, model_info(data_config, output_names=("loss",))


@one_line_in_weaver("omnijet_gpt")
def gpt_model(data_config, **options):
    """get_model() of ``omnijet_gpt.py``: :class:`~omnijet_weaver.models.generative.OmniJetGPT` around the frozen
    tokenizer named by ``-o tokenizer "'path.pt'"``; ``embed_dim``, ``num_blocks``, ``num_heads``, ``ff_dim``
    set the backbone (paper defaults). Reads ParT kin inputs or token files (data_configs/tokens.yaml).
    ``-o pretrained "'packaged'"`` (or a path) starts from a generative checkpoint instead (its tokenizer,
    sizes and weights; see :meth:`~omnijet_weaver.models.generative.OmniJetGPT.start_from`).
    ``-o conditional True`` makes a class-conditional model on the data config's labels (:func:`class_names`;
    ``-o classes "['QCD','Tbqq']"`` names them for token files), ``-o class_dropout 0.1`` its rate of
    training jets without class."""
    from ..constants import TOKEN_INPUT_NAMES
    from ..models.generative import OmniJetGPT
    from ..models.tokenizer import load_tokenizer

    names = tuple(data_config.input_names)
    if names != TOKEN_INPUT_NAMES:
        check_inputs(data_config, "omnijet_gpt")
    ctor, extra = split_options(OmniJetGPT, options, "omnijet_gpt", extra=("tokenizer", "conditional", "pretrained"))
    conditional = extra.get("conditional", False)
    if not isinstance(conditional, bool):
        raise ConfigError(f"omnijet_gpt: -o conditional takes True or False, got {conditional!r}")
    if conditional and ctor.get("classes") is None:
        ctor["classes"] = class_names(data_config)
    elif not conditional and ctor.get("classes") is not None:
        raise ConfigError("omnijet_gpt: -o classes is for a class-conditional model: add -o conditional True")
    path, pretrained = extra.get("tokenizer"), extra.get("pretrained")
    if pretrained is not None:  # start from a generative checkpoint: its tokenizer, sizes and weights
        from ..models.generative import load_generative
        from ..models.packaged import packaged_path

        if path is not None:
            raise ConfigError("omnijet_gpt: -o pretrained comes with its own tokenizer: drop -o tokenizer")
        ref = load_generative(packaged_path("gpt") if pretrained == "packaged" else pretrained)
        clash = [k for k in BACKBONE_OPTIONS if k in ctor and ctor[k] != ref.config[k]]
        if clash:
            raise ConfigError(f"omnijet_gpt: {', '.join(clash)} must match -o pretrained "
                              f"({', '.join(f'{k}={ref.config[k]}' for k in clash)}); drop these options")
        ctor.update({k: ref.config[k] for k in BACKBONE_OPTIONS})
        model = OmniJetGPT.from_tokenizer(ref.tokenizer, **ctor).start_from(ref)
        return compile_friendly(model, options), model_info(data_config, output_names=("loss",))
    if path is None:
        raise ValueError(
            "omnijet_gpt needs the trained tokenizer: add -o tokenizer \"'out/vqvae_best_epoch_state.pt'\""
        )
    model = compile_friendly(OmniJetGPT.from_tokenizer(load_tokenizer(path), **ctor), options)
    return model, model_info(data_config, output_names=("loss",))


def class_names(data_config) -> list:
    """The class names of a conditional GPT from the data config's labels: ``simple`` labels (``label_QCD``,
    ``label_Tbqq``, ...) give their names without ``label_``, in the data config's order (weaver's class index);
    ``custom`` labels (``tokens.yaml``: the index written by the tokenizer) carry no names: ConfigError."""
    from .dataset import label_classes

    if data_config.label_type != "simple":
        raise ConfigError(
            "omnijet_gpt: -o conditional True needs the class names, and this data config's labels are a custom "
            "class index (token files: the index of the data config used to tokenize): add -o classes "
            "\"['QCD','Tbqq']\" in that data config's label order")
    return label_classes(data_config)


def seed_everything(seed, where: str = "omnijet_cls") -> int:
    """Seed torch (CPU and CUDA), numpy's global generator and ``random`` with ``seed`` (``-o seed N``)."""
    import logging
    import random

    import numpy as np
    import torch

    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"{where}: -o seed takes a whole number from 0 to 2**32 - 1, got {seed!r}")
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    logging.getLogger("weaver").info(
        "%s: -o seed %d: torch, numpy and random seeded (model initialisation, weaver's shuffling of the jets)",
        where, seed)
    return seed


@one_line_in_weaver("omnijet_cls")
def tagger_model(data_config, pretrained="packaged", tokenizer=None, freeze_backbone=False, seed=None,
                 early_stopping=None, **options):
    """get_model() of ``omnijet_cls.py``: :class:`~omnijet_weaver.models.tagger.OmniJetTagger`.

    Args:
        pretrained: generative checkpoint whose tokenizer and backbone the tagger starts from:
            ``"packaged"`` (default, shipped with the package), a path, or ``None`` to train the backbone
            from scratch (the tokenizer and sizes then come from ``tokenizer`` / the options, or from the
            packaged model so that scratch and fine-tuned runs compare like for like).
        tokenizer: tokenizer checkpoint (only with ``pretrained=None``).
        freeze_backbone: train only the classification head.
        seed: seed torch, numpy and ``random`` first (:func:`seed_everything`). weaver calls get_model after
            it has set up its data loaders but before it reads any jet, so the seed fixes the head's (and a
            scratch backbone's) initialisation and weaver's shuffling of the training and validation jets (in
            the main process with ``--num-workers 0``; DataLoader workers are seeded from torch's generator).
            It does not cover weaver's shuffling of the file list under DDP (done before get_model) nor
            non-deterministic GPU kernels. weaver 0.5.3 has no seed option of its own.
        early_stopping: patience in epochs of the early stopping on the validation loss (see
            :mod:`omnijet_weaver.weaver.early_stopping`; used by get_train_fn / get_evaluate_fn, checked here).
        options: ``embed_dim``, ``num_blocks``, ``num_heads``, ``ff_dim`` (from scratch only), ``head_hidden``.
    """
    from ..models.checkpoint import description
    from ..models.generative import load_generative
    from ..models.packaged import packaged_path
    from ..models.tagger import OmniJetTagger
    from ..models.tokenizer import load_tokenizer
    from .early_stopping import check_patience

    check_patience(early_stopping)
    if seed is not None:
        seed_everything(seed)
    check_inputs(data_config, "omnijet_cls")
    ctor, _ = split_options(OmniJetTagger, options, "omnijet_cls",
                            extra=("tokenizer", "num_classes", "freeze_backbone", "seed", "early_stopping"))
    if isinstance(pretrained, str) and pretrained.lower() == "none":
        pretrained = None
    run = weaver_run_args()
    weights, prefix = _weights_file(run)
    given = None
    if weights is not None and prefix is None and pretrained == "packaged":
        # --load-model-weights gpt.pt without -o pretrained: the generative checkpoint's sizes and tokenizer
        from ..errors import CheckpointError

        try:
            given = load_generative(weights)
        except CheckpointError:
            given = None  # not a generative checkpoint: weaver loads it over the packaged sizes (checked below)
        else:
            pretrained = weights
            logging.getLogger("weaver").info("omnijet_cls: sizes and tokenizer from --load-model-weights %s", weights)
    ref = None
    if pretrained is not None:
        ref = given if pretrained == weights and given is not None else load_generative(
            packaged_path("gpt") if pretrained == "packaged" else pretrained)
        clash = [k for k in BACKBONE_OPTIONS if k in ctor and ctor[k] != ref.config[k]]
        if clash:
            raise ValueError(f"omnijet_cls: {', '.join(clash)} must match the pre-trained backbone "
                             f"({', '.join(f'{k}={ref.config[k]}' for k in clash)}); drop these options")
        if tokenizer is not None:
            raise ValueError("omnijet_cls: -o tokenizer is only for -o pretrained None (a pre-trained backbone "
                             "comes with its own tokenizer)")
    if tokenizer is not None:
        tok = load_tokenizer(tokenizer)
    else:
        if ref is None:
            ref = load_generative(packaged_path("gpt"))
        tok = ref.tokenizer
    sizes = {k: ref.config[k] for k in BACKBONE_OPTIONS} if ref is not None else {}
    sizes.update({k: v for k, v in ctor.items()})
    model = OmniJetTagger(description(tok), num_classes=len(data_config.label_value),
                          freeze_backbone=bool(freeze_backbone), **sizes)
    model.tokenizer.load_state_dict(tok.state_dict())
    if pretrained is not None:
        model.backbone.load_state_dict(ref.backbone.state_dict())
    if run is not None:
        check_weaver_weights(model, run, "omnijet_cls")
    return compile_friendly(model, options), model_info(data_config, output_names=("softmax",))


def _no_attribute_error(hook):
    """``hook`` (a get_train_fn / get_evaluate_fn) with any AttributeError raised as a RuntimeError: weaver-core
    0.5.3 takes an AttributeError from these hooks for "not defined" and would silently train with its own loops
    (and write no history) instead of surfacing the bug."""

    @functools.wraps(hook)
    def wrapped(*args, **kwargs):
        try:
            return hook(*args, **kwargs)
        except AttributeError as err:
            raise RuntimeError(f"{hook.__name__} failed: AttributeError: {err} (re-raised as RuntimeError: weaver "
                               f"would take an AttributeError for a missing hook and ignore it)") from err

    return wrapped


@one_line_in_weaver("omnijet_cls")
@_no_attribute_error
def tagger_train_fn(data_config, early_stopping=None, **options):
    """get_train_fn() of ``omnijet_cls.py``: always ours (:class:`~omnijet_weaver.weaver.loops.TaggerLoops`):
    weaver's own training loop passed through and recorded in ``<model-prefix>_history.jsonl``, with the
    early stopping on the validation loss for ``-o early_stopping N``."""
    import logging

    from .compat import check_weaver
    from .early_stopping import check_patience
    from .loops import TaggerLoops

    patience = check_patience(early_stopping)
    check_weaver()
    if patience:
        logging.getLogger("weaver").info(
            "omnijet_cls: early stopping on the validation loss, patience %d epoch(s): the best epoch is the one "
            "with the lowest validation loss (weaver's metric = exp(-loss))", patience)
    else:
        logging.getLogger("weaver").info(
            "omnijet_cls: weaver's own train/evaluate functions, passed through (best epoch on the validation "
            "accuracy); the epochs are recorded in <model-prefix>_history.jsonl")
    return TaggerLoops(patience).train


@one_line_in_weaver("omnijet_cls")
@_no_attribute_error
def tagger_evaluate_fn(data_config, early_stopping=None, **options):
    """get_evaluate_fn() of ``omnijet_cls.py`` (see :func:`tagger_train_fn`); ``--predict`` runs weaver's own
    evaluation untouched."""
    from .compat import check_weaver
    from .early_stopping import check_patience
    from .loops import TaggerLoops

    patience = check_patience(early_stopping)
    check_weaver()
    return TaggerLoops(patience).evaluate
