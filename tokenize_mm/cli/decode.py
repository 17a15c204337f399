"""``tmm-decode``: decode token files back to text (``.txt``) or images (``.png``)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig
from tqdm import tqdm

from tokenize_mm.cli.common import config_dir
from tokenize_mm.cli.encode import expand_inputs
from tokenize_mm.tokenizers import InvalidInputError, load_tokenizer
from tokenize_mm.tokenizers.image_io import to_pil
from tokenize_mm.tokenizers.token_file import SUFFIX, load_encoded


def write_decoded(decoded, modality: str, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    if modality == "text":
        target = target.with_suffix(".txt")
        target.write_bytes(decoded.encode("utf-8"))
    else:
        target = target.with_suffix(".png")
        to_pil(decoded).save(target)
    return target


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="decode")
def main(cfg: DictConfig) -> None:
    tokenizer = load_tokenizer(cfg.tokenizer_dir)
    modality = tokenizer.info.modality
    inputs = [cfg.inputs] if isinstance(cfg.inputs, str) else list(cfg.inputs)
    files = expand_inputs(inputs, (".safetensors",))
    out_dir = Path(cfg.out_dir)
    failures: list[str] = []
    for path, rel in tqdm(files, desc=f"decode {modality}", unit="file"):
        try:
            encoded, meta = load_encoded(path)
            if meta.get("kind") != tokenizer.kind:
                raise InvalidInputError(
                    f"written by a {meta.get('kind')!r} tokenizer, not {tokenizer.kind!r}; "
                    "decode it with the tokenizer that encoded it",
                    item=str(path),
                )
            decoded = tokenizer.decode(encoded)
        except InvalidInputError as err:
            failures.append(str(err))
            continue
        stem = str(rel).removesuffix(SUFFIX).removesuffix(".safetensors")
        write_decoded(decoded, modality, out_dir / stem)
    print(f"decoded {len(files) - len(failures)} of {len(files)} files into {out_dir}")
    if failures:
        print(f"{len(failures)} failed:", *failures, sep="\n  ", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
