"""``tmm-fit-tokenizer``: fit one tokenizer on a source and save its artifact."""

from __future__ import annotations

import sys
from typing import TextIO

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from tokenize_mm.cli.common import config_dir, fit_from_source, rates_table
from tokenize_mm.cli.errors import exits_cleanly
from tokenize_mm.cli.help import run_or_help
from tokenize_mm.cli.validate import check_fit_device
from tokenize_mm.core.atomic import check_replaceable
from tokenize_mm.core.errors import TokenizeMMError
from tokenize_mm.tokenizers.artifact import ARTIFACT_WHAT, is_artifact_dir


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="fit_tokenizer")
@exits_cleanly("tmm-fit-tokenizer")
def hydra_main(cfg: DictConfig) -> None:
    check_fit_device(cfg.tokenizer, config_dir())  # before reading the source
    # before the fit: never replace a folder that is not an artifact (nor lose a fit to that)
    check_replaceable(cfg.out_dir, is_artifact_dir, ARTIFACT_WHAT)
    source = instantiate(cfg.source)
    try:
        tokenizer = fit_from_source(
            instantiate(cfg.tokenizer.fit),
            cfg.tokenizer.modality,
            source,
            cfg.fit_split,
            cfg.eval_split,
        )
    except TokenizeMMError:
        _print_skipped(source, sys.stderr)  # the records left out may be why the fit failed
        raise
    path = tokenizer.save(cfg.out_dir)
    _print_skipped(source, sys.stdout)
    print(rates_table({cfg.tokenizer.name: tokenizer.info}))
    print(f"saved {path}")


SHOWN_SKIPS = 5  # records named after the counts; the manifest source keeps them all


def _print_skipped(source, stream: TextIO) -> None:
    """The records a manifest source left out: counts by reason, then the first few by line, id
    and detail (nothing for sources that skip nothing)."""
    counts = getattr(source, "skip_counts", lambda: {})()
    if not counts:
        return
    print(f"skipped records by reason: {dict(counts)}", file=stream)
    records = list(getattr(source, "skipped", []))
    for record in records[:SHOWN_SKIPS]:
        print(f"  {record}", file=stream)
    if len(records) > SHOWN_SKIPS:
        print(f"  and {len(records) - SHOWN_SKIPS} more", file=stream)


def main() -> None:
    """``tmm-fit-tokenizer``: ``--help`` is ``cli/help.py``'s; anything else goes to Hydra."""
    run_or_help(hydra_main, "fit_tokenizer")


if __name__ == "__main__":
    main()
