"""Audio input policy: every accepted input becomes a float32 tensor (channels, S) at one rate.

One documented policy for all inputs (files and tensors):

1. **Reading.** A path to a ``.wav``, ``.flac`` or ``.ogg`` file is decoded with soundfile
   (libsndfile; ``torchaudio.load`` needs torchcodec from torchaudio 2.9 on, so it is not used). The
   sample rate comes from the file. A missing, empty, unreadable, corrupt or truncated file (a WAV
   whose ``data`` chunk is shorter than its header says) and a file with zero frames are errors,
   never partial audio. A ``sample_rate`` given along with a path must equal the file's rate.
2. **Samples.** Integer PCM is scaled to [-1, 1) (int16: x / 32768, for files and tensors alike);
   float samples (float16/32/64, bfloat16) are kept as they are, in float32. Any finite float is
   accepted: codecs are trained on [-1, 1], but louder input is neither clipped nor rescaled. NaN or
   Inf is refused. Silence is valid input.
3. **Channels.** For a mono model (``channels == 1``) the channels are averaged; for a stereo model
   (``channels == 2``) mono is duplicated and stereo kept. Any other mismatch is refused.
4. **Rate.** Sample rates from ``MIN_SAMPLE_RATE`` (1,000 Hz) to ``MAX_SAMPLE_RATE``
   (1,000,000 Hz) are accepted; others are refused (a file's rate is read from its header, before
   any decoding). Audio is resampled to the model rate by ``resample.resample``: torchaudio's
   band-limited sinc filter (Hann window, width 6, rolloff 0.99), through
   ``torchaudio.functional.resample`` when its tabulated kernel is small (the usual rates), else the
   same filter evaluated directly, chunk by chunk (nearly coprime rates such as 24001 → 24000,
   whose kernel would take gigabytes). S samples at rate r become exactly ceil(S · target / r)
   samples; memory stays bounded by the input and output plus about 150 MiB at most for the
   filter, whatever the two rates.

Tensors are (S,) (mono) or (C, S) (channels first) with an explicit sample rate: ``(wav, rate)`` or
``to_model_input(wav, rate, ...)``. Other dtypes, 3-D batches and empty audio are refused with
``InvalidInputError`` naming the item and the fix.

Frame counts follow one exact rule for every audio backend (``num_frames``): S samples at rate r
give ceil(S · frame_rate / r) frames, computed in rational arithmetic so that no float rounding
adds or drops a frame.
"""

from __future__ import annotations

import contextlib
import math
import operator
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from tokenize_mm.core.atomic import write_atomic
from tokenize_mm.core.files import input_file_problem
from tokenize_mm.tokenizers.audio.resample import resample
from tokenize_mm.tokenizers.errors import InvalidInputError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
POLICY = (
    "soundfile decode (wav/flac/ogg), rate from the file; int16 scaled by 1/32768, float kept "
    "(finite, not clipped or rescaled); channels averaged to mono (mono duplicated for stereo); "
    "rates 1000-1000000 Hz; resample (torchaudio's sinc, Hann window, width 6, rolloff 0.99; "
    "evaluated directly in bounded memory for nearly coprime rates) to sample_rate, "
    "ceil(S * sample_rate / rate) samples; tensors (C, S) or (S,) with an explicit sample rate"
)
# More channels than this is almost surely a (S, C) tensor passed the wrong way round.
MAX_CHANNELS = 64
# Supported input sample rates, in Hz. Below 1 kHz hardly any audio is recorded, and upsampling
# from there multiplies the length (1 Hz → 24 kHz: 24000 times); above 1 MHz (past the 768 kHz of
# the fastest audio converters) a header is more likely corrupt or hostile than real.
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 1_000_000
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def describe(item: Any, sample_rate: int | None = None) -> str:
    """A short name for an item, used in error messages: the path, or ``tensor(C, S)@rate``."""
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], torch.Tensor):
        item, sample_rate = item
    if isinstance(item, torch.Tensor):
        rate = f"@{sample_rate}" if isinstance(sample_rate, int) else ""
        return f"tensor{tuple(item.shape)}{rate}"
    return type(item).__name__


