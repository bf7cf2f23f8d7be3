"""Rewards: safe expressions (parsed, never eval'd), columns and Python callables."""

from __future__ import annotations

import numpy as np
import pytest
from telemetry_frames import T0_US, base_spec, long_frame

from dime_offline.converters import telemetry_to_transitions
from dime_offline.converters.reward import parse_expression
from dime_offline.errors import ConfigError, DataError

VARS = ["x", "y", "next_x", "terminated", "dt"]


def _frame(extra: list[tuple] | None = None):
    rows = [(t, "PV", float(t)) for t in range(0, 101, 2)]
    rows += [(t + 1, "SP", float(t // 10)) for t in range(0, 100, 10)]
    return long_frame(rows + (extra or []))


@pytest.mark.parametrize(
    "expression, construct",
    [
        ("x.real", "attribute access"),
        ("x.__class__", "attribute access"),
        ("().__class__.__bases__[0]", "subscripts"),
        ("__import__('os').system('echo hacked')", "attribute access"),
        ("__import__('os')", "calling '__import__'"),
        ("open('/etc/passwd')", "calling 'open'"),
        ("eval('1')", "calling 'eval'"),
        ("x[0]", "subscripts"),
        ("(lambda: 1)()", "calling an expression"),
        ("lambda: 1", "lambdas"),
        ("[v for v in (1, 2)]", "comprehensions"),
        ("__builtins__", "dunder name"),
        ("'abc'", "constant"),
        ("abs(x=1)", "keyword arguments"),
        ("(y := 3)", "assignments"),
        ("x if y else x.imag", "attribute access"),
        ("abs", "without a call"),
        ("x @ y", "MatMult"),
    ],
)
def test_unsafe_constructs_are_rejected_by_name(expression: str, construct: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_expression(expression, VARS)
    line = err.value.one_line()
    assert "reward.expression" in line and construct in line


def test_unknown_names_and_syntax_errors_are_clear() -> None:
    with pytest.raises(ConfigError, match="unknown name 'z'.*available: dt, next_x"):
        parse_expression("z + 1", VARS)
    with pytest.raises(ConfigError, match="not a valid expression"):
        parse_expression("x +", VARS)
    with pytest.raises(ConfigError, match=r"clip\(\) takes 3"):
        parse_expression("clip(x, 1)", VARS)


def test_allowed_arithmetic_is_vectorised() -> None:
    env = {"x": np.array([1.0, -2.0, 3.0]), "y": np.array([0.0, 1.0, 0.0]), "next_x": np.array([2.0, 2.0, 2.0]),
           "terminated": np.array([0.0, 0.0, 1.0]), "dt": np.float64(10.0)}
    f = parse_expression("-abs(next_x - x) - 0.5 * y**2 + (x > 0) * 10 - 100 * terminated + max(x, y, 0) / dt", VARS)
    out = f(env)
    expected = -np.abs(env["next_x"] - env["x"]) - 0.5 * env["y"] ** 2 + (env["x"] > 0) * 10 - 100 * env["terminated"]
    expected += np.maximum(np.maximum(env["x"], env["y"]), 0) / 10.0
    np.testing.assert_allclose(out, expected)
    g = parse_expression("x if y else -x", VARS)
    np.testing.assert_allclose(g(env), [-1.0, -2.0, -3.0])
    h = parse_expression("clip(x, -1, 1) + sqrt(abs(x)) + (0 < x < 2) + (not y) + (x > 0 and y == 0)", VARS)
    np.testing.assert_allclose(h(env), [1 + 1 + 1 + 1 + 1, -1 + np.sqrt(2) + 0 + 0 + 0, 1 + np.sqrt(3) + 0 + 1 + 1])


def test_expression_rewards_use_next_state_and_action_moves() -> None:
    spec = base_spec(reward={"expression": "-abs(next_PV - 10 * SP) - delta_SP**2"})
    data, _report = telemetry_to_transitions(_frame(), spec)
    expected = -np.abs(data.next_obs[:, 0] - 10 * data.action[:, 0])
    prev = np.r_[data.action[0, 0], data.action[:-1, 0]]
    expected -= (data.action[:, 0] - prev) ** 2
    np.testing.assert_allclose(data.reward, expected)
    assert data.metadata.reward_description == "-abs(next_PV - 10 * SP) - delta_SP**2"


def test_a_bad_reward_spec_fails_when_the_spec_is_loaded() -> None:
    with pytest.raises(ConfigError, match="attribute access"):
        telemetry_to_transitions(_frame(), base_spec(reward={"expression": "PV.__class__"}))
    with pytest.raises(ConfigError, match="exactly one of column, expression"):
        telemetry_to_transitions(_frame(), base_spec(reward={}))


def test_reward_column_is_the_tag_over_the_interval() -> None:
    cost = [(t + 0.5, "COST", float(t)) for t in range(0, 101, 5)]
    spec = base_spec(reward={"column": "COST"})
    data, report = telemetry_to_transitions(_frame(cost), spec)
    # Time-weighted mean of the held cost signal over (t, t + 10].
    seconds = (data.timestamp - T0_US) / 1e6
    assert seconds[0] == 0.0  # the reward column is only needed at the step closing the interval
    held = []
    for s in seconds:
        lo, hi = s, s + 10
        pts = [(c[0], c[2]) for c in cost]
        total = covered = 0.0
        for (t1, v1), (t2, _) in zip(pts, pts[1:] + [(1e9, None)]):
            a, b = max(t1, lo), min(t2, hi)
            if b > a:
                total += v1 * (b - a)
                covered += b - a
        held.append(total / covered)  # the mean over the part of the interval with known data
    np.testing.assert_allclose(data.reward, held, rtol=1e-6)
    assert any(t.role == "reward" for t in report.tags)


def test_python_callable_reward() -> None:
    from dime_offline.converters import TelemetrySpec, spec_from_dict

    spec = spec_from_dict(base_spec())
    spec = TelemetrySpec(**{**spec.__dict__, "reward": type(spec.reward)(function=lambda v: v["next_PV"] * 2.0)})
    data, _ = telemetry_to_transitions(_frame(), spec)
    np.testing.assert_allclose(data.reward, data.next_obs[:, 0] * 2.0)
    assert data.metadata.reward_description.startswith("python function")


def test_non_finite_rewards_are_reported_with_time() -> None:
    with pytest.raises(DataError, match="reward is not finite at 2024-01-01T00:00:00"):
        telemetry_to_transitions(_frame(), base_spec(reward={"expression": "log(PV - PV)"}))


def test_tag_names_with_dots_and_dashes_work_in_expressions() -> None:
    rows = [(t, "TIC101.PV", float(t)) for t in range(0, 101, 2)]
    rows += [(t + 1, "TIC101.SP", 50.0) for t in range(0, 100, 10)]
    rows += [(t + 1, "FV-7.OP", float(t // 10)) for t in range(0, 100, 10)]
    spec = base_spec(observations=[{"tag": "TIC101.PV", "alignment": "stepped"}],
                     extra_state=[{"tag": "TIC101.SP", "alignment": "stepped"}],
                     actions=[{"tag": "FV-7.OP", "alignment": "stepped", "low": 0.0, "high": 100.0}],
                     reward={"expression": "-abs(next_TIC101.PV - TIC101.SP) - 0.1 * 'delta_FV-7.OP'**2"})
    data, _ = telemetry_to_transitions(long_frame(rows), spec)
    expected = -np.abs(data.next_obs[1:, 0] - 50.0) - 0.1 * np.diff(data.action[:, 0]) ** 2
    np.testing.assert_allclose(data.reward[1:], expected, rtol=1e-6)
    same = base_spec(**{**spec, "reward": {"expression": '-abs("next_TIC101.PV" - TIC101_SP) - 0.1 * delta_FV_7_OP**2'}})
    np.testing.assert_array_equal(telemetry_to_transitions(long_frame(rows), same)[0].reward, data.reward)
    with pytest.raises(ConfigError, match="unknown tag 'TIC102.PV'"):
        telemetry_to_transitions(long_frame(rows), {**spec, "reward": {"expression": "-abs(TIC102.PV)"}})
    with pytest.raises(ConfigError, match="'TI-1.PV' is not a tag the spec reads"):
        telemetry_to_transitions(long_frame(rows), {**spec, "reward": {"expression": "-abs('TI-1.PV')"}})


def test_a_reward_function_is_accepted_in_a_dict_spec() -> None:
    data, _ = telemetry_to_transitions(_frame(), base_spec(reward={"function": lambda v: -v["next_PV"]}))
    np.testing.assert_allclose(data.reward, -data.next_obs[:, 0])
    with pytest.raises(ConfigError, match="reward.function"):
        telemetry_to_transitions(_frame(), base_spec(reward={"function": "os.system"}))
