"""``tmm-fit-tokenizer``: fit one tokenizer on a source and save its artifact."""

from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from tokenize_mm.cli.common import config_dir, fit_from_source, rates_table
from tokenize_mm.cli.help import run_or_help
from tokenize_mm.cli.validate import check_fit_device


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="fit_tokenizer")
def hydra_main(cfg: DictConfig) -> None:
    check_fit_device(cfg.tokenizer, config_dir())  # before reading the source
    source = instantiate(cfg.source)
    tokenizer = fit_from_source(
        instantiate(cfg.tokenizer.fit),
        cfg.tokenizer.modality,
        source,
        cfg.fit_split,
        cfg.eval_split,
    )
    path = tokenizer.save(cfg.out_dir)
    skipped = getattr(source, "skip_counts", lambda: {})()
    if skipped:
        print(f"skipped records by reason: {dict(skipped)}")
    print(rates_table({cfg.tokenizer.name: tokenizer.info}))
    print(f"saved {path}")


def main() -> None:
    """``tmm-fit-tokenizer``: ``--help`` is ``cli/help.py``'s; anything else goes to Hydra."""
    run_or_help(hydra_main, "fit_tokenizer")


if __name__ == "__main__":
    main()
