#!/bin/bash
# SMAX beside JaxMARL's own MAPPO (configs/benchmarks/smax.yaml): for each map and seed, our run
# (`mappo benchmark`, resumable) and JaxMARL's baseline at the same settings, budget and seed
# (skipped when runs/smax/jaxmarl.json already holds it), one at a time; then the report with
# JaxMARL's runs beside ours.  Usage:
#     bash scripts/bench_smax.sh /path/to/JaxMARL /path/to/jaxmarl-venv/bin/python [MAPS] [SEEDS]
# MAPS and SEEDS are comma-separated (default: 2s3z,3s5z,5m_vs_6m and 0,1,2).
set -euo pipefail
JAXMARL=${1:?a JaxMARL checkout}; JAXPY=${2:?the python of a venv with JaxMARL's baselines' deps}
MAPS=${3:-2s3z,3s5z,5m_vs_6m}; SEEDS=${4:-0,1,2}
OUT=runs/smax; JSON=$OUT/jaxmarl.json; STEPS=1048576
mkdir -p "$OUT"
for map in ${MAPS//,/ }; do
  for seed in ${SEEDS//,/ }; do
    python -m mappo benchmark configs/benchmarks/smax.yaml --out "$OUT" --tasks "smax_$map" --seeds "$seed" --jobs 1
    if ! python - "$JSON" "$map" "$seed" <<'PY'
import json, os, sys
path, task, seed = sys.argv[1:]
runs = json.load(open(path)).get("smax", {}).get(task, {}).get("jaxmarl_mappo", {}) if os.path.isfile(path) else {}
sys.exit(0 if f"run_{seed}" in runs else 1)
PY
    then
      OMP_NUM_THREADS=1 "$JAXPY" scripts/bench_jaxmarl.py --jaxmarl "$JAXMARL" --suite smax --marl-eval "$JSON" \
        --task-name "$map" MAP_NAME="$map" SEED="$seed" TOTAL_TIMESTEPS=$STEPS | tee -a "$OUT/jaxmarl.log"
    fi
  done
done
python -m mappo benchmark configs/benchmarks/smax.yaml --out "$OUT" --report --compare "$JSON"
