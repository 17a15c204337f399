"""Every ``tmm-*`` command's ``--help``: what it does, how it is called, its required keys and only
its own config groups; anything but ``--help`` goes on to Hydra."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from tokenize_mm.cli.help import command_help, run_or_help

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = {  # console script → the config of its cli module (tokenize_mm.cli.<name>)
    ep.name: ep.value.split(":")[0].rsplit(".", 1)[-1]
    for ep in entry_points(group="console_scripts")
    if ep.value.startswith("tokenize_mm.cli.")
}
REQUIRED = {  # keys each command cannot run without (??? in its config)
    "tmm-fit-tokenizer": [],
    "tmm-encode": ["tokenizer_dir", "inputs"],
    "tmm-decode": ["tokenizer_dir", "inputs"],
    "tmm-pretokenize": ["tokenizers.text", "out_dir"],
    "tmm-train": [],
    "tmm-search": ["model_dir", "index_dir"],
}


def test_every_console_script_is_covered():
    assert set(COMMANDS) == set(REQUIRED)


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_help_says_what_the_command_does_and_how_to_call_it(command):
    text = command_help(COMMANDS[command])
    first, *rest = text.splitlines()
    assert first.startswith(f"{command}: ") and len(first) > len(command) + 10  # what it does
    examples = [line for line in rest if line.strip().startswith(f"{command} ")]
    assert len(examples) >= 2, text
    required = next(line for line in rest if line.startswith("Required keys: "))
    for key in REQUIRED[command]:
        assert key in required, (key, required)
    if not REQUIRED[command]:
        assert "none" in required
    assert "powered by Hydra" not in text and "--hydra-help" in text


def test_help_lists_only_the_groups_the_command_uses():
    fit = command_help("fit_tokenizer")
    assert "tokenizer: " in fit and "text_small*" in fit and "source: builtin*" in fit
    assert "balance/" not in fit and "trainer" not in fit and "model:" not in fit
    train = command_help("train")
    weighting = next(line for line in train.splitlines() if "balance/weighting: " in line)
    assert weighting.count("*") == 1 and "token_mean" in weighting  # every option, one default
    image = next(line for line in train.splitlines() if "tokenizer@tokenizers.image" in line)
    assert "image_small*" in image and "audio" not in image and "text" not in image
    assert "hydra/" not in command_help("search")


def test_only_help_flags_print_help(capsys):
    ran = []
    run_or_help(lambda: ran.append(True), "train", argv=["trainer.max_steps=3"])
    assert ran == [True] and capsys.readouterr().out == ""
    run_or_help(lambda: ran.append(True), "train", argv=["data=tiny", "--help"])
    assert ran == [True] and capsys.readouterr().out.startswith("tmm-train: ")


def test_the_command_line_prints_it():
    result = subprocess.run([sys.executable, "-m", "tokenize_mm.cli.fit_tokenizer", "--help"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("tmm-fit-tokenizer: Fit one tokenizer")
