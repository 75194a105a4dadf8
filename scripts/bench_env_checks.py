"""What the env boundary checks (mappo/vector.py, EnvSlot) cost: simple_spread env steps with the
checks on, then with them replaced by no-ops, in one process on one thread, best of 5.

    python scripts/bench_env_checks.py on
    python scripts/bench_env_checks.py off
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from envs import make_env_fn  # noqa: E402
from mappo import vector  # noqa: E402
from mappo.vector import make_vector_env  # noqa: E402
from mappo.spaces import random_actions  # noqa: E402

if len(sys.argv) != 2 or sys.argv[1] not in ("on", "off"):
    print(__doc__.strip() + "\n\nusage: python scripts/bench_env_checks.py on|off")
    sys.exit(0 if sys.argv[1:] in (["-h"], ["--help"]) else 2)
torch.set_num_threads(1)
if sys.argv[1] == "off":  # the boundary checks as no-ops: what they cost
    vector.EnvSlot._check_agents = lambda self, field, names: None
    vector.EnvSlot._check_finite = lambda self, field, rows: None
    vector.EnvSlot._state = lambda self, field: vector.env_state(self.env)
    vector.EnvSlot._write_row = lambda self, field, k, value, out: self.spec.flatten_obs(k, value, out)
vec = make_vector_env(make_env_fn("mpe/simple_spread", N=3, max_cycles=25), 16, 0, torch.device("cpu"), "inprocess")
g = torch.Generator().manual_seed(0)
acts = [random_actions(vec.spec, vec.observe("action_mask"), g) for _ in range(50)]
best = 1e9
for rep in range(5):
    t = time.process_time()
    for i in range(300):
        vec.set_actions(acts[i % 50]); vec.step()
    best = min(best, time.process_time() - t)
print("checks", sys.argv[1], f"{best / (300 * 16) * 1e6:.1f} us per env step (best of 5)")
