"""The pretokenized store: examples tokenized once into memory-mapped shards of token ids.

Training never re-runs the tokenizers: ``pretokenize`` writes every example of a source as one
interleaved sequence of global ids (``VocabLayout``), and ``TokenStore`` reads them back through
``numpy.memmap``. Layout of a store directory::

    layout.json                        the VocabLayout (its fingerprint names the store's ids)
    parts/part-00000-of-00001/         one part per shard_index (any launcher can fan them out)
        plan.json                      the job the part belongs to, written when it is started
        chunk-000000.bin               token ids of a chunk of examples, uint16 (or uint32)
        chunk-000000.json              its index: the record positions and ids it covers, the
                                       .bin's size and sha256; per example id, offset, length,
                                       cuts, tokens per modality, units, source, split, concept;
                                       its errors
        part.json                      written when every chunk of the part is done
    store.json                         written by the merge: fingerprint, artifact identities,
                                       dtype, the chunks of all parts, counts

**Shards and chunks.** Record i of the source belongs to part ``i % num_shards``; a part's records
are cut into chunks of ``chunk_size``, and chunk c covers a fixed range of them. A chunk is
committed by writing its ``.bin`` and then its ``.json`` (each atomically); a chunk without its
``.json`` does not exist. So a run killed at any moment and started again redoes only uncommitted
chunks, and every input record ends up exactly once in a committed chunk: in its examples or in
its errors (with the reason). Chunks run in parallel over worker processes. Records that the
source itself refused (a manifest's unreadable files) are listed in ``part.json``.

**Resume only the same job.** Which records a chunk covers depends on the source, its order,
``chunk_size`` and the shard; what its tokens are depends on the layout, ``audio_pattern`` and the
span order. A part records all of it in ``plan.json`` when it is started (with the source's
``source_fingerprint``: content and order), and a rerun resumes the part only when its plan is the
same; otherwise ``StoreResumeError`` names each difference (then, now). ``merge_store`` checks that
the parts agree, that each chunk covers exactly the records its plan gives it, each once (in its
examples or errors), and that no record id is in two chunks.

**Integrity.** Each chunk index records the size and sha256 of its ``.bin``. ``TokenStore``
checks every size when it opens a store (a stat per chunk: a truncated chunk is refused), and
``TokenStore.verify()`` (or ``verify=True``; ``merge_store`` always) reads every chunk and checks
its sha256 and that every id lies in the layout's vocabulary. Reading an example whose ids lie
outside it raises ``StoreIntegrityError`` naming the chunk and the example. Every JSON field read
is type-checked (``StoreFormatError`` names the file and the key), and the chunk paths in
``store.json`` must be the store's own names (``parts/part-00000-of-00001/chunk-000000``): a path
that would lead out of the store is refused.

**Fingerprint.** ``store.json`` records the layout's fingerprint; ``TokenStore(path,
expected_fingerprint=...)`` (what training calls with the fingerprint of the tokenizers it was
given) refuses a store laid out by other tokenizers with ``StoreMismatchError``.

The package, one idea per module: ``errors.py`` (the store's errors), ``json_fields.py``
(``JsonFile``: store files read as checked JSON), ``format.py`` (names, version, token dtype,
``layout.json``), ``fingerprint.py`` (source fingerprints), ``plan.py`` (the part plan and the
resume rule), ``worker.py`` (one chunk tokenized and committed), ``write.py`` (``pretokenize``),
``checks.py`` (a chunk checked against its index), ``merge.py`` (``merge_store``) and ``read.py``
(``TokenStore``).
"""

from tokenize_mm.data.store.errors import (
    StoreError,
    StoreFormatError,
    StoreIntegrityError,
    StoreMismatchError,
    StoreResumeError,
)
from tokenize_mm.data.store.fingerprint import records_fingerprint, source_fingerprint
from tokenize_mm.data.store.format import (
    PLAN_FORMAT,
    PLAN_NAME,
    STORE_FORMAT,
    STORE_VERSION,
    chunk_name,
    committed_chunks,
    part_name,
    token_dtype,
)
from tokenize_mm.data.store.merge import merge_store
from tokenize_mm.data.store.plan import chunk_positions
from tokenize_mm.data.store.read import StoredExample, TokenStore
from tokenize_mm.data.store.write import pretokenize

__all__ = [
    "PLAN_FORMAT",
    "PLAN_NAME",
    "STORE_FORMAT",
    "STORE_VERSION",
    "StoreError",
    "StoreFormatError",
    "StoreIntegrityError",
    "StoreMismatchError",
    "StoreResumeError",
    "StoredExample",
    "TokenStore",
    "chunk_name",
    "chunk_positions",
    "committed_chunks",
    "merge_store",
    "part_name",
    "pretokenize",
    "records_fingerprint",
    "source_fingerprint",
    "token_dtype",
]
