"""The ``gradprobe`` command line.

Each command lives in its own module and is registered on the :data:`main` group below. Errors that
gradprobe raises on purpose (:class:`gradprobe.errors.GradprobeError`) become one line on stderr and
exit status 2 for bad input (:class:`~gradprobe.errors.UsageError`: options, values, and run
directories that are missing, empty or corrupt), 1 for a failure inside a run -- never a
traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from gradprobe.errors import GradprobeError, UsageError


class _Group(click.Group):
    """A click group that turns gradprobe's own errors into one clear line."""

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def,unused-ignore]
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            click.echo(f"gradprobe: error: {exc}", err=True)
            ctx.exit(2)
        except GradprobeError as exc:
            click.echo(f"gradprobe: error: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gradprobe")
def main() -> None:
    """Show, explain and fix vanishing and exploding gradients in deep networks."""


def run() -> None:  # pragma: no cover - thin wrapper for ``python -m gradprobe``
    sys.exit(main())


# --- command registration: module -> the click commands it defines ---
_COMMANDS = {
    "gradprobe.cli.run": ("list_cmd", "run_cmd", "plot_cmd", "demo_cmd"),
    "gradprobe.cli.predict": ("predict",),
    "gradprobe.cli.diagnose": ("diagnose_cmd", "report_cmd", "check_cmd"),
    "gradprobe.cli.lab": ("sweep_cmd", "remedies_cmd"),
    "gradprobe.cli.tensorboard": ("tensorboard_cmd",),
}
for _module, _names in _COMMANDS.items():
    _mod = importlib.import_module(_module)
    for _name in _names:
        main.add_command(getattr(_mod, _name))
