"""The entropy lower bound and the path likelihood bound against closed forms.

With an affine control u_n(x) = c_n x + k_n (per dimension) the denoising chain is a linear-Gaussian AR
process, so every quantity has a closed form (derivations in docs/algorithm.md, section 4):

* the marginal pi_x = N(m_N, v_N) with m_{n+1} = A_n m_n + eta_n k_n, v_{n+1} = A_n^2 v_n + 2 eta_n,
  A_n = 1 - eta_n / sigma^2 + eta_n c_n;
* the expected entropy bound l = E_F[sum log b - sum log f - log p_0];
* the expected path bound E_b[log p_0 + sum log f - sum log b] for a given x_N.

Four controls: zero (the authors' initial policy), a constant shift (the noising chain is then a poor
reversal, so both bounds are visibly loose), a contracting one (the action entropy falls well below the
prior's, so sign errors in the log-ratio cannot hide behind E[log ratio] ~ 0), and the prior-stationary linear control
c_n = (sqrt(1 - 2 eta_n / sigma^2) - 1 + eta_n / sigma^2) / eta_n, which keeps every x_n ~ N(0, sigma^2).
For the last one the exact reversal kernel is N(sqrt(1 - 2h) x', 2 eta) with h = eta / sigma^2 against the
noising kernel N((1 - h) x', 2 eta): the chains are each other's reversal up to O(h^2) in the mean, and
the entropy gap is exactly sum_{n,i} (sqrt(1 - 2h) - (1 - h))^2 sigma^2 / (4 eta) ~ sum h^3 / 16 (< 1e-4 here).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dime_offline.nets.diffusion import DiffusionPolicy, tanh_log_abs_det

SIGMA = 2.5
N_STEPS = 16
OBS_DIM = 3
ACT_DIM = 2


class AffineControl(nn.Module):
    """Stand-in for the score net: u_n(x) = c_n * x + k_n, with c and k of shape (N, d)."""

    def __init__(self, c: torch.Tensor, k: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("c", c)
        self.register_buffer("k", k)

    def time_part(self, steps: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.c, self.k], dim=-1)  # (N, d, 2)

    def prepare(self, obs: torch.Tensor, steps: torch.Tensor, time_part: torch.Tensor | None = None) -> torch.Tensor:
        if time_part is not None:  # gathered per row: (K, B, d, 2)
            return time_part
        coeffs = self.time_part(steps)
        return coeffs[:, None].expand(len(steps), obs.shape[0], *coeffs.shape[1:])

    def fused_hidden_layers(self, dtype: torch.dtype) -> None:
        return None  # nothing to fuse

    def control(self, x: torch.Tensor, cond: torch.Tensor, fused: None = None) -> torch.Tensor:
        return cond[..., 0] * x + cond[..., 1]


def make_policy(control: str) -> tuple[DiffusionPolicy, np.ndarray, np.ndarray, np.ndarray]:
    """A policy with two dimensions of different friction; returns (policy, eta, c, k) as float64 arrays."""
    torch.manual_seed(0)
    policy = DiffusionPolicy(OBS_DIM, ACT_DIM, n_steps=N_STEPS, prior_std=SIGMA, score_hidden=(32,), n_frequencies=8, time_hidden=8)
    with torch.no_grad():
        policy.raw_friction.copy_(torch.log(torch.expm1(torch.tensor([1.0, 0.5]))))  # g = 1 and 0.5
    eta = policy.step_sizes().detach().double().numpy()
    if control == "zero":
        c, k = np.zeros_like(eta), np.zeros_like(eta)
    elif control == "shift":
        c, k = np.zeros_like(eta), np.full_like(eta, 3.0)
    elif control == "contract":
        c, k = np.full_like(eta, -2.0), np.full_like(eta, 1.0)
    elif control == "stationary":
        h = eta / SIGMA**2
        c, k = (np.sqrt(1.0 - 2.0 * h) - 1.0 + h) / eta, np.zeros_like(eta)
    else:
        raise ValueError(control)
    policy.score_net = AffineControl(torch.tensor(c, dtype=torch.float32), torch.tensor(k, dtype=torch.float32))
    return policy, eta, c, k


def marginal(eta: np.ndarray, c: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Means (N+1, d), variances (N+1, d), and the per-step coefficients A (N, d), decay a (N, d)."""
    a = 1.0 - eta / SIGMA**2
    big_a = a + eta * c
    m = [np.zeros(eta.shape[1])]
    v = [np.full(eta.shape[1], SIGMA**2)]
    for n in range(eta.shape[0]):
        m.append(big_a[n] * m[-1] + eta[n] * k[n])
        v.append(big_a[n] ** 2 * v[-1] + 2.0 * eta[n])
    return np.array(m), np.array(v), big_a, a


