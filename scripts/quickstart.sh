#!/usr/bin/env bash
# Train the OmniJet-alpha VQ-VAE tokenizer with weaver on JetClass-style files and report its quality.
#   bash scripts/quickstart.sh [top.root qcd.root]     (default: ../shared/data/pythia/*.root)
# Environment: OUT (default out/quickstart), EPOCHS (4), STEPS (150 per epoch), CODEBOOK (1024).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$here/out/quickstart}
mkdir -p "$out"
if [ $# -gt 0 ]; then files=("$@"); else files=("$here"/../shared/data/pythia/*.root); fi
for f in "${files[@]}"; do
  [ -f "$f" ] || { echo "quickstart: no input file $f; pass JetClass-style ROOT files" >&2; exit 2; }
done

# hold back the last 10% of every file for the evaluation (written as TTrees that weaver reads)
for f in "${files[@]}"; do
  name=$(basename "${f%.*}")
  python -c 'import sys; from omnijet_weaver.io.files import split_root; split_root(*sys.argv[1:4])' \
    "$f" "$out/${name}_train.root" "$out/${name}_heldout.root"
done

weaver --data-train "$out"/*_train.root --train-val-split 0.9 \
  --data-config "$here/data_configs/qg_top.yaml" --network-config "$here/network_configs/omnijet_vqvae.py" \
  -o codebook_size "${CODEBOOK:-1024}" -o hidden_dim 64 -o num_blocks 2 -o num_heads 4 \
  --model-prefix "$out/vqvae" --gpus "" --num-workers 0 --batch-size 128 --in-memory --fetch-step 1 \
  --num-epochs "${EPOCHS:-4}" --steps-per-epoch "${STEPS:-150}" --steps-per-epoch-val 20 \
  --optimizer adamw --start-lr 1e-3 > "$out/train.log" 2>&1 \
  || { tail -n 30 "$out/train.log" >&2; echo "quickstart: weaver failed, see $out/train.log" >&2; exit 1; }
grep -E "(Train|Validation) epoch [0-9]+:" "$out/train.log"

python "$here/scripts/eval_tokenizer.py" --tokenizer "$out/vqvae_best_epoch_state.pt" \
  --data-config "$here/data_configs/qg_top.yaml" "$out"/*_heldout.root 2>/dev/null | tee "$out/token_quality.json"
