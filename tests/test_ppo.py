"""PPO: the arithmetic of rlcal.training.ppo_math against hand-worked examples (each worked in the comments), and the
`trainer: ppo` config. The trainer's own tests (tiny model, CPU) are in tests/test_ppo_train.py."""

from __future__ import annotations

import pytest
import torch

from rlcal.training import ppo_math as pm


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_kl_penalty_rewards_put_the_score_on_the_last_real_token():
    logps = t([[-1.0, -2.0, -3.0], [-0.5, -1.0, 0.0]])
    ref = t([[-1.5, -2.0, -2.0], [-1.0, -1.0, 5.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    rewards = pm.kl_penalty_rewards(t([1.0, -0.5]), logps, ref, mask, kl_coef=0.1)
    # row 0: logp - ref = [0.5, 0, -1] -> -0.1 x = [-0.05, 0, 0.1]; score 1 at token 2 -> [-0.05, 0, 1.1]
    # row 1: logp - ref = [0.5, 0, (masked)] -> [-0.05, 0, 0]; score -0.5 at token 1 (the last real one)
    assert torch.allclose(rewards, t([[-0.05, 0.0, 1.1], [-0.05, -0.5, 0.0]]))


def test_kl_penalty_is_zero_when_the_policy_is_the_reference():
    logps = t([[-1.0, -2.0], [-0.3, -0.7]])
    rewards = pm.kl_penalty_rewards(t([0.25, 2.0]), logps, logps.clone(), t([[1, 1], [1, 1]]), kl_coef=0.5)
    assert torch.equal(rewards, t([[0.0, 0.25], [0.0, 2.0]]))


def test_gae_by_hand():
    rewards, values, mask = t([[0.0, 0.0, 1.0]]), t([[0.5, 0.6, 0.8]]), t([[1, 1, 1]])
    # gamma 1, lam 0.5: delta_2 = 1 - 0.8 = 0.2, A_2 = 0.2; delta_1 = 0.8 - 0.6 = 0.2, A_1 = 0.2 + 0.5 * 0.2 = 0.3;
    # delta_0 = 0.6 - 0.5 = 0.1, A_0 = 0.1 + 0.5 * 0.3 = 0.25; returns = A + V = [0.75, 0.9, 1.0]
    adv, ret = pm.gae(rewards, values, mask, gamma=1.0, lam=0.5)
    assert torch.allclose(adv, t([[0.25, 0.3, 0.2]]))
    assert torch.allclose(ret, t([[0.75, 0.9, 1.0]]))
    # gamma 0.9, lam 1: A_t is the discounted return minus V_t: G = [0.81, 0.9, 1] -> A = [0.31, 0.30, 0.20]
    adv, ret = pm.gae(rewards, values, mask, gamma=0.9, lam=1.0)
    assert torch.allclose(adv, t([[0.31, 0.30, 0.20]]))
    assert torch.allclose(ret, t([[0.81, 0.9, 1.0]]))


def test_gae_skips_masked_tokens():
    # padding after the end: the pad's value (99) must not leak into the last real token's delta
    # t1: delta = 1 - 0.8 = 0.2 = A_1; t0: delta = 0.8 - 0.5 = 0.3, A_0 = 0.3 + 0.5 * 0.2 = 0.4
    adv, ret = pm.gae(t([[0.0, 1.0, 0.0]]), t([[0.5, 0.8, 99.0]]), t([[1, 1, 0]]), gamma=1.0, lam=0.5)
    assert torch.allclose(adv, t([[0.4, 0.2, 0.0]]))
    assert torch.allclose(ret, t([[0.9, 1.0, 0.0]]))
    # a hole in the middle is skipped too: the same numbers as the two-token sequence above
    adv, ret = pm.gae(t([[0.0, 5.0, 1.0]]), t([[0.5, 99.0, 0.8]]), t([[1, 0, 1]]), gamma=1.0, lam=0.5)
    assert torch.allclose(adv, t([[0.4, 0.0, 0.2]]))
    assert torch.allclose(ret, t([[0.9, 0.0, 1.0]]))


def test_whiten_uses_only_the_real_tokens():
    x, mask = t([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]]), t([[1, 1, 1], [1, 0, 0]])
    # real values 1, 2, 3, 4: mean 2.5, variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25
    s = 1.25**0.5
    expected = t([[-1.5 / s, -0.5 / s, 0.5 / s], [1.5 / s, 0.0, 0.0]])
    assert torch.allclose(pm.whiten(x, mask), expected, atol=1e-7)
    assert torch.equal(pm.whiten(t([[3.0, 7.0]]), t([[1, 0]])), t([[0.0, 0.0]]))  # one token: centred only


def test_clipped_policy_loss_by_hand():
    ratios = t([[1.5, 0.5, 1.1, 9.0]])
    logps = ratios.log().requires_grad_(True)
    adv, mask = t([[1.0, 1.0, -2.0, 50.0]]), t([[1, 1, 1, 0]])
    loss, clipfrac = pm.clipped_policy_loss(logps, torch.zeros_like(logps), adv, mask, 0.2, 0.2)
    # token 0: r 1.5, A 1 -> max(-1.5, -1.2) = -1.2 (clipped: no gradient); token 1: r 0.5, A 1 -> max(-0.5, -0.8)
    # = -0.5 (a ratio below the range with A > 0 is not clipped); token 2: r 1.1 in range -> 2.2; token 3 masked.
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 2.2) / 3)
    assert clipfrac.item() == pytest.approx(1 / 3)
    loss.backward()
    # d(-A r)/dlogp = -A r: token 1 -> -0.5 / 3, token 2 -> 2.2 / 3; the clipped and the masked tokens get 0
    assert torch.allclose(logps.grad, t([[0.0, -0.5 / 3, 2.2 / 3, 0.0]]))


