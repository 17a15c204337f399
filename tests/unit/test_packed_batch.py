"""``EncodedBatch`` (tokenizers/packed_batch.py), what ``TextTokenizer.encode_batch`` returns: the
list users had, as a sequence whose items are made when first read; and the collector pause
(core/gc_pause.py) it builds them under."""

from __future__ import annotations

import gc

import pytest
import torch

from tokenize_mm.core.gc_pause import gc_paused
from tokenize_mm.tokenizers.base import Encoded
from tokenize_mm.tokenizers.packed_batch import EncodedBatch

TEXTS = ["a red circle", "", "the star is blue and sits near the top left", "ok"]


def test_encode_batch_behaves_as_the_list_of_single_encodes(tiny_text):
    batch = tiny_text.encode_batch(TEXTS)
    singles = [tiny_text.encode(t) for t in TEXTS]
    assert isinstance(batch, EncodedBatch) and len(batch) == len(TEXTS)
    assert batch == singles and singles == batch  # equality both ways, with a list
    assert batch[-1] == singles[-1] and batch[1].num_steps == 0
    assert batch[1:3] == singles[1:3] and isinstance(batch[1:3], list)
    assert [e.codes.tolist() for e in batch] == [e.codes.tolist() for e in singles]
    assert batch.tolist() == singles and batch != singles[:-1]
    with pytest.raises(IndexError):
        batch[len(TEXTS)]


def test_items_are_made_once_as_views_of_the_packed_ids(tiny_text):
    batch = tiny_text.encode_batch(TEXTS)
    first = batch[2]
    assert batch[2] is first  # made once, by indexing or by iteration
    assert list(batch)[2] is first and all(a is b for a, b in zip(batch, batch, strict=True))
    tokens, offsets = batch.packed
    assert offsets.tolist()[0] == 0 and offsets.tolist()[-1] == tokens.shape[1]
    assert first.codes.untyped_storage().data_ptr() == tokens.untyped_storage().data_ptr()
    assert torch.equal(tokens[:, offsets[2] : offsets[3]], first.codes)


def test_bad_packing_is_refused():
    with pytest.raises(ValueError, match="from 0 to N"):
        EncodedBatch(torch.zeros(1, 5, dtype=torch.long), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"\(K, N\)"):
        EncodedBatch(torch.zeros(5, dtype=torch.long), torch.tensor([0, 5]))
    empty = EncodedBatch(torch.zeros(1, 0, dtype=torch.long), torch.tensor([0]))
    assert len(empty) == 0 and list(empty) == [] and empty == []
    one = EncodedBatch(torch.arange(3).view(1, 3), torch.tensor([0, 3]))
    assert one == [Encoded(torch.arange(3).view(1, 3))]


def test_gc_pause_restores_the_collectors_state():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a caller's own disable is kept
    finally:
        gc.enable()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("inside")
    assert gc.isenabled()
