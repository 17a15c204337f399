"""The command-line entry points end to end, as a user runs them (subprocesses, tiny configs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from conftest import make_images
from PIL import Image

from tokenize_mm import load_tokenizer
from tokenize_mm.tokenizers.audio.io import load_audio, save_wav
from tokenize_mm.tokenizers.token_file import load_encoded

TINY_SOURCE = ["source=builtin", "source.num_examples=48", "source.image_size=32"]


def run(module: str, *overrides: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        f"tokenize_mm.cli.{module}",
        *overrides,
        f"hydra.run.dir={cwd}/hydra",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_fit_encode_decode_images(tmp_path):
    art = tmp_path / "image_tiny"
    out = run("fit_tokenizer", "tokenizer=image_tiny", *TINY_SOURCE, f"out_dir={art}", cwd=tmp_path)
    assert "tokens per 32x32 image" in out.stdout
    tok = load_tokenizer(art)
    src = tmp_path / "photos"
    src.mkdir()
    for i, img in enumerate(make_images(3, size=50)):
        img.save(src / f"p{i}.png")
    (src / "broken.png").write_bytes(b"not a png")
    enc = run("encode", f"tokenizer_dir={art}", f"inputs=[{src}]", f"out_dir={tmp_path}/tok",
              cwd=tmp_path, check=False)  # fmt: skip
    assert enc.returncode == 1 and "broken.png" in enc.stderr and "encoded 3 of 4" in enc.stdout
    encoded, meta = load_encoded(tmp_path / "tok" / "p0.png.tokens.safetensors")
    assert encoded == tok.encode(src / "p0.png") and meta["kind"] == "image.vq"
    run("decode", f"tokenizer_dir={art}", f"inputs=[{tmp_path}/tok]", f"out_dir={tmp_path}/dec",
        cwd=tmp_path)  # fmt: skip
    decoded = Image.open(tmp_path / "dec" / "p0.png")
    assert decoded.size == (32, 32)
    expected = tok.decode(encoded)
    got = torch.from_numpy(__import__("numpy").asarray(decoded).copy()).permute(2, 0, 1) / 255
    assert torch.allclose(got, expected, atol=1 / 255 + 1e-6)


def test_fit_encode_decode_text_exactly(tmp_path):
    art = tmp_path / "text_tiny"
    run("fit_tokenizer", "tokenizer=text_tiny", *TINY_SOURCE, f"out_dir={art}", cwd=tmp_path)
    docs = tmp_path / "docs"
    docs.mkdir()
    texts = {"a.txt": "A red circle.\n  Two  spaces, émoji 🙂, 汉字\x00end", "b.txt": ""}
    for name, text in texts.items():
        (docs / name).write_bytes(text.encode("utf-8"))
    run(
        "encode",
        f"tokenizer_dir={art}",
        f"inputs=[{docs}]",
        f"out_dir={tmp_path}/tok",
        cwd=tmp_path,
    )
    run("decode", f"tokenizer_dir={art}", f"inputs=[{tmp_path}/tok]", f"out_dir={tmp_path}/dec",
        cwd=tmp_path)  # fmt: skip
    for name, text in texts.items():
        assert (tmp_path / "dec" / name).read_bytes().decode("utf-8") == text
    # decoded files carry their sources' names: decoding into the sources' folder is refused
    # before anything is written, unless overwrite=true
    (docs / "a.txt").write_text("my edited original", encoding="utf-8")
    refused = run("decode", f"tokenizer_dir={art}", f"inputs=[{tmp_path}/tok]",
                  f"out_dir={docs}", cwd=tmp_path, check=False)  # fmt: skip
    assert refused.returncode == 1 and "decoded 0 of 2" in refused.stdout
    assert "2 output file(s) exist already" in refused.stderr and "overwrite=true" in refused.stderr
    assert (docs / "a.txt").read_text(encoding="utf-8") == "my edited original"
    run("decode", f"tokenizer_dir={art}", f"inputs=[{tmp_path}/tok]", f"out_dir={docs}",
        "overwrite=true", cwd=tmp_path)  # fmt: skip
    assert (docs / "a.txt").read_bytes().decode("utf-8") == texts["a.txt"]


def test_user_errors_are_one_line_and_folders_of_the_user_are_never_replaced(tmp_path):
    """A missing artifact, a required key left out, a source folder that does not exist: one
    line on stderr, exit 1, no traceback. An output folder that holds the user's files is refused
    before any fit, and left as it was."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(b"mine")
    cases = [
        (("encode", f"tokenizer_dir={tmp_path}/missing", f"inputs=[{photos}]"),
         "tmm-encode: ", "missing: no such folder"),
        (("decode", f"inputs=[{photos}]"), "tmm-decode: ", "tokenizer_dir is required"),
        (("fit_tokenizer", "tokenizer=text_tiny", "source=folder", f"source.root={tmp_path}/no",
          f"out_dir={tmp_path}/art"), "tmm-fit-tokenizer: ", "no"),
        (("fit_tokenizer", "tokenizer=text_tiny", *TINY_SOURCE, f"out_dir={photos}"),
         "tmm-fit-tokenizer: ", "is a folder that is not a tokenizer artifact"),
    ]  # fmt: skip
    for args, prefix, message in cases:
        res = run(*args, cwd=tmp_path, check=False)
        assert res.returncode == 1, res.stdout + res.stderr
        assert "Traceback" not in res.stderr and "HYDRA_FULL_ERROR" not in res.stderr, res.stderr
        line = [ln for ln in res.stderr.splitlines() if ln.startswith(prefix)]
        assert len(line) == 1 and message in line[0], res.stderr
    assert [p.name for p in photos.iterdir()] == ["a.png"] and (
        photos / "a.png"
    ).read_bytes() == b"mine"


