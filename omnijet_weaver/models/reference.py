"""Import the published OmniJet-alpha checkpoints (``uhh-pd-ml/omnijet_alpha``, package ``gabbro``), exactly.

The authors publish their models as PyTorch Lightning checkpoints of their own code: the tokenizer
(``VQVAELightning``, with the ``config.yaml`` its training wrote beside it, which holds the feature scaling and
cuts), the generative model (``BackboneNextTokenPredictionLightning``) and classifiers
(``BackboneClassificationLightning``). This module turns them into our self-describing models:

- :func:`import_tokenizer`: their VQ-VAE (``model_type`` ``VQVAENormFormer`` or ``Transformer``: our
  conditional :class:`~omnijet_weaver.models.tokenizer.VQVAE` with ``mlp_ratio=1``; ``MLP``: our unconditional
  one) -> :class:`VQVAE`;
- :func:`import_generative`: their backbone + next-token head, around an imported tokenizer ->
  :class:`~omnijet_weaver.models.generative.OmniJetGPT`;
- :func:`import_classifier`: their backbone + summation head -> :class:`~omnijet_weaver.models.tagger.OmniJetTagger`.

Every option the reference stores is mapped or refused: an option our models cannot represent exactly raises
:class:`~omnijet_weaver.errors.ConfigError` naming it; options that only act in training (dropout, k-means
initialisation, the optimizer) are reported in the notes the import returns. Conventions that differ and are
mapped: their feature order (the ``feature_dict``'s keys, (pT, eta, phi) in the published config) is permuted
into ours (eta, phi, pT) in the first and last layers; their token ids (start 0, code c as c + 1, stop K + 1,
vocabulary K + 2, no padding token) are re-ordered into ours (codes 0..K-1, start K, stop K + 1, pad K + 2; the
padding token's logit is fixed far below every other, so the next-token probabilities are theirs); their
separate bias-free key / query / value projections become our fused ``qkv`` with zero bias.

**Safe loading** (:func:`read_reference_checkpoint`): a Lightning checkpoint is a pickle that holds, besides
tensors, its hyper-parameters (OmegaConf containers, ``functools.partial`` of the optimizer, ...). It is read
with ``torch.load(weights_only=True)`` and an explicit allow-list of those names, each mapped to an inert
stand-in (:class:`Opaque`: it records what the pickle gives it and runs nothing of the named class); the
stand-ins are then turned into plain dicts, lists and numbers. A file that names anything else is refused
with one line naming it, before anything in it is built.

Checked against the reference code itself (``tests/test_reference.py``, fixtures made by
``scripts/make_reference_fixtures.py`` with commit :data:`REFERENCE_COMMIT` and vqtorch :data:`VQTORCH_COMMIT`).

Torch only: no Lightning, OmegaConf, hydra or vqtorch needed.
"""

from __future__ import annotations

import math
import os
import re
import warnings

import torch

from ..constants import MAX_PARTICLES
from ..errors import CheckpointError, ConfigError

#: The reference code the import was checked against.
REFERENCE_COMMIT = "1c8d4429dcd11a9f56355d4d05c4ed2f908b00ed"
REFERENCE_REPOSITORY = "https://github.com/uhh-pd-ml/omnijet_alpha"
#: vqtorch (the reference's quantizer) at the commit checked.
VQTORCH_COMMIT = "02e60a19bd742c17b0bf3e1925f23796d54cbeac"

#: The logit our padding token gets from an imported next-token head (bias; weight 0): far below any real logit,
#: so softmax and cross-entropy over our K + 3 tokens equal the reference's over its K + 2 (exp(-1e4) is 0 in
#: float32 and float16 alike; sampling never draws it anyway).
PAD_LOGIT = -1.0e4


# --------------------------------------------------------------------------------------------------------------
# safe loading
# --------------------------------------------------------------------------------------------------------------


class Opaque:
    """Inert stand-in for an object that a reference checkpoint's pickle builds from an allowed global.

    It records the arguments and the state the pickle hands it (``args``, ``state``) and runs nothing of the
    class it stands for; :func:`to_plain` turns it into plain values. Each allowed name gets its own subclass
    (``name`` is the full name of the global).
    """

    name = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, None
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<{self.name}>"


def _plain_dict(*args, **kwargs):
    """Stand-in for ``collections.defaultdict(factory)``: a plain dict (the pickle fills it)."""
    return {}


def _torch_optim_names():
    names = []
    for mod in (torch.optim, torch.optim.lr_scheduler):
        for value in vars(mod).values():
            if isinstance(value, type) and value.__module__.startswith("torch.optim"):
                names.append(f"{value.__module__}.{value.__qualname__}")
    return names


