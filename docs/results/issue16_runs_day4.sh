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
# mappo's rMAPPO at JaxMARL's update work: its 4 epochs x 4 minibatches (ours ships 10 x 1, the
# MAPPO paper's), its 128-step rollouts and 128-wide layers and GRU
run d4-mappo-rnn-jaxwork configs/mpe_simple_spread.yaml recurrent=true ppo_epochs=4 num_minibatches=4 \
  rollout_length=128 hidden_sizes=[128,128] --eval 100
echo "d4 matched done $(date +%H:%M)" >> $LOG
# the same task through mappo's batched path: VMAS's torch port of simple_spread (25-step episodes),
# rMAPPO at JaxMARL's batch and update work (16 envs x 128 steps, 4 x 4, 128 wide), one torch thread
run d4-mappo-rnn-vmas-spread configs/vmas_simple_spread.yaml recurrent=true num_envs=16 rollout_length=128 \
  hidden_sizes=[128,128] total_steps=300000 --threads 1 --eval 100
echo "d4 vmas spread done $(date +%H:%M)" >> $LOG
