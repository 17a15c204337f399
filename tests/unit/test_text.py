"""Text-specific invariants of TextTokenizer: exact round trips (hand list and seeded fuzz), the
U+2581 treatment, fit inputs and errors, batch == one by one, and the native .model payload.
The generic contract (shapes, info JSON, artifact checks) lives in the shared contract tests."""

from __future__ import annotations

import io
import json
import pickle
import random

import pytest
import sentencepiece as spm
import torch

from tokenize_mm.tokenizers.base import Encoded
from tokenize_mm.tokenizers.errors import (
    ArtifactError,
    InvalidCodesError,
    InvalidInputError,
    NotFittedError,
)
from tokenize_mm.tokenizers.text.tokenizer import TextTokenizer

MARK = "\u2581"
_WORDS = (
    "the of and a to in is was for on that with as it by at from his an were are which this "
    "東京 タワー 日本語 中文 한국어 café naïve Zürich déjà Ωμέγα Привет мир שלום مرحبا हिन्दी "
    "😀 👍🏽 🇫🇷 ☃ 1999 3.14 (x) [y] {z} a+b=c foo_bar"
)
WORDS = _WORDS.split()


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    seps = [" "] * 8 + ["  ", "\t", ", ", ". "]
    return [
        "".join(rng.choice(WORDS) + rng.choice(seps) for _ in range(rng.randint(2, 14))).strip()
        for _ in range(n)
    ]


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def tok(request) -> TextTokenizer:
    return TextTokenizer.fit(corpus(), vocab_size=400, model_type=request.param, num_threads=2)


HARD = [
    "",
    " ",
    "   ",
    "  leading and trailing  ",
    "multiple   inner    spaces",
    "\x00",
    "a\x00b\x00",
    "\t\r\n\x1b[31mred\x1b[0m\x7f\x0b\x0c",
    "\r\n\r\n",
    "\n",
    MARK,
    MARK * 3,
    f"a{MARK}b",
    f" {MARK} ",
    f"{MARK}the",
    f"the{MARK}",
    "👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👍🏽 thumb",
    "e\u0301 n\u0303 a\u0308\u0304 Z\u0351\u0352\u0353",
    "東京タワーは日本語の文です。中文句子。",
    "mixed: English, Ελληνικά, русский, עברית, العربية, हिन्दी, ไทย",
    "<unk> <s> </s> <pad> ⁇  ⁇ <0xE2>",
    "\ufeffBOM \u200b zwsp \u200d zwj \u00a0 nbsp \u3000 ideographic",
    "\ufffd \uffff \ufffe \U0010ffff \U0001f600",
    "\u2028 \u2029 \x85",
    "Ａ ｆｕｌｌ ｗｉｄｔｈ ﬁ ligature ① ㎏",  # NFKC would fold these
    "ǅ İ ß ẞ",  # case and casefold oddities
    "\u2585 rare-char stand-in \u2585\u2585 and <0x41> literal byte-piece text",
]


def round_trip(tok: TextTokenizer, text: str) -> str:
    return tok.decode(tok.encode(text))


@pytest.mark.parametrize("text", HARD, ids=range(len(HARD)))
def test_hard_strings_round_trip_exactly(tok, text):
    enc = tok.encode(text)
    assert enc.codes.dtype == torch.int64 and enc.codes.shape[0] == 1
    assert tok.decode(enc) == text
    assert 0 not in enc.codes.tolist()[0], "byte fallback must make <unk> unreachable"


def random_text(rng: random.Random) -> str:
    def char() -> str:
        r = rng.random()
        if r < 0.15:
            return rng.choice([" ", " ", "\n", "\t", "\x00", MARK])
        if r < 0.45:
            return chr(rng.randint(0, 0x7F))
        if r < 0.6:
            return rng.choice(WORDS)
        c = rng.randint(0x80, 0x10FFFF if r < 0.8 else 0xFFFF)
        return chr(c) if not 0xD800 <= c <= 0xDFFF else "x"

    return "".join(char() for _ in range(rng.randint(0, 40)))


