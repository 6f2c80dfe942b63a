"""L-HuBERT: HuBERT with sliding-window attention, same weights; tested by invariances."""
import pytest
import torch
from torchaudio.models import wav2vec2_model

from effx.models import lhubert
from effx.models.zoo_speech import HUBERT_TINY




@pytest.fixture(scope="module")
def hubert():
    torch.manual_seed(0)
    return wav2vec2_model(**HUBERT_TINY).eval()


def wave(batch, samples, seed=0):
    return torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


def test_frames_are_20ms(hubert):
    assert lhubert.frame_stride(hubert) == 320
    for samples, frames in [(399, 0), (400, 1), (720, 2), (16000, 49), (16_321, 50)]:
        assert lhubert.frames_for_samples(hubert, samples) == frames
    with torch.no_grad():
        out, _ = hubert(wave(1, 16_321))
    assert out.shape[1] == 50


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_window_covering_the_input_equals_hubert(hubert, backend):
    x = wave(2, 16_000 + 123)                                     # 49 frames
    local = lhubert.to_lhubert(hubert, window=49, backend=backend)
    lengths = torch.tensor([16_123, 9_000])
    with torch.no_grad():
        ref, ref_len = hubert(x)
        out, _ = local(x)
        ref_pad, _ = hubert(x, lengths)
        out_pad, out_len = local(x, lengths)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    valid = torch.arange(out.shape[1])[None, :] < out_len[:, None]   # padded frames: undefined
    torch.testing.assert_close(out_pad[valid], ref_pad[valid], atol=1e-5, rtol=1e-5)


def test_small_window_differs_and_weights_are_shared(hubert):
    local = lhubert.to_lhubert(hubert, window=2)
    assert lhubert.attention_label(local) == "sliding_window"
    assert lhubert.attention_label(hubert) == "sdpa"              # the original is untouched
    ours = dict(local.named_parameters())
    assert len(ours) == len(dict(hubert.named_parameters()))
    for name, p in hubert.named_parameters():
        assert torch.equal(p, ours[name]), name
    x = wave(1, 16_000)
    with torch.no_grad():
        diff = (local(x)[0] - hubert(x)[0]).abs().max()
    assert diff > 1e-3


def test_padding_does_not_change_real_frames(hubert):
    """One example alone vs the same example padded in a batch: same outputs on its frames.

    Checked on the Transformer encoder (where the attention is): torchaudio's HuBERT-base
    feature encoder starts with GroupNorm over time, whose statistics include the padded
    samples, so the full model is not padding-invariant. The full-model check uses the
    per-frame LayerNorm feature encoder (extractor_mode='layer_norm', as HuBERT-large).
    """
    local = lhubert.to_lhubert(hubert, window=3)
    feats = torch.randn(2, 37, HUBERT_TINY["extractor_conv_layer_config"][-1][0],
                        generator=torch.Generator().manual_seed(1))
    n = 23
    with torch.no_grad():
        alone = local.encoder(feats[:1, :n])
        batched = local.encoder(torch.cat([feats[1:], feats[:1]]), torch.tensor([37, n]))
    torch.testing.assert_close(batched[1, :n], alone[0], atol=1e-5, rtol=1e-5)

    torch.manual_seed(0)
    ln = wav2vec2_model(**{**HUBERT_TINY, "extractor_mode": "layer_norm"}).eval()
    local = lhubert.to_lhubert(ln, window=3, inplace=True)
    x, short = wave(2, 12_000), 7_000
    with torch.no_grad():
        alone, _ = local(x[1:, :short])
        batched, _ = local(x, torch.tensor([12_000, short]))
    f = lhubert.frames_for_samples(local, short)
    torch.testing.assert_close(batched[1, :f], alone[0, :f], atol=1e-5, rtol=1e-5)


def test_swapping_again_and_eager(hubert):
    x = wave(1, 8_000)
    small = lhubert.to_lhubert(hubert, window=1)
    wide = lhubert.to_lhubert(small, window=1000)              # re-swap keeps the weights
    eager = lhubert.to_eager(hubert)
    with torch.no_grad():
        ref = hubert(x)[0]
        torch.testing.assert_close(wide(x)[0], ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(eager(x)[0], ref, atol=1e-5, rtol=1e-5)
    assert lhubert.attention_label(eager) == "eager"


def test_bad_window():
    with pytest.raises(ValueError, match="window"):
        lhubert.to_lhubert(torch.nn.Module(), window=-1)
