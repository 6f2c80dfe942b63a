"""GPU kernels (Triton), each the fast path behind an attention function that has a PyTorch fallback.

sliding_window_triton   flash-attention style band attention |i - j| <= window, forward and backward
                        launchers; effx.attention.sliding_window runs them inside the custom ops
                        effx::sliding_window_forward / _backward, which autograd and FlopCounterMode see
block_sparse_triton     block-sparse attention over a layout of tiles (effx.attention.block_sparse)
"""