def test_fuzz_random_code_points_round_trip_and_batch_equals_single(tok):
    rng = random.Random(0)
    texts = [random_text(rng) for _ in range(1000)]
    singles = [tok.encode(t) for t in texts]
    for text, enc in zip(texts, singles, strict=True):
        assert tok.decode(enc) == text, repr(text)
        assert 0 not in enc.codes.tolist()[0], repr(text)
    assert tok.encode_batch(texts) == singles
    assert tok.decode_batch(singles) == texts
    tokens, offsets = tok.encode_packed(texts)
    assert offsets.shape == (len(texts) + 1,) and int(offsets[-1]) == tokens.shape[1]
    for i, enc in enumerate(singles):
        assert torch.equal(tokens[:, offsets[i] : offsets[i + 1]], enc.codes)


def test_empty_string_has_zero_tokens(tok):
    enc = tok.encode("")
    assert enc.codes.shape == (1, 0)
    assert tok.decode(enc) == ""
    assert tok.encode_batch(["", "a", ""])[0].codes.shape == (1, 0)
    assert tok.encode_batch([]) == [] and tok.decode_batch([]) == []


def test_literal_mark_is_spelled_in_bytes_and_differs_from_space(tok):
    pieces = [tok.piece(i) for i in tok.encode(MARK).codes[0].tolist()]
    assert pieces == ["<0xE2>", "<0x96>", "<0x81>"]
    assert not torch.equal(tok.encode("a b").codes, tok.encode(f"a{MARK}b").codes)
    assert tok.decode_batch(tok.encode_batch([f"a{MARK}b", "a b"])) == [f"a{MARK}b", "a b"]


def test_long_line_round_trips(tok):
    rng = random.Random(1)
    line = "".join(rng.choice(WORDS) + rng.choice(" \t" + MARK) for _ in range(200_000))
    line = line[: 1 << 20]  # ~1 MB, one line, far past max_sentence_length
    assert round_trip(tok, line) == line


def test_bytes_input_valid_utf8_accepted(tok):
    text = "café 東京 " + MARK
    assert tok.encode(text.encode("utf-8")) == tok.encode(text)


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (b"ok \xff\xfe", ["bytes", "UTF-8"]),
        ("lone \ud800 surrogate", ["U+D800", "surrogate", "lone "]),
        (17, ["int"]),
        (None, ["NoneType"]),
        (["a"], ["list"]),
    ],
)
def test_bad_input_is_named_alone_and_in_a_batch(tok, bad, words):
    with pytest.raises(InvalidInputError) as single:
        tok.encode(bad)
    assert single.value.index is None
    with pytest.raises(InvalidInputError) as batch:
        tok.encode_batch(["fine", "also fine", bad])
    assert batch.value.index == 2 and "batch item 2" in str(batch.value)
    for word in words:
        assert word in str(single.value) and word in str(batch.value)


def test_decode_out_of_range_ids(tok):
    for bad in (tok.vocab_size, -1, 10**9):
        with pytest.raises(InvalidCodesError, match="out of range"):
            tok.decode(Encoded(torch.tensor([[5, bad]])))
    good = tok.encode("fine")
    with pytest.raises(InvalidCodesError) as err:
        tok.decode_batch([good, Encoded(torch.tensor([[tok.vocab_size]]))])
    assert err.value.index == 1


def test_chars_per_token_is_the_measured_ratio():
    texts = corpus(200, seed=3)
    tok = TextTokenizer.fit(texts, vocab_size=400, num_threads=1)
    chars = sum(len(t) for t in texts)
    tokens = sum(tok.encode(t).num_steps for t in texts)
    assert tok.info.chars_per_token > 0
    assert tok.info.chars_per_token == pytest.approx(chars / tokens, rel=1e-12)
    assert tok.fit_data["total_chars"] == chars and tok.fit_data["total_tokens"] == tokens


