"""Training the SentencePiece model of ``TextTokenizer.fit`` (imported only by it).

What the trainer sees (``training_sentences``): the segments between literal "▁" (as encode sees
them) and "▅" (the trainer drops sentences holding it), cut at character boundaries to at most
``max_sentence_length`` bytes (it silently drops longer ones). How it trains (``train_model``):
byte fallback, no normalization, no dummy prefix, "▁" forced into the vocabulary, no bos/eos
(sequence specials belong to the vocabulary layout): the options that make round trips exact.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import sentencepiece as spm

from tokenize_mm.tokenizers.errors import NotFittedError
from tokenize_mm.tokenizers.text.io import MARK, RARE


@dataclasses.dataclass
class SegmentCount:
    """What ``training_sentences`` gave the trainer (the fit's record, ``fit_data``): segments,
    how many of them are pieces of a longer segment cut at ``max_bytes``, and their UTF-8 bytes."""

    segments: int = 0
    cut: int = 0
    bytes: int = 0

    def add(self, segment: str, cut: bool) -> str:
        self.segments += 1
        self.cut += cut
        self.bytes += len(segment.encode("utf-8"))
        return segment


def training_sentences(
    corpus: Iterable[str], max_bytes: int, count: SegmentCount | None = None
) -> Iterator[str]:
    """What the trainer sees: the segments between literal marks (as encode sees them) and "▅",
    cut into pieces of at most ``max_bytes`` UTF-8 bytes, so that the trainer drops none.
    ``count``, when given, counts them as they are consumed."""
    count = count if count is not None else SegmentCount()
    for text in corpus:
        for seg in text.replace(RARE, MARK).split(MARK):
            # fits as is (at most 4 bytes a character, else measured); else cut into pieces
            if len(seg) * 4 <= max_bytes or len(seg.encode("utf-8")) <= max_bytes:
                if seg:
                    yield count.add(seg, cut=False)
                continue
            data, start = seg.encode("utf-8"), 0
            while start < len(data):
                end = min(start + max_bytes, len(data))
                while end < len(data) and data[end] & 0xC0 == 0x80:  # inside a character
                    end -= 1
                yield count.add(data[start:end].decode("utf-8"), cut=True)
                start = end


def train_model(
    corpus: list[str],
    hparams: Mapping[str, Any],
    num_threads: int,
    num_items: int,
    count: SegmentCount | None = None,
) -> bytes:
    """The serialized SentencePiece model trained on ``corpus`` (sentences) with ``hparams``
    (checked by the caller; ``seed`` seeds sentencepiece's process-wide generator). ``count``
    receives what the trainer read (``training_sentences``).

    Raises:
        NotFittedError: no non-empty text among the ``num_items`` fit items, or sentencepiece
            could not train on it.
    """
    sentences = training_sentences(corpus, hparams["max_sentence_length"], count)
    first = next(sentences, None)
    if first is None:
        raise NotFittedError(f"fit got {num_items} items but no non-empty text to learn from")
    model = io.BytesIO()
    spm.set_random_generator_seed(hparams["seed"])
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=itertools.chain([first], sentences),
            model_writer=model,
            **{k: v for k, v in hparams.items() if k != "seed"},
            num_threads=num_threads,
            byte_fallback=True,
            required_chars=MARK,  # else a corpus without spaces spells " " as bytes of "▁"
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            unk_id=0,
            bos_id=-1,  # sequence specials belong to the vocab layout, not to the tokenizer
            eos_id=-1,
            minloglevel=2,
        )
    except RuntimeError as err:  # drop "INTERNAL: src/x.cc(638) [check] " before a message
        reason = str(err).rpartition("] ")[2].strip() or str(err)
        if "vocab_size" in reason.lower() or "vocabulary size" in reason.lower():
            # its advice names its own flags; these are TextTokenizer.fit's arguments (and
            # tmm-fit-tokenizer's tokenizer.fit.<name>=... overrides)
            reason += (
                " (that is TextTokenizer.fit's vocab_size, asked "
                f"{hparams.get('vocab_size')}, or its character_coverage, "
                f"{hparams.get('character_coverage')}; on the command line "
                "tokenizer.fit.vocab_size=... or tokenizer.fit.character_coverage=...)"
            )
        raise NotFittedError(f"SentencePiece could not train on this data: {reason}") from err
    return model.getvalue()
