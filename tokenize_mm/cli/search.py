"""``tmm-search``: index a folder or manifest with a trained model, then search it by text, image
or audio.

With ``inputs=...`` the items under it are embedded and written to ``index_dir=...`` (every file or
record not indexed is listed with its reason); with ``query=...`` (a text) or ``file=...`` (an
image, audio or text file) the index is searched and the top ``k`` printed with their cosine
similarity; ``sheet=hits.png`` writes a contact sheet of the image hits. Errors that name the
item (an unreadable query file, an index of another model, an empty index) end the command with
exit status 1 and one line on stderr, no traceback.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from tokenize_mm.cli.common import config_dir
from tokenize_mm.cli.errors import exits_cleanly
from tokenize_mm.cli.help import run_or_help
from tokenize_mm.core.atomic import check_replaceable
from tokenize_mm.core.modalities import MODALITIES


def run(cfg: DictConfig) -> list:
    """Build and/or query as ``cfg`` says; returns the hits of the query (if any)."""
    from tokenize_mm.models.bundle import load_trained_model
    from tokenize_mm.search import EmbeddingIndex, ItemEmbedder, build_index, collect_items
    from tokenize_mm.search.embed import Item, file_item
    from tokenize_mm.search.errors import SearchError
    from tokenize_mm.search.index import INDEX_WHAT, is_index_dir
    from tokenize_mm.search.sheet import contact_sheet

    if cfg.inputs is None and cfg.query is None and cfg.file is None:
        raise SearchError("nothing to do: give inputs=<folder or manifest> to index, "
                          "or query=<text> / file=<path> to search")  # fmt: skip
    if cfg.query is not None and cfg.file is not None:
        raise SearchError("give query=<text> or file=<path>, not both")
    if cfg.modality not in (None, *MODALITIES):
        raise SearchError(
            f"modality={cfg.modality}: must be one of {', '.join(MODALITIES)} (or null)"
        )
    if isinstance(cfg.k, bool) or not isinstance(cfg.k, int) or cfg.k < 1:
        raise SearchError(f"k={cfg.k!r}: must be a whole number of hits, at least 1")
    if cfg.inputs is not None:  # before any work: never replace a folder that is not an index
        check_replaceable(cfg.index_dir, is_index_dir, INDEX_WHAT)
    trained = load_trained_model(cfg.model_dir)
    if cfg.inputs is not None:
        items, skipped = collect_items(cfg.inputs)
        index = build_index(trained, items, skipped)
        index.save(cfg.index_dir)
        counts = {
            m: sum(it["modality"] == m for it in index.items) for m in ("text", "image", "audio")
        }
        truncated = sum(it["truncated"] for it in index.items)
        print(f"indexed {len(index)} items from {cfg.inputs} into {cfg.index_dir}: "
              + ", ".join(f"{n} {m}" for m, n in counts.items())
              + (f"; {truncated} embedded from their beginning (longer than the model's context)"
                 if truncated else ""))  # fmt: skip
        for reason in index.skipped:
            print(f"  not indexed: {reason}")
    if cfg.query is None and cfg.file is None:
        return []
    index = EmbeddingIndex.load(cfg.index_dir)
    index.check_model(trained)
    item = (
        Item("query", "text", str(cfg.query))
        if cfg.query is not None
        else file_item(Path(cfg.file))
    )
    vector, _ = ItemEmbedder(trained)(item)
    hits = index.search(vector, k=cfg.k, modality=cfg.modality, backend=cfg.backend)
    print(f"top {len(hits)} for the {item.modality} query {cfg.query or cfg.file!r}:")
    for hit in hits:
        what = hit.item["path"] or repr(hit.item["text"])
        print(
            f"{hit.rank:>3}  {hit.score:+.3f}  {hit.item['modality']:<5}  {hit.item['id']}  {what}"
        )
    if cfg.sheet:
        print(f"contact sheet: {contact_sheet(hits, cfg.sheet)}")
    return hits


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="search")
@exits_cleanly("tmm-search")
def hydra_main(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    """``tmm-search``: ``--help`` is ``cli/help.py``'s; anything else goes to Hydra."""
    run_or_help(hydra_main, "search")


if __name__ == "__main__":
    main()
