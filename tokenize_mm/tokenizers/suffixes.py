"""Which files each tokenizer reads, by suffix: what folder expansion (``tmm-encode``,
``tmm-search``) takes from a folder. A file named explicitly is always attempted.
"""

from __future__ import annotations

from collections.abc import Mapping

import soundfile as sf

from tokenize_mm.tokenizers.audio.io import AUDIO_SUFFIXES
from tokenize_mm.tokenizers.image.io import IMAGE_SUFFIXES

# The file suffixes of each soundfile (libsndfile) format name. RAW (header-less, needs its
# parameters) and MAT4/MAT5 (``.mat`` files are mostly not audio) are left out; a format this map
# does not know is read from ``.<name>`` files.
SOUNDFILE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "WAV": (".wav",), "WAVEX": (".wav",), "FLAC": (".flac",), "OGG": (".ogg", ".oga", ".opus"),
    "MP3": (".mp3",), "AIFF": (".aiff", ".aif", ".aifc"), "AU": (".au", ".snd"), "CAF": (".caf",),
    "W64": (".w64",), "RF64": (".rf64",), "NIST": (".nist", ".sph"), "IRCAM": (".sf",),
    "VOC": (".voc",), "SVX": (".svx", ".8svx"), "PAF": (".paf",), "HTK": (".htk",),
    "SD2": (".sd2",), "SDS": (".sds",), "AVR": (".avr",), "PVF": (".pvf",), "WVE": (".wve",),
    "XI": (".xi",), "RAW": (), "MAT4": (), "MAT5": (), "MPC2K": (),
}  # fmt: skip


def audio_suffixes(formats: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The audio file suffixes ``load_audio`` reads: those of every format soundfile reports
    (``soundfile.available_formats()``, e.g. ``.mp3`` from libsndfile 1.1), and at least
    ``tokenizers.audio.io.AUDIO_SUFFIXES``."""
    formats = sf.available_formats() if formats is None else formats
    found = list(AUDIO_SUFFIXES)
    for name in formats:
        found += SOUNDFILE_SUFFIXES.get(name.upper(), (f".{name.lower()}",))
    return tuple(dict.fromkeys(found))


def encodable_suffixes(modality: str) -> tuple[str, ...]:
    """The suffixes of the files a tokenizer of ``modality`` reads, for expanding folders."""
    if modality == "text":
        return (".txt",)
    if modality == "image":
        return IMAGE_SUFFIXES
    if modality == "audio":
        return audio_suffixes()
    return ()
