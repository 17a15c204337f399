"""Shared fixtures: tiny tokenizers trained in memory on data generated in code (no downloads)."""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image, ImageDraw

from tokenize_mm import AudioTokenizer, ImageTokenizer, TextTokenizer
from tokenize_mm.data import Example
from tokenize_mm.tokenizers.audio import CodecConfig
from tokenize_mm.tokenizers.image import VQImageConfig

TINY_IMAGE = dict(
    config=VQImageConfig(image_size=32, downsample=8, base_channels=8, latent_dim=16,
                         codebook_size=32, codebook_dim=8),
    batch_size=8, learning_rate=2e-3,
)  # fmt: skip

TINY_AUDIO = dict(
    config=CodecConfig(n_filters=4, dimension=16, lstm=0, codebook_size=32, num_codebooks=2),
    batch_size=4, segment_seconds=0.2, learning_rate=1e-3,
)  # fmt: skip

WORDS = [
    "red",
    "green",
    "blue",
    "yellow",
    "circle",
    "square",
    "triangle",
    "star",
    "small",
    "large",
    "top",
    "left",
    "right",
    "bottom",
]


INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(items):
    """Every test under tests/integration is an integration test (the marker's meaning is in
    pyproject.toml; `make test-unit` leaves out both `integration` and `slow`)."""
    for item in items:
        if INTEGRATION_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


def make_sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))).capitalize() + "."
        for _ in range(n)
    ]


def make_images(n: int, size: int = 32, seed: int = 0) -> list[Image.Image]:
    """Coloured rectangles and ellipses on coloured backgrounds."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        bg = tuple(rng.randrange(256) for _ in range(3))
        img = Image.new("RGB", (size, size), bg)
        draw = ImageDraw.Draw(img)
        for _ in range(2):
            x0, y0 = rng.randrange(size // 2), rng.randrange(size // 2)
            x1, y1 = x0 + rng.randrange(4, size // 2), y0 + rng.randrange(4, size // 2)
            fill = tuple(rng.randrange(256) for _ in range(3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
        out.append(img)
    return out


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return make_sentences(400)


@pytest.fixture(scope="session")
def tiny_text(sentences) -> TextTokenizer:
    return TextTokenizer.fit(sentences, vocab_size=300, model_type="bpe")


@pytest.fixture(scope="session")
def images() -> list[Image.Image]:
    return make_images(40)


@pytest.fixture(scope="session")
def tiny_image(images) -> ImageTokenizer:
    torch.set_num_threads(2)
    return ImageTokenizer.fit(images, max_steps=12, seed=0, **TINY_IMAGE)


def make_clips(n: int, seed: int = 0) -> list[tuple[torch.Tensor, int]]:
    """(waveform (1, S), sample rate) pairs: tones with a little noise, 16 kHz and 24 kHz."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        sr = (16_000, 24_000)[i % 2]
        t = torch.arange(int(sr * (0.3 + 0.05 * i))) / sr
        wav = 0.3 * torch.sin(2 * math.pi * (180 + 40 * i) * t)
        out.append(((wav + 0.01 * torch.randn(t.shape, generator=g))[None], sr))
    return out


@pytest.fixture(scope="session")
def clips() -> list[tuple[torch.Tensor, int]]:
    return make_clips(12)


@pytest.fixture(scope="session")
def tiny_audio(clips) -> AudioTokenizer:
    return AudioTokenizer.fit(clips, max_steps=8, seed=0, **TINY_AUDIO)


@pytest.fixture(scope="session")
def tiny_image_vq(images) -> ImageTokenizer:
    """The tiny image tokenizer with the learnt VQ codebook (the default is FSQ)."""
    config = dataclasses.replace(TINY_IMAGE["config"], quantizer="vq")
    return ImageTokenizer.fit(images, max_steps=12, seed=0, **{**TINY_IMAGE, "config": config})


@pytest.fixture(scope="session")
def tiny_audio_vq(clips) -> AudioTokenizer:
    """The tiny codec with learnt residual VQ codebooks (the default is FSQ)."""
    config = dataclasses.replace(TINY_AUDIO["config"], quantizer="vq")
    return AudioTokenizer.fit(clips, max_steps=8, seed=0, **{**TINY_AUDIO, "config": config})


def write_encodec_checkpoint(folder: Path, name: str, seed: int = 0) -> str:
    """A checkpoint shaped like the official one for ``name`` (``"encodec_24khz"`` or
    ``"encodec_48khz"``): a randomly initialised package model with random codebooks (the
    package initialises them to zeros until k-means runs), saved with ``torch.save`` under
    ``<name>-<sha256 prefix>.th`` as the package names its files. Returns the file name."""
    import hashlib
    import os
    import warnings

    from encodec import EncodecModel

    torch.manual_seed(seed)
    with warnings.catch_warnings():  # the package's deprecated weight_norm
        warnings.simplefilter("ignore", FutureWarning)
        build = getattr(EncodecModel, name.replace("encodec_", "encodec_model_"))
        model = build(pretrained=False)
    state = model.state_dict()
    for key in state:
        if key.endswith("_codebook.embed"):
            state[key] = torch.randn_like(state[key])
        elif key.endswith("_codebook.inited"):
            state[key] = torch.ones_like(state[key])
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    torch.save(state, tmp)
    file_name = f"{name}-{hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]}.th"
    os.replace(tmp, folder / file_name)
    return file_name


