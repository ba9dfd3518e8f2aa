#!/usr/bin/env bash
# The main job: the end-to-end OmniJet-alpha demo in weaver, with one command (~15 min on 2 CPU cores).
#   bash scripts/main_job.sh [omnijet-weaver-demo options]      e.g. --overwrite, --quick, --keep-data
# Makes top and QCD jets with Pythia8, tokenizes them with the packaged tokenizer, generates jets with the
# packaged generative model and compares them with the real ones, fine-tunes the tagger with `weaver` on 100
# and 1000 labelled jets against training from scratch, and writes the report (figures, summary.md) to
# $OUT (default: report/ in the repository).
# Needs: pip install torch==2.13.0 && pip install -e '.[pythia,plot]'
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$here/report}

command -v omnijet-weaver-demo >/dev/null || {
  echo "main_job: omnijet-weaver-demo is not installed; run: pip install -e '.[pythia,plot]'" >&2; exit 2; }
python - <<'PY' || exit 2
import importlib.util, sys
missing = [m for m in ("pythia8mc", "fastjet", "matplotlib") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"main_job: missing {', '.join(missing)}; run: pip install -e '.[pythia,plot]'")
PY

omnijet-weaver-demo --output "$out" "$@"
echo "main_job: report in $out/summary.md"
