"""Model builders behind the weaver network configs in ``network_configs/``.

weaver executes a network-config file as a throw-away module, so the configs stay ten lines long and all
logic lives here. ``-o name value`` options arrive as keyword arguments; weaver itself adds
``for_inference``, ``use_amp`` and ``compile_model``, which are accepted and ignored.
"""

from __future__ import annotations

import inspect

from .constants import INPUT_NAMES, MAX_PARTICLES

#: Keyword arguments weaver passes to every get_model().
WEAVER_KWARGS = ("for_inference", "use_amp", "compile_model")


def check_inputs(data_config, network: str) -> None:
    """Raise a clear error unless the data config provides ParT's kin inputs in ParT's order."""
    names = tuple(data_config.input_names)
    if names[: len(INPUT_NAMES)] != INPUT_NAMES:
        raise ValueError(
            f"{network} needs ParT's kin inputs {list(INPUT_NAMES)} (in this order) in the data config's "
            f"`inputs`, but it has {list(names)}; start from data_configs/qg_top.yaml"
        )
    for name in ("pf_points", "pf_vectors", "pf_mask"):
        rows = len(data_config.input_dicts[name])
        want = {"pf_points": 2, "pf_vectors": 4, "pf_mask": 1}[name]
        if rows != want:
            raise ValueError(f"{network}: input {name} must have {want} variables, the data config gives {rows}")


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


def vqvae_model(data_config, **options):
    """get_model() of ``omnijet_vqvae.py``: a :class:`~omnijet_weaver.tokenizer.VQVAE` built from ``-o``
    options (its constructor arguments; the paper's values by default)."""
    from .tokenizer import VQVAE

    check_inputs(data_config, "omnijet_vqvae")
    ctor, _ = split_options(VQVAE, options, "omnijet_vqvae")
    ctor.setdefault("max_particles", MAX_PARTICLES)
    model = VQVAE(**ctor)
    return model, model_info(data_config, output_names=("loss",))


def gpt_model(data_config, **options):
    """get_model() of ``omnijet_gpt.py``: :class:`~omnijet_weaver.generative.OmniJetGPT` around the frozen
    tokenizer named by ``-o tokenizer "'path.pt'"``; ``embed_dim``, ``num_blocks``, ``num_heads``, ``ff_dim``
    set the backbone (paper defaults). Reads ParT kin inputs or token files (data_configs/tokens.yaml)."""
    from .constants import TOKEN_INPUT_NAMES
    from .generative import OmniJetGPT
    from .tokenizer import load_tokenizer

    names = tuple(data_config.input_names)
    if names != TOKEN_INPUT_NAMES:
        check_inputs(data_config, "omnijet_gpt")
    ctor, extra = split_options(OmniJetGPT, options, "omnijet_gpt", extra=("tokenizer",))
    path = extra.get("tokenizer")
    if path is None:
        raise ValueError(
            "omnijet_gpt needs the trained tokenizer: add -o tokenizer \"'out/vqvae_best_epoch_state.pt'\""
        )
    model = OmniJetGPT.from_tokenizer(load_tokenizer(path), **ctor)
    return model, model_info(data_config, output_names=("loss",))


#: Backbone options shared by the generative model and the tagger.
BACKBONE_OPTIONS = ("embed_dim", "num_blocks", "num_heads", "ff_dim")


def tagger_model(data_config, pretrained="packaged", tokenizer=None, freeze_backbone=False, **options):
    """get_model() of ``omnijet_cls.py``: :class:`~omnijet_weaver.tagger.OmniJetTagger`.

    Args:
        pretrained: generative checkpoint whose tokenizer and backbone the tagger starts from:
            ``"packaged"`` (default, shipped with the package), a path, or ``None`` to train the backbone
            from scratch (the tokenizer and sizes then come from ``tokenizer`` / the options, or from the
            packaged model so that scratch and fine-tuned runs compare like for like).
        tokenizer: tokenizer checkpoint (only with ``pretrained=None``).
        freeze_backbone: train only the classification head.
        options: ``embed_dim``, ``num_blocks``, ``num_heads``, ``ff_dim`` (from scratch only), ``head_hidden``.
    """
    from .checkpoint import description
    from .generative import load_generative
    from .packaged import packaged_path
    from .tagger import OmniJetTagger
    from .tokenizer import load_tokenizer

    check_inputs(data_config, "omnijet_cls")
    ctor, _ = split_options(OmniJetTagger, options, "omnijet_cls",
                            extra=("tokenizer", "num_classes", "freeze_backbone"))
    if isinstance(pretrained, str) and pretrained.lower() == "none":
        pretrained = None
    ref = None
    if pretrained is not None:
        ref = load_generative(packaged_path("gpt") if pretrained == "packaged" else pretrained)
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
    return model, model_info(data_config, output_names=("softmax",))
