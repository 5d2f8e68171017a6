"""Every CLI command and option is documented in docs/cli.md, in the command's own section.

The test walks the click group recursively, so commands added later are checked too. A command
``stxcat a b`` is documented by a Markdown heading with a code span starting `` `stxcat a b`` (upper-case
arguments may follow, as in `` `stxcat a b OUT` ``); its
section runs to the next heading of the same or a higher level, and every long option name of the
command (``--name``, and the ``--no-name`` of a boolean switch) must appear in it.
"""

from __future__ import annotations

import pathlib
import re

import click
import pytest

from catalog_tool.cli import main

CLI_MD = pathlib.Path(__file__).resolve().parent.parent / "docs" / "cli.md"
HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


def commands(group: click.Command, path=("stxcat",)):
    """(path, command) for the group and every command below it, hidden ones left out."""
    yield path, group
    if isinstance(group, click.Group):
        for name, cmd in sorted(group.commands.items()):
            if not getattr(cmd, "hidden", False):
                yield from commands(cmd, path + (name,))


def long_options(cmd: click.Command) -> list[str]:
    names = []
    for p in cmd.params:
        if isinstance(p, click.Option) and not p.hidden:
            names += [o for o in (*p.opts, *p.secondary_opts) if o.startswith("--") and o != "--help"]
    return names


def sections(text: str) -> dict[str, str]:
    """Command path ('stxcat a b') -> its section text, from headings with a `stxcat ...` code span."""
    lines = text.splitlines()
    heads = [(i, len(m.group(1)), m.group(2)) for i, line in enumerate(lines) if (m := HEADING.match(line))]
    out = {}
    for k, (i, level, title) in enumerate(heads):
        # the command path at the start of a code span, arguments after it allowed: `stxcat a b OUT`
        m = re.search(r"`(stxcat(?: [a-z][a-z0-9-]*)*)(?=[ `])", title)
        if not m:
            continue
        end = next((j for j, lv, _ in heads[k + 1:] if lv <= level), len(lines))
        out[m.group(1)] = "\n".join(lines[i:end])
    return out


CMDS = list(commands(main))
DOCS = CLI_MD.read_text(encoding="utf-8")
SECTIONS = sections(DOCS)


@pytest.mark.parametrize("path,cmd", CMDS, ids=[" ".join(p) for p, _ in CMDS])
def test_command_and_options_documented(path, cmd):
    name = " ".join(path)
    assert name in SECTIONS, f"docs/cli.md has no section (a heading with `{name}`) for `{name}`"
    body = SECTIONS[name]
    missing = [o for o in long_options(cmd) if not re.search(re.escape(o) + r"(?![\w-])", body)]
    assert not missing, f"docs/cli.md section `{name}` does not document {', '.join(missing)}"


def test_no_section_for_a_command_that_does_not_exist():
    known = {" ".join(p) for p, _ in CMDS}
    stale = sorted(set(SECTIONS) - known)
    assert not stale, f"docs/cli.md documents commands stxcat does not have: {stale}"


def test_the_walk_sees_nested_commands():
    # guards the test itself: a group's subcommands and both names of a switch are collected
    names = {" ".join(p) for p, _ in CMDS}
    assert {"stxcat", "stxcat plan", "stxcat simulate", "stxcat simulate desi", "stxcat report"} <= names
    report = dict((" ".join(p), c) for p, c in CMDS)["stxcat report"]
    assert {"--out", "--truth", "--good-only", "--all"} <= set(long_options(report))