def test_fit_records_what_the_trainer_read():
    """Two long texts (as a folder source gives whole files) are two texts read, but the trainer
    reads them as pieces of at most max_sentence_length bytes: the record says both."""
    texts = [" ".join(corpus(400, seed=s)) for s in (5, 6)]
    tok = TextTokenizer.fit([*texts, "a▁b"], vocab_size=600, max_sentence_length=1000)
    record = tok.fit_data
    assert record["num_texts"] == 3 and record["num_sentences"] == 3
    sizes = [len(t.encode()) for t in texts]
    assert record["trainer_segments_cut"] == sum(-(-n // 1000) for n in sizes)
    assert record["trainer_segments"] == record["trainer_segments_cut"] + 2  # "a", "b"
    assert record["trainer_bytes"] == sum(sizes) + 2


def test_fit_reads_files_line_by_line(tmp_path):
    lines = corpus(150, seed=4)
    path = tmp_path / "fit.txt"
    path.write_bytes(("\r\n".join(lines[:100]) + "\n" + "\n".join(lines[100:]) + "\n").encode())
    tok = TextTokenizer.fit([path, "one more text"], vocab_size=400, description="demo")
    assert tok.fit_data["num_files"] == 1 and tok.fit_data["num_texts"] == 1
    assert tok.fit_data["num_sentences"] == len(lines) + 1
    assert tok.fit_data["total_chars"] == sum(map(len, lines)) + len("one more text")
    assert tok.fit_data["description"] == "demo"
    assert tok.hparams["vocab_size"] == 400 and tok.hparams["model_type"] == "unigram"


def test_fit_cuts_long_texts_instead_of_dropping_them():
    # sentencepiece alone drops sentences over max_sentence_length bytes and then has nothing.
    text = " ".join(corpus(300, seed=5))
    assert len(text.encode()) > 4 * 1024
    tok = TextTokenizer.fit([text], vocab_size=400, max_sentence_length=1024)
    assert tok.info.codebook_size == 400
    assert round_trip(tok, text) == text


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_fit_without_spaces_still_round_trips_spaces(model_type):
    # Without "▁" in the vocabulary a space would be spelled as the bytes of "▁" (decoded "▁").
    texts = [t.replace(" ", "\t") for t in corpus(150, seed=9)]
    tok = TextTokenizer.fit(texts, vocab_size=400, model_type=model_type)
    for text in ["a b", "  lead", "trail  ", *HARD]:
        assert round_trip(tok, text) == text


def test_fit_keeps_texts_holding_the_trainers_rare_char():
    # The trainer drops every sentence that holds U+2585; fit cuts there instead.
    texts = [t + " \u2585 " + t for t in corpus(150, seed=10)]
    tok = TextTokenizer.fit(texts, vocab_size=400)
    assert tok.info.chars_per_token > 1.5
    assert all(round_trip(tok, t) == t for t in texts[:20])


def test_vocab_limit_soft_by_default_and_hard_on_request():
    texts = ["hello world", "hello there"]
    soft = TextTokenizer.fit(texts, vocab_size=5000)
    assert 258 <= soft.info.codebook_size < 5000
    assert soft.hparams["vocab_size"] == 5000
    with pytest.raises(NotFittedError, match="too high"):
        TextTokenizer.fit(texts, vocab_size=5000, hard_vocab_limit=True)


def test_fit_is_reproducible():
    texts = corpus(300, seed=8)
    for kwargs in ({}, {"input_sentence_size": 150, "seed": 3}):  # sampling uses the seed
        a = TextTokenizer.fit(texts, vocab_size=400, num_threads=2, **kwargs)
        b = TextTokenizer.fit(texts, vocab_size=400, num_threads=2, **kwargs)
        assert a.model_proto == b.model_proto and a.info == b.info


def test_fit_needs_text():
    with pytest.raises(NotFittedError):
        TextTokenizer.fit([])
    with pytest.raises(NotFittedError):
        TextTokenizer.fit(["", MARK * 2, "\u2585", ""])
    # fewer pieces than required characters: the advice names our arguments, not the trainer's
    with pytest.raises(NotFittedError, match="vocab") as err:
        TextTokenizer.fit(["".join(map(chr, range(0x4E00, 0x4E80)))], vocab_size=300)
    assert "vocab_size, asked 300" in str(err.value)
    assert "tokenizer.fit.vocab_size=" in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"model_type": "wordpiece"}, "model_type"),
        ({"model_type": "char"}, "model_type"),
        ({"vocab_size": 100}, "vocab_size"),
        ({"vocab_size": 300.0}, "vocab_size"),
        ({"character_coverage": 0.0}, "character_coverage"),
        ({"character_coverage": 0.9}, "character_coverage"),
        ({"num_threads": 0}, "num_threads"),
        ({"seed": -1}, "seed"),
        ({"max_sentence_length": 9}, "max_sentence_length"),
        ({"num_threads": 2000}, "num_threads"),
        ({"input_sentence_size": -5}, "input_sentence_size"),
        ({"input_sentence_size": 50}, "input_sentence_size"),
    ],
)
def test_fit_refuses_bad_hparams(kwargs, name):
    with pytest.raises(InvalidInputError, match=name):
        TextTokenizer.fit(["some text"], **kwargs)


