"""Audio input policy: reading, scaling, channel mixing, resampling, refusals, the frame rule."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf
import torch

from tokenize_mm.tokenizers.audio import io as audio_io
from tokenize_mm.tokenizers.audio.io import (
    describe,
    iter_audio_files,
    load_audio,
    num_frames,
    save_wav,
    to_model_input,
)
from tokenize_mm.tokenizers.errors import InvalidInputError

RATE = 16000


def sine(freq: float = 440.0, rate: int = RATE, seconds: float = 0.5, amp: float = 0.5):
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: torch.Tensor, rate: int) -> float:
    spectrum = torch.fft.rfft(x.double()).abs()
    return float(spectrum.argmax()) * rate / x.shape[-1]


@pytest.fixture
def wav_int16(tmp_path):
    x = np.round(sine() * 32767).astype(np.int16)
    path = tmp_path / "tone16.wav"
    sf.write(path, x, RATE, subtype="PCM_16")
    return path, x


def test_policy_is_one_line():
    assert "\n" not in audio_io.POLICY and "resample" in audio_io.POLICY


@pytest.mark.parametrize(
    ("suffix", "subtype", "tol"),
    [(".wav", "FLOAT", 0.0), (".wav", "PCM_16", 1 / 32768), (".flac", "PCM_16", 1 / 32768),
     (".ogg", "VORBIS", 0.05)],
)  # fmt: skip
def test_load_formats(tmp_path, suffix, subtype, tol):
    x = np.stack([sine(), sine(660.0)])  # (2, S)
    path = tmp_path / f"tone{suffix}"
    sf.write(path, x.T, RATE, subtype=subtype)
    wav, rate = load_audio(path)
    assert rate == RATE and wav.dtype == torch.float32 and wav.shape == (2, x.shape[1])
    assert float((wav - torch.from_numpy(x)).abs().max()) <= tol + 1e-7


def test_int16_file_scaled_by_32768(wav_int16):
    path, x = wav_int16
    wav, _ = load_audio(path)
    assert torch.equal(wav[0], torch.from_numpy(x.astype(np.float32) / 32768.0))


def test_int16_tensor_scaled_by_32768():
    x = torch.tensor([-32768, -1, 0, 1, 32767], dtype=torch.int16)
    out = to_model_input(x, RATE, target_rate=RATE, channels=1)
    assert torch.equal(out[0], x.float() / 32768.0)


def test_float_kept_and_not_rescaled():
    x = torch.tensor([[0.0, 1.5, -2.0, 0.25]], dtype=torch.float64)
    out = to_model_input((x, RATE), target_rate=RATE, channels=1)
    assert out.dtype == torch.float32 and torch.equal(out, x.float())


@pytest.mark.parametrize("target", [24000, 8000, 22050])
def test_resample_length_and_pitch(target):
    x = torch.from_numpy(sine(seconds=1.0))
    out = to_model_input(x, RATE, target_rate=target, channels=1)
    assert abs(out.shape[1] - x.shape[0] * target / RATE) <= 1
    assert abs(peak_hz(out[0], target) - 440.0) <= 2.0


def test_path_is_resampled_from_its_own_rate(wav_int16):
    path, x = wav_int16
    out = to_model_input(path, target_rate=24000, channels=1)
    assert abs(out.shape[1] - len(x) * 24000 / RATE) <= 1
    assert torch.equal(
        to_model_input(path, RATE, target_rate=RATE, channels=1), load_audio(path)[0]
    )


def test_stereo_mixed_to_mono_is_mean():
    x = torch.from_numpy(np.stack([sine(), sine(660.0, amp=0.3)]))
    out = to_model_input(x, RATE, target_rate=RATE, channels=1)
    assert out.shape == (1, x.shape[1])
    torch.testing.assert_close(out[0], x.mean(0))


def test_mono_duplicated_for_stereo_and_other_mismatch_refused():
    x = torch.from_numpy(sine())
    out = to_model_input(x, RATE, target_rate=RATE, channels=2)
    assert out.shape == (2, x.shape[0]) and torch.equal(out[0], out[1])
    with pytest.raises(InvalidInputError, match="3 channels"):
        to_model_input(x.expand(3, -1), RATE, target_rate=RATE, channels=2)


def test_silence_accepted():
    out = to_model_input(torch.zeros(2, 800), RATE, target_rate=24000, channels=1)
    assert out.shape == (1, 1200) and not out.any()


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: d / "missing.wav", "does not exist"),
        (lambda d: d, "directory"),
        (lambda d: _write(d / "empty.wav", b""), "empty"),
        (lambda d: _write(d / "text.wav", b"this is not audio at all"), "not an audio file"),
        (lambda d: _write(d / "cut.flac", (d / "tone16.flac").read_bytes()[:300]), "corrupt"),
        (lambda d: _write(d / "cut.wav", (d / "tone16.wav").read_bytes()[:1000]), "truncated"),
        (lambda d: _write(d / "hdr.wav", (d / "tone16.wav").read_bytes()[:44]), "truncated"),
    ],
    ids=["missing", "directory", "empty", "text", "corrupt_flac", "truncated_wav", "header_only"],
)
def test_bad_files_named(tmp_path, wav_int16, make, match):
    sf.write(tmp_path / "tone16.flac", wav_int16[1], RATE)
    path = make(tmp_path)
    with pytest.raises(InvalidInputError, match=match) as info:
        to_model_input(path, target_rate=RATE, channels=1)
    assert info.value.item == str(path)


def test_zero_frame_file(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros((0, 1), np.int16), RATE, subtype="PCM_16")
    with pytest.raises(InvalidInputError, match="zero frames") as info:
        load_audio(path)
    assert info.value.item == str(path)


def test_nan_in_float_wav_file(tmp_path):
    path = tmp_path / "nan.wav"
    sf.write(path, np.array([0.0, np.nan, 0.1], np.float32), RATE, subtype="FLOAT")
    with pytest.raises(InvalidInputError, match="NaN") as info:
        to_model_input(path, target_rate=RATE, channels=1)
    assert info.value.item == str(path)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.tensor([0.0, float("nan")]), "NaN or Inf"),
        (torch.tensor([0.0, float("inf")]), "NaN or Inf"),
        (torch.zeros(10, dtype=torch.int32), "int32"),
        (torch.zeros(10, dtype=torch.bool), "bool"),
        (torch.zeros(2, 1, 10), "a batch\\? pass a list to encode_batch"),
        (torch.zeros(0), "empty"),
        (torch.zeros(1, 0), "empty"),
        (torch.zeros(1000, 2), "did you pass \\(S, C\\)"),
    ],
    ids=["nan", "inf", "int32", "bool", "3d", "empty1d", "empty2d", "transposed"],
)
def test_bad_tensors_named(x, match):
    with pytest.raises(InvalidInputError, match=match) as info:
        to_model_input(x, RATE, target_rate=RATE, channels=1)
    assert info.value.item == f"tensor{tuple(x.shape)}@{RATE}"


def test_sample_rate_rules(wav_int16):
    path, _ = wav_int16
    x = torch.zeros(100)
    with pytest.raises(InvalidInputError, match="conflicts with the file's rate") as info:
        to_model_input(path, 44100, target_rate=RATE, channels=1)
    assert info.value.item == str(path)
    with pytest.raises(InvalidInputError, match="needs its sample rate"):
        to_model_input(x, target_rate=RATE, channels=1)
    with pytest.raises(InvalidInputError, match="conflicts"):
        to_model_input((x, RATE), 8000, target_rate=RATE, channels=1)
    for bad in (0, -5, 16000.5, True):
        with pytest.raises(InvalidInputError, match="sample rate"):
            to_model_input(x, bad, target_rate=RATE, channels=1)
    with pytest.raises(InvalidInputError, match="unsupported audio input"):
        to_model_input(np.zeros(100), RATE, target_rate=RATE, channels=1)


def test_describe():
    x = torch.zeros(2, 10)
    assert describe(x, 16000) == "tensor(2, 10)@16000"
    assert describe((x, 8000)) == "tensor(2, 10)@8000"
    assert describe("a/b.wav") == "a/b.wav"


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_save_wav_round_trip(tmp_path, subtype):
    x = torch.from_numpy(np.stack([sine(), sine(660.0)]))
    path = save_wav(tmp_path / "out" / "x.wav", x, RATE, subtype=subtype)
    wav, rate = load_audio(path)
    assert rate == RATE and wav.shape == x.shape
    tol = 1 / 65536 + 1e-7 if subtype == "PCM_16" else 0.0
    assert float((wav - x).abs().max()) <= tol
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.wav"]  # no temp file left


def test_save_wav_pcm_clips_loud_samples(tmp_path):
    path = save_wav(tmp_path / "loud.wav", torch.tensor([2.0, -2.0, 0.5]), RATE)
    wav, _ = load_audio(path)
    assert wav[0].tolist() == [32767 / 32768, -1.0, 0.5]


def test_iter_audio_files_sorted(tmp_path):
    for rel in ["b.wav", "a/c.FLAC", "a/d.ogg", "notes.txt", "e.mp3"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    names = [p.relative_to(tmp_path).as_posix() for p in iter_audio_files(tmp_path)]
    assert names == ["a/c.FLAC", "a/d.ogg", "b.wav"]


def test_num_frames_exact_rule():
    rng = random.Random(0)
    rates = [8000, 16000, 22050, 24000, 44100, 48000]
    hops = [320, 360, 441, 480, 512, 2400]
    for _ in range(2000):
        sr, hop = rng.choice(rates), rng.choice(hops)
        frame_rate = Fraction(sr, hop)
        s = rng.choice([0, rng.randrange(1, 10 * sr), hop * rng.randrange(1, 200)])
        expected = math.ceil(Fraction(s, sr) * frame_rate)
        assert num_frames(s, sr, frame_rate) == expected
        # a float frame rate (as stored in TokenizerInfo) gives the same count
        assert num_frames(s, sr, float(frame_rate)) == expected
        assert num_frames(s, sr, float(frame_rate)) == -(-s // hop)
    assert num_frames(24000, 24000, 50.0) == 50 and num_frames(24001, 24000, 50) == 51


def test_num_frames_rejects_nonsense():
    for args in [(-1, 16000, 50.0), (10, 0, 50.0), (10, 16000, 0.0), (10, 16000, float("nan"))]:
        with pytest.raises(ValueError):
            num_frames(*args)
