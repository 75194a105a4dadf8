"""The update's speed paths give the update they replace: minibatches learned in
pieces (``update_rows``) and ``compile=true``."""
import pytest
import torch

import mappo
from tests.helpers import tiny
from tests.toy_envs import CoordinationEnv, EarlyExitEnv, TwoTeamEnv

CASES = {
    "one group": (CoordinationEnv, {}),
    "two groups": (TwoTeamEnv, dict(groups={"red": ["red_*"], "blue": ["blue_0"]})),
    "recurrent, agents leaving": (EarlyExitEnv, dict(recurrent=True, chunk_length=5)),
    "kl objective, popart": (CoordinationEnv, dict(objective="clip_kl", popart=True, value_norm=False)),
}


def _train(env, **fields):
    with mappo.Trainer(env, tiny(total_steps=120, **fields)) as trainer:
        history = trainer.train()
        weights = torch.cat([p.detach().flatten() for p in trainer.learner._params()])
    return weights, history


@pytest.mark.parametrize("case", list(CASES))
def test_learning_a_minibatch_in_pieces_is_the_same_update(case):
    """update_rows=7 cuts each 20-row minibatch into pieces of 1-2 chunks; three iterations of
    training end on the same weights and losses as whole minibatches, up to float rounding."""
    env, fields = CASES[case]
    whole, whole_history = _train(env, update_rows=0, **fields)
    pieces, pieces_history = _train(env, update_rows=7, **fields)
    torch.testing.assert_close(pieces, whole, rtol=1e-5, atol=1e-6)
    for a, b in zip(whole_history, pieces_history):
        for key in ("policy_loss", "value_loss", "entropy", "approx_kl"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key


def test_update_rows_must_be_auto_whole_or_a_count():
    with pytest.raises(ValueError, match="update_rows"):
        tiny(update_rows=-2)


@pytest.mark.parametrize("hidden, rows", [([64, 64], 8192), ([256, 256], 2048), ([128, 512], 1024)])
def test_auto_update_rows_follow_the_widest_layer(hidden, rows):
    with mappo.Trainer(CoordinationEnv, tiny(hidden_sizes=hidden)) as trainer:
        assert trainer.learner.update_rows == rows
    with mappo.Trainer(CoordinationEnv, tiny(hidden_sizes=hidden, update_rows=7)) as trainer:
        assert trainer.learner.update_rows == 7


def test_compile_with_a_recurrent_policy_is_a_clear_error():
    with pytest.raises(ValueError, match="compile.*recurrent=true"):
        tiny(compile=True, recurrent=True)


@pytest.mark.slow
def test_compiled_loss_and_policy_step_match_eager():
    """compile=true runs the loss and the policy step through torch.compile; on the same inputs
    they give eager's loss, gradients and deterministic actions.  (Sampled actions differ:
    compiled code draws its own random numbers.)"""
    from mappo.learner import UPDATE_KEYS

    with mappo.Trainer(CoordinationEnv, tiny(compile=True, hidden_sizes=[8])) as trainer:
        trainer.train()  # collection and update through the compiled paths
        learner, buf = trainer.learner, trainer.buffer
        mb = next(buf.minibatches(1, UPDATE_KEYS + ("obs", "state")))
        grads = []
        for loss in (learner._loss, learner.loss):
            learner.gradients(loss(mb).total)
            grads.append(torch.cat([p.grad.flatten() for p in learner._params() if p.grad is not None]))
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
        obs, mask = buf.obs[0], buf.action_mask[0]
        compiled, _, _ = trainer.policy.act_batch(obs, mask, deterministic=True)
        eager = trainer.actor(obs, mask)[0].sample(deterministic=True)
        assert torch.equal(compiled, eager)


class DenormalProbeEnv(CoordinationEnv):
    """Records, at every step, whether this process flushes denormal floats to zero."""
    flushed: list = []

    def step(self, actions):
        DenormalProbeEnv.flushed.append(float(torch.tensor([1e-39]) * 2) == 0.0)
        return super().step(actions)


@pytest.mark.parametrize("flush", [True, False])
def test_training_flushes_denormals_and_leaves_the_process_as_it_was(flush):
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush denormals")
    DenormalProbeEnv.flushed = []
    with mappo.Trainer(DenormalProbeEnv, tiny(vector_mode="inprocess", flush_denormal=flush)) as trainer:
        trainer.train()
    assert DenormalProbeEnv.flushed and set(DenormalProbeEnv.flushed) == {flush}
    assert float(torch.tensor([1e-39]) * 2) != 0.0  # torch's default again
