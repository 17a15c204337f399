"""``--help`` for the ``tmm-*`` commands, read from each command's own config (``conf/<name>.yaml``).

Hydra's generic ``--help`` says "<name> is powered by Hydra", lists every config group under
``conf/`` (the training groups for ``tmm-fit-tokenizer`` too) and dumps the config. This one
prints what a user needs first: what the command does and how it is called (the comment block
that opens the config file, examples included), the keys it cannot run without (``???`` in the
config), and the config groups that config composes, each with its options and its default.
Hydra's own flags stay behind ``--hydra-help``; the whole config behind ``--cfg job``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from tokenize_mm.cli.common import config_dir

HELP_FLAGS = ("--help", "-h")


def command_name(config_name: str) -> str:
    """``fit_tokenizer`` → ``tmm-fit-tokenizer`` (the console script of ``pyproject.toml``)."""
    return "tmm-" + config_name.replace("_", "-")


def header_lines(text: str) -> list[str]:
    """The comment block that opens a config file, without its ``#`` marks."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[2:] if line.startswith("# ") else line[1:])
    return lines


def config_groups(primary: DictConfig, conf: Path) -> list[tuple[str, list[str], str | None]]:
    """``(group, options, default)`` for each config group in ``primary``'s defaults list; the
    options are the files of the group's folder under ``conf`` (for a group placed at a package
    such as ``tokenizer@tokenizers.image``, those named after the package's last key)."""
    groups = []
    for entry in primary.get("defaults", []):
        if not isinstance(entry, DictConfig):
            continue  # "_self_"
        for key, default in entry.items():
            name = str(key).removeprefix("optional ").removeprefix("override ")
            if name.startswith("hydra/"):
                continue  # Hydra's own settings: --hydra-help
            group, _, package = name.partition("@")
            options = sorted(p.stem for p in (conf / group).glob("*.yaml"))
            # tokenizer@tokenizers.image: the image tokenizers (their names begin with "image")
            leaf = package.rsplit(".", 1)[-1]
            options = [o for o in options if leaf and o.startswith(leaf)] or options
            groups.append((name, options, default))
    return groups


def missing_keys(node: DictConfig | ListConfig, prefix: str = "") -> list[str]:
    """Dotted keys whose value is ``???`` (mandatory), without resolving interpolations."""
    found: list[str] = []
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        full = f"{prefix}{key}"
        if OmegaConf.is_missing(node, key):
            found.append(full)
        elif not OmegaConf.is_interpolation(node, key):
            child = node[key]
            if isinstance(child, (DictConfig, ListConfig)):
                found += missing_keys(child, f"{full}.")
    return found


def command_help(config_name: str) -> str:
    """The help text of the command whose primary config is ``conf/<config_name>.yaml``."""
    from hydra import compose, initialize_config_dir

    conf = Path(config_dir()).resolve()
    path = conf / f"{config_name}.yaml"
    command = command_name(config_name)
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        composed = compose(config_name)
    required = missing_keys(composed)
    lines = [f"{command}: {line}" if i == 0 else line
             for i, line in enumerate(header_lines(path.read_text(encoding="utf-8")))]  # fmt: skip
    lines += ["", "Required keys: " + (", ".join(required) if required else "none (every key has a default)")]  # fmt: skip
    groups = config_groups(OmegaConf.load(path), conf)
    if groups:
        lines += ["", "Config groups (group=option; * marks the default):"]
        for name, options, default in groups:
            shown = [f"{o}*" if o == default else o for o in options]
            if default is None:
                shown.append("null*")
            lines.append(f"  {name}: {', '.join(shown)}")
    lines += [
        "",
        f"Any key of the config: key=value. The whole config: {command} --cfg job.",
        f"Hydra's own flags (-m for a sweep, --cfg, --resolve, ...): {command} --hydra-help.",
        f"The config file: {path}",
    ]
    return "\n".join(lines)


def run_or_help(hydra_main: Callable[[], None], config_name: str,
                argv: Sequence[str] | None = None) -> None:  # fmt: skip
    """Print ``command_help`` when ``argv`` asks for ``--help`` (or ``-h``); else run Hydra's main."""
    args = sys.argv[1:] if argv is None else argv
    if any(a in HELP_FLAGS for a in args):
        print(command_help(config_name))
        return
    hydra_main()
