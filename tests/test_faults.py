"""Fault injection: commands killed at random points, concurrent writers, full and read-only disks.

Each case asserts the exact outcome: the exit code of the signal, one ``error:`` line, no partial file left
(SIGINT, SIGTERM) or none left after the rerun (SIGKILL), the rerun succeeding, no output silently replaced,
no weaver process outliving the study that started it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import uproot
from conftest import DATA_CONFIG, toy_jets

from omnijet_weaver.atomic import HOST, atomic_output, clean_stale_partials, folder_files, stale_partials
from omnijet_weaver.errors import OutputExistsError
from omnijet_weaver.evaluation.report import ReportFolder
from omnijet_weaver.io.files import write_root
from omnijet_weaver.models.checkpoint import save_model
from omnijet_weaver.models.generative import OmniJetGPT
from omnijet_weaver.models.tokenizer import VQVAE

MARKER = ".omnijet-weaver-token-quality"
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
#: Exit codes of a command stopped by each signal: our one-line handlers for SIGINT / SIGTERM, the kernel's for
#: SIGKILL (Popen reports -9).
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -9}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    write_root(d / "jets.root", toy_jets(600, seed=3))
    torch.manual_seed(0)
    tok = VQVAE(codebook_size=16, hidden_dim=16, num_blocks=1, num_heads=2)
    save_model(tok, d / "tok.pt")
    save_model(OmniJetGPT.from_tokenizer(tok, embed_dim=16, num_blocks=1, num_heads=2, ff_dim=16), d / "gpt.pt")
    return d


def command(name, inputs, output):
    """(argv, text on stderr or stdout once the command's real work has started) of a small run of ``name``."""
    exe = [sys.executable, "-m", f"omnijet_weaver.cli.{name}"]
    if name == "tokenize":
        return exe + [str(inputs / "jets.root"), "--data-config", str(DATA_CONFIG), "--tokenizer",
                      str(inputs / "tok.pt"), "--batch-size", "16", "--output", str(output)], "batch ["
    if name == "generate":
        return exe + ["--checkpoint", str(inputs / "gpt.pt"), "--num-jets", "400", "--batch-size", "20", "--device",
                      "cpu", "--output", str(output)], "sampling"
    return exe + [str(inputs / "jets.root"), "--data-config", str(DATA_CONFIG), "--tokenizer", "binned:5",
                  "--classifiers", "none", "--max-jets", "400", "--spread-tokens", "0", "--figures", "png",
                  "--output", str(output)], " jets ("


class Run:
    """A command started in the background, its stdout and stderr collected by threads."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                                     stdin=subprocess.DEVNULL)
        self.chunks = {"out": [], "err": []}
        self.threads = [threading.Thread(target=self._read, args=(s, self.chunks[k]), daemon=True)
                        for k, s in (("out", self.proc.stdout), ("err", self.proc.stderr))]
        for t in self.threads:
            t.start()

    @staticmethod
    def _read(stream, chunks):
        for chunk in iter(lambda: stream.read1(4096), b""):
            chunks.append(chunk)

    def text(self, key="err") -> str:
        return b"".join(self.chunks[key]).decode(errors="replace")

    def wait_for(self, phrase: str, timeout: float = 120) -> bool:
        """Wait until ``phrase`` is printed (True) or the process ends first (False)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if phrase in self.text("err") or phrase in self.text("out"):
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.02)
        raise AssertionError(f"{phrase!r} not printed within {timeout} s")

    def finish(self, timeout: float = 120) -> int:
        rc = self.proc.wait(timeout=timeout)
        for t in self.threads:
            t.join(timeout=10)
        return rc


def leftovers(folder: Path, output: Path) -> list:
    """Everything in ``folder`` but the fixture's inputs and ``output`` itself."""
    return sorted(p.name for p in folder.iterdir() if p.name != output.name)


