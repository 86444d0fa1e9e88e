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
            if log.isEnabledFor(logging.DEBUG):
                log.debug("details:\n%s", err)
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
