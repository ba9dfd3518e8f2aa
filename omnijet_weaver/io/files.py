"""Reading and writing jets in the JetClass layout (ROOT TTree ``tree`` or parquet).

Outputs are always written under a hidden partial name in the target folder and published at the end
(:mod:`omnijet_weaver.atomic`), so an interrupted command never leaves a file that looks complete and two
runs never silently replace each other's output. ROOT files are written as TTrees
(``mktree`` + ``extend``): uproot's ``f[name] = {...}`` would write an RNTuple, which weaver skips.
"""

from __future__ import annotations

import os

import awkward as ak
import numpy as np

from ..atomic import atomic_output
from ..constants import TREE_NAME
from ..errors import ConfigError, OutputExistsError  # noqa: F401 (re-exported)


def check_output_path(path, overwrite: bool = False, suffixes=(".root", ".parquet")) -> str:
    """Validate an output file path before any work is done; returns it as a string (``~`` expanded).

    Raises a clear error for a missing folder, a folder this process cannot write in, an unknown extension, a
    path that is a folder, or an existing file (unless ``overwrite``). Where it can, it also removes partial
    files that killed runs left for this output (:mod:`omnijet_weaver.atomic`).
    """
    from ..atomic import check_writable_folder, clean_stale_partials

    path = os.path.expanduser(os.fspath(path))
    if not path or path.endswith(os.sep) or os.path.isdir(path):
        raise ConfigError(f"output {path!r} is a folder; give a file name (e.g. {os.path.join(path, 'out')}"
                         f"{suffixes[0] if suffixes else ''})")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"output folder {folder!r} does not exist; create it first")
    if suffixes and not path.endswith(tuple(suffixes)):
        raise ValueError(f"output {path!r} must end with one of {', '.join(suffixes)}")
    if os.path.lexists(path) and not overwrite:
        raise OutputExistsError(f"output {path!r} exists; pass --overwrite to replace it")
    check_writable_folder(folder, f"output {path!r}")
    clean_stale_partials(path)
    return path


def write_root(path, arrays: dict, tree: str = TREE_NAME, chunk_size: int = 100_000, overwrite: bool = True) -> None:
    """Write a dict of equal-length arrays (numpy for per-jet values, awkward jagged for per-constituent
    values) as a TTree, atomically (:func:`omnijet_weaver.atomic.atomic_output`; without ``overwrite`` an
    existing file is never replaced). Jagged branches get uproot's usual ``n<name>`` counter branches.
    """
    arrays = {k: (v if isinstance(v, np.ndarray) else ak.Array(v)) for k, v in arrays.items()}
    lengths = {len(v) for v in arrays.values()}
    if len(lengths) != 1:
        raise ValueError(f"all branches must have the same number of jets, got lengths {sorted(lengths)}")
    import uproot

    n = lengths.pop()
    with atomic_output(path, overwrite=overwrite) as tmp:
        with uproot.recreate(tmp) as f:
            branch_types = {k: (v.dtype if isinstance(v, np.ndarray) else v.type.content) for k, v in arrays.items()}
            t = f.mktree(tree, branch_types)
            for start in range(0, max(n, 1), chunk_size):
                t.extend({k: v[start : start + chunk_size] for k, v in arrays.items()})


def write_parquet(path, arrays: dict, overwrite: bool = True) -> None:
    """Write a dict of equal-length (possibly jagged) arrays as one parquet file, atomically (without
    ``overwrite`` an existing file is never replaced)."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        ak.to_parquet(ak.zip({k: ak.Array(v) for k, v in arrays.items()}, depth_limit=1), tmp)


def write_jets(path, arrays: dict, overwrite: bool = True) -> None:
    """Write by extension: ``.root`` (TTree ``tree``) or ``.parquet`` (without ``overwrite`` an existing file
    is never replaced, even one that appeared while the jets were made)."""
    path = os.fspath(path)
    if path.endswith(".root"):
        write_root(path, arrays, overwrite=overwrite)
    elif path.endswith(".parquet"):
        write_parquet(path, arrays, overwrite=overwrite)
    else:
        raise ValueError(f"cannot tell the format of {path!r}: use a .root or .parquet file name")


def root_tree_kinds(path) -> dict:
    """``{name: classname}`` of the trees (TTree or RNTuple) at the top of a ROOT file.

    Raises ``OSError`` for a truncated file (shorter than the end recorded in its header)."""
    import uproot

    path = os.fspath(path)
    with uproot.open(path) as f:
        size = os.path.getsize(path)
        if size < f.file.fEND:
            raise OSError(f"the file is truncated ({size} of {f.file.fEND} bytes)")
        return {k.split(";")[0]: v for k, v in f.classnames().items() if v in ("TTree", "ROOT::RNTuple")}


def convert_to_ttree(src, dst, tree: str = TREE_NAME, overwrite: bool = False) -> int:
    """Rewrite the tree ``tree`` of a ROOT file (TTree or RNTuple, e.g. written by uproot's
    ``f[name] = {...}``) or a parquet file as a TTree that weaver reads. Returns the number of jets."""
    src, dst = os.fspath(src), check_output_path(dst, overwrite=overwrite, suffixes=(".root",))
    if src.endswith(".parquet"):
        table = ak.from_parquet(src)
    else:
        import uproot

        with uproot.open(src) as f:
            if tree not in root_tree_kinds(src):
                raise KeyError(f"{src!r} has no tree {tree!r}; it has {sorted(root_tree_kinds(src))}")
            table = f[tree].arrays()
    arrays = {}
    for name in table.fields:
        col = table[name]
        arrays[name] = col.to_numpy() if col.ndim == 1 else col
    write_root(dst, arrays, tree=tree, overwrite=overwrite)
    return len(table)


def split_root(src, first, rest, fraction: float = 0.9, tree: str = TREE_NAME) -> tuple[int, int]:
    """Write the first ``fraction`` of the jets of ``src`` to ``first`` and the others to ``rest`` (TTrees),
    e.g. to hold back jets for evaluation. Returns the two numbers of jets."""
    import uproot

    with uproot.open(os.fspath(src)) as f:
        table = f[tree].arrays()
    cut = int(fraction * len(table))
    for path, part in ((first, table[:cut]), (rest, table[cut:])):
        write_root(path, {k: (part[k].to_numpy() if part[k].ndim == 1 else part[k]) for k in part.fields}, tree=tree)
    return cut, len(table) - cut
