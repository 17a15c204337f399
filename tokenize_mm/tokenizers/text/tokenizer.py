"""Text tokenizer: SentencePiece subwords with exact, lossless round trips.

The idea: learn subword pieces straight from raw text, with no language-specific pre-tokenizer
(Kudo & Richardson 2018, "SentencePiece: A simple and language independent subword tokenizer and
detokenizer for Neural Text Processing"), using either the unigram language model (Kudo 2018,
"Subword Regularization: Improving Neural Network Translation Models with Multiple Subword
Candidates") or BPE.

Exactness: ``decode(encode(s)) == s`` for every ``str`` that has a UTF-8 encoding. Nothing is
normalized (identity rule, no dummy prefix, no whitespace squeezing), and byte fallback spells any
character outside the vocabulary as its UTF-8 bytes, so ``<unk>`` never appears. One collision
remains: SentencePiece writes a space as U+2581 "▁" (its whitespace meta symbol), so a literal "▁"
would come back as a space. We cut the input at every literal "▁", encode the segments, and join
them with the byte-fallback ids of "▁" (E2 96 81), which decode to "▁" itself.

The package reads: the input policy (``io.py``), this tokenizer, and the trainer call and what the
trainer sees (``fit.py``, imported only by ``fit``).

Quirks of sentencepiece 0.2.x found by fuzzing, and what we do about each:
- A lone surrogate makes it raise an untyped RuntimeError: refused up front (InvalidInputError).
- Bytes that are not valid UTF-8 are silently replaced by U+FFFD: we decode bytes strictly.
- Training silently drops sentences longer than ``max_sentence_length`` bytes, and sentences that
  hold "▅" (U+2585, its rare-character stand-in), and fails when none is left: for training only,
  texts are cut at "▅" and at character boundaries to fit; encode has neither limit.
- If no space occurs in the fit data, "▁" gets no piece and a space is encoded as the byte pieces
  of "▁", which decode to "▁": we force "▁" into the vocabulary (``required_chars``).
- Training ignores NUL, so "\\x00" never gets a piece; it still round trips via byte fallback.
- A ``vocab_size`` above what the data supports fails under the hard limit; by default the limit
  is soft and ``info.codebook_size`` is the size actually learned.
- The trainer refuses out-of-range options (e.g. ``character_coverage`` < 0.98,
  ``input_sentence_size`` in [1, 100]) with empty messages: fit checks them first.
- The model proto records the trainer's ``num_threads``; the pieces do not depend on it.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import sentencepiece as spm
import torch

from tokenize_mm.tokenizers.artifact import Artifact, check_info, read_artifact, write_artifact
from tokenize_mm.tokenizers.base import Encoded, TokenizerInfo, check_codes, map_batch
from tokenize_mm.tokenizers.errors import ArtifactError, InvalidInputError
from tokenize_mm.tokenizers.packed_batch import EncodedBatch
from tokenize_mm.tokenizers.registry import register_tokenizer
from tokenize_mm.tokenizers.text.io import INPUT_POLICY, MARK, as_text, as_texts, read_fit_item

MODEL_FILE = "tokenizer.model"
MODEL_TYPES = ("unigram", "bpe")
_MIN_VOCAB = 258  # <unk> + 256 byte pieces + at least one learned piece
# Every wrapped model must return this exactly: runs of spaces, a combining mark, a full-width
# letter (NFKC would fold it), control characters and a literal mark.
_PROBE = "  a\u0301\uff21\t\x00\u2581b  "
_SEPARATOR = np.array([-1], dtype=np.int32).tobytes()  # between texts' ids in _packed_ids


def _default_num_threads() -> int:
    """Cores this process may use, capped at 8 (sentencepiece gains little beyond)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def _int_in(lo: int, hi: float = float("inf")) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


# Fit hyper-parameters: (test, what a valid value is).
_HPARAMS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "vocab_size": (_int_in(_MIN_VOCAB), f"an int >= {_MIN_VOCAB} (<unk>, 256 bytes, 1 piece)"),
    "model_type": (lambda v: v in MODEL_TYPES, f"one of {MODEL_TYPES}"),
    "character_coverage": (
        lambda v: isinstance(v, (int, float)) and 0.98 <= v <= 1,
        "in [0.98, 1]",
    ),
    "hard_vocab_limit": (lambda v: isinstance(v, bool), "a bool"),
    "seed": (_int_in(0, 2**32 - 2), "an int in [0, 2**32 - 2]"),
    "max_sentence_length": (_int_in(10, 2**30), "an int in [10, 2**30] (bytes)"),
    "input_sentence_size": (lambda v: _int_in(0)(v) and v not in range(1, 101), "0 (all) or > 100"),
    "num_threads": (_int_in(1, 1024), "an int in [1, 1024]"),
}


