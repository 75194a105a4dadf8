#!/bin/bash
# issue 16 before/after runs, one at a time; each line appended to results.log
cd /work/main
source .venv/bin/activate
LOG=docs/results/issue16_runs.log
run() { # tag dir args...
  tag=$1; dir=$2; shift 2
  grep -q "^$tag " $LOG 2>/dev/null && return
  out=$(cd $dir && python scripts/bench_run.py "$@" 2>&1 | tail -1)
  echo "$tag $(date +%H:%M) $out" >> $LOG
}
run after-rnn /work/main configs/mpe_simple_spread.yaml recurrent=true --eval 100
run before-rnn /tmp/before configs/mpe_simple_spread.yaml recurrent=true --eval 100
run after-mlp /work/main configs/mpe_simple_spread.yaml --eval 100
run before-mlp /tmp/before configs/mpe_simple_spread.yaml --eval 100
NAV="configs/vmas_navigation.yaml num_envs=600 rollout_length=100 hidden_sizes=[256,256] ppo_epochs=4 num_minibatches=4 input_norm=false env_kwargs.n_agents=3 env_kwargs.shared_rew=false total_steps=300000"
run after-nav /work/main $NAV --threads 1
run after-nav-compile /work/main $NAV compile=true --threads 1
run before-nav /tmp/before $NAV --threads 1
if ! grep -q "^benchmarl-nav " $LOG; then
  echo "benchmarl-nav $(date +%H:%M) $(. /work/venv-benchmarl/bin/activate && python scripts/bench_benchmarl.py --frames 300000 2>&1 | tail -1)" >> $LOG
fi
echo "all done $(date +%H:%M)" >> $LOG
