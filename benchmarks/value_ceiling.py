"""Are a checkpoint's critics clipped at the top of their value support? Rolls out the checkpoint's
deterministic policy for one episode and reads its critics on the states it visits: their mean value
against the episode's discounted return-to-go, and their mass on the top atom (docs/benchmarks.md
"The value support's ceiling online").

    python benchmarks/value_ceiling.py cache/hc20k/ft-s0/checkpoint cache/hc20k/rlpd-s0/checkpoint --env HalfCheetah-v4
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch

from dime_offline.checkpoints import load_checkpoint


def probe(checkpoint: str, env_id: str, seed: int, horizon_rows: int) -> dict[str, float]:
    agent, cfg, _ = load_checkpoint(checkpoint)
    env = gym.make(env_id)
    obs, _ = env.reset(seed=seed)
    visited, rewards = [], []
    done = False
    while not done:
        action = agent.act(np.asarray(obs, np.float32), deterministic=True)
        visited.append(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(float(reward))
        done = terminated or truncated
    states = np.asarray(visited, np.float32)
    actions = agent.act(states, deterministic=True)
    with torch.no_grad():
        agent.critic.eval()
        probs = agent.critic(agent.normalize_obs(torch.as_tensor(states)), torch.as_tensor(actions)).softmax(-1)
    to_go, running = np.zeros(len(rewards)), 0.0
    for i in range(len(rewards) - 1, -1, -1):
        running = rewards[i] + cfg.gamma * running
        to_go[i] = running
    return {
        "v_min": cfg.v_min, "v_max": cfg.v_max, "episode_return": float(np.sum(rewards)),
        "mean_value": float((probs @ agent.critic.support).mean()),
        "return_to_go": float(to_go[:horizon_rows].mean()),  # rows far from the cut, whose values it does not bias
        "top_atom_mass": float(probs[..., -1].mean()), "top5_atom_mass": float(probs[..., -5:].sum(-1).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--env", required=True)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--horizon-rows", type=int, default=500, help="rows whose return-to-go is averaged")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for checkpoint in args.checkpoints:
        r = probe(checkpoint, args.env, args.seed, args.horizon_rows)
        print(f"{checkpoint}: support [{r['v_min']:.0f}, {r['v_max']:.0f}], episode return {r['episode_return']:.0f};"
              f" critics' mean value {r['mean_value']:.1f}, discounted return-to-go (first {args.horizon_rows} rows)"
              f" {r['return_to_go']:.1f}; mass on the top atom {r['top_atom_mass']:.3f} (top 5: {r['top5_atom_mass']:.3f})")


if __name__ == "__main__":
    main()
