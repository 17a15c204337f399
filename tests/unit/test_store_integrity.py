"""The store's integrity: resume only the same job, records exactly once, chunk checksums, ids in
the vocabulary, paths inside the store, typed errors for malformed files (fixtures made in code)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import make_examples, make_sentences
from PIL import Image

from tokenize_mm.core.errors import TokenizeMMError
from tokenize_mm.data import BuiltinSource, Example, ManifestSource
from tokenize_mm.data.store import (
    StoreError,
    StoreFormatError,
    StoreIntegrityError,
    StoreMismatchError,
    StoreResumeError,
    TokenStore,
    merge_store,
    pretokenize,
    records_fingerprint,
    source_fingerprint,
)
from tokenize_mm.sequence import SpanOrder

PART = Path("parts") / "part-00000-of-00001"


@pytest.fixture(scope="module")
def text_dirs(tmp_path_factory, tiny_text) -> dict[str, str]:
    """A text tokenizer artifact only: text-only examples tokenize in milliseconds."""
    return {"text": str(tiny_text.save(tmp_path_factory.mktemp("artifacts") / "text"))}


def texts(n: int, prefix: str = "r", seed: int = 0) -> list[Example]:
    return [Example(f"{prefix}{i:02d}", text=t) for i, t in enumerate(make_sentences(n, seed))]


def build(out: Path, source: Any, dirs: dict[str, str], **kwargs: Any) -> TokenStore:
    pretokenize(source, dirs, out, **kwargs)
    merge_store(out)
    return TokenStore(out)


def edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    """Rewrite a JSON file after ``change`` edited its value in place."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def write_manifest(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def manifest_records(n: int, prefix: str = "m", seed: int = 0) -> list[dict[str, Any]]:
    return [{"id": f"{prefix}{i:02d}", "text": t} for i, t in enumerate(make_sentences(n, seed))]


# -------------------------------------------------------------------------- resume: same job only


def test_rerun_with_another_chunk_size_is_refused(tmp_path, text_dirs):
    """It used to resume with the old chunks and cut new ones: 18 examples for 12 records."""
    out, source = tmp_path / "s", texts(12)
    pretokenize(source, text_dirs, out, chunk_size=5)
    with pytest.raises(StoreResumeError, match="chunk_size: 5 then, 3 now") as info:
        pretokenize(source, text_dirs, out, chunk_size=3)
    assert isinstance(info.value, StoreMismatchError) and isinstance(info.value, TokenizeMMError)
    assert str(out / PART) in str(info.value) and "delete" in str(info.value)
    merge_store(out)
    assert len(TokenStore(out)) == 12


def test_records_inserted_at_the_top_of_a_manifest_are_refused(tmp_path, text_dirs):
    """It used to keep the old chunks for the shifted positions: 4 records twice, 4 lost."""
    path = write_manifest(tmp_path / "m.jsonl", manifest_records(12))
    out = tmp_path / "s"
    pretokenize(ManifestSource(path), text_dirs, out, chunk_size=4)
    write_manifest(path, manifest_records(4, prefix="new") + manifest_records(12))
    with pytest.raises(StoreResumeError) as info:
        pretokenize(ManifestSource(path), text_dirs, out, chunk_size=4)
    message = str(info.value)
    assert "num_records: 12 then, 16 now" in message and "source_fingerprint" in message
    assert "records, their order or their files changed" in message


def test_same_count_but_other_content_or_order_is_refused(tmp_path, text_dirs):
    records = manifest_records(8)
    path = write_manifest(tmp_path / "m.jsonl", records)
    pretokenize(ManifestSource(path), text_dirs, tmp_path / "s", chunk_size=4)
    changed = [dict(records[0], text="another text"), *records[1:]]
    for variant in (changed, records[::-1]):
        write_manifest(path, variant)
        with pytest.raises(StoreResumeError, match="source_fingerprint") as info:
            pretokenize(ManifestSource(path), text_dirs, tmp_path / "s", chunk_size=4)
        assert "num_records" not in str(info.value)


