"""C51 projection and the distributional soft target: hand-computed cases and properties."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dime_offline.agent.losses import c51_projection, soft_distributional_target

SUPPORT = torch.linspace(0.0, 4.0, 5)  # atoms 0, 1, 2, 3, 4 (spacing 1)


def one_hot(i: int, k: int = 5) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(i), k).float()


def test_half_way_location_splits_mass_evenly() -> None:
    out = c51_projection(one_hot(1)[None], (SUPPORT + 0.5)[None], SUPPORT)
    assert torch.allclose(out, torch.tensor([[0.0, 0.5, 0.5, 0.0, 0.0]]))


def test_hand_computed_mixture() -> None:
    probs = torch.tensor([[0.2, 0.3, 0.5, 0.0, 0.0]])
    shifted = torch.tensor([[0.25, 1.0, 3.9, 2.0, 2.0]])
    # 0.2 at 0.25 -> 0.15 on z0, 0.05 on z1; 0.3 exactly on z1; 0.5 at 3.9 -> 0.05 on z3, 0.45 on z4
    expected = torch.tensor([[0.15, 0.35, 0.0, 0.05, 0.45]])
    assert torch.allclose(c51_projection(probs, shifted, SUPPORT), expected, atol=1e-6)


def test_exact_atom_hits_keep_all_mass_including_the_end_atoms() -> None:
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.15, 0.25]])
    assert torch.allclose(c51_projection(probs, SUPPORT[None], SUPPORT), probs)
    shifted_up = (SUPPORT + 1.0)[None]  # integer shift: every location is an atom; the top one clips to z4
    assert torch.allclose(c51_projection(probs, shifted_up, SUPPORT), torch.tensor([[0.0, 0.1, 0.2, 0.3, 0.4]]))


def test_locations_outside_the_support_are_clipped() -> None:
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.5, 0.5]])
    shifted = torch.tensor([[-7.0, -0.1, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 4.2, 100.0]])
    out = c51_projection(probs, shifted, SUPPORT)
    assert torch.allclose(out, torch.tensor([[1.0, 0, 0, 0, 0], [0, 0, 0, 0, 1.0]]))


def test_projection_broadcasts_over_the_critic_dimension() -> None:
    probs = torch.stack([one_hot(0)[None], one_hot(2)[None]])  # (E=2, B=1, K)
    out = c51_projection(probs, (SUPPORT + 0.25)[None], SUPPORT)
    assert out.shape == (2, 1, 5)
    assert torch.allclose(out[0, 0], torch.tensor([0.75, 0.25, 0, 0, 0]))
    assert torch.allclose(out[1, 0], torch.tensor([0, 0, 0.75, 0.25, 0]))


def test_target_at_terminal_is_the_reward_alone() -> None:
    next_probs = torch.softmax(torch.randn(2, 1, 5), -1)
    target = soft_distributional_target(
        next_probs, torch.tensor([2.5]), torch.tensor([1.0]), torch.tensor([7.0]), 0.3, 0.99, SUPPORT
    )
    assert torch.allclose(target, torch.tensor([[0.0, 0.0, 0.5, 0.5, 0.0]]))


def test_non_terminal_target_subtracts_entropy_bonus_and_averages_projected_critics() -> None:
    p1, p2 = one_hot(1), one_hot(3)
    next_probs = torch.stack([p1[None], p2[None]])
    # r = 0, gamma = 1, alpha * (R' + T') = 1: every atom moves down by exactly one atom
    target = soft_distributional_target(
        next_probs, torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([2.0]), 0.5, 1.0, SUPPORT
    )
    assert torch.allclose(target, torch.tensor([[0.5, 0.0, 0.5, 0.0, 0.0]]))  # mean of the two, not min


def test_entropy_bonus_sign_raises_target_for_high_entropy_actions() -> None:
    next_probs = one_hot(2)[None, None]
    common = (torch.tensor([0.0]), torch.tensor([0.0]))
    low_log_prob = soft_distributional_target(next_probs, *common, torch.tensor([-1.0]), 1.0, 1.0, SUPPORT)
    high_log_prob = soft_distributional_target(next_probs, *common, torch.tensor([1.0]), 1.0, 1.0, SUPPORT)
    assert (low_log_prob @ SUPPORT).item() == 3.0  # r + gamma (z - alpha log pi) = 2 + 1
    assert (high_log_prob @ SUPPORT).item() == 1.0


def test_truncated_rows_still_bootstrap() -> None:
    """Only the terminated flag is used: a non-terminal row bootstraps whatever its truncation."""
    next_probs = one_hot(2)[None, None]
    target = soft_distributional_target(
        next_probs, torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.0]), 1.0, 0.5, SUPPORT
    )
    assert (target @ SUPPORT).item() == 2.0  # 1 + 0.5 * 2


def triangle_kernel_projection(probs: torch.Tensor, shifted: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Independent oracle: m_i = sum_j p_j max(0, 1 - |b_j - i|), b_j the clipped location in atom units."""
    delta = support[1] - support[0]
    b = (shifted.clamp(support[0], support[-1]) - support[0]) / delta
    index = torch.arange(len(support), dtype=probs.dtype)
    weights = (1.0 - (b[..., :, None] - index).abs()).clamp_min(0.0)
    return (probs[..., :, None] * weights).sum(-2)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=2, max_value=21),
    st.integers(min_value=1, max_value=6),
    st.integers(min_value=0, max_value=2**31 - 1),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_projection_conserves_mass_and_matches_the_triangle_kernel(k: int, rows: int, seed: int, frac_exact: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    support = torch.linspace(-3.0, 5.0, k, dtype=torch.float64)
    probs = torch.softmax(3 * torch.randn(rows, k, generator=gen, dtype=torch.float64), -1)
    shifted = -6.0 + 14.0 * torch.rand(rows, k, generator=gen, dtype=torch.float64)  # some outside [v_min, v_max]
    on_atom = torch.rand(rows, k, generator=gen, dtype=torch.float64) < frac_exact
    atoms = support[torch.randint(0, k, (rows, k), generator=gen)]
    shifted = torch.where(on_atom, atoms, shifted)
    out = c51_projection(probs, shifted, support)
    assert (out >= 0).all()
    assert torch.allclose(out.sum(-1), torch.ones(rows, dtype=torch.float64))
    assert torch.allclose(out, triangle_kernel_projection(probs, shifted, support), atol=1e-12)
    inside = shifted.clamp(support[0], support[-1])  # linear interpolation keeps the mean of clipped mass
    assert torch.allclose(out @ support, (probs * inside).sum(-1))
