"""SPION's pattern generator and dense-to-sparse switch (effx.spion), on hand-made inputs whose
results are worked out by hand in the comments. Odd sizes: N = 100 with block 16 (nb = 7)."""
from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from effx.attention.block_sparse import band_layout
from effx.errors import ParameterError
from effx.spion import (AttentionMapMean, DenseToSparseSwitch, attention_map, block_scores,
                        diagonal_convolution, flood_fill, layout_density, relative_change, spion_layout)

N, BLOCK, NB = 100, 16, 7


def cells(nb, pairs):
    out = torch.zeros(nb, nb, dtype=torch.bool)
    for i, j in pairs:
        out[i, j] = True
    return out


def eye_plus(pairs, nb=NB):
    return cells(nb, pairs) | torch.eye(nb, dtype=torch.bool)


# ------------------------------------------------------------------------------ the map

def test_attention_map_and_running_mean():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 9, 9, generator=g), torch.rand(5, 3, 9, 9, generator=g)
    torch.testing.assert_close(attention_map(a), a.double().mean(dim=(0, 1)))
    running = AttentionMapMean()
    running.update(a)
    running.update(b)
    torch.testing.assert_close(running.mean, attention_map(torch.cat([a, b])))   # items weigh the same
    running.reset()
    with pytest.raises(RuntimeError):
        running.mean


# ------------------------------------------------------------------------------ convolution

@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("filter_size", [1, 4, 5, 31])
def test_diagonal_convolution_is_conv2d_with_identity_filter(filter_size):
    m = torch.rand(13, 13, generator=torch.Generator().manual_seed(filter_size), dtype=torch.float64)
    eye = torch.eye(filter_size, dtype=torch.float64)[None, None]
    expected = F.conv2d(m[None, None], eye, padding="same")[0, 0]
    torch.testing.assert_close(diagonal_convolution(m, filter_size), expected)


def test_diagonal_convolution_of_impulses_by_hand():
    m = torch.zeros(12, 12)
    m[2, 9] = 1.0                  # F = 5: a diagonal segment (2+u, 9+u), u = -2..2, cut by the border
    m[0, 0] = 1.0                  # at the corner only u = 0..2 remain
    expected = torch.zeros(12, 12, dtype=torch.float64)
    for i, j in [(0, 7), (1, 8), (2, 9), (3, 10), (4, 11), (0, 0), (1, 1), (2, 2)]:
        expected[i, j] = 1.0
    torch.testing.assert_close(diagonal_convolution(m, 5), expected)


def test_diagonal_convolution_keeps_a_diagonal_stripe_on_its_diagonal():
    m = torch.zeros(N, N)
    idx = torch.arange(N - 32)
    m[idx, idx + 32] = 1.0
    out = diagonal_convolution(m, 31)
    assert torch.equal(out > 0, m > 0)


# ------------------------------------------------------------------------------ pooling

def test_block_scores_by_hand_odd_n():
    m = torch.arange(25.0).reshape(5, 5)           # N = 5, block 2: nb = 3, last tiles partial
    expected = torch.tensor([[3.0, 5.0, 6.5],      # (0,0) = mean(0, 1, 5, 6); (0,2) = mean(4, 9)
                             [13.0, 15.0, 16.5],
                             [20.5, 22.5, 24.0]],  # (2,0) = mean(20, 21); (2,2) = 24 alone
                            dtype=torch.float64)
    torch.testing.assert_close(block_scores(m, 2), expected)


# ------------------------------------------------------------------------------ flood fill

def test_flood_fill_walk_by_hand():
    s = torch.tensor([[9.0, 1.0, 0.0, 0.0],
                      [1.0, 8.0, 7.0, 0.0],
                      [0.0, 6.5, 1.0, 6.0],
                      [5.0, 0.0, 0.0, 9.0]])
    # sorted: six 0, three 1, 5, 6, 6.5, 7, 8, 9, 9; q = 9.5/15 -> threshold 5.5.
    # walk from (0,0): 9 -> diag (1,1)=8 -> right (1,2)=7 -> diag (2,3)=6 -> down (3,3)=9 -> corner.
    # (2,1)=6.5 is above the threshold but no walk reaches it; (3,0)=5 starts a walk below it.
    got = flood_fill(s, 9.5 / 15)
    assert torch.equal(got, cells(4, [(0, 0), (1, 1), (1, 2), (2, 3), (3, 3)]))