def test_fit_names_the_manifest_records_it_left_out(tmp_path):
    lines = [
        {"id": f"t{i}", "text": f"a red circle number {i} on a blue square"} for i in range(40)
    ]
    lines.insert(3, {"id": "gone", "text": "x", "image": str(tmp_path / "missing.png")})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    res = run("fit_tokenizer", "tokenizer=text_tiny", "source=manifest",
              f"source.path={manifest}", f"out_dir={tmp_path}/art", cwd=tmp_path)  # fmt: skip
    assert "skipped records by reason: {'missing_file': 1}" in res.stdout
    assert "line 4 (id 'gone'): missing_file" in res.stdout


def test_decode_refuses_tokens_of_another_tokenizer(tmp_path):
    text_art, image_art = tmp_path / "t", tmp_path / "i"
    run("fit_tokenizer", "tokenizer=text_tiny", *TINY_SOURCE, f"out_dir={text_art}", cwd=tmp_path)
    run("fit_tokenizer", "tokenizer=image_tiny", *TINY_SOURCE, f"out_dir={image_art}", cwd=tmp_path)
    (tmp_path / "x.txt").write_text("hello")
    run("encode", f"tokenizer_dir={text_art}", f"inputs=[{tmp_path}/x.txt]",
        f"out_dir={tmp_path}/tok", cwd=tmp_path)  # fmt: skip
    res = run("decode", f"tokenizer_dir={image_art}", f"inputs=[{tmp_path}/tok]",
              f"out_dir={tmp_path}/dec", cwd=tmp_path, check=False)  # fmt: skip
    assert res.returncode == 1 and "text.sentencepiece" in res.stderr


def test_encode_decode_keep_every_name_apart(tmp_path, tiny_image):
    """x.png from two inputs and photo.png beside photo.jpg: one output each, true counts; a
    collision left refuses the run, naming both sources, before anything is written."""
    art = tiny_image.save(tmp_path / "image")
    places = [("a", "x.png"), ("b", "x.png"), ("c", "photo.png"), ("c", "photo.jpg")]
    for (folder, name), img in zip(places, make_images(4, seed=5), strict=True):
        (tmp_path / folder).mkdir(exist_ok=True)
        img.save(tmp_path / folder / name)
    enc = run("encode", f"tokenizer_dir={art}", f"inputs=[{tmp_path}/a/x.png,{tmp_path}/b/x.png,"
              f"{tmp_path}/c]", f"out_dir={tmp_path}/tok", cwd=tmp_path)  # fmt: skip
    assert "encoded 4 of 4 files" in enc.stdout
    for (folder, name), out in zip(places, ["0/x.png", "1/x.png", "photo.png", "photo.jpg"],
                                   strict=True):  # fmt: skip
        _, meta = load_encoded(tmp_path / "tok" / f"{out}.tokens.safetensors")
        assert meta["source"] == str(tmp_path / folder / name)
    dec = run("decode", f"tokenizer_dir={art}", f"inputs=[{tmp_path}/tok]",
              f"out_dir={tmp_path}/dec", cwd=tmp_path)  # fmt: skip
    assert "decoded 4 of 4 files" in dec.stdout
    decoded = sorted(str(p.relative_to(tmp_path / "dec")) for p in (tmp_path / "dec").rglob("*"))
    assert decoded == ["0", "0/x.png", "1", "1/x.png", "photo.jpg.png", "photo.png"]
    clash = tmp_path / "clash"
    clash.mkdir()
    for name in ("x.tokens.safetensors", "x.safetensors"):  # both decode to x.png
        (clash / name).write_bytes((tmp_path / "tok" / "photo.png.tokens.safetensors").read_bytes())
    res = run("decode", f"tokenizer_dir={art}", f"inputs=[{clash}]", f"out_dir={tmp_path}/dec2",
              cwd=tmp_path, check=False)  # fmt: skip
    assert res.returncode == 1 and "decoded 0 of 2" in res.stdout
    assert f"{clash}/x.safetensors and {clash}/x.tokens.safetensors" in res.stderr
    assert not (tmp_path / "dec2").exists()