def analytic_entropy_and_bound(eta: np.ndarray, c: np.ndarray, k: np.ndarray) -> tuple[float, float]:
    """(H(pi_x), E[l]) for the pre-tanh chain. Kernel normalisers of log b and log f cancel (same variance)."""
    m, v, big_a, a = marginal(eta, c, k)
    entropy = float(0.5 * np.log(2 * np.pi * np.e * v[-1]).sum())
    # x_n - a x_{n+1} = x_n (1 - a A) - a eta k - a sqrt(2 eta) eps
    resid_mean = m[:-1] * (1 - a * big_a) - a * eta * k
    resid_var = v[:-1] * (1 - a * big_a) ** 2 + a**2 * 2 * eta
    expected_log_b_minus_log_f = (0.5 - 0.5 * (resid_var + resid_mean**2) / (2 * eta)).sum()
    prior_entropy = 0.5 * ACT_DIM * math.log(2 * math.pi * math.e * SIGMA**2)
    return entropy, float(expected_log_b_minus_log_f + prior_entropy)


def analytic_path_bound(eta: np.ndarray, c: np.ndarray, k: np.ndarray, x_final: np.ndarray) -> tuple[float, float]:
    """(exact log pi_x(x_N), E_b[log p_0 + sum log f - sum log b]) for one pre-tanh point x_N (d,)."""
    m, v, big_a, a = marginal(eta, c, k)
    exact = float((-0.5 * (x_final - m[-1]) ** 2 / v[-1] - 0.5 * np.log(2 * np.pi * v[-1])).sum())
    mu, w = x_final.copy(), np.zeros_like(x_final)
    expected = 0.0
    for n in reversed(range(eta.shape[0])):
        # x_n = a x_{n+1} + sqrt(2 eta) xi;  x_{n+1} - A x_n - eta k = x_{n+1} (1 - A a) - A sqrt(2 eta) xi - eta k
        f_mean = mu * (1 - big_a[n] * a[n]) - eta[n] * k[n]
        f_var = w * (1 - big_a[n] * a[n]) ** 2 + big_a[n] ** 2 * 2 * eta[n]
        expected += (0.5 - 0.5 * (f_var + f_mean**2) / (2 * eta[n])).sum()
        mu, w = a[n] * mu, a[n] ** 2 * w + 2 * eta[n]
    expected += (-0.5 * (mu**2 + w) / SIGMA**2 - 0.5 * np.log(2 * np.pi * SIGMA**2)).sum()
    return exact, float(expected)


