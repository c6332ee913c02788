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
    from soundtok.cli import corpus, evaluate, setup, tokens

    for module in (tokens, evaluate, corpus, setup):
        module.register(app)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _register()
    try:
        app(args=argv, standalone_mode=False)
    except SoundtokError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as exc:  # click's usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.exceptions.Exit):
            return exc.exit_code
        if isinstance(exc, click.ClickException):
            exc.show()
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