#: The globals a reference checkpoint may name (beyond torch's own tensor and container types), each read as an
#: inert :class:`Opaque`: the hyper-parameters' OmegaConf containers and nodes, the optimizer / scheduler
#: classes and the ``functools.partial`` (or hydra's deferred target) that holds them, ``typing.Any`` (OmegaConf's
#: type annotations), numpy scalars (callback states), paths.
ALLOWED_GLOBALS = tuple(dict.fromkeys([
    "omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig", "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata", "omegaconf.nodes.AnyNode", "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode", "omegaconf.nodes.FloatNode", "omegaconf.nodes.BooleanNode",
    "omegaconf.nodes.BytesNode", "omegaconf.nodes.PathNode", "omegaconf.nodes.EnumNode",
    "omegaconf.nodes.InterpolationResultNode", "typing.Any", "functools.partial",
    "hydra._internal.target_policy._DeferredTarget",
    "gabbro.schedulers.lr_scheduler.OneCycleCooldown", "gabbro.schedulers.lr_scheduler.CosineWarmupScheduler",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype",
    "numpy.dtypes.Float64DType", "numpy.dtypes.Float32DType", "numpy.dtypes.Int64DType",
    "pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath",
    *_torch_optim_names(),
]))
_DICT_GLOBALS = ("collections.defaultdict",)


#: Plain builtin types, which OmegaConf's metadata names as values (``object_type=dict``) or the pickle calls
#: (``__builtin__.long``); they run no code of the file.
_BUILTINS = {f"builtins.{t.__name__}": t for t in (dict, list, tuple, set, int, float, str, bool, bytes, object)}


def _stand_ins():
    out = [(type(name.rsplit(".", 1)[-1], (Opaque,), {"name": name}), name) for name in ALLOWED_GLOBALS]
    out += [(_plain_dict, name) for name in _DICT_GLOBALS]
    out += [(t, name) for name, t in _BUILTINS.items()]
    return out


_STAND_INS = _stand_ins()
_UNSUPPORTED = re.compile(r"GLOBAL ([\w.]+)")


def read_reference_checkpoint(path) -> dict:
    """A reference (Lightning) checkpoint as plain values: ``state_dict`` (tensors), ``hyper_parameters`` (plain
    dicts, lists, numbers, strings) and the rest of the file's entries (plain too).

    Read with ``torch.load(weights_only=True)`` and :data:`ALLOWED_GLOBALS`; a file that needs any other global,
    or that is no readable checkpoint, raises :class:`CheckpointError` with one line naming the problem.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"reference checkpoint {path!r} does not exist")
    if not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
        from ..errors import MissingDependencyError

        raise MissingDependencyError(f"reading reference checkpoints safely needs torch >= 2.6 (this is "
                                     f"{torch.__version__}): pip install 'torch>=2.6'")
    allowed = {name for _, name in _STAND_INS}
    try:
        with torch.serialization.safe_globals(_STAND_INS):
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as err:
        raise CheckpointError(f"{path!r} is not a readable PyTorch checkpoint ({type(err).__name__}: "
                              f"{_one_line(err)})") from None
    refused = [name for name in unsafe if name not in allowed]
    if refused:
        raise CheckpointError(_refusal(path, refused))
    try:
        with torch.serialization.safe_globals(_STAND_INS), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        names = _UNSUPPORTED.findall(str(err))
        if names:
            raise CheckpointError(_refusal(path, names)) from None
        raise CheckpointError(f"{path!r} is not a readable PyTorch checkpoint ({type(err).__name__}: "
                              f"{_one_line(err)})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("state_dict"), dict):
        kind = type(raw).__name__ if not isinstance(raw, dict) else f"dict without 'state_dict' ({_keys(raw)})"
        raise CheckpointError(f"{path!r} holds a {kind}, not a PyTorch Lightning checkpoint of the reference "
                              f"OmniJet-alpha code")
    out = {k: to_plain(v) for k, v in raw.items() if k not in ("state_dict", "optimizer_states", "lr_schedulers")}
    out["state_dict"] = dict(raw["state_dict"])
    bad = [k for k, v in out["state_dict"].items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path!r}: its state_dict entry {bad[0]!r} is no tensor; not a reference checkpoint")
    if not isinstance(out.get("hyper_parameters"), dict):
        raise CheckpointError(f"{path!r} has no hyper_parameters: it cannot be told which reference model it holds "
                              f"(a checkpoint of the reference's LightningModules saves them)")
    return out


def _refusal(path, names) -> str:
    names = list(dict.fromkeys(names))
    shown = ", ".join(names[:3]) + (f" (and {len(names) - 3} more)" if len(names) > 3 else "")
    return (f"{path!r} refused: it needs {shown}, which is not on the allow-list of reference OmniJet-alpha "
            f"checkpoints (loading it could run code); omnijet-weaver reads only tensors, OmegaConf "
            f"hyper-parameters and optimizer settings")


def _one_line(err) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _keys(d: dict) -> str:
    keys = [str(k) for k in d][:5]
    return ", ".join(keys) + (", ..." if len(d) > 5 else "")


def to_plain(obj, depth: int = 0):
    """Stand-ins (OmegaConf containers and nodes, partials) -> plain dicts, lists and values; tensors are kept."""
    if depth > 64:
        raise CheckpointError("the checkpoint's hyper-parameters are nested too deeply")
    if isinstance(obj, type) and issubclass(obj, Opaque):
        return obj.name  # a class named as a value (typing.Any, an optimizer class in a partial)
    if isinstance(obj, Opaque):
        name, state = obj.name, obj.state
        if name in ("omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig"):
            content = state.get("_content") if isinstance(state, dict) else None
            return to_plain(content, depth + 1)
        if name.startswith("omegaconf.nodes."):
            return to_plain(state.get("_val") if isinstance(state, dict) else None, depth + 1)
        if name in ("functools.partial", "hydra._internal.target_policy._DeferredTarget"):
            func = obj.args[0] if obj.args else None
            kwargs = {}
            if isinstance(state, tuple) and len(state) >= 3:
                func, kwargs = state[0], state[2] or {}
            elif isinstance(state, dict):
                kwargs = state
            return {"_partial_": to_plain(func, depth + 1), **{str(k): to_plain(v, depth + 1)
                                                                for k, v in dict(kwargs).items()}}
        return {"_object_": name}
    if isinstance(obj, dict):
        return {k: to_plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v, depth + 1) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------------------------


class _Options:
    """Reads options of one section of the reference's hyper-parameters, naming each by its full path."""

    def __init__(self, values, where: str, source: str):
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: {where} is a {type(values).__name__}, not a mapping")
        self.values, self.where, self.source = values, where, source

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key, default=None):
        return self.values.get(key, default)

    def number(self, key, default=None, integer: bool = False):
        value = self.values.get(key, default)
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or (not integer and not math.isfinite(value)):
            raise ConfigError(f"{self.source}: option {self.name(key)} = {value!r} is not "
                              f"{'a whole number' if integer else 'a number'}")
        return value

    def refuse(self, key, why: str):
        raise ConfigError(f"{self.source}: option {self.name(key)} = {self.values.get(key)!r} cannot be represented "
                          f"exactly by omnijet-weaver ({why}); not imported")

    def sub(self, key) -> "_Options":
        return _Options(self.values.get(key), self.name(key), self.source)


