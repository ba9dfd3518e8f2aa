"""The package's layers import only downwards (setup.cfg ``[importlinter]``), checked with import-linter."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_layers_are_kept():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    proc = subprocess.run([exe, "--config", str(ROOT / "setup.cfg")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    # both contracts were checked, not skipped
    assert "layers import only downwards KEPT" in proc.stdout
    assert "models import neither weaver nor uproot KEPT" in proc.stdout


def test_every_module_sits_in_a_layer():
    """A new top-level module or subpackage must be placed in the layer contract, or the check says nothing of it."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    layers = cfg["importlinter:contract:layers"]["layers"].split()
    named = {name for entry in layers for name in entry.split("|") if name.startswith("omnijet_weaver.")}
    package = ROOT / "omnijet_weaver"
    found = {f"omnijet_weaver.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    found |= {f"omnijet_weaver.{p.parent.name}" for p in package.glob("*/__init__.py")}
    assert found == named, f"modules not in a layer: {sorted(found - named)}; layers naming nothing: {sorted(named - found)}"