def test_decode_refuses_tokens_of_another_artifact_of_the_same_kind(tmp_path, tiny_text,
                                                                    sentences):  # fmt: skip
    """A second text tokenizer would decode garbage: refused by the manifest hash; a token file
    without the hash is refused unless allow_unverified=true."""
    from tokenize_mm import TextTokenizer
    from tokenize_mm.tokenizers.artifact import MANIFEST, sha256_file
    from tokenize_mm.tokenizers.token_file import save_encoded

    first = tiny_text.save(tmp_path / "t1")
    other = TextTokenizer.fit(sentences[:200], vocab_size=320, model_type="bpe")
    second = other.save(tmp_path / "t2")
    (tmp_path / "x.txt").write_text("A red circle.")
    run("encode", f"tokenizer_dir={first}", f"inputs=[{tmp_path}/x.txt]",
        f"out_dir={tmp_path}/tok", cwd=tmp_path)  # fmt: skip
    old = save_encoded(tmp_path / "old" / "y.txt.tokens.safetensors", tiny_text.encode("old"),
                       {"kind": tiny_text.kind})  # fmt: skip
    res = run("decode", f"tokenizer_dir={second}", f"inputs=[{tmp_path}/tok,{old}]",
              f"out_dir={tmp_path}/dec", cwd=tmp_path, check=False)  # fmt: skip
    assert res.returncode == 1 and "decoded 0 of 2" in res.stdout
    assert "x.txt.tokens.safetensors" in res.stderr
    for artifact in (first, second):
        assert sha256_file(artifact / MANIFEST)[:12] in res.stderr
    assert "decode it with the artifact that encoded it" in res.stderr
    assert f"{old}: token file records no tokenizer_sha256" in res.stderr
    ok = run("decode", f"tokenizer_dir={first}", f"inputs=[{tmp_path}/tok,{old}]",
             f"out_dir={tmp_path}/dec", "allow_unverified=true", cwd=tmp_path)  # fmt: skip
    assert "decoded 2 of 2" in ok.stdout and "no tokenizer_sha256; decoded without" in ok.stderr
    assert (tmp_path / "dec" / "y.txt").read_text() == "old"
    assert (tmp_path / "dec" / "x.txt").read_text() == "A red circle."


def test_encode_reads_mp3_and_lists_every_failure(tmp_path, tiny_audio, clips):
    """A folder's .mp3 is encoded; an explicit file of any suffix is attempted; a missing input,
    an empty folder and a file that cannot be written are listed; the rest is done."""
    import soundfile as sf

    art = tiny_audio.save(tmp_path / "audio")
    sounds = tmp_path / "sounds"
    mp3 = "MP3" in sf.available_formats()
    if mp3:
        sounds.mkdir()
        sf.write(sounds / "s0.mp3", clips[0][0][0].numpy(), clips[0][1])
    save_wav(sounds / "s1.wav", *clips[1])
    (tmp_path / "notes.xyz").write_bytes(b"not audio")
    (tmp_path / "empty").mkdir()
    (tmp_path / "tok" / "s1.wav.tokens.safetensors").mkdir(parents=True)  # blocks the write
    res = run("encode", f"tokenizer_dir={art}", f"inputs=[{sounds},{tmp_path}/notes.xyz,"
              f"{tmp_path}/missing.wav,{tmp_path}/empty]", f"out_dir={tmp_path}/tok",
              cwd=tmp_path, check=False)  # fmt: skip
    assert res.returncode == 1
    assert f"encoded {int(mp3)} of {2 + int(mp3)} files" in res.stdout
    failures = res.stderr[res.stderr.index(" failed:") :]
    for name in ("notes.xyz", "missing.wav: input does not exist", "empty: input folder holds",
                 "s1.wav"):  # fmt: skip
        assert name in failures, res.stderr
    if mp3:
        encoded, _ = load_encoded(tmp_path / "tok" / "s0.mp3.tokens.safetensors")
        assert encoded == tiny_audio.encode(sounds / "s0.mp3")