#: Our feature transform (omnijet_weaver.models.features), in the reference's feature_dict language: the three
#: features of ours, by the reference's feature name, and the preprocessing each must have.
OUR_FEATURES = {
    "part_etarel": {"multiply_by": 3, "subtract_by": 0, "func": None, "inv_func": None, "larger_than": -0.8,
                    "smaller_than": 0.8},
    "part_phirel": {"multiply_by": 3, "subtract_by": 0, "func": None, "inv_func": None, "larger_than": -0.8,
                    "smaller_than": 0.8},
    "part_pt": {"multiply_by": 1, "subtract_by": 1.8, "func": "np.log", "inv_func": "np.exp", "larger_than": None,
                "smaller_than": None},
}
#: Our feature index of each reference feature name.
OUR_FEATURE_INDEX = {"part_etarel": 0, "part_phirel": 1, "part_pt": 2}
#: Preprocessing keys of the reference's ak_select_and_preprocess that we do not have: must be unset.
_UNSUPPORTED_PREPROCESSING = ("binning", "bin_edges", "clip_min", "clip_max")


def feature_order(config: dict, source: str) -> list[int]:
    """Our feature index of each of the reference's features, in its order, from its data config's
    ``data.dataset_kwargs_common.feature_dict``; refuses any scaling, cut or feature ours does not have."""
    where = "data.dataset_kwargs_common.feature_dict"
    node = config
    for key in where.split("."):
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(f"{source} has no {where} (the feature scaling and cuts of the tokenizer): is it the "
                              f"config.yaml of the tokenizer's training?")
        node = node[key]
    if not isinstance(node, dict) or not node:
        raise ConfigError(f"{source}: {where} is not a mapping of features")
    unknown = [k for k in node if k not in OUR_FEATURES]
    if unknown or len(node) != len(OUR_FEATURES):
        name = unknown[0] if unknown else sorted(set(OUR_FEATURES) - set(node))[0]
        raise ConfigError(f"{source}: {where} has the features {', '.join(map(str, node))}; omnijet-weaver's "
                          f"tokenizers take exactly {', '.join(OUR_FEATURES)} ({name!r} cannot be represented); "
                          f"not imported")
    for feature, params in node.items():
        opts = _Options(params, f"{where}.{feature}", source)
        for key in opts.values:
            if key in _UNSUPPORTED_PREPROCESSING:
                if opts.values[key] is not None:
                    opts.refuse(key, "our feature transform has no binning or clipping")
            elif key not in OUR_FEATURES[feature]:
                opts.refuse(key, "an option the reference's preprocessing does not know either")
        for key, ours in OUR_FEATURES[feature].items():
            value = opts.values.get(key, 1 if key == "multiply_by" else 0 if key == "subtract_by" else None)
            same = value == ours if not isinstance(ours, (int, float)) or isinstance(ours, bool) else (
                isinstance(value, (int, float)) and not isinstance(value, bool) and float(value) == float(ours))
            if not same:
                opts.values.setdefault(key, value)
                opts.refuse(key, f"our feature transform has {feature} with {key} = {ours!r}: f_eta = 3 eta_rel, "
                                 f"f_phi = 3 phi_rel with |eta_rel|, |phi_rel| < 0.8, f_pt = ln(pT/GeV) - 1.8")
    return [OUR_FEATURE_INDEX[k] for k in node]


