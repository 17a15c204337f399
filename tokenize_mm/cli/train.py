"""``make train``: the main job.

Until balanced training lands (issue 5) the main job fits the text and image tokenizers on the
built-in data, saves their artifacts and prints their token rates.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from tokenize_mm.cli.common import config_dir, fit_from_source, rates_table


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> None:
    source = instantiate(cfg.source)
    infos = {}
    for key in ("text_tokenizer", "image_tokenizer"):
        tcfg = cfg[key]
        print(f"fitting {tcfg.name} on {type(source).__name__} ...", flush=True)
        tok = fit_from_source(instantiate(tcfg.fit), tcfg.modality, source, cfg.fit_split)
        tok.save(Path(cfg.out_dir) / "tokenizers" / tcfg.name)
        infos[tcfg.name] = tok.info
    table = rates_table(infos)
    (Path(cfg.out_dir) / "rates.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    print(f"artifacts and rates.md in {cfg.out_dir}")


if __name__ == "__main__":
    main()