def clean_run(name, inputs, output, extra=()) -> float:
    """Run ``name`` undisturbed; returns the seconds from the start of its real work to its end (the window in
    which the kills land)."""
    argv, phrase = command(name, inputs, output)
    run = Run(argv + list(extra))
    assert run.wait_for(phrase), run.text()
    start = time.monotonic()
    assert run.finish() == 0, run.text()
    return time.monotonic() - start


def kill_at_random_point(name, inputs, output, sig, window: float, rng, extra=()) -> bool:
    """Start ``name``, send ``sig`` at a random point of its work, check what it left; returns whether the output
    was published before the signal (it is then complete)."""
    argv, phrase = command(name, inputs, output)
    run = Run(argv + list(extra))
    assert run.wait_for(phrase), run.text()
    time.sleep(rng.uniform(0.0, 0.8) * window)
    run.proc.send_signal(sig)
    rc = run.finish()
    text = run.text() + run.text("out")
    finished = "wrote " in text or "done in " in text  # published before the signal: the output is complete
    if finished:  # exit 0, or stopped on the way out (our handler, or Python's own for a late SIGINT)
        assert rc in (0, EXIT[sig], -sig), (rc, text)
    else:
        assert rc == EXIT[sig], (rc, text)
        if sig != signal.SIGKILL:  # our handler: one line, every partial removed
            lines = run.text().strip().splitlines()
            assert lines[-1].startswith(f"omnijet-weaver-{name.replace('_', '-')}: error: ")
            assert ("interrupted" if sig == signal.SIGINT else "stopped by SIGTERM") in lines[-1]
            assert "Traceback" not in run.text()
            assert leftovers(output.parent, output) == []
    return finished


@pytest.fixture(scope="module")
def work_seconds(inputs, tmp_path_factory):
    """The work window of undisturbed runs of tokenize and generate."""
    out = tmp_path_factory.mktemp("clean")
    return {name: clean_run(name, inputs, out / f"out{suffix}") for name, suffix in (("tokenize", ".parquet"),
                                                                                     ("generate", ".root"))}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
@pytest.mark.parametrize("name", ["tokenize", "generate"])
def test_kill_at_a_random_point_then_rerun(name, sig, inputs, work_seconds, tmp_path):
    output = tmp_path / ("out.parquet" if name == "tokenize" else "out.root")
    finished = kill_at_random_point(name, inputs, output, sig, work_seconds[name], random.Random(f"{name}{sig}"))
    assert output.exists() == finished
    # a killed run can simply be rerun (a finished one needs --overwrite, as any existing output)
    argv, _ = command(name, inputs, output)
    again = Run(argv + (["--overwrite"] if finished else []))
    assert again.finish() == 0, again.text()
    assert output.exists() and leftovers(tmp_path, output) == []  # SIGKILL's partial removed by the rerun
    if name == "generate":
        with uproot.open(output) as f:
            assert f["tree"].num_entries == 400


def test_report_killed_while_replacing_its_previous_report(inputs, tmp_path):
    """A report command with --overwrite killed by SIGINT, SIGTERM, SIGKILL at random points: the previous report
    stays whole until a new one is complete; nothing partial is left after the rerun."""
    output = tmp_path / "report"
    window = clean_run("token_quality", inputs, output)
    rng = random.Random("report")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        before = {f: (output / f).read_bytes() for f in folder_files(output)}
        finished = kill_at_random_point("token_quality", inputs, output, sig, window, rng, extra=["--overwrite"])
        after = {f: (output / f).read_bytes() for f in folder_files(output)}
        if finished:  # a new report, whole: every file its marker lists
            assert set(after) == set(json.loads(after[MARKER])["files"]) | {MARKER}
        else:
            assert after == before
    again = Run(command("token_quality", inputs, output)[0] + ["--overwrite"])
    assert again.finish() == 0, again.text()
    assert leftovers(tmp_path, output) == []  # the SIGKILLed run's hidden folder removed by the rerun


