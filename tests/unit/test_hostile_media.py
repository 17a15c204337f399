"""Hostile media: inputs whose decode, resize or resample took unbounded memory or time.

Each case must be refused (or handled) before the expensive step. Guards make the expensive step
fail at once if it is reached (a decode, a resize, a torchaudio kernel over budget), so that a
regression fails fast here instead of exhausting the machine. Fixtures are generated in code.
"""

from __future__ import annotations

import math
import struct
import time
import zlib

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from PIL import Image, ImageFile

from tokenize_mm.tokenizers.audio import io as audio_io
from tokenize_mm.tokenizers.audio import resample as R
from tokenize_mm.tokenizers.errors import InvalidInputError
from tokenize_mm.tokenizers.image import io as image_io

SIZE = 16


# -- guards -------------------------------------------------------------------------------------
def _boom(what: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} was reached: the input should have been refused before")

    return fail


@pytest.fixture
def no_decode(monkeypatch):
    """Decoding an image file's pixels fails the test."""
    monkeypatch.setattr(ImageFile.ImageFile, "load", _boom("decoding the pixels"))


@pytest.fixture
def no_resize(monkeypatch):
    """Resizing a PIL image or a tensor fails the test."""
    monkeypatch.setattr(Image.Image, "resize", _boom("PIL resize"))
    monkeypatch.setattr(torch.nn.functional, "interpolate", _boom("tensor interpolate"))


def torchaudio_kernel_elements(orig: int, new: int) -> int:
    """Entries of the kernel ``torchaudio.functional.resample`` builds (its source, restated)."""
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    width = math.ceil(6 * o / (min(o, n) * 0.99))
    return n * (o + 2 * width)


@pytest.fixture
def small_kernels_only(monkeypatch):
    """torchaudio's resample with a kernel over 2**22 entries (16 MiB in float32) fails the test."""
    real = AF.resample

    def guarded(wav, orig, new, *args, **kwargs):
        elements = torchaudio_kernel_elements(orig, new)
        assert elements <= 2**22, f"torchaudio kernel of {elements:,} entries for {orig}->{new}"
        return real(wav, orig, new, *args, **kwargs)

    monkeypatch.setattr(AF, "resample", guarded)


@pytest.fixture
def no_audio_decode(monkeypatch):
    monkeypatch.setattr(sf, "read", _boom("decoding the audio"))


# -- images: bounds before decoding -------------------------------------------------------------
def png_header_only(path, width: int, height: int):
    """A PNG whose header claims ``width`` × ``height`` grey pixels (its data is empty)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    data += chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


def test_long_thin_png_refused_before_decoding(tmp_path, no_decode):
    path = tmp_path / "thin.png"
    Image.new("L", (400_000, 1), 128).save(path)  # the 1.2 KB file
    assert path.stat().st_size < 4096
    with pytest.raises(InvalidInputError, match=r"400000 x 1 .*32:1 \(MAX_ASPECT\)") as err:
        image_io.to_model_input(path, 256)
    assert err.value.item == str(path)


@pytest.mark.parametrize(
    ("size", "limit"),
    [((1, 400_000), "MAX_ASPECT"), ((3_300, 100), "MAX_ASPECT"), ((33_000, 1_100), "MAX_SIDE"),
     ((9_000, 9_000), "MAX_PIXELS")],
)  # fmt: skip
def test_header_sizes_refused_before_decoding(tmp_path, no_decode, size, limit):
    path = png_header_only(tmp_path / "claims.png", *size)
    with pytest.raises(InvalidInputError, match=limit) as err:
        image_io.to_model_input(path, 256)
    assert err.value.item == str(path) and f"{size[0]} x {size[1]}" in str(err.value)


def test_our_pixel_limit_comes_before_pillows():
    """Pillow's own bomb check fires in ``Image.open``; ours is tighter, so its message wins."""
    assert image_io.MAX_PIXELS <= Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize(
    "item",
    [Image.new("L", (400_000, 1)), Image.new("RGB", (1, 40)), torch.zeros(3, 1, 400_000),
     torch.zeros(1, 400_000, 2)],
    ids=["pil_400000x1", "pil_1x40", "tensor_3x1x400000", "tensor_1x400000x2"],
)  # fmt: skip
def test_pil_images_and_tensors_bounded_too(item, no_resize):
    with pytest.raises(InvalidInputError, match="MAX_ASPECT"):
        image_io.to_model_input(item, 256)


