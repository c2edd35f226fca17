"""The ``persemo`` command: thin wrappers that parse arguments, call the library and print.

Heavy imports (torch, librosa, lightning, onnxruntime) happen inside the commands, so ``--help`` and
argument errors answer at once. Every expected failure is one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="persemo: speech emotion recognition for Persian (ShEMO) and other corpora.")


@app.callback()
def _root() -> None:
    """persemo: speech emotion recognition for Persian (ShEMO) and other corpora."""


def fail(message: str, code: int = 2) -> None:
    """Print one clear line and exit non-zero."""
    typer.echo(f"persemo: error: {message}", err=True)
    raise typer.Exit(code)


def _expected_errors() -> tuple[type[BaseException], ...]:
    from .audio import AudioError
    from .config import ConfigError
    from .corpora.base import CorpusError

    errs: list[type[BaseException]] = [AudioError, ConfigError, CorpusError, FileNotFoundError]
    try:
        from .artifact import ArtifactError

        errs.append(ArtifactError)
    except ImportError:
        pass
    return tuple(errs)


def guarded(fn):
    """Turn the library's expected errors into one line and exit 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except _expected_errors() as exc:
            fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper


CorpusOpt = typer.Option(..., "--corpus", help="shemo, emodb or csv")
DataOpt = typer.Option(..., "--data", help="corpus folder (shemo, emodb) or manifest file (csv)")


@app.command()
@guarded
def inspect(corpus: str = CorpusOpt, data: Path = DataOpt,
            as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables")):
    """Counts by emotion, speaker and gender, total duration, and every problem found."""
    from .corpora import scan_corpus
    from .corpora.base import summary_json

    scan = scan_corpus(corpus, data)
    if as_json:
        typer.echo(summary_json(scan))
        return
    from .report import print_inspect

    print_inspect(scan.summary())


# -- commands added by other modules register below this line --


def main() -> None:
    app()


if __name__ == "__main__":
    main()
