"""The pretokenized store: exactly-once records, resumability, shards, workers, fingerprints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_examples

from tokenize_mm.data.store import (
    StoreError,
    StoreMismatchError,
    TokenStore,
    merge_store,
    pretokenize,
)
from tokenize_mm.sequence import VocabLayout, deinterleave

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, tiny_text, tiny_image, tiny_audio) -> dict[str, str]:
    root = tmp_path_factory.mktemp("artifacts")
    return {m: str(tok.save(root / m)) for m, tok in
            [("text", tiny_text), ("image", tiny_image), ("audio", tiny_audio)]}  # fmt: skip


def records(store: TokenStore) -> tuple[list[str], list[str]]:
    return sorted(e["id"] for e in store.examples), sorted(e["id"] for e in store.errors)


def test_every_record_once_and_tokens_decode_back(tmp_path, artifacts, tiny_text, tiny_audio):
    examples = make_examples(bad=(6,))
    pretokenize(examples, artifacts, tmp_path / "s", chunk_size=5)
    merge_store(tmp_path / "s")
    store = TokenStore(tmp_path / "s")
    ok, errors = records(store)
    assert ok == sorted(e.id for e in examples if e.id != "ex006") and errors == ["ex006"]
    assert "NaN" in store.errors[0]["reason"] and store.errors[0]["reason"].startswith("audio")
    assert store.dtype == np.uint16 and isinstance(store[0].tokens, np.memmap)
    layout = store.layout
    by_id = {e.id: e for e in examples}
    for item in store:
        ex = by_id[item.meta["id"]]
        spans = dict(deinterleave(layout, torch.from_numpy(item.tokens.astype(np.int64))))
        assert torch.equal(spans["text"], tiny_text.encode(ex.text).codes)
        if ex.audio:
            assert torch.equal(spans["audio"], tiny_audio.encode(ex.audio[0]).codes)
        counts = item.meta["tokens"]
        assert sum(counts.values()) == item.tokens.size
        assert item.meta["split"] == ex.split and item.meta["concept"] == ex.concept
    assert len(TokenStore(tmp_path / "s", split="test")) == sum(
        e.split == "test" for e in examples if e.id != "ex006"
    )


@pytest.mark.slow
def test_shards_and_workers_give_the_same_store(tmp_path, artifacts):
    examples = make_examples(16)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # one process at 2 threads; the workers below run 1 each
    try:
        pretokenize(examples, artifacts, tmp_path / "one", chunk_size=3)
    finally:
        torch.set_num_threads(before)
    merge_store(tmp_path / "one")
    for shard in (1, 0):  # any order, any machine
        pretokenize(examples, artifacts, tmp_path / "sharded", chunk_size=3, shard_index=shard,
                    num_shards=2, workers=2)  # fmt: skip
    merge_store(tmp_path / "sharded")
    # checksums, records and id range hold whatever wrote the chunks (workers, shards)
    one, sharded = TokenStore(tmp_path / "one", verify=True), TokenStore(tmp_path / "sharded")
    sharded.verify()
    tokens = lambda s: {x.meta["id"]: x.tokens.tolist() for x in s}  # noqa: E731
    assert tokens(one) == tokens(sharded) and len(one) == 16


def test_merge_refuses_missing_parts(tmp_path, artifacts):
    pretokenize(make_examples(8), artifacts, tmp_path / "s", shard_index=0, num_shards=2)
    with pytest.raises(StoreError, match="every shard_index"):
        merge_store(tmp_path / "s")
    with pytest.raises(StoreError, match=r"no store\.json"):
        TokenStore(tmp_path / "s")


def test_fingerprint_mismatch_is_refused(tmp_path, artifacts, tiny_text, sentences):
    from tokenize_mm import TextTokenizer

    pretokenize(make_examples(8), artifacts, tmp_path / "s")
    merge_store(tmp_path / "s")
    other = TextTokenizer.fit(sentences[:200], vocab_size=310).save(tmp_path / "other")
    other_layout = VocabLayout.from_artifacts({**artifacts, "text": other})
    with pytest.raises(StoreMismatchError, match="other tokenizers"):
        TokenStore(tmp_path / "s", expected_fingerprint=other_layout.fingerprint)
    same = VocabLayout.from_artifacts(artifacts).fingerprint
    assert len(TokenStore(tmp_path / "s", expected_fingerprint=same)) == 8
    with pytest.raises(StoreMismatchError, match="another out_dir"):
        pretokenize(make_examples(8), {**artifacts, "text": str(other)}, tmp_path / "s")


KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from conftest import make_examples
from tokenize_mm.data.store import pretokenize
pretokenize(make_examples(40, bad=(7,)), {artifacts!r}, {out!r}, chunk_size=2, workers=1)
"""


@pytest.mark.slow
def test_killed_run_resumes_with_every_record_exactly_once(tmp_path, artifacts):
    out = tmp_path / "s"
    script = KILL_SCRIPT.format(
        tests=str(ROOT / "tests" / "unit"), artifacts=artifacts, out=str(out)
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    part = out / "parts" / "part-00000-of-00001"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(part.glob("chunk-*.json"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(part.glob("chunk-*.json")))
    assert 3 <= done_before < 20, "the run should have been killed part-way"
    assert not (part / "part.json").exists()
    pretokenize(make_examples(40, bad=(7,)), artifacts, out, chunk_size=2)
    merge_store(out)
    store = TokenStore(out)
    ok, errors = records(store)
    assert errors == ["ex007"] and len(ok) == 39 and len(set(ok)) == 39
    assert json.loads((out / "store.json").read_text())["num_examples"] == 39
    assert not list(part.glob(".*.tmp"))


def test_manifest_records_the_source_skipped_are_reported(tmp_path, artifacts):
    """A manifest record whose file is missing never reaches the tokenizers: the store's report
    lists it by reason, so that every input record is accounted for."""
    from tokenize_mm.data import ManifestSource
    from tokenize_mm.data.accounting import account

    lines = [
        '{"id": "a", "text": "a red circle"}',
        '{"id": "b", "text": "a blue star", "image": "missing.png"}',
        '{"id": "c", "text": "a green ring"}',
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    source = ManifestSource(tmp_path / "m.jsonl")
    pretokenize(source, artifacts, tmp_path / "s", num_shards=1)
    merge_store(tmp_path / "s")
    report = account(TokenStore(tmp_path / "s"))
    assert report["examples"] == 2 and report["source_skipped"]["total"] == 1
    assert sum(report["source_skipped"]["by_reason"].values()) == 1
