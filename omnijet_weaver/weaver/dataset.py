"""weaver's own dataset, for the commands that read jets outside ``weaver`` (tokenize, evaluation).

Jets go through exactly the path a ``weaver`` training uses: the data config's selection, new variables,
padding and standardisation, read by uproot (ROOT TTrees) or awkward (parquet).
"""

from __future__ import annotations

import os

import awkward as ak
import numpy as np
from torch.utils.data import DataLoader

from ..constants import TOKEN_COLUMN
from ..errors import InputFileError  # noqa: F401 (re-exported)


def check_files(files) -> list[str]:
    """Check every input file before weaver sees it: it exists, and a ROOT file opens and holds a TTree
    (weaver skips RNTuples silently: "Zero entries loaded"). Raises with the file's name otherwise."""
    from ..io.files import root_tree_kinds

    files = [os.fspath(f) for f in files]
    if not files:
        raise ValueError("no input files given")
    for f in files:
        if not os.path.isfile(f):
            raise InputFileError(f"input file {f!r} does not exist")
        if f.endswith(".root"):
            try:
                kinds = root_tree_kinds(f)
            except Exception as err:
                raise InputFileError(f"input file {f!r} is not a readable ROOT file ({type(err).__name__}: {err})") from None
            if "TTree" not in kinds.values():
                found = ", ".join(f"{k} ({v})" for k, v in kinds.items()) or "nothing"
                raise InputFileError(
                    f"input file {f!r} holds no TTree (found {found}); weaver reads TTrees only: convert it "
                    f"with `omnijet-weaver-convert {f} --output <out.root>`"
                )
    return files


def file_branches(path) -> set[str]:
    """Branch (column) names of a ROOT TTree ``tree``-like file or a parquet file."""
    path = os.fspath(path)
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            return set(pq.ParquetFile(path).schema_arrow.names)
        except Exception as err:
            raise InputFileError(f"input file {path!r} is not a readable parquet file ({type(err).__name__}: {err})") from None
    import uproot

    from ..io.files import root_tree_kinds

    trees = [k for k, v in root_tree_kinds(path).items() if v == "TTree"]
    with uproot.open(path) as f:
        return set(f[trees[0]].keys()) if trees else set()


def read_data_config(data_config, load_observers: bool = True):
    """weaver's ``DataConfig`` of the YAML file ``data_config`` (without reweighting information)."""
    from weaver.utils.data.config import DataConfig

    return DataConfig.load(os.fspath(data_config), load_observers=load_observers, load_reweight_info=False)


def check_branches(files, data_config, for_training: bool = False) -> None:
    """Raise a clear error if a file lacks a branch the data config reads (weaver would fail deep inside
    awkward with "no field ... in record", without naming the file)."""
    cfg = read_data_config(data_config, load_observers=not for_training)
    needed = cfg.train_load_branches if for_training else cfg.test_load_branches
    for f in files:
        missing = sorted(needed - file_branches(f))
        if missing:
            raise InputFileError(
                f"input file {f!r} lacks the branch(es) {', '.join(missing)} that data config "
                f"{os.fspath(data_config)!r} reads; pick the data config made for this file layout"
            )


def jet_loader(data_config, files, batch_size: int = 256, num_workers: int = 0, name: str = "") -> DataLoader:
    """A DataLoader over ``files`` with weaver's ``SimpleIterDataset`` in test mode (file order kept, no
    shuffling, observers and labels loaded). Yields ``(X, y, Z)`` dicts as in weaver's loops.

    Args:
        data_config: path of a weaver data config (YAML).
        files: ROOT or parquet files.
        batch_size: jets per batch.
    """
    from weaver.utils.dataset import SimpleIterDataset

    files = check_files(files)
    if not os.path.isfile(os.fspath(data_config)):
        raise FileNotFoundError(f"data config {os.fspath(data_config)!r} does not exist")
    check_branches(files, data_config)
    dataset = SimpleIterDataset(
        {name: files},
        os.fspath(data_config),
        for_training=False,
        load_range_and_fraction=((0, 1), 1, 1),
        fetch_by_files=True,
        fetch_step=1,
        name=name or "jets",
    )
    return DataLoader(dataset, batch_size=batch_size, num_workers=min(num_workers, len(files)), drop_last=False)


