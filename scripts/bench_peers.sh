#!/usr/bin/env bash
# The runs behind the peer tables of docs/PERFORMANCE.md: mappo beside BenchMARL on VMAS navigation
# and beside JaxMARL's rMAPPO on MPE simple_spread, one run at a time on this machine.
#
#     bash scripts/bench_peers.sh                      # every row, in the table's order
#     bash scripts/bench_peers.sh nav-mappo nav-benchmarl
#     bash scripts/bench_peers.sh --list               # the rows and their commands
#
# Each finished run appends one line to the log: the row's name, the time, the commit (mappo rows)
# and the last line the script printed.  A row already in the log is skipped, so the script resumes
# where it stopped; delete a row's line (or use another LOG) to run it again.  A run that fails
# writes a line starting with '#' and is run again next time.  Its full output is kept beside the
# log in runs/bench_peers/<row>.out.
#
# Settings, as environment variables:
#   LOG             the log, from the repository root (default runs/bench_peers/runs.log)
#   MAPPO_VENV      mappo's venv (default .venv; if it is missing, the python on PATH)
#   BENCHMARL_VENV  a venv with benchmarl==1.5.2 and vmas (default .venv-benchmarl; see
#                   scripts/bench_benchmarl.py)
#   JAXMARL         a JaxMARL checkout (https://github.com/FLAIROx/JaxMARL); without it the JaxMARL
#                   row is skipped
#   JAXMARL_VENV    a venv with jax[cpu] and that checkout's [algs] extra (default .venv-jaxmarl; see
#                   scripts/bench_jaxmarl.py)
# Peer rows whose venv is missing are skipped with a note.  Run nothing else on the machine meanwhile:
# the rows compare wall-clock speed.
set -uo pipefail
set -f  # no globbing: arguments such as hidden_sizes=[256,256] stay as written
cd "$(dirname "$0")/.."

LOG=${LOG:-runs/bench_peers/runs.log}
OUT=$(dirname "$LOG")
MAPPO_VENV=${MAPPO_VENV:-.venv}
BENCHMARL_VENV=${BENCHMARL_VENV:-.venv-benchmarl}
JAXMARL=${JAXMARL:-}
JAXMARL_VENV=${JAXMARL_VENV:-.venv-jaxmarl}

# VMAS navigation at BenchMARL's settings: 3 agents with rewards of their own, 600 envs x 100 steps,
# [256, 256] tanh MLPs, 4 passes x 4 minibatches, no input normalisation (scripts/bench_benchmarl.py)
NAV="configs/vmas_navigation.yaml num_envs=600 rollout_length=100 hidden_sizes=[256,256] ppo_epochs=4 \
num_minibatches=4 input_norm=false env_kwargs.n_agents=3 env_kwargs.shared_rew=false"

ROWS=(nav-mappo nav-benchmarl spread-jaxmarl spread-rmappo spread-mlp spread-rmappo-jaxwork vmas-spread-rmappo)

# row -> "runner|arguments": runner is mappo (scripts/bench_run.py), benchmarl or jaxmarl
row_command() {
  case $1 in
    nav-mappo)             echo "mappo|$NAV total_steps=1000000 --threads 1" ;;
    nav-benchmarl)         echo "benchmarl|--frames 1000000" ;;
    # JaxMARL's shipped rMAPPO config, with the batch and update work the table's row ran (other
    # JaxMARL versions ship other values, e.g. 128 envs)
    spread-jaxmarl)        echo "jaxmarl|TOTAL_TIMESTEPS=300000 NUM_ENVS=16 NUM_STEPS=128 GRU_HIDDEN_DIM=128 UPDATE_EPOCHS=4 NUM_MINIBATCHES=4" ;;
    spread-rmappo)         echo "mappo|configs/mpe_simple_spread.yaml recurrent=true --eval 100" ;;
    spread-mlp)            echo "mappo|configs/mpe_simple_spread.yaml --eval 100" ;;
    # mappo's rMAPPO at JaxMARL's batch and update work: 128-step rollouts, 128-wide layers and GRU, 4 x 4
    spread-rmappo-jaxwork) echo "mappo|configs/mpe_simple_spread.yaml recurrent=true ppo_epochs=4 num_minibatches=4 rollout_length=128 hidden_sizes=[128,128] --eval 100" ;;
    # the same task through VMAS's torch port (batched, in process), at JaxMARL's batch and work
    vmas-spread-rmappo)    echo "mappo|configs/vmas_simple_spread.yaml recurrent=true num_envs=16 rollout_length=128 hidden_sizes=[128,128] total_steps=300000 --threads 1 --eval 100" ;;
    *) return 1 ;;
  esac
}