def test_another_span_order_is_refused(tmp_path, text_dirs):
    pretokenize(texts(4), text_dirs, tmp_path / "s")
    with pytest.raises(StoreResumeError, match="span_order"):
        pretokenize(texts(4), text_dirs, tmp_path / "s", order=SpanOrder("random", seed=3))
    # a seed is part of the job only for the random order
    pretokenize(texts(4), text_dirs, tmp_path / "s", order=SpanOrder("fixed", seed=3))


def test_the_same_job_resumes_and_redoes_only_what_is_missing(tmp_path, text_dirs):
    path = write_manifest(tmp_path / "m.jsonl", manifest_records(12))
    out = tmp_path / "s"
    part = pretokenize(ManifestSource(path), text_dirs, out, chunk_size=4)
    plan = json.loads((part / "plan.json").read_text())
    assert plan["chunk_size"] == 4 and plan["num_records"] == 12
    assert plan["source_type"] == "ManifestSource" and len(plan["source_fingerprint"]) == 64
    kept = (part / "chunk-000000.json").stat().st_mtime_ns
    (part / "chunk-000001.json").unlink()  # as if killed before this chunk's commit
    (part / "part.json").unlink()
    pretokenize(ManifestSource(path), text_dirs, out, chunk_size=4)  # a new source object
    assert (part / "chunk-000000.json").stat().st_mtime_ns == kept
    merge_store(out)
    store = TokenStore(out, verify=True)
    assert sorted(e["id"] for e in store.examples) == [f"m{i:02d}" for i in range(12)]


def test_a_part_with_chunks_but_no_plan_is_refused(tmp_path, text_dirs):
    out = tmp_path / "s"
    pretokenize(texts(4), text_dirs, out)
    (out / PART / "plan.json").unlink()  # a part written before plans existed
    with pytest.raises(StoreResumeError, match=r"no plan\.json"):
        pretokenize(texts(4), text_dirs, out)


def test_merge_refuses_parts_made_from_different_sources(tmp_path, text_dirs):
    out = tmp_path / "s"
    pretokenize(texts(8), text_dirs, out, shard_index=0, num_shards=2)
    pretokenize(texts(8, seed=1), text_dirs, out, shard_index=1, num_shards=2)
    with pytest.raises(StoreMismatchError, match="source_fingerprint") as info:
        merge_store(out)
    assert "part-00001-of-00002" in str(info.value)


# ------------------------------------------------------------------------------ fingerprints


def test_records_fingerprint_covers_content_media_and_order():
    base = make_examples(6)
    assert records_fingerprint(base) == records_fingerprint(make_examples(6))
    image = base[1].image.copy()
    image.putpixel((0, 0), tuple((c + 1) % 256 for c in image.getpixel((0, 0))))
    wav, sr = base[2].audio[0]
    louder = wav.clone()
    louder[0, 0] += 0.5
    variants = [
        [*base[:1], replace(base[1], image=image), *base[2:]],
        [*base[:2], replace(base[2], audio=((louder, sr),)), *base[3:]],
        [*base[:3], replace(base[3], text=base[3].text + "!"), *base[4:]],
        [*base[:4], replace(base[4], split="val" if base[4].split != "val" else "test"), base[5]],
        [base[1], base[0], *base[2:]],
        base[:5],
    ]
    prints = {records_fingerprint(v) for v in variants} | {records_fingerprint(base)}
    assert len(prints) == len(variants) + 1


