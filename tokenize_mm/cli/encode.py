"""``tmm-encode``: encode files to token files (``<name>.tokens.safetensors``), with a progress bar.

Every input either yields a token file or is listed with its error at the end (the exit status is
then 1); nothing is skipped silently.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from tokenize_mm.cli.common import config_dir, expand_inputs, process_files
from tokenize_mm.tokenizers import InvalidInputError, load_tokenizer
from tokenize_mm.tokenizers.artifact import MANIFEST, sha256_file
from tokenize_mm.tokenizers.audio_io import AUDIO_SUFFIXES
from tokenize_mm.tokenizers.image_io import IMAGE_SUFFIXES
from tokenize_mm.tokenizers.token_file import SUFFIX, save_encoded

SUFFIXES = {"text": (".txt",), "image": IMAGE_SUFFIXES, "audio": AUDIO_SUFFIXES}


def read_item(path: Path, modality: str):
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


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="encode")
def main(cfg: DictConfig) -> None:
    tokenizer = load_tokenizer(cfg.tokenizer_dir)
    modality = tokenizer.info.modality
    meta = {
        "kind": tokenizer.kind,
        "tokenizer_sha256": sha256_file(Path(cfg.tokenizer_dir) / MANIFEST),
    }
    out_dir = Path(cfg.out_dir)

    def work(path: Path, rel: Path) -> None:
        encoded = tokenizer.encode(read_item(path, modality))
        save_encoded(out_dir / (str(rel) + SUFFIX), encoded, {**meta, "source": str(path)})

    files = expand_inputs(cfg.inputs, SUFFIXES.get(modality, ()))
    process_files(files, work, "encode", out_dir)


if __name__ == "__main__":
    main()
