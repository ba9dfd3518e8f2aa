#!/usr/bin/env bash
# A class-conditional generator (classes QCD, Tbqq), fine-tuned from the packaged unconditional GPT, and its
# per-class fidelity. CPU scale.
#   bash scripts/train_conditional.sh TOP.root QCD.root   (default: ../shared/data/pythia/pythia_{top,qcd}_20k.root)
# Data: the packaged generator's jets (the first 90 % of each file; the last 10 % held back for the evaluation),
# tokenized with the packaged tokenizer (the label index of qg_top.yaml: 0 = QCD, 1 = Tbqq). Environment: OUT
# (default out/conditional), EPOCHS (2), EVAL_JETS (2000 per class). The generator starts from the packaged one
# (-o pretrained 'packaged': its weights; each class token starts as the start token) and trains with class
# dropout 0.1, so it also generates unconditionally.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$here/out/conditional}
mkdir -p "$out"
top=${1:-$here/../shared/data/pythia/pythia_top_20k.root}
qcd=${2:-$here/../shared/data/pythia/pythia_qcd_20k.root}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
cfg=$here/data_configs/qg_top.yaml
n=${EVAL_JETS:-2000}

for name in top qcd; do
  src=$top; [ "$name" = qcd ] && src=$qcd
  python -c 'import sys; from omnijet_weaver.io.files import split_root; split_root(*sys.argv[1:4])' \
    "$src" "$out/${name}_train.root" "$out/${name}_test.root"
done
omnijet-weaver-tokenize --data-config "$cfg" --overwrite --output "$out/tokens_train.parquet" --no-progress \
  "$out/top_train.root" "$out/qcd_train.root"

weaver --data-train "$out/tokens_train.parquet" --train-val-split 0.9 --data-config "$here/data_configs/tokens.yaml" \
  --network-config "$here/network_configs/omnijet_gpt.py" -o pretrained "'packaged'" \
  -o conditional True -o classes "['QCD','Tbqq']" --model-prefix "$out/gpt" \
  --gpus "" --num-workers 0 --batch-size 128 --in-memory --fetch-step 1 \
  --num-epochs "${EPOCHS:-2}" --steps-per-epoch 250 --steps-per-epoch-val 28 --optimizer adam --start-lr 5e-4 \
  > "$out/gpt.log" 2>&1

# per class: generated jets of the class against the held-back real jets of the class; then unconditional
gpt=$out/gpt_best_epoch_state.pt
omnijet-weaver-gen-fidelity "$out/top_test.root" --checkpoint "$gpt" --class Tbqq --num-jets "$n" \
  --output "$out/gf_top" --overwrite --no-progress --figures png
omnijet-weaver-gen-fidelity "$out/qcd_test.root" --checkpoint "$gpt" --class QCD --num-jets "$n" \
  --output "$out/gf_qcd" --overwrite --no-progress --figures png
omnijet-weaver-gen-fidelity "$out/top_test.root" "$out/qcd_test.root" --checkpoint "$gpt" --num-jets "$n" \
  --output "$out/gf_all" --overwrite --no-progress --figures png