def test_records_fingerprint_hashes_files_by_stat_and_survives_a_failing_record(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(path)
    source = [Example("a", image=path)]
    before = records_fingerprint(source)
    os.utime(path, ns=(1, 1))
    assert records_fingerprint(source) != before

    class Failing(list):
        def __getitem__(self, i):
            if i == 1:
                raise OSError("unreadable record")
            return super().__getitem__(i)

    failing = Failing(texts(3))
    assert records_fingerprint(failing) == records_fingerprint(Failing(texts(3)))
    assert records_fingerprint(failing) != records_fingerprint(texts(3))


def test_builtin_source_fingerprint_is_its_arguments_and_code(monkeypatch):
    def no_rendering(self, i):
        raise AssertionError("the fingerprint of a BuiltinSource must not render examples")

    monkeypatch.setattr(BuiltinSource, "__getitem__", no_rendering)
    a, b = BuiltinSource(num_examples=8), BuiltinSource(num_examples=8)
    assert source_fingerprint(a) == source_fingerprint(b)
    assert source_fingerprint(a) != source_fingerprint(BuiltinSource(num_examples=8, seed=1))
    assert source_fingerprint(a) != source_fingerprint(BuiltinSource(num_examples=8, split="val"))


def test_a_source_with_its_own_fingerprint_is_not_read(tmp_path):
    path = write_manifest(tmp_path / "m.jsonl", manifest_records(3))
    source = ManifestSource(path)
    assert source_fingerprint(source) == source.fingerprint()


# ------------------------------------------------------------------- merge: every record once


def test_merge_names_a_chunk_that_lost_a_record(tmp_path, text_dirs):
    out = tmp_path / "s"
    pretokenize(texts(6), text_dirs, out, chunk_size=3)
    edit_json(out / PART / "chunk-000001.json", lambda d: d["examples"].pop(0))
    with pytest.raises(StoreIntegrityError, match=r"chunk-000001\.json.*neither") as info:
        merge_store(out)
    assert "delete" in str(info.value)


def test_merge_names_a_chunk_that_holds_a_record_twice(tmp_path, text_dirs):
    out = tmp_path / "s"
    pretokenize(texts(6), text_dirs, out, chunk_size=3)

    def twice(index):
        first = index["examples"][0]
        index["errors"].append({"position": first["position"], "id": first["id"], "reason": "x"})

    edit_json(out / PART / "chunk-000000.json", twice)
    with pytest.raises(StoreIntegrityError, match=r"chunk-000000\.json.*twice"):
        merge_store(out)


def test_merge_names_a_chunk_covering_other_records_than_its_plan(tmp_path, text_dirs):
    out = tmp_path / "s"
    pretokenize(texts(6), text_dirs, out, chunk_size=3)
    edit_json(out / PART / "chunk-000001.json", lambda d: d.update(positions=[0, 1, 2]))
    with pytest.raises(StoreIntegrityError, match=r"chunk-000001\.json.*plan gives it"):
        merge_store(out)


def test_merge_refuses_a_record_id_in_two_chunks(tmp_path, text_dirs):
    source = texts(6)
    source[4] = Example("r00", text="the same id again")
    pretokenize(source, text_dirs, tmp_path / "s", chunk_size=3)
    with pytest.raises(StoreIntegrityError, match=r"chunk-000001\.json: record id 'r00'"):
        merge_store(tmp_path / "s")


# ---------------------------------------------------------------------- checksums and id range


def test_chunk_index_records_size_and_sha256_of_its_bin(tmp_path, text_dirs):
    build(tmp_path / "s", texts(4), text_dirs)
    chunk = tmp_path / "s" / PART / "chunk-000000"
    index = json.loads(chunk.with_suffix(".json").read_text())
    data = chunk.with_suffix(".bin").read_bytes()
    assert index["bin_bytes"] == len(data) == 2 * index["num_tokens"]
    assert index["bin_sha256"] == hashlib.sha256(data).hexdigest()
    assert index["ids"] == ["r00", "r01", "r02", "r03"]


def test_a_truncated_chunk_is_refused_at_open(tmp_path, text_dirs):
    out = tmp_path / "s"
    build(out, texts(6), text_dirs, chunk_size=3)
    path = out / PART / "chunk-000001.bin"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(StoreIntegrityError, match=r"chunk-000001\.bin.*truncated"):
        TokenStore(out)
    path.unlink()
    with pytest.raises(StoreIntegrityError, match=r"chunk-000001\.bin"):
        TokenStore(out)


def test_a_changed_chunk_fails_verify_and_merge(tmp_path, text_dirs):
    out = tmp_path / "s"
    build(out, texts(6), text_dirs, chunk_size=3)
    path = out / PART / "chunk-000000.bin"
    data = np.fromfile(path, dtype=np.uint16)
    data[3] = 10 if data[3] != 10 else 11  # another id, still in the vocabulary
    data.tofile(path)
    store = TokenStore(out)  # the size is right: opening (a stat) cannot tell
    with pytest.raises(StoreIntegrityError, match=r"chunk-000000\.bin: sha256"):
        store.verify()
    with pytest.raises(StoreIntegrityError, match="sha256"):
        TokenStore(out, verify=True)
    with pytest.raises(StoreIntegrityError, match=r"chunk-000000\.bin: sha256"):
        merge_store(out)


def test_an_id_outside_the_vocabulary_is_a_typed_error_naming_chunk_and_example(
    tmp_path, text_dirs
):
    out = tmp_path / "s"
    store = build(out, texts(4), text_dirs, chunk_size=2)
    vocab = store.layout.vocab_size
    path = out / PART / "chunk-000001.bin"
    data = np.fromfile(path, dtype=np.uint16)
    data[1] = vocab
    data.tofile(path)
    edit_json(
        path.with_suffix(".json"),
        lambda d: d.update(bin_sha256=hashlib.sha256(path.read_bytes()).hexdigest()),
    )
    store = TokenStore(out)
    i = next(k for k, e in enumerate(store.examples) if e["id"] == "r02")
    for read in (store.document, store.__getitem__):
        with pytest.raises(
            StoreIntegrityError, match=rf"chunk-000001\.bin: example 'r02'.*{vocab}"
        ):
            read(i)
    assert store.document(0).tokens.size > 0  # the other chunk still reads
    with pytest.raises(StoreIntegrityError, match="outside the vocabulary"):
        store.verify()


# ---------------------------------------------------------------- paths and malformed files


@pytest.mark.parametrize(
    "chunk",
    [
        "../../etc/x",
        "/etc/passwd",
        "parts/part-00000-of-00001/../../../x/chunk-000000",
        "parts/part-00001-of-00001/chunk-000000",
        "parts/part-0-of-1/chunk-0",
        "parts/part-00000-of-00001/chunk-000000.json",
        7,
    ],
)
def test_chunk_paths_must_be_the_stores_own(tmp_path, text_dirs, chunk):
    out = tmp_path / "s"
    build(out, texts(2), text_dirs)
    edit_json(out / "store.json", lambda d: d.update(chunks=[chunk]))
    with pytest.raises(StoreFormatError, match=r"store\.json: chunks\[0\].*not a chunk of this"):
        TokenStore(out)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: [d], "holds a JSON array, not an object"),
        (lambda d: {k: v for k, v in d.items() if k != "chunks"}, "missing key 'chunks'"),
        (lambda d: {**d, "chunks": "parts"}, "'chunks' is a JSON string, expected array"),
        (lambda d: {**d, "format_version": "2"}, "'format_version' is a JSON string"),
        (lambda d: {**d, "fingerprint": None}, "'fingerprint' is a JSON null"),
        (lambda d: {**d, "dtype": "float64"}, "dtype 'float64'"),
    ],
)
def test_a_malformed_store_json_is_a_typed_error_naming_it(tmp_path, text_dirs, change, message):
    out = tmp_path / "s"
    build(out, texts(2), text_dirs)
    path = out / "store.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    with pytest.raises(StoreFormatError, match=r"store\.json") as info:
        TokenStore(out)
    assert message in str(info.value) and "merge_store" in str(info.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["examples"][0].update(offset="0"), "example 0: 'offset' is a JSON string"),
        (lambda d: d["examples"][0].update(length=10**6), "past num_tokens"),
        (lambda d: d["examples"][0].pop("cuts"), "example 0: missing key 'cuts'"),
        (lambda d: d.update(examples={}), "'examples' is a JSON object, expected array"),
        (lambda d: d["errors"].append("oops"), "error 0: is a JSON string, not an object"),
        (lambda d: d.update(num_tokens=True), "'num_tokens' is a JSON boolean"),
    ],
)
def test_a_malformed_chunk_index_is_a_typed_error_naming_it(tmp_path, text_dirs, change, message):
    out = tmp_path / "s"
    build(out, texts(2), text_dirs)
    edit_json(out / PART / "chunk-000000.json", change)
    with pytest.raises(StoreFormatError, match=r"chunk-000000\.json") as info:
        TokenStore(out)
    assert message in str(info.value) and "rerun pretokenize" in str(info.value)


