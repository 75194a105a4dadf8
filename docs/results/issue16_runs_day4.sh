#!/bin/bash
# issue 16, fourth session (2026-11-26 night, a 2-core AMD EPYC VM): JaxMARL's rMAPPO baseline on
# this VM for the first time (its 4,190 steps/s came from the issue's faster VM), beside mappo's
# rMAPPO and MLP on simple_spread, then the final code's own 1M VMAS pair beside BenchMARL. One run
# at a time; each line is appended to issue16_runs.log and a tag already there is skipped.
source "$(dirname "$0")/issue16_lib.sh"
jaxmarl d4-jaxmarl-rnn TOTAL_TIMESTEPS=300000
run d4-mappo-rnn configs/mpe_simple_spread.yaml recurrent=true --eval 100
run d4-mappo-mlp configs/mpe_simple_spread.yaml --eval 100
echo "d4 spread done $(date +%H:%M)" >> $LOG
run d4-nav-1m $NAV total_steps=1000000 --threads 1
peer d4-benchmarl-nav-1m 1000000
echo "d4 nav done $(date +%H:%M)" >> $LOG
