"""The PyTorch side of gradprobe: the monitor (capture) and torch-only helpers.

Importing this package imports torch; ``import gradprobe`` alone does not.
"""

from __future__ import annotations

from gradprobe.torch.monitor import Monitor, watch

__all__ = ["Monitor", "watch"]