# --------------------------------------------------------------------------------------------------------------
# state-dict bookkeeping
# --------------------------------------------------------------------------------------------------------------


class _Weights:
    """The reference's state dict; every tensor must be taken (or knowingly skipped) exactly once."""

    def __init__(self, state: dict, source: str):
        self.state, self.source, self.used = state, source, set()

    def take(self, key, shape=None) -> torch.Tensor:
        if key not in self.state:
            raise CheckpointError(f"{self.source}: tensor {key!r} is missing; is it a checkpoint of the reference "
                                  f"model its hyper-parameters describe?")
        value = self.state[key]
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise CheckpointError(f"{self.source}: tensor {key!r} has shape {list(value.shape)}, but its "
                                  f"hyper-parameters give {list(shape)}")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"{self.source}: tensor {key!r} holds NaN/inf values")
        self.used.add(key)
        return value.detach().to(torch.float32).clone()

    def has(self, key) -> bool:
        return key in self.state

    def skip(self, key):
        self.used.add(key)

    def check_all_used(self, prefix: str = ""):
        left = [k for k in self.state if k.startswith(prefix) and k not in self.used]
        if left:
            more = f" (and {len(left) - 3} more)" if len(left) > 3 else ""
            raise CheckpointError(f"{self.source}: unexpected tensors {', '.join(left[:3])}{more}: this reference model "
                                  f"has parts omnijet-weaver does not know; not imported")


def _load_exactly(module: torch.nn.Module, tensors: dict, where: str):
    """``module.load_state_dict`` of exactly ``tensors`` (plus the module's own descriptions), shapes checked."""
    own = module.state_dict()
    for key, value in tensors.items():
        if key not in own or not isinstance(own[key], torch.Tensor):
            raise RuntimeError(f"internal: {where} has no tensor {key!r}")
        if own[key].shape != value.shape:
            raise CheckpointError(f"{where}: tensor {key} has shape {list(value.shape)}, expected {list(own[key].shape)}")
    missing = [k for k, v in own.items() if isinstance(v, torch.Tensor) and k not in tensors]
    if missing:
        raise RuntimeError(f"internal: {where} left {missing[:3]} unset")
    with torch.no_grad():
        for key, value in tensors.items():
            own[key].copy_(value)


def _hparams(ckpt: dict, source: str) -> dict:
    hp = ckpt.get("hyper_parameters")
    if not isinstance(hp, dict):
        raise CheckpointError(f"{source} has no hyper_parameters")
    return hp


# --------------------------------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------------------------------

#: The reference's VQ-VAE kinds and the LightningModule state-dict prefixes of their parts.
_TRANSFORMER_LAYOUT = {
    "VQVAENormFormer": {"enc_in": "model.input_projection", "enc_blocks": "model.encoder_normformer.blocks",
                        "enc_out": "model.latent_projection_in", "dec_in": "model.latent_projection_out",
                        "dec_blocks": "model.decoder_normformer.blocks", "dec_out": "model.output_projection"},
    "Transformer": {"enc_in": "model.encoder.project_in", "enc_blocks": "model.encoder.blocks",
                    "enc_out": "model.encoder.project_out", "dec_in": "model.decoder.project_in",
                    "dec_blocks": "model.decoder.blocks", "dec_out": "model.decoder.project_out"},
}
#: vqtorch VectorQuant options, with vqtorch's defaults.
_VQ_DEFAULTS = {"num_codes": None, "beta": 0.95, "sync_nu": 0.0, "affine_lr": 0.0, "affine_groups": 1,
                "replace_freq": 0, "inplace_optimizer": None, "dim": 1, "norm": "none", "cb_norm": "none",
                "kmeans_init": False, "code_vector_size": None}


