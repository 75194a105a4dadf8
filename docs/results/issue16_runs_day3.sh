#!/bin/bash
# issue 16, third session (2026-11-26 evening, a 2-core AMD EPYC VM): the final code of the second pass
# (flush_denormal on) beside BenchMARL on VMAS navigation at the issue's 1M-step budget, alternating,
# one at a time. Each line is appended to issue16_runs.log; a tag already there is skipped (resumable).
source "$(dirname "$0")/issue16_lib.sh"
for r in ${RUNS:-a b}; do
  run d3-nav-1m-$r $NAV total_steps=1000000 --threads 1
  peer d3-benchmarl-nav-1m-$r 1000000
done
echo "d3 nav done $(date +%H:%M)" >> $LOG
# simple_spread MLP and rMAPPO, this session's code against the second pass's end (03fdbab, a git
# worktree at /tmp/base whose .venv links to this one), alternating
runb() { tag=$1; shift; grep -q "^$tag " $LOG 2>/dev/null && return
  echo "$tag $(date +%H:%M) 03fdbab $(cd /tmp/base && python scripts/bench_run.py "$@" 2>&1 | tail -1)" >> $LOG; }
if [ -n "$SPREAD" ]; then
  run d3-after-mlp configs/mpe_simple_spread.yaml --eval 100
  runb d3-before-mlp configs/mpe_simple_spread.yaml --eval 100
  run d3-after-rnn configs/mpe_simple_spread.yaml recurrent=true --eval 100
  runb d3-before-rnn configs/mpe_simple_spread.yaml recurrent=true --eval 100
  echo "d3 spread done $(date +%H:%M)" >> $LOG
fi
