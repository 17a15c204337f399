"""Pretrained EnCodec 24/48 kHz: the offline checkpoint path, explicit codebooks, agreement with
the ``encodec`` package, and the 48 kHz per-segment scale. Weights are checkpoint-shaped files
written from randomly initialised package models (``conftest.write_encodec_checkpoint``)."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import write_encodec_checkpoint
from encodec import EncodecModel

from tokenize_mm import AudioTokenizer, Encoded, InvalidCodesError, PretrainedWeightsError
from tokenize_mm.tokenizers.audio.codec import CodecTokenizer
from tokenize_mm.tokenizers.audio.pretrained import SPECS, EncodecTokenizer, supported_codebooks

# The package's own models (the reference here) use torch's deprecated weight_norm.
pytestmark = pytest.mark.filterwarnings("ignore:.*weight_norm. is deprecated:FutureWarning")


def package_model(folder, files, name: str) -> EncodecModel:
    """The package's own model with the same checkpoint file."""
    build = getattr(EncodecModel, name.replace("encodec_", "encodec_model_"))
    model = build(pretrained=False)
    model.load_state_dict(torch.load(folder / files[name], weights_only=True))
    return model.eval()


@pytest.mark.parametrize("name", ["encodec_24khz", "encodec_48khz"])
def test_codes_and_scales_equal_the_package(encodec_repository, name):
    """On a clip of whole frames our codes are the package's ``model.encode`` at the same
    bandwidth (48 kHz: with the package's segment overlap set to 0, as we segment)."""
    folder, files = encodec_repository
    tok = AudioTokenizer.from_pretrained(
        name, num_codebooks=4, repository=folder, checkpoint=files[name]
    )
    ref = package_model(folder, files, name)
    ref.set_target_bandwidth(tok.hparams["bandwidth_kbps"])
    ref.overlap = 0.0
    spec = SPECS[name]
    g = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(spec.channels, spec.sample_rate * 2 + 320 * 7, generator=g)
    enc = tok.encode((wav, spec.sample_rate))
    with torch.no_grad():
        frames = ref.encode(wav[None])
    assert torch.equal(enc.codes, torch.cat([codes[0] for codes, _ in frames], dim=-1))
    if spec.segment_seconds:
        scales = torch.cat([scale.reshape(-1) for _, scale in frames])
        assert torch.equal(enc.extras["scale"], scales)
        assert enc.extras["scale"].shape == (3,)  # 2 s and 7 frames: three 1 s segments
    else:
        assert "scale" not in enc.extras


def test_48khz_decode_uses_the_scale(encodec_48khz):
    g = torch.Generator().manual_seed(1)
    enc = encodec_48khz.encode((0.2 * torch.randn(2, 60_000, generator=g), 48_000))
    louder = Encoded(codes=enc.codes, extras={**enc.extras, "scale": enc.extras["scale"] * 2})
    torch.testing.assert_close(encodec_48khz.decode(louder), 2 * encodec_48khz.decode(enc))
    with pytest.raises(InvalidCodesError, match="scale"):
        encodec_48khz.decode(
            Encoded(codes=enc.codes, extras={"num_samples": torch.tensor([60_000])})
        )
    with pytest.raises(InvalidCodesError, match="scale"):
        bad = enc.extras["scale"].clone()
        bad[0] = float("nan")
        encodec_48khz.decode(Encoded(codes=enc.codes, extras={**enc.extras, "scale": bad}))


def test_silence_is_valid_at_48khz(encodec_48khz):
    enc = encodec_48khz.encode((torch.zeros(2, 48_000), 48_000))
    assert enc.codes.shape == (2, 150) and bool(torch.isfinite(enc.extras["scale"]).all())
    assert bool(torch.isfinite(encodec_48khz.decode(enc)).all())


@pytest.mark.parametrize("name", ["encodec_24khz", "encodec_48khz"])
def test_codebooks_must_be_explicit(encodec_repository, name):
    folder, files = encodec_repository
    load = lambda **kw: AudioTokenizer.from_pretrained(  # noqa: E731
        name, repository=folder, checkpoint=files[name], **kw
    )
    with pytest.raises(ValueError, match="explicit num_codebooks"):
        load()
    with pytest.raises(ValueError, match="trained with"):
        load(num_codebooks=3)
    with pytest.raises(ValueError, match="bandwidths"):
        load(bandwidth=5.0)
    with pytest.raises(ValueError, match="means"):
        load(bandwidth=6.0, num_codebooks=2)
    k = supported_codebooks(name)[1]
    tok = load(bandwidth=SPECS[name].bandwidths[1])
    assert tok.info.num_codebooks == k
    assert tok.info.tokens_per_second == tok.info.frame_rate * k
    assert tok.info.frame_rate == {"encodec_24khz": 75.0, "encodec_48khz": 150.0}[name]


