"""GPU kernels (Triton), each the fast path behind an attention function that has a PyTorch fallback.

sliding_window_triton   flash-attention style band attention |i - j| <= window, forward and backward
"""
