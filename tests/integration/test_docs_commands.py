"""Every command line in README.md and docs/ still fits the code it names.

The commands are read from the fenced ``bash``/``sh``/``console`` blocks and the indented code
blocks of every Markdown file (continuation lines joined, comments dropped), and each is checked
for what can go stale without running it for minutes:

- ``tmm-*`` and ``python -m tokenize_mm.cli.*``: the overrides compose with the command's Hydra
  config (config groups and keys exist, values parse; a sweep ``a=x,y`` composes each value), and
  ``tmm-train``'s numbers pass ``check_train_config``;
- ``python benchmarks/*.py`` and ``python tools/*.py``: the script exists and every ``--flag``
  the line passes is one its ``--help`` lists;
- ``make <target>``: the Makefile has the target;
- the folders a documented ``tmm-pretokenize`` reads tokenizers from are ones the README's
  ``tmm-fit-tokenizer`` lines write.

Other lines (``python -c`` with a downloaded checkpoint, the team's dev-set builder) are left out.

The README's Python quickstart runs for real (``test_readme.py``); the commands themselves run in
the tests of each command (tests/integration/test_cli.py) and benchmark (test_benchmarks.py).
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import tokenize_mm.cli.common  # noqa: F401  (registers arch/ and the cache-dir resolver)

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
CONFIGS = {"train": "train", "fit-tokenizer": "fit_tokenizer", "pretokenize": "pretokenize",
           "encode": "encode", "decode": "decode", "search": "search"}  # fmt: skip
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
STARTS = ("tmm-", ".venv/bin/", "python", "make ", "bash ", "$ ")  # what opens a code block
COMMAND_STARTS = (*STARTS[:5], "OUT=", "CI=", "TMM_CACHE_DIR=")  # what a command line starts with


def command_lines(text: str) -> list[str]:
    """The shell commands of a Markdown text: fenced shell blocks and indented code blocks."""
    blocks = [body for lang, body in FENCE.findall(text) if lang in ("bash", "sh", "console", "")]
    unfenced = FENCE.sub("", text)
    indented, current = [], []
    for line in unfenced.splitlines():
        if line.startswith("    ") and (current or line.strip().startswith(STARTS)):
            current.append(line[4:])
        elif current:
            indented.append("\n".join(current))
            current = []
    if current:
        indented.append("\n".join(current))
    out = []
    for block in blocks + indented:
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line.strip()).removeprefix("$ ").strip()
            if line.startswith(COMMAND_STARTS):
                out.append(line)
    return out


def all_commands() -> list[tuple[str, str]]:
    return [(str(p.relative_to(ROOT)), c) for p in DOCS for c in command_lines(p.read_text())]


def _words(line: str) -> list[str]:
    words = shlex.split(line)
    while words and re.match(r"^[A-Z_]+=", words[0]):  # VAR=value prefixes
        words.pop(0)
    return [w.removeprefix(".venv/bin/") for w in words]


def _kind(words: list[str]) -> str:
    if not words:
        return "empty"
    if words[0].startswith("tmm-"):
        return "cli"
    if words[0] in ("python", "python3") and words[1:3] and words[1] == "-m":
        return "cli" if words[2].startswith("tokenize_mm.cli.") else "module"
    if words[0] in ("python", "python3") and len(words) > 1 and words[1].endswith(".py"):
        return "script"
    if words[0] == "make":
        return "make"
    return "other"


def _cli_config(words: list[str]) -> tuple[str, list[str]]:
    if words[0].startswith("tmm-"):
        name, args = words[0].removeprefix("tmm-"), words[1:]
    else:
        name, args = words[2].removeprefix("tokenize_mm.cli.").replace("_", "-"), words[3:]
    return CONFIGS[name], args


def _overrides(args: list[str]) -> list[list[str]]:
    """Hydra overrides of a command line, one list per point of a sweep (``a=x,y``) or of a
    placeholder's choices (``tokenizer=<text|image>``); another placeholder (``<out_dir>``)
    stands for any path."""
    plain = [a for a in args if "=" in a and not a.startswith(("-", "hydra."))]
    sweeps: list[list[str]] = [[]]
    for a in plain:
        key, _, value = a.partition("=")
        choices = re.fullmatch(r"<([\w|]+\|[\w|]+)>", value)
        if choices:
            values = choices.group(1).split("|")
        elif "," in value and not value.startswith(("[", "{", "'", '"')):
            values = value.split(",")
        else:
            values = [re.sub(r"<[^>]*>", "x", value)]
        sweeps = [[*s, f"{key}={v}"] for s in sweeps for v in values]
    return sweeps


@functools.cache
def _help(script: str) -> str:
    result = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, f"{script} --help failed:\n{result.stderr[-2000:]}"
    return result.stdout


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-zA-Z][\w-]*):", text, flags=re.M))


COMMANDS = all_commands()


def test_the_docs_hold_commands_of_every_kind():
    kinds = {_kind(_words(c)) for _, c in COMMANDS}
    assert {"cli", "script", "make"} <= kinds, kinds
    assert len(COMMANDS) > 50


@pytest.mark.parametrize(("doc", "line"), COMMANDS, ids=[f"{d}:{i}" for i, (d, _) in
                                                         enumerate(COMMANDS)])  # fmt: skip
def test_command_fits_the_code(doc, line):
    words = _words(line)
    kind = _kind(words)
    if kind == "cli":
        config, args = _cli_config(words)
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            for overrides in _overrides(args):
                cfg = compose(config, overrides=overrides)
                if config == "train":
                    from tokenize_mm.cli.validate import check_train_config

                    check_train_config(cfg)
                OmegaConf.to_container(cfg, resolve=False)
    elif kind == "script":
        script = words[1]
        assert (ROOT / script).is_file(), f"{doc}: {script} does not exist"
        text = _help(script)
        for flag in (w.split("=")[0] for w in words[2:] if w.startswith("--")):
            assert flag in text, f"{doc}: {script} has no {flag} ({line})"
    elif kind == "make":
        targets = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
        missing = set(targets) - _make_targets()
        assert not missing, f"{doc}: the Makefile has no target {missing} ({line})"


def test_artifacts_the_docs_read_are_ones_the_readme_writes():
    """A ``tokenizers.<modality>=<dir>`` of any documented ``tmm-pretokenize`` names a folder that
    one of the README's ``tmm-fit-tokenizer ... out_dir=<dir>`` lines writes (or a placeholder).
    (``tmm-train``'s ``tokenizers.<modality>`` is a config group, not a folder.)"""
    readme = [c for d, c in COMMANDS if d == "README.md"]
    written = {
        w.partition("=")[2].rstrip("/")
        for c in readme if "tmm-fit-tokenizer" in c
        for w in _words(c) if w.startswith("out_dir=")
    }  # fmt: skip
    assert written, "the README fits no tokenizer into an out_dir"
    checked = 0
    for doc, line in COMMANDS:
        if "tmm-pretokenize" not in line:
            continue
        for w in _words(line):
            key, _, value = w.partition("=")
            if re.fullmatch(r"tokenizers\.\w+", key) and "<" not in value and "$" not in value:
                assert value.rstrip("/") in written, f"{doc}: {w} is not written by the README"
                checked += 1
    assert checked >= 3  # the README's and data.md's examples
