"""``tmm-pretokenize``: tokenize a source once into a memory-mapped store, with its accounting.

Runs this shard (``shard_index`` of ``num_shards``) over ``workers`` processes into
``out_dir/parts/``; a killed run started again finishes only what is missing, provided it is the
same job (same source, ``chunk_size``, shard, ``audio_pattern``, span order and tokenizers: the
part's ``plan.json``; otherwise ``StoreResumeError`` names what differs). With
``num_shards: 1`` (or ``merge: true`` once every shard is done) it then merges the parts and writes
the token-accounting report (``<out_dir>/accounting.{md,json,png}``).
"""

from __future__ import annotations

import shlex
import sys

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm import tqdm

from tokenize_mm.cli.common import config_dir
from tokenize_mm.cli.errors import exits_cleanly
from tokenize_mm.cli.help import run_or_help


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="pretokenize")
@exits_cleanly("tmm-pretokenize")
def hydra_main(cfg: DictConfig) -> None:
    from tokenize_mm.data.accounting import markdown, write_report
    from tokenize_mm.data.store import TokenStore, merge_store, pretokenize
    from tokenize_mm.sequence.interleave import SpanOrder

    source = instantiate(cfg.source)
    dirs = {m: str(d) for m, d in cfg.tokenizers.items() if d is not None}
    bar = tqdm(desc=f"pretokenize shard {cfg.shard_index}/{cfg.num_shards}", unit="chunk")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    pretokenize(
        source, dirs, cfg.out_dir, audio_pattern=cfg.audio_pattern,
        order=SpanOrder(cfg.span_order, seed=cfg.seed), chunk_size=cfg.chunk_size,
        workers=cfg.workers, shard_index=cfg.shard_index, num_shards=cfg.num_shards,
        progress=progress,
    )  # fmt: skip
    bar.close()
    if cfg.merge or cfg.num_shards == 1:
        merge_store(cfg.out_dir)
        report = write_report(
            TokenStore(cfg.out_dir), f"{cfg.out_dir}/accounting", shlex.join(sys.orig_argv)
        )
        print(markdown(report))


def main() -> None:
    """``tmm-pretokenize``: ``--help`` is ``cli/help.py``'s; anything else goes to Hydra."""
    run_or_help(hydra_main, "pretokenize")


if __name__ == "__main__":
    main()