def test_fit_encode_decode_audio(tmp_path, clips):
    folder = tmp_path / "sounds"
    for i, (wav, rate) in enumerate(clips):
        save_wav(folder / f"s{i:02d}.wav", wav, rate)
    art = tmp_path / "audio_tiny"
    out = run("fit_tokenizer", "tokenizer=audio_tiny", "source=folder", f"source.root={folder}",
              "+source.val_fraction=0.2", f"out_dir={art}", cwd=tmp_path)  # fmt: skip
    assert "50 tokens per second" in out.stdout or "100 tokens per second" in out.stdout
    tok = load_tokenizer(art)
    run("encode", f"tokenizer_dir={art}", f"inputs=[{folder}]", f"out_dir={tmp_path}/tok",
        cwd=tmp_path)  # fmt: skip
    encoded, meta = load_encoded(tmp_path / "tok" / "s01.wav.tokens.safetensors")
    assert encoded == tok.encode(folder / "s01.wav") and meta["kind"] == "audio.codec"
    run("decode", f"tokenizer_dir={art}", f"inputs=[{tmp_path}/tok]", f"out_dir={tmp_path}/dec",
        cwd=tmp_path)  # fmt: skip
    wav, rate = load_audio(tmp_path / "dec" / "s01.wav")
    assert rate == tok.info.sample_rate
    assert wav.shape[-1] == int(encoded.extras["num_samples"][0])


def test_encode_decode_with_pretrained_48khz(tmp_path, encodec_48khz, clips):
    """A pretrained EnCodec artifact on the command line: the per-segment scales travel in the
    token files and decode writes stereo 48 kHz wav."""
    art = encodec_48khz.save(tmp_path / "encodec48")
    folder = tmp_path / "sounds"
    for i, (wav, rate) in enumerate(clips[:2]):
        save_wav(folder / f"s{i}.wav", wav, rate)
    run("encode", f"tokenizer_dir={art}", f"inputs=[{folder}]", f"out_dir={tmp_path}/tok",
        cwd=tmp_path)  # fmt: skip
    encoded, meta = load_encoded(tmp_path / "tok" / "s1.wav.tokens.safetensors")
    assert meta["kind"] == "audio.encodec" and "scale" in encoded.extras
    assert encoded == encodec_48khz.encode(folder / "s1.wav")
    run("decode", f"tokenizer_dir={art}", f"inputs=[{tmp_path}/tok]", f"out_dir={tmp_path}/dec",
        cwd=tmp_path)  # fmt: skip
    wav, rate = load_audio(tmp_path / "dec" / "s1.wav")
    assert rate == 48_000 and wav.shape == (2, int(encoded.extras["num_samples"][0]))


def test_pretokenize_builtin_with_accounting(tmp_path, tiny_text, tiny_image, tiny_audio):
    """The store command on the built-in data: parts, merge, and the accounting report whose
    image (and audio) costs agree with the tokenizers' info."""
    dirs = {m: tok.save(tmp_path / m) for m, tok in
            [("text", tiny_text), ("image", tiny_image), ("audio", tiny_audio)]}  # fmt: skip
    out = tmp_path / "store"
    args = [*TINY_SOURCE, f"tokenizers.text={dirs['text']}", f"tokenizers.image={dirs['image']}",
            f"tokenizers.audio={dirs['audio']}", f"out_dir={out}", "chunk_size=8", "workers=2"]  # fmt: skip
    result = run("pretokenize", *args, cwd=tmp_path)
    assert "# Token accounting" in result.stdout
    report = json.loads((out / "accounting.json").read_text())
    assert report["examples"] == 48 and report["errors"]["total"] == 0
    per_image = tiny_image.info.tokens_per_image + 2  # the codes and the two span markers
    assert report["cost"]["image"]["agrees"] and report["cost"]["image"]["measured"] == per_image
    if "audio" in report["cost"]:
        assert report["cost"]["audio"]["agrees"]
    assert sum(m["share"] for m in report["modalities"].values()) <= 1.0
    assert Image.open(out / "accounting.png").size[0] > 0
    row = f"| per image (image) | {per_image:.2f} | {per_image:.2f} | yes |"
    assert row in (out / "accounting.md").read_text()


