"""The ``busgen`` command line: one command per registered command (`busgen.commands.registry`).

Every command takes ``--config FILE``, ``--field value`` options and ``key=value``
overrides (``busgen config show COMMAND`` prints the defaults as YAML). Heavy imports
(ray, torch) happen when a command runs, so ``busgen --help`` is instant.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from busgen import __version__
from busgen.commands.command import Command
from busgen.commands.registry import COMMANDS, command

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="BUSGen Platform: breast-ultrasound generative modelling on Ray.",
)
config_app = typer.Typer(no_args_is_help=True, help="Inspect the configs of the commands.")
app.add_typer(config_app, name="config")

# Errors a user can fix (bad config, missing input, wrong model folder): one `error:` line, exit status 2.
# Every error class the library defines itself (IngestError, GenerateError, ...) names the problem and the remedy.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, FileExistsError, PermissionError)


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, USER_ERRORS) or type(exc).__module__.startswith("busgen.")


def fail(message: str, code: int = 2) -> None:
    """Print a clear error (what went wrong and what to do) and exit non-zero."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def print_help(op: Command) -> None:
    from busgen.core.cli_args import describe_fields

    usage = " ".join(p.upper() for p in op.positional)
    typer.echo(f"Usage: busgen {op.name} {usage} [--config FILE] [--option VALUE ...] [key=value ...]\n")
    typer.echo(f"  {op.summary}\n\nOptions (also YAML keys of --config):")
    for flag, kind, default, comment in describe_fields(op.config_class):
        typer.echo(f"  {flag:<22} {kind:<20} {default:<14} {comment}".rstrip())


def run_command(op: Command, words: List[str]) -> dict:
    """Parse ``words`` into the command's config, run it, print its summary; user errors exit 2."""
    from busgen.core.cli_args import config_from_words

    if "--help" in words or "-h" in words:
        print_help(op)
        raise typer.Exit(0)
    try:
        cfg, _ = config_from_words(op.config_class, words, op.positional)
        if "progress" in type(cfg).model_fields and "progress" not in cfg.model_fields_set:
            cfg = cfg.model_copy(update={"progress": sys.stderr.isatty()})
        result = op.run(cfg)
    except KeyboardInterrupt as exc:  # Ctrl-C: one line (how to resume, when the command knows), no traceback
        typer.secho(str(exc) or f"interrupted: busgen {op.name} stopped", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(130) from None
    except Exception as exc:
        if not is_user_error(exc):
            raise
        fail(str(exc))
    typer.echo(result.get("summary") or " ".join(f"{k}={v}" for k, v in result.items()))
    return result


def _register(op: Command) -> None:
    def command(ctx: typer.Context) -> None:
        run_command(op, list(ctx.args))

    command.__doc__ = op.summary
    settings = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
    app.command(op.name, context_settings=settings, add_help_option=False)(command)


for _op in COMMANDS.values():
    _register(_op)


@config_app.command("show")
def config_show(name: str = typer.Argument(..., help="a command name, e.g. generate")) -> None:
    """Print a command's config defaults as YAML (save, edit, pass with --config)."""
    from busgen.core.cli_args import defaults_yaml

    try:
        typer.echo(defaults_yaml(command(name).config_class), nl=False)
    except USER_ERRORS as exc:
        fail(str(exc))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"busgen {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_options(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True, help="print version"),
) -> None:
    """BUSGen Platform: breast-ultrasound generative modelling on Ray."""


def main(argv: Optional[List[str]] = None) -> None:
    app(argv)


if __name__ == "__main__":
    main()