def test_flood_fill_stops_at_the_first_cell_below_the_threshold():
    s = torch.tensor([[9.0, 1.0, 0.0, 0.0],
                      [1.0, 8.0, 7.0, 0.0],
                      [0.0, 1.0, 1.0, 1.5],
                      [5.0, 0.0, 0.0, 9.0]])
    # sorted: six 0, four 1, 1.5, 5, 7, 8, 9, 9; q = 10.5/15 -> threshold 3.25. (1,2)'s best step
    # is (2,3)=1.5: the walk ends there and never reaches (3,3)=9, which no other walk reaches.
    # The walk from (3,0)=5 marks it and ends at (3,1)=0.
    got = flood_fill(s, 10.5 / 15)
    assert torch.equal(got, cells(4, [(0, 0), (1, 1), (1, 2), (3, 0)]))


def test_flood_fill_ties_prefer_the_diagonal_and_threshold_is_strict():
    s = torch.tensor([[5.0, 0.0, 0.0],
                      [5.0, 5.0, 0.0],
                      [0.0, 5.0, 5.0]])
    # threshold 2.5. (0,0): diag (1,1) ties down (1,0) -> diag; (1,1): diag (2,2) ties down (2,1).
    # (1,0): diag (2,1) ties right (1,1) -> (2,1); then only right (2,2), already visited.
    got = flood_fill(s, 3.5 / 8)
    assert torch.equal(got, cells(3, [(0, 0), (1, 1), (2, 2), (1, 0), (2, 1)]))
    assert not flood_fill(torch.ones(3, 3), 0.5).any()      # nothing is strictly above a flat map


# ------------------------------------------------------------------------------ whole layouts

def stripe_map():
    """Queries attend to the key 32 positions ahead: block (r, r+2) for r = 0..4 (exactly)."""
    m = torch.zeros(N, N)
    idx = torch.arange(N - 32)
    m[idx, idx + 32] = 1.0
    return m


def column_map():
    """Every query attends to key 50 (block 3), a global token."""
    m = torch.zeros(N, N)
    m[:, 50] = 1.0
    return m


def band_map():
    m = torch.zeros(N, N)
    idx = torch.arange(N)
    m[(idx[:, None] - idx[None, :]).abs() <= 20] = 1.0
    return m


STRIPE = eye_plus([(r, r + 2) for r in range(5)])
COLUMN = eye_plus([(r, 3) for r in range(NB)])


@pytest.mark.parametrize("variant, options, expected", [
    # 5 stripe blocks at 1/16 (the edge tile (4,6) holds 4 of its 64 entries), 44 zeros:
    # q = 0.9 puts the threshold at 0.2/16; the walk from (0,2) follows the diagonal to (4,6).
    ("F", dict(quantile=0.9), STRIPE),
    ("CF", dict(quantile=0.9, filter_size=31), STRIPE),       # the identity filter keeps the stripe
    ("C", dict(density=5 / 49, filter_size=31), STRIPE),      # top 5 blocks
    # column blocks (r, 3) are all 1/16; q = 0.8 -> threshold 0; the walk from (0,3) goes down.
    ("F", dict(quantile=0.8), COLUMN),
    ("CF", dict(quantile=0.8, filter_size=5), COLUMN),        # smeared to keys 48..52: still block 3
    ("C", dict(density=7 / 49, filter_size=5), COLUMN),
], ids=["stripe-F", "stripe-CF", "stripe-C", "column-F", "column-CF", "column-C"])
def test_spion_layout_on_hand_made_maps(variant, options, expected):
    m = stripe_map() if expected is STRIPE else column_map()
    got = spion_layout(m, variant, block=BLOCK, **options)
    assert got.shape == (NB, NB) and got.dtype == torch.bool
    assert torch.equal(got, expected), f"got\n{got.int()}\nexpected\n{expected.int()}"


def test_band_flood_fill_follows_the_main_diagonal():
    # block scores of |i-j| <= 20: diagonal (and edge tiles (5,6), (6,5)) = 1, other neighbours
    # 190/256, two apart 10/256 (edge tiles (4,6), (6,4): 10/64), rest 0. q = 0.6 -> threshold
    # 10/64: the walk from (0,0) always takes the diagonal (the largest, also on ties at (5,5));
    # the walks from (0,1) and (1,0) mark their start and step onto the visited diagonal.
    got = spion_layout(band_map(), "F", block=BLOCK, quantile=0.6)
    assert torch.equal(got, eye_plus([(0, 1), (1, 0)]))


def test_band_top_k_keeps_the_band():
    # after a 3-wide diagonal filter the 19 best blocks are the 7 diagonal and 12 neighbour tiles
    got = spion_layout(band_map(), "C", block=BLOCK, filter_size=3, density=19 / 49)
    assert torch.equal(got, band_layout(NB, 1))
    assert layout_density(got) == pytest.approx(19 / 49)


@pytest.mark.parametrize("variant", ["CF", "F"])
def test_empty_map_gives_the_block_diagonal(variant):
    assert torch.equal(spion_layout(torch.zeros(N, N), variant, block=BLOCK), torch.eye(NB, dtype=torch.bool))


