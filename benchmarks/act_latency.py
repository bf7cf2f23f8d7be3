"""Latency of one ``act`` call at small batches (1-16 rows), before and after the acting chain of
``nets/acting.py``, in one process with the variants alternating.

Variants, all on the same agent (cpu preset unless ``--preset``, float32 products as ``load_policy``
runs them, HalfCheetah shapes: obs 17, action 6):

* ``before``: the chain as ``act`` ran it before the cache (every call recomputes the step sizes and
  the score net's time conditioning; torch for every step);
* ``training``: ``agent.act`` as a training agent runs it (cached constants, checked against the
  parameters by value on every call; NumPy steps for up to ``acting.SMALL_BATCH_MAX_ROWS`` rows);
* ``torch steps``: ``training`` with the NumPy steps turned off (bare torch steps at every batch), the
  baseline of the NumPy steps;
* ``deployed``: ``agent.act`` with the cache frozen, as ``load_policy`` sets it up (no check);
* ``onnxruntime``: ``load_policy(..., backend="onnxruntime")``'s actions (the policy traced to ONNX,
  one onnxruntime thread), where the ``onnx`` extra is installed.

For each acting mode (``stochastic`` samples, the deterministic ``noise_free`` and ``best_of_k``
modes) and batch size it prints the median ms per call over ``--repeats`` blocks of ``--inner`` calls
(variants alternating block by block) and the largest action difference from ``before`` on the same
noise. The score net's output layer is drawn at random first, so the chain is not the near-prior
chain of an untrained agent. Torch thread counts from ``--threads`` are run one after the other; the
load average is printed before and after each.

    python benchmarks/act_latency.py                       # 1 thread, then 2
    python benchmarks/act_latency.py --threads 1 --batches 1 --repeats 200
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from dime_offline.agent.config import DIMEConfig
from dime_offline.agent.dime import DIMEAgent
from dime_offline.data.spaces import SpaceSpec
from dime_offline.nets import acting
from dime_offline.policy import DeployedPolicy

MODES = ("stochastic", "noise_free", "best_of_k")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@torch.inference_mode()
def act_before(agent: DIMEAgent, obs: np.ndarray, deterministic: bool) -> np.ndarray:
    """``DIMEAgent.act`` as it was before the acting cache: no cached constants, torch steps."""
    x = agent.normalize_obs(torch.as_tensor(obs, dtype=torch.float32))
    if not deterministic:
        action = agent.policy.sample_action(x, generator=agent.act_generator)
    elif agent.cfg.deterministic_act == "best_of_k":
        action = agent._best_of_k(x, agent.cfg.act_candidates)
    else:
        action = agent.policy.sample_action(x, noise_free=True)
    return action.clamp(-1.0, 1.0).cpu().numpy()


def act_after(agent: DIMEAgent, frozen: bool) -> Callable[[np.ndarray, bool], np.ndarray]:
    def act(obs: np.ndarray, deterministic: bool) -> np.ndarray:
        agent.acting_constants.frozen = frozen
        return agent.act(obs, deterministic=deterministic)

    return act


def act_torch_steps(agent: DIMEAgent) -> Callable[[np.ndarray, bool], np.ndarray]:
    """``training`` with every chain on the bare torch steps (no NumPy steps)."""
    def act(obs: np.ndarray, deterministic: bool) -> np.ndarray:
        agent.acting_constants.frozen = False
        applies, acting.small_batch_applies = acting.small_batch_applies, lambda *_: False
        try:
            return agent.act(obs, deterministic=deterministic)
        finally:
            acting.small_batch_applies = applies

    return act


def bench(agent: DIMEAgent, mode: str, batch: int, repeats: int, inner: int) -> dict[str, float]:
    """Median ms per call of each variant (alternating), and each variant's largest difference from 'before'."""
    agent.cfg = dataclasses.replace(agent.cfg, deterministic_act="best_of_k" if mode == "best_of_k" else "noise_free")
    deterministic = mode != "stochastic"
    obs = np.random.default_rng(batch).normal(size=(batch, agent.obs_dim)).astype(np.float32)
    variants: dict[str, Callable[[np.ndarray, bool], np.ndarray]] = {
        "before": lambda o, d: act_before(agent, o, d),
        "training": act_after(agent, frozen=False),
        "torch_steps": act_torch_steps(agent),
        "deployed": act_after(agent, frozen=True),
    }
    if importlib.util.find_spec("onnxruntime") is not None:
        unit_box = SpaceSpec(agent.obs_dim, agent.act_dim, (-1.0,) * agent.act_dim, (1.0,) * agent.act_dim)
        deployed = DeployedPolicy(agent, unit_box, deterministic=deterministic, backend="onnxruntime")
        variants["onnxruntime"] = deployed.act
    out: dict[str, float] = {}
    reference = None
    for name, act in variants.items():  # the same noise for each: reset the acting stream first
        agent.act_generator.manual_seed(0)
        actions = act(obs, deterministic)
        reference = actions if reference is None else reference
        out[f"{name}_diff"] = float(np.abs(actions - reference).max())
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(3):  # warm-up
        for act in variants.values():
            act(obs, deterministic)
    for _ in range(repeats):
        for name, act in variants.items():
            start = time.perf_counter()
            for _ in range(inner):
                act(obs, deterministic)
            times[name].append((time.perf_counter() - start) * 1000.0 / inner)
    for name, values in times.items():
        out[name] = statistics.median(values)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--obs-dim", type=int, default=17)
    parser.add_argument("--act-dim", type=int, default=6)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts, run in turn")
    parser.add_argument("--repeats", type=int, default=60, help="timed blocks per variant")
    parser.add_argument("--inner", type=int, default=10, help="calls per timed block")
    args = parser.parse_args()

    # float32 products, as load_policy runs them (a training agent's critics may use bfloat16)
    agent = DIMEAgent(args.obs_dim, args.act_dim, DIMEConfig.preset(args.preset, matmul_precision="float32"), seed=0)
    with torch.no_grad():  # a non-trivial chain: the output layer starts at 1e-8
        agent.policy.score_net.out.weight.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(1))
    print(f"torch {torch.__version__}, preset {args.preset}, obs {args.obs_dim}, action {args.act_dim}, "
          f"median of {args.repeats} blocks of {args.inner} calls, variants alternating")
    header = (f"{'threads':>7} {'mode':>10} {'batch':>5} {'before ms':>9} {'torch-steps ms':>14} {'training ms':>11} {'deployed ms':>11} "
              f"{'speed-up':>8} {'onnxrt ms':>9} {'speed-up':>8} {'max |diff|':>10}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        print(f"\n{threads} torch thread(s); load before: {load_average()}")
        print(header)
        print("-" * len(header))
        for mode in args.modes:
            for batch in args.batches:
                r = bench(agent, mode, batch, args.repeats, args.inner)
                ort = r.get("onnxruntime", float("nan"))
                diff = max(value for name, value in r.items() if name.endswith("_diff"))
                print(f"{threads:>7} {mode:>10} {batch:>5} {r['before']:>9.3f} {r['torch_steps']:>14.3f} {r['training']:>11.3f} {r['deployed']:>11.3f} "
                      f"{r['before'] / r['deployed']:>7.2f}x {ort:>9.3f} {r['before'] / ort:>7.2f}x {diff:>10.1e}")
        print(f"load after: {load_average()}")
    print("\nbefore: the chain as act ran it before nets/acting.py; torch-steps: training without the NumPy steps; "
          "training: act with the cache checked by value each call; deployed: the frozen cache of load_policy; onnxrt: load_policy(..., backend='onnxruntime') "
          "(nan: the onnx extra is not installed); speed-up = before / deployed and before / onnxrt; max |diff|: "
          "the largest action difference of any variant from before on the same noise.")


if __name__ == "__main__":
    main()
