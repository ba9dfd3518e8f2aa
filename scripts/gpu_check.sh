#!/usr/bin/env bash
# One short check on a CUDA machine (about 8 minutes on one H200-class GPU); prints figures, exits non-zero on
# the first failure.
#   bash scripts/gpu_check.sh [TOP.root QCD.root]   (default: ../shared/data/pythia/pythia_{top,qcd}_20k.root)
# 1. each network config (omnijet_vqvae, omnijet_gpt, omnijet_cls) trains a few steps through weaver with
#    --gpus 0 --use-amp, then again with --compile;
# 2. with 2 or more GPUs, a 2-process DDP epoch of omnijet_cls through python -m omnijet_weaver.launch (nccl);
# 3. jets/s: tokenize (packaged tokenizer), generate (paper size, batch 4096, bf16, natural length) and tagger
#    training against ParT (scripts/bench_tagger.py, the same batches, one run).
# Environment: OUT (default out/gpu_check), STEPS (steps per training, default 20).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$here/out/gpu_check}
steps=${STEPS:-20}
top=${1:-$here/../shared/data/pythia/pythia_top_20k.root}
qcd=${2:-$here/../shared/data/pythia/pythia_qcd_20k.root}
cfg=$here/data_configs/qg_top.yaml
net=$here/network_configs
mkdir -p "$out"
python - <<'PY' || { echo "gpu_check: error: torch sees no CUDA device: run this on a GPU machine" >&2; exit 2; }
import torch, sys
sys.exit(0 if torch.cuda.is_available() else 1)
PY
ngpu=$(python -c 'import torch; print(torch.cuda.device_count())')
python -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0), "x", torch.cuda.device_count())'
t0=$SECONDS
stamp() { echo "== [$((SECONDS - t0)) s] $*"; }

common=(--data-train "top:$top" "qcd:$qcd" --data-val "$top" "$qcd" --data-config "$cfg" --gpus 0 --use-amp
        --batch-size 256 --num-epochs 1 --steps-per-epoch "$steps" --steps-per-epoch-val 2 --num-workers 2
        --fetch-step 0.05 --optimizer adamw --start-lr 1e-4)
train() {  # name, network config, extra options...
  local name=$1 config=$2; shift 2
  stamp "weaver $name $*"
  weaver "${common[@]}" --network-config "$config" --model-prefix "$out/$name/m" --log-file "$out/$name.log" "$@" \
    > "$out/$name.out" 2>&1 || { tail -30 "$out/$name.out"; echo "gpu_check: error: $name failed" >&2; exit 1; }
  grep -E "Train AvgLoss|validation metric|Epoch time" "$out/$name.log"* | tail -3 || true
}

# 1. the three network configs, --use-amp, then --compile
tok=$here/omnijet_weaver/models/weights/vqvae.pt
gpt=$here/omnijet_weaver/models/weights/gpt.pt
train vqvae "$net/omnijet_vqvae.py"
train gpt "$net/omnijet_gpt.py" -o tokenizer "'$tok'"
train cls "$net/omnijet_cls.py" -o pretrained "'$gpt'"
train cls_compiled "$net/omnijet_cls.py" -o pretrained "'$gpt'" --compile
train gpt_compiled "$net/omnijet_gpt.py" -o tokenizer "'$tok'" --compile

# 2. DDP on 2 GPUs through the launcher
if [ "$ngpu" -ge 2 ]; then
  stamp "2-process DDP (nccl) through python -m omnijet_weaver.launch"
  torchrun --standalone --nnodes 1 --nproc_per_node 2 -m omnijet_weaver.launch --backend nccl \
    "${common[@]}" --network-config "$net/omnijet_cls.py" -o pretrained "'$gpt'" \
    --model-prefix "$out/ddp/m" --log-file "$out/ddp.log" > "$out/ddp.out" 2>&1 \
    || { tail -30 "$out/ddp.out"; echo "gpu_check: error: DDP failed" >&2; exit 1; }
  grep -h "model state sha256" "$out"/ddp.log.* | sed 's/.*omnijet_weaver.launch: //'
  [ "$(grep -h "model state sha256" "$out"/ddp.log.* | awk '{print $NF}' | sort -u | wc -l)" = 1 ] \
    || { echo "gpu_check: error: the DDP ranks ended with different models" >&2; exit 1; }
else
  stamp "one GPU: the DDP check needs two, skipped"
fi

# 3. throughput
stamp "tokenize (packaged tokenizer)"
python "$here/scripts/bench_tokenize.py" --input "$top" --num-jets 20000 --files 4 --workers 0 2 4 --device cuda \
  --batch-size 1024
stamp "generate: paper size, batch 4096, bf16 and fp32, natural length"
python "$here/scripts/bench_sampling.py" --device cuda --only natural --num-jets 16384 --num-jets-full 256 \
  --batch-size 4096 --precision bf16 fp32 --repeats 1 --calibration-jets 4096
stamp "tagger training vs ParT (same batches)"
python "$here/scripts/bench_tagger.py" --device cuda --batch-size 512 --steps 30
stamp "done"