def test_checksum_mismatch_is_refused(encodec_repository, tmp_path):
    """A file under the official name whose sha256 does not start with the name's prefix."""
    folder, files = encodec_repository
    shutil.copy(folder / files["encodec_24khz"], tmp_path / SPECS["encodec_24khz"].checkpoint)
    with pytest.raises(PretrainedWeightsError, match="checksum mismatch"):
        AudioTokenizer.from_pretrained("encodec_24khz", num_codebooks=2, repository=tmp_path)


def test_missing_or_wrong_checkpoint_is_refused(encodec_repository, tmp_path):
    folder, files = encodec_repository
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        AudioTokenizer.from_pretrained("encodec_24khz", num_codebooks=2, repository=tmp_path)
    with pytest.raises(PretrainedWeightsError, match="does not hold"):  # 48 kHz weights
        AudioTokenizer.from_pretrained(
            "encodec_24khz", num_codebooks=2, repository=folder, checkpoint=files["encodec_48khz"]
        )
    (tmp_path / "weights.th").write_bytes(b"x")
    with pytest.raises(PretrainedWeightsError, match="sha256 prefix"):
        AudioTokenizer.from_pretrained(
            "encodec_24khz", num_codebooks=2, repository=tmp_path, checkpoint="weights.th"
        )
    with pytest.raises(ValueError, match="unknown pretrained"):
        AudioTokenizer.from_pretrained("encodec_32khz", num_codebooks=2, repository=folder)


def test_download_path_checks_the_hash(monkeypatch, encodec_repository):
    """Without a repository the official URL is fetched through torch.hub with its hash checked
    and weights-only loading (stubbed here: the tests run offline)."""
    folder, files = encodec_repository
    state = torch.load(folder / files["encodec_24khz"], weights_only=True)
    calls = []

    def fake_download(url, **kwargs):
        calls.append((url, kwargs))
        return state

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    tok = AudioTokenizer.from_pretrained("encodec_24khz", num_codebooks=8)
    assert tok.info.num_codebooks == 8
    url, kwargs = calls[0]
    assert url.endswith("/encodec_24khz-d7cc33bc.th")
    assert kwargs["check_hash"] is True and kwargs["weights_only"] is True

    def offline(url, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(PretrainedWeightsError, match="repository="):
        AudioTokenizer.from_pretrained("encodec_24khz", num_codebooks=8)


def test_only_k_codebooks_are_kept_and_the_artifact_unpickles_nothing(
    encodec_24khz, tmp_path, monkeypatch
):
    assert len(encodec_24khz.model.quantizer.vq.layers) == 2
    encodec_24khz.save(tmp_path / "art")

    def refuse(*args, **kwargs):
        raise AssertionError("loading an artifact must not unpickle")

    monkeypatch.setattr(torch, "load", refuse)
    loaded = EncodecTokenizer.load(tmp_path / "art")
    clip = (torch.sin(torch.arange(8000) / 7.0)[None], 16_000)
    assert loaded.encode(clip) == encodec_24khz.encode(clip)


def test_pretrained_is_a_sibling_of_the_fitted_codec_without_fit():
    assert issubclass(EncodecTokenizer, CodecTokenizer)
    assert issubclass(AudioTokenizer, CodecTokenizer)
    assert not issubclass(EncodecTokenizer, AudioTokenizer)
    assert not hasattr(EncodecTokenizer, "fit")


def test_checkpoint_writer_matches_the_official_key_set(tmp_path):
    """The test checkpoints have the official checkpoint's shape: every key our model reads."""
    name = write_encodec_checkpoint(tmp_path, "encodec_24khz", seed=3)
    state = torch.load(tmp_path / name, weights_only=True)
    assert sum(k.endswith("_codebook.embed") for k in state) == 32
    assert state["quantizer.vq.layers.0._codebook.embed"].shape == (1024, 128)
