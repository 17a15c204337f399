"""A tokenizer config sized for a GPU is refused on a machine without one, naming the CPU-sized
configs of its modality; the CPU-sized configs and an explicit fit.accelerator=cpu go ahead."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from tokenize_mm.cli import validate
from tokenize_mm.cli.common import config_dir
from tokenize_mm.cli.validate import check_fit_device
from tokenize_mm.core.errors import ConfigError


def tokenizer_config(name: str, *overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("fit_tokenizer", overrides=[f"tokenizer={name}", *overrides]).tokenizer


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(validate, "accelerator_present", lambda: False)


@pytest.mark.parametrize(("name", "cpu_sized"), [("image", "image_cpu"), ("audio", "audio_small")])
def test_gpu_sized_config_is_refused_on_a_cpu_naming_the_cpu_one(no_gpu, name, cpu_sized):
    with pytest.raises(ConfigError) as err:
        check_fit_device(tokenizer_config(name), config_dir())
    message = str(err.value)
    assert f"tokenizer {name} is sized for a GPU" in message
    assert cpu_sized in message and "fit.accelerator=cpu" in message


@pytest.mark.parametrize(
    "name", ["text", "text_small", "image_small", "image_cpu", "image_tiny", "audio_small"]
)
def test_cpu_sized_configs_go_ahead(no_gpu, name):
    check_fit_device(tokenizer_config(name), config_dir())


def test_asking_for_the_cpu_or_having_a_gpu_lets_a_gpu_config_run(no_gpu, monkeypatch):
    check_fit_device(tokenizer_config("image", "tokenizer.fit.accelerator=cpu"), config_dir())
    monkeypatch.setattr(validate, "accelerator_present", lambda: True)
    check_fit_device(tokenizer_config("image"), config_dir())
