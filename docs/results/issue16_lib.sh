# shared by the issue 16 run scripts (source it): run TAG ARGS... (mappo, bench_run.py), peer TAG FRAMES
# (BenchMARL in /work/venv-benchmarl), jaxmarl TAG KEY=value... (JaxMARL, scripts/bench_jaxmarl.py),
# NAV (the VMAS navigation row's overrides). A tag already in the log is skipped, so the scripts
# resume where they stopped.
cd "$(dirname "$0")/../.."
source .venv/bin/activate
LOG=docs/results/issue16_runs.log
record() { # tag command...: appends "tag HH:MM <the command's last line>", unless the tag is logged
  tag=$1; shift
  grep -q "^$tag " $LOG 2>/dev/null && return
  echo "$tag $(date +%H:%M) $("$@" 2>&1 | tail -1)" >> $LOG
}
mappo_run() { echo "$(git rev-parse --short HEAD) $(python scripts/bench_run.py "$@" 2>&1 | tail -1)"; }
benchmarl_run() { . /work/venv-benchmarl/bin/activate && python scripts/bench_benchmarl.py --frames $1; }
# JaxMARL's rMAPPO baseline: a checkout in $JAXMARL, its venv in $JAXMARL_VENV
jaxmarl_run() { . ${JAXMARL_VENV:-/tmp/venv-jaxmarl}/bin/activate && python scripts/bench_jaxmarl.py \
  --jaxmarl ${JAXMARL:-/tmp/jaxmarl-src} "$@"; }
run() { record $1 mappo_run "${@:2}"; }       # tag args...
peer() { record $1 benchmarl_run $2; }         # tag frames
jaxmarl() { record $1 jaxmarl_run "${@:2}"; }  # tag KEY=value...
NAV="configs/vmas_navigation.yaml num_envs=600 rollout_length=100 hidden_sizes=[256,256] ppo_epochs=4 num_minibatches=4 input_norm=false env_kwargs.n_agents=3 env_kwargs.shared_rew=false"