def import_tokenizer(ckpt: dict, config: dict, source: str = "tokenizer checkpoint",
                     config_source: str = "config.yaml"):
    """Our :class:`~omnijet_weaver.models.tokenizer.VQVAE` from a reference ``VQVAELightning`` checkpoint
    (:func:`read_reference_checkpoint`) and the ``config.yaml`` of its training (a dict).

    Returns ``(tokenizer, notes)``: the model in eval mode, and lines on what was mapped and which options only act
    in training. Raises :class:`ConfigError` naming an option ours cannot represent exactly, and
    :class:`CheckpointError` for a file that does not hold what its hyper-parameters describe.
    """
    from .tokenizer import VQVAE

    hp = _hparams(ckpt, source)
    top = _Options(hp, "", source)
    model_type = hp.get("model_type", "Transformer")
    if model_type not in (*_TRANSFORMER_LAYOUT, "MLP"):
        top.refuse("model_type", "only the VQVAENormFormer, Transformer and MLP tokenizers exist in the reference")
    mk = top.sub("model_kwargs")
    vq = mk.sub("vq_kwargs")
    notes = [f"reference tokenizer: model_type {model_type}"]

    # feature transform: ours exactly, in the reference's order (refused otherwise)
    order = feature_order(config, config_source)
    input_dim = mk.number("input_dim", 2, integer=True)
    if input_dim != len(order):
        mk.refuse("input_dim", f"the tokenizer's feature_dict in {config_source} has {len(order)} features")
    cfg_model = (config.get("model") or {}).get("model_kwargs") if isinstance(config.get("model"), dict) else None
    if isinstance(cfg_model, dict):  # a config.yaml of another training: refuse rather than mix
        cfg_codes = (cfg_model.get("vq_kwargs") or {}).get("num_codes")
        if cfg_codes is not None and cfg_codes != vq.get("num_codes"):
            raise ConfigError(f"{config_source} describes a tokenizer with {cfg_codes} codes but {source} holds one "
                              f"with {vq.get('num_codes')}: give the config.yaml of this checkpoint's training")

    # quantizer
    for key in vq.values:
        if key not in _VQ_DEFAULTS:
            vq.refuse(key, "not an option of vqtorch's VectorQuant")
    opt = {k: vq.values.get(k, d) for k, d in _VQ_DEFAULTS.items()}
    num_codes = vq.number("num_codes", integer=True)
    if opt["dim"] not in (-1, 2):
        vq.values.setdefault("dim", opt["dim"])
        vq.refuse("dim", "our codes are vectors of the latent features (dim -1); another dim quantizes across "
                         "constituents")
    for key in ("norm", "cb_norm"):
        if opt[key] not in (None, "none"):
            vq.refuse(key, "our quantizer has no latent or codebook normalisation")
    if opt["affine_groups"] != 1:
        vq.refuse("affine_groups", "our affine codebook transform has one group")
    if opt["inplace_optimizer"] is not None:
        vq.refuse("inplace_optimizer", "our quantizer has no in-place codebook optimizer")
    beta = vq.number("beta", 0.95)
    affine_lr = vq.number("affine_lr", 0.0)
    sync_nu = vq.number("sync_nu", 0.0)
    replace_freq = vq.number("replace_freq", 0, integer=True)
    if not 0 <= beta <= 1:
        vq.refuse("beta", "must be in [0, 1]")
    if replace_freq < 0:
        vq.refuse("replace_freq", "must not be negative")
    if opt["kmeans_init"]:
        notes.append("vq_kwargs.kmeans_init only initialises training: the imported codebook is marked initialised")

    latent_dim = mk.number("latent_dim", 2, integer=True)
    if opt["code_vector_size"] not in (None, latent_dim):
        vq.refuse("code_vector_size", "our codes have the latent dimension")
    alpha = mk.number("alpha", 10.0)

    w = _Weights(ckpt["state_dict"], source)
    perm = torch.tensor(order)  # reference feature j is our feature order[j]

    def permute_in(weight):  # (H, F_ref) -> (H, F_ours): column order[j] = reference column j
        out = torch.empty_like(weight)
        out[:, perm] = weight
        return out

    def permute_out(t):  # (F_ref, ...) -> (F_ours, ...)
        out = torch.empty_like(t)
        out[perm] = t
        return out

    tensors = {}
    if model_type in _TRANSFORMER_LAYOUT:
        hidden = mk.number("hidden_dim", integer=True)
        heads = mk.number("num_heads", 1, integer=True)
        blocks = mk.number("num_blocks", 2, integer=True)
        if heads < 1 or hidden % heads:
            mk.refuse("num_heads", f"the hidden size {hidden} must be divisible by it")
        model = VQVAE(codebook_size=num_codes, conditional=True, hidden_dim=hidden, num_blocks=blocks,
                      num_heads=heads, latent_dim=latent_dim, alpha=float(alpha), beta=float(beta),
                      affine_lr=float(affine_lr), sync_nu=float(sync_nu), replace_freq=replace_freq,
                      max_particles=MAX_PARTICLES, mlp_ratio=1)
        lay = _TRANSFORMER_LAYOUT[model_type]
        tensors["enc_in.weight"] = permute_in(w.take(f"{lay['enc_in']}.weight", (hidden, input_dim)))
        tensors["enc_in.bias"] = w.take(f"{lay['enc_in']}.bias", (hidden,))
        tensors["enc_out.weight"] = w.take(f"{lay['enc_out']}.weight", (latent_dim, hidden))
        tensors["enc_out.bias"] = w.take(f"{lay['enc_out']}.bias", (latent_dim,))
        tensors["dec_in.weight"] = w.take(f"{lay['dec_in']}.weight", (hidden, latent_dim))
        tensors["dec_in.bias"] = w.take(f"{lay['dec_in']}.bias", (hidden,))
        tensors["dec_out.weight"] = permute_out(w.take(f"{lay['dec_out']}.weight", (input_dim, hidden)))
        tensors["dec_out.bias"] = permute_out(w.take(f"{lay['dec_out']}.bias", (input_dim,)))
        for ours, theirs in (("enc_blocks", lay["enc_blocks"]), ("dec_blocks", lay["dec_blocks"])):
            for i in range(blocks):
                tensors.update(_normformer_block(w, f"{theirs}.{i}", f"{ours}.{i}", hidden))
        notes.append(f"transformer: hidden {hidden}, {blocks} NormFormer blocks, {heads} heads, MLP ratio 1 "
                     f"(dropout 0.1 of the reference acts only in training)")
    else:
        enc = mk.get("encoder_layers")
        dec = mk.get("decoder_layers")
        layers = [] if enc is None else enc
        if not isinstance(layers, list) or any(isinstance(n, bool) or not isinstance(n, int) or n < 1
                                               for n in layers):
            mk.refuse("encoder_layers", "not a list of layer sizes")
        if len(set(layers)) > 1:
            mk.refuse("encoder_layers", "our MLP tokenizer has hidden layers of one size")
        if (dec or []) != list(layers):
            mk.refuse("decoder_layers", f"our MLP tokenizer's decoder mirrors its encoder ({layers})")
        hidden = layers[0] if layers else 128
        model = VQVAE(codebook_size=num_codes, conditional=False, hidden_dim=hidden, mlp_layers=len(layers),
                      latent_dim=latent_dim, alpha=float(alpha), beta=float(beta), affine_lr=float(affine_lr),
                      sync_nu=float(sync_nu), replace_freq=replace_freq, max_particles=MAX_PARTICLES)
        sizes_e = [input_dim, *layers, latent_dim]
        sizes_d = [latent_dim, *layers, input_dim]
        for part, sizes in (("encoder", sizes_e), ("decoder", sizes_d)):
            n = len(sizes) - 1
            for i in range(n):
                theirs = f"model.{part}" if not layers else f"model.{part}.{2 * i}"
                wt = w.take(f"{theirs}.weight", (sizes[i + 1], sizes[i]))
                b = w.take(f"{theirs}.bias", (sizes[i + 1],))
                if part == "encoder" and i == 0:
                    wt = permute_in(wt)
                if part == "decoder" and i == n - 1:
                    wt, b = permute_out(wt), permute_out(b)
                tensors[f"{part}.{2 * i}.weight"], tensors[f"{part}.{2 * i}.bias"] = wt, b
        notes.append(f"MLP: {len(layers)} hidden layers of {hidden}")

    # quantizer tensors: vqtorch's codebook (nn.Embedding) and affine transform (1 group)
    tensors["quantizer.codebook"] = w.take("model.vqlayer.codebook.weight", (num_codes, latent_dim))
    if affine_lr > 0:
        tensors["quantizer.affine_scale"] = w.take("model.vqlayer.affine_transform.scale", (1, latent_dim))[0]
        tensors["quantizer.affine_bias"] = w.take("model.vqlayer.affine_transform.bias", (1, latent_dim))[0]
    else:  # vqtorch has no affine transform then: ours with affine_lr 0 uses C' = C exactly
        tensors["quantizer.affine_scale"] = torch.zeros(latent_dim)
        tensors["quantizer.affine_bias"] = torch.zeros(latent_dim)
    tensors["quantizer.initialized"] = torch.tensor(True)
    unused = torch.zeros(num_codes, dtype=torch.long)
    if w.has("model.vqlayer._counts"):  # vqtorch counts down from replace_freq; ours counts unused steps up
        counts = w.take("model.vqlayer._counts", (num_codes,))
        unused = (replace_freq - counts).clamp(min=0).round().long() if replace_freq > 0 else unused
    tensors["quantizer.unused_steps"] = unused
    w.skip("model.vqlayer.data_initialized")
    w.check_all_used()
    _load_exactly(model, tensors, source)
    notes.append(f"codebook {num_codes} x {latent_dim}, beta {beta}, affine_lr {affine_lr}, sync_nu {sync_nu}, "
                 f"replace_freq {replace_freq}, alpha {alpha}")
    return model.eval(), notes


