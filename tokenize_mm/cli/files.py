"""Files in, files out: the loop of ``tmm-encode`` and ``tmm-decode``.

Inputs are files or folders. A folder contributes every file under it whose suffix the command
reads (its name relative to the folder is kept, subfolders included); a file named explicitly is
always attempted, whatever its suffix. An output keeps the source's relative name (the command
maps it, e.g. ``x.png`` -> ``x.png.tokens.safetensors``). When separate inputs yield the same
output name, each of those outputs goes under a folder named after its input's position in
``inputs`` (``0/x.png.tokens.safetensors``, ``1/x.png.tokens.safetensors``). Any collision left
after that refuses the whole run before anything is written, and so do outputs that exist
already when the command does not replace files (``tmm-decode`` without ``overwrite=true``: its
outputs carry the names of the sources, so an ``out_dir`` that holds the originals would lose
them). Every failure is listed at the end.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from tokenize_mm.core.errors import TokenizeMMError
from tokenize_mm.tokenizers.suffixes import (  # noqa: F401 (re-exported)
    SOUNDFILE_SUFFIXES,
    audio_suffixes,
    encodable_suffixes,
)


class OutputCollisionError(TokenizeMMError, ValueError):
    """Two sources would be written to the same output file; nothing was written."""


class OutputExistsError(TokenizeMMError, FileExistsError):
    """Output files exist already and the command does not replace them; nothing was written."""


SHOWN = 10  # files named in a refusal; the rest are counted


@dataclass(frozen=True)
class Source:
    """A file to process: its path, its name relative to its input, the input's position."""

    path: Path
    rel: Path
    index: int


@dataclass
class Inputs:
    """The files found under ``inputs``, the inputs that yield none, and notes for the user."""

    sources: list[Source] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Job:
    """One source file and the output file it is written to."""

    source: Path
    target: Path


@dataclass
class Outcome:
    """What a run did: outputs written, failures (each with its message), notes."""

    total: int = 0
    written: int = 0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def expand_inputs(inputs: str | Iterable[str], suffixes: tuple[str, ...]) -> Inputs:
    """Files to process: each file given, and the files under each folder given whose suffix is
    one of ``suffixes`` (compared case-insensitively). A missing input and a folder with no such
    file are problems; files skipped in a folder and a file reached twice are noted."""
    found = Inputs()
    seen: dict[Path, Path] = {}
    for index, raw in enumerate([inputs] if isinstance(inputs, str) else inputs):
        path = Path(str(raw))
        if path.is_dir():
            candidates = _folder_files(path, suffixes, found)
        elif path.exists():
            candidates = [(path, Path(path.name))]
        else:
            found.problems.append(f"{path}: input does not exist")
            continue
        for file, rel in candidates:
            key = file.resolve()
            if key in seen:
                also = "" if seen[key] == file else f" (also as {seen[key]})"
                found.notes.append(f"{file}: given more than once{also}; done once")
                continue
            seen[key] = file
            found.sources.append(Source(file, rel, index))
    return found