def _wav_truncation(path: Path) -> str | None:
    """Why a RIFF/WAVE file is truncated (its ``data`` chunk is shorter than declared), or None.

    libsndfile silently reads what is there, so a cut-off download would otherwise pass as a
    shorter recording. Streaming writers mark an unknown length with 0 or 0xFFFFFFFF; those pass.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            chunk_id, chunk_size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if chunk_id == b"data":
                available = size - pos - 8
                if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > available:
                    return (
                        f"data chunk declares {chunk_size} bytes but only {available} are present"
                    )
                return None
            pos += 8 + chunk_size + (chunk_size & 1)  # chunks are padded to an even size
    return None


def load_audio(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """Decode an audio file with soundfile.

    Args:
        path: a ``.wav``, ``.flac`` or ``.ogg`` file (any format libsndfile reads is accepted).

    Returns:
        ``(wav, sample_rate)``: float32 tensor (C, S), channels first, integer PCM scaled to
        [-1, 1) (int16 by 1/32768), float samples unchanged; and the file's sample rate in Hz.

    Raises:
        InvalidInputError: naming the file, if it is missing, a directory, empty, not audio,
            corrupt, truncated, has zero frames, or a sample rate outside ``MIN_SAMPLE_RATE`` to
            ``MAX_SAMPLE_RATE`` (checked from the header, before decoding).
    """
    name = str(path)
    p = Path(path)
    if (problem := input_file_problem(p)) is not None:
        raise InvalidInputError(f"{problem}; pass an audio file", item=name)
    with _read_errors(name):
        truncated = _wav_truncation(p)
        if truncated is not None:
            raise InvalidInputError(f"WAV file is truncated ({truncated})", item=name)
        check_rate_range(sf.info(str(p)).samplerate, name)  # from the header, before decoding
        data, rate = sf.read(p, dtype="float32", always_2d=True)  # (S, C)
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise InvalidInputError("audio file has zero frames", item=name)
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(rate)


@contextlib.contextmanager
def _read_errors(name: str) -> Iterator[None]:
    """Turn soundfile's and the OS's errors while reading ``name`` into ``InvalidInputError``."""
    try:
        yield
    except (sf.SoundFileError, RuntimeError) as err:
        raise InvalidInputError(
            f"not an audio file soundfile can read (unknown format or corrupt: {err}); "
            f"convert it to a format soundfile reads here (e.g. {', '.join(AUDIO_SUFFIXES)}; "
            "all of them: soundfile.available_formats())",
            item=name,
        ) from err
    except OSError as err:
        raise InvalidInputError(f"cannot read the file ({err})", item=name) from err


def check_rate_range(rate: int, name: str) -> int:
    """Refuse a sample rate outside ``MIN_SAMPLE_RATE`` to ``MAX_SAMPLE_RATE`` (Hz)."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InvalidInputError(
            f"sample rate {rate} Hz is outside the supported range {MIN_SAMPLE_RATE} to "
            f"{MAX_SAMPLE_RATE} Hz; resample the audio to a common rate (e.g. 16000, 24000 or "
            "48000 Hz) first, or fix the rate if it is wrong",
            item=name,
        )
    return rate


def _check_rate(sample_rate: Any, name: str) -> int:
    if isinstance(sample_rate, bool):
        sample_rate = None  # True is an int to Python, never a sample rate
    try:
        rate = operator.index(sample_rate)
    except TypeError:
        raise InvalidInputError(
            f"sample rate must be a positive integer in Hz, got {sample_rate!r}", item=name
        ) from None
    if rate <= 0:
        raise InvalidInputError(f"sample rate must be positive, got {rate}", item=name)
    return rate