@pytest.mark.parametrize("item", [Image.new("RGB", (32, 1), "red"), torch.rand(3, 1, 32)])
def test_aspect_at_the_limit_accepted(item):
    assert image_io.to_model_input(item, SIZE).shape == (3, SIZE, SIZE)


def test_long_thin_png_through_the_tokenizer(tmp_path, tiny_image, no_decode):
    path = tmp_path / "thin.png"
    Image.new("L", (400_000, 1)).save(path)
    start = time.perf_counter()
    with pytest.raises(InvalidInputError, match="MAX_ASPECT"):
        tiny_image.encode(path)
    assert time.perf_counter() - start < 5.0


# -- images: animation, NaN pixels --------------------------------------------------------------
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def save_animation(path, fmt: str) -> None:
    frames = [Image.new("RGB", (24, 24), c) for c in COLOURS]
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], duration=100)


@pytest.mark.parametrize(("suffix", "fmt"), [(".gif", "GIF"), (".png", "PNG"), (".webp", "WEBP")])
def test_animated_file_refused_with_how_to_pick_a_frame(tmp_path, no_decode, suffix, fmt):
    path = tmp_path / f"anim{suffix}"
    save_animation(path, fmt)
    with pytest.raises(InvalidInputError, match=r"animated .*3 frames.*seek") as err:
        image_io.to_model_input(path, SIZE)
    assert err.value.item == str(path)


def test_a_picked_frame_is_encoded(tmp_path):
    path = tmp_path / "anim.gif"
    save_animation(path, "GIF")
    with Image.open(path) as img:
        img.seek(1)
        x = image_io.to_model_input(img, SIZE)
    assert torch.allclose(x.mean(dim=(1, 2)), torch.tensor([0.0, 1.0, 0.0]), atol=0.02)


def test_single_frame_gif_accepted(tmp_path):
    path = tmp_path / "still.gif"
    Image.new("RGB", (24, 24), COLOURS[2]).save(path)
    assert image_io.to_model_input(path, SIZE).shape == (3, SIZE, SIZE)


def test_exif_orientation_still_applied(tmp_path):
    """``open_image`` transposes in place (no copy of a large image); the result is unchanged."""
    img = Image.new("RGB", (40, 20), COLOURS[0])
    img.paste(COLOURS[2], (0, 0, 20, 20))  # blue left half
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: the left half becomes the top half
    path = tmp_path / "rotated.png"
    img.save(path, exif=exif)
    out = image_io.open_image(path)
    assert out.size == (20, 40)
    assert out.getpixel((10, 5)) == COLOURS[2] and out.getpixel((10, 35)) == COLOURS[0]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_tiff_refused(tmp_path, bad):
    pixels = np.full((8, 8), 100.0, np.float32)
    pixels[2, 3] = bad
    path = tmp_path / "float.tif"
    Image.fromarray(pixels).save(path)
    with pytest.raises(InvalidInputError, match=r"mode F .*NaN or Inf") as err:
        image_io.to_model_input(path, SIZE)
    assert err.value.item == str(path)
    with pytest.raises(InvalidInputError, match="NaN or Inf"):
        image_io.to_model_input(Image.fromarray(pixels), SIZE)


def test_finite_float_tiff_still_accepted(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.full((8, 8), 255.0, np.float32)).save(path)
    assert torch.allclose(image_io.to_model_input(path, SIZE), torch.ones(3, SIZE, SIZE))


# -- audio: resampling with bounded cost --------------------------------------------------------
EXACT_RATES = [(44100, 24000), (16000, 24000), (24000, 16000), (8000, 48000), (481, 480),
               (480, 481), (1201, 1200), (1_000_000, 24000)]  # fmt: skip


@pytest.mark.parametrize(("orig", "new"), EXACT_RATES)
def test_direct_path_is_torchaudios_filter(orig, new, small_kernels_only):
    """Same filter, time alignment and scaling: equal to float64 rounding on float64 input."""
    x = torch.randn(2, 3000, generator=torch.Generator().manual_seed(orig), dtype=torch.float64)
    ours = R.resample(x, orig, new, method="direct")
    torch.testing.assert_close(ours, AF.resample(x, orig, new), rtol=0, atol=1e-9)


