"""weaver's own dataset, for the commands that read jets outside ``weaver`` (tokenize, evaluation).

Jets go through exactly the path a ``weaver`` training uses: the data config's selection, new variables,
padding and standardisation, read by uproot (ROOT TTrees) or awkward (parquet).

Everything is checked before the first jet is read, each failure one message naming the file and what to do:
the files (:func:`check_files`: present, files not folders, TTrees with entries), the data config
(:func:`read_data_config`: YAML, a mapping, weaver's options, ``inputs``), its inputs against what the models
read (:func:`check_inputs`, the one check, also run by the network configs' ``get_model``), the branches
(:func:`check_branches`) and the selection (:func:`selected_entries`: a file none of whose jets passes is left
out, as weaver would fail on it; no jet passing at all is an error). :func:`check_jet_files` runs them all.
"""

from __future__ import annotations

import os

import awkward as ak
import numpy as np
import torch
from torch.utils.data import DataLoader

from ..constants import INPUT_NAMES, LABEL_PREFIX, TOKEN_COLUMN
from ..errors import ConfigError, InputFileError  # noqa: F401 (re-exported)

#: The variables the models read from ParT's kin inputs, in this order (None: any one variable; pf_features
#: is not read by the models, so any variables).
KIN_INPUT_VARS = {"pf_points": ("part_deta", "part_dphi"),
                  "pf_vectors": ("part_px", "part_py", "part_pz", "part_energy"),
                  "pf_mask": (None,)}
#: The top-level keys of a weaver data config (weaver-core 0.5.3's ``DataConfig``).
DATA_CONFIG_KEYS = ("treename", "branch_magic", "file_magic", "selection", "test_time_selection", "preprocess",
                    "new_variables", "inputs", "labels", "observers", "monitor_variables", "weights", "bucketing")
START_FROM = "start from data_configs/qg_top.yaml (omnijet-weaver-configs --copy DIR)"


def check_inputs(data_config, network: str, where=None) -> None:
    """The one check of a data config's inputs against what the models read (every network config's
    ``get_model`` and every command run it): ParT's kin inputs ``pf_points, pf_features, pf_vectors, pf_mask``
    first and in this order (weaver hands them to ``forward`` by position), ``pf_points`` = (part_deta,
    part_dphi), ``pf_vectors`` = (part_px, part_py, part_pz, part_energy), ``pf_mask`` one variable.

    Args:
        data_config: a loaded weaver ``DataConfig``.
        network: who needs the inputs, for the message (``omnijet_cls``, ``omnijet-weaver-tokenize``).
        where: the data config's file, for the message (optional).
    Raises:
        ConfigError: naming the input, what it lists and what is needed.
    """
    of = f" of data config {os.fspath(where)!r}" if where is not None else " of the data config"
    names = tuple(data_config.input_names)
    if names[: len(INPUT_NAMES)] != INPUT_NAMES:
        raise ConfigError(
            f"{network} needs ParT's kin inputs {list(INPUT_NAMES)} (in this order) first in the `inputs`{of}, "
            f"but it lists {list(names)}; reorder them or {START_FROM}"
        )
    for name, want in KIN_INPUT_VARS.items():
        got = tuple(data_config.input_dicts[name])
        if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
            what = ", ".join(w for w in want if w) if any(want) else f"{len(want)} variable"
            raise ConfigError(
                f"{network}: input {name}{of} must list {what} (in this order: the models read them by position), "
                f"but it lists {', '.join(map(str, got)) or 'nothing'}; fix its `vars` (define new_variables with "
                f"these names if your branches are called otherwise) or {START_FROM}"
            )