def train_steps(out_dir: Path) -> list[int]:
    """The training steps of a run's metrics.csv, numbered as the report numbers them."""
    from tokenize_mm.cli.report import read_metrics_csv

    return [int(r["step"]) for r in read_metrics_csv(out_dir / "logs/version_0/metrics.csv").train]


def test_train_debug_run_writes_report_and_resumes(tmp_path):
    """The main job at debug size: tokenizers fitted and cached, store, training, run report;
    a second run reuses the cache; resuming from last.ckpt continues the step count."""
    common = ["+debug=tiny", f"cache_dir={tmp_path}/cache", "callbacks=default",
              "callbacks.checkpoint.every_n_train_steps=3"]  # fmt: skip
    first = run("train", *common, f"out_dir={tmp_path}/a", "trainer.enable_progress_bar=true",
                cwd=tmp_path)  # fmt: skip
    assert "fitting text_tiny" in first.stdout and "# Training run" in first.stdout
    assert "characters per token" in first.stdout and "tokens per 32x32 image" in first.stdout
    # Quiet and true: no ckpt_path warning on a fresh run; status lines in Hydra's job log; a
    # progress line (stdout is not a terminal here, so no bar); no history.json beside the CSV.
    assert "ckpt_path" not in first.stderr, first.stderr[-2000:]
    job_log = (tmp_path / "hydra" / "train.log").read_text()
    assert "fitting text_tiny" in job_log and "step 6/6" in job_log
    assert "checkpoints in" in job_log and "\r" not in first.stdout + first.stderr
    for artifact in (tmp_path / "cache" / "tokenizers").iterdir():  # the cached tokenizers load
        load_tokenizer(artifact)
    report = (tmp_path / "a" / "report.md").read_text()
    assert "| audio |" in report and (tmp_path / "a" / "report.png").stat().st_size > 0
    assert "steps 1–6 (6 trained here)" in report and "metrics.csv" in report
    assert "Where those seconds went: fitting text_tiny" in report and "pretokenizing" in report
    assert "training (validation included)" in report and "saving the model" in report
    assert train_steps(tmp_path / "a") == [1, 2, 3, 4, 5, 6]
    assert not (tmp_path / "a" / "history.json").exists()
    second = run("train", *common, f"out_dir={tmp_path}/b", "trainer.max_steps=9",
                 f"ckpt_path={tmp_path}/a/checkpoints/last.ckpt", cwd=tmp_path)  # fmt: skip
    assert "reusing text_tiny" in second.stdout and "reusing the store" in second.stdout
    stages = (tmp_path / "b" / "report.md").read_text().split("Where those seconds went: ")[1]
    assert stages.startswith("training") and "fitting" not in stages.split("\n")[0]
    assert train_steps(tmp_path / "b") == [7, 8, 9]
    # Resuming a finished run says so and writes no empty report.
    done = run("train", *common, f"out_dir={tmp_path}/c", "trainer.max_steps=9",
               f"ckpt_path={tmp_path}/b/checkpoints/last.ckpt", cwd=tmp_path)  # fmt: skip
    assert "that run is finished" in done.stdout and not (tmp_path / "c" / "report.md").exists()
    # A new run into a folder with checkpoints would be resumed silently by Lightning: refused.
    again = run("train", *common, f"out_dir={tmp_path}/a", cwd=tmp_path, check=False)
    assert again.returncode != 0 and "holds checkpoints of an earlier run" in again.stderr


def test_train_sweep_over_weightings(tmp_path):
    result = run("train", "-m", "+debug=tiny", f"cache_dir={tmp_path}/cache",
                 "balance/weighting=token_mean,uncertainty", "trainer.max_steps=2",
                 f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)  # fmt: skip
    reports = sorted((tmp_path / "sweep").glob("*/report.md"))
    assert len(reports) == 2, result.stdout[-2000:]
    assert "checkpoints in" not in result.stdout  # callbacks=none: none written, none claimed
    assert "LossWeighting" in reports[0].read_text() and "Uncertainty" in reports[1].read_text()


