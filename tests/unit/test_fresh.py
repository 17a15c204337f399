"""Fresh built-in examples (``tokenize_mm.data.fresh``): the stream starts with the store's train
examples, goes on past them without repeating one or touching a held-out one, resumes exactly,
and refuses a store of other source settings."""

from __future__ import annotations

import os
import warnings
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch

from tokenize_mm.balance.sampling import SAMPLERS
from tokenize_mm.core.errors import ConfigError
from tokenize_mm.data import BuiltinSource, DataError, TokenStore, merge_store, pretokenize
from tokenize_mm.data.builtin.source import SOURCES
from tokenize_mm.data.datamodule import StoreDataModule
from tokenize_mm.data.example import split_for_id
from tokenize_mm.data.fresh import FreshExamples, FreshSpec, fresh_sources
from tokenize_mm.data.mixture import store_sources
from tokenize_mm.sequence import VocabLayout

SOURCE = {"num_examples": 48, "image_size": 32, "audio_seconds": 0.5, "seed": 0}


@pytest.fixture(scope="module")
def builtin_store(tmp_path_factory, tiny_text, tiny_image, tiny_audio):
    """A store of 48 built-in examples (tiny tokenizers), written with one torch thread as the
    store's worker processes are, and the spec of its fresh stream."""
    root = tmp_path_factory.mktemp("fresh")
    dirs = {m: str(t.save(root / m)) for m, t in
            [("text", tiny_text), ("image", tiny_image), ("audio", tiny_audio)]}  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pretokenize(BuiltinSource(**SOURCE), dirs, root / "store", chunk_size=16)
    finally:
        torch.set_num_threads(threads)
    merge_store(root / "store")
    return root / "store", FreshSpec(source=dict(SOURCE), tokenizer_dirs=dirs)


def test_the_stream_starts_with_the_store_train_examples_and_never_repeats_or_leaks(builtin_store):
    store_dir, spec = builtin_store
    store = TokenStore(store_dir, split="train")
    owner = FreshExamples(spec, store.modality_table, chunk=4, ahead=1)
    try:
        fresh, stored = fresh_sources(store, owner), store_sources(store)
        assert set(fresh) == set(stored)
        for name, docs in stored.items():
            seen = set()
            for j in range(len(docs) + 12):  # past the store's pool
                doc = fresh[name][j]
                example_id = f"{name}/s0/{doc.doc_id:06d}"
                assert split_for_id(example_id) == "train"  # never a val or test example
                assert doc.doc_id % len(SOURCES) == SOURCES.index(name)  # its sub-source
                seen.add(doc.doc_id)
                if j < len(docs):  # the same example and tokens as the store's
                    assert store.examples[docs.indices[j]]["id"] == example_id
                    assert doc.tokens.tolist() == docs[j].tokens.tolist()
                    assert doc.modality.tolist() == docs[j].modality.tolist()
            assert len(seen) == len(docs) + 12
            assert max(seen) >= SOURCE["num_examples"]
            # the sampler sizes the sub-sources as the store's counts do
            ratio = fresh[name].num_tokens / docs.num_tokens
            assert fresh[name].modality_tokens["audio"] == pytest.approx(
                docs.modality_tokens["audio"] * ratio
            )
        # the worker renders beside the trainer at the lowest CPU priority (lower_priority)
        assert owner._executor is not None and owner._executor.submit(os.nice, 0).result() == 19
    finally:
        owner.close()


@pytest.mark.parametrize("bad", [{"chunk": 0}, {"ahead": -1}, {"workers": 0}])
def test_fresh_examples_settings_are_checked(builtin_store, bad):
    store_dir, spec = builtin_store
    with pytest.raises(DataError, match=next(iter(bad))):
        FreshExamples(spec, TokenStore(store_dir, split="train").modality_table, **bad)


def test_a_store_of_other_source_settings_is_refused(builtin_store):
    store_dir, spec = builtin_store
    store = TokenStore(store_dir, split="train")
    other = FreshSpec(source={**SOURCE, "seed": 1}, tokenizer_dirs=spec.tokenizer_dirs)
    with pytest.raises(DataError, match=r"data\.fresh=false"):
        fresh_sources(store, FreshExamples(other, store.modality_table))


