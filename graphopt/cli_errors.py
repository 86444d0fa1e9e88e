"""How every `graphopt` command reports failure: one line on stderr and an exit code."""
from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Any, Callable

import click

from graphopt.errors import GraphoptError

log = logging.getLogger("graphopt")


class _EchoHandler(logging.Handler):
    """Log records as lines on the *current* stderr (click.echo resolves it at each call), so
    repeated in-process runs (tests, CliRunner) each see their own warnings."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:  # logging must never raise into the command
            self.handleError(record)


def configure_logging(debug: bool) -> None:
    """Warnings (or everything, with --debug) as `graphopt: LEVEL: message` lines on stderr."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _EchoHandler)]:
        root.removeHandler(handler)
    handler = _EchoHandler()
    handler.setFormatter(logging.Formatter("graphopt: %(levelname)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)


def _fail(message: str, code: int) -> None:
    click.echo(f"graphopt: error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn GraphoptError (and unexpected exceptions) into one line and an exit code."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GraphoptError as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            # Under --debug: the whole message and the traceback, including the exception a
            # plugin or pass raised itself (kept as the error's __cause__).
            log.debug("details:\n%s", err, exc_info=err)
            _fail(first, err.exit_code)
        except BrokenPipeError:  # `graphopt passes | head`: the reader left; exit quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except MemoryError:
            _fail("out of memory", 75)
        except Exception as err:  # a bug in graphopt: still one line, the traceback under --debug
            log.debug("internal error", exc_info=True)
            first = (str(err).strip().splitlines() or [""])[0][:300]
            _fail(f"internal error: {type(err).__name__}: {first} (rerun with --debug for the "
                  "traceback and please report it)", 70)
    return wrapper
