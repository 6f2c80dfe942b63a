"""Checks of the Triton block-sparse kernel on CPU under the Triton interpreter.

Run as a script (it sets TRITON_INTERPRET=1 itself, before triton is imported):

    python tests/kernel_checks/check_block_sparse.py [--only NAME ...] [--seed N] [--list]

Each check compares the kernel (forward and gradients) with a float64 dense emulation on small
odd shapes (T = 63, 90, 100; D = 24, 60; block 16 or 32): ``attention_reference`` for the standard
softmax, ``faithful_reference`` for SPION's faithful one, through effx.testing.compare_paths (the
one tolerance rule: at most 2x the error of plain dense PyTorch in the same dtype, plus one
rounding step). Prints one JSON line per check; exits with status 1 if any check fails.
`tests/test_block_sparse.py` runs this script in a subprocess and reports each check.
"""
from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # must precede any triton import

import sys  # noqa: E402

import torch  # noqa: E402

from harness import CheckFailed, Checks  # noqa: E402

from effx.attention import block_sparse as bs  # noqa: E402
from effx.attention.reference import attention_reference, block_layout_mask  # noqa: E402
from effx.kernels.block_sparse_triton import block_index, block_sparse_attention_triton  # noqa: E402
from effx.testing import compare_paths  # noqa: E402

checks = Checks(__doc__)

REFERENCES = {"standard": attention_reference, "faithful": bs.faithful_reference}






def random_layout(gen, heads, nb, p=0.35):
    """Random bool layout (heads, nb, nb) with its diagonal, or (nb, nb) when heads is None."""
    shape = (nb, nb) if heads is None else (heads, nb, nb)
    return (torch.rand(shape, generator=gen) < p) | torch.eye(nb, dtype=torch.bool)


def expect_rule(label, gen, shape, layout, block, dtype=torch.float32, kpm=None, softmax="standard",
                scale=None, tiles=None, views=False):
    """compare_paths for out, dq, dk, dv; raises CheckFailed with every verdict on failure."""
    b, h, t, d = shape
    if views:   # (B, T, H, D) storage seen as (B, H, T, D): non-contiguous inputs
        q, k, v = (torch.randn((b, t, h, d), generator=gen).to(dtype).transpose(1, 2) for _ in range(3))
    else:
        q, k, v = (torch.randn(shape, generator=gen).to(dtype) for _ in range(3))
    grad_out = torch.randn(shape, generator=gen).to(dtype)
    mask = block_layout_mask(layout, block, t)
    mask = mask[None] if mask.dim() == 3 else mask                          # (1, H, T, T) or (T, T)
    dense = REFERENCES[softmax]

    def kernel(q, k, v):
        return block_sparse_attention_triton(q, k, v, layout=layout, block=block, key_padding_mask=kpm,
                                             scale=scale, softmax=softmax, tiles=tiles)

    def plain(q, k, v):
        return dense(q, k, v, mask=mask, key_padding_mask=kpm, scale=scale, upcast=False)

    def reference(q, k, v):
        return dense(q, k, v, mask=mask, key_padding_mask=kpm, scale=scale)

    verdicts = compare_paths(kernel, plain, reference, q, k, v, grad_out)
    text = "; ".join(str(v) for v in verdicts)
    if not all(v.ok for v in verdicts):
        raise CheckFailed(f"{label}: {text}")
    return f"{label}: {text}"


def padding(gen, b, t, cut):
    kpm = torch.rand((b, t), generator=gen) > 0.15
    kpm[-1, t - cut:] = False
    return kpm


# ------------------------------------------------------------------------------------- checks

@checks.register
def check_all_ones_layout_equals_dense(gen):
    t, block = 63, 16
    ones = torch.ones(4, 4, dtype=torch.bool)
    notes = []
    for softmax in ("standard", "faithful"):      # no unselected key: both are dense attention
        notes.append(expect_rule(softmax, gen, (1, 2, t, 60), ones, block, softmax=softmax))
        if softmax == "faithful":                 # and its reference is the plain dense one
            notes.append(expect_rule("faithful vs dense", gen, (1, 2, t, 60), ones, block))
    return " | ".join(notes)


@checks.register
def check_band_layout_equals_element_mask(gen):
    return expect_rule("band width 1, T=100, D=24", gen, (2, 2, 100, 24), bs.band_layout(7, 1), 16)


@checks.register
def check_per_head_layout_key_padding_standard(gen):
    b, h, t = 2, 2, 100
    layout = random_layout(gen, h, 7)
    return expect_rule("per-head layout + padding", gen, (b, h, t, 24), layout, 16, kpm=padding(gen, b, t, 30))


@checks.register
def check_faithful_matches_emulation(gen):
    b, h, t = 2, 2, 100
    notes = [expect_rule("shared layout", gen, (b, h, t, 24), random_layout(gen, None, 7), 16, softmax="faithful")]
    notes.append(expect_rule("per-head layout + padding", gen, (b, h, t, 24), random_layout(gen, h, 7), 16,
                             kpm=padding(gen, b, t, 30), softmax="faithful"))
    return " | ".join(notes)


