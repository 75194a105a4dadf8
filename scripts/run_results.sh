#!/usr/bin/env bash
# The runs behind docs/RESULTS.md: 3 seeds per setting, each followed by a deterministic
# 100-episode evaluation saved as eval.json in its run folder.  Then the curves:
#     bash scripts/run_results.sh [OUT=runs/results]
#     python scripts/plot.py ...   (the exact plot commands are in docs/RESULTS.md)
set -euo pipefail
OUT=${1:-runs/results}
SEEDS=${SEEDS:-"0 1 2"}

run() {  # run NAME CONFIG [key=value ...]
  local name=$1 config=$2; shift 2
  for seed in $SEEDS; do
    local dir="$OUT/$name/seed$seed"
    if [ -f "$dir/eval.json" ]; then echo "skip $dir (done)"; continue; fi
    echo "=== $name seed $seed: $(date +%T)"
    if [ -f "$dir/ckpt.pt" ]; then  # stopped before (Ctrl-C, a crash, a failed eval): continue it
      python -m mappo train --resume "$dir" progress=false log_every=50
    else
      python -m mappo train "$config" seed="$seed" run_dir="$dir" progress=false log_every=50 "$@"
    fi
    # eval.json marks the run done, so it appears only once the evaluation has succeeded
    python -m mappo eval "$dir" --episodes 100 > "$dir/eval.json.tmp" && mv "$dir/eval.json.tmp" "$dir/eval.json"
  done
}

run spread_mappo configs/mpe_simple_spread.yaml
run speaker_listener configs/mpe_simple_speaker_listener.yaml
run reference configs/mpe_simple_reference.yaml
run spread_ippo configs/mpe_simple_spread.yaml critic_input=local
run spread_kl configs/mpe_simple_spread.yaml objective=kl
run spread_clip_kl configs/mpe_simple_spread.yaml objective=clip_kl
run multiwalker configs/sisl_multiwalker.yaml total_steps=500000
