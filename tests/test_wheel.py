"""omnijet-weaver installs like a library: the wheel, installed with plain pip into a fresh venv and run from an
empty folder, has its weaver configs and packaged models, and every command works.

The wheel is built offline from a copy of the sources (``pip wheel --no-deps --no-build-isolation``; a copy, so a
stale ``build/`` folder of the checkout cannot leak into it), installed with ``pip install --no-deps`` into a venv
made with ``--system-site-packages`` (the dependencies come from this environment, not from an index). The venv's
own site-packages come first on its ``sys.path``, ahead of the editable install of the checkout: every test
checks that what runs is the installed copy.
"""

from __future__ import annotations

import concurrent.futures as cf
import filecmp
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import awkward as ak
import numpy as np
import pytest
import torch
import uproot
from conftest import ROOT, toy_jets

PACKAGE = ROOT / "omnijet_weaver"
#: The files the wheel must ship besides the Python modules (paths inside the package).
SHIPPED = sorted(str(p.relative_to(PACKAGE)) for pattern in ("configs/network/*.py", "configs/data/*.yaml",
                                                              "models/weights/*.pt") for p in PACKAGE.glob(pattern))


def _need(condition: bool, reason: str):
    if not condition:
        pytest.skip(reason)


def _run(cmd, cwd, env, timeout=300, check=True):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """The wheel and a fresh venv it is installed in: SimpleNamespace(wheel, prefix, bin, python, site, env)."""
    _need(importlib.util.find_spec("venv") is not None, "the venv module is not available")
    _need(importlib.util.find_spec("pip") is not None, "pip is not available")
    _need(importlib.util.find_spec("setuptools") is not None, "setuptools is needed to build the wheel offline")
    top = tmp_path_factory.mktemp("wheel")
    src = top / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(PACKAGE, src / "omnijet_weaver", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INDEX="1", PYTHONNOUSERSITE="1", OMP_NUM_THREADS="2")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", top / "dist", "."],
         cwd=src, env=env)
    (wheel,) = (top / "dist").glob("omnijet_weaver-*.whl")

    prefix = top / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(prefix)],
                          capture_output=True, text=True)
    _need(made.returncode == 0, f"cannot create a venv: {made.stderr.strip()[-300:]}")
    bindir = prefix / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / "python"
    # pip of this environment, run by the venv's interpreter, installs into the venv
    has_pip = subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True, env=env)
    _need(has_pip.returncode == 0, "pip cannot run inside the venv")
    _run([python, "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q", wheel], cwd=top, env=env)
    # the dependencies' commands, as pip would have written them into the venv had it installed weaver-core there
    # (the system's `weaver` would run the system interpreter and so the editable checkout)
    from importlib.metadata import distribution

    for ep in distribution("weaver-core").entry_points.select(group="console_scripts"):
        module, _, func = ep.value.partition(":")
        launcher = bindir / ep.name
        launcher.write_text(f"#!{python}\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n")
        launcher.chmod(0o755)

    env = dict(env, VIRTUAL_ENV=str(prefix), PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}")
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=top, env=env)
    return SimpleNamespace(wheel=wheel, prefix=prefix, bin=bindir, python=python,
                           site=Path(site.stdout.strip()), env=env)