@checks.register
def check_empty_rows_give_zeros(gen):
    b, h, t, d, block = 2, 1, 63, 24, 16
    layout = random_layout(gen, None, 4)
    layout[1] = False                                         # query block 1 lists nothing
    kpm = torch.ones((b, t), dtype=torch.bool)
    kpm[1, 48:] = False
    layout[3] = False
    layout[3, 3] = True                                       # block 3 lists only padded keys for item 1
    q, k, v = (torch.randn((b, h, t, d), generator=gen) for _ in range(3))
    notes = []
    for softmax in ("standard", "faithful"):
        out = block_sparse_attention_triton(q, k, v, layout=layout, block=block, key_padding_mask=kpm,
                                            softmax=softmax)
        empty = [out[:, :, 16:32], out[1, :, 48:]]
        if any(e.abs().max() != 0 for e in empty):
            raise CheckFailed(f"{softmax}: rows with no selected real key must be exactly zero")
        notes.append(expect_rule(softmax, gen, (b, h, t, d), layout, block, kpm=kpm, softmax=softmax))
    return " | ".join(notes)


@checks.register
def check_padded_keys_never_leak(gen):
    b, h, t, d, block = 2, 2, 90, 24, 16
    layout = random_layout(gen, h, 6)
    kpm = padding(gen, b, t, 25)
    q, k, v = (torch.randn((b, h, t, d), generator=gen) for _ in range(3))
    pad = (~kpm)[:, None, :, None].expand_as(k)
    k2, v2 = k.masked_fill(pad, 1e4), v.masked_fill(pad, -1e4)
    for softmax in ("standard", "faithful"):
        kw = dict(layout=layout, block=block, key_padding_mask=kpm, softmax=softmax)
        a = block_sparse_attention_triton(q, k, v, **kw)
        c = block_sparse_attention_triton(q, k2, v2, **kw)
        if not torch.equal(a, c):
            raise CheckFailed(f"{softmax}: changing padded k/v changed outputs by {(a - c).abs().max():.2e}")
    return "changing padded keys and values changes nothing (both softmax modes)"


@checks.register
def check_sub_tiles_block32(gen):
    """block 32 split into tiles of 16 rows and/or keys (several programs per block, several inner
    steps per block), T=90 (a partial last block)."""
    b, h, t = 1, 2, 90
    layout = random_layout(gen, None, 3, p=0.5)
    notes = [expect_rule(f"{softmax}, tiles {tiles}", gen, (b, h, t, 24), layout, 32, kpm=padding(gen, b, t, 7),
                         softmax=softmax, tiles=tiles)
             for softmax, tiles in (("standard", (16, 16)), ("faithful", (16, 32)), ("faithful", (32, 16)))]
    return " | ".join(notes)


@checks.register
def check_custom_scale_and_non_contiguous(gen):
    layout = random_layout(gen, None, 4)
    return expect_rule("scale 0.37, (B,T,H,D) views", gen, (2, 2, 63, 24), layout, 16, scale=0.37,
                       softmax="faithful", views=True)


@checks.register
def check_bf16_forward_and_grads(gen):
    b, h, t = 1, 2, 100
    return " | ".join(expect_rule(s, gen, (b, h, t, 24), random_layout(gen, None, 7), 16, dtype=torch.bfloat16,
                                  kpm=padding(gen, b, t, 10), softmax=s) for s in ("standard", "faithful"))


@checks.register
def check_fp16_forward_and_grads(gen):
    b, h, t = 1, 2, 100
    return expect_rule("faithful", gen, (b, h, t, 24), random_layout(gen, h, 7), 16, dtype=torch.float16,
                       kpm=padding(gen, b, t, 10), softmax="faithful")


@checks.register
def check_prebuilt_block_index(gen):
    layout = random_layout(gen, 2, 4)
    q, k, v = (torch.randn((1, 2, 63, 24), generator=gen) for _ in range(3))
    index = block_index(layout, 16)
    a = block_sparse_attention_triton(q, k, v, layout=layout, block=16)
    c = block_sparse_attention_triton(q, k, v, layout=index, block=16)
    if not torch.equal(a, c):
        raise CheckFailed("a prebuilt BlockIndex gives a different output than the layout it came from")
    return f"BlockIndex reused: {index.nnz_blocks} listed blocks, same output"


@checks.register
def check_public_dispatch_backend_triton(gen):
    layout = random_layout(gen, None, 4)
    q, k, v = (torch.randn((1, 2, 63, 24), generator=gen) for _ in range(3))
    calls = []
    original = bs.block_sparse_attention_triton

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    bs.block_sparse_attention_triton = spy
    try:
        out = bs.block_sparse_attention(q, k, v, layout=layout, block=16, softmax="faithful", backend="triton")
        bs.block_sparse_attention(q, k, v, layout=layout, block=16, backend="auto")   # CPU: torch path
    finally:
        bs.block_sparse_attention_triton = original
    if not bs.HAS_TRITON_KERNEL or len(calls) != 1 or calls[0]["softmax"] != "faithful":
        raise CheckFailed(f"HAS_TRITON_KERNEL={bs.HAS_TRITON_KERNEL}, kernel calls={calls}")
    ref = bs.faithful_reference(q.double(), k.double(), v.double(), mask=block_layout_mask(layout, 16, 63))
    err = (out.double() - ref).abs().max().item()
    if err > 1e-5:
        raise CheckFailed(f"backend='triton' output differs from the faithful reference by {err:.2e}")
    return f"backend='triton' runs the kernel once (auto on CPU does not); error {err:.1e}"


if __name__ == "__main__":
    sys.exit(checks.main(sys.argv[1:]))
