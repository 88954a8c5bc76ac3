"""Pages generated at build time, from the code itself.

- ``api.md``: the API reference, one autosummary entry per name of ``epitensor.__all__``.
- ``_cli_commands.md``: every command of the Typer app with its usage, help text and
  options (with their defaults), the text ``--help`` prints; ``cli.md`` includes it.
  (sphinx-click cannot read it: Typer now builds its commands on its own copy of click.)
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path


def _write_if_changed(path: Path, text: str) -> None:
    """Rewrite ``path`` only when its text changes, so Sphinx rebuilds nothing it need not."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _md(text: str) -> str:
    """Help text as Markdown: backquoted code kept, other markup characters escaped."""
    parts = re.split(r"(`[^`]*`)", text)
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"([\\*_\[\]<>|])", r"\\\1", parts[i])
    return "".join(parts)


def write_cli_page(folder: Path) -> None:
    """Write ``_cli_commands.md``: usage, help and options of every ``epitensor`` command."""
    import typer.main

    from epitensor.cli import app

    group = typer.main.get_command(app)
    root = group.context_class(group, info_name="epitensor")
    lines = [
        "## Every command and option\n",
        "Generated from the Typer app (`epitensor.cli.app`) when the documentation is",
        "built: the text of `epitensor COMMAND --help`. Global options:",
        "`epitensor --version`, `--help`.\n",
    ]
    commands = []
    for name, command in group.commands.items():
        subcommands = getattr(command, "commands", None)  # a group (`epitensor models ...`)
        if subcommands:
            parent = command.context_class(command, info_name=name, parent=root)
            commands += [(f"{name} {sub}", cmd, parent) for sub, cmd in subcommands.items()]
        else:
            commands.append((name, command, root))
    for name, command, parent in commands:
        ctx = command.context_class(command, info_name=name, parent=parent)
        pieces = [
            re.sub(r"^\{(\w+)\}$", lambda m: m[1].upper(), piece)
            for piece in command.collect_usage_pieces(ctx)
        ]  # {model} -> MODEL
        usage = " ".join(["epitensor", name, *pieces])
        lines += [f"### epitensor {name}\n", "```text", usage, "```\n"]
        for para in (command.help or "").strip().split("\n\n"):
            para = " ".join(para.split())
            if para.startswith("Example:"):
                lines += ["Example:\n", "```bash", para.removeprefix("Example:").strip(), "```\n"]
            elif para:
                lines.append(_md(para) + "\n")
        rows = []
        for param in command.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            left, right = record
            rows.append(f"| `{left}` | {_md(' '.join(right.split()))} |")
        if rows:
            lines += ["| option | description |", "| --- | --- |", *rows, ""]
    _write_if_changed(folder / "_cli_commands.md", "\n".join(lines) + "\n")


_HEAD = """\
# API reference

Generated from `epitensor.__all__` when the documentation is built: every name the
package exports, and only those (`import epitensor as et; et.Avocado, et.impute, ...`).
Everything else is reached through its subpackage (see [Architecture](architecture.md)).
"""


def write_api_page(folder: Path, names: list[str]) -> None:
    """Write ``api.md``: one autosummary table per kind of public name.

    The file is rewritten only when its text changes, so Sphinx rebuilds nothing
    it does not need to.
    """
    import epitensor

    groups: dict[str, list[str]] = {"Classes": [], "Functions": [], "Other": []}
    for name in names:
        if name.startswith("__"):
            continue
        obj = getattr(epitensor, name)
        if inspect.isclass(obj):
            groups["Classes"].append(name)
        elif callable(obj):
            groups["Functions"].append(name)
        else:
            groups["Other"].append(name)
    parts = [_HEAD]
    for title, members in groups.items():
        if not members:
            continue
        parts.append(
            f"\n## {title}\n\n```{{eval-rst}}\n.. currentmodule:: epitensor\n\n"
            ".. autosummary::\n   :toctree: generated\n   :nosignatures:\n\n"
        )
        parts[-1] += "".join(f"   {m}\n" for m in members) + "```\n"
    _write_if_changed(folder / "api.md", "".join(parts))