def _folder_files(
    folder: Path, suffixes: tuple[str, ...], found: Inputs
) -> list[tuple[Path, Path]]:
    """(file, name relative to ``folder``) for the matching files under ``folder``; notes the
    others in ``found`` and records a problem if none matches."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    wanted = {s.lower() for s in suffixes}
    keep = [p for p in files if p.suffix.lower() in wanted]
    skipped = Counter(
        p.suffix.lower() or "(no suffix)" for p in files if p.suffix.lower() not in wanted
    )
    if skipped:
        kinds = ", ".join(f"{s} ({n})" for s, n in sorted(skipped.items()))
        found.notes.append(
            f"{folder}: skipped {sum(skipped.values())} file(s) of a type not read here: {kinds}; "
            "name a file explicitly to try it"
        )
    if not keep:
        found.problems.append(
            f"{folder}: input folder holds no file ending in {', '.join(sorted(wanted))}"
        )
    return [(p, p.relative_to(folder)) for p in keep]


def plan_jobs(sources: list[Source], out_dir: Path, rename: Callable[[Path], Path]) -> list[Job]:
    """Where each source is written: ``out_dir / rename(rel)``, under ``<input position>/`` when
    separate inputs yield the same name.

    Raises:
        OutputCollisionError: sources that would still share an output, each with its sources.
    """
    named = [(src, rename(src.rel)) for src in sources]
    inputs_of: dict[Path, set[int]] = defaultdict(set)
    for src, name in named:
        inputs_of[name].add(src.index)
    named = [
        (src, Path(str(src.index)) / name if len(inputs_of[name]) > 1 else name)
        for src, name in named
    ]
    sources_of: dict[Path, list[Path]] = defaultdict(list)
    for src, name in named:
        sources_of[name].append(src.path)
    clashes = [
        f"{out_dir / name}: from {' and '.join(map(str, paths))}"
        for name, paths in sources_of.items()
        if len(paths) > 1
    ]
    if clashes:
        raise OutputCollisionError(
            "several sources would be written to the same file; rename them or give them in "
            "separate runs:\n    " + "\n    ".join(clashes)
        )
    return [Job(src.path, out_dir / name) for src, name in named]


def check_not_existing(jobs: list[Job]) -> None:
    """Raise ``OutputExistsError`` naming the jobs' targets that exist already (the first
    ``SHOWN``, the rest counted) and the ways out."""
    existing = [str(job.target) for job in jobs if job.target.exists() or job.target.is_symlink()]
    if existing:
        more = f"\n    and {len(existing) - SHOWN} more" if len(existing) > SHOWN else ""
        raise OutputExistsError(
            f"{len(existing)} output file(s) exist already and would be overwritten; choose "
            "another out_dir, remove them, or pass overwrite=true to replace them:\n    "
            + "\n    ".join(existing[:SHOWN])
            + more
        )


def run_jobs(jobs: list[Job], work: Callable[[Path, Path], str | None], verb: str) -> Outcome:
    """Run ``work(source, target)`` on each job with a progress bar (none when stderr is not a
    terminal). ``work`` writes ``target`` and may return a note. A job that raises an error of the
    ``TokenizeMMError`` family or an ``OSError`` is recorded as failed and the rest go on."""
    outcome = Outcome(total=len(jobs))
    for job in tqdm(jobs, desc=verb, unit="file", disable=None):
        try:
            note = work(job.source, job.target)
        except (TokenizeMMError, OSError) as err:
            outcome.failures.append(_failure_message(job.source, err))
            continue
        outcome.written += 1
        if note:
            outcome.notes.append(note)
    return outcome


def _failure_message(source: Path, err: BaseException) -> str:
    """The error's message, led by the source file unless the error is addressed to it."""
    message = str(err) or type(err).__name__
    return message if getattr(err, "item", None) == str(source) else f"{source}: {message}"


def report(outcome: Outcome, found: Inputs, verb: str, out_dir: Path) -> int:
    """Print the counts (stdout), the notes and every failure (stderr); the exit status."""
    print(f"{verb}d {outcome.written} of {outcome.total} files into {out_dir}")
    notes = found.notes + outcome.notes
    if notes:
        print(f"{len(notes)} notes:", *notes, sep="\n  ", file=sys.stderr)
    failures = found.problems + outcome.failures
    if failures:
        print(f"{len(failures)} failed:", *failures, sep="\n  ", file=sys.stderr)
    return 1 if failures else 0


def process_files(
    inputs: str | Iterable[str],
    suffixes: tuple[str, ...],
    rename: Callable[[Path], Path],
    work: Callable[[Path, Path], str | None],
    verb: str,
    out_dir: Path,
    overwrite: bool = True,
) -> None:
    """Expand ``inputs``, plan one output per file, run ``work`` on each and report; exits with
    status 1 if any input or file failed, or (before writing anything) if outputs collide or,
    unless ``overwrite``, exist already."""
    found = expand_inputs(inputs, suffixes)
    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise OutputExistsError(
                f"{out_dir}: out_dir is a file, not a folder; give a folder (new or existing) "
                "for the outputs"
            )
        jobs = plan_jobs(found.sources, out_dir, rename)
        if not overwrite:
            check_not_existing(jobs)
    except (OutputCollisionError, OutputExistsError) as err:
        found.problems.append(str(err))
        report(Outcome(total=len(found.sources)), found, verb, out_dir)
        sys.exit(1)
    if report(run_jobs(jobs, work, verb), found, verb, out_dir):
        sys.exit(1)
