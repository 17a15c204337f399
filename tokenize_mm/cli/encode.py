"""``tmm-encode``: encode files to token files, with a progress bar.

Inputs are files or folders. A folder contributes every file under it that the tokenizer reads
(text: ``.txt``; images: ``tokenizers.image.io.IMAGE_SUFFIXES``; audio: every format soundfile
reads, ``.mp3`` included); a file named explicitly is always attempted, whatever its suffix.

Naming: a token file is the source's full name (relative to its folder input, subfolders kept)
plus ``.tokens.safetensors``: ``photos/a/x.png`` given as ``photos/`` becomes
``<out_dir>/a/x.png.tokens.safetensors``, so ``x.png`` and ``x.jpg`` stay apart. When separate
inputs yield the same name (``'inputs=[a/x.png,b/x.png]'``), each goes under a folder named after
its input's position: ``0/x.png.tokens.safetensors`` and ``1/x.png.tokens.safetensors``. Any
collision left refuses the run before anything is written.

Every input either yields a token file or is listed with its error at the end (the exit status is
then 1); nothing is skipped silently. The count printed is the number of token files written.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from tokenize_mm.cli.common import config_dir
from tokenize_mm.cli.errors import exits_cleanly
from tokenize_mm.cli.files import encodable_suffixes, process_files
from tokenize_mm.cli.help import run_or_help
from tokenize_mm.tokenizers import InvalidInputError, load_tokenizer
from tokenize_mm.tokenizers.token_file import SUFFIX, save_encoded, tokenizer_sha256


def read_item(path: Path, modality: str):
    """What ``encode`` takes for a file: its text (UTF-8) for text, else the path."""
    if modality == "text":
        try:
            return path.read_bytes().decode("utf-8")
        except OSError as err:
            raise InvalidInputError(
                f"cannot read the file ({err.strerror or err})", item=str(path)
            ) from err
        except UnicodeDecodeError as err:
            raise InvalidInputError(f"file is not valid UTF-8 ({err})", item=str(path)) from err
    return path


def token_file_name(rel: Path) -> Path:
    """The token file of a source: its full name plus ``.tokens.safetensors``."""
    return rel.with_name(rel.name + SUFFIX)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="encode")
@exits_cleanly("tmm-encode")
def hydra_main(cfg: DictConfig) -> None:
    tokenizer = load_tokenizer(cfg.tokenizer_dir)
    modality = tokenizer.info.modality
    meta = {"kind": tokenizer.kind, "tokenizer_sha256": tokenizer_sha256(cfg.tokenizer_dir)}

    def work(path: Path, target: Path) -> None:
        encoded = tokenizer.encode(read_item(path, modality))
        save_encoded(target, encoded, {**meta, "source": str(path)})

    out_dir = Path(cfg.out_dir)
    process_files(
        cfg.inputs, encodable_suffixes(modality), token_file_name, work, "encode", out_dir
    )


def main() -> None:
    """``tmm-encode``: ``--help`` is ``cli/help.py``'s; anything else goes to Hydra."""
    run_or_help(hydra_main, "encode")


if __name__ == "__main__":
    main()
