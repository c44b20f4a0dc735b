"""The context every transformer forward of driftwatch runs in (embedder, toxicity classifier,
NLI): inference mode, and attention kernels that need no plan per input shape.

PyTorch prefers cuDNN's attention on Hopper GPUs (H100, H200). cuDNN builds an execution plan
for each new input shape and caches it; a monitor's batches take a new shape (rows x padded
tokens) almost every call: building plans took a third (one scoring process) to a half (eight
sharing the GPU) of a process's busy time on an H200.
FlashAttention, memory-efficient attention and the math kernel take any shape as it comes; on
a CPU none of this applies (cuDNN is a GPU library) and the choice is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def inference() -> Iterator[None]:
    """`torch.inference_mode()` with cuDNN's attention left out of SDPA's choice."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with torch.inference_mode(), sdpa_kernel([SDPBackend.FLASH_ATTENTION,
                                              SDPBackend.EFFICIENT_ATTENTION,
                                              SDPBackend.MATH]):
        yield
