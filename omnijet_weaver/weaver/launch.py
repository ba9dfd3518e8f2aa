"""``python -m omnijet_weaver.launch``: weaver-core 0.5.3's ``weaver`` command, fixed for multi-node and CPU torchrun jobs.

Run it where ``weaver`` would run, with the same arguments::

    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --master_port 29500 --nproc_per_node 8 \\
        -m omnijet_weaver.launch --backend nccl --gpus 0 --data-train ... --network-config ...

Without ``--backend`` it is plain ``weaver``. Under torchrun, weaver-core 0.5.3 (``weaver/train.py``) gets
three things wrong, which this launcher fixes by wrapping functions of the ``weaver.train`` module (its
module globals, looked up by ``main`` / ``_main`` at call time), never by editing weaver's source text:

1. **File shards by node-local rank.** ``to_filelist`` gives ``--data-train`` / ``--data-val`` files
   ``[local_rank::LOCAL_WORLD_SIZE]``, so with two nodes global ranks 0 and 2 read the same files. The wrapped
   ``to_filelist`` calls weaver's own with ``args.local_rank`` = the global ``RANK`` (set by fix 2) and
   ``LOCAL_WORLD_SIZE`` presented as ``WORLD_SIZE`` for the duration of the call: weaver's sharding, by global
   rank. A group with fewer files than ranks is refused with one line (weaver would fail an ``assert``).
   ``--data-test`` is not sharded by weaver, and only global rank 0 predicts (fix 2).
2. **Rank-0-only work on every node's local rank 0.** Saving checkpoints, copying the best epoch, the
   prediction and the tensorboard writer are gated inline in ``_main`` on ``local_rank == 0``; the same
   variable picks the GPU. The wrapped ``_main`` sets ``args.local_rank`` to the *global* rank, so every gate
   means "global rank 0" (and the datasets are named ``train_rank<global>``), and gives weaver's
   ``weaver.train.torch`` a view of torch in which the three device uses of that number take the node-local
   rank instead: ``torch.cuda.set_device`` (-> ``LOCAL_RANK``), the ``torch.device(rank)`` right after it
   (-> ``cuda:LOCAL_RANK``) and ``torch.nn.parallel.DistributedDataParallel`` (``device_ids`` /
   ``output_device`` -> ``[LOCAL_RANK]`` / ``LOCAL_RANK``). Everything else in the view is torch itself. The
   log file: the wrapped ``_configLogger`` numbers it by global rank (``train.log.002`` on the second node's
   first process, not a second ``train.log.000``); the console still shows each node's local rank 0.
   The prediction after training (``--data-test``) runs on global rank 0 alone, while weaver's
   ``evaluate_classification`` all-gathers over the process group whenever one exists, which would wait
   forever for ranks that have left: the wrapped ``test_load`` (called where the prediction starts) leaves the
   process group first.
3. **No CPU DDP.** With ``--gpus ""`` weaver never calls ``init_process_group`` and wraps the model in DDP with
   an unbound ``local_rank``. ``local_rank`` is a local variable of ``_main`` assigned only on its GPU branch,
   which no wrapper can reach from outside; so with ``--backend`` and ``--gpus ""`` the wrapped ``_main``
   presents a non-empty ``args.gpus`` to weaver's device block (it is read nowhere else once ``main`` has
   copied it into ``--predict-gpus``), which then takes its distributed branch through the view of torch:
   ``set_device`` does nothing, ``torch.device(rank)`` is the CPU, ``init_process_group`` is torch's own
   (``gloo``; ``nccl`` without GPUs is refused), DDP gets ``device_ids=None, output_device=None``, and
   ``SyncBatchNorm.convert_sync_batchnorm`` leaves the model as is (SyncBatchNorm runs on GPUs only; DDP's
   buffer broadcast keeps BatchNorm statistics equal across ranks).

At the end, every rank logs a digest of its model's ``state_dict`` (:func:`state_digest`, same function for a
saved checkpoint), so one can check that the ranks ended with the same model as the one rank 0 saved.

The launcher is written against weaver-core 0.5.3 only: :func:`check_weaver_train` refuses any other version,
and a ``weaver.train`` whose patched functions are missing or take other parameters, with one
``omnijet_weaver.launch: error: ...`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import inspect
import os
import sys
import types

import torch

from ..errors import ConfigError, MissingDependencyError

PROG = "omnijet_weaver.launch"

#: The one weaver-core release whose ``weaver/train.py`` this launcher patches.
WRITTEN_FOR = "0.5.3"

#: The ``weaver.train`` functions it wraps or calls, with their parameter names in weaver-core 0.5.3.
EXPECTED_SIGNATURES = {
    "main": (),
    "_main": ("args",),
    "to_filelist": ("args", "mode"),
    "test_load": ("args",),
    "_configLogger": ("name", "stdout", "filename", "loglevel"),
}

#: The command-line options of weaver's parser the launcher reads.
EXPECTED_OPTIONS = ("--backend", "--gpus", "--log-file", "--data-train", "--data-val", "--model-prefix")


def installed_version() -> str | None:
    """The installed weaver-core version (``weaver.__version__`` if it has one, else the package metadata);
    None when weaver-core is not installed."""
    from importlib import metadata

    try:
        import weaver
    except ImportError:
        return None
    version = getattr(weaver, "__version__", None)
    if version:
        return str(version)
    try:
        return metadata.version("weaver-core")
    except metadata.PackageNotFoundError:
        return None


def check_weaver_train():
    """The ``weaver.train`` module this launcher can patch; raises :class:`ConfigError` (one line) unless the
    installed weaver-core is exactly :data:`WRITTEN_FOR` and its functions are the ones it was written for."""
    version = installed_version()
    if version is None:
        raise MissingDependencyError(f"weaver-core is not installed; this launcher was written for weaver-core "
                                     f"{WRITTEN_FOR}: pip install weaver-core=={WRITTEN_FOR}")
    fix = (f"pip install weaver-core=={WRITTEN_FOR}, or run plain `weaver` (single node, GPUs) if this weaver "
           f"version shards files and gates rank-0 work by global rank itself")
    if version != WRITTEN_FOR:
        raise ConfigError(f"weaver-core {version} is installed, this launcher was written for {WRITTEN_FOR}; {fix}")
    import weaver.train as wt

    for name, params in EXPECTED_SIGNATURES.items():
        func = getattr(wt, name, None)
        if not callable(func):
            raise ConfigError(f"weaver.train.{name} is missing in weaver-core {version}, this launcher was written "
                              f"for the weaver-core {WRITTEN_FOR} one; {fix}")
        found = tuple(inspect.signature(func).parameters)
        if found != params:
            raise ConfigError(f"weaver.train.{name}({', '.join(found)}) in weaver-core {version} differs from "
                              f"{name}({', '.join(params)}) that this launcher was written for; {fix}")
    if getattr(wt, "torch", None) is not torch or not isinstance(getattr(wt, "parser", None), argparse.ArgumentParser):
        raise ConfigError(f"weaver.train in weaver-core {version} has no module-level `torch` / `parser` as "
                          f"weaver-core {WRITTEN_FOR} has; {fix}")
    known = {s for action in wt.parser._actions for s in action.option_strings}
    missing = [o for o in EXPECTED_OPTIONS if o not in known]
    if missing:
        raise ConfigError(f"weaver's command line in weaver-core {version} lacks {', '.join(missing)}; {fix}")
    return wt


# --------------------------------------------------------------------------------------------------------
# the torchrun environment
# --------------------------------------------------------------------------------------------------------


class Ranks(types.SimpleNamespace):
    """This process's place in a torchrun job: ``rank`` / ``world`` (global), ``local`` / ``local_world``
    (on its node), and ``cuda`` (whether it trains on a GPU)."""


def torchrun_ranks(backend: str | None, gpus: str) -> Ranks | None:
    """The ranks of a ``--backend`` run (None without ``--backend``); raises :class:`ConfigError` outside
    torchrun or for a backend that cannot run on the chosen device."""
    env = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    if backend is None:
        if env["WORLD_SIZE"] not in (None, "", "0", "1"):
            raise ConfigError(f"WORLD_SIZE={env['WORLD_SIZE']} (torchrun) but no --backend: every rank would train "
                              f"alone on all files and write the same checkpoints; give --backend nccl (GPUs) or "
                              f"--backend gloo (CPU)")
        return None
    if env["RANK"] is None or env["WORLD_SIZE"] is None:
        raise ConfigError(f"--backend {backend} needs the RANK / WORLD_SIZE of torchrun: launch with "
                          f"`torchrun ... -m omnijet_weaver.launch --backend {backend} ...`, or drop --backend")
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env["LOCAL_RANK"] if env["LOCAL_RANK"] is not None else env["RANK"])
        local_world = int(env["LOCAL_WORLD_SIZE"] if env["LOCAL_WORLD_SIZE"] is not None else env["WORLD_SIZE"])
    except ValueError:
        raise ConfigError(f"{' '.join(f'{k}={v!r}' for k, v in env.items() if v is not None)} is not a valid "
                          f"torchrun environment: launch with torchrun") from None
    if not (0 <= rank < world and 0 <= local < local_world <= world):
        raise ConfigError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}, LOCAL_WORLD_SIZE={local_world} "
                          f"is not a valid torchrun environment: launch with torchrun")
    cuda = bool(gpus)
    if not cuda and backend == "nccl":
        raise ConfigError('--backend nccl needs GPUs but --gpus is empty: use --backend gloo for CPU training, '
                          'or give --gpus 0 (each rank takes cuda:LOCAL_RANK)')
    if cuda and not torch.cuda.is_available():
        raise ConfigError(f"--gpus {gpus} but torch sees no CUDA device: give --gpus \"\" --backend gloo for CPU "
                          f"training")
    if cuda and local >= torch.cuda.device_count():
        raise ConfigError(f"LOCAL_RANK={local} but this node has {torch.cuda.device_count()} CUDA device(s): "
                          f"start at most that many processes per node (--nproc_per_node)")
    return Ranks(rank=rank, world=world, local=local, local_world=local_world, cuda=cuda)


def state_digest(state: dict) -> str:
    """sha256 over a ``state_dict``'s names, dtypes, shapes and values (CPU bytes), for comparing models across
    ranks and with a saved checkpoint (non-tensor entries, e.g. a checkpoint's descriptions, are left out)."""
    h = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        if not isinstance(value, torch.Tensor):
            continue
        t = value.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------------
# the patches
# --------------------------------------------------------------------------------------------------------


class _View(types.ModuleType):
    """A module seen through some replaced attributes: ``overrides`` first, the wrapped module otherwise."""

    def __init__(self, module, **overrides):
        super().__init__(module.__name__, getattr(module, "__doc__", None))
        self.__dict__["_wrapped"] = module
        self.__dict__.update(overrides)

    def __getattr__(self, name):
        return getattr(self.__dict__["_wrapped"], name)


class Launcher:
    """The patches of one process (see the module docstring); :meth:`install` applies them to ``weaver.train``."""

    def __init__(self, wt, ranks: Ranks):
        self.wt = wt
        self.ranks = ranks
        self.originals = {name: getattr(wt, name) for name in ("_main", "to_filelist", "test_load",
                                                               "_configLogger", "torch")}
        self._device_pending = False  # set by set_device: the next torch.device(int) is this rank's device
        self.ddp_models = []
        self._digest_logged = False

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.ranks.local) if self.ranks.cuda else torch.device("cpu")

    def log(self, message, *args):
        self.wt._logger.info(f"{PROG}: " + message, *args)

    def log_digest(self):
        """Log the digest of the trained model's state (once, before a prediction reloads the best epoch)."""
        if self.ddp_models and not self._digest_logged:
            self._digest_logged = True
            try:
                digest = state_digest(self.ddp_models[-1].module.state_dict())
            except Exception as err:  # a diagnostic only: never fail a finished training on it
                self.wt._logger.warning(f"{PROG}: no model digest: {err}")
            else:
                self.log("global rank %d model state sha256 %s", self.ranks.rank, digest)

    # --- fix 2 / 3: the device uses of weaver's `local_rank` -----------------------------------------------

    def set_device(self, _rank):
        if self.ranks.cuda:
            torch.cuda.set_device(self.ranks.local)
        self._device_pending = True

    def make_device(self, *args, **kwargs):
        if self._device_pending and len(args) == 1 and not kwargs and isinstance(args[0], int):
            self._device_pending = False  # weaver's `dev = torch.device(local_rank)`, right after set_device
            return self.device
        return torch.device(*args, **kwargs)

    def ddp(self, module, *args, device_ids=None, output_device=None, **kwargs):
        if self.ranks.cuda:
            device_ids, output_device = [self.ranks.local], self.ranks.local
        else:
            device_ids = output_device = None
        model = torch.nn.parallel.DistributedDataParallel(module, *args, device_ids=device_ids,
                                                          output_device=output_device, **kwargs)
        self.ddp_models.append(model)
        return model

    def convert_sync_batchnorm(self, module, process_group=None):
        if self.ranks.cuda:
            return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
        if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules()):
            self.log("BatchNorm layers kept as they are on CPU (SyncBatchNorm needs GPUs); DDP broadcasts their "
                     "statistics from rank 0")
        return module

    def init_process_group(self, *args, **kwargs):
        torch.distributed.init_process_group(*args, **kwargs)
        self.log("global rank %d of %d (rank %d of %d on this node), %s, process group %s",
                 self.ranks.rank, self.ranks.world, self.ranks.local, self.ranks.local_world, self.device,
                 torch.distributed.get_backend())

    def torch_view(self):
        nn = _View(torch.nn,
                   parallel=_View(torch.nn.parallel, DistributedDataParallel=self.ddp),
                   SyncBatchNorm=_View(torch.nn.SyncBatchNorm, convert_sync_batchnorm=self.convert_sync_batchnorm))
        return _View(torch, device=self.make_device, nn=nn,
                     cuda=_View(torch.cuda, set_device=self.set_device),
                     distributed=_View(torch.distributed, init_process_group=self.init_process_group))

    # --- the wrapped weaver.train functions --------------------------------------------------------------

    def main_(self, args):
        """weaver's ``_main`` with ``args.local_rank`` = the global rank (and the CPU device block, fix 3)."""
        if args.backend is None:
            return self.originals["_main"](args)
        args.local_rank = self.ranks.rank
        if not args.gpus:
            args.gpus = "cpu"  # only to enter weaver's distributed device block; torch_view serves it on CPU
        try:
            return self.originals["_main"](args)
        finally:
            self.log_digest()

    def to_filelist(self, args, mode="train"):
        """weaver's ``to_filelist``, sharded by global rank over all ranks (fix 1)."""
        original = self.originals["to_filelist"]
        if args.local_rank is None or mode not in ("train", "val"):
            return original(args, mode)
        preview = copy.copy(args)
        preview.local_rank, preview.copy_inputs = None, False
        groups, _ = original(preview, mode)
        for name, files in groups.items():
            if len(files) < self.ranks.world:
                group = "" if name == "_" else f" (group {name!r})"
                raise ConfigError(f"--data-{mode}{group} has {len(files)} file(s) for {self.ranks.world} ranks: "
                                  f"give at least one file per rank (each rank reads its own share)")
        with _environ(LOCAL_WORLD_SIZE=str(self.ranks.world)):
            file_dict, filelist = original(args, mode)
        self.log("global rank %d of %d reads %d %s file(s): %s", self.ranks.rank, self.ranks.world, len(filelist),
                 mode, " ".join(sorted(filelist)))
        return file_dict, filelist

    def test_load(self, args):
        """weaver's ``test_load``, out of the process group: the prediction runs on global rank 0 alone."""
        self.log_digest()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            self.log("leaving the process group: the prediction runs on global rank %d alone", self.ranks.rank)
            torch.distributed.destroy_process_group()
        return self.originals["test_load"](args)

    def config_logger(self, name, stdout=sys.stdout, filename=None, loglevel=20):
        """weaver's ``_configLogger`` with the log file numbered by global rank."""
        suffix = ".%03d" % self.ranks.local
        if filename and filename.endswith(suffix):
            filename = filename[: -len(suffix)] + ".%03d" % self.ranks.rank
        return self.originals["_configLogger"](name, stdout=stdout, filename=filename, loglevel=loglevel)

    def install(self):
        self.wt._main = self.main_
        self.wt.to_filelist = self.to_filelist
        self.wt.test_load = self.test_load
        self.wt._configLogger = self.config_logger
        self.wt.torch = self.torch_view()

    def uninstall(self):
        for name, value in self.originals.items():
            setattr(self.wt, name, value)


@contextlib.contextmanager
def _environ(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _fail(message, code: int = 2):
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(code)


def main(argv=None) -> int:
    """``python -m omnijet_weaver.launch [weaver options]``: weaver's ``main()`` with the launcher's patches (under
    ``--backend``); one ``error:`` line and exit 2 on a weaver it was not written for or a bad torchrun setup."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        wt = check_weaver_train()
        known, _ = wt.parser.parse_known_args(argv)
        ranks = torchrun_ranks(known.backend, known.gpus)
    except (ConfigError, MissingDependencyError) as err:
        _fail(err)
    if ranks is None:
        launcher = None
    else:
        launcher = Launcher(wt, ranks)
        launcher.install()
    old_argv = sys.argv
    sys.argv = [PROG, *argv]
    try:
        wt.main()
    except ConfigError as err:
        _fail(err)
    finally:
        sys.argv = old_argv
        if launcher is not None:
            launcher.uninstall()
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
    return 0


__all__ = ["PROG", "WRITTEN_FOR", "EXPECTED_SIGNATURES", "installed_version", "check_weaver_train",
           "torchrun_ranks", "state_digest", "Launcher", "main"]


if __name__ == "__main__":
    main()
