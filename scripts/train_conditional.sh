#!/usr/bin/env bash
# A class-conditional generator on the five jet types of omnijet-weaver-make-jets (QCD, Hbb, Zqq, Wqq, Tbqq),
# fine-tuned from the packaged unconditional GPT, and its per-class fidelity. CPU scale.
#   bash scripts/train_conditional.sh [TOP.root QCD.root]   (default: ../shared/data/pythia/pythia_{top,qcd}_20k.root)
# Data: top and QCD jets of those files (as the packaged generator: the first 90 % of each file; the last 10 %
# held back), plus W_JETS (default 8000) jets each of W->qq', Z->qq and H->bb made here with
# omnijet-weaver-make-jets (same split), all tokenized with the packaged tokenizer through
# data_configs/five_classes.yaml (label index 0 QCD, 1 Hbb, 2 Zqq, 3 Wqq, 4 Tbqq). The generator starts from the
# packaged one (-o pretrained 'packaged': its weights; each class token starts as its start token) and trains
# with class dropout 0.1, so it also generates without a class; the checkpoint carries GUIDANCE as its default
# classifier-free guidance scale. Environment: OUT (default out/conditional), EPOCHS (8, warm-up + cosine from
# 5e-4), GUIDANCE (1.4), W_JETS (8000), EVAL_JETS (2000 per class). Rerunnable: a step whose output exists is
# skipped (remove a file to redo its step; a killed step leaves no output, so a rerun redoes just that one).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$here/out/conditional}
mkdir -p "$out"
top=${1:-$here/../shared/data/pythia/pythia_top_20k.root}
qcd=${2:-$here/../shared/data/pythia/pythia_qcd_20k.root}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
cfg=$here/data_configs/five_classes.yaml
n=${EVAL_JETS:-2000}
# split SRC: for each class of SRC, its first 90 % of jets to $out/<class>_train.root and the rest to
# <class>_test.root (one file per class, so that weaver's --train-val-split, the last 10 % of each file, holds
# every class), with all ten JetClass label branches (those SRC lacks, e.g. label_Hbb in a top file, as 0)
split() {
  python - "$@" <<'EOF'
import sys, uproot
import numpy as np
from omnijet_weaver.constants import JETCLASS_LABELS
from omnijet_weaver.io.files import write_jets
a = uproot.open(sys.argv[1])["tree"].arrays()
cols = {k: a[k] for k in a.fields}
cols.update({k: np.zeros(len(a), dtype=np.float32) for k in JETCLASS_LABELS if k not in cols})
label = np.argmax(np.stack([np.asarray(cols[k]) for k in JETCLASS_LABELS], axis=1), axis=1)
for c in np.unique(label):
    rows = np.flatnonzero(label == c)
    name = JETCLASS_LABELS[c].removeprefix("label_")
    for part, keep in (("train", rows[: int(0.9 * len(rows))]), ("test", rows[int(0.9 * len(rows)):])):
        write_jets(f"{sys.argv[2]}/{name}_{part}.root", {k: v[keep] for k, v in cols.items()})
EOF
}

# 1. jets: top and QCD from the Pythia files, W, Z, H made here (one file per process)
[ -f "$out/wzh.root" ] || omnijet-weaver-make-jets --process wqq zqq hbb --num-jets "${W_JETS:-8000}" --seed 17 \
  --workers 2 --output "$out/wzh.root" --no-progress
classes="QCD Hbb Zqq Wqq Tbqq"
[ -f "$out/Tbqq_test.root" ] || split "$top" "$out"
[ -f "$out/QCD_test.root" ] || split "$qcd" "$out"
[ -f "$out/Hbb_test.root" ] && [ -f "$out/Zqq_test.root" ] && [ -f "$out/Wqq_test.root" ] || split "$out/wzh.root" "$out"

# 2. tokens of the training jets of each class, with their class index
for c in $classes; do
  [ -f "$out/tokens_$c.parquet" ] || omnijet-weaver-tokenize --data-config "$cfg" --overwrite --output "$out/tokens_$c.parquet" --no-progress \
    "$out/${c}_train.root"
done

# 3. the conditional generator, from the packaged one
gpt=$out/gpt_best_epoch_state.pt
[ -f "$gpt" ] || weaver --data-train $(for c in $classes; do echo "$out/tokens_$c.parquet"; done) --train-val-split 0.9 --data-config "$here/data_configs/tokens.yaml" \
  --network-config "$here/network_configs/omnijet_gpt.py" -o pretrained "'packaged'" \
  -o conditional True -o classes "['QCD','Hbb','Zqq','Wqq','Tbqq']" -o guidance "${GUIDANCE:-1.4}" --model-prefix "$out/gpt" \
  --gpus "" --num-workers 0 --batch-size 128 --in-memory --fetch-step 1 \
  --num-epochs "${EPOCHS:-8}" --steps-per-epoch 250 --steps-per-epoch-val 28 --optimizer adam --start-lr 5e-4 \
  --lr-scheduler warmup+cos --warmup-steps 0.03 > "$out/gpt.log" 2>&1

# 4. a top-vs-QCD tagger trained on the real training jets (fine-tuned from the packaged generator), for the
#    closure test
[ -f "$out/cls_best_epoch_state.pt" ] || weaver --data-train "$out/Tbqq_train.root" "$out/QCD_train.root" --data-config "$here/data_configs/qg_top.yaml" \
  --network-config "$here/network_configs/omnijet_cls.py" --model-prefix "$out/cls" \
  --gpus "" --num-workers 0 --batch-size 128 --in-memory --fetch-step 1 --train-val-split 0.9 \
  --num-epochs 1 --steps-per-epoch "${TAGGER_STEPS:-300}" --steps-per-epoch-val 20 --optimizer adam --start-lr 5e-4 \
  > "$out/cls.log" 2>&1

# 5. per class in one report: generated jets of each class against the held-back real jets of that class, and
#    the closure test (the tagger on generated vs real top and QCD jets), at the checkpoint's guidance scale;
#    then unconditional generation against the model's own mixture (the held-back jets of all five classes, in
#    the training proportions: five_classes.yaml, whose selection keeps all five) and against top + QCD only
#    (the packaged generator's comparison)
omnijet-weaver-gen-fidelity $(for c in $classes; do echo "$out/${c}_test.root"; done) --data-config "$cfg" \
  --checkpoint "$gpt" --class all --num-jets "$n" --tagger "$out/cls_best_epoch_state.pt" \
  --tagger-data-config "$here/data_configs/qg_top.yaml" --output "$out/gf_classes" --overwrite --no-progress
omnijet-weaver-gen-fidelity $(for c in $classes; do echo "$out/${c}_test.root"; done) --data-config "$cfg" --checkpoint "$gpt" \
  --num-jets $((2 * n)) --output "$out/gf_unconditional" --overwrite --no-progress
omnijet-weaver-gen-fidelity "$out/Tbqq_test.root" "$out/QCD_test.root" --checkpoint "$gpt" --num-jets $((2 * n)) \
  --output "$out/gf_unconditional_top_qcd" --overwrite --no-progress
echo "copy to the package: cp $gpt omnijet_weaver/models/weights/gpt_conditional.pt"