def _check_hparams(hparams: Mapping[str, Any]) -> None:
    for name, value in hparams.items():
        test, need = _HPARAMS[name]
        if not test(value):
            raise InvalidInputError(f"must be {need}", item=f"{name}={value!r}")


@register_tokenizer
class TextTokenizer:
    """SentencePiece (unigram or BPE) tokenizer; codes have shape (1, T).

    Build one with ``fit`` or ``load``. The constructor wraps a serialized SentencePiece model
    trained with byte fallback and no normalization (as ``fit`` trains it).

    Args:
        model_proto: the serialized model (the bytes of a ``.model`` file).
        chars_per_token: characters per token measured on the fit data.
        hparams: the fit hyper-parameters, kept for the artifact.
        fit_data: a description of the fit data, kept for the artifact.
        num_threads: threads for batch encode/decode; default: the usable cores, at most 8.

    Raises:
        ArtifactError: the bytes are not a SentencePiece model, or the model cannot round-trip.
    """

    kind: ClassVar[str] = "text.sentencepiece"

    def __init__(
        self,
        model_proto: bytes,
        *,
        chars_per_token: float | None = None,
        hparams: Mapping[str, Any] | None = None,
        fit_data: Mapping[str, Any] | None = None,
        num_threads: int | None = None,
    ) -> None:
        self.num_threads = _default_num_threads() if num_threads is None else num_threads
        _check_hparams({"num_threads": self.num_threads})
        self.hparams = dict(hparams or {})
        self.fit_data = dict(fit_data or {})
        self._proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(self._proto)
        except (RuntimeError, TypeError) as err:
            raise ArtifactError(f"not a SentencePiece model ({err})") from err
        self._mark_ids = [self._sp.piece_to_id(f"<0x{b:02X}>") for b in MARK.encode("utf-8")]
        self._buffer_batch = self._find_buffer_batch()
        exact = all(map(self._sp.is_byte, self._mark_ids))
        if not exact or self._decode(self._ids([_PROBE])) != [_PROBE]:
            raise ArtifactError(
                "this SentencePiece model cannot round-trip text exactly; train it with "
                "byte_fallback=True, normalization_rule_name='identity', add_dummy_prefix=False, "
                "remove_extra_whitespaces=False (TextTokenizer.fit does)"
            )
        self._info = TokenizerInfo(
            modality="text",
            kind=self.kind,
            codebook_size=self._sp.get_piece_size(),
            num_codebooks=1,
            chars_per_token=chars_per_token,
            input_policy=INPUT_POLICY,
        )

    @classmethod
    def fit(
        cls,
        texts: Iterable[str | bytes | os.PathLike],
        *,
        vocab_size: int = 8000,
        model_type: str = "unigram",
        character_coverage: float = 0.9995,
        hard_vocab_limit: bool = False,
        num_threads: int | None = None,
        seed: int = 0,
        max_sentence_length: int = 4192,
        input_sentence_size: int = 0,
        description: str | None = None,
    ) -> TextTokenizer:
        """Train a tokenizer in memory.

        Args:
            texts: items that are texts (``str``, or UTF-8 ``bytes``) or paths (``os.PathLike``)
                of UTF-8 files read line by line, one sentence a line. A ``str`` is never a path.
            vocab_size: pieces wanted, counting ``<unk>`` and the 256 byte pieces.
            model_type: ``"unigram"`` or ``"bpe"``.
            character_coverage: share of characters that get a piece; rarer ones use bytes.
            hard_vocab_limit: if true, fail when the data supports fewer than ``vocab_size``
                pieces; if false, learn as many as it supports (``info.codebook_size`` tells).
            num_threads: training and batch threads; default: the usable cores, at most 8.
            seed: seed of sentencepiece's (process-wide) random generator.
            max_sentence_length: longest training sentence in bytes; longer texts are cut.
            input_sentence_size: train on a random sample of this many sentences; 0 for all.
            description: free text about the fit data, kept in the artifact.

        Raises:
            InvalidInputError: a bad hyper-parameter or fit item (named, with its index).
            NotFittedError: no non-empty text, or sentencepiece could not train on it.
        """
        threads = _default_num_threads() if num_threads is None else num_threads
        hparams = {
            "vocab_size": vocab_size,
            "model_type": model_type,
            "character_coverage": character_coverage,
            "hard_vocab_limit": hard_vocab_limit,
            "seed": seed,
            "max_sentence_length": max_sentence_length,
            "input_sentence_size": input_sentence_size,
        }
        _check_hparams({**hparams, "num_threads": threads})
        if isinstance(texts, (str, bytes, bytearray, os.PathLike)):
            raise InvalidInputError(
                "fit expects an iterable of texts or paths; wrap the one item in a list",
                item=f"texts={type(texts).__name__}",
            )
        from tokenize_mm.tokenizers.text.fit import SegmentCount, train_model

        read = map_batch(read_fit_item, texts)
        corpus = [s for sentences, _ in read for s in sentences]
        seen = SegmentCount()
        proto = train_model(corpus, hparams, threads, len(read), seen)
        tok = cls(proto, hparams=hparams, num_threads=threads)
        # chars_per_token as encode counts: the batch path, a chunk at a time to bound memory.
        chars, tokens, step = sum(map(len, corpus)), 0, 4096
        for i in range(0, len(corpus), step):
            tokens += sum(map(len, tok._ids(corpus[i : i + step])))
        tok._info = dataclasses.replace(tok._info, chars_per_token=chars / tokens)
        num_files = sum(is_file for _, is_file in read)
        tok.fit_data = {
            "num_texts": len(read) - num_files,
            "num_files": num_files,
            "num_sentences": len(corpus),  # texts, and lines of files, as read
            # what the trainer read: segments between "▁" marks, long ones cut into pieces of at
            # most max_sentence_length bytes (text/fit.py)
            "trainer_segments": seen.segments,
            "trainer_segments_cut": seen.cut,
            "trainer_bytes": seen.bytes,
            "total_chars": chars,
            "total_tokens": tokens,
            "description": description,
        }
        return tok

    @property
    def info(self) -> TokenizerInfo:
        return self._info

    @property
    def vocab_size(self) -> int:
        """Number of ids (= ``info.codebook_size``)."""
        return self._info.codebook_size

    @property
    def model_proto(self) -> bytes:
        """The serialized SentencePiece model, as saved in ``tokenizer.model``."""
        return self._proto

    def piece(self, token_id: int) -> str:
        """The SentencePiece piece of ``token_id`` (e.g. ``"▁the"`` or ``"<0xE2>"``)."""
        if not _int_in(0, self.vocab_size - 1)(token_id):
            raise InvalidInputError(f"not an id in [0, {self.vocab_size})", item=repr(token_id))
        return self._sp.id_to_piece(token_id)

    def _ids(self, texts: list[str]) -> list[list[int]]:
        """Ids of valid texts. All texts go to sentencepiece in one call (its multithreaded batch
        path); a text holding literal marks is cut there and the marks become byte pieces."""
        if not any(MARK in text for text in texts):  # the common case: no re-assembly needed
            return self._sp_encode(texts)
        parts = [text.split(MARK) for text in texts]
        ids = self._sp_encode([seg for segs in parts for seg in segs])
        out, k = [], 0
        for segs in parts:
            row = list(ids[k])
            for seg_ids in ids[k + 1 : k + len(segs)]:
                row += self._mark_ids + seg_ids
            out.append(row)
            k += len(segs)
        return out

    def _sp_encode(self, texts: list[str]) -> list[list[int]]:
        if len(texts) == 1:  # the batch path starts a thread pool: ~10x slower for one text
            return [self._sp.encode(texts[0], out_type=int)]
        return self._sp.encode(texts, out_type=int, num_threads=self.num_threads) if texts else []

    def _decode(self, ids: list[list[int]]) -> list[str]:
        if len(ids) == 1:
            return [self._sp.decode(ids[0])]
        return self._sp.decode(ids, num_threads=self.num_threads) if ids else []

    def _checked_ids(self, encoded: Encoded) -> list[int]:
        check_codes(encoded, self._info)
        return encoded.codes[0].tolist()

    def encode(self, text: str) -> Encoded:
        """Encode one text (``str``, or UTF-8 ``bytes``) to codes of shape (1, T); "" gives T = 0.

        Raises:
            InvalidInputError: not a str, invalid UTF-8 bytes, or a lone surrogate.
        """
        row = self._ids([as_text(text)])[0]
        return Encoded(torch.tensor(row, dtype=torch.int64).reshape(1, -1))  # (1, T)

    def encode_batch(self, texts: Sequence[str]) -> EncodedBatch:
        """Encode many texts at once (multithreaded); item i equals ``encode(texts[i])``.

        Returns an ``EncodedBatch`` (``tokenizers/packed_batch.py``): a read-only sequence of
        ``Encoded`` that makes each item when it is first read; ``.packed`` is the tensor and
        offsets of ``encode_packed``, ``.tolist()`` a list.

        Raises:
            InvalidInputError: an item is invalid; the message names its batch index.
        """
        return EncodedBatch(*self.encode_packed(texts))

    def encode_packed(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode many texts into one packed tensor: the fast path for pretokenization.

        Returns:
            ``tokens`` of shape (1, N), int64, all texts' ids one after the other, and
            ``offsets`` of shape (B + 1,): text ``i`` is ``tokens[:, offsets[i]:offsets[i + 1]]``.

        Raises:
            InvalidInputError: an item is invalid; the message names its batch index.
        """
        texts, joined = as_texts(texts)
        fast = len(texts) > 1 and self._buffer_batch is not None and MARK not in joined
        if fast:
            flat, offsets = self._packed_ids(texts)
        else:
            rows = self._ids(texts)
            lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
            flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64)
            offsets = np.zeros(len(texts) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
        return torch.from_numpy(flat).view(1, -1), torch.from_numpy(offsets)

    def _packed_ids(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """All ids of ``texts`` (none holding a literal mark) as one int64 array plus the
        (B + 1,) offsets, without a Python int per id: sentencepiece's batch encode into C++
        buffers (what its ``return_type="numpy"`` uses before it wraps each text in an array of
        its own), joined once with an int32 -1 between texts. Ids are never negative, so the
        separators give every text's end in one vectorised pass instead of a ``len`` per buffer
        (``benchmarks/tokenizers.py`` on an Intel Xeon: encode_batch 0.89 of raw sentencepiece,
        0.87 with the ``len``s; docs/tokenizers.md). Only when
        ``_find_buffer_batch`` found that entry point."""
        joined = np.frombuffer(_SEPARATOR.join(self._buffer_batch(texts)), dtype=np.int32)
        is_sep = joined < 0
        ends = np.flatnonzero(is_sep)  # (B - 1,): the k-th separator has k ids of others before
        flat = joined[~is_sep].astype(np.int64)
        offsets = np.empty(len(texts) + 1, dtype=np.int64)
        offsets[0], offsets[-1] = 0, len(flat)
        np.subtract(ends, np.arange(len(ends)), out=offsets[1:-1])
        return flat, offsets

    def _find_buffer_batch(self) -> Callable[[list[str]], list] | None:
        """sentencepiece's C++ batch encode into buffers (0.2.3 and newer), if it is there and
        gives the ids of the public path on a probe; else ``None`` (the public path is used)."""
        method = getattr(getattr(self._sp, "_processor", None), "_EncodeAsBufferBatch", None)
        if method is None:
            return None

        def encode(texts: list[str]) -> list:
            # Positional, as sentencepiece's own Encode passes them: (input, num_threads,
            # thread_pool, enable_sampling, nbest_size, alpha, add_bos, add_eos, reverse).
            return method(texts, self.num_threads, None, False, -1, 0.0, False, False, False)

        probe = [_PROBE.replace(MARK, " "), "a b", ""]
        try:
            got = [np.frombuffer(b, dtype=np.int32).tolist() for b in encode(probe)]
        except (TypeError, ValueError, RuntimeError):
            return None
        return encode if got == self._sp.encode(probe, out_type=int) else None

    def decode(self, encoded: Encoded) -> str:
        """The text of ``encoded``: exactly the text that was encoded.

        Raises:
            InvalidCodesError: wrong shape, or ids outside ``[0, codebook_size)``.
        """
        return self._decode([self._checked_ids(encoded)])[0]

    def decode_batch(self, encoded: Sequence[Encoded]) -> list[str]:
        """Decode many at once (multithreaded); an error names the batch index."""
        return self._decode(map_batch(self._checked_ids, encoded))

    def save(self, directory: str | Path) -> Path:
        """Write an artifact: ``manifest.json`` and ``tokenizer.model`` (plain sentencepiece)."""
        return write_artifact(
            directory,
            kind=self.kind,
            info=self._info,
            hparams=self.hparams,
            fit_data=self.fit_data,
            write_payload=lambda d: (d / MODEL_FILE).write_bytes(self._proto),
        )

    @classmethod
    def load(cls, directory: str | Path) -> TextTokenizer:
        """Load an artifact written by ``save`` (verified; see ``artifact.py``)."""
        return cls.from_artifact(read_artifact(directory))

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> TextTokenizer:
        """Build the tokenizer from a verified artifact (``load_tokenizer`` calls this)."""
        artifact.require_kind(cls.kind)
        path = artifact.path(MODEL_FILE)
        try:
            tok = cls(
                path.read_bytes(),
                chars_per_token=artifact.info.chars_per_token,
                hparams=artifact.hparams,
                fit_data=artifact.fit_data,
            )
        except ArtifactError as err:
            raise ArtifactError(f"{path}: {err}") from err
        check_info(artifact, tok.info)  # the vocabulary size is the model's, not the manifest's
        return tok

    def __getstate__(self) -> dict[str, Any]:
        # Pickled as the model bytes, so DataLoader workers rebuild the processor.
        return {
            "model_proto": self._proto,
            "chars_per_token": self._info.chars_per_token,
            "hparams": self.hparams,
            "fit_data": self.fit_data,
            "num_threads": self.num_threads,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]