def _yaml_error(err) -> str:
    """``problem at line L, column C`` of a YAML error."""
    problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def read_data_config(data_config, load_observers: bool = True):
    """weaver's ``DataConfig`` of the YAML file ``data_config`` (without reweighting information).

    Raises :class:`~omnijet_weaver.errors.ConfigError` naming the file for a file that is missing or a folder,
    YAML that does not parse, is empty or is not a mapping, unknown top-level keys, missing or malformed
    ``inputs`` / ``labels``, and anything else weaver's ``DataConfig`` refuses."""
    import copy

    import yaml
    from weaver.utils.data.config import DataConfig

    path = os.fspath(data_config)
    if not os.path.exists(path):
        raise ConfigError(f"data config {path!r} does not exist; give a YAML file or a shipped config by name "
                          f"(see omnijet-weaver-configs)")
    if os.path.isdir(path):
        raise ConfigError(f"data config {path!r} is a folder; give a YAML file")
    try:
        with open(path, encoding="utf-8") as f:
            opts = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise ConfigError(f"data config {path!r} is not valid YAML ({_yaml_error(err)}); fix it or "
                          f"{START_FROM}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"data config {path!r} cannot be read ({type(err).__name__}: {err})") from None
    if not isinstance(opts, dict):
        kind = "empty" if opts is None else f"a {type(opts).__name__}, not a mapping"
        raise ConfigError(f"data config {path!r} is {kind}: a weaver data config maps `inputs`, `labels`, ... to "
                          f"their settings; {START_FROM}")
    unknown = sorted(str(k) for k in opts if k not in DATA_CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"data config {path!r} has unknown key(s) {', '.join(unknown)} (weaver knows "
                          f"{', '.join(DATA_CONFIG_KEYS)}); fix the spelling or the indentation")
    inputs = opts.get("inputs")
    if not isinstance(inputs, dict) or not inputs:
        raise ConfigError(f"data config {path!r} has no `inputs` mapping; the models read ParT's kin inputs "
                          f"{', '.join(INPUT_NAMES)}: {START_FROM}")
    for name, o in inputs.items():
        if not isinstance(o, dict) or not isinstance(o.get("vars"), list) or not o["vars"] \
                or isinstance(o.get("length"), bool) or not isinstance(o.get("length"), int) or o["length"] < 1:
            raise ConfigError(f"data config {path!r}: input {name} needs `length` (a whole number >= 1) and a "
                              f"non-empty list `vars`; {START_FROM}")
    labels = opts.get("labels")
    if not isinstance(labels, dict) or "type" not in labels or "value" not in labels:
        raise ConfigError(f"data config {path!r} has no `labels` with `type` and `value` (e.g. type: simple, "
                          f"value: [label_QCD, label_Tbqq]); {START_FROM}")
    options = copy.deepcopy(opts)
    if not load_observers:
        options["observers"] = None
    options["weights"] = None
    try:
        return DataConfig(**options)
    except Exception as err:  # weaver's own checks: asserts, KeyErrors, RuntimeErrors
        raise ConfigError(f"data config {path!r} is not a valid weaver data config ({type(err).__name__}: "
                          f"{err}); {START_FROM}") from None


def check_data_config(data_config, network: str = "omnijet-weaver", load_observers: bool = True):
    """:func:`read_data_config` and :func:`check_inputs`: the loaded ``DataConfig`` of a data config that the
    models can read (raises :class:`~omnijet_weaver.errors.ConfigError` naming the file otherwise)."""
    cfg = read_data_config(data_config, load_observers=load_observers)
    check_inputs(cfg, network, where=data_config)
    return cfg


def check_files(files) -> list[str]:
    """Check every input file before weaver sees it: it exists and is a file (not a folder), a ROOT file opens
    and holds a TTree (weaver skips RNTuples silently: "Zero entries loaded"), and it holds at least one jet
    (weaver fails on an empty file with a traceback). Raises with the file's name otherwise; returns the paths
    (``~`` expanded)."""
    from ..io.files import root_tree_kinds

    files = [os.path.expanduser(os.fspath(f)) for f in files]
    if not files:
        raise ValueError("no input files given")
    for f in files:
        if os.path.isdir(f):
            raise InputFileError(f"input file {f!r} is a folder; give the jet files in it (e.g. "
                                 f"{os.path.join(f, '*.root')})")
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
        if file_entries(f) == 0:
            raise InputFileError(f"input file {f!r} holds no jets (0 entries); leave it out of the input files")
    return files


def _tree_name(path: str, treename=None) -> str:
    """The TTree weaver reads in a ROOT file: ``treename`` (the data config's) or the file's only TTree."""
    from ..io.files import root_tree_kinds

    trees = [k for k, v in root_tree_kinds(path).items() if v == "TTree"]
    if treename is not None:
        if treename not in trees:
            raise InputFileError(f"input file {path!r} has no TTree {treename!r} (the data config's `treename`); "
                                 f"it holds {', '.join(trees) or 'none'}")
        return treename
    if len(trees) != 1:
        raise InputFileError(f"input file {path!r} holds {len(trees)} TTrees ({', '.join(trees) or 'none'}); name "
                             f"the one to read with `treename:` in the data config" if trees else
                             f"input file {path!r} holds no TTree; weaver reads TTrees only")
    return trees[0]


def file_entries(path, treename=None) -> int:
    """Number of entries (jets) of a ROOT file's TTree (uproot ``num_entries``) or of a parquet file (its
    metadata): no data is read."""
    path = os.fspath(path)
    try:
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
        import uproot

        name = _tree_name(path, treename)
        with uproot.open(path) as f:
            return int(f[name].num_entries)
    except InputFileError:
        raise
    except Exception as err:
        kind = "parquet" if path.endswith(".parquet") else "ROOT"
        raise InputFileError(f"input file {path!r} is not a readable {kind} file ({type(err).__name__}: {err})") from None


def _read_columns(path: str, columns, treename=None):
    """The ``columns`` of a ROOT TTree or parquet file, as one awkward record array."""
    if path.endswith(".parquet"):
        return ak.from_parquet(path, columns=list(columns))
    import uproot

    with uproot.open(path) as f:
        return f[_tree_name(path, treename)].arrays(list(columns))


def selected_entries(path, data_config) -> np.ndarray:
    """Which entries of ``path`` pass the data config's selection as weaver's test mode applies it
    (``test_time_selection``, else ``selection``): a boolean array over the file's entries. Reads only the
    branches the selection needs (none without a selection)."""
    from .compat import build_new_variables, eval_expr

    path = os.fspath(path)
    n = file_entries(path, data_config.treename)
    selection = data_config.test_time_selection
    if not selection:
        return np.ones(n, dtype=bool)
    branches, funcs = _selection_inputs(data_config, file_branches(path), selection)
    table = _read_columns(path, branches, data_config.treename) if branches else ak.Array([{}] * n)
    build_new_variables(table, funcs)
    keep = ak.to_numpy(ak.values_astype(eval_expr(selection, table), bool))
    return np.broadcast_to(keep, (n,)).copy()


def check_selection(files, data_config, where=None) -> list[np.ndarray]:
    """:func:`selected_entries` of every file; raises :class:`~omnijet_weaver.errors.ConfigError` when no jet of
    any file passes the selection."""
    masks = [selected_entries(f, data_config) for f in files]
    if not any(m.any() for m in masks):
        name = f"data config {os.fspath(where)!r}" if where is not None else "the data config"
        raise ConfigError(
            f"no jet of the {sum(len(m) for m in masks)} in {', '.join(map(str, files))} passes the selection "
            f"`{' '.join(str(data_config.test_time_selection).split())}` of {name}; check the selection and that "
            f"the files hold the classes it keeps"
        )
    return masks


def check_jet_files(files, data_config, network: str = "omnijet-weaver"):
    """Every check before reading jets for the models: :func:`check_files`, :func:`check_data_config`,
    :func:`check_branches`, :func:`check_selection`. Returns ``(files, DataConfig, selection masks)``."""
    files = check_files(files)
    cfg = check_data_config(data_config, network)
    check_branches(files, data_config, config=cfg)
    return files, cfg, check_selection(files, cfg, where=data_config)


def jet_quotas(entries, available, max_jets) -> list[int]:
    """How many jets each file gives to a sample of ``max_jets`` (None: all): shares proportional to the files'
    numbers of entries (largest remainders), each at most the file's ``available`` (selected) jets; what a file
    cannot give goes to the others, again in proportion to their entries."""
    available = [int(a) for a in available]
    if max_jets is None or max_jets >= sum(available):
        return available
    quotas = [0] * len(available)
    left = int(max_jets)
    while left > 0:
        open_ = [i for i, a in enumerate(available) if quotas[i] < a]
        weights = np.array([float(entries[i]) for i in open_])
        if weights.sum() <= 0:
            weights = np.ones(len(open_))
        share = weights / weights.sum() * left
        give = np.floor(share).astype(int)
        for j in np.argsort(-(share - give), kind="stable")[: left - int(give.sum())]:
            give[j] += 1
        for j, i in enumerate(open_):
            take = min(int(give[j]), available[i] - quotas[i])
            quotas[i] += take
            left -= take
    return quotas


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


def check_branches(files, data_config, for_training: bool = False, config=None) -> None:
    """Raise a clear error if a file lacks a branch the data config reads (weaver would fail deep inside
    awkward with "no field ... in record", without naming the file). ``config``: the data config, loaded
    already (test mode)."""
    cfg = config if config is not None and not for_training else read_data_config(data_config,
                                                                                    load_observers=not for_training)
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

    The files, the data config, the branches and the selection are checked first (see the module docstring);
    files none of whose jets passes the selection are left out (weaver would fail on them).

    Args:
        data_config: path of a weaver data config (YAML).
        files: ROOT or parquet files.
        batch_size: jets per batch.
    """
    files = checked_files(data_config, files)
    return _loader(data_config, files, batch_size=batch_size, num_workers=num_workers, name=name)


def checked_files(data_config, files, config=None) -> list[str]:
    """``files`` checked for reading with ``data_config`` (:func:`check_files`, :func:`check_branches`,
    :func:`check_selection`), without those none of whose jets passes the selection (weaver would fail on them).
    ``config``: the loaded ``DataConfig``, if the caller has it."""
    files = check_files(files)
    config = read_data_config(data_config) if config is None else config
    check_branches(files, data_config, config=config)
    masks = check_selection(files, config, where=data_config)
    return [f for f, m in zip(files, masks) if m.any()]


def _dataset(data_config, files, name: str = "", load_range=(0, 1)):
    """weaver's test-mode ``SimpleIterDataset`` over checked ``files`` (file order kept), reading the fraction
    ``load_range`` of the entries of each."""
    from weaver.utils.dataset import SimpleIterDataset

    return SimpleIterDataset(
        {name: list(files)},
        os.fspath(data_config),
        for_training=False,
        load_range_and_fraction=(tuple(load_range), 1, 1),
        fetch_by_files=True,
        fetch_step=1,
        name=name or "jets",
    )


def _loader(data_config, files, batch_size: int = 256, num_workers: int = 0, name: str = "",
            load_range=(0, 1)) -> DataLoader:
    """A DataLoader over :func:`_dataset`."""
    return DataLoader(_dataset(data_config, files, name, load_range), batch_size=batch_size,
                      num_workers=min(num_workers, len(files)), drop_last=False)


def sampled_batches(data_config, files, max_jets=None, batch_size: int = 512, network: str = "omnijet-weaver",
                    classes=None):
    """The jets of a sample of at most ``max_jets`` (None: all) drawn from several files, read in batches.

    Rule: every file gives its share of the jets, in proportion to its number of entries (:func:`jet_quotas`;
    a file with fewer selected jets gives them all and the others make up the rest), taken from its first
    entries; only the entries up to the last jet needed are read, so a few jets out of large files cost little.
    With ``classes`` (indices into the data config's ``simple`` labels, ROOT files) the rule holds for each of
    those classes on its own: at most ``max_jets`` jets *of each class*, and no jet of another class.
    Mixing the jets (the order here is by file) is the caller's job (:func:`omnijet_weaver.evaluation.
    reconstruction.load_jets` shuffles them with a seed). Everything is checked first (:func:`check_jet_files`).

    Returns:
        (the loaded ``DataConfig``, a generator of ``(X, y, Z)`` batches as from :func:`jet_loader`).
    """
    files, cfg, masks = check_jet_files(files, data_config, network)
    if classes is None:
        quotas = [[q] for q in jet_quotas([len(m) for m in masks], [int(m.sum()) for m in masks], max_jets)]
        wanted = [masks]  # wanted[c][file]: entries that count for quota c
    else:
        if cfg.label_type != "simple":
            raise ConfigError("jets by class need a data config with simple labels (label_QCD, label_Tbqq, ...)")
        per_file = [selected_classes([f], cfg) for f in files]
        wanted = [[(m & (k == c)) for m, k in zip(masks, per_file)] for c in classes]
        by_class = [jet_quotas([len(m) for m in masks], [int(w.sum()) for w in ws], max_jets) for ws in wanted]
        quotas = [list(q) for q in zip(*by_class)]  # quotas[file][c]
    label_name = cfg.label_names[0] if classes is not None else None

    def batches():
        for i, path in enumerate(files):
            if sum(quotas[i]) == 0:
                continue
            # entries [0, stop) hold the first quota jets of every class
            stop = max(int(np.flatnonzero(wanted[c][i])[q - 1]) + 1 for c, q in enumerate(quotas[i]) if q > 0)
            n_entries = len(masks[i])
            end = 1.0 if stop >= n_entries else (stop + 0.5) / n_entries  # weaver: entries [0, trunc(end * n))
            left = np.array(quotas[i])
            for X, y, Z in _loader(data_config, [path], batch_size=batch_size, load_range=(0.0, end)):
                if classes is None:
                    keep = np.arange(len(next(iter(y.values())))) < left[0]
                    left[0] -= int(keep.sum())
                else:
                    label = np.asarray(y[label_name]).reshape(-1)
                    keep = np.zeros(len(label), dtype=bool)
                    for c, k in enumerate(classes):
                        rows = np.flatnonzero(label == k)[: max(int(left[c]), 0)]
                        keep[rows] = True
                        left[c] -= len(rows)
                if keep.any():
                    rows = np.flatnonzero(keep)
                    yield tuple({k: v[torch.from_numpy(rows)] if torch.is_tensor(v) else v[rows] for k, v in d.items()}
                                for d in (X, y, Z))
                if (left <= 0).all():
                    break

    return cfg, batches()


def worker_file_order(files, num_workers: int) -> list:
    """``files`` rearranged so that weaver's ``SimpleIterDataset``, which gives worker w the files
    ``[w::num_workers]``, gives each worker a *contiguous* block of the original order (the first
    ``len(files) % num_workers`` blocks one file longer): then worker 0's jets, worker 1's, ... are the jets in
    file order."""
    files = list(files)
    n = max(1, min(num_workers, len(files)))
    sizes = [len(files[w::n]) for w in range(n)]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
    order = [None] * len(files)
    for w in range(n):
        for j in range(sizes[w]):
            order[w + n * j] = files[starts[w] + j]
    return order


class _WorkerTagged(torch.utils.data.IterableDataset):
    """An iterable dataset whose items carry the id of the DataLoader worker that made them (0 in-process)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        for item in self.dataset:
            yield (*item, worker)


def ordered_batches(data_config, files, batch_size: int = 512, num_workers: int = 0, pin_memory: bool = False):
    """Batches of weaver's test-mode dataset over checked ``files`` read by ``num_workers`` DataLoader worker
    processes (0: in this process), as ``(worker, (X, y, Z))``: loading overlaps the caller's work on earlier
    batches. Each worker reads a contiguous block of files (:func:`worker_file_order`), so concatenating the
    batches of worker 0, then worker 1, ... gives the jets in file order; ``pin_memory`` pins the batches for
    asynchronous copies to a GPU."""
    n = max(0, min(num_workers, len(files)))
    dataset = _dataset(data_config, worker_file_order(files, n))
    loader = DataLoader(_WorkerTagged(dataset), batch_size=batch_size, num_workers=n, drop_last=False,
                        pin_memory=pin_memory)
    for X, y, Z, worker in loader:
        yield int(worker[0]), (X, y, Z)


def tokenize_files(tokenizer, data_config, files, device="cpu", batch_size=512, progress=True,
                   num_workers: int = 0) -> ak.Array:
    """Tokenize ``files`` with weaver's dataset; returns one record per jet (tokens, label, observers), in file
    order. The data config must give ParT's kin inputs (:func:`check_inputs`; they are taken by name).

    ``num_workers`` DataLoader processes read the files (each a contiguous block of them, see
    :func:`ordered_batches`) while this process encodes; on a GPU the batches are pinned and copied
    asynchronously. The result does not depend on ``num_workers`` or ``batch_size``."""
    import torch
    import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be a whole number of at least 0, got {num_workers!r}")
    config = check_data_config(data_config, "the tokenizer")
    files = checked_files(data_config, files, config)
    device = torch.device(device)
    cuda = device.type == "cuda"
    tokenizer = tokenizer.to(device).eval()
    parts = {}  # worker -> [(tokens, labels, observers)] in the worker's order
    label_name = config.label_names[0] if config.label_names else None
    batches = ordered_batches(data_config, files, batch_size=batch_size, num_workers=num_workers, pin_memory=cuda)
    with torch.no_grad():
        for worker, (X, y, Z) in tqdm.tqdm(batches, disable=not progress, unit="batch", desc="tokenize"):
            ids, keep = tokenizer.encode(*(X[k].to(device, non_blocking=cuda) for k in ("pf_points", "pf_vectors",
                                                                                        "pf_mask")))
            counts = keep.sum(1).cpu().numpy()
            flat = ids[keep].cpu().numpy()  # row-major: jets in order, constituents pT-ordered
            labels = y[label_name].numpy() if label_name is not None else None
            parts.setdefault(worker, []).append((ak.unflatten(flat.astype(np.int32), counts), labels,
                                                 {k: np.asarray(v) for k, v in Z.items()}))
    ordered = [part for worker in sorted(parts) for part in parts[worker]]
    if not ordered:
        raise ValueError("no jets were read: check the files and the data config's selection")
    columns = {TOKEN_COLUMN: ak.concatenate([p[0] for p in ordered])}
    if label_name is not None:
        columns["label"] = np.concatenate([p[1] for p in ordered]).astype(np.int64)
    columns.update({k: np.concatenate([p[2][k] for p in ordered]) for k in ordered[0][2]})
    return ak.zip(columns, depth_limit=1)


def _selection_inputs(data_config, file_branches, selection=None) -> tuple[list, dict]:
    """(file branches, new-variable formulas in definition order) that ``selection`` (default: the data
    config's ``selection``) reads."""
    from .compat import data_var_names

    selection = data_config.selection if selection is None else selection
    if not selection:
        return [], {}
    funcs, branches, todo = {}, set(), data_var_names(selection)
    while todo:
        name = todo.pop()
        if name in file_branches:
            branches.add(name)
        elif name in data_config.var_funcs and name not in funcs:
            funcs[name] = data_config.var_funcs[name]
            todo += data_var_names(data_config.var_funcs[name])
    ordered = {k: v for k, v in data_config.var_funcs.items() if k in funcs}  # dependencies first
    return sorted(branches), ordered


def label_classes(data_config) -> list[str]:
    """The class names of a loaded ``DataConfig``'s ``simple`` labels, in its order (weaver's class index):
    ``label_QCD`` -> ``QCD`` (:data:`~omnijet_weaver.constants.LABEL_PREFIX` removed); ``[]`` for ``custom``
    labels, which carry no names."""
    if data_config.label_type != "simple":
        return []
    return [v.removeprefix(LABEL_PREFIX) for v in data_config.label_value]


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