def pre_tanh_bound_samples(policy: DiffusionPolicy, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample pre-tanh entropy-bound estimates -(R + T) - sum log(1 - tanh^2(x_N)), and x_N."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        s = policy.sample(torch.zeros(n_samples, OBS_DIM), generator=gen)
    return -(s.running_cost + s.terminal_cost) - tanh_log_abs_det(s.pre_tanh), s.pre_tanh


@pytest.mark.parametrize("control", ["zero", "shift", "contract", "stationary"])
def test_monte_carlo_entropy_bound_matches_closed_form_and_is_below_entropy(control: str) -> None:
    policy, eta, c, k = make_policy(control)
    entropy, bound = analytic_entropy_and_bound(eta, c, k)
    samples, _ = pre_tanh_bound_samples(policy, 40_000)
    mc, se = samples.double().mean().item(), samples.double().std().item() / math.sqrt(len(samples))
    assert abs(mc - bound) < 4 * se + 1e-3, (mc, bound, se)
    assert bound <= entropy + 1e-9
    assert mc < entropy + 4 * se
    gap = entropy - bound
    if control == "shift":
        assert gap > 0.5  # the fixed noising chain cannot undo the drift: visibly loose
    if control == "contract":
        assert entropy < 0.5 * ACT_DIM * math.log(2 * math.pi * math.e * SIGMA**2) - 1.0
    if control == "stationary":
        h = eta / SIGMA**2
        derived_gap = float(((np.sqrt(1 - 2 * h) - (1 - h)) ** 2 * SIGMA**2 / (4 * eta)).sum())
        assert derived_gap < 1e-4
        assert gap == pytest.approx(derived_gap, abs=1e-9)


def test_bound_is_tight_per_sample_when_chains_are_reversals() -> None:
    """Stationary control: each sample's bound equals -log pi_x(x_N) up to the O(h^2) reversal error."""
    policy, eta, c, k = make_policy("stationary")
    samples, x_final = pre_tanh_bound_samples(policy, 20_000)
    neg_log_marginal = 0.5 * (x_final.double() / SIGMA) ** 2 + 0.5 * math.log(2 * math.pi * SIGMA**2)
    difference = samples.double() - neg_log_marginal.sum(-1)
    assert difference.mean().abs().item() < 2e-3
    assert difference.std().item() < 0.05  # the per-sample log weight is (nearly) constant
    entropy, _ = analytic_entropy_and_bound(eta, c, k)
    assert samples.double().mean().item() == pytest.approx(entropy, abs=0.04)  # ~4 standard errors of the 20k-sample mean


def test_initial_network_policy_is_the_zero_control_chain() -> None:
    """The real score net starts with last-layer weights 1e-8, i.e. (numerically) the zero-control case."""
    torch.manual_seed(0)
    policy = DiffusionPolicy(OBS_DIM, ACT_DIM, n_steps=N_STEPS, prior_std=SIGMA)
    eta = policy.step_sizes().detach().double().numpy()
    _entropy, bound = analytic_entropy_and_bound(eta, np.zeros_like(eta), np.zeros_like(eta))
    samples, x_final = pre_tanh_bound_samples(policy, 6_000)
    se = samples.double().std().item() / math.sqrt(len(samples))
    assert samples.double().mean().item() == pytest.approx(bound, abs=4 * se + 1e-3)
    _, v, _, _ = marginal(eta, np.zeros_like(eta), np.zeros_like(eta))
    assert x_final.var(0).double().numpy() == pytest.approx(v[-1], rel=0.08)


def test_squashed_bound_is_below_squashed_entropy() -> None:
    """With the tanh correction: E[-(R + T)] <= H(pi_a) = H(pi_x) + E[sum log(1 - tanh^2(x_N))]."""
    policy, eta, c, k = make_policy("stationary")
    m, v, _, _ = marginal(eta, c, k)
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)  # E over N(m, v) of log(1 - tanh^2)
    log_det = sum(
        float((weights * (2 * (np.log(2) - x - np.logaddexp(0, -2 * x)))).sum() / weights.sum())
        for x in (m[-1][i] + np.sqrt(v[-1][i]) * nodes for i in range(ACT_DIM))
    )
    entropy_x, _ = analytic_entropy_and_bound(eta, c, k)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        s = policy.sample(torch.zeros(40_000, OBS_DIM), generator=gen)
    bound = -(s.running_cost + s.terminal_cost).double()
    se = bound.std().item() / math.sqrt(len(bound))
    assert bound.mean().item() < entropy_x + log_det + 4 * se
    assert bound.mean().item() == pytest.approx(entropy_x + log_det, abs=4 * se + 1e-3)  # tight here


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_tanh_correction_matches_numerical_jacobian(dtype: torch.dtype) -> None:
    x = torch.tensor([-12.0, -3.0, -0.5, 0.0, 0.7, 2.0, 8.0], dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(torch.tanh, x)
    _, reference = torch.linalg.slogdet(jacobian)
    value = tanh_log_abs_det(x.to(dtype)).double()
    assert torch.isfinite(value)
    assert value.item() == pytest.approx(reference.item(), rel=1e-6)


@pytest.mark.parametrize(
    ("control", "scored_steps"),
    [("zero", None), ("shift", None), ("contract", None), ("stationary", None), ("shift", 4), ("contract", 5), ("shift", 1)],
)
def test_path_likelihood_bound_is_a_valid_bound_with_the_derived_expectation(control: str, scored_steps: int | None) -> None:
    """Scoring K of the N kernels (one per stratum, scaled by N / K; K = 5 leaves unequal strata) keeps
    the expectation: the Monte-Carlo mean still equals the closed form."""
    policy, eta, c, k = make_policy(control)
    actions = torch.tensor([[0.3, -0.6], [0.95, 0.1], [-0.2, 0.0]])
    n_paths = 20_000
    gen = torch.Generator().manual_seed(4)
    rows = []
    with torch.no_grad():
        for a in actions:
            many = policy.path_log_likelihood_bound(
                torch.zeros(n_paths, OBS_DIM), a.expand(n_paths, ACT_DIM), generator=gen, scored_steps=scored_steps
            ).double()
            rows.append((a, many.mean().item(), many.std().item() / math.sqrt(n_paths)))
    for a, mc, se in rows:
        x_final = np.arctanh(a.double().numpy())
        log_det = float((2 * (np.log(2) - x_final - np.logaddexp(0, -2 * x_final))).sum())
        exact_x, expected_x = analytic_path_bound(eta, c, k, x_final)
        exact, expected = exact_x - log_det, expected_x - log_det  # log pi_a(a) = log pi_x(x) - log|det|
        assert mc == pytest.approx(expected, abs=4 * se + 2e-3), (a, mc, expected)
        assert expected <= exact + 1e-9
        if control == "shift":
            assert exact - expected > 0.2
        if control == "stationary":
            assert exact - expected < 1e-3


@pytest.mark.parametrize("scored_steps", [None, 3])
def test_path_bound_gradient_reaches_score_net_step_size_and_friction(scored_steps: int | None) -> None:
    torch.manual_seed(0)
    policy = DiffusionPolicy(OBS_DIM, ACT_DIM, n_steps=N_STEPS, score_hidden=(32, 32), n_frequencies=8, time_hidden=8)
    obs, actions = torch.randn(64, OBS_DIM), torch.rand(64, ACT_DIM) * 2 - 1
    policy.path_log_likelihood_bound(obs, actions, n_paths=2, scored_steps=scored_steps).mean().backward()
    for name, p in policy.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert policy.score_net.out.weight.grad.abs().sum() > 0
    assert policy.raw_dt.grad.abs() > 0
    assert (policy.raw_friction.grad.abs() > 0).all()


def test_scoring_some_kernels_reads_the_same_path_and_scores_each_step_equally_often() -> None:
    """K >= N is the full bound, bit for bit. With K < N the noising path is the one the full bound
    scores (its noise is drawn first), so the difference is the step subsampling alone: zero on
    average (the gathered network inputs are right) and each step is scored with probability K / N."""
    torch.manual_seed(0)
    policy = DiffusionPolicy(OBS_DIM, ACT_DIM, n_steps=N_STEPS, score_hidden=(32, 32), n_frequencies=8, time_hidden=8)
    with torch.no_grad():
        policy.score_net.out.weight.normal_(0.0, 0.3)  # a real network's control, not the near-zero init
    obs, actions = torch.randn(4000, OBS_DIM), torch.rand(4000, ACT_DIM) * 1.8 - 0.9

    def bound(scored_steps: int | None) -> torch.Tensor:
        with torch.no_grad():
            return policy.path_log_likelihood_bound(obs, actions, generator=torch.Generator().manual_seed(7), scored_steps=scored_steps).double()

    full = bound(None)
    assert torch.equal(bound(N_STEPS), full) and torch.equal(bound(N_STEPS + 3), full)
    for k in (1, 4, 6):
        difference = bound(k) - full
        assert difference.std() > 1e-3  # it does subsample
        assert abs(difference.mean()) < 4 * difference.std() / math.sqrt(len(difference))
        steps = policy._stratified_steps(k, 20_000, torch.Generator().manual_seed(1), torch.device("cpu"))
        share = torch.bincount(steps.flatten(), minlength=N_STEPS).double() / 20_000
        assert torch.allclose(share, torch.full((N_STEPS,), k / N_STEPS, dtype=torch.float64), atol=0.015)
        if N_STEPS % k == 0:  # equal strata: one step from each
            assert torch.equal(steps // (N_STEPS // k), torch.arange(k)[:, None].expand(k, 20_000))
