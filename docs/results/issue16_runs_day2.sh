#!/bin/bash
# issue 16, second session (2026-11-26, an AMD EPYC 2-core VM): mappo after the tanh / KL / update_rows
# changes beside BenchMARL on VMAS navigation at the issue's 1M-step budget, alternating, then the
# simple_spread MLP and rMAPPO rows. One at a time; each line is appended to issue16_runs.log.
source "$(dirname "$0")/issue16_lib.sh"
run d2-nav-1m-a $NAV total_steps=1000000 --threads 1
peer d2-benchmarl-nav-1m-a 1000000
run d2-nav-1m-b $NAV total_steps=1000000 --threads 1
peer d2-benchmarl-nav-1m-b 1000000
# with each side's collection / update split (the scripts print it from here on)
run d2-nav-1m-c $NAV total_steps=1000000 --threads 1
peer d2-benchmarl-nav-1m-c 1000000
echo "d2 nav done $(date +%H:%M)" >> $LOG
# "before": this session's starting commit ab02d59, in a git worktree at /tmp/before
runb() { tag=$1; shift; grep -q "^$tag " $LOG 2>/dev/null && return
  echo "$tag $(date +%H:%M) $(cd /tmp/before && python scripts/bench_run.py "$@" 2>&1 | tail -1)" >> $LOG; }
runb d2-before-nav-1m $NAV total_steps=1000000 --threads 1
run d2-after-mlp configs/mpe_simple_spread.yaml --eval 100
runb d2-before-mlp configs/mpe_simple_spread.yaml --eval 100
run d2-after-rnn configs/mpe_simple_spread.yaml recurrent=true --eval 100
runb d2-before-rnn configs/mpe_simple_spread.yaml recurrent=true --eval 100
echo "d2 all done $(date +%H:%M)" >> $LOG
# after flush_denormal (on by default): the VMAS row again
run d2-nav-1m-d $NAV total_steps=1000000 --threads 1
echo "d2 flush done $(date +%H:%M)" >> $LOG
