"""The end-to-end demo (omnijet-weaver-demo / scripts/main_job.sh) and the plotting helpers.

One ``--quick`` run (Pythia jets, tokenizer, generation, real ``weaver`` trainings and predictions, report)
is shared by the tests of this module; it takes about a minute and a half on 2 loaded cores.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import math
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

from omnijet_weaver.atomic import write_manifest
from omnijet_weaver.errors import ConfigError
from omnijet_weaver.evaluation.report import fmt, markdown_table, publish
from omnijet_weaver.studies import base, demo

HAVE_PYTHIA = all(importlib.util.find_spec(m) is not None for m in ("pythia8mc", "fastjet"))
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
needs_mpl = pytest.mark.skipif(not HAVE_MPL, reason="matplotlib is not installed (pip install '.[plot]')")
needs_all = pytest.mark.skipif(not (HAVE_PYTHIA and HAVE_MPL),
                               reason="the demo needs pythia8mc, fastjet and matplotlib (pip install '.[pythia,plot]')")

#: Figures every report holds (PNG and PDF).
FIGURES = ("jet_mass", "jet_pt", "multiplicity", "constituent_pt", "jet_mass_by_class", "jet_mass_generated_by_class", "mass_resolution",
           "accuracy_vs_labels", "auc_vs_labels", "roc")


def run_cli(*args, timeout=900):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "omnijet_weaver.cli.demo", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    if not (HAVE_PYTHIA and HAVE_MPL):
        pytest.skip("the demo needs pythia8mc, fastjet and matplotlib")
    out = tmp_path_factory.mktemp("demo") / "report"
    proc = run_cli("--output", out, "--quick", "--no-progress")
    assert proc.returncode == 0, f"quick demo failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return out, proc


# --- the quick run -----------------------------------------------------------------------------------------


@needs_all
def test_quick_run_writes_the_report(quick_report):
    out, proc = quick_report
    for name in ("summary.md", "summary.json", "commands.sh", demo.MARKER):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for fig in FIGURES:
        for ext in ("png", "pdf"):
            path = out / f"{fig}.{ext}"
            assert path.is_file() and path.stat().st_size > 1000, path
        assert (out / f"{fig}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "data").exists()  # jets and checkpoints removed without --keep-data
    assert not list(out.parent.glob(f".{out.name}.partial-*"))  # the working folder became the report
    logs = sorted(p.name for p in (out / "logs").iterdir())
    assert len([n for n in logs if n.startswith("train_")]) == 4 and "predict_generated.log" in logs
    # every stage printed with its wall time
    for i, stage in enumerate(("make jets", "tokenize", "generate", "tag (weaver)", "report"), 1):
        assert re.search(rf"\[{i}/5\] {re.escape(stage)}: done in [0-9.]+ s", proc.stdout), stage
    # the weaver command lines went through the shipped configs and AdamW
    commands = (out / "commands.sh").read_text()
    configs = demo.repo_configs()
    assert commands.count("--predict ") == 5
    assert commands.count(f"--network-config {configs['network']} ") == commands.count(f"--data-config {configs['data']} ") == 9
    assert "--optimizer adamw" in commands and "-o pretrained None" in commands
    # every training is seeded (the demo's default seed 1), so a rerun repeats it
    train_lines = [line for line in commands.splitlines() if "--data-train" in line]
    assert len(train_lines) == 4 and all(" -o seed 1 " in line for line in train_lines)
    for log in (out / "logs").glob("train_*.log"):
        assert "-o seed 1: torch, numpy and random seeded" in log.read_text(), log.name


def _strict_json(path):
    """A JSON file read back, refusing NaN / Infinity (the studies write strict JSON: null for a missing number)."""
    def refuse(name):
        raise AssertionError(f"{path.name} holds {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


@needs_all
def test_quick_summary_json_has_accuracy_and_auc_per_mode_and_label_count(quick_report):
    out, _ = quick_report
    s = _strict_json(out / "summary.json")
    tag = s["tagging"]
    assert (tag["epochs"], tag["batch_size"], tag["validation_jets"]) == (2, 10, 40)
    results = {(r["mode"], r["labels"]): r for r in tag["results"]}
    assert list(results) == [("finetune", 20), ("finetune", 40), ("scratch", 20), ("scratch", 40)]
    grid = {(g["mode"], g["labels"], g["lr"]): g for g in tag["lr_grid"]}
    assert set(grid) == {(m, n, 1e-3) for m in ("finetune", "scratch") for n in (20, 40)}
    for (mode, n), r in results.items():
        assert r["mode_label"] == demo.MODES[mode][0] and r["test_jets"] == 40 and r["lr"] == 1e-3
        # 40 test jets: the accuracy is a whole number of them; the AUC is a fraction of the 20 x 20 pairs
        assert r["accuracy"] * 40 == pytest.approx(round(r["accuracy"] * 40), abs=1e-9)
        assert r["auc"] * 400 == pytest.approx(round(r["auc"] * 800) / 2, abs=1e-9)
        g = grid[(mode, n, r["lr"])]  # the chosen run's validation, weaver's best epoch
        assert len(g["val_accuracy_per_epoch"]) == 2 and g["seconds"] > 0
        assert r["best_val_accuracy"] == g["best_val_accuracy"] == max(g["val_accuracy_per_epoch"])
        assert g["val_accuracy_per_epoch"][g["best_epoch"]] == g["best_val_accuracy"]
    assert tag["generated_tagger"] == {"mode": "finetune", "labels": 40, "lr": 1e-3}
    assert list(s["stage_seconds"]) == ["make jets", "tokenize", "generate", "tag (weaver)", "report"]
    assert s["total_seconds"] >= sum(s["stage_seconds"].values()) > 0
    assert s["figures"] == {f: [f"{f}.png", f"{f}.pdf"] for f in FIGURES}
    assert s["config"]["quick"] is True and s["config"]["output"] == str(out.absolute())


@needs_all
def test_quick_summary_md_is_rendered_from_the_json(quick_report):
    out, _ = quick_report
    s = _strict_json(out / "summary.json")
    text = (out / "summary.md").read_text()
    assert text == demo.summary_markdown(s)  # nothing in summary.md that the JSON does not hold
    results = s["tagging"]["results"]
    assert markdown_table(["mode", "labels", "accuracy", "AUC", "learning rate", "validation accuracy"],
                          [[r["mode_label"], r["labels"], fmt(r["accuracy"], 4), fmt(r["auc"], 4), f"{r['lr']:g}",
                            fmt(r["best_val_accuracy"], 4)] for r in results]) in text


@needs_all
def test_quick_run_physics(quick_report):
    out, _ = quick_report
    s = json.loads((out / "summary.json").read_text())
    top, qcd = s["jets"]["top"], s["jets"]["qcd"]
    assert top["jets"] == qcd["jets"] == 60
    assert 160.0 <= top["median_mass_GeV"] <= 185.0
    assert qcd["median_mass_GeV"] < top["median_mass_GeV"]
    for d in (top, qcd):
        assert 20 <= d["median_multiplicity"] <= 150
    gen = s["generated"]
    assert gen["jets"] == 64 and 1 <= gen["min_multiplicity"] <= gen["max_multiplicity"] <= 128
    tok = s["tokens"]
    assert 0.0 < tok["code_usage"] <= 1.0 and tok["classes"]["top"]["mass_std_GeV"] < 40.0
    # the checks on the Pythia jets are in the summary, and pass
    checks = {c["check"]: c["passed"] for c in s["physics_checks"]}
    assert all(v for k, v in checks.items() if k.startswith("Pythia")) and len(checks) >= 6
    value = {c["check"]: c["value"] for c in s["physics_checks"]}
    assert value["Pythia top jets: median mass in [160, 185] GeV"] == f"{top['median_mass_GeV']:.1f} GeV"


@needs_all
def test_second_run_without_overwrite_fails_clearly(quick_report):
    out, _ = quick_report
    before = (out / "summary.md").stat().st_mtime_ns
    proc = run_cli("--output", out, "--quick", "--no-progress", timeout=300)
    assert proc.returncode != 0
    assert "exists and is not empty" in proc.stderr and "--overwrite" in proc.stderr
    assert "Traceback" not in proc.stderr and "[1/5]" not in proc.stdout  # refused before any work
    assert (out / "summary.md").stat().st_mtime_ns == before


# --- output folder and options (no Pythia, no weaver) ----------------------------------------------------------


def test_output_folder_rules(tmp_path):
    assert demo.check_output(tmp_path / "new") == (tmp_path / "new").absolute()
    (tmp_path / "empty").mkdir()
    demo.check_output(tmp_path / "empty")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(demo.OutputExistsError, match="--overwrite"):
        demo.check_output(foreign)
    with pytest.raises(demo.OutputExistsError, match="no omnijet-weaver-demo report"):
        demo.check_output(foreign, overwrite=True)  # never deletes a folder that is not a report
    assert (foreign / "thesis.tex").read_text() == "keep me"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(demo.OutputExistsError, match="not a folder"):
        demo.check_output(tmp_path / "afile")
    # an old report (its marker lists its files) is replaced as a whole by the new one, and only with --overwrite
    old = tmp_path / "report"
    old.mkdir()
    (old / "stale.png").write_text("old")
    write_manifest(old, demo.MARKER, "omnijet-weaver-demo report")
    demo.check_output(old, overwrite=True)
    new = tmp_path / ".report.partial-1"
    new.mkdir()
    (new / "summary.md").write_text("new")
    publish(new, old, demo.MARKER, overwrite=True)
    assert (old / "summary.md").read_text() == "new" and not (old / "stale.png").exists() and not new.exists()
    assert json.loads((old / demo.MARKER).read_text())["files"] == ["summary.md"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "empty", "foreign", "report"]
    # a file the report did not write is never deleted: refused at the start ...
    (old / "notes.txt").write_text("mine")
    with pytest.raises(demo.OutputExistsError, match="1 file\\(s\\) that its omnijet-weaver-demo report did not "
                                                     "write \\(e.g. notes.txt\\)"):
        demo.check_output(old, overwrite=True)
    # ... and at the end, when it appeared during the run: the new report is kept beside it
    (old / "notes.txt").unlink()
    demo.check_output(old, overwrite=True)
    (old / "notes.txt").write_text("mine")
    new.mkdir()
    (new / "summary.md").write_text("newer")
    with pytest.raises(demo.OutputExistsError, match="holds 1 file\\(s\\) this command did not write \\(notes.txt\\)"
                                                     ": it was left as it is, and the new .* is in .*report.new'"):
        publish(new, old, demo.MARKER, overwrite=True)
    assert (old / "notes.txt").read_text() == "mine" and (old / "summary.md").read_text() == "new"
    assert (tmp_path / "report.new" / "summary.md").read_text() == "newer" and not new.exists()
    # a marker without a file list (an older omnijet-weaver) cannot tell its files from a user's: refused
    (old / demo.MARKER).write_text("omnijet-weaver-demo report, 2026-01-01T00:00:00\n")
    with pytest.raises(demo.OutputExistsError, match="older omnijet-weaver"):
        demo.check_output(old, overwrite=True)


# --- the study base shared with the transfer study (no weaver run) -----------------------------------------------


@dataclasses.dataclass
class ToyConfig:
    output: object
    keep_data: bool = False
    overwrite: bool = False
    n_workers: int = 1

    def check(self):
        pass


class ToyStudy(base.WeaverStudy):
    """Two stages, one weaver command line, a summary with a NaN, numpy and tuple values; ``fail`` raises
    between the stages as a failed weaver run would."""

    marker, kind, stages, commands_comment = ".omnijet-weaver-toy", "toy report", ("first", "second"), ("toy",)
    fail = False

    def headline(self):
        return "toy study"

    def build(self):
        (self.data / "jets.root").write_text("jets")
        (self.logs / "train.log").write_text("log")
        self.commands.append(["weaver", *self.train_args(
            [self.data / "t.root"], [self.data / "v.root"], ["-o", "seed", 3], self.data / "runs" / "cls",
            batch_size=10, epochs=2, steps=4, val_tiling=base.validation_tiling(40), lr=1e-3)])
        self.commands.append(["weaver", *self.predict_args([self.data / "test.root"], ["-o", "seed", 3],
                                                           self.data / "runs" / "cls", self.data / "pred.root")])
        self.stage("first", lambda: None)
        if self.fail:
            raise demo.DemoError("weaver (toy) failed")
        self.summary.update(self.stage("second", lambda: {"accuracy": float("nan"), "auc": np.float64(0.75),
                                                          "labels": (20, 40)}))
        self.write_commands()

    def markdown(self, s):
        return markdown_table(["accuracy", "AUC", "labels"], [[fmt(s["accuracy"]), fmt(s["auc"]), s["labels"]]])


def test_study_base_publishes_the_report_with_json_first_summary_and_commands(tmp_path):
    out = io.StringIO()
    study = ToyStudy(ToyConfig(tmp_path / "report"), out=out)
    written = study.run()
    report = tmp_path / "report"
    assert sorted(p.name for p in report.iterdir()) == [".omnijet-weaver-toy", "commands.sh", "logs", "summary.json",
                                                        "summary.md"]  # data/ deleted, the logs kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no partial folder left
    assert written == _strict_json(report / "summary.json")
    assert (written["accuracy"], written["auc"], written["labels"]) == (None, 0.75, [20, 40])  # NaN -> null
    assert list(written["stage_seconds"]) == ["first", "second"] and written["total_seconds"] > 0
    assert (report / "summary.md").read_text() == study.markdown(written)
    cfg = demo.repo_configs()
    common = ["--data-config", str(cfg["data"]), "--network-config", str(cfg["network"]), "--gpus", "",
              "--num-workers", "0", "-o", "seed", "3"]
    d = str(report / "data")
    assert (report / "commands.sh").read_text().splitlines() == ["#!/usr/bin/env bash", "# toy", "", shlex.join([
        "weaver", "--data-train", f"{d}/t.root", "--data-val", f"{d}/v.root", *common, "--model-prefix",
        f"{d}/runs/cls", "--in-memory", "--fetch-step", "1", "--batch-size", "10", "--num-epochs", "2",
        "--steps-per-epoch", "4", "--batch-size-val", "40", "--steps-per-epoch-val", "1", "--optimizer", "adamw",
        "--start-lr", "0.001", "--lr-scheduler", "flat+decay", "--auto-clean"]), shlex.join([
        "weaver", "--predict", "--data-test", f"{d}/test.root", *common, "--model-prefix",
        f"{d}/runs/cls_best_epoch_state.pt", "--batch-size", "256", "--predict-output", f"{d}/pred.root"])]
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["toy study", "[1/2] first ..."] and re.fullmatch(r"\[1/2\] first: done in [0-9.]+ s "
                                                                          r"\(total [0-9.]+ s\)", lines[2])
    assert lines[-1].startswith("done in ") and lines[-1].endswith(f" s: {report / 'summary.md'}")
    # --keep-data keeps data/; --overwrite replaces the old report as a whole
    ToyStudy(ToyConfig(report, keep_data=True, overwrite=True), out=io.StringIO()).run()
    assert (report / "data" / "jets.root").read_text() == "jets"


def test_study_base_keeps_a_failed_run_with_its_logs_and_says_where(tmp_path):
    out = io.StringIO()
    study = ToyStudy(ToyConfig(tmp_path / "report"), out=out)
    study.fail = True
    with pytest.raises(demo.DemoError, match="weaver \\(toy\\) failed"):
        study.run()
    partial = study.work
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.failed"] and partial == tmp_path / "report.failed"
    assert sorted(p.name for p in partial.iterdir()) == [".omnijet-weaver-toy", "logs"]  # data/ deleted
    assert (partial / "logs" / "train.log").read_text() == "log"
    assert out.getvalue().splitlines()[-1] == (f"stopped (WeaverRunError): the partial toy report, with its logs, is "
                                               f"kept in {partial}")
    # the kept folder is no report: a later run into the same output starts afresh, and keeps it
    ToyStudy(ToyConfig(tmp_path / "report"), out=io.StringIO()).run()
    assert (tmp_path / "report" / "summary.json").is_file() and (partial / "logs" / "train.log").is_file()


def test_validation_tiling_and_training_cost():
    for n in range(1, 2100):
        batch, steps = base.validation_tiling(n)
        # the demo's and the transfer study's former rules (ceil and floor of n / steps) give the same numbers
        old = next((k for k in range(math.ceil(n / 512), n + 1) if n % k == 0), 1)
        assert (batch, steps) == (math.ceil(n / old), old) == (n // old, old)
        assert batch * steps == n and batch <= 512
    assert [base.validation_tiling(n) for n in (40, 300, 1000, 1031)] == [(40, 1), (300, 1), (500, 2), (1, 1031)]
    with pytest.raises(ConfigError, match="--val-jets"):
        base.validation_tiling(0)
    assert base.training_cost(2, 4, 10, 40, "finetune") == 2 * (40 + 20) + 400
    assert base.training_cost(2, 4, 10, 40, "frozen") == pytest.approx(2 * (16 + 20) + 400)


def test_config_checks_and_cli_errors(tmp_path, capsys):
    from omnijet_weaver.cli.demo import main

    with pytest.raises(ValueError, match="too few"):
        demo.DemoConfig(output=tmp_path, num_jets=100, labels=(1000,)).check()
    with pytest.raises(ValueError, match="unknown tagger mode"):
        demo.DemoConfig(output=tmp_path, modes=("bogus",)).check()
    demo.DemoConfig(output=tmp_path).check()
    demo.quick_config(tmp_path).check()
    with pytest.raises(SystemExit) as exc:
        main(["--output", str(tmp_path / "r"), "--num-jets", "50"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error: --num-jets 50 per process is too few" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_repo_configs_are_found():
    paths = demo.repo_configs()
    assert paths["network"].name == "omnijet_cls.py" and paths["network"].is_file()
    assert paths["data"].name == "qg_top.yaml" and paths["data"].is_file()


def test_roc_auc():
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.4
    s = np.round(rng.normal(y * 1.0, 1.0), 1)  # with ties
    pos, neg = s[y], s[~y]
    expected = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert demo.roc_auc(y, s) == pytest.approx(expected, abs=1e-12)
    assert demo.roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == 1.0
    assert demo.roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert np.isnan(demo.roc_auc([1, 1], [0.5, 0.2]))


# --- plotting helpers ------------------------------------------------------------------------------------------


def _is_png(path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_mpl
def test_hist_ratio_writes_png_and_pdf(tmp_path):
    from omnijet_weaver.evaluation import plots

    rng = np.random.default_rng(1)
    samples = {"real": rng.normal(170, 20, 2000), "generated": rng.normal(165, 25, 1500),
               "other": np.r_[rng.normal(90, 30, 500), np.nan, np.inf]}
    written = plots.hist_ratio(tmp_path / "sub" / "mass", samples, np.linspace(0, 300, 31), reference="real",
                               xlabel="jet mass [GeV]")
    assert [p.name for p in written] == ["mass.png", "mass.pdf"] and _is_png(written[0])
    assert written[1].read_bytes()[:4] == b"%PDF"
    # log-spaced automatic bins, no ratio panel, PNG only; no temporary file left behind
    written = plots.hist_ratio(tmp_path / "cpt.png", {"a": rng.lognormal(1, 1.5, 5000)}, 20, logx=True, logy=True,
                               ratio=False, formats=("png",))
    assert [p.name for p in written] == ["cpt.png"] and _is_png(written[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpt.png", "sub"]
    with pytest.raises(KeyError, match="reference"):
        plots.hist_ratio(tmp_path / "x", samples, 10, reference="missing")
    with pytest.raises(ValueError):
        plots.hist_ratio(tmp_path / "x", {}, 10)


@needs_mpl
def test_metric_vs_labels_and_roc_write_png(tmp_path):
    from omnijet_weaver.evaluation import plots

    results = {"fine-tuned": {100: 0.85, 1000: 0.91}, "from scratch": {100: 0.71, 1000: float("nan")},
               "backbone fixed": {}}
    written = plots.metric_vs_labels(tmp_path / "acc", results, ylabel="accuracy", ylim=(0.5, 1.0))
    assert _is_png(written[0]) and written[1].stat().st_size > 1000
    rng = np.random.default_rng(2)
    y = rng.random(400) < 0.5
    written = plots.roc_curves(tmp_path / "roc", {"good": (y, y + rng.normal(0, 0.5, 400)),
                                                  "random": (y, rng.random(400)), "one class": (np.ones(5), np.ones(5))})
    assert _is_png(written[0])
