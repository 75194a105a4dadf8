"""Learning tests: each small env must be learned to a clear margin above random, fixed seed,
under both parameter-sharing modes.  Thresholds sit between random and optimal play."""
import pytest

import mappo
from tests.helpers import tiny
from tests.toy_envs import (CoordinationEnv, ContinuousEnv, EarlyExitEnv, HeterogeneousEnv, MaskedEnv,
                            SacrificeEnv, random_team_return)

# env, training steps, optimal team return, config changes; the test requires closing `FRACTION` of the gap.
# The coordination game rewards only the joint right answer, so a policy that commits early to a
# wrong action for one cue leaves its partner with no signal; a larger entropy bonus keeps both
# exploring (with 0.01, 2 of 8 seed x sharing runs stuck at 13/20; with 0.05, 8 of 8 reached 20).
CASES = {
    "coordination": (CoordinationEnv, 40_000, 20.0, {"entropy_coef": 0.05}),
    "heterogeneous": (HeterogeneousEnv, 30_000, 30.0, {}),
    "early_exit": (EarlyExitEnv, 30_000, 23.0, {}),
    "masked": (MaskedEnv, 20_000, 20.0, {}),
    "continuous": (ContinuousEnv, 40_000, 0.0, {}),
}
FRACTION = 0.7


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: tiny networks gain nothing from more, and a fixed-seed learning result
    must not depend on the machine's core count (with 2 threads, continuous/separate's seed 0
    landed at -16.8 on one version of the code and -0.6 on an arithmetically equivalent one)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_config(steps: int, sharing: str, **extra) -> mappo.Config:
    settings = dict(total_steps=steps, num_envs=4, rollout_length=50, seed=0, vector_mode="inprocess", lr=3e-3,
                    ppo_epochs=8, num_minibatches=2, entropy_coef=0.01, hidden_sizes=[64, 64],
                    parameter_sharing=sharing, progress=False, device="cpu")
    return mappo.Config(**{**settings, **extra})


@pytest.mark.slow
@pytest.mark.parametrize("sharing", ["shared", "separate"])
@pytest.mark.parametrize("case", list(CASES))
def test_learns_above_random(case, sharing):
    env_cls, steps, optimum, extra = CASES[case]
    random_return = random_team_return(env_cls)
    threshold = random_return + FRACTION * (optimum - random_return)
    # The Gaussian policy's outcome on one seed moves with float rounding (see one_thread: seed 0
    # of continuous/separate landed at -16.8 and -0.6 on two arithmetically equivalent versions,
    # and at -25.1 once the weight sets became parameters of their own, while seeds 1 and 2 reach
    # -5.4 and -0.0): it must learn on 2 of 3 seeds.  The other cases must learn on seed 0.
    seeds, needed = ((0, 1, 2), 2) if case == "continuous" else ((0,), 1)
    results = []
    for seed in seeds:
        trainer = mappo.Trainer(env_cls, small_config(steps, sharing, seed=seed, **extra))
        trainer.train()
        results.append(trainer.evaluate(episodes=30, deterministic=True)["team_return_mean"])
        trainer.close()
        print(f"{case}/{sharing} seed {seed}: random {random_return:.2f}, trained {results[-1]:.2f}, "
              f"threshold {threshold:.2f}")
        if sum(r >= threshold for r in results) >= needed:
            break
    assert sum(r >= threshold for r in results) >= needed, results


@pytest.mark.parametrize("dead_agents,low,high", [("leave", 3.9, 4.1), ("team", 9.3, 9.5)])
def test_a_sacrifice_pays_only_when_the_return_runs_on_with_the_team(dead_agents, low, high):
    """SacrificeEnv: a random hero sacrifices early (team return 7.7).  With its own return the
    hero learns to stay (4.0); with the team's return after it leaves, to sacrifice at once (9.4)."""
    for seed in (0, 1):
        with mappo.Trainer(SacrificeEnv, tiny(total_steps=6000, dead_agents=dead_agents, seed=seed)) as trainer:
            trainer.train()
            result = trainer.evaluate(episodes=20)
        assert low <= result["team_return_mean"] <= high, (dead_agents, seed, result)
