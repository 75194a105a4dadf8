"""Logger backends (metrics.jsonl, CSV, TensorBoard) and evaluation during training."""
import csv
import json

import pytest
import torch

import mappo
from mappo.registries import check_registered
from tests.helpers import strip_timing, tiny
from tests.toy_envs import EarlyExitEnv

HISTORY_KEYS = {"iteration", "env_steps", "sps", "policy_loss", "value_loss", "entropy", "approx_kl",
                "clip_fraction", "kl_coef", "explained_variance", "lr"}
EVAL_KEYS = {"eval/team_return_mean", "eval/agent_return_mean", "eval/episode_length_mean", "eval/return_mean/scout",
             "eval/return_mean/agent_1", "eval/return_mean/agent_2"}


def rows(run_dir):
    return [json.loads(line) for line in open(run_dir / "metrics.jsonl")]


def test_csv_and_tensorboard_hold_the_history_keys(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    cfg = tiny(total_steps=200, loggers=["csv", "tensorboard"], eval_every=2, eval_episodes=2)
    with mappo.Trainer(EarlyExitEnv, cfg) as trainer:
        history = trainer.train(run_dir=str(run_dir))
    keys = set().union(*history)
    assert HISTORY_KEYS | EVAL_KEYS | {"team_return"} <= keys
    with open(run_dir / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert set(table[0]) == keys and len(table) == 5  # every key, one row per iteration
    assert [int(r["iteration"]) for r in table] == [1, 2, 3, 4, 5]
    assert [r["eval/team_return_mean"] != "" for r in table] == [False, True, False, True, False]
    assert float(table[3]["value_loss"]) == pytest.approx(history[3]["value_loss"])
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert keys - {"env_steps"} <= scalars  # env_steps is the x-axis
    assert [e.step for e in events.Scalars("eval/team_return_mean")] == [80, 160]
    assert events.Scalars("value_loss")[-1].value == pytest.approx(history[-1]["value_loss"], rel=1e-6)


def test_unknown_logger_is_an_error_before_any_env_is_built():
    with pytest.raises(ValueError, match="'loggers' has unknown name"):
        check_registered(mappo.Config(loggers=["stdout"]))
    with pytest.raises(TypeError, match="'loggers' must be a list of names"):
        mappo.Trainer(EarlyExitEnv, tiny(loggers="csv"))


def test_evaluation_metrics_at_the_right_iterations_and_best_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    with mappo.Trainer(EarlyExitEnv, tiny(total_steps=240, eval_every=2, eval_episodes=3)) as trainer:
        trainer.train(run_dir=str(run_dir))
    logged = rows(run_dir)
    assert [EVAL_KEYS <= set(r) for r in logged] == [False, True, False, True, False, True]
    evals = {r["iteration"]: r["eval/team_return_mean"] for r in logged if "eval/team_return_mean" in r}
    best_iteration = max(evals, key=lambda i: (evals[i], -i))  # the first of the best
    best = torch.load(run_dir / "best.pt", weights_only=True)
    assert best["best_eval"] == pytest.approx(evals[best_iteration])
    assert best["iteration"] == best_iteration
    assert torch.load(run_dir / "ckpt.pt", weights_only=True)["best_eval"] == pytest.approx(max(evals.values()))
    # the evaluation rows match a fresh evaluation of that checkpoint
    with mappo.Trainer.load(str(run_dir / "best.pt"), EarlyExitEnv) as again:
        assert again.evaluate(episodes=3)["team_return_mean"] == pytest.approx(evals[best_iteration])


@pytest.mark.parametrize("deterministic", [True, False])
def test_resume_stays_exact_with_evaluation_on(tmp_path, deterministic):
    cfg = tiny(total_steps=200, eval_every=2, eval_episodes=2, eval_deterministic=deterministic)
    with mappo.Trainer(EarlyExitEnv, cfg) as trainer:
        straight = strip_timing(trainer.train())
    run_dir = tmp_path / "run"
    with mappo.Trainer(EarlyExitEnv, cfg) as trainer:
        first = strip_timing(trainer.train(total_steps=120, run_dir=str(run_dir)))
    with mappo.Trainer.load(str(run_dir / "ckpt.pt"), EarlyExitEnv) as trainer:
        second = strip_timing(trainer.train())
    assert len(straight) == 5 and "eval/team_return_mean" in straight[1]
    assert first + second == straight


@pytest.mark.parametrize("env", ["pettingzoo", "vmas"])
def test_evaluation_leaves_training_untouched(env):
    """Evaluations run on envs of their own and sample from a forked RNG: the training numbers
    are the same with and without them (a VMAS evaluation env, too, though VMAS shares one random
    state among its envs: envs/vmas_adapter.py keeps each env's own)."""
    if env == "vmas":
        pytest.importorskip("vmas")
        from envs import make_env_fn

        env_fn, size = make_env_fn("vmas/simple_spread", max_steps=4), dict(num_envs=8, rollout_length=10)
    else:
        env_fn, size = EarlyExitEnv, {}
    runs = []
    for eval_every in (0, 1):
        cfg = tiny(total_steps=160, eval_every=eval_every, eval_episodes=2, eval_deterministic=False, **size)
        with mappo.Trainer(env_fn, cfg) as trainer:
            runs.append([{k: v for k, v in r.items() if not k.startswith("eval/")}
                         for r in strip_timing(trainer.train())])
    assert runs[0] == runs[1]


def test_eval_at_start_logs_the_untrained_policy_and_changes_no_training_number(tmp_path):
    """EPyMARL's 41 evaluations include the untrained policy: ``eval_at_start`` adds that row
    (iteration 0, env step 0); the training rows stay exactly as without it."""
    cfg = tiny(total_steps=160, eval_every=1, eval_episodes=2, eval_deterministic=False)
    with mappo.Trainer(EarlyExitEnv, cfg) as trainer:
        plain = strip_timing(trainer.train())
    run_dir = tmp_path / "run"
    with mappo.Trainer(EarlyExitEnv, cfg.replace(eval_at_start=True)) as trainer:
        with_start = strip_timing(trainer.train(run_dir=str(run_dir)))
    first = with_start[0]
    assert first["iteration"] == 0 and first["env_steps"] == 0 and EVAL_KEYS <= set(first)
    assert set(first) == {"iteration", "env_steps"} | EVAL_KEYS | {"eval/agent_return_mean"}
    assert with_start[1:] == plain
    assert rows(run_dir)[0]["iteration"] == 0
    per_agent = [v for k, v in first.items() if k.startswith("eval/return_mean/")]
    assert first["eval/agent_return_mean"] == pytest.approx(sum(per_agent) / len(per_agent))
    # a resumed run does not evaluate the start again
    with mappo.Trainer.load(str(run_dir / "ckpt.pt"), EarlyExitEnv) as trainer:
        assert all(r["iteration"] > 0 for r in trainer.train(total_steps=240))


def test_competing_groups_are_shown_apart_never_summed(tmp_path, capsys, monkeypatch):
    """Two opposing teams: the log lines, the summary and curves.png show each team's return; the
    zero-sum total, which means nothing, is not shown."""
    import mappo.plot
    from tests.toy_envs import TwoTeamEnv

    drawn = []
    real_plot = mappo.plot.plot_groups
    monkeypatch.setattr(mappo.plot, "plot_groups", lambda *a, **k: (drawn.append(k), real_plot(*a, **k)))
    cfg = tiny(groups={"red": ["red_*"], "blue": ["blue_0"]}, total_steps=80, progress=True, log_every=1,
               eval_every=1)
    with mappo.Trainer(TwoTeamEnv, cfg) as trainer:
        trainer.train(run_dir=str(tmp_path / "run"))
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("iter")]
    assert len(lines) == 2 and all(" red " in line and " blue " in line and "eval red" in line and
                                   "eval blue" in line and "team_return" not in line for line in lines)
    summary = out[out.index("run summary"):]
    assert "red return" in summary and "blue return" in summary and "red eval" in summary
    assert "team return" not in summary
    assert drawn[-1]["keys"] == ["red/team_return", "blue/team_return", "eval/red/team_return_mean",
                                 "eval/blue/team_return_mean"]
    assert (tmp_path / "run" / "curves.png").exists()
    from mappo.plot import key_label

    assert [key_label(k) for k in drawn[-1]["keys"]] == ["red, training", "blue, training", "red, evaluation",
                                                         "blue, evaluation"]
    assert key_label("team_return") == "training" and key_label("eval/team_return_mean") == "evaluation"


def test_the_resume_hint_trusts_only_user_code():
    """The end-of-run hint continues a module:callable env's run with --trust-env-code (without it
    --resume refuses to run the user's code); a registry env needs none."""
    from mappo.logger import resume_command

    assert resume_command(tiny(env="mpe/simple_spread"), "runs/a") == "mappo train --resume runs/a"
    assert resume_command(tiny(env="tests.toy_envs:CoordinationEnv"), "runs/b") == \
        "mappo train --resume runs/b --trust-env-code"
