"""Entry point of the ``medseg`` command.

Errors that medseg knows (bad input, bad options, incompatible run folders) are
printed as a message with the file and the fix, and exit with status 2; no
traceback reaches the user. ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from medseg.errors import MedsegError

console = Console(stderr=True)
app = typer.Typer(
    name="medseg",
    help="Deep-learning segmentation of medical images: train, evaluate and predict from a folder of scans and masks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        import platform

        import medseg

        typer.echo(f"medseg {medseg.__version__} (Python {platform.python_version()})")
        raise typer.Exit()


@app.callback()
def _global(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug messages."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Show warnings and errors only."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = RichHandler(console=console, show_time=False, show_path=False, markup=False)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s", force=True)
    logging.getLogger("medseg").setLevel(level)
    _state["debug"] = debug


def _register() -> None:
    from medseg.cli import calibrate_cmd, compare_cmd, data_cmds, demo_cmd, eval_cmd, models_cmd, predict_cmd, report_cmd, train_cmd

    app.command("synth")(data_cmds.synth)
    app.command("show")(data_cmds.show)
    app.command("train")(train_cmd.train)
    app.command("evaluate")(eval_cmd.evaluate)
    app.command("predict")(predict_cmd.predict)
    app.command("models")(models_cmd.models)
    app.command("demo")(demo_cmd.demo)
    app.command("compare")(compare_cmd.compare)
    from medseg.cli import plan_cmds

    app.command("inspect")(plan_cmds.inspect)
    app.command("plan")(plan_cmds.plan)
    app.command("calibrate")(calibrate_cmd.calibrate)
    from medseg.cli import qc_cmd

    app.command("qc")(qc_cmd.qc)
    from medseg.cli import deidentify_cmd

    app.command("deidentify")(deidentify_cmd.deidentify)
    app.command("report")(report_cmd.report)
    from medseg.cli import export_cmd, relocate_cmd

    app.command("relocate")(relocate_cmd.relocate)
    app.command("export")(export_cmd.export)
    from medseg.cli import serve_cmd

    app.command("serve")(serve_cmd.serve)


_register()


def main(argv: list[str] | None = None) -> None:
    from medseg.logs import forget

    forget()  # messages are said once per command
    try:
        app(args=argv)
    except MedsegError as e:
        if _state["debug"]:
            raise
        where = f"{e.path}: " if e.path else ""
        console.print(f"[bold red]error:[/] {escape(where + e.message)}", markup=True, highlight=False, soft_wrap=True)
        if e.hint:
            console.print(f"[yellow]fix:[/] {escape(e.hint)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as e:  # a folder that cannot be written, a file where a folder should be, a full disk...
        if _state["debug"]:
            raise
        where = f"{e.filename}: " if e.filename else ""
        console.print(f"[bold red]error:[/] {escape(where + (e.strerror or str(e)))}", highlight=False, soft_wrap=True)
        console.print(f"[yellow]fix:[/] {escape(_os_error_hint(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)


def _os_error_hint(e: OSError) -> str:
    if isinstance(e, PermissionError):
        return "choose a folder you can write to (or read), or fix its permissions"
    if isinstance(e, (FileExistsError, NotADirectoryError)):
        return "a file stands where a folder is needed: choose another path"
    if isinstance(e, IsADirectoryError):
        return "this is a folder; give a file name"
    if isinstance(e, FileNotFoundError):
        return "check the path"
    return "check the path, the free disk space and the permissions"