def test_clipped_value_loss_by_hand():
    old = t([[0.0, 0.0, 1.0, 0.0]])
    values = t([[0.5, 0.1, 0.7, 9.0]]).requires_grad_(True)
    returns, mask = t([[1.0, 1.0, 0.0, 0.0]]), t([[1, 1, 1, 0]])
    loss, clipfrac = pm.clipped_value_loss(values, old, returns, mask, cliprange=0.2)
    # token 0: V_clip = 0.2: max((0.5-1)^2, (0.2-1)^2) = 0.64 (clipped); token 1: within range: (0.1-1)^2 = 0.81;
    # token 2: V_clip = 1 - 0.2 = 0.8: max(0.49, 0.64) = 0.64 (clipped); token 3 masked. loss = 0.5 * 2.09 / 3
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.81 + 0.64) / 3)
    assert clipfrac.item() == pytest.approx(2 / 3)
    loss.backward()
    # only token 1 moves its value: d/dV 0.5 (V - R)^2 / 3 = (0.1 - 1) / 3; a clipped value gets no gradient
    assert torch.allclose(values.grad, t([[0.0, -0.9 / 3, 0.0, 0.0]]))


def test_masked_mean_ignores_padding_and_survives_an_empty_mask():
    assert pm.masked_mean(t([[1.0, 3.0, 100.0]]), t([[1, 1, 0]])).item() == 2.0
    assert pm.masked_mean(t([[1.0]]), t([[0]])).item() == 0.0


# ---- the `trainer: ppo` recipe section ---------------------------------------------------------------------------

PPO_RAW = {
    "trainer": "ppo",
    "model": {"model_name_or_path": "some/model", "lora_r": 4, "lora_alpha": 8},
    "data": {"source": "qa.jsonl", "split_filter": "rl_train"},
    "reward": {"name": "confidence_target", "threshold": {"choice": [0.5, 0.75]}},
    "training": {"output_dir": "out", "per_device_train_batch_size": 4, "num_generations": 1, "ppo_epochs": 2},
}


def ppo_recipe(overrides=(), **training):
    from rlcal.training.config import parse_recipe

    raw = {**PPO_RAW, "training": {**PPO_RAW["training"], **training}}
    return parse_recipe(raw, list(overrides))


def test_ppo_recipe_maps_epochs_and_minibatches_onto_trl_and_allows_one_generation():
    from rlcal.training.config import PPOConfig

    r = ppo_recipe(["--num_mini_batches", "3", "--gradient_accumulation_steps", "2", "--gamma", "0.9"])
    args = r.training
    assert isinstance(args, PPOConfig) and r.trainer == "ppo"
    assert args.num_generations == 1 and args.gamma == 0.9 and args.lam == 0.95
    # each of the 3 minibatches is one optimizer step of 4 x 2 accumulated completions; 2 passes per rollout
    assert (args.num_iterations, args.steps_per_generation, args.generation_batch_size) == (2, 6, 24)
    assert "scale_rewards" not in r.explicit["training"]  # PPO whitens its own advantages: no scaling key needed
    assert ppo_recipe(num_generations=4).training.num_generations == 4


def test_ppo_recipe_round_trips(tmp_path):
    from rlcal.training.config import load_recipe

    r = ppo_recipe(["--kl_coef", "0.2", "--num_mini_batches", "2"])
    path = tmp_path / "resolved.yaml"
    path.write_text(r.to_yaml())
    again = load_recipe(path)
    assert again.to_dict() == r.to_dict()
    assert (again.training.kl_coef, again.training.steps_per_generation) == (0.2, 2)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--gamma", "1.5"], "gamma and lam must be in [0, 1]"),
        (["--cliprange_value", "0"], "cliprange_value > 0"),
        (["--ppo_epochs", "0"], "ppo_epochs and num_mini_batches must be >= 1"),
        (["--value_head", "separate"], "value_head must be one of shared"),
        (["--beta", "0.1"], "set kl_coef, not beta"),
        (["--num_iterations", "3"], "set ppo_epochs and num_mini_batches"),
        (["--generation_batch_size", "8"], "leave generation_batch_size unset"),
        (["--num_generations", "3"], "num_generations (3) must divide the generation batch"),
        (["--per_device_train_batch_size", "1"], "needs >= 2 completions per process"),
        (["--model.use_peft", "false"], "trainer ppo needs model.use_peft"),
        (["--ppo_epoch", "2"], "did you mean 'ppo_epochs'"),
    ],
)
def test_bad_ppo_settings_are_one_clear_error(overrides, message):
    from rlcal.common.errors import RlcalError

    with pytest.raises(RlcalError) as info:
        ppo_recipe(overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_training_time_calibration_hook_refuses_the_critic():
    from rlcal.common.errors import RlcalError
    from rlcal.training.config import parse_recipe

    raw = {**PPO_RAW, "calibration": {"data": "qa.jsonl", "split_filter": "eval", "confidence": "critic"}}
    with pytest.raises(RlcalError, match="calibration.confidence critic is for `rlcal eval`"):
        parse_recipe(raw)
