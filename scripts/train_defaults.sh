#!/usr/bin/env bash
# Recipe of the packaged default checkpoints (omnijet_weaver/models/weights/vqvae.pt and gpt.pt), CPU scale.
#   bash scripts/train_defaults.sh TOP.root QCD.root     (default: ../shared/data/pythia/pythia_{top,qcd}_20k.root)
# Data: 20k t->bqq' + 20k q/g Pythia8 jets, of which the last 10% of each file is held back; step 6 adds 120k
# jets made with omnijet-weaver-make-jets for the generator. Environment: OUT (default out/defaults), VQ_EPOCHS
# (6), GPT_EPOCHS (5), GPT_MORE_EPOCHS (3), GPT_COS_EPOCHS (8), GPT_DATA_EPOCHS (7).
# CPU time of the packaged files (2-core machine shared with other jobs, one thread each): tokenizer 6 epochs
# x 250 steps of 128 jets, 23 min (best epoch 3, validation loss 0.0997); tokenizing 40k jets, 3 min; GPT
# 5 epochs x 250 steps of 128 jets, 55 min (best epoch 4, validation loss 4.58 = perplexity 97.7), then 3 more
# epochs at half the learning rate from that state, 35 min (validation loss 4.572, 4.560, 4.551 = perplexity 94.7),
# then 8 epochs of a warm-up + cosine schedule from 5e-4, 50 min with two threads (validation loss 4.539, 4.532,
# 4.525, 4.515, 4.508, 4.507, 4.502, 4.504; best epoch 6: 4.502 = perplexity 90.2), then 120k more jets (15 min
# with two workers, tokenized in 2 min) and 7 epochs of warm-up + cosine from 5e-4 over the 156k jets (first
# 90 % of each file), 45 min with two threads (validation loss, now on the last 10 % of all three files: 4.509,
# 4.500, 4.494, 4.491, 4.472, 4.466, 4.480; the packaged gpt.pt is the best, epoch 5). Next-token loss on the
# 4000 held-back jets: 4.519 before step 6, 4.477 after (perplexity 91.7 -> 88.0). Together the two files are 6.3 MB.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$here/out/defaults}
mkdir -p "$out"
top=${1:-$here/../shared/data/pythia/pythia_top_20k.root}
qcd=${2:-$here/../shared/data/pythia/pythia_qcd_20k.root}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
cfg=$here/data_configs/qg_top.yaml

for name in top qcd; do
  src=$top; [ "$name" = qcd ] && src=$qcd
  python -c 'import sys; from omnijet_weaver.io.files import split_root; split_root(*sys.argv[1:4])' \
    "$src" "$out/${name}_train.root" "$out/${name}_test.root"
done

# 1. tokenizer: conditional VQ-VAE, 2048 codes, 2 NormFormer blocks of width 64 (paper: 8192, 4 x 128)
weaver --data-train "$out/top_train.root" "$out/qcd_train.root" --train-val-split 0.9 --data-config "$cfg" \
  --network-config "$here/network_configs/omnijet_vqvae.py" \
  -o codebook_size 2048 -o hidden_dim 64 -o num_blocks 2 -o num_heads 4 \
  --model-prefix "$out/vqvae" --gpus "" --num-workers 0 --batch-size 128 --in-memory --fetch-step 1 \
  --num-epochs "${VQ_EPOCHS:-6}" --steps-per-epoch 250 --steps-per-epoch-val 28 \
  --optimizer adamw --start-lr 1e-3 > "$out/vqvae.log" 2>&1

# 2. tokens of the training jets (the GPT then trains without re-running the encoder)
for s in train test; do
  omnijet-weaver-tokenize --data-config "$cfg" --tokenizer "$out/vqvae_best_epoch_state.pt" --overwrite \
    --output "$out/tokens_$s.parquet" --no-progress "$out/top_$s.root" "$out/qcd_$s.root"
done

# GPT training on the tokens; the arguments after the first two are each step's own (weights, learning rate)
gpt_data=("$out/tokens_train.parquet")
train_gpt() {  # PREFIX EPOCHS [weaver options...]
  local prefix=$1 epochs=$2; shift 2
  weaver --data-train "${gpt_data[@]}" --train-val-split 0.9 --data-config "$here/data_configs/tokens.yaml" \
    --network-config "$here/network_configs/omnijet_gpt.py" -o tokenizer "'$out/vqvae_best_epoch_state.pt'" \
    -o embed_dim 128 -o ff_dim 512 --model-prefix "$out/$prefix" \
    --gpus "" --num-workers 0 --batch-size 128 --in-memory --fetch-step 1 \
    --num-epochs "$epochs" --steps-per-epoch 250 --steps-per-epoch-val 28 --optimizer adam "$@" > "$out/$prefix.log" 2>&1
}

# 3. generative backbone: 3 blocks, 8 heads as in the paper, embedding 128 and feed-forward 512 (paper: 256, 1024)
train_gpt gpt "${GPT_EPOCHS:-5}" --start-lr 1e-3

# 4. more epochs at half the learning rate (weaver restarts the optimizer; the validation jets stay the same)
train_gpt gpt_more "${GPT_MORE_EPOCHS:-3}" --load-model-weights "$out/gpt_best_epoch_state.pt" \
  --start-lr 5e-4 --lr-scheduler none

# 5. a cosine schedule from that state: 8 epochs, lr 5e-4 after a 3 % warm-up, decaying to 0
train_gpt gpt_cos "${GPT_COS_EPOCHS:-8}" --load-model-weights "$out/gpt_more_best_epoch_state.pt" \
  --start-lr 5e-4 --lr-scheduler warmup+cos --warmup-steps 0.03

# 6. more jets: 2 x (30k top + 30k QCD) fresh Pythia jets (checked for the packaged model: none has the jet pT, eta
#    and multiplicity of a shared jet, so no held-back jet is pre-trained on), tokenized and added to the pool (the
#    first 90 % of each file trains, the last 10 % validates); 7 epochs of warm-up + cosine from 5e-4
for seed in 5000 6000; do
  omnijet-weaver-make-jets --process top qcd --num-jets 30000 --seed "$seed" --workers 2 --overwrite --no-progress \
    --output "$out/more_$seed.root"
  omnijet-weaver-tokenize --data-config "$cfg" --tokenizer "$out/vqvae_best_epoch_state.pt" --overwrite \
    --output "$out/tokens_more_$seed.parquet" --no-progress "$out/more_$seed.root"
  gpt_data+=("$out/tokens_more_$seed.parquet")
done
train_gpt gpt_data "${GPT_DATA_EPOCHS:-7}" --load-model-weights "$out/gpt_cos_best_epoch_state.pt" \
  --start-lr 5e-4 --lr-scheduler warmup+cos --warmup-steps 0.03

grep -hE "(Train|Validation) epoch [0-9]+:" "$out"/{vqvae,gpt,gpt_more,gpt_cos,gpt_data}.log
echo "copy to the package: cp $out/vqvae_best_epoch_state.pt omnijet_weaver/models/weights/vqvae.pt;" \
     "cp $out/gpt_data_best_epoch_state.pt omnijet_weaver/models/weights/gpt.pt"