def test_sigterm_leaves_a_checkpoint_to_resume_from(tmp_path):
    """SIGTERM mid-training: the run saves checkpoints/interrupted.ckpt and exits with status 143
    (128 + SIGTERM, not 0), and a run resumed from it continues from the interrupted step."""
    import signal
    import time

    args = ["+debug=tiny", "callbacks=default", f"cache_dir={tmp_path}/cache",
            f"out_dir={tmp_path}/a", "trainer.max_steps=100000",
            "+logger.flush_logs_every_n_steps=1"]  # fmt: skip
    cmd = [sys.executable, "-m", "tokenize_mm.cli.train", *args, f"hydra.run.dir={tmp_path}/h"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    started = tmp_path / "a" / "logs" / "version_0" / "metrics.csv"  # after the first step
    deadline = time.time() + 300
    while not started.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # a few more steps
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    ckpt = tmp_path / "a" / "checkpoints" / "interrupted.ckpt"
    stderr = proc.stderr.read().decode()[-2000:]
    assert ckpt.is_file(), stderr
    assert proc.returncode == 128 + signal.SIGTERM, stderr  # stopped, not finished: non-zero
    step = torch.load(ckpt, weights_only=False, map_location="cpu")["global_step"]
    assert step > 0
    run("train", "+debug=tiny", f"cache_dir={tmp_path}/cache", f"out_dir={tmp_path}/b",
        f"ckpt_path={ckpt}", f"trainer.max_steps={step + 2}", cwd=tmp_path)  # fmt: skip
    assert train_steps(tmp_path / "b") == [step + 1, step + 2]


def test_train_with_contrastive_then_search_by_text_image_and_audio(tmp_path):
    """tmm-train writes the model folder; tmm-search indexes a folder with it, answers a text
    and an audio query (exact and faiss agree), writes a contact sheet, and names bad input."""
    import soundfile as sf

    from tokenize_mm.data import BuiltinSource

    run("train", "+debug=tiny", "contrastive=clip", f"cache_dir={tmp_path}/cache",
        f"out_dir={tmp_path}/run", cwd=tmp_path)  # fmt: skip
    model = tmp_path / "run" / "model"
    assert (model / "model.json").is_file() and (model / "tokenizers" / "audio").is_dir()
    report = (tmp_path / "run" / "report.md").read_text()  # held-out alignment figures
    assert "64 tri-modal examples of the seed's test split" in report
    assert "zero-shot from image by embedding" in report and "| text → image |" in report
    items = tmp_path / "items"
    items.mkdir()
    source = BuiltinSource(num_examples=12, image_size=32, audio_seconds=0.5)
    for i in range(8):
        ex = source.example_at(i)
        (items / f"{i}.txt").write_text(ex.text, encoding="utf-8")
        if ex.image is not None:
            ex.image.save(items / f"{i}.png")
        for wav, sr in ex.audio:
            sf.write(items / f"{i}.wav", wav[0].numpy(), sr)
    search = ["search", f"model_dir={model}", f"index_dir={tmp_path}/index"]
    built = run(*search, f"inputs={items}", cwd=tmp_path)
    assert "indexed 16 items" in built.stdout and "4 image, 4 audio" in built.stdout
    by_text = run(*search, "query=a red circle", "k=3", cwd=tmp_path)
    assert by_text.stdout.count("\n") == 4 and "top 3 for the text query" in by_text.stdout
    audio_query = [*search, f"file={items}/0.wav", "modality=image", "k=4"]
    exact = run(*audio_query, f"sheet={tmp_path}/hits.png", cwd=tmp_path)
    faiss = run(*audio_query, "backend=faiss", cwd=tmp_path)
    assert exact.stdout.splitlines()[1:5] == faiss.stdout.splitlines()[1:5]
    assert Image.open(tmp_path / "hits.png").size == (4 * 160, 160 + 18)
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really")
    bad = run(*search, f"file={tmp_path}/bad.wav", cwd=tmp_path, check=False)
    assert bad.returncode == 1 and "bad.wav" in bad.stderr and "Traceback" not in bad.stderr