def check_tensor(x: torch.Tensor, name: str) -> torch.Tensor:
    """Validate an audio tensor and return it as float32 (C, S) on the CPU.

    Args:
        x: (S,) or (C, S) tensor, float (kept) or int16 (scaled by 1/32768).
        name: how to name the item in errors.

    Raises:
        InvalidInputError: for another dtype, another shape, empty audio, or NaN / Inf values.
    """
    if x.dtype not in _FLOAT_DTYPES and x.dtype != torch.int16:
        raise InvalidInputError(
            f"audio tensor must be float (samples in [-1, 1]) or int16 PCM, got {x.dtype}; "
            "convert it, e.g. x.float() / 2**31 for int32 PCM or x.float() for other values",
            item=name,
        )
    if x.dim() not in (1, 2):
        hint = " (a batch? pass a list to encode_batch)" if x.dim() == 3 else ""
        raise InvalidInputError(
            f"audio tensor must have shape (S,) or (C, S), got {tuple(x.shape)}{hint}", item=name
        )
    if x.dim() == 1:
        x = x[None]
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InvalidInputError(
            f"audio tensor is empty (shape {tuple(x.shape)}); pass at least one sample", item=name
        )
    if x.shape[0] > MAX_CHANNELS:
        raise InvalidInputError(
            f"audio tensor has {x.shape[0]} channels (more than {MAX_CHANNELS}); tensors are "
            "channels first (C, S): did you pass (S, C)? use x.T",
            item=name,
        )
    x = x.detach().to("cpu")
    if x.dtype == torch.int16:
        return x.to(torch.float32) / 32768.0
    x = x.to(torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise InvalidInputError("audio contains NaN or Inf values", item=name)
    return x


def _match_channels(wav: torch.Tensor, channels: int, name: str) -> torch.Tensor:
    """(C, S) → (channels, S): average to mono, duplicate mono to stereo, otherwise refuse."""
    c = wav.shape[0]
    if c == channels:
        return wav
    if channels == 1:
        return wav.mean(dim=0, keepdim=True)
    if channels == 2 and c == 1:
        return wav.expand(2, -1)
    raise InvalidInputError(
        f"audio has {c} channels but the model takes {channels}; mix it down to mono or stereo "
        "first",
        item=name,
    )


def to_model_input(
    item: Any, sample_rate: int | None = None, *, target_rate: int, channels: int
) -> torch.Tensor:
    """Any accepted audio input → float32 tensor (channels, S') at ``target_rate``.

    Args:
        item: a path (str / os.PathLike), a tuple ``(wav, sample_rate)``, or a tensor (S,) or
            (C, S) with ``sample_rate`` given.
        sample_rate: the rate of a bare tensor, in Hz. For a path or a tuple it may be given only
            if it equals the rate they carry.
        target_rate: the model's sample rate; S' = ceil(S · target_rate / rate).
        channels: the model's channel count (1 or 2).

    Raises:
        InvalidInputError: naming the item, for unreadable files, invalid tensors, a missing,
            conflicting or unsupported sample rate, a channel mismatch, or an unsupported type.
    """
    name = describe(item, sample_rate)
    if isinstance(item, tuple):
        if len(item) != 2 or not isinstance(item[0], torch.Tensor):
            raise InvalidInputError(
                "an audio tuple must be (tensor (C, S), sample_rate)", item=name
            )
        rate = check_rate_range(_check_rate(item[1], name), name)
        if sample_rate is not None and _check_rate(sample_rate, name) != rate:
            raise InvalidInputError(
                f"sample_rate={sample_rate} conflicts with the rate {rate} in the tuple; "
                "give it once",
                item=name,
            )
        wav = check_tensor(item[0], name)
    elif isinstance(item, (str, os.PathLike)):
        wav, rate = load_audio(item)
        if sample_rate is not None and _check_rate(sample_rate, name) != rate:
            raise InvalidInputError(
                f"sample_rate={sample_rate} conflicts with the file's rate {rate} Hz; the rate of "
                "a file is read from the file, so leave sample_rate out",
                item=name,
            )
        wav = check_tensor(wav, name)  # float WAV files can hold NaN / Inf
    elif isinstance(item, torch.Tensor):
        if sample_rate is None:
            raise InvalidInputError(
                "an audio tensor needs its sample rate: pass (wav, sample_rate) or sample_rate=",
                item=name,
            )
        rate = check_rate_range(_check_rate(sample_rate, name), name)
        wav = check_tensor(item, name)
    else:
        raise InvalidInputError(
            f"unsupported audio input of type {type(item).__name__}; pass a path, a tuple "
            "(tensor (C, S), sample_rate), or a float tensor (C, S) with sample_rate=",
            item=name,
        )
    wav = _match_channels(wav, channels, name)  # mix first: resampling fewer channels is cheaper
    if rate != target_rate:
        wav = resample(wav, rate, target_rate)  # bounded memory for any pair of rates
    return wav.contiguous()


def save_wav(
    path: str | os.PathLike, wav: torch.Tensor, sample_rate: int, *, subtype: str = "PCM_16"
) -> Path:
    """Write a WAV file atomically (a temporary file in the same folder, then ``os.replace``).

    Args:
        path: destination, ending in ``.wav``; missing parent folders are created.
        wav: float tensor (C, S) or (S,) of finite samples.
        sample_rate: in Hz.
        subtype: ``"PCM_16"`` (samples clipped to [-1, 1) and rounded to int16 steps of 1/32768,
            so that ``load_audio`` reads them back within 1/65536) or ``"FLOAT"`` (32-bit, exact).

    Returns:
        The path written.
    """
    out = Path(path)
    name = str(out)
    if out.suffix.lower() != ".wav":
        raise InvalidInputError("save_wav writes WAV files; use a .wav suffix", item=name)
    if subtype not in ("PCM_16", "FLOAT"):
        raise InvalidInputError(f"subtype must be 'PCM_16' or 'FLOAT', got {subtype!r}", item=name)
    rate = _check_rate(sample_rate, name)
    x = check_tensor(wav, describe(wav, rate)).numpy().T  # (S, C) for soundfile
    if subtype == "PCM_16":
        data = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
    else:
        data = np.ascontiguousarray(x, dtype=np.float32)
    return write_atomic(out, lambda tmp: sf.write(tmp, data, rate, subtype=subtype, format="WAV"))


def iter_audio_files(folder: str | os.PathLike) -> list[Path]:
    """Audio files under ``folder`` (recursive), sorted for determinism."""
    root = Path(folder)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def num_frames(num_samples: int, sample_rate: int, frame_rate: float | Fraction) -> int:
    """Frames for ``num_samples`` at ``sample_rate``: ceil(duration × frame_rate), exactly.

    The product is taken in rational arithmetic. A float ``frame_rate`` is read as the nearest
    fraction with denominator at most 10**6, so 24000 / 360 (66.66…) counts as exactly 200/3; pass a
    ``Fraction`` to be explicit.

    Args:
        num_samples: S ≥ 0.
        sample_rate: r > 0, in Hz.
        frame_rate: steps per second, > 0.

    Returns:
        ceil(S · frame_rate / r).
    """
    s, r = operator.index(num_samples), operator.index(sample_rate)
    if s < 0 or r <= 0:
        raise ValueError(f"need num_samples >= 0 and sample_rate > 0, got {s} and {r}")
    if isinstance(frame_rate, float):
        if not math.isfinite(frame_rate):
            raise ValueError(f"frame_rate must be finite, got {frame_rate}")
        rate = Fraction(frame_rate).limit_denominator(10**6)
    else:
        rate = Fraction(frame_rate)
    if rate <= 0:
        raise ValueError(f"frame_rate must be positive, got {frame_rate}")
    return math.ceil(Fraction(s, r) * rate)
