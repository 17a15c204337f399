"""``tmm-decode``: decode token files back to text (``.txt``), images (``.png``) or audio (``.wav``).

Naming: the token file's name less ``.tokens.safetensors`` (or ``.safetensors``) is the source's
name; the decoded file keeps it when it already ends in the output suffix (``a.txt``, ``x.png``,
``s.wav``) and appends the suffix otherwise (``photo.jpg`` -> ``photo.jpg.png``, ``song.mp3`` ->
``song.mp3.wav``), so ``photo.png`` and ``photo.jpg`` decode to two files. Separate inputs that
yield the same name go under ``<input position>/`` as in ``tmm-encode``; any collision left
refuses the run before anything is written.

Each token file must have been written by this tokenizer: the same ``kind`` and the same
``tokenizer_sha256`` (the sha256 of the artifact's ``manifest.json``, recorded by ``tmm-encode``).
A file without that hash (not written by ``tmm-encode``) is refused unless ``allow_unverified=true``,
and then decoded with a note.

A decoded file has its source's name, so decoding into a folder that holds the sources would
replace them: outputs that exist already refuse the run before anything is written, unless
``overwrite=true``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from tokenize_mm.cli.common import config_dir
from tokenize_mm.cli.errors import exits_cleanly
from tokenize_mm.cli.files import process_files
from tokenize_mm.cli.help import run_or_help
from tokenize_mm.core.atomic import write_atomic, write_bytes_atomic
from tokenize_mm.tokenizers import load_tokenizer
from tokenize_mm.tokenizers.audio.io import save_wav
from tokenize_mm.tokenizers.base import TokenizerInfo
from tokenize_mm.tokenizers.image.io import to_pil
from tokenize_mm.tokenizers.token_file import (
    SUFFIX,
    check_written_by,
    load_encoded,
    tokenizer_sha256,
)

OUTPUT_SUFFIX = {"text": ".txt", "image": ".png", "audio": ".wav"}


def decoded_name(rel: Path, modality: str) -> Path:
    """The decoded file of a token file: the source's name, with the output suffix appended
    unless it already ends in it."""
    name = rel.name.removesuffix(SUFFIX).removesuffix(".safetensors")
    suffix = OUTPUT_SUFFIX[modality]
    if Path(name).suffix.lower() != suffix:
        name += suffix
    return rel.with_name(name)


def write_decoded(decoded, info: TokenizerInfo, target: Path) -> Path:
    """Write a decoded item to ``target`` atomically: text as UTF-8, images as PNG, audio as
    16-bit WAV."""
    if info.modality == "text":
        return write_bytes_atomic(target, decoded.encode("utf-8"))
    if info.modality == "audio":
        return save_wav(target, decoded, info.sample_rate)
    image = to_pil(decoded)
    return write_atomic(target, lambda tmp: image.save(tmp, format="PNG"))


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="decode")
@exits_cleanly("tmm-decode")
def hydra_main(cfg: DictConfig) -> None:
    tokenizer = load_tokenizer(cfg.tokenizer_dir)
    sha256 = tokenizer_sha256(cfg.tokenizer_dir)
    modality = tokenizer.info.modality

    def work(path: Path, target: Path) -> str | None:
        encoded, meta = load_encoded(path)
        verified = check_written_by(
            meta, kind=tokenizer.kind, sha256=sha256, name=str(path),
            allow_unverified=cfg.allow_unverified,
        )  # fmt: skip
        write_decoded(tokenizer.decode(encoded), tokenizer.info, target)
        return None if verified else f"{path}: no tokenizer_sha256; decoded without checking it"

    def rename(rel: Path) -> Path:
        return decoded_name(rel, modality)

    out_dir = Path(cfg.out_dir)
    process_files(
        cfg.inputs, (".safetensors",), rename, work, "decode", out_dir, overwrite=cfg.overwrite
    )


def main() -> None:
    """``tmm-decode``: ``--help`` is ``cli/help.py``'s; anything else goes to Hydra."""
    run_or_help(hydra_main, "decode")


if __name__ == "__main__":
    main()
