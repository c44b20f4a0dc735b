"""The context of every transformer forward: inference mode, SDPA without cuDNN's attention."""

from __future__ import annotations

import torch

from detectors.inference import inference


def test_cudnn_attention_is_left_out_inside_and_restored_after() -> None:
    backends = torch.backends.cuda
    before = (backends.cudnn_sdp_enabled(), backends.flash_sdp_enabled(),
              backends.mem_efficient_sdp_enabled(), backends.math_sdp_enabled())
    with inference():
        assert torch.is_inference_mode_enabled()
        assert not backends.cudnn_sdp_enabled()
        # The kernels that take any shape as it comes stay allowed.
        assert backends.flash_sdp_enabled() and backends.mem_efficient_sdp_enabled()
        assert backends.math_sdp_enabled()
    assert not torch.is_inference_mode_enabled()
    assert (backends.cudnn_sdp_enabled(), backends.flash_sdp_enabled(),
            backends.mem_efficient_sdp_enabled(), backends.math_sdp_enabled()) == before
