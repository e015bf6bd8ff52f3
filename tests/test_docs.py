"""The README and docs/ say what the code does: every `dia-bench` command they show parses (its subcommand
exists and each flag it names is one that subcommand accepts), every relative link resolves (a #anchor to a
heading of its page), the README stays short, and no page reads as a tracker's or a lab notebook's.

Commands are checked against the parser `dia-bench` itself builds, in-process: nothing is measured.
"""

from __future__ import annotations

import argparse
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 220

# The README's two commands: CI extracts this block, so it must stay exactly as it is.
TWO_COMMANDS = """```bash
# The main job: measure Dia on this machine
python3 -m pip install nox && python3 -m nox -s bench

# The tests
python3 -m pip install nox && python3 -m nox -s lint tests
```"""

FENCE = re.compile(r"^\s*(```|~~~)")
# `dia-bench` as a command: not part of a path (.nox/bench/bin/dia-bench), a package (dia-bench[ray]) or a word
# (dia-bench's), and followed by a subcommand.
COMMAND = re.compile(r"(?<![\w./-])dia-bench[ \t]+(?=[A-Za-z<])")
# Where a command ends on a shell line: a comment, a pipe, the next command.
END = re.compile(r"\s#|\|\s|\|$|&&|;|\)\s|`")
INLINE_CODE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FORBIDDEN = re.compile(r"\bissue\s*#?\d+|\bsession\b", re.IGNORECASE)


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def split(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(prose lines, code-block lines), each with its 1-based line number; fences themselves are neither."""
    prose, code = [], []
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
            continue
        (code if inside else prose).append((number, line))
    return prose, code


def commands(path: Path) -> list[tuple[int, str]]:
    """Every `dia-bench ...` command on the page: in code blocks (continuation lines joined), and in inline
    code of the prose (which may wrap onto the next line)."""
    prose, code = split(path.read_text())
    found: list[tuple[int, str]] = []
    joined: list[tuple[int, str]] = []
    for number, line in code:
        if joined and joined[-1][1].endswith("\\"):
            joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + line.strip())
        else:
            joined.append((number, line))
    for number, line in joined:
        for match in COMMAND.finditer(line):
            rest = line[match.end():]
            end = END.search(rest)
            found.append((number, rest[:end.start()] if end else rest))
    # Inline code over the prose as one text, so that a span wrapped across lines is one command.
    starts, text = [], ""
    for number, line in prose:
        starts.append((len(text), number))
        text += line + "\n"
    for span in INLINE_CODE.finditer(text):
        inner = " ".join(span.group(1).split())
        if COMMAND.match(inner):
            number = max(n for offset, n in starts if offset <= span.start())
            found.append((number, inner[COMMAND.match(inner).end():]))
    return found


@cache
def subcommands() -> dict[str, set[str]]:
    """Each subcommand of the real parser, with every option string it accepts."""
    from dia_bench.harness.cli import build_parser

    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: {s for a in sub._actions for s in a.option_strings} for name, sub in action.choices.items()}


def flags(tokens: list[str]) -> list[str]:
    """The options a command names: `--flag`, `--flag=value`, `-o`, also inside a usage line's brackets."""
    out = []
    for token in tokens:
        token = token.strip("[]().,")
        if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", token):
            out.append(token.split("=", 1)[0])
    return out


def all_commands() -> list[tuple[str, int, str]]:
    return [(rel(page), number, command) for page in PAGES for number, command in commands(page)]


def test_the_pages_show_commands_to_check() -> None:
    """A check that finds nothing passes quietly: the README and docs/cli.md must both show commands."""
    pages = {page for page, _, _ in all_commands()}
    assert {"README.md", "docs/cli.md"} <= pages
    assert len(all_commands()) >= 40


@pytest.mark.parametrize(("page", "line", "command"), all_commands(),
                         ids=[f"{p}:{n}:{c.split()[0] if c.split() else ''}" for p, n, c in all_commands()])
def test_each_command_shown_parses(page: str, line: int, command: str) -> None:
    try:
        tokens = shlex.split(command, comments=True)
    except ValueError:  # an unbalanced quote in prose: the words will do
        tokens = command.split()
    assert tokens, f"{page}:{line}: `dia-bench` with no subcommand"
    name = tokens[0]
    known = subcommands()
    assert name in known, f"{page}:{line}: `dia-bench {name}` is not a subcommand (there are {', '.join(known)})"
    unknown = [f for f in flags(tokens[1:]) if f not in known[name]]
    assert not unknown, f"{page}:{line}: `dia-bench {command}`: {name} has no {', '.join(unknown)}"


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped (hyphens kept), spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading anchors by its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in split(path.read_text())[0]:
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            out.add(base if count == 0 else f"{base}-{count}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_relative_link_resolves(page: Path) -> None:
    prose = "\n".join(INLINE_CODE.sub("", line) for _, line in split(page.read_text())[0])
    broken = []
    for target in LINK.findall(prose):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not this repository's
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading #{anchor} in {rel(resolved)})")
    assert not broken, f"{rel(page)}: " + "; ".join(broken)


def test_the_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move detail to docs/ (at most {README_MAX_LINES})"


def test_the_readme_keeps_the_two_commands_ci_runs() -> None:
    assert TWO_COMMANDS in README.read_text()


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_no_page_names_tracker_issues_or_sessions(page: Path) -> None:
    """Pages say what a thing does and how to use it, not which ticket asked for it or who ran what when."""
    hits = [f"{rel(page)}:{n}: {line.strip()}" for n, line in enumerate(page.read_text().splitlines(), 1)
            if FORBIDDEN.search(line)]
    assert not hits, "\n".join(hits)