@pytest.fixture(scope="module")
def installed(venv, tmp_path_factory):
    """What the venv's interpreter imports, run from an empty folder: paths as JSON."""
    cwd = tmp_path_factory.mktemp("empty")
    code = (
        "import json, omnijet_weaver, importlib.metadata as md\n"
        "from omnijet_weaver.weaver.configs import CONFIGS_DIR, list_configs\n"
        "from omnijet_weaver.weaver.runner import repo_configs\n"
        "from omnijet_weaver.studies.token_quality import default_data_config\n"
        "from omnijet_weaver.models.packaged import packaged_path\n"
        "dist = md.distribution('omnijet-weaver')\n"
        "print(json.dumps({'package': omnijet_weaver.__file__, 'configs_dir': str(CONFIGS_DIR),\n"
        "    'configs': {k: str(v) for k, v in list_configs().items()},\n"
        "    'runner': {k: str(v) for k, v in repo_configs().items()}, 'token_quality': default_data_config(),\n"
        "    'tokenizer': packaged_path('tokenizer'), 'gpt': packaged_path('gpt'),\n"
        "    'dist': str(dist.locate_file('')), 'version': dist.version,\n"
        "    'scripts': sorted(e.name for e in dist.entry_points.select(group='console_scripts'))}))\n"
    )
    proc = _run([venv.python, "-c", code], cwd=cwd, env=venv.env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """48 toy jets in the JetClass layout (a TTree written with uproot's mktree + extend)."""
    from omnijet_weaver.io.files import write_root

    path = tmp_path_factory.mktemp("tiny") / "jets.root"
    write_root(path, toy_jets(48, seed=5))
    return path


def configs_path(venv, name, cwd) -> str:
    """``omnijet-weaver-configs --path NAME`` of the venv (as ``$(...)`` in a shell)."""
    return _run([venv.bin / "omnijet-weaver-configs", "--path", name], cwd=cwd, env=venv.env).stdout.strip()


def inside(path, folder) -> bool:
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


@pytest.fixture(scope="module")
def runs(venv, installed, tiny_root, tmp_path_factory):
    """Every command of the venv, each from its own empty folder, two at a time (one thread each, 2 cores):
    ``--help`` of each console script and one tiny real run of the commands that need the shipped configs or
    models. Returns name -> SimpleNamespace(proc, cwd); the tests below check them."""
    conf = tmp_path_factory.mktemp("configs")
    network, data = configs_path(venv, "omnijet_cls", conf), configs_path(venv, "qg_top", conf)
    jobs = {  # longest first
        "weaver": [venv.bin / "weaver", "--data-train", tiny_root, "--data-val", tiny_root, "--data-config", data,
                   "--network-config", network, "--model-prefix", "out/cls", "--gpus", "", "--num-workers", "0",
                   "--in-memory", "--fetch-step", "1", "--steps-per-epoch", "2", "--steps-per-epoch-val", "1",
                   "--batch-size", "4", "--num-epochs", "1"],
        "generate": [venv.bin / "omnijet-weaver-generate", "--num-jets", 4, "--output", "gen.root", "--device", "cpu",
                     "--no-progress"],
        "tokenize": [venv.bin / "omnijet-weaver-tokenize", "--data-config", data, "--tokenizer", installed["tokenizer"],
                     "--output", "tokens.parquet", "--device", "cpu", "--no-progress", tiny_root],
        **{f"{name} --help": [venv.bin / name, "--help"] for name in installed["scripts"]},
    }
    env = dict(venv.env, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    top = tmp_path_factory.mktemp("runs")

    def run(item):
        key, cmd = item
        cwd = top / f"run{list(jobs).index(key)}"
        cwd.mkdir()
        return key, SimpleNamespace(proc=_run(cmd, cwd=cwd, env=env, timeout=400, check=False), cwd=cwd,
                                    network=network, data=data)

    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, jobs.items()))


def finished(runs, key) -> SimpleNamespace:
    """The run ``key``, asserted to have exited 0."""
    run = runs[key]
    assert run.proc.returncode == 0, f"{key} failed ({run.proc.returncode}):\n{run.proc.stderr[-6000:]}"
    return run


# --- the wheel and what the venv imports -------------------------------------------------------------------