shown() { # runner args -> the command line as a person would type it
  case $1 in
    mappo)     echo "python scripts/bench_run.py $2" ;;
    benchmarl) echo "python scripts/bench_benchmarl.py $2   (in $BENCHMARL_VENV)" ;;
    jaxmarl)   echo "python scripts/bench_jaxmarl.py --jaxmarl \$JAXMARL $2   (in $JAXMARL_VENV)" ;;
  esac
}

activate() { # venv: activate it when it exists (mappo falls back to the python on PATH)
  set +u  # some activate scripts read unset variables
  [ -f "$1/bin/activate" ] && . "$1/bin/activate"
}

run_row() { # row: run it unless the log has it; append its line
  local row=$1 spec runner args
  spec=$(row_command "$row") || { echo "unknown row '$row'; rows: ${ROWS[*]}" >&2; return 2; }
  runner=${spec%%|*}; args=${spec#*|}
  if grep -q "^$row " "$LOG" 2>/dev/null; then
    echo "skip $row (in $LOG)"; return 0
  fi
  case $runner in
    benchmarl) [ -f "$BENCHMARL_VENV/bin/activate" ] || {
                 echo "skip $row: no venv at BENCHMARL_VENV=$BENCHMARL_VENV (see scripts/bench_benchmarl.py)"; return 0; } ;;
    jaxmarl)   [ -n "$JAXMARL" ] && [ -f "$JAXMARL_VENV/bin/activate" ] || {
                 echo "skip $row: set JAXMARL to a JaxMARL checkout and JAXMARL_VENV to its venv (see scripts/bench_jaxmarl.py)"; return 0; } ;;
  esac
  echo "run $row: $(shown "$runner" "$args")"
  local out="$OUT/$row.out" commit="" status
  # word splitting of $args is wanted: it holds the command's arguments
  # shellcheck disable=SC2086
  case $runner in
    mappo)     commit="$(git rev-parse --short HEAD 2>/dev/null) "
               ( activate "$MAPPO_VENV"; python scripts/bench_run.py $args ) > "$out" 2>&1 ;;
    benchmarl) ( activate "$BENCHMARL_VENV" && python scripts/bench_benchmarl.py $args ) > "$out" 2>&1 ;;
    jaxmarl)   ( activate "$JAXMARL_VENV" && python scripts/bench_jaxmarl.py --jaxmarl "$JAXMARL" $args ) > "$out" 2>&1 ;;
  esac
  status=$?
  if [ $status -eq 0 ]; then
    echo "$row $(date +%H:%M) $commit$(tail -1 "$out")" | tee -a "$LOG"
  else
    echo "# $row $(date +%H:%M) failed (exit $status), output in $out" | tee -a "$LOG"
  fi
}

if [ "${1:-}" = "--list" ]; then
  for row in "${ROWS[@]}"; do
    spec=$(row_command "$row")
    printf '%-22s %s\n' "$row" "$(shown "${spec%%|*}" "${spec#*|}")"
  done
  exit 0
fi
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,/^set /p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  exit 0
fi

mkdir -p "$OUT"
if [ ! -s "$LOG" ]; then  # the machine, once, at the top of a new log
  cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
  echo "# $(date '+%Y-%m-%d %H:%M'), $(nproc) cores, ${cpu:-unknown CPU}" >> "$LOG"
fi
[ $# -gt 0 ] || set -- "${ROWS[@]}"
for row in "$@"; do
  run_row "$row" || exit $?
done
