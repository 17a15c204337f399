"""``tmm-decode``: decode token files back to text (``.txt``) or images (``.png``)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from tokenize_mm.cli.common import config_dir, expand_inputs, process_files
from tokenize_mm.tokenizers import InvalidInputError, load_tokenizer
from tokenize_mm.tokenizers.audio_io import save_wav
from tokenize_mm.tokenizers.base import TokenizerInfo
from tokenize_mm.tokenizers.image_io import to_pil
from tokenize_mm.tokenizers.token_file import SUFFIX, load_encoded


def write_decoded(decoded, info: TokenizerInfo, target: Path) -> Path:
    """Write a decoded item: text as UTF-8 ``.txt``, images as ``.png``, audio as 16-bit ``.wav``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if info.modality == "text":
        target = target.with_suffix(".txt")
        target.write_bytes(decoded.encode("utf-8"))
    elif info.modality == "audio":
        target = save_wav(target.with_suffix(".wav"), decoded, info.sample_rate)
    else:
        target = target.with_suffix(".png")
        to_pil(decoded).save(target)
    return target


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="decode")
def main(cfg: DictConfig) -> None:
    tokenizer = load_tokenizer(cfg.tokenizer_dir)
    out_dir = Path(cfg.out_dir)

    def work(path: Path, rel: Path) -> None:
        encoded, meta = load_encoded(path)
        if meta.get("kind") != tokenizer.kind:
            raise InvalidInputError(
                f"written by a {meta.get('kind')!r} tokenizer, not {tokenizer.kind!r}; "
                "decode it with the tokenizer that encoded it",
                item=str(path),
            )
        stem = str(rel).removesuffix(SUFFIX).removesuffix(".safetensors")
        write_decoded(tokenizer.decode(encoded), tokenizer.info, out_dir / stem)

    process_files(expand_inputs(cfg.inputs, (".safetensors",)), work, "decode", out_dir)


if __name__ == "__main__":
    main()
