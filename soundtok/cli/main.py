"""Entry point. Exit codes: 0 success; 1 an internal error (a bug: the traceback is logged); 2 wrong usage;
3 bad input or setup (a soundtok error: the one-line message says what went wrong and what to do); 130 interrupted."""

from __future__ import annotations

import logging
import sys
from enum import IntEnum
from typing import Annotated

import typer

from soundtok.errors import SoundtokError
from soundtok.logs import quiet_third_party

log = logging.getLogger("soundtok")


class ExitCode(IntEnum):
    OK = 0
    INTERNAL_ERROR = 1
    USAGE = 2
    BAD_INPUT = 3
    INTERRUPTED = 130


app = typer.Typer(
    name="soundtok",
    help="Audio <-> discrete tokens for language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _options(
    verbose: Annotated[
        bool, typer.Option("--verbose", help="let third-party libraries' warnings through; log soundtok's steps")
    ] = False,
) -> None:
    # before any command imports TensorFlow Lite, transformers or huggingface_hub: they read the environment then
    quiet_third_party(verbose=verbose)


def _register() -> None:
    from soundtok.cli import bench, chat, corpus, evaluate, semantic, setup, tokens, train, vocode

    for module in (tokens, evaluate, corpus, train, semantic, vocode, chat, setup, bench):
        module.register(app)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _register()
    try:
        app(args=argv, prog_name="soundtok")  # click handles usage errors itself (exit 2) and exits via SystemExit
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except SoundtokError as exc:
        typer.echo(f"error: {exc}", err=True)
        return ExitCode.BAD_INPUT
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return ExitCode.INTERRUPTED
    except Exception as exc:  # a bug, not the user's input: keep the traceback for the report
        log.exception("internal error")
        typer.echo(f"internal error: {type(exc).__name__}: {exc} (a bug in soundtok; please report it)", err=True)
        return ExitCode.INTERNAL_ERROR
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
