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
        takes_any_words = [p.type for p in cmd.params if isinstance(p, click.Argument)] == [
            click.UNPROCESSED
        ]  # launch: TARGET, options and the script's words, any order
        starred = any(isinstance(a, ast.Starred) for a in call.args)
        if (starred and not takes_any_words) or any(k.arg is None for k in call.keywords):
            problems.append(f"{where}: *args/**options cannot be checked; name each one")
            continue
        if starred:  # words the command reads itself: the name is all there is to check
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


# ---------------------------------------------------------------------- option()


def test_option_is_the_flag_on_a_command_line_and_the_keyword_in_python():
    from maas_lab.hints import option

    assert option("max_drop") == "max_drop" and option("max_drop", 0.5) == "max_drop=0.5"
    assert option("data", "sklearn:digits") == "data='sklearn:digits'"
    assert option("allow_mismatch", True) == "allow_mismatch=True"
    assert option("from_torch", "FACTORY") == "from_torch=FACTORY"  # a placeholder is read
    assert option("allow_hosts", flag="--allow-host") == "allow_hosts"
    for prog in ("maas", "%maas"):
        with prog_scope(prog):
            assert option("max_drop") == "--max-drop"
            assert option("max_drop", 0.5) == "--max-drop 0.5"
            assert option("with_", "prune") == "--with prune"
            assert option("allow_mismatch", True) == "--allow-mismatch"
            assert option("data", "two words") == "--data 'two words'"
            assert option("from_torch", "FACTORY") == "--from-torch FACTORY"
            assert option("allow_hosts", "a.b", flag="--allow-host") == "--allow-host a.b"


def test_a_param_spells_itself_with_its_own_flag():
    from maas_lab.schemas import SERVE

    hosts = SERVE.param("allow_hosts")
    assert hosts.option() == "allow_hosts" and hosts.option("x") == "allow_hosts='x'"
    with prog_scope("maas"):
        assert hosts.option() == "--allow-host" and hosts.option("x") == "--allow-host x"
        assert SERVE.param("max_batch").option(4) == "--max-batch 4"


def test_one_error_reads_as_python_in_python_and_as_flags_on_a_command_line(
    maas_home, tiny_torch_model
):
    """The same bad value, refused by the same code (the prune plugin's range check; the
    core's type check), reads ``sparsity=1.5`` from the API and ``--sparsity 1.5`` from a
    command line, ``maas`` or ``%maas``."""
    from maas_lab import api, cli
    from maas_lab.errors import UsageError

    api.register(
        "tiny",
        from_torch=tiny_torch_model["factory"],
        config=tiny_torch_model["config"],
        weights=tiny_torch_model["weights"],
    )
    with pytest.raises(UsageError, match=r"^sparsity=1\.5: it must be in \(0, 1\)") as err:
        api.compress("tiny@1", "prune", sparsity=1.5)
    assert "e.g. sparsity=0.5." in str(err.value) and "--" not in str(err.value)
    with pytest.raises(UsageError, match=r"^sparsity expects a float, got 'lots'"):
        api.compress("tiny@1", "prune", sparsity="lots")
    for prog in ("maas", "%maas"):
        line = ["compress", "tiny@1", "--with", "prune", "--sparsity"]
        with pytest.raises(UsageError, match=r"^--sparsity 1\.5: it must be in \(0, 1\)") as err:
            cli.run([*line, "1.5"], prog_name=prog)
        assert "e.g. --sparsity 0.5." in str(err.value) and "sparsity=" not in str(err.value)
        with pytest.raises(UsageError, match=r"^--sparsity expects a float, got 'lots'"):
            cli.run([*line, "lots"], prog_name=prog)
    assert typed() is None  # nothing leaks out of cli.run


def test_a_server_names_its_options_as_it_was_started():
    """A server's answers ("start the server with a larger ...") name its options as the
    person who started it gave them: the prog is kept with the server's options."""
    from maas_lab.serving.server_wire import check_rows
    from maas_lab.serving.wire import ProtocolError

    with pytest.raises(ProtocolError, match=r"a larger max_rows\.$"):
        check_rows("x", 5, 4)
    with prog_scope("maas"), pytest.raises(ProtocolError, match=r"a larger --max-rows\.$"):
        check_rows("x", 5, 4)


