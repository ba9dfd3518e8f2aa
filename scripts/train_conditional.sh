#!/usr/bin/env bash
# A class-conditional generator on the five jet types of omnijet-weaver-make-jets (QCD, Hbb, Zqq, Wqq, Tbqq),
# fine-tuned from the packaged unconditional GPT, and its per-class fidelity. CPU scale.
#   bash scripts/train_conditional.sh [TOP.root QCD.root]   (default: ../shared/data/pythia/pythia_{top,qcd}_20k.root)
# Data: top and QCD jets of those files (as the packaged generator: the first 90 % of each file; the last 10 %
# held back), plus W_JETS (default 8000) jets each of W->qq', Z->qq and H->bb made here with
# omnijet-weaver-make-jets (same split), all tokenized with the packaged tokenizer through
# data_configs/five_classes.yaml (label index 0 QCD, 1 Hbb, 2 Zqq, 3 Wqq, 4 Tbqq). The generator starts from the
# packaged one (-o pretrained 'packaged': its weights; each class token starts as its start token) and trains
# with class dropout 0.1, so it also generates without a class. Environment: OUT (default out/conditional),
# EPOCHS (3), W_JETS (8000), EVAL_JETS (2000 per class).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$here/out/conditional}
mkdir -p "$out"
top=${1:-$here/../shared/data/pythia/pythia_top_20k.root}
qcd=${2:-$here/../shared/data/pythia/pythia_qcd_20k.root}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
cfg=$here/data_configs/five_classes.yaml
n=${EVAL_JETS:-2000}
split() { python -c 'import sys; from omnijet_weaver.io.files import split_root; split_root(*sys.argv[1:4])' "$@"; }

# 1. jets: top and QCD from the Pythia files, W, Z, H made here (one file per process)
[ -f "$out/wzh.root" ] || omnijet-weaver-make-jets --process wqq zqq hbb --num-jets "${W_JETS:-8000}" --seed 17 \
  --workers 2 --output "$out/wzh.root" --no-progress
for name in top qcd wzh; do
  src=$out/wzh.root; [ "$name" = top ] && src=$top; [ "$name" = qcd ] && src=$qcd
  split "$src" "$out/${name}_train.root" "$out/${name}_test.root"
done
# held-back jets of each W/Z/H class on their own (the per-class reference)
for c in Wqq Zqq Hbb; do
  python - "$out/wzh_test.root" "$out/${c}_test.root" "label_$c" <<'EOF'
import sys, uproot
from omnijet_weaver.io.files import write_jets
a = uproot.open(sys.argv[1])["tree"].arrays()
write_jets(sys.argv[2], {k: a[k][a[sys.argv[3]] == 1] for k in a.fields}, overwrite=True)
EOF
done

# 2. tokens of the training jets, with their class index
omnijet-weaver-tokenize --data-config "$cfg" --overwrite --output "$out/tokens_train.parquet" --no-progress \
  "$out/top_train.root" "$out/qcd_train.root" "$out/wzh_train.root"

# 3. the conditional generator, from the packaged one
weaver --data-train "$out/tokens_train.parquet" --train-val-split 0.9 --data-config "$here/data_configs/tokens.yaml" \
  --network-config "$here/network_configs/omnijet_gpt.py" -o pretrained "'packaged'" \
  -o conditional True -o classes "['QCD','Hbb','Zqq','Wqq','Tbqq']" --model-prefix "$out/gpt" \
  --gpus "" --num-workers 0 --batch-size 128 --in-memory --fetch-step 1 \
  --num-epochs "${EPOCHS:-3}" --steps-per-epoch 250 --steps-per-epoch-val 28 --optimizer adam --start-lr 5e-4 \
  > "$out/gpt.log" 2>&1

# 4. per class: generated jets of the class against the held-back real jets of that class; then unconditional
gpt=$out/gpt_best_epoch_state.pt
for c in Tbqq QCD Wqq Zqq Hbb; do
  real=$out/${c}_test.root; [ "$c" = Tbqq ] && real=$out/top_test.root; [ "$c" = QCD ] && real=$out/qcd_test.root
  omnijet-weaver-gen-fidelity "$real" --data-config "$cfg" --checkpoint "$gpt" --class "$c" --num-jets "$n" \
    --output "$out/gf_$c" --overwrite --no-progress --figures png
done
omnijet-weaver-gen-fidelity "$out/top_test.root" "$out/qcd_test.root" --checkpoint "$gpt" --num-jets $((2 * n)) \
  --output "$out/gf_unconditional" --overwrite --no-progress --figures png