def tokenize_files(tokenizer, data_config, files, device="cpu", batch_size=512, progress=True) -> ak.Array:
    """Tokenize ``files`` with weaver's dataset; returns one record per jet (tokens, label, observers)."""
    import torch
    import tqdm

    tokenizer = tokenizer.to(device).eval()
    tokens, labels, observers = [], [], {}
    loader = jet_loader(data_config, files, batch_size=batch_size)
    input_names = loader.dataset.config.input_names
    label_name = loader.dataset.config.label_names[0] if loader.dataset.config.label_names else None
    with torch.no_grad():
        for X, y, Z in tqdm.tqdm(loader, disable=not progress, unit="batch", desc="tokenize"):
            points, _, vectors, mask = (X[k].to(device) for k in input_names[:4])
            ids, keep = tokenizer.encode(points, vectors, mask)
            counts = keep.sum(1).cpu().numpy()
            flat = ids[keep].cpu().numpy()  # row-major: jets in order, constituents pT-ordered
            tokens.append(ak.unflatten(flat.astype(np.int32), counts))
            if label_name is not None:
                labels.append(y[label_name].numpy())
            for k, v in Z.items():
                observers.setdefault(k, []).append(np.asarray(v))
    if not tokens:
        raise ValueError("no jets were read: check the files and the data config's selection")
    columns = {TOKEN_COLUMN: ak.concatenate(tokens)}
    if labels:
        columns["label"] = np.concatenate(labels).astype(np.int64)
    columns.update({k: np.concatenate(v) for k, v in observers.items()})
    return ak.zip(columns, depth_limit=1)


def _selection_inputs(data_config, file_branches) -> tuple[list, dict]:
    """(file branches, new-variable formulas in definition order) that the data config's selection reads."""
    from .compat import data_var_names

    if not data_config.selection:
        return [], {}
    funcs, branches, todo = {}, set(), data_var_names(data_config.selection)
    while todo:
        name = todo.pop()
        if name in file_branches:
            branches.add(name)
        elif name in data_config.var_funcs and name not in funcs:
            funcs[name] = data_config.var_funcs[name]
            todo += data_var_names(data_config.var_funcs[name])
    ordered = {k: v for k, v in data_config.var_funcs.items() if k in funcs}  # dependencies first
    return sorted(branches), ordered


def selected_classes(files, data_config) -> np.ndarray:
    """The class of every jet of the ROOT ``files`` (concatenated in file order), as weaver's data config sees
    it: the index into ``data_config.label_value`` of the jet's one ``simple`` label branch that is 1 (the
    others 0), or -1 for a jet without exactly one label or dropped by the config's ``selection`` (evaluated
    with weaver's own expression functions and new variables). Reads only the label branches and those the
    selection needs.

    Args:
        files: ROOT files (their first TTree).
        data_config: a loaded weaver ``DataConfig`` with ``simple`` labels.
    Returns:
        int64 array (jets,).
    """
    import uproot

    from ..io.files import root_tree_kinds
    from .compat import build_new_variables, eval_expr

    labels = list(data_config.label_value)
    classes = []
    for path in files:
        trees = [k for k, v in root_tree_kinds(path).items() if v == "TTree"]
        if not trees:
            raise InputFileError(f"input file {os.fspath(path)!r} holds no TTree; weaver reads TTrees only")
        with uproot.open(path) as f:
            tree = f[trees[0]]
            branches, funcs = _selection_inputs(data_config, set(tree.keys()))
            table = tree.arrays(sorted(set(labels) | set(branches)))
        onehot = np.stack([ak.to_numpy(table[n]).astype(np.float64) for n in labels], axis=1)
        ok = ((onehot == 1).sum(axis=1) == 1) & ((onehot == 0).sum(axis=1) == len(labels) - 1)
        if data_config.selection:
            build_new_variables(table, funcs)
            ok &= ak.to_numpy(ak.values_astype(eval_expr(data_config.selection, table), bool))
        classes.append(np.where(ok, np.argmax(onehot, axis=1), -1).astype(np.int64))
    return np.concatenate(classes) if classes else np.zeros(0, dtype=np.int64)