# ---------------------------------------------------------------------- no flag by hand

# Files that spell flags themselves: the click commands' help (and the magic's), and the
# generator of the spellings.
SPELLS_FLAGS = {*SELF_DESCRIBING, "maas_lab/hints.py"}
# Keyword arguments whose text is help (shown by --help, the plugin table, a widget), or a
# flag's declared spelling, not a message: help=, description=, flag=.
HELP_KEYWORDS = {"help", "description", "flag"}
# Flags that may stand in a string outside those, by (file, flag), each with its reason. The
# test fails when one goes away (remove it here) or a new one appears.
ALLOWED_FLAGS: dict[tuple[str, str], str] = {
    **{
        ("plugins/maas_accelerate/__init__.py", flag): "accelerate launch's own argv"
        for flag in (
            "--config_file",
            "--multi_gpu",
            "--num_processes",
            "--num_machines",
            "--num_cpu_threads_per_process",
            "--mixed_precision",
            "--dynamo_backend",
            "--main_process_port",
            "--tee",
            "--role",
            "--machine_rank",
            "--main_process_ip",
            "--rdzv_conf",
            "--help",
        )
    },
    # (--config_file is also named in `accelerate config --config_file FILE` hints, and
    # --help in `accelerate launch --help`: accelerate's command lines, not ours)
    **{
        (f"maas_lab/serving/{f}.py", flag): "argv of maas_lab's own server processes"
        for f, flags in {
            "control": ("--root", "--name"),
            "engine": ("--root", "--name"),
            "supervisor": ("--root", "--name", "--fd", "--port"),
            "worker": ("--root", "--name", "--fd", "--port"),
        }.items()
        for flag in flags
    },
    ("plugins/maas_ray/__init__.py", "--head"): "`ray start --head`: Ray's command line",
    **{
        ("maas_lab/serving/inputs.py", flag): "`maas predict`'s input flags: the CLI's alone "
        "(api.predict takes the inputs themselves), and only the CLI calls predict_inputs"
        for flag in ("--json", "--array")
    },
}
# `var(--jp-error-color1)` in a panel's HTML is a CSS custom property, not a flag.
_FLAG = re.compile(r"(?<![\w-])(?<!var\()--[a-z][a-z0-9_-]*")


def _help_texts(tree: ast.AST) -> set[int]:
    """Nodes inside help=/description=/flag= keywords and Param(...)'s help (its fourth
    positional argument)."""
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        parts = [k.value for k in node.keywords if k.arg in HELP_KEYWORDS]
        f = node.func
        if (isinstance(f, ast.Name) and f.id == "Param") and len(node.args) >= 4:
            parts.append(node.args[3])
        found |= {id(n) for part in parts for n in ast.walk(part)}
    return found


