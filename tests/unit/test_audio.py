"""Audio tokenizer specifics: exact frame counts, the 50 Hz default, inputs, fit, decode checks."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
import torch
from conftest import TINY_AUDIO

from tokenize_mm import AudioTokenizer, Encoded, InvalidCodesError, InvalidInputError
from tokenize_mm.tokenizers.audio.io import num_frames, save_wav
from tokenize_mm.tokenizers.audio.model import CodecConfig, CodecModel


def test_default_codec_is_50_frames_per_second():
    model = CodecModel()  # the defaults of AudioTokenizer.fit
    assert model.sample_rate == 24_000 and model.hop_length == 480 and model.frame_rate == 50.0


@pytest.mark.parametrize("backend", ["tiny_audio", "encodec_24khz", "encodec_48khz"])
def test_frames_are_ceil_of_duration_times_frame_rate(request, backend):
    """Every backend, random durations and input rates: frames = ceil(d × frame_rate), d the
    duration of the resampled clip, and tokens per second = frame rate × K."""
    tok = request.getfixturevalue(backend)
    rng = random.Random(0)
    info = tok.info
    assert info.tokens_per_second == info.frame_rate * info.num_codebooks
    for _ in range(10):
        rate = rng.choice([8000, 11025, 16000, 22050, 24000, 44100, 48000])
        n = rng.randint(1, 2 * rate)  # up to two seconds, including clips shorter than one frame
        enc = tok.encode((torch.zeros(1, n), rate))
        samples = int(enc.extras["num_samples"][0])
        assert samples == -(-n * info.sample_rate // rate)
        assert enc.num_steps == math.ceil(
            Fraction(samples, info.sample_rate) * Fraction(info.frame_rate)
        )
        assert enc.num_steps == num_frames(samples, info.sample_rate, info.frame_rate)
        assert tok.decode(enc).shape[-1] == samples


def test_silence_is_valid(tiny_audio):
    enc = tiny_audio.encode((torch.zeros(1, 24_000), 24_000))
    assert enc.codes.shape == (2, 50)


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ((torch.zeros(1, 0), 24_000), "empty"),
        ((torch.full((1, 100), float("nan")), 24_000), "NaN"),
        ((torch.zeros(1, 100, dtype=torch.int32), 24_000), "int32"),
        (torch.zeros(1, 100), "sample rate"),
    ],
)
def test_bad_audio_refused(tiny_audio, item, match):
    with pytest.raises(InvalidInputError, match=match):
        tiny_audio.encode(item)


def test_bad_file_named_in_a_batch(tiny_audio, tmp_path, clips):
    bad = tmp_path / "noise.wav"
    bad.write_text("not audio")
    with pytest.raises(InvalidInputError, match=r"batch item 1 \(.*noise\.wav") as err:
        tiny_audio.encode_batch([clips[0], bad])
    assert err.value.index == 1


def test_files_encode_like_tensors(tiny_audio, tmp_path, clips):
    wav, rate = clips[1]
    path = save_wav(tmp_path / "clip.wav", wav, rate, subtype="FLOAT")
    assert tiny_audio.encode(path) == tiny_audio.encode((wav, rate))


def test_decode_checks_num_samples_against_codes(tiny_audio, clips):
    enc = tiny_audio.encode(clips[0])
    wrong = Encoded(codes=enc.codes, extras={"num_samples": enc.extras["num_samples"] + 10_000})
    with pytest.raises(InvalidCodesError, match="num_samples"):
        tiny_audio.decode(wrong)


def test_fit_loss_falls_and_metrics_kept(clips):
    tok = AudioTokenizer.fit(clips, max_steps=30, seed=1, **TINY_AUDIO)
    assert tok.fit_data["loss_end"] < tok.fit_data["loss_start"]
    m = tok.info.metrics
    assert {"si_snr_db", "mel_distance", "perplexity_0", "used_fraction_1"} <= set(m)
    assert 0.0 < m["used_fraction_0"] <= 1.0


def test_long_recordings_are_encoded_in_chunks(tiny_audio):
    """Chunked encoding keeps the exact frame count, and for a causal codec without LSTM layers
    (the tiny one) with enough left context, the very codes of a one-shot encode."""
    chunked = AudioTokenizer(
        tiny_audio.model,
        tiny_audio.info,
        tiny_audio.hparams,
        chunk_seconds=2.0,
        context_seconds=0.5,
    )
    g = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(1, 24_000 * 9 + 123, generator=g)  # 9 s and a bit: 5 chunks
    one_shot = tiny_audio.encode((wav, 24_000)).codes
    codes = chunked.encode((wav, 24_000)).codes
    assert codes.shape == one_shot.shape == (2, 451)
    assert torch.equal(codes, one_shot)


def test_encoder_initialisation_lets_latents_vary_over_frames():
    """With PyTorch's default init the small codec's encoder output is nearly constant over the
    frames of a clip (so k-means starts the codebook from one point); the init gain fixes it."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(24_000) / 24_000
    wav = (0.3 * torch.sin(2 * math.pi * 440 * t) + 0.05 * torch.randn(24_000, generator=g))[
        None, None
    ]

    def variation(gain: float) -> float:
        torch.manual_seed(0)
        model = CodecModel(CodecConfig(n_filters=8, dimension=64, lstm=0, encoder_init_gain=gain))
        with torch.no_grad():
            z = model.encoder(wav)  # (1, D, frames)
        return float(z.std(dim=2).mean() / z.abs().mean())

    assert variation(1.0) < 0.02 < variation(2.0)


def test_mu_law_compresses_level_and_keeps_sign_and_zero():
    from tokenize_mm.tokenizers.audio.model import mu_law

    x = torch.tensor([-1.0, -0.01, 0.0, 0.01, 0.5, 1.0])
    y = mu_law(x, 255.0)
    assert torch.allclose(y[[0, 2, 5]], torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.allclose(y, -mu_law(-x, 255.0))  # odd
    assert torch.all(torch.diff(y) > 0)  # monotone
    # -40 dB reaches the encoder at about -13 dB: ln(1 + 2.55) / ln(256)
    assert abs(float(y[3]) - math.log1p(2.55) / math.log1p(255)) < 1e-6
    assert torch.equal(mu_law(x, 0.0), x)