def test_files_that_are_not_json_are_typed_errors(tmp_path, text_dirs):
    out = tmp_path / "s"
    build(out, texts(2), text_dirs)
    (out / PART / "chunk-000000.json").write_text("{not json")
    with pytest.raises(StoreFormatError, match=r"chunk-000000\.json: cannot be read as JSON"):
        TokenStore(out)
    with pytest.raises(StoreFormatError, match=r"chunk-000000\.json"):
        merge_store(out)
    (out / PART / "plan.json").write_text("[]")
    with pytest.raises(StoreFormatError, match=r"plan\.json: holds a JSON array"):
        pretokenize(texts(2), text_dirs, out)
    (out / "layout.json").write_text("{}")
    with pytest.raises(StoreFormatError, match=r"layout\.json: not a valid layout"):
        TokenStore(out)
    (out / "store.json").write_bytes(b"\xff\xfe")
    with pytest.raises(StoreError, match=r"store\.json"):
        TokenStore(out)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda path: path.write_text("{not json"), "cannot be read as JSON"),
        (lambda path: edit_json(path, lambda d: d.pop("source_skipped")), "missing key"),
        (lambda path: edit_json(path, lambda d: d.update(source_skipped="x")), "expected array"),
        (
            lambda path: edit_json(path, lambda d: d.update(source_skipped=[{"id": "a"}])),
            "source_skipped[0]: missing key 'reason'",
        ),
    ],
)
def test_accounting_names_a_malformed_part_json(tmp_path, text_dirs, change, message):
    """It read part.json with a bare json.loads and ["source_skipped"]: a KeyError, unnamed."""
    from tokenize_mm.data.accounting import account

    out = tmp_path / "s"
    store = build(out, texts(2), text_dirs)
    assert account(store)["source_skipped"] == {"total": 0, "by_reason": {}}
    change(out / PART / "part.json")
    with pytest.raises(StoreFormatError, match=r"part\.json") as info:
        account(store)
    assert message in str(info.value) and "pretokenize again" in str(info.value)


def test_merge_refuses_a_stray_folder_in_parts(tmp_path, text_dirs):
    out = tmp_path / "s"
    pretokenize(texts(2), text_dirs, out)
    (out / "parts" / "part-x").mkdir()
    with pytest.raises(StoreFormatError, match="part-x: not a part of this store"):
        merge_store(out)


def test_a_clean_store_verifies(tmp_path, text_dirs):
    examples = [*texts(5), Example("nan", text="t", audio=((torch.full((1, 8), 0.0), 16_000),))]
    store = build(tmp_path / "s", examples, text_dirs, chunk_size=2)
    store.verify()
    assert len(store) == 5 and [e["id"] for e in store.errors] == ["nan"]
    store_json = json.loads((tmp_path / "s" / "store.json").read_text())
    assert store_json["num_records"] == 6 and store_json["format_version"] == 2
