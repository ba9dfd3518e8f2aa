"""The weaver configs shipped inside the package: the one place that finds them.

Network configs (``weaver --network-config``) are ``omnijet_weaver/configs/network/*.py``, data configs
(``weaver --data-config``) ``omnijet_weaver/configs/data/*.yaml``; the repository's top-level
``network_configs/`` and ``data_configs/`` link to them. The paths are found next to this module, so they are
the same for a wheel install and for an editable checkout:

- :func:`network_config`, :func:`data_config`, :func:`config_path`: one config by name (``omnijet_cls`` or
  ``omnijet_cls.py``), an unknown name fails with the list of known ones;
- :func:`list_configs`: every shipped config;
- :func:`copy_configs`: copies of all of them in ``DEST/network_configs/`` and ``DEST/data_configs/`` (the
  repository's layout, so the documented ``weaver --network-config network_configs/omnijet_cls.py ...``
  command lines work from ``DEST``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..atomic import atomic_output
from ..errors import ConfigError, OutputExistsError

#: Root of the shipped configs (``omnijet_weaver/configs``), next to this module inside the installed package.
CONFIGS_DIR = Path(__file__).absolute().parent.parent / "configs"

#: Kind -> (folder under :data:`CONFIGS_DIR`, file suffix, folder name in a copy, weaver option).
KINDS = {
    "network": ("network", ".py", "network_configs", "--network-config"),
    "data": ("data", ".yaml", "data_configs", "--data-config"),
}


def list_configs(kind: str | None = None) -> dict[str, Path]:
    """Shipped configs of one kind (``network``, ``data``) or of both (network configs first):
    name without suffix -> absolute path, sorted by name within a kind."""
    kinds = [kind] if kind is not None else list(KINDS)
    found = {}
    for k in kinds:
        if k not in KINDS:
            raise ConfigError(f"unknown config kind {k!r}: choose from {', '.join(KINDS)}")
        folder, suffix = KINDS[k][:2]
        found.update({p.stem: p for p in sorted((CONFIGS_DIR / folder).glob(f"*{suffix}")) if p.is_file()})
    if not found:
        raise ConfigError(f"no weaver configs under {CONFIGS_DIR}: this omnijet-weaver installation is "
                          f"incomplete, reinstall it (pip install --force-reinstall omnijet-weaver)")
    return found


def config_path(name: str, kind: str | None = None) -> Path:
    """Path of the shipped config ``name`` (``omnijet_cls``, ``omnijet_cls.py``, ``qg_top``, ``qg_top.yaml``),
    of one kind or of either; raises :class:`ConfigError` naming the known configs when there is none."""
    known = list_configs(kind)
    for path in known.values():
        if str(name) in (path.stem, path.name):
            return path
    what = f"{kind} config" if kind else "config"
    raise ConfigError(f"no shipped weaver {what} {name!r}: choose from {', '.join(known)}")


def network_config(name: str) -> Path:
    """Path of a shipped network config (``omnijet_vqvae``, ``omnijet_gpt``, ``omnijet_cls``; suffix optional)."""
    return config_path(name, "network")


def data_config(name: str) -> Path:
    """Path of a shipped data config (``qg_top``, ``jetclass``, ``toplandscape``, ``quarkgluon``, ``tokens``;
    suffix optional)."""
    return config_path(name, "data")


def copy_configs(dest, overwrite: bool = False) -> list[Path]:
    """Copy every shipped config to ``dest/network_configs/`` and ``dest/data_configs/`` (folders created as
    needed) and return the written paths. Refuses with :class:`OutputExistsError`, before writing anything,
    when one of the files exists, unless ``overwrite``; each file is written under a temporary name and
    renamed into place, so an interrupted copy leaves no partial file."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise OutputExistsError(f"--copy {dest}: exists and is not a folder; name a folder for the configs")
    pairs = [(src, dest / KINDS[kind][2] / src.name) for kind in KINDS for src in list_configs(kind).values()]
    existing = [str(target) for _, target in pairs if target.exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{dest}: {len(existing)} of the {len(pairs)} configs exist there already (e.g. "
                                f"{existing[0]}): pass --overwrite to replace them, or copy to another folder")
    for src, target in pairs:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(target) as tmp:
            shutil.copyfile(src, tmp)
    return [target for _, target in pairs]


__all__ = ["CONFIGS_DIR", "KINDS", "list_configs", "config_path", "network_config", "data_config", "copy_configs"]
