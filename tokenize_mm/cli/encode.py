"""``tmm-encode``: encode files to token files (``<name>.tokens.safetensors``), with a progress bar.

Every input either yields a token file or is listed with its error at the end (the exit status is
then 1); nothing is skipped silently.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig
from tqdm import tqdm

from tokenize_mm.cli.common import config_dir
from tokenize_mm.tokenizers import InvalidInputError, load_tokenizer
from tokenize_mm.tokenizers.artifact import MANIFEST, sha256_file
from tokenize_mm.tokenizers.image_io import IMAGE_SUFFIXES
from tokenize_mm.tokenizers.token_file import SUFFIX, save_encoded

SUFFIXES = {"text": (".txt",), "image": IMAGE_SUFFIXES}


def expand_inputs(inputs: list[str], suffixes: tuple[str, ...]) -> list[tuple[Path, Path]]:
    """(file, name relative to its input) for each file; folders expand to matching files."""
    out = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
            )
            out += [(p, p.relative_to(path)) for p in files]
        else:
            out.append((path, Path(path.name)))
    return out


def read_item(path: Path, modality: str):
    if modality == "text":
        try:
            return path.read_bytes().decode("utf-8")
        except FileNotFoundError as err:
            raise InvalidInputError("file does not exist", item=str(path)) from err
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
    inputs = [cfg.inputs] if isinstance(cfg.inputs, str) else list(cfg.inputs)
    files = expand_inputs(inputs, SUFFIXES.get(modality, ()))
    out_dir = Path(cfg.out_dir)
    failures: list[str] = []
    for path, rel in tqdm(files, desc=f"encode {modality}", unit="file"):
        try:
            encoded = tokenizer.encode(read_item(path, modality))
        except InvalidInputError as err:
            failures.append(str(err))
            continue
        save_encoded(out_dir / (str(rel) + SUFFIX), encoded, {**meta, "source": str(path)})
    print(f"encoded {len(files) - len(failures)} of {len(files)} files into {out_dir}")
    if failures:
        print(f"{len(failures)} failed:", *failures, sep="\n  ", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
