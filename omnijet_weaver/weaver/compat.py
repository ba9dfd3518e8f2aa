"""The one place where omnijet-weaver reaches into weaver-core beyond its command line and data configs.

Our hooks run inside weaver's process and depend on how weaver-core 0.5.3 calls them (SPEC "weaver facts"):
``get_train_fn`` / ``get_evaluate_fn`` are called once per run, an AttributeError from them is taken for "not
defined"; ``train`` / ``evaluate`` get weaver's ``locals()`` as ``extra_args`` (``extra_args["args"]``: the
command line: ``model_prefix``, ``regression_mode``, ``load_epoch``, ``run_mode``, ``use_amp``, ``amp_dtype``);
weaver keeps the epoch whose metric is strictly better than the best so far (starting from 0, or +inf with
``--regression-mode``) and logs figures with 5 decimals. Everything below is private to weaver (underscore
names) or tied to that version, and is imported nowhere else in the package:

- :func:`check_weaver`: the installed weaver-core is one these hooks were written for (else a one-line
  :class:`~omnijet_weaver.errors.ConfigError`);
- :func:`weaver_loop`: weaver's own ``train_classification`` / ``evaluate_classification`` (or the regression
  pair), which the tagger's hooks wrap;
- :func:`concat`, :func:`data_var_names`, :func:`eval_expr`, :func:`build_new_variables`: weaver's array and
  expression helpers, so that our code reads jets exactly as weaver does.
"""

from __future__ import annotations

import functools
import re

from ..errors import ConfigError, MissingDependencyError

#: The weaver-core releases the hooks are written for: 0.5.x from 0.5.3 on.
SUPPORTED = ((0, 5, 3), (0, 6, 0))  # [lowest, first unsupported)

#: Decimals of the figures in weaver's log ("Current validation metric: %.5f", "Eval AvgLoss: %.5f").
LOG_DECIMALS = 5


def _version_tuple(text: str) -> tuple:
    """(major, minor, patch) of a version string: leading digits of its first three parts ("0.6.0rc1" -> 0.6.0)."""
    parts = [int(m.group()) if m else 0 for m in (re.match(r"\d+", piece) for piece in text.split(".")[:3])]
    return tuple(parts + [0] * (3 - len(parts)))


@functools.lru_cache(maxsize=None)
def check_weaver() -> str:
    """The installed weaver-core version; raises :class:`ConfigError` unless it is 0.5.x, x >= 3."""
    from importlib import metadata

    try:
        version = metadata.version("weaver-core")
    except metadata.PackageNotFoundError:
        raise MissingDependencyError("weaver-core is not installed: pip install weaver-core==0.5.3") from None
    low, high = SUPPORTED
    if not low <= _version_tuple(version) < high:
        raise ConfigError(f"omnijet-weaver's weaver hooks are written for weaver-core 0.5.3 (0.5.x from 0.5.3 on), "
                          f"this environment has weaver-core {version}: pip install weaver-core==0.5.3")
    return version


def weaver_loop(kind: str, regression: bool):
    """weaver's own ``train_*`` (``kind="train"``) or ``evaluate_*`` function, as weaver itself picks it without
    custom hooks: the regression pair with ``--regression-mode``, the classification pair otherwise."""
    check_weaver()
    from weaver.utils.nn import tools

    if kind not in ("train", "evaluate"):
        raise ValueError(f"weaver_loop: kind must be 'train' or 'evaluate', got {kind!r}")
    return getattr(tools, f"{kind}_{'regression' if regression else 'classification'}")


def regression_mode(args) -> bool:
    """Whether weaver's command line ``args`` (``extra_args["args"]``; None outside weaver) asks for
    ``--regression-mode``, which turns the direction of weaver's best-epoch metric (lower is better)."""
    return bool(getattr(args, "regression_mode", False))


def logged(value: float) -> float:
    """``value`` as weaver's log shows it (``%.5f``, read back): the figure studies used to parse from logs."""
    return float(f"{value:.{LOG_DECIMALS}f}")


def concat(arrays):
    """weaver's ``_concat``: numpy arrays concatenated with numpy, awkward ones with awkward (``--predict``'s
    labels and observers)."""
    check_weaver()
    from weaver.utils.data.tools import _concat

    return _concat(arrays)


def data_var_names(expr: str) -> list:
    """The branch / new-variable names a data-config expression reads (weaver's ``_get_data_var_names``)."""
    check_weaver()
    from weaver.utils.data.eval_utils import _get_data_var_names

    return list(_get_data_var_names(expr))


def eval_expr(expr: str, table):
    """A data-config expression evaluated on an awkward table, with weaver's functions (``_eval_expr``)."""
    check_weaver()
    from weaver.utils.data.eval_utils import _eval_expr

    return _eval_expr(expr, table)


def build_new_variables(table, funcs: dict):
    """Add the data config's ``new_variables`` ``funcs`` ({name: expression}, in definition order) to ``table``
    in place, as weaver does (``_build_new_variables``)."""
    check_weaver()
    from weaver.utils.data.preprocess import _build_new_variables

    return _build_new_variables(table, funcs)


__all__ = ["SUPPORTED", "LOG_DECIMALS", "check_weaver", "weaver_loop", "logged", "concat", "data_var_names",
           "eval_expr", "build_new_variables"]
