"""Hints that name a command line cannot drift: every one is made by ``hints.command``, and
every call of it in the source is checked against the real click commands.

The walk reads the source with ast: a call's first argument must be a string naming a
command of ``maas_lab.cli.cli`` (subcommand words walk its groups), each keyword must be an
option of that command, and the line built with sample values must parse. A second walk
finds command lines written by hand (a backticked ``maas ...`` in a string outside a
docstring), so a new hint cannot skip the generator.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import click
import pytest

from maas_lab import hints
from maas_lab.hints import command, prog_scope, typed

ROOT = Path(__file__).resolve().parents[1]
# Their help texts describe the commands themselves (`maas launch ...` in launch's help).
SELF_DESCRIBING = {"maas_lab/cli.py", "maas_lab/magics.py"}
# Hand-written command lines in files this change could not edit yet, each (file, text):
# the test fails when one is fixed (remove it here) or a new one appears.
PENDING: set[tuple[str, str]] = set()


def _sources() -> list[Path]:
    return sorted([*(ROOT / "maas_lab").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")])


# ---------------------------------------------------------------------- the checker


def _hint_calls(tree: ast.AST) -> list[ast.Call]:
    """Calls of hints.command in a module: ``command(...)`` where ``command`` was imported
    from a ``hints`` module, or ``hints.command(...)``."""
    funcs, modules = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            for alias in node.names:
                if mod.split(".")[-1] == "hints" and alias.name == "command":
                    funcs.add(alias.asname or alias.name)
                if alias.name == "hints":
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[-1] == "hints" and alias.asname:
                    modules.add(alias.asname)
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id in funcs:
            calls.append(node)
        elif (
            isinstance(f, ast.Attribute)
            and f.attr == "command"
            and isinstance(f.value, ast.Name)
            and f.value.id in modules
        ):
            calls.append(node)
    return calls


def _resolve(name: str) -> click.Command | None:
    from maas_lab import cli

    cmd: click.Command = cli.cli
    for word in name.split():
        if not isinstance(cmd, click.Group) or word not in cmd.commands:
            return None
        cmd = cmd.commands[word]
    return cmd if not isinstance(cmd, click.Group) else None


def _options(cmd: click.Command) -> set[str]:
    """Every option the command takes: its click options, and for a command that hands
    the rest to a plugin (export, compress, distill, launch) the options of the installed
    components of that kind, and those its help names (launch parses its own)."""
    from maas_lab.plugins import get_plugins

    found = {o for p in cmd.params if isinstance(p, click.Option) for o in p.opts}
    found |= {o for p in cmd.params if isinstance(p, click.Option) for o in p.secondary_opts}
    kind = getattr(cmd, "kind", None)
    if kind:
        comps = get_plugins().components[kind].values()
        found |= {"--" + p.name.replace("_", "-") for c in comps for p in c.params}
        found |= set(re.findall(r"--[a-z][a-z0-9-]*", cmd.help or ""))
    return found


def _sample(node: ast.expr, param: click.Parameter | None = None):
    """A value for an argument in the source: a constant as written, else a placeholder
    the parameter's type accepts."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_sample(e, param) for e in node.elts]
    if param is not None and isinstance(param.type, click.Choice):
        return param.type.choices[0]
    return "1"


def check_source(source: str, filename: str = "<source>") -> list[str]:
    """What is wrong with each hints.command call in ``source``; empty when all are right."""
    problems = []
    for call in _hint_calls(ast.parse(source, filename)):
        where = f"{filename}:{call.lineno}"
        if not call.args or not (
            isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)
        ):
            problems.append(f"{where}: the command name must be a string constant")
            continue
        name = call.args[0].value
        cmd = _resolve(name)
        if cmd is None:
            problems.append(f"{where}: {name!r} is not a maas command")
            continue
        if any(isinstance(a, ast.Starred) for a in call.args) or any(
            k.arg is None for k in call.keywords
        ):
            problems.append(f"{where}: *args/**options cannot be checked; name each one")
            continue
        known = _options(cmd)
        by_flag = {o: p for p in cmd.params if isinstance(p, click.Option) for o in p.opts}
        options = {}
        for kw in call.keywords:
            flag = "--" + kw.arg.rstrip("_").replace("_", "-")
            if flag not in known:
                problems.append(f"{where}: `{name}` has no option {flag}")
            options[kw.arg] = _sample(kw.value, by_flag.get(flag))
        if problems and problems[-1].startswith(where):
            continue
        line = command(name, *(_sample(a) for a in call.args[1:]), **options)
        words = shlex.split(line)
        n = len(name.split())
        assert words[0] == hints.PROG.get() and words[1 : 1 + n] == name.split(), line
        try:
            cmd.make_context(name, words[1 + n :])
        except click.ClickException as exc:
            problems.append(f"{where}: `{line}` does not parse: {exc.format_message()}")
    return problems


# ---------------------------------------------------------------------- the walk


def test_every_hint_names_a_real_command_with_real_options_and_parses():
    problems, calls = [], 0
    for path in _sources():
        text = path.read_text()
        calls += len(_hint_calls(ast.parse(text)))
        problems += check_source(text, str(path.relative_to(ROOT)))
    assert not problems, "\n".join(problems)
    assert calls >= 20  # the walk finds the hints (a broken walk would pass vacuously)


