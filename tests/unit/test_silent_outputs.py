"""Inputs that used to give silently wrong outputs, or a generic exception, now give typed errors.

A bare string passed as a batch, a fractional or empty ``num_samples``, zero frames, and fit
arguments that build no codec: each is an ``InvalidInputError`` (a ``TokenizeMMError``) naming the
item, over every tokenizer where it applies.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tokenize_mm import AudioTokenizer, Encoded, InvalidCodesError, InvalidInputError
from tokenize_mm.core.errors import TokenizeMMError


@pytest.fixture(params=["text", "image", "audio"])
def tokenizer(request, tiny_text, tiny_image, tiny_audio):
    return {"text": tiny_text, "image": tiny_image, "audio": tiny_audio}[request.param]


@pytest.mark.parametrize("single", ["abc", b"abc", Path("x.png")])
def test_a_single_item_is_not_a_batch(tokenizer, single):
    with pytest.raises(InvalidInputError, match="a batch must be a list") as err:
        tokenizer.encode_batch(single)
    assert isinstance(err.value, TokenizeMMError)


def test_a_list_of_one_string_still_encodes(tiny_text):
    assert tiny_text.encode_batch(["abc"])[0] == tiny_text.encode("abc")


@pytest.fixture
def audio_codes(tiny_audio):
    return tiny_audio.encode((torch.randn(8000) * 0.1, tiny_audio.info.sample_rate))


@pytest.mark.parametrize(
    "num_samples",
    [torch.tensor([480.5]), torch.tensor([]), torch.tensor([0]), torch.tensor([1, 2]),
     torch.tensor([True])],
)  # fmt: skip
def test_num_samples_is_one_whole_number(tiny_audio, audio_codes, num_samples):
    bad = Encoded(audio_codes.codes, {**audio_codes.extras, "num_samples": num_samples})
    with pytest.raises(InvalidCodesError, match="num_samples"):
        tiny_audio.decode(bad)


def test_zero_frames_is_a_typed_error(tiny_audio):
    k = tiny_audio.info.num_codebooks
    with pytest.raises(InvalidCodesError, match="0 frames"):
        tiny_audio.decode(Encoded(torch.zeros(k, 0, dtype=torch.long)))


def test_decode_still_trims_to_num_samples(tiny_audio, audio_codes):
    assert tiny_audio.decode(audio_codes).shape[-1] == 8000


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"sample_rate": 0}, "sample_rate=0"), ({"sample_rate": 24000.5}, "sample_rate"),
     ({"channels": 3}, "channels=3"), ({"ratios": [8, 0]}, "ratios"),
     ({"codebook_size": -1}, "codebook_size=-1")],
)  # fmt: skip
def test_fit_arguments_that_build_no_codec_are_named(kwargs, name):
    clips = [(torch.zeros(4000), 24000)] * 2
    with pytest.raises(InvalidInputError, match=name):
        AudioTokenizer.fit(clips, max_steps=1, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"downsample": 3}, "downsample=3"), ({"image_size": 30, "downsample": 8}, "image_size=30")],
)
def test_image_fit_arguments_that_build_no_model_are_named(kwargs, name, images):
    from tokenize_mm import ImageTokenizer

    with pytest.raises(InvalidInputError, match=name):
        ImageTokenizer.fit(images[:2], max_steps=1, **kwargs)