def test_fit_refuses_bad_items(tmp_path):
    with pytest.raises(InvalidInputError, match="wrap"):
        TextTokenizer.fit("a single str is not a corpus")
    with pytest.raises(InvalidInputError) as err:
        TextTokenizer.fit(["ok", tmp_path / "missing.txt"])
    assert err.value.index == 1 and "missing.txt" in str(err.value)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(InvalidInputError, match="UTF-8") as err:
        TextTokenizer.fit(["ok", "fine", bad])
    assert err.value.index == 2


def test_saved_model_loads_in_plain_sentencepiece(tok, tmp_path):
    directory = tok.save(tmp_path / "tok")
    sp = spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))
    assert sp.get_piece_size() == tok.info.codebook_size
    for text in [t for t in HARD if MARK not in t] + corpus(20, seed=6):
        assert sp.encode(text) == tok.encode(text).codes[0].tolist()
        assert sp.decode(sp.encode(text)) == text


def test_save_load_round_trip(tok, tmp_path):
    loaded = TextTokenizer.load(tok.save(tmp_path / "tok"))
    assert loaded.info == tok.info
    assert loaded.hparams == tok.hparams and loaded.fit_data == tok.fit_data
    texts = HARD + corpus(20, seed=7)
    assert loaded.encode_batch(texts) == tok.encode_batch(texts)


def test_load_refuses_another_kind(tok, tmp_path):
    directory = tok.save(tmp_path / "tok")
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["kind"] = "image.vq"
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"image\.vq"):
        TextTokenizer.load(directory)


def test_pickle_keeps_model_and_info(tok):
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.info == tok.info and clone.model_proto == tok.model_proto
    assert clone.encode_batch(HARD) == tok.encode_batch(HARD)


def test_normalizing_model_is_refused():
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus(100)),
        model_writer=model,
        vocab_size=400,
        byte_fallback=True,
        normalization_rule_name="nfkc",
        minloglevel=2,
    )
    with pytest.raises(ArtifactError, match="round-trip"):
        TextTokenizer(model.getvalue())
    with pytest.raises(ArtifactError, match="not a SentencePiece model"):
        TextTokenizer(b"definitely not a model")


def test_packed_fast_path_equals_the_public_path(tok, monkeypatch):
    # empty texts first, last and in a row: their ids run between two separators or none
    texts = ["", *corpus(300, seed=5), "", "", "ünïcødé 🙂", "  spaced  ", ""]
    assert tok._buffer_batch is not None  # sentencepiece >= 0.2.3 offers the buffer entry point
    fast_tokens, fast_offsets = tok.encode_packed(texts)
    monkeypatch.setattr(tok, "_buffer_batch", None)
    slow_tokens, slow_offsets = tok.encode_packed(texts)
    assert torch.equal(fast_tokens, slow_tokens) and torch.equal(fast_offsets, slow_offsets)
    assert fast_tokens.dtype == torch.int64


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_fit_learns_held_out_text(model_type):
    """The text counterpart of "loss falls": a fitted model spells held-out text of the same
    distribution in fewer tokens than UTF-8 bytes, and a larger vocabulary in fewer still."""
    train, held = corpus(400, seed=7), corpus(100, seed=8)
    held_bytes = sum(len(t.encode("utf-8")) for t in held)

    def held_tokens(vocab_size: int) -> int:
        tok = TextTokenizer.fit(train, vocab_size=vocab_size, model_type=model_type)
        return sum(e.num_steps for e in tok.encode_batch(held))

    small, large = held_tokens(400), held_tokens(700)
    assert large < small < held_bytes / 2