@pytest.fixture(scope="session")
def encodec_repository(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(folder, {model name: checkpoint file name}) with both checkpoint-shaped files."""
    folder = tmp_path_factory.mktemp("encodec_repository")
    names = {n: write_encodec_checkpoint(folder, n) for n in ("encodec_24khz", "encodec_48khz")}
    return folder, names


@pytest.fixture(scope="session")
def encodec_24khz(encodec_repository) -> AudioTokenizer:
    folder, names = encodec_repository
    return AudioTokenizer.from_pretrained(
        "encodec_24khz", num_codebooks=2, repository=folder, checkpoint=names["encodec_24khz"]
    )


@pytest.fixture(scope="session")
def encodec_48khz(encodec_repository) -> AudioTokenizer:
    folder, names = encodec_repository
    return AudioTokenizer.from_pretrained(
        "encodec_48khz", num_codebooks=2, repository=folder, checkpoint=names["encodec_48khz"]
    )


def make_examples(n: int = 24, bad: tuple[int, ...] = ()) -> list[Example]:
    """Mixed examples for store and training tests (text, text+image, text+audio, all three); ``bad`` ones carry NaN audio."""
    texts, images, clips = make_sentences(n, seed=3), make_images(n, seed=3), make_clips(n, seed=3)
    out = []
    for i in range(n):
        kind = i % 4
        audio = (clips[i],) if kind in (2, 3) else ()
        if i in bad:
            audio = ((torch.full((1, 800), float("nan")), 16_000),)
        out.append(Example(
            id=f"ex{i:03d}", text=texts[i], image=images[i] if kind in (1, 3) else None,
            audio=audio, split=("train", "val", "test")[i % 3], source=f"kind{kind}",
            concept=f"c{i % 5}",
        ))  # fmt: skip
    return out


@pytest.fixture(scope="session")
def store(tmp_path_factory, tiny_text, tiny_image, tiny_audio):
    """A merged store of 48 examples tokenized by the tiny tokenizers, and its layout."""
    from tokenize_mm.data import merge_store, pretokenize
    from tokenize_mm.sequence import VocabLayout

    root = tmp_path_factory.mktemp("train_store")
    dirs = {m: str(t.save(root / m)) for m, t in
            [("text", tiny_text), ("image", tiny_image), ("audio", tiny_audio)]}  # fmt: skip
    pretokenize(make_examples(48), dirs, root / "store", chunk_size=16)
    merge_store(root / "store")
    return root / "store", VocabLayout.from_artifacts(dirs)


class StepRecorder(L.Callback):
    """Every training step's ``callback_metrics`` and the module's ``step_metrics`` (the balance
    metrics ``BalancedLM`` writes to the loggers itself), as floats."""

    def __init__(self):
        self.steps: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        metrics = {**trainer.callback_metrics, **getattr(pl_module, "step_metrics", {})}
        self.steps.append({k: float(v) for k, v in metrics.items()})


def assert_same_nearest(codes: torch.Tensor, ref: torch.Tensor, x, codebook) -> None:
    """Nearest-code assignments agree with ``ref`` except where both entries are (float-)equally
    near x: float32 rounding decides such near-ties."""
    differ = codes != ref
    assert differ.float().mean() < 1e-3
    if differ.any():
        xd = x[differ].double()
        d_codes = (xd - codebook.double()[codes[differ]]).pow(2).sum(1)
        d_ref = (xd - codebook.double()[ref[differ]]).pow(2).sum(1)
        torch.testing.assert_close(d_codes, d_ref, rtol=1e-4, atol=1e-4)


REPO_ROOT = Path(__file__).resolve().parent.parent
# What a test run may leave at the repository's root: caches, and what `make` creates.
_ROOT_ALLOWED = {".pytest_cache", ".ruff_cache", "__pycache__", ".venv", ".cache"}


@pytest.fixture(scope="session", autouse=True)
def _leaves_the_repository_root_clean():
    """Fails the run when a test writes into the repository's root (a Trainer without
    ``default_root_dir`` saves its checkpoints under the working directory; such files were once
    committed by mistake). Tests write under ``tmp_path``."""
    before = {p.name for p in REPO_ROOT.iterdir()}
    yield
    new = {p.name for p in REPO_ROOT.iterdir()} - before - _ROOT_ALLOWED
    assert not new, f"the test run wrote {sorted(new)} into {REPO_ROOT}; write under tmp_path"
