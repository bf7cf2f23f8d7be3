"""dime-offline: offline-to-online reinforcement learning with DIME diffusion policies."""

__version__ = "0.1.0"
