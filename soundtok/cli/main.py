"""Entry point. Exit codes: 0 success; 1 a soundtok error (the message says what to do); 2 wrong usage;
130 interrupted."""

from __future__ import annotations

import logging
import sys

import typer

from soundtok.errors import SoundtokError

app = typer.Typer(
    name="soundtok",
    help="Audio <-> discrete tokens for language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    from soundtok.cli import chat, corpus, evaluate, semantic, setup, tokens, train, vocode

    for module in (tokens, evaluate, corpus, train, semantic, vocode, chat, setup):
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
        return 1
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