def _normformer_block(w: _Weights, theirs: str, ours: str, hidden: int) -> dict:
    """One reference NormformerBlock -> our NormFormerBlock (nn.MultiheadAttention's in_proj is [q; k; v] like our
    qkv; its norm1 / norm2 are our norm_in / norm_attn; mlp LN -> Linear -> SiLU -> Dropout -> Linear)."""
    t = {}
    for a, b, shape in (("norm1", "norm_in", (hidden,)), ("norm2", "norm_attn", (hidden,)),
                        ("mlp.0", "mlp.0", (hidden,))):
        t[f"{ours}.{b}.weight"] = w.take(f"{theirs}.{a}.weight", shape)
        t[f"{ours}.{b}.bias"] = w.take(f"{theirs}.{a}.bias", shape)
    t[f"{ours}.attn.qkv.weight"] = w.take(f"{theirs}.attn.in_proj_weight", (3 * hidden, hidden))
    t[f"{ours}.attn.qkv.bias"] = w.take(f"{theirs}.attn.in_proj_bias", (3 * hidden,))
    t[f"{ours}.attn.proj.weight"] = w.take(f"{theirs}.attn.out_proj.weight", (hidden, hidden))
    t[f"{ours}.attn.proj.bias"] = w.take(f"{theirs}.attn.out_proj.bias", (hidden,))
    t[f"{ours}.mlp.1.weight"] = w.take(f"{theirs}.mlp.1.weight", (hidden, hidden))
    t[f"{ours}.mlp.1.bias"] = w.take(f"{theirs}.mlp.1.bias", (hidden,))
    t[f"{ours}.mlp.3.weight"] = w.take(f"{theirs}.mlp.4.weight", (hidden, hidden))
    t[f"{ours}.mlp.3.bias"] = w.take(f"{theirs}.mlp.4.bias", (hidden,))
    return t