def test_concurrent_writers_of_one_output(inputs, tmp_path):
    """Two generate runs with the same --output, started together: exactly one writes it, the other exits 2 and
    replaces nothing."""
    output = tmp_path / "same.root"
    runs = []
    for seed in (1, 2):
        argv, _ = command("generate", inputs, output)
        runs.append(Run(argv + ["--seed", str(seed), "--no-progress"]))
    codes = [r.finish() for r in runs]
    assert sorted(codes) == [0, 2], [r.text() for r in runs]
    loser = runs[codes.index(2)].text().strip().splitlines()
    assert len(loser) == 1 and "same.root" in loser[0] and ("appeared while this command ran" in loser[0]
                                                            or "exists" in loser[0]), loser
    winner = runs[codes.index(0)]
    with uproot.open(output) as f:  # the file is the winner's: its seed's tokens
        tokens = f["tree"]["part_token"].array()
    assert len(tokens) == 400 and f"wrote 400 jets to {output}\n" in winner.text()
    assert leftovers(tmp_path, output) == []


def test_atomic_output_never_replaces_a_file_that_appeared(tmp_path):
    target = tmp_path / "out.root"
    with pytest.raises(OutputExistsError, match="appeared while this command ran"):
        with atomic_output(target, overwrite=False) as first:
            Path(first).write_text("first")
            with atomic_output(target, overwrite=False) as second:  # a second writer, finished first
                Path(second).write_text("second")
                assert Path(first).name != Path(second).name
                assert Path(first).name.startswith(f".out.root.partial-{HOST}-{os.getpid()}-")
                assert not Path(first).name.endswith(".root")  # no partial looks like a finished file
    assert target.read_text() == "second" and folder_files(tmp_path) == ["out.root"]
    with atomic_output(target, overwrite=True) as third:
        Path(third).write_text("third")
    assert target.read_text() == "third" and folder_files(tmp_path) == ["out.root"]


def test_stale_partials_of_dead_processes_only_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".out.root.partial-{HOST}-{dead_pid}-abc123"
    alive = tmp_path / f".out.root.partial-{HOST}-{os.getpid()}-def456"
    other_host = tmp_path / f".out.root.partial-otherhost-{dead_pid}-abc123"
    other_name = tmp_path / f".other.root.partial-{HOST}-{dead_pid}-abc123"
    stale_folder = tmp_path / f".report.partial-{HOST}-{dead_pid}"
    for p in (stale, alive, other_host, other_name):
        p.write_text("x")
    stale_folder.mkdir()
    (stale_folder / "summary.md").write_text("x")
    assert stale_partials(tmp_path / "out.root") == [stale]
    assert clean_stale_partials(tmp_path / "out.root") == [stale]
    assert clean_stale_partials(tmp_path / "report") == [stale_folder]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (alive, other_host, other_name))