@pytest.mark.parametrize(("orig", "new"), [(44100, 24000), (16000, 24000), (1201, 1200)])
def test_direct_path_close_to_torchaudio_in_float32(orig, new, small_kernels_only):
    """In float32 torchaudio rounds each phase j / n to float32, an error of about
    6e-8 · rolloff · min(o, n) in the sinc's argument; the direct path keeps phases exact."""
    x = torch.randn(1, 2000, generator=torch.Generator().manual_seed(0))
    ours = R.resample(x, orig, new, method="direct")
    g = math.gcd(orig, new)
    atol = 1e-5 + 4e-7 * (min(orig, new) // g)
    torch.testing.assert_close(ours, AF.resample(x, orig, new), rtol=0, atol=atol)


@pytest.mark.parametrize("samples", [1, 2, 7, 999, 4801])
@pytest.mark.parametrize(
    ("orig", "new"), [(44100, 24000), (24001, 24000), (44101, 24000), (4801, 4800), (1000, 24000)]
)
def test_length_is_ceil_of_the_ratio(samples, orig, new, small_kernels_only):
    out = R.resample(torch.zeros(1, samples), orig, new)
    assert out.shape == (1, math.ceil(samples * new / orig)) == (1, -(-samples * new // orig))


def test_chunks_do_not_change_the_result(monkeypatch):
    x = torch.randn(2, 5000, generator=torch.Generator().manual_seed(1))
    whole = R.resample(x, 24001, 24000)
    monkeypatch.setattr(R, "CHUNK_ELEMENTS", 100)  # a few outputs per chunk
    torch.testing.assert_close(R.resample(x, 24001, 24000), whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("orig", "new"), [(1201, 1200), (44101, 24000)])
def test_per_output_weights_equal_the_phase_table(monkeypatch, orig, new, small_kernels_only):
    """Over the budget even the phase table is skipped (1000003 → 24000: 24000 × 507 entries)."""
    x = torch.randn(2, 3000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    tabulated = R.resample(x, orig, new, method="direct")
    monkeypatch.setattr(R, "KERNEL_BUDGET", 10)
    per_output = R.resample(x, orig, new, method="direct")
    torch.testing.assert_close(per_output, tabulated, rtol=0, atol=1e-12)
    if torchaudio_kernel_elements(orig, new) <= 2**22:  # 44101 → 24000 would take 8.5 GB there
        torch.testing.assert_close(per_output, AF.resample(x, orig, new), rtol=0, atol=1e-9)


def test_direct_path_chosen_only_over_the_budget():
    assert R.kernel_elements(44100, 24000) == torchaudio_kernel_elements(44100, 24000) == 13680
    assert R.kernel_elements(24001, 24000) == torchaudio_kernel_elements(24001, 24000)
    assert R.kernel_elements(24001, 24000) > R.KERNEL_BUDGET >= R.kernel_elements(1201, 1200)


def test_torchaudio_length_shortfall_is_filled(monkeypatch):
    """torchaudio takes ceil(S · n / o) through float32, one sample short past 2**24 outputs
    (16 kHz → 24 kHz, S = 11184814); the missing tail comes from the direct path."""
    real = AF.resample
    monkeypatch.setattr(AF, "resample", lambda *a, **k: real(*a, **k)[..., :-3])
    x = torch.randn(1, 4000, generator=torch.Generator().manual_seed(2))
    out = R.resample(x, 16000, 24000)
    assert out.shape == (1, 6000)
    torch.testing.assert_close(out, real(x, 16000, 24000), rtol=0, atol=1e-5)


def tone(rate: int, seconds: float = 1.0, freq: float = 440.0) -> torch.Tensor:
    t = torch.arange(round(rate * seconds), dtype=torch.float64) / rate
    return (0.5 * torch.sin(2 * math.pi * freq * t)).float()[None]


def peak_hz(x: torch.Tensor, rate: int) -> float:
    return float(torch.fft.rfft(x.double()).abs().argmax()) * rate / x.shape[-1]


def test_tensor_at_24001_hz(small_kernels_only):
    start = time.perf_counter()
    out = audio_io.to_model_input(tone(24001), 24001, target_rate=24000, channels=1)
    assert time.perf_counter() - start < 5.0
    assert out.shape == (1, 24000) and abs(peak_hz(out[0], 24000) - 440.0) <= 1.0


def test_wav_at_44101_hz(tmp_path, small_kernels_only):
    path = tmp_path / "odd_rate.wav"
    x = tone(44101, seconds=24_000 / 44101)  # 24000 int16 samples: a 48 KB file
    sf.write(path, x[0].numpy(), 44101, subtype="PCM_16")
    start = time.perf_counter()
    out = audio_io.to_model_input(path, target_rate=24000, channels=1)
    assert time.perf_counter() - start < 5.0
    assert out.shape == (1, -(-24_000 * 24_000 // 44101))
    assert abs(peak_hz(out[0], 24000) - 440.0) <= 2.5


def wav_claiming_rate(path, rate: int):
    """A valid 16-bit mono WAV whose header says ``rate`` Hz."""
    sf.write(path, np.zeros(2400, np.int16), 24000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"fmt "
    data[24:28], data[28:32] = struct.pack("<I", rate), struct.pack("<I", 2 * rate)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("rate", [1_000_003, 999, 1])
def test_wav_header_rate_outside_the_range_refused_before_decoding(tmp_path, no_audio_decode, rate):
    path = wav_claiming_rate(tmp_path / "claims.wav", rate)
    with pytest.raises(InvalidInputError, match=r"1000 to 1000000 Hz") as err:
        audio_io.to_model_input(path, target_rate=24000, channels=1)
    assert err.value.item == str(path) and f"{rate} Hz" in str(err.value)


@pytest.mark.parametrize("rate", [999, 1_000_001])
def test_tensor_rate_outside_the_range_refused(rate):
    for call in (lambda x: audio_io.to_model_input(x, rate, target_rate=24000, channels=1),
                 lambda x: audio_io.to_model_input((x, rate), target_rate=24000, channels=1)):  # fmt: skip
        with pytest.raises(InvalidInputError, match="outside the supported range") as err:
            call(torch.zeros(1, 100))
        assert err.value.item == f"tensor(1, 100)@{rate}"


@pytest.mark.parametrize("rate", [1_000, 1_000_000])
def test_range_ends_accepted(rate, small_kernels_only):
    assert (audio_io.MIN_SAMPLE_RATE, audio_io.MAX_SAMPLE_RATE) == (1_000, 1_000_000)
    out = audio_io.to_model_input(torch.zeros(1, 2000), rate, target_rate=24000, channels=1)
    assert out.shape == (1, -(-2000 * 24000 // rate))


def test_policies_name_the_bounds():
    assert "\n" not in audio_io.POLICY and "1000-1000000 Hz" in audio_io.POLICY
    assert "\n" not in image_io.POLICY and "aspect <= 32:1" in image_io.POLICY
    assert "animated" in image_io.POLICY and "NaN" in image_io.POLICY


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_a_fifo_or_a_device_is_named_and_never_opened(modality, tmp_path):
    """A FIFO would block ``open`` forever and ``/dev/zero`` never ends: both are refused from
    ``os.stat`` alone, naming what they are (the read runs in a thread so a regression fails
    instead of hanging the suite)."""
    import os
    import threading

    fifo = tmp_path / f"pipe.{'png' if modality == 'image' else 'wav'}"
    os.mkfifo(fifo)
    read = (
        (lambda p: image_io.to_model_input(p, 32))
        if modality == "image"
        else (lambda p: audio_io.to_model_input(p, target_rate=24000, channels=1))
    )
    for path, kind in ((fifo, "FIFO"), ("/dev/zero", "character device")):
        errors: list[BaseException] = []

        def attempt(path=path, errors=errors):
            try:
                read(path)
            except BaseException as err:  # recorded for the main thread
                errors.append(err)

        worker = threading.Thread(target=attempt, daemon=True)
        worker.start()
        worker.join(timeout=10)
        assert not worker.is_alive(), f"{path} was opened"
        assert isinstance(errors[0], InvalidInputError) and f"is a {kind}" in str(errors[0])
        assert str(path) in str(errors[0])