# --------------------------------------------------------------------------------------------------------------
# GPT backbone, generative model, classifier
# --------------------------------------------------------------------------------------------------------------


def _vocab_rows(t: torch.Tensor, codes: int, pad_value) -> torch.Tensor:
    """Reference vocabulary rows (start 0, code c at c + 1, stop K + 1) -> ours (codes, start K, stop K + 1, pad)."""
    out = torch.empty((codes + 3, *t.shape[1:]), dtype=t.dtype)
    out[:codes] = t[1: codes + 1]
    out[codes] = t[0]
    out[codes + 1] = t[codes + 1]
    out[codes + 2] = pad_value
    return out


def _backbone_options(hp: dict, source: str, codes: int, notes: list):
    mk = _Options(hp.get("model_kwargs"), "model_kwargs", source)
    embed = mk.number("embedding_dim", integer=True)
    heads = mk.number("n_heads", integer=True)
    blocks = mk.number("n_GPT_blocks", integer=True)
    vocab = mk.number("vocab_size", integer=True)
    if heads < 1 or embed % heads:
        mk.refuse("n_heads", f"the embedding size {embed} must be divisible by it")
    if vocab != codes + 2:
        mk.refuse("vocab_size", f"the tokenizer has {codes} codes, so the reference's vocabulary (codes + start + "
                                f"stop) is {codes + 2}: was this model trained on this tokenizer's tokens?")
    if mk.get("attention_dropout"):
        notes.append(f"model_kwargs.attention_dropout {mk.get('attention_dropout')} acts only in training; "
                     f"omnijet-weaver's GPT has no dropout")
    notes.append(f"GPT backbone: embedding {embed}, {blocks} post-norm blocks, {heads} heads, feed-forward "
                 f"{4 * embed}, no positional encoding (as the reference)")
    return mk, embed, heads, blocks


def _backbone_tensors(w: _Weights, codes: int, embed: int, blocks: int) -> dict:
    """The reference's BackboneModel (``module.*``) -> our Backbone's tensors (keys relative to it)."""
    t = {"embed.weight": _vocab_rows(w.take("module.embedding_table.weight", (codes + 2, embed)), codes, 0.0)}
    for i in range(blocks):
        r, o = f"module.GPT_blocks.{i}", f"blocks.{i}"
        q = w.take(f"{r}.mha_block.query.weight", (embed, embed))
        k = w.take(f"{r}.mha_block.key.weight", (embed, embed))
        v = w.take(f"{r}.mha_block.value.weight", (embed, embed))
        t[f"{o}.attn.qkv.weight"] = torch.cat([q, k, v])
        t[f"{o}.attn.qkv.bias"] = torch.zeros(3 * embed)  # the reference's projections have no bias
        t[f"{o}.attn.proj.weight"] = w.take(f"{r}.mha_block.proj.weight", (embed, embed))
        t[f"{o}.attn.proj.bias"] = w.take(f"{r}.mha_block.proj.bias", (embed,))
        w.skip(f"{r}.mha_block.tril")  # the causal mask as a buffer
        for a, b in (("layernorm_1", "norm1"), ("layernorm_2", "norm2")):
            t[f"{o}.{b}.weight"] = w.take(f"{r}.{a}.weight", (embed,))
            t[f"{o}.{b}.bias"] = w.take(f"{r}.{a}.bias", (embed,))
        t[f"{o}.ff.0.weight"] = w.take(f"{r}.ff_block.net.0.weight", (4 * embed, embed))
        t[f"{o}.ff.0.bias"] = w.take(f"{r}.ff_block.net.0.bias", (4 * embed,))
        t[f"{o}.ff.2.weight"] = w.take(f"{r}.ff_block.net.2.weight", (embed, 4 * embed))
        t[f"{o}.ff.2.bias"] = w.take(f"{r}.ff_block.net.2.bias", (embed,))
    return t