def test_the_wheel_ships_the_configs_weights_and_commands(venv):
    with zipfile.ZipFile(venv.wheel) as whl:
        names = set(whl.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = whl.read(entry_points).decode()
        for rel in SHIPPED:
            assert whl.read(f"omnijet_weaver/{rel}") == (PACKAGE / rel).read_bytes(), rel
    assert len([s for s in SHIPPED if s.startswith("configs/network/")]) == 3
    assert len([s for s in SHIPPED if s.startswith("configs/data/")]) == 6
    assert len([s for s in SHIPPED if s.startswith("models/weights/")]) == 3  # gpt, gpt_conditional, vqvae
    assert "omnijet-weaver-configs = omnijet_weaver.cli.configs:main" in scripts
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_the_venv_runs_the_installed_copy_not_the_checkout(venv, installed):
    site = venv.site
    assert inside(installed["package"], site) and not inside(installed["package"], ROOT), installed["package"]
    assert inside(installed["dist"], site)
    # every file omnijet-weaver finds for weaver and for the studies lies in the installed package
    paths = [installed["configs_dir"], *installed["configs"].values(), *installed["runner"].values(),
             installed["token_quality"], installed["tokenizer"], installed["gpt"]]
    for path in paths:
        assert inside(path, site / "omnijet_weaver") and Path(path).exists(), path
    assert sorted(installed["configs"]) == sorted(Path(s).stem for s in SHIPPED if s.startswith("configs/"))
    assert Path(installed["runner"]["network"]).name == "omnijet_cls.py"
    assert Path(installed["runner"]["data"]) == Path(installed["token_quality"]) == Path(installed["configs"]["qg_top"])


def test_every_console_script_answers_help(installed, runs):
    scripts = installed["scripts"]
    assert "omnijet-weaver-configs" in scripts and "omnijet-weaver-tokenize" in scripts and len(scripts) >= 9
    for name in scripts:
        run = finished(runs, f"{name} --help")
        assert run.proc.stdout.startswith(f"usage: {name}"), (name, run.proc.stdout[:200])
        assert not list(run.cwd.iterdir())  # --help writes nothing


# --- the configs command ------------------------------------------------------------------------------------


def test_configs_command_lists_prints_and_copies(venv, installed, tmp_path):
    exe = venv.bin / "omnijet-weaver-configs"
    listing = _run([exe], cwd=tmp_path, env=venv.env).stdout
    for name, path in installed["configs"].items():
        assert f"{name} " in listing and path in listing, name
    assert configs_path(venv, "omnijet_cls", tmp_path) == installed["configs"]["omnijet_cls"]
    assert configs_path(venv, "qg_top.yaml", tmp_path) == installed["configs"]["qg_top"]

    _run([exe, "--copy", "my_configs"], cwd=tmp_path, env=venv.env)
    copied = sorted(str(p.relative_to(tmp_path / "my_configs")) for p in (tmp_path / "my_configs").rglob("*")
                    if p.is_file())
    folder = {"network": "network_configs", "data": "data_configs"}
    expected = sorted(f"{folder[s.split('/')[1]]}/{Path(s).name}" for s in SHIPPED if s.startswith("configs/"))
    assert copied == expected
    for rel in SHIPPED:
        if rel.startswith("configs/"):
            copy = tmp_path / "my_configs" / folder[rel.split("/")[1]] / Path(rel).name
            assert filecmp.cmp(copy, venv.site / "omnijet_weaver" / rel, shallow=False), rel
            assert copy.read_bytes() == (PACKAGE / rel).read_bytes(), rel
    # a second copy is refused with one line, and leaves the files alone
    (tmp_path / "my_configs" / "data_configs" / "qg_top.yaml").write_text("mine\n")
    again = _run([exe, "--copy", "my_configs"], cwd=tmp_path, env=venv.env, check=False)
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    n = len([s for s in SHIPPED if s.startswith("configs/")])
    assert again.stderr.startswith(f"omnijet-weaver-configs: error: my_configs: {n} of the {n} configs exist") \
        and "--overwrite" in again.stderr
    assert (tmp_path / "my_configs" / "data_configs" / "qg_top.yaml").read_text() == "mine\n"
    _run([exe, "--copy", "my_configs", "--overwrite"], cwd=tmp_path, env=venv.env)
    assert (tmp_path / "my_configs" / "data_configs" / "qg_top.yaml").read_bytes() == \
        (PACKAGE / "configs" / "data" / "qg_top.yaml").read_bytes()


# --- one tiny real run of each command that needs configs or packaged models ----------------------------------


def test_tokenize_with_the_shipped_data_config(runs, tiny_root):
    from omnijet_weaver.models.packaged import packaged_path
    from omnijet_weaver.models.tokenizer import load_tokenizer
    from omnijet_weaver.weaver.dataset import tokenize_files

    run = finished(runs, "tokenize")
    table = ak.from_parquet(run.cwd / "tokens.parquet")
    # the installed copy gives exactly the tokens of the checkout
    expected = tokenize_files(load_tokenizer(packaged_path("tokenizer")), str(PACKAGE / "configs/data/qg_top.yaml"),
                              [str(tiny_root)], device="cpu", progress=False)
    assert len(table) == 48
    assert ak.to_list(table["tokens"]) == ak.to_list(expected["tokens"])
    assert ak.to_list(table["label"]) == ak.to_list(expected["label"])


def test_generate_with_the_packaged_model(runs):
    run = finished(runs, "generate")
    jets = uproot.open(run.cwd / "gen.root")["tree"].arrays()
    counts = ak.num(jets["part_px"]).to_numpy()
    assert len(jets) == 4 and np.all((counts >= 1) & (counts <= 128))
    assert np.array_equal(jets["jet_nparticles"].to_numpy(), counts)
    # the jet's pT is the sum of its constituents'
    pt = np.hypot(ak.sum(jets["part_px"], axis=1).to_numpy(), ak.sum(jets["part_py"], axis=1).to_numpy())
    np.testing.assert_allclose(jets["jet_pt"].to_numpy(), pt, rtol=1e-4)


def test_weaver_fine_tunes_with_the_shipped_network_config(installed, runs):
    from omnijet_weaver.models.packaged import packaged_path

    run = finished(runs, "weaver")
    assert run.network == installed["configs"]["omnijet_cls"] and run.data == installed["configs"]["qg_top"]
    log = run.proc.stdout + run.proc.stderr
    assert f"('network_config', '{run.network}')" in log and "Epoch #0: Current validation metric" in log
    # (the epoch's state: a "best" one is written only when the 4-jet validation accuracy beats 0)
    state = torch.load(run.cwd / "out" / "cls_epoch-0_state.pt", map_location="cpu", weights_only=False)
    start = torch.load(packaged_path("gpt"), map_location="cpu", weights_only=False)
    # fine-tuned from the packaged generative model: its tokenizer kept as is, the backbone moved a little
    tok = [k for k, v in state.items() if k.startswith("tokenizer.") and isinstance(v, torch.Tensor)]
    assert len(tok) > 10 and all(torch.equal(state[k], start[k]) for k in tok)
    change = [((state[k] - start[k]).norm() / start[k].norm()).item() for k, v in state.items()
              if k.startswith("backbone.") and isinstance(v, torch.Tensor) and v.is_floating_point()]
    assert len(change) > 10 and 0 < max(change) < 0.05
