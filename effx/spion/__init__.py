"""SPION (Yoon, Han, Moon, arXiv 2309.12578): layer-wise sparse training via convolutional flood filling.

pattern   the layout of one layer from its averaged attention map (CF, C and F variants)
switch    when to switch a training run from dense to sparse attention

The attention itself is ``effx.attention.block_sparse.block_sparse_attention`` with the layout
built here, ``softmax='faithful'`` reproducing the official kernel's softmax.
"""
from effx.spion.pattern import (VARIANTS, AttentionMapMean, attention_map, block_scores,
                                diagonal_convolution, flood_fill, layout_density, spion_layout,
                                top_k_blocks)
from effx.spion.switch import DenseToSparseSwitch, relative_change

__all__ = ["VARIANTS", "AttentionMapMean", "DenseToSparseSwitch", "attention_map", "block_scores",
           "diagonal_convolution", "flood_fill", "layout_density", "relative_change", "spion_layout",
           "top_k_blocks"]