def import_generative(ckpt: dict, tokenizer, source: str = "generative checkpoint"):
    """Our :class:`~omnijet_weaver.models.generative.OmniJetGPT` from a reference
    ``BackboneNextTokenPredictionLightning`` checkpoint and the (imported) tokenizer its tokens came from.
    Returns ``(model, notes)``; raises like :func:`import_tokenizer`."""
    from .generative import OmniJetGPT

    hp = _hparams(ckpt, source)
    codes = tokenizer.codebook_size
    notes = []
    mk, embed, heads, blocks = _backbone_options(hp, source, codes, notes)
    if not mk.get("return_embeddings", False):
        mk.values.setdefault("return_embeddings", False)
        mk.refuse("return_embeddings", "the reference then returns the backbone's embeddings as logits and never "
                                       "uses its next-token head; only checkpoints with the head are generative")
    w = _Weights(ckpt["state_dict"], source)
    backbone = _backbone_tensors(w, codes, embed, blocks)
    head_w = _vocab_rows(w.take("head.fc1.weight", (codes + 2, embed)), codes, 0.0)
    head_b = _vocab_rows(w.take("head.fc1.bias", (codes + 2,)), codes, PAD_LOGIT)
    w.check_all_used()
    model = OmniJetGPT.from_tokenizer(tokenizer, embed_dim=embed, num_blocks=blocks, num_heads=heads,
                                      ff_dim=4 * embed)
    _load_exactly(model.backbone, backbone, source)
    _load_exactly(model.head, {"proj.weight": head_w, "proj.bias": head_b}, source)
    notes.append("next-token head: the reference's K + 2 logits re-ordered into ours, padding logit fixed at "
                 f"{PAD_LOGIT:g}")
    return model.eval(), notes


def import_classifier(ckpt: dict, tokenizer, source: str = "classifier checkpoint"):
    """Our :class:`~omnijet_weaver.models.tagger.OmniJetTagger` from a reference ``BackboneClassificationLightning``
    checkpoint (summation head) and the (imported) tokenizer its tokens came from. Class i is the reference's
    output i: its data config's ``labels_to_load`` in order (give weaver a data config with the same label order).
    Returns ``(model, notes)``; raises like :func:`import_tokenizer`."""
    from .tagger import OmniJetTagger

    hp = _hparams(ckpt, source)
    top = _Options(hp, "", source)
    if hp.get("class_head_type", "summation") != "summation":
        top.refuse("class_head_type", "omnijet-weaver's tagger has the summation head (Linear -> ReLU -> masked "
                                      "sum -> Linear)")
    codes = tokenizer.codebook_size
    notes = []
    mk, embed, heads, blocks = _backbone_options(hp, source, codes, notes)
    classes = mk.number("n_out_nodes", integer=True)
    if classes < 1:
        mk.refuse("n_out_nodes", "needs at least one class")
    if mk.get("keep_backbone_fixed"):
        notes.append("model_kwargs.keep_backbone_fixed acts only in training (ours: -o freeze_backbone True)")
    w = _Weights(ckpt["state_dict"], source)
    backbone = _backbone_tensors(w, codes, embed, blocks)
    head = {
        "hidden.weight": w.take("head.classification_head_linear_embed.weight", (embed, embed)),
        "hidden.bias": w.take("head.classification_head_linear_embed.bias", (embed,)),
        "out.weight": w.take("head.classification_head_linear_class.weight", (classes, embed)),
        "out.bias": w.take("head.classification_head_linear_class.bias", (classes,)),
    }
    w.check_all_used()
    from .checkpoint import description

    model = OmniJetTagger(description(tokenizer), num_classes=classes, embed_dim=embed, num_blocks=blocks,
                          num_heads=heads, ff_dim=4 * embed, head_hidden=embed)
    model.tokenizer.load_state_dict(tokenizer.state_dict())
    _load_exactly(model.backbone, backbone, source)
    _load_exactly(model.head, head, source)
    notes.append(f"classifier: summation head, {classes} classes (class i = the reference's output i)")
    return model.eval(), notes


__all__ = ["REFERENCE_COMMIT", "VQTORCH_COMMIT", "ALLOWED_GLOBALS", "Opaque", "read_reference_checkpoint",
           "to_plain", "feature_order", "import_tokenizer", "import_generative", "import_classifier"]