def flags_by_hand(source: str) -> list[tuple[int, str]]:
    """(line, flag) of each flag spelled in a string outside docstrings and help texts: a
    constant (f-strings' constant parts included) holding ``--name``, and a flag put
    together in code, ``f"--{name}"`` or ``"--" + name``."""
    tree = ast.parse(source)
    skip = _docstrings(tree) | _help_texts(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [(node.lineno, m) for m in _FLAG.findall(node.value)]
        elif isinstance(node, ast.JoinedStr):
            for i, (a, b) in enumerate(zip(node.values, node.values[1:], strict=False)):
                # "--" right after a value ({x}--{y}) is glued to it: not a flag
                starts = r"(^|[^\w-])--$" if i == 0 else r"[^\w-]--$"
                if (
                    isinstance(a, ast.Constant)
                    and re.search(starts, a.value)
                    and isinstance(b, ast.FormattedValue)
                ):
                    found.append((node.lineno, "--{}"))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left = node.left
            if isinstance(left, ast.Constant) and isinstance(left.value, str):
                if re.search(r"(^|[^\w-])--$", left.value):
                    found.append((node.lineno, "--{}"))
    return found


def test_no_message_spells_a_flag_by_hand():
    found: dict[tuple[str, str], int] = {}
    for path in _sources():
        rel = str(path.relative_to(ROOT))
        if rel in SPELLS_FLAGS:
            continue
        for line, flag in flags_by_hand(path.read_text()):
            found.setdefault((rel, flag), line)
    unexpected = {f"{f}:{line}: {flag}" for (f, flag), line in found.items()} - {
        f"{f}:{found[f, flag]}: {flag}" for f, flag in ALLOWED_FLAGS if (f, flag) in found
    }
    assert not unexpected, "name options with maas_lab.hints.option:\n" + "\n".join(
        sorted(unexpected)
    )
    gone = set(ALLOWED_FLAGS) - set(found)
    assert not gone, f"no longer found, remove from ALLOWED_FLAGS: {sorted(gone)}"


def test_the_flag_walk_finds_flags_and_skips_help_docstrings_and_other_dashes():
    source = '''
"""`--docstring` is fine."""
import click
from maas_lab.components import Param

P = Param("n", "int", 1, "Like --data (help).")
Q = Param("hosts", help="see --allow-host", flag="--allow-host")

@click.option("--opt", help="Use --other.")
def f(name, x):
    """--in-a-docstring."""
    a = "Pass --max-drop to keep it."
    b = f"--{name} must be positive, got {x}."
    c = "--" + name
    d = f"pass {x} --atol, or --min-cosine"
    e = "a -- b, x--y, and the `--` that ends options"
    g = f"{x}--{name}"
    return a, b, c, d, e, g
'''
    assert sorted(flags_by_hand(source)) == [
        (9, "--opt"),  # a click option outside the CLI's own modules is a flag by hand too
        (12, "--max-drop"),
        (13, "--{}"),
        (14, "--{}"),
        (15, "--atol"),
        (15, "--min-cosine"),
    ]


def test_every_option_named_is_a_real_option_in_both_spellings():
    """Each ``option(NAME)`` with a constant name, in the source, names a parameter the
    Python API takes (a function of maas_lab.api, a schema's or a component's param) and,
    by its flag, an option a command takes (a click option, a component's, launch's own)."""
    import inspect

    from maas_lab import api, cli, schemas
    from maas_lab.components import Schema
    from maas_lab.hints import flag_for
    from maas_lab.plugins import get_plugins

    comps = [c for kind in get_plugins().components.values() for c in kind.values()]
    python = {p.name for c in comps for p in c.params}
    python |= {p.name for s in vars(schemas).values() if isinstance(s, Schema) for p in s}
    for name, fn in vars(api).items():
        if inspect.isfunction(fn) and not name.startswith("_"):
            python |= set(inspect.signature(fn).parameters)
    flags = {p.cli_flag for c in comps for p in c.params} | {flag_for(k) for k in cli._OWN}

    def walk(group: click.Group):
        for cmd in group.commands.values():
            if isinstance(cmd, click.Group):
                walk(cmd)
            for p in cmd.params:
                if isinstance(p, click.Option):
                    flags.update(p.opts, p.secondary_opts)

    walk(cli.cli)
    problems, calls = [], 0
    for path in _sources():
        tree = ast.parse(path.read_text())
        for call in _option_calls(tree):
            first = call.args[0] if call.args else None
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            calls += 1
            given = {k.arg: k.value for k in call.keywords}
            flag = given["flag"].value if "flag" in given else flag_for(first.value)
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            if first.value not in python:
                problems.append(f"{where}: no Python parameter is called {first.value!r}")
            if flag not in flags:
                problems.append(f"{where}: no command takes {flag}")
    assert not problems, "\n".join(problems)
    assert calls >= 80  # the walk finds them


def _option_calls(tree: ast.AST) -> list[ast.Call]:
    """Calls of hints.option: ``option(...)`` where it was imported from a hints module."""
    names = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] == "hints"
        for alias in node.names
        if alias.name == "option"
    }
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names
    ]
