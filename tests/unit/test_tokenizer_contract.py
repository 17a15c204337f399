"""The tokenizer contract (docs/architecture.md §4) as invariants over every tokenizer."""

from __future__ import annotations

import json
import math
import pickle

import pytest
import torch

from tokenize_mm import (
    Encoded,
    InvalidCodesError,
    InvalidInputError,
    TokenizerInfo,
    load_tokenizer,
)
from tokenize_mm.tokenizers import Tokenizer

TEXTS = ["Hello world.", "", "  two  spaces\tand a tab\n", "emoji 🙂 and 汉字 and é"]


@pytest.fixture(
    params=["text", "image", "image_vq", "audio", "audio_vq", "encodec_24khz", "encodec_48khz"]
)
def case(request, tiny_text, images, clips):
    """(tokenizer, items, a valid item of the wrong type for this tokenizer). Image and audio come
    with each quantizer (FSQ, the default, and VQ); the audio cases are both backends: the 50 Hz
    codec and pretrained EnCodec (checkpoint-shaped random weights)."""
    if request.param == "text":
        return tiny_text, TEXTS, 42
    if request.param.startswith("image"):
        tok = request.getfixturevalue(f"tiny_{request.param}")
        return tok, [images[0], images[1], torch.rand(3, 40, 24), images[2].convert("L")], 42
    name = f"tiny_{request.param}" if request.param.startswith("audio") else request.param
    tok = request.getfixturevalue(name)
    return tok, [clips[0], clips[1], (torch.zeros(2, 100), 8000), clips[3]], 42


def test_is_a_tokenizer(case):
    tok, _, _ = case
    assert isinstance(tok, Tokenizer)
    assert tok.kind == tok.info.kind


def test_codes_shape_dtype_and_range(case):
    tok, items, _ = case
    for enc in tok.encode_batch(items):
        assert enc.codes.dtype == torch.int64
        assert enc.codes.shape[0] == tok.info.num_codebooks
        if enc.codes.numel():
            assert int(enc.codes.min()) >= 0 and int(enc.codes.max()) < tok.info.codebook_size


def test_info_agrees_with_shapes(case):
    tok, items, _ = case
    info = tok.info
    enc = tok.encode(items[0])
    if info.modality == "image":
        assert enc.num_steps == info.tokens_per_image == info.grid[0] * info.grid[1]
    if info.modality == "audio":
        wav, rate = items[0]
        samples = -(-wav.shape[-1] * info.sample_rate // rate)  # after resampling
        assert int(enc.extras["num_samples"][0]) == samples
        assert enc.num_steps == math.ceil(samples * info.frame_rate / info.sample_rate)
        assert info.tokens_per_second == info.frame_rate * info.num_codebooks
    assert TokenizerInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


def test_round_trip(case):
    tok, items, _ = case
    for item, enc in zip(items, tok.encode_batch(items), strict=True):
        out = tok.decode(enc)
        if tok.info.modality == "text":
            assert out == item
        elif tok.info.modality == "audio":
            assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())
            assert out.dim() == 2 and out.shape[-1] == int(enc.extras["num_samples"][0])
        else:
            s = tok.info.image_size
            assert out.shape == (3, s, s) and out.dtype == torch.float32
            assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_batch_equals_one_by_one(case):
    tok, items, _ = case
    batch = tok.encode_batch(items)
    assert batch == [tok.encode(it) for it in items]
    decoded = tok.decode_batch(batch)
    for a, b in zip(decoded, [tok.decode(e) for e in batch], strict=True):
        if isinstance(a, torch.Tensor):  # convolutions may sum in another order for another batch
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        else:
            assert a == b


def test_deterministic(case):
    tok, items, _ = case
    assert tok.encode_batch(items) == tok.encode_batch(items)


def test_codes_do_not_depend_on_the_thread_count(case):
    """Every forward pass that makes codes runs on one torch thread (tokenizers/threads.py), so
    the codes are the same whatever the caller's thread count, which is left as it was."""
    tok, items, _ = case
    tok.encode(items[0])  # builds any inference copy (the codec's folded model)
    modules = [m for m in vars(tok).values() if isinstance(m, torch.nn.Module)]
    seen: list[int] = []
    hooks = [sub.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
             for m in modules for sub in m.modules()]  # fmt: skip
    before = torch.get_num_threads()
    try:
        codes = {}
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            codes[threads] = tok.encode_batch(items)
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
        for hook in hooks:
            hook.remove()
    assert codes[1] == codes[2] == codes[3]
    assert set(seen) <= {1} and (bool(seen) or tok.info.modality == "text")


def test_save_load_identical(case, tmp_path):
    tok, items, _ = case
    tok.save(tmp_path / "art")
    for loaded in (type(tok).load(tmp_path / "art"), load_tokenizer(tmp_path / "art")):
        assert type(loaded) is type(tok)
        assert loaded.info == tok.info
        assert loaded.encode_batch(items) == tok.encode_batch(items)


def test_pickle_round_trip(case):
    tok, items, _ = case
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.info == tok.info
    assert clone.encode_batch(items) == tok.encode_batch(items)


def test_decode_refuses_out_of_range_ids(case):
    tok, items, _ = case
    enc = tok.encode(items[0])
    steps = max(enc.num_steps, 1)
    for bad in (tok.info.codebook_size, -1):
        with pytest.raises(InvalidCodesError, match="out of range"):
            tok.decode(Encoded(codes=torch.full((tok.info.num_codebooks, steps), bad)))


def test_decode_refuses_wrong_codebook_count(case):
    tok, _, _ = case
    with pytest.raises(InvalidCodesError, match="codebooks"):
        tok.decode(Encoded(codes=torch.zeros(tok.info.num_codebooks + 1, 4, dtype=torch.long)))


def test_batch_error_names_the_index(case):
    tok, items, wrong = case
    with pytest.raises(InvalidInputError) as err:
        tok.encode_batch([items[0], items[1], wrong])
    assert err.value.index == 2
    assert "batch item 2" in str(err.value)


def test_encoded_refuses_bad_codes():
    with pytest.raises(InvalidCodesError):
        Encoded(codes=torch.zeros(4, dtype=torch.long))
    with pytest.raises(InvalidCodesError):
        Encoded(codes=torch.zeros(1, 4, dtype=torch.int32))