def test_spion_layout_rejects_bad_parameters():
    with pytest.raises(ParameterError, match="variant"):
        spion_layout(torch.zeros(8, 8), "X", block=4)
    with pytest.raises(ParameterError, match="density"):
        spion_layout(torch.zeros(8, 8), "CF", block=4, density=0.1)
    with pytest.raises(ParameterError, match="attn_map"):
        spion_layout(torch.zeros(8, 9), "F", block=4)


# ------------------------------------------------------------------------------ the switch

def maps_with_distances(distances, seed):
    """Maps M_0 = 0, M_t = M_(t-1) + d_t U with ||U||_F = 1: consecutive distances are exactly d_t."""
    u = torch.rand(6, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    u = u / torch.linalg.matrix_norm(u)
    out = [torch.zeros(6, 6, dtype=torch.float64)]
    for d in distances:
        out.append(out[-1] + d * u)
    return out


def feed(switch, layers, start=0):
    """Observe the per-layer map sequences at steps every*(i+1); returns the ready flag of each step."""
    flags = []
    for i in range(start, len(layers[0])):
        flags.append(switch.observe(switch.every * (i + 1), [maps[i] for maps in layers]))
    return flags


def test_switch_waits_for_every_layer():
    # layer A: d = 8, 4, 3, 2.8 -> changes 0.5, 0.25, 0.067; layer B: d = 5, 5.5, 6.6, 6.9 ->
    # 0.1, 0.2, 0.045. Both are below 15 % only at the 5th observation (d_4).
    layers = [maps_with_distances([8, 4, 3, 2.8], 0), maps_with_distances([5, 5.5, 6.6, 6.9], 1)]
    switch = DenseToSparseSwitch(num_layers=2, every=500)
    assert feed(switch, layers) == [False, False, False, False, True]
    assert switch.switched_at == 2500
    assert switch.distances[0] == pytest.approx([8, 4, 3, 2.8])
    assert switch.layer_changes() == pytest.approx([0.2 / 3, 0.3 / 6.6])


def test_switch_never_fires_on_oscillating_maps_and_latches_once_ready():
    layers = [maps_with_distances([1, 2] * 5, 2)]             # changes 1.0, 0.5, 1.0, ...
    switch = DenseToSparseSwitch(num_layers=1, every=200)
    assert not any(feed(switch, layers))
    steady = [maps_with_distances([1, 1, 5, 0.1], 3)]         # settles at once, then jumps
    switch = DenseToSparseSwitch(num_layers=1, every=200)
    assert feed(switch, steady) == [False, False, True, True, True]
    assert switch.switched_at == 600


def test_fixed_step_rule_ignores_the_maps():
    switch = DenseToSparseSwitch(num_layers=1, every=500, switch_step=1500)
    assert feed(switch, [maps_with_distances([1, 2, 1, 2], 4)]) == [False, False, True, True, True]
    assert switch.due(1000) and not switch.due(999) and not switch.due(0)


def test_relative_change_edge_cases():
    assert relative_change(0.0, 0.0) == 0.0 and relative_change(0.0, 1.0) == float("inf")
    assert relative_change(2.0, 1.7) == pytest.approx(0.15)


@pytest.mark.parametrize("how", ["pickle", "state_dict"])
def test_switch_resumes_from_a_checkpoint(tmp_path, how):
    layers = [maps_with_distances([8, 4, 3, 2.8, 2.7], 5), maps_with_distances([5, 5.5, 6.6, 6.9, 7], 6)]
    whole = DenseToSparseSwitch(num_layers=2)
    expected = feed(whole, layers)
    first = DenseToSparseSwitch(num_layers=2)
    flags = feed(first, [m[:3] for m in layers])
    if how == "pickle":
        resumed = pickle.loads(pickle.dumps(first))
    else:
        torch.save(first.state_dict(), tmp_path / "switch.pt")
        resumed = DenseToSparseSwitch.from_state_dict(torch.load(tmp_path / "switch.pt", weights_only=True))
    flags += feed(resumed, layers, start=3)
    assert flags == expected
    assert resumed.switched_at == whole.switched_at == 2500
    assert resumed.distances == whole.distances
    assert all(torch.equal(a, b) for a, b in zip(resumed.latest_maps, whole.latest_maps))


def test_switch_rejects_inconsistent_observations():
    switch = DenseToSparseSwitch(num_layers=2)
    with pytest.raises(ParameterError, match="maps"):
        switch.observe(500, [torch.zeros(4, 4)])
    switch.observe(500, [torch.zeros(4, 4)] * 2)
    with pytest.raises(ParameterError, match="step"):
        switch.observe(500, [torch.zeros(4, 4)] * 2)