def test_the_checker_catches_a_wrong_command_a_wrong_option_and_a_bad_line():
    source = """
from maas_lab.hints import command
from maas_lab import hints as h

ok = command("export", ref, to="onnx")
a = command("exprot", ref, to="onnx")
b = command("export", ref, too="onnx")
c = h.command("bundle imprt", "FILE")
d = command("logs")
e = command(which, "x")
f = command("bundle import", "FILE", trust=True, as_=name)
g = command("bundle", "FILE")
"""
    problems = check_source(source, "s.py")
    assert len(problems) == 6, problems
    assert "s.py:6: 'exprot' is not a maas command" in problems
    assert "s.py:7: `export` has no option --too" in problems
    assert "s.py:8: 'bundle imprt' is not a maas command" in problems
    assert any(p.startswith("s.py:9: `maas logs` does not parse") for p in problems)
    assert "s.py:10: the command name must be a string constant" in problems
    assert "s.py:12: 'bundle' is not a maas command" in problems  # a group, not a command


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def hand_written(source: str) -> list[tuple[int, str]]:
    """(line, text) of each string (f-strings' constant parts included) outside docstrings
    holding a backticked command line."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in skip
        and ("`maas " in node.value or "`%maas " in node.value)
    ]


def test_no_command_line_is_written_by_hand():
    found = set()
    for path in _sources():
        rel = str(path.relative_to(ROOT))
        if rel in SELF_DESCRIBING:
            continue
        for line, text in hand_written(path.read_text()):
            pending = [p for f, p in PENDING if f == rel and p in text]
            found.add((rel, pending[0]) if pending else (f"{rel}:{line}", text))
    assert found == PENDING, "use maas_lab.hints.command for these (or update PENDING)"


def test_the_hand_written_walk_reads_f_strings_and_skips_docstrings():
    source = '''
"""Run `maas fsck` (a docstring: fine)."""
def f(name):
    """`maas logs NAME` in a docstring."""
    a = "plain `maas` mention, and maas fsck untyped"
    return f"see `maas logs {name}`", "or `%maas status`"
'''
    assert [line for line, _ in hand_written(source)] == [6, 6]


# ---------------------------------------------------------------------- command()


def test_command_builds_the_line():
    assert command("export", "minilm@1", to="onnx") == "maas export minilm@1 --to onnx"
    assert command("bundle import", "FILE", trust=True) == "maas bundle import FILE --trust"
    assert command("fsck", repair=False, verify=None) == "maas fsck"
    assert command("compress", "m@1", with_="prune", max_drop=["accuracy=0.01", "f1=0.02"]) == (
        "maas compress m@1 --with prune --max-drop accuracy=0.01 --max-drop f1=0.02"
    )
    assert command("scale", "srv", replicas=2) == "maas scale srv --replicas 2"


def test_command_quotes_what_needs_it_and_keeps_placeholders():
    assert command("search", "two words") == "maas search 'two words'"
    assert command("predict", "m", "it's") == "maas predict m 'it'\"'\"'s'"
    assert command("tag", "m@1", remove=("a b",)) == "maas tag m@1 --remove 'a b'"
    assert shlex.split(command("predict", "m", "$(rm -rf ~)"))[3] == "$(rm -rf ~)"
    assert command("serve", "NAME[@VERSION|@ALIAS]") == "maas serve NAME[@VERSION|@ALIAS]"
    assert command("predict", "words@1", "...") == "maas predict words@1 ..."


def test_prog_scope_sets_and_resets_the_prog():
    assert hints.PROG.get() == "maas" and typed() is None
    with prog_scope("%maas"):
        assert command("status") == "%maas status" and typed() == "%maas"
        with prog_scope("maas"):
            assert command("stop", "nb") == "maas stop nb" and typed() == "maas"
        assert typed() == "%maas"
    assert command("status") == "maas status" and typed() is None
    with pytest.raises(RuntimeError), prog_scope("%maas"):
        raise RuntimeError
    assert command("status") == "maas status" and typed() is None


def test_hints_imports_nothing_of_maas_lab():
    tree = ast.parse((ROOT / "maas_lab" / "hints.py").read_text())
    imported = [
        n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0
    ]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    assert not relative and not [m for m in imported if m.split(".")[0] == "maas_lab"]


# ---------------------------------------------------------------------- where it was typed


def test_server_hints_follow_where_the_command_was_typed():
    from maas_lab.serving import control

    in_python = control._next_steps("nb", ["words@1"], generated=True)
    assert "`server.status()`" in in_python and "`maas" not in in_python
    with prog_scope("%maas"):
        in_notebook = control._next_steps("nb", ["words@1"], generated=True)
    assert "`%maas predict words@1 ...`, `%maas status`, `%maas stop nb`" in in_notebook
    assert "`server = %maas serve ...`" in in_notebook
    with prog_scope("maas"):
        in_shell = control._next_steps("sh", ["words@1"], generated=False)
    assert in_shell == "Next: `maas predict words@1 ...`, `maas status`, `maas stop sh`."