def _fit(store_dir, spec, steps, ckpt=None, root=None, fresh_ahead=0):
    from tokenize_mm.balance.weighting import ModalityMean
    from tokenize_mm.core.schedules import warmup_cosine
    from tokenize_mm.models import DecoderLM, preset
    from tokenize_mm.models.system import BalancedLM

    layout = VocabLayout.from_artifacts(spec.tokenizer_dirs)
    torch.manual_seed(0)
    model = DecoderLM(preset("tiny"), vocab_size=layout.vocab_size)
    module = BalancedLM(model, ModalityMean(), scheduler=partial(warmup_cosine, max_steps=4),
                        layout_fingerprint=layout.fingerprint)  # fmt: skip
    dm = StoreDataModule(str(store_dir), sampler=SAMPLERS["proportional"], context=128,
                         batch_size=2, buffer_size=8, fresh=spec,
                         fresh_ahead=fresh_ahead)  # fmt: skip
    batches = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            batches.append(dm.stream.batches)

    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[Record()], limit_val_batches=1,
        val_check_interval=steps, default_root_dir=root, enable_checkpointing=False,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt, weights_only=True)
    return trainer, dm, module


def test_training_on_fresh_examples_resumes_exactly(builtin_store, tmp_path):
    store_dir, spec = builtin_store
    trainer, dm, _ = _fit(store_dir, spec, steps=4)
    assert dm.fresh_examples._executor is None  # teardown stopped the worker
    state = dm.stream.state_dict()
    assert max(state["positions"]) > 0
    next_whole = next(dm.stream)  # batch 5 of the uninterrupted stream

    trainer, _, _ = _fit(store_dir, spec, steps=2, root=tmp_path)
    ckpt = tmp_path / "two.ckpt"
    trainer.save_checkpoint(ckpt, weights_only=False)
    trainer, dm3, _ = _fit(store_dir, spec, steps=4, ckpt=str(ckpt), root=tmp_path)
    assert dm3.stream.state_dict()["positions"] == state["positions"]
    resumed = next(dm3.stream)
    assert torch.equal(resumed.tokens, next_whole.tokens)
    dm.teardown(), dm3.teardown()


