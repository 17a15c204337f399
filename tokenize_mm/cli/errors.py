"""Errors a user can fix end a command with one line on stderr and exit status 1, no traceback.

Hydra prints a traceback for any exception that leaves a command's main function. The errors
that concern the user's input already say what is wrong and how to fix it: tokenize_mm's typed
errors (``TokenizeMMError``: they name the item, the key or the folder), a required key left out
(omegaconf's ``MissingMandatoryValue`` for a ``???`` value), and either of them raised while
``hydra.utils.instantiate`` builds a configured object (wrapped in an ``InstantiationException``,
e.g. a folder source whose root does not exist). ``exits_cleanly`` prints those as
``<command>: <message>``; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from hydra.errors import InstantiationException
from omegaconf.errors import MissingMandatoryValue

from tokenize_mm.core.errors import TokenizeMMError


def user_error(err: BaseException) -> str | None:
    """The one-line message for ``err`` if it is the user's to fix (see the module docstring),
    else ``None``."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    if isinstance(err, TokenizeMMError):
        return str(err) or type(err).__name__
    if isinstance(err, MissingMandatoryValue):
        key = getattr(err, "full_key", None) or getattr(err, "key", None) or "a key"
        return f"{key} is required: give {key}=... on the command line (--help lists every key)"
    return None


def exits_cleanly(command: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Hydra task function (under ``@hydra.main``) so that a user's error prints
    ``<command>: <message>`` on stderr and exits with status 1."""

    def decorate(main: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(main)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                return main(*args, **kwargs)
            except Exception as err:
                message = user_error(err)
                if message is None:
                    raise
                print(f"{command}: {message}", file=sys.stderr)
                sys.exit(1)

        return wrapped

    return decorate
