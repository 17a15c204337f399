"""Check that the installed environment works: the locked versions, and every compiled extension.

``make install`` runs this last; it also builds the native kernels
(``tokenize_mm/tokenizers/kernels.py``) and says which variant runs, or why it cannot. A torch / torchaudio pair that pip mixed (torchaudio 2.11.1 with
torch 2.11.0 once failed with ``undefined symbol`` in ``libtorchaudio.so``) is named here, with the
versions found and the versions the lock asks for, instead of failing later at the first import
inside a test or a run.

Usage: ``python tools/check_install.py [requirements.lock]``; exit status 1 names what is broken.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import re
import sys
from pathlib import Path

# Distribution → what importing and using its compiled part looks like.
CHECKS = {
    "torch": "import torch; torch.ones(2) @ torch.ones(2)",
    "torchaudio": (
        "import torchaudio, torchaudio._extension as e, torch; "
        "assert e._IS_TORCHAUDIO_EXT_AVAILABLE, 'libtorchaudio is not loaded'; "
        "torchaudio.functional.lfilter(torch.zeros(1, 8), torch.tensor([1.0, 0.0]), "
        "torch.tensor([1.0, 0.0]))"
    ),
    "sentencepiece": "import sentencepiece; sentencepiece.SentencePieceProcessor()",
    "soundfile": "import soundfile; assert soundfile.__libsndfile_version__",
    "safetensors": "import safetensors.torch, torch; safetensors.torch.save({'x': torch.ones(1)})",
    "encodec": "import encodec.modules",
    "tokenize_mm": "import tokenize_mm.tokenizers, tokenize_mm.data, tokenize_mm.models",
}
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;]+)")


def locked_versions(lock: Path) -> dict[str, str]:
    """``name == version`` pins of a pip-compile lock file (names normalised)."""
    pins = {}
    for line in lock.read_text().splitlines():
        if m := _PIN.match(line.strip()):
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def _installed(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def main(argv: list[str]) -> int:
    lock = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "requirements.lock"
    pins = locked_versions(lock)
    problems = []
    for name, want in sorted(pins.items()):
        have = _installed(name)
        # A local version label (+cu130, +cpu) names the build, not another release.
        if have is None or have.split("+")[0] != want.split("+")[0]:
            problems.append(f"{name}: installed {have or 'nothing'}, {lock.name} pins {want}")
    for name, code in CHECKS.items():
        try:
            exec(compile(code, f"<check {name}>", "exec"), {"importlib": importlib})
        except Exception as err:  # report every broken extension, not just the first
            problems.append(f"{name}: {type(err).__name__}: {err}")
    pair = f"torch {_installed('torch')} with torchaudio {_installed('torchaudio')}"
    if problems:
        print(f"install check FAILED ({pair}):", *problems, sep="\n  ", file=sys.stderr)
        print(
            "Reinstall from the lock: rm -rf .venv && make install (torch and torchaudio must "
            "be the exact pair in requirements.lock).",
            file=sys.stderr,
        )
        return 1
    print(f"install check passed: {len(pins)} locked versions, {pair}, extensions load")
    print(_native_kernels())
    return 0


def _native_kernels() -> str:
    """Builds (or finds) the native kernels (the fused nearest-code assignment, the codec's ELU):
    a line saying where and which variant, or why their torch paths will run instead (not a
    failure: those paths are complete)."""
    from tokenize_mm.tokenizers import kernels

    try:
        path = kernels.build()
        return f"native kernels: {kernels.best_variant()} variant, {path}"
    except (kernels.KernelError, OSError) as err:
        return f"native kernels unavailable, nearest_code and the ELU use torch: {err}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