def test_fresh_needs_the_builtin_source():
    from omegaconf import OmegaConf

    from tokenize_mm.cli.validate import check_train_config

    cfg = OmegaConf.create({"data": {"fresh": True, "source": {
        "_target_": "tokenize_mm.data.ManifestSource", "path": "m.jsonl"}}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"data\.fresh=false"):
        check_train_config(cfg)


def test_ranks_read_disjoint_positions_of_a_sequential_source_in_order():
    """Under DDP rank r reads documents position + r of an endless source: disjoint, in order."""
    import numpy as np

    from tokenize_mm.balance.sampling import ProportionalSampler
    from tokenize_mm.data import Document
    from tokenize_mm.data.mixture import MixtureStream

    class Endless(list):
        sequential = True

    docs = Endless(Document(np.array([5, 6, 7]), np.array([0, 0, 3]), doc_id=i) for i in range(64))
    drawn = []
    for rank in (0, 1):
        stream = MixtureStream({"a": docs}, ProportionalSampler({"a": 192}), pad_id=0, context=8,
                               batch_size=1, buffer_size=2, rank=rank, world_size=2)  # fmt: skip
        drawn.append([stream.draw()[1] for _ in range(10)])
    assert drawn[0] == list(range(0, 20, 2)) and drawn[1] == list(range(1, 20, 2))


def test_hard_negatives_group_the_stream_and_leave_the_ids_alone(builtin_store):
    """``FreshSpec.group_size``: the same example ids (and so the same held-out ones left out),
    each rendered from its grouped scene; a group size out of range is refused up front."""
    from tokenize_mm.data.builtin.scenes import grouped_scene

    store_dir, spec = builtin_store
    store = TokenStore(store_dir, split="train")
    grouped = FreshSpec(source=dict(SOURCE), tokenizer_dirs=spec.tokenizer_dirs, group_size=4)
    plain_owner = FreshExamples(spec, store.modality_table, chunk=4, ahead=0)
    owner = FreshExamples(grouped, store.modality_table, chunk=4, ahead=0)
    try:
        plain, fresh = fresh_sources(store, plain_owner), fresh_sources(store, owner)
        changed = 0
        for j in range(8):
            a, b = plain["image_text"][j], fresh["image_text"][j]
            assert a.doc_id == b.doc_id
            scene = grouped_scene(0, b.doc_id, len(SOURCES), 4)
            assert BuiltinSource(**SOURCE).example_at(b.doc_id, 4).concept == scene.concept
            changed += a.tokens.tolist() != b.tokens.tolist()
        assert changed  # the grouped scenes are rendered, not the plain ones
    finally:
        owner.close(), plain_owner.close()
    with pytest.raises(DataError, match="group_size"):
        FreshExamples(FreshSpec(source=dict(SOURCE), tokenizer_dirs=spec.tokenizer_dirs,
                                group_size=9), store.modality_table)  # fmt: skip


@pytest.mark.parametrize("value, match", [(9, "between 1 and 8"), (2, r"data\.fresh=true")])
def test_hard_negatives_config_is_checked(value, match):
    from omegaconf import OmegaConf

    from tokenize_mm.cli.validate import check_train_config

    cfg = OmegaConf.create({"data": {"fresh": value == 9, "hard_negatives": value, "source": {
        "_target_": "tokenize_mm.data.BuiltinSource"}}})  # fmt: skip
    with pytest.raises(ConfigError, match=match):
        check_train_config(cfg)


def test_kept_chunks_are_read_back_instead_of_rendered(builtin_store, tmp_path):
    """``FreshSpec.cache_dir``: a second reader of the same spec gets the same documents from the
    kept chunks without starting a worker; a damaged chunk is rendered again; a folder of another
    spec is refused."""
    import dataclasses

    store_dir, spec = builtin_store
    store = TokenStore(store_dir, split="train")
    kept = dataclasses.replace(spec, cache_dir=str(tmp_path / "kept"))
    plain_owner = FreshExamples(spec, store.modality_table, chunk=4, ahead=0)
    first = FreshExamples(kept, store.modality_table, chunk=4, ahead=0)
    try:
        plain, written = fresh_sources(store, plain_owner), fresh_sources(store, first)
        expected = {n: [plain[n][j] for j in range(8)] for n in plain}
        for name in plain:
            assert [d.tokens.tolist() for d in (written[name][j] for j in range(8))] == [
                d.tokens.tolist() for d in expected[name]
            ]
    finally:
        first.close(), plain_owner.close()
    files = sorted((tmp_path / "kept").glob("*-c4/*.npz"))
    assert len(files) == 2 * len(expected)  # two chunks of four per sub-source

    second = FreshExamples(kept, store.modality_table, chunk=4, ahead=0)
    files[0].write_bytes(b"not a chunk")  # damaged: rendered again, with a warning
    files[1].write_bytes(files[1].read_bytes()[:60])  # cut short
    read = fresh_sources(store, second)
    for name, docs in expected.items():
        for j, doc in enumerate(docs):
            got = read[name][j]
            assert got.doc_id == doc.doc_id
            assert got.tokens.tolist() == doc.tokens.tolist()
            assert got.modality.tolist() == doc.modality.tolist()
            assert got.cuts.tolist() == doc.cuts.tolist()
    assert second._executor is not None  # started for the damaged chunk only
    second.close()
    for path in files[:2]:  # and kept again, whole
        with np.load(path, allow_pickle=False) as z:
            assert len(z["indices"]) == 4

    third = FreshExamples(kept, store.modality_table, chunk=4, ahead=0)
    read = fresh_sources(store, third)
    assert read["text_only"][5].tokens.tolist() == expected["text_only"][5].tokens.tolist()
    assert third._executor is None  # everything came from the kept chunks

    other = dataclasses.replace(kept, group_size=2)
    with pytest.raises(DataError, match=r"another spec \(\['group_size'\] differ\)"):
        FreshExamples(other, store.modality_table)


def test_tmm_train_keys_the_kept_chunks_by_the_spec(builtin_store, tmp_path):
    """``data.fresh_cache``: one folder per spec under ``<cache_dir>/fresh``, shared by the runs
    that differ only in what does not change the documents (the weighting, the seed of the
    model); another span order gets another folder; ``false`` keeps nothing."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from tokenize_mm.cli.train import fresh_spec

    _, spec = builtin_store
    prepared = SimpleNamespace(artifacts=spec.tokenizer_dirs)

    def cfg(**data):
        return OmegaConf.create({"cache_dir": str(tmp_path), "seed": 3, "data": {
            "fresh": True, "source": {"_target_": "tokenize_mm.data.BuiltinSource", **SOURCE},
            "audio_pattern": "flatten", "span_order": "fixed", "seed": 0, **data}})  # fmt: skip

    a, b = fresh_spec(cfg(), prepared), fresh_spec(cfg(hard_negatives=1), prepared)
    assert a.cache_dir == b.cache_dir and a.cache_dir.startswith(str(tmp_path / "fresh"))
    assert fresh_spec(cfg(span_order="caption_last"), prepared).cache_dir != a.cache_dir
    assert fresh_spec(cfg(fresh_cache=False), prepared).cache_dir is None


def test_rendering_ahead_keeps_what_the_stream_then_reads(builtin_store, tmp_path):
    """``render_ahead`` renders the missing chunks in several processes and keeps them; the
    stream then reads them without its worker, the same documents as rendered in order; a
    fit with ``fresh_ahead`` renders its expected documents first and trains on the same
    batches as one without."""
    import dataclasses

    from tokenize_mm.data.fresh import expected_documents

    store_dir, spec = builtin_store
    store = TokenStore(store_dir, split="train")
    kept = dataclasses.replace(spec, cache_dir=str(tmp_path / "kept"))
    owner = FreshExamples(kept, store.modality_table, chunk=4, ahead=0, workers=2)
    plain_owner = FreshExamples(spec, store.modality_table, chunk=4, ahead=0)
    try:
        assert owner.render_ahead({"trimodal": 6, "text_only": 3}) == 3
        # rendered by the stream's own workers, which stay for the stream (at the lowest priority)
        assert owner._executor is not None and owner._executor.submit(os.nice, 0).result() == 19
        assert owner.render_ahead({"trimodal": 8, "text_only": 4}) == 0  # all kept
        plain, read = fresh_sources(store, plain_owner), fresh_sources(store, owner)
        for name, n in (("trimodal", 8), ("text_only", 4)):
            for j in range(n):
                assert read[name][j].tokens.tolist() == plain[name][j].tokens.tolist()
        assert owner.streamed == 0 and plain_owner.streamed == 3  # every one was kept ahead
    finally:
        plain_owner.close(), owner.close()
    assert FreshExamples(spec, store.modality_table).render_ahead({"trimodal": 4}) == 0

    sources = fresh_sources(store, FreshExamples(spec, store.modality_table))
    sizes = {n: d.num_tokens for n, d in sources.items()}
    share = {n: v / sum(sizes.values()) for n, v in sizes.items()}
    wanted = expected_documents(sources, share, positions=10_000)
    for name, d in sources.items():  # share x positions / mean length, rounded up
        assert wanted[name] == pytest.approx(share[name] * 10_000 / (d.num_tokens / len(d)), abs=1)

    ahead = dataclasses.replace(spec, cache_dir=str(tmp_path / "fit"))
    _, dm, _ = _fit(store_dir, ahead, steps=3, fresh_ahead=2)
    assert sorted((tmp_path / "fit").glob("*-c16/*.npz"))  # rendered before the first step
    _, dm_plain, _ = _fit(store_dir, spec, steps=3)
    assert dm.stream.state_dict()["positions"] == dm_plain.stream.state_dict()["positions"]
    assert torch.equal(next(dm.stream).tokens, next(dm_plain.stream).tokens)
    dm.teardown(), dm_plain.teardown()