def test_report_folder_keeps_a_file_put_in_during_the_run(tmp_path):
    """The data-loss case: a user's file put into the output folder while the report is being made."""
    out = tmp_path / "report"
    with ReportFolder(out, ".omnijet-weaver-x", kind="x report") as work:
        (work / "summary.md").write_text("first")
    with pytest.raises(OutputExistsError, match=r"holds 1 file\(s\) this command did not write \(notes.txt\)"):
        with ReportFolder(out, ".omnijet-weaver-x", overwrite=True, kind="x report") as work:
            (work / "summary.md").write_text("second")
            (out / "notes.txt").write_text("my notes")  # during the run
    assert (out / "notes.txt").read_text() == "my notes" and (out / "summary.md").read_text() == "first"
    assert (tmp_path / "report.new" / "summary.md").read_text() == "second"
    # an output that appeared during a run without --overwrite is not replaced either
    late = tmp_path / "late"
    with pytest.raises(OutputExistsError, match="appeared while this command ran.*--overwrite was not given"):
        with ReportFolder(late, ".omnijet-weaver-x", kind="x report") as work:
            (work / "summary.md").write_text("mine")
            with ReportFolder(late, ".omnijet-weaver-x", kind="x report") as other:
                (other / "summary.md").write_text("theirs")
    assert (late / "summary.md").read_text() == "theirs" and (tmp_path / "late.new" / "summary.md").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_sigterm_of_the_transfer_study_stops_weaver_and_leaves_nothing(inputs, tmp_path):
    """SIGTERM while weaver trains: weaver's processes stop with the study, no hidden folder is left."""
    pool = [tmp_path / "pool.root"]
    write_root(pool[0], toy_jets(120, seed=4))
    out = tmp_path / "transfer"
    argv = [sys.executable, "-m", "omnijet_weaver.cli.transfer", "--train", *map(str, pool), "--test",
            str(inputs / "jets.root"), "--labels", "8", "--modes", "finetune", "--seeds", "0", "--val-jets", "10",
            "--epochs", "50", "--patience", "50", "--batch-size", "8", "--checkpoint", str(inputs / "gpt.pt"),
            "--workers", "1", "--output", str(out)]
    run = Run(argv)
    assert run.wait_for("tag (weaver) ..."), run.text("out") + run.text()
    children = weaver_children(run.proc.pid)
    assert children, "no weaver process was running"
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == 143, run.text()
    assert "stopped by SIGTERM" in run.text().strip().splitlines()[-1]
    assert not [pid for pid in children if alive(pid)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.root"]  # no report, no hidden work folder
    # SIGKILL gives the study no chance to stop weaver: weaver is tied to it (Linux) and stops by itself
    if sys.platform.startswith("linux"):
        run = Run(argv)
        assert run.wait_for("tag (weaver) ..."), run.text("out") + run.text()
        children = weaver_children(run.proc.pid)
        run.proc.kill()
        run.finish()
        deadline = time.monotonic() + 30
        while [pid for pid in children if alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in children if alive(pid)]


def weaver_children(parent: int, timeout: float = 60) -> list:
    """The pids of the weaver processes ``parent`` started (waits until there is one)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == parent and any(arg.endswith(b"/weaver") for arg in cmdline):
                found.append(int(entry.name))
        if found:
            return found
        time.sleep(0.1)
    return []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --------------------------------------------------------------------------------------------------------
# full and read-only disks: a small tmpfs (skipped where it cannot be mounted)
# --------------------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """An 8 KiB tmpfs at ``tmp_path/disk`` (root and a kernel that allows it; else skipped)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("name", ["tokenize", "generate"])
def test_full_disk_is_one_line_and_leaves_nothing(name, inputs, small_disk):
    output = small_disk / ("out.parquet" if name == "tokenize" else "out.root")
    argv, _ = command(name, inputs, output)
    run = Run(argv)
    assert run.finish() == 2, run.text()
    lines = run.text().strip().splitlines()
    assert "Traceback" not in run.text() and lines[-1].startswith(f"omnijet-weaver-{name}: error: no space left")
    assert str(output) in lines[-1] and "free some space" in lines[-1]
    assert os.listdir(small_disk) == []


def test_read_only_folder_is_refused_before_the_work(inputs, small_disk):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    for name in ("tokenize", "generate", "token_quality"):
        output = small_disk / {"tokenize": "out.parquet", "generate": "out.root", "token_quality": "report"}[name]
        argv, phrase = command(name, inputs, output)
        run = Run(argv)
        assert run.finish() == 2, run.text()
        lines = run.text().strip().splitlines()
        assert len(lines) == 1 and "cannot write in folder" in lines[0] and "Read-only file system" in lines[0], lines
        assert phrase not in run.text() + run.text("out")  # refused before the work started


def test_output_that_is_a_folder_is_refused_before_the_work(inputs, tmp_path):
    (tmp_path / "out.root").mkdir()
    argv, phrase = command("generate", inputs, tmp_path / "out.root")
    run = Run(argv)
    assert run.finish() == 2
    lines = run.text().strip().splitlines()
    assert len(lines) == 1 and "is a folder" in lines[0] and phrase not in run.text()
    assert np.array_equal(sorted(os.listdir(tmp_path)), ["out.root"])
