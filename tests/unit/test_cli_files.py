"""The file-in, file-out helpers of tmm-encode and tmm-decode, and token files, without
subprocesses: input expansion, output names and collisions, failures, and token file checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file

from tokenize_mm.cli.decode import decoded_name
from tokenize_mm.cli.encode import token_file_name
from tokenize_mm.cli.files import (
    Inputs,
    Job,
    OutputCollisionError,
    OutputExistsError,
    Source,
    audio_suffixes,
    check_not_existing,
    encodable_suffixes,
    expand_inputs,
    plan_jobs,
    process_files,
    report,
    run_jobs,
)
from tokenize_mm.core.errors import TokenizeMMError
from tokenize_mm.tokenizers import Encoded, InvalidInputError
from tokenize_mm.tokenizers.audio.io import AUDIO_SUFFIXES
from tokenize_mm.tokenizers.token_file import (
    TokenFileError,
    TokenizerMismatchError,
    check_written_by,
    load_encoded,
    save_encoded,
)

CODES = torch.tensor([[1, 2, 3]])
TOKEN_META = {"format": "tokenize_mm.tokens", "format_version": "1", "kind": "text.sentencepiece"}


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_raw(path: Path, tensors: dict[str, torch.Tensor], **meta: str) -> Path:
    """A safetensors file with exactly these tensors and metadata (bypassing save_encoded)."""
    save_file(tensors, str(path), metadata={**TOKEN_META, **meta})
    return path


# ---------------------------------------------------------------------------------------------
# Which files: suffixes and inputs


def test_audio_suffixes_follow_soundfile_formats():
    assert audio_suffixes({}) == AUDIO_SUFFIXES  # the minimum, whatever soundfile says
    found = audio_suffixes({"WAV": "WAV", "MP3": "MPEG", "RAW": "raw", "NEWFMT": "new"})
    assert ".mp3" in found and ".newfmt" in found and ".raw" not in found
    assert len(found) == len(set(found))


def test_encode_reads_mp3_when_soundfile_does():
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile reads no mp3")
    assert ".mp3" in encodable_suffixes("audio") and ".flac" in encodable_suffixes("audio")


def test_expand_inputs_reports_missing_inputs_and_empty_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    touch(tmp_path / "other" / "notes.md")
    found = expand_inputs([str(tmp_path / "missing.png"), str(tmp_path / "empty"),
                           str(tmp_path / "other")], (".png",))  # fmt: skip
    assert found.sources == []
    assert len(found.problems) == 3
    assert "missing.png: input does not exist" in found.problems[0]
    assert all("holds no file ending in .png" in p for p in found.problems[1:])
    assert any("skipped 1 file(s)" in n and ".md (1)" in n for n in found.notes)


def test_expand_inputs_keeps_folders_relative_names_and_tries_explicit_files(tmp_path):
    touch(tmp_path / "photos" / "sub" / "x.PNG")
    touch(tmp_path / "photos" / "y.png")
    odd = touch(tmp_path / "song.xyz")
    found = expand_inputs([str(tmp_path / "photos"), str(odd)], (".png",))
    assert [(s.rel, s.index) for s in found.sources] == [
        (Path("sub/x.PNG"), 0),
        (Path("y.png"), 0),
        (Path("song.xyz"), 1),  # named explicitly: attempted, whatever its suffix
    ]
    assert found.problems == [] and found.notes == []


def test_expand_inputs_does_a_file_given_twice_once_and_says_so(tmp_path):
    x = touch(tmp_path / "d" / "x.png")
    found = expand_inputs([str(x), str(tmp_path / "d")], (".png",))
    assert [s.path for s in found.sources] == [x]
    assert "given more than once" in found.notes[0]


# ---------------------------------------------------------------------------------------------
# Output names


def test_token_file_names_keep_the_full_source_name():
    assert token_file_name(Path("a/photo.png")) == Path("a/photo.png.tokens.safetensors")
    assert token_file_name(Path("photo.jpg")) != token_file_name(Path("photo.png"))


@pytest.mark.parametrize(
    ("token_file", "modality", "decoded"),
    [
        ("p0.png.tokens.safetensors", "image", "p0.png"),
        ("photo.jpg.tokens.safetensors", "image", "photo.jpg.png"),
        ("sub/a.txt.tokens.safetensors", "text", "sub/a.txt"),
        ("notes.md.tokens.safetensors", "text", "notes.md.txt"),
        ("s01.wav.tokens.safetensors", "audio", "s01.wav"),
        ("song.mp3.tokens.safetensors", "audio", "song.mp3.wav"),
        ("x.safetensors", "image", "x.png"),
    ],
)
def test_decoded_names(token_file, modality, decoded):
    assert decoded_name(Path(token_file), modality) == Path(decoded)


def sources(*rels: tuple[str, int]) -> list[Source]:
    return [Source(Path(f"in{i}") / rel, Path(rel), i) for rel, i in rels]


def test_same_name_from_separate_inputs_goes_under_the_input_position(tmp_path):
    jobs = plan_jobs(sources(("x.png", 0), ("x.png", 1), ("y.png", 1)), tmp_path, token_file_name)
    assert [j.target.relative_to(tmp_path) for j in jobs] == [
        Path("0/x.png.tokens.safetensors"),
        Path("1/x.png.tokens.safetensors"),
        Path("y.png.tokens.safetensors"),
    ]


def test_photo_png_and_photo_jpg_decode_to_two_files(tmp_path):
    rels = (("photo.png.tokens.safetensors", 0), ("photo.jpg.tokens.safetensors", 0))
    jobs = plan_jobs(sources(*rels), tmp_path, lambda rel: decoded_name(rel, "image"))
    assert {j.target.name for j in jobs} == {"photo.png", "photo.jpg.png"}


def test_remaining_collision_names_both_sources_and_refuses(tmp_path):
    rels = (("x.tokens.safetensors", 0), ("x.safetensors", 0))
    with pytest.raises(OutputCollisionError) as info:
        plan_jobs(sources(*rels), tmp_path, lambda rel: decoded_name(rel, "image"))
    message = str(info.value)
    assert str(tmp_path / "x.png") in message
    assert "x.tokens.safetensors" in message and "in0/x.safetensors" in message
    assert isinstance(info.value, TokenizeMMError)


# ---------------------------------------------------------------------------------------------
# Running: every failure listed, the rest done, true counts


def test_run_jobs_lists_every_failure_and_goes_on(tmp_path, capsys):
    def work(source: Path, target: Path) -> str | None:
        if source.name == "typed":
            raise TokenizeMMError("a typed error that is not an input error")
        if source.name == "input":
            raise InvalidInputError("bad input", item=str(source))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("ok")  # raises IsADirectoryError for "blocked"
        return "a note" if source.name == "noted" else None

    (tmp_path / "blocked").mkdir()
    names = ["typed", "input", "blocked", "good", "noted"]
    jobs = [Job(Path(n), tmp_path / n) for n in names]
    outcome = run_jobs(jobs, work, "encode")
    assert (outcome.total, outcome.written, outcome.notes) == (5, 2, ["a note"])
    assert outcome.failures[0] == "typed: a typed error that is not an input error"
    assert outcome.failures[1] == "input: bad input"
    assert outcome.failures[2].startswith("blocked: ")
    assert capsys.readouterr().err == ""  # no progress bar when stderr is not a terminal


def test_run_jobs_lets_bugs_through(tmp_path):
    def work(source: Path, target: Path) -> None:
        raise KeyError("a bug, not a bad file")

    with pytest.raises(KeyError):
        run_jobs([Job(Path("a"), tmp_path / "a")], work, "encode")


def test_report_prints_true_counts_and_every_problem(capsys, tmp_path):
    found = Inputs(problems=["gone: input does not exist"], notes=["skipped"])
    outcome = run_jobs([Job(Path("a"), tmp_path / "a")], lambda s, t: t.write_text(""), "decode")
    assert report(outcome, found, "decode", tmp_path) == 1
    out, err = capsys.readouterr()
    assert f"decoded 1 of 1 files into {tmp_path}" in out
    assert "gone: input does not exist" in err and "skipped" in err


def test_process_files_keeps_same_names_of_separate_inputs_apart(tmp_path, capsys):
    touch(tmp_path / "a" / "x.txt")
    touch(tmp_path / "b" / "x.txt")
    written = []
    inputs = [str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "a" / "x.txt")]
    process_files(inputs, (".txt",), token_file_name, lambda s, t: written.append(t), "encode",
                  tmp_path / "out")  # fmt: skip
    assert sorted(p.relative_to(tmp_path / "out") for p in written) == [
        Path("0/x.txt.tokens.safetensors"),
        Path("1/x.txt.tokens.safetensors"),
    ]
    out, err = capsys.readouterr()
    assert "encoded 2 of 2 files" in out and "given more than once" in err


def test_process_files_writes_nothing_when_outputs_collide(tmp_path, capsys):
    touch(tmp_path / "a" / "x.txt")
    touch(tmp_path / "a" / "y.txt")
    written = []
    with pytest.raises(SystemExit) as info:
        process_files([str(tmp_path / "a")], (".txt",), lambda rel: Path("same"),
                      lambda s, t: written.append(t), "encode", tmp_path / "out")  # fmt: skip
    assert info.value.code == 1 and written == []
    out, err = capsys.readouterr()
    assert "encoded 0 of 2 files" in out
    assert f"{tmp_path / 'a' / 'x.txt'} and {tmp_path / 'a' / 'y.txt'}" in err


# ---------------------------------------------------------------------------------------------
# Token files


def test_token_file_round_trip_is_atomic(tmp_path):
    encoded = Encoded(codes=CODES, extras={"scale": torch.ones(2)})
    path = save_encoded(tmp_path / "x.tokens.safetensors", encoded, {"kind": "k"})
    got, meta = load_encoded(path)
    assert got == encoded and meta["kind"] == "k" and meta["format_version"] == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["x.tokens.safetensors"]  # no temp file left


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_encoded(tmp_path / "x.tokens.safetensors", Encoded(codes=CODES), {})
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("tokenize_mm.tokenizers.token_file.save_file", broken)
    with pytest.raises(OSError):
        save_encoded(path, Encoded(codes=CODES + 1), {})
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("version", ["one", "1.5", "", "0", "-1", "²"])
def test_malformed_format_version_is_a_typed_error(tmp_path, version):
    path = write_raw(tmp_path / "t.safetensors", {"codes": CODES}, format_version=version)
    with pytest.raises(TokenFileError, match="format_version must be a positive integer") as info:
        load_encoded(path)
    assert str(path) in str(info.value) and isinstance(info.value, InvalidInputError)


def test_missing_and_newer_format_version_refused(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"codes": CODES}, str(path), metadata={"format": "tokenize_mm.tokens"})
    with pytest.raises(TokenFileError, match="positive integer, got None"):
        load_encoded(path)
    write_raw(path, {"codes": CODES}, format_version="2")
    with pytest.raises(TokenFileError, match="newer than this tokenize_mm reads"):
        load_encoded(path)


@pytest.mark.parametrize(
    ("tensors", "match"),
    [
        ({"codes": torch.tensor([1, 2, 3])}, r"shape \(K, T\), got torch.int64 of shape \(3,\)"),
        ({"codes": torch.zeros(1, 2, 3, dtype=torch.long)}, "of shape \\(1, 2, 3\\)"),
        ({"codes": CODES.int()}, "got torch.int32"),
        ({"scale": torch.ones(1)}, "no 'codes' tensor"),
        ({"codes": CODES, "scale": torch.ones(1)}, "unexpected tensor 'scale'"),
        ({"codes": CODES, "extras.": torch.ones(1)}, "extra name '' is not an identifier"),
        ({"codes": CODES, "extras.a-b": torch.ones(1)}, "extra name 'a-b'"),
    ],
)
def test_malformed_tensors_are_typed_errors(tmp_path, tensors, match):
    path = write_raw(tmp_path / "t.safetensors", tensors)
    with pytest.raises(TokenFileError, match=match):
        load_encoded(path)


def test_save_refuses_extras_that_would_not_load_back(tmp_path):
    with pytest.raises(InvalidInputError, match="not an identifier"):
        save_encoded(tmp_path / "t", Encoded(codes=CODES, extras={"a.b": torch.ones(1)}), {})
    with pytest.raises(InvalidInputError, match=r"must be a torch\.Tensor"):
        save_encoded(tmp_path / "t", Encoded(codes=CODES, extras={"a": [1.0]}), {})
    assert list(tmp_path.iterdir()) == []


def test_not_a_token_file(tmp_path):
    with pytest.raises(TokenFileError, match="does not exist"):
        load_encoded(tmp_path / "gone.safetensors")
    with pytest.raises(TokenFileError, match="not a readable safetensors"):
        load_encoded(touch(tmp_path / "junk.safetensors", b"junk"))
    path = tmp_path / "other.safetensors"
    save_file({"codes": CODES}, str(path), metadata={"format": "something.else"})
    with pytest.raises(TokenFileError, match="not a tokenize_mm token file"):
        load_encoded(path)


# ---------------------------------------------------------------------------------------------
# Which tokenizer wrote a token file

SHA_A, SHA_B = "a" * 64, "b" * 64


def test_check_written_by_accepts_the_same_tokenizer():
    meta = {"kind": "text.sentencepiece", "tokenizer_sha256": SHA_A}
    assert check_written_by(meta, kind="text.sentencepiece", sha256=SHA_A, name="f") is True


def test_check_written_by_refuses_another_artifact_of_the_same_kind():
    meta = {"kind": "text.sentencepiece", "tokenizer_sha256": SHA_A}
    with pytest.raises(TokenizerMismatchError) as info:
        check_written_by(meta, kind="text.sentencepiece", sha256=SHA_B, name="tok/f")
    message = str(info.value)
    assert message.startswith("tok/f: ") and "a" * 12 in message and "b" * 12 in message
    assert "decode it with the artifact that encoded it" in message


def test_check_written_by_refuses_another_kind():
    meta = {"kind": "image.vq", "tokenizer_sha256": SHA_A}
    with pytest.raises(TokenizerMismatchError, match=r"'image\.vq' tokenizer"):
        check_written_by(meta, kind="text.sentencepiece", sha256=SHA_A, name="f")


def test_token_file_without_hash_needs_allow_unverified():
    meta = {"kind": "text.sentencepiece"}
    with pytest.raises(TokenizerMismatchError, match="allow_unverified=true"):
        check_written_by(meta, kind="text.sentencepiece", sha256=SHA_A, name="f")
    assert (
        check_written_by(
            meta, kind="text.sentencepiece", sha256=SHA_A, name="f", allow_unverified=True
        )
        is False
    )


def test_existing_outputs_are_named_up_to_ten_and_counted_beyond(tmp_path):
    jobs = [Job(tmp_path / f"s{i}", tmp_path / f"out{i:02d}.png") for i in range(13)]
    check_not_existing(jobs)  # nothing there yet
    for job in jobs[:12]:
        job.target.write_bytes(b"original")
    with pytest.raises(OutputExistsError, match="12 output file") as err:
        check_not_existing(jobs)
    message = str(err.value)
    assert "out09.png" in message and "out10.png" not in message and "and 2 more" in message
    assert "overwrite=true" in message and "another out_dir" in message


def test_an_out_dir_that_is_a_file_refuses_the_run_once(tmp_path, capsys):
    src = touch(tmp_path / "in" / "a.txt")
    touch(tmp_path / "in" / "b.txt")
    (tmp_path / "out").write_text("mine")
    with pytest.raises(SystemExit) as exit_:
        process_files([str(src.parent)], (".txt",), lambda rel: rel, lambda s, t: None, "decode",
                      tmp_path / "out")  # fmt: skip
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.count("out_dir is a file") == 1
    assert (tmp_path / "out").read_text() == "mine"
