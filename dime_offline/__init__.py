"""dime-offline: offline-to-online reinforcement learning with DIME diffusion policies."""

__version__ = "0.1.0"

__all__ = ["load_policy"]


def __getattr__(name: str):  # lazy: `import dime_offline` stays free of torch until a policy is loaded
    if name == "load_policy":
        from dime_offline.policy import load_policy

        return load_policy
    raise AttributeError(f"module 'dime_offline' has no attribute {name!r}")
