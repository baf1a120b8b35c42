"""User errors, and how the command-line entry points show them: one `error: ...` line, exit status 1.

A *user error* is a mistake in what the user gave: a missing or malformed file, a bad config value, a
refused checkpoint. Its message already names the file or field and what was expected, so a traceback
adds nothing. Everything else is a bug and keeps its traceback. The rule (`user_error_in`):

- any `UserError` (e.g. `RefusedCheckpointError`, `lvm.media.skips.BadInputError`);
- `ValueError`, `TypeError`, `KeyError` or `OSError` raised by a `raise` statement in this repository's
  own code (`lvm/`, `data_pipelines/`): those messages were written for the user. The same types raised
  inside torch, numpy or Lightning are bugs of ours until shown otherwise, and keep the traceback;
- a missing path (`FileNotFoundError`, `NotADirectoryError`, `IsADirectoryError`) from anywhere: the OS
  message names the path;
- a mandatory config value left at `???` (omegaconf's `MissingMandatoryValue`);
- any of these as the cause of Hydra's `InstantiationException` (a `_target_` constructor refusing its
  arguments).

`HYDRA_FULL_ERROR=1` turns the one-line form off, for every entry point, Hydra's or not.
"""

from __future__ import annotations

import functools
import os
import pickle
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_OUR_CODE = tuple(os.path.join(_REPO_ROOT, package) + os.sep for package in ("lvm", "data_pipelines"))
_OUR_ERROR_TYPES = (ValueError, TypeError, KeyError, OSError)
_MISSING_PATH_TYPES = (FileNotFoundError, NotADirectoryError, IsADirectoryError)
FULL_ERROR_ENV = "HYDRA_FULL_ERROR"

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """A mistake in the user's input, files or configuration; the message names what and where."""


class RefusedCheckpointError(UserError):
    """A weights file that `torch.load(weights_only=True)` refused: it pickles Python objects, not tensors."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        super().__init__(
            f"{self.path}: refused to load: it contains Python objects other than tensors (possibly code); "
            "only safetensors or plain tensor .bin/.ckpt files are loaded"
        )


def is_weights_only_refusal(error: BaseException) -> bool:
    """True for the error `torch.load(weights_only=True)` raises when the pickle names a global (a class or
    function) outside its allow-list, which is how a pickle that would run code is stopped."""
    return isinstance(error, pickle.UnpicklingError) and "weights only load failed" in str(error).lower()


@contextmanager
def refuse_unsafe_pickles(path: str | os.PathLike) -> Iterator[None]:
    """Wrap a `torch.load(..., weights_only=True)` of `path` (ours or Lightning's): a refusal becomes a
    `RefusedCheckpointError` naming the file and saying why, instead of torch's page-long message."""
    try:
        yield
    except pickle.UnpicklingError as error:
        if is_weights_only_refusal(error):
            raise RefusedCheckpointError(path) from error
        raise


def _raised_in_our_code(error: BaseException) -> bool:
    traceback = error.__traceback__
    if traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    return os.path.abspath(traceback.tb_frame.f_code.co_filename).startswith(_OUR_CODE)


def user_error_in(error: BaseException) -> BaseException | None:
    """The user error `error` is or wraps (see the module docstring), else None (a bug)."""
    from omegaconf.errors import MissingMandatoryValue  # omegaconf comes with hydra-core

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (UserError, MissingMandatoryValue, *_MISSING_PATH_TYPES)):
            return error
        if isinstance(error, _OUR_ERROR_TYPES) and _raised_in_our_code(error):
            return error
        if type(error).__name__ != "InstantiationException":  # hydra.errors; only its cause is looked at
            return None
        error = error.__cause__
    return None


def one_line(error: BaseException) -> str:
    """The error's message on one line (KeyError's quotes dropped; lines joined with "; ")."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def report_user_errors(main: F) -> F:
    """Decorate an entry point: a user error prints `error: <message>` on stderr and exits with status 1;
    a bug propagates with its traceback. Put it under `@hydra.main` so Hydra's job teardown still runs."""

    @functools.wraps(main)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except Exception as error:
            user_error = user_error_in(error)
            if user_error is None or os.environ.get(FULL_ERROR_ENV) == "1":
                raise
            print(f"error: {one_line(user_error)}", file=sys.stderr, flush=True)
            sys.exit(1)

    return run  # type: ignore[return-value]
