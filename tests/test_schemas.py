"""One option schema per command: the CLI's options and the API's defaults come from the
schemas in maas_lab.schemas, and plugin options are read by one parser, by their types."""

from __future__ import annotations

import inspect

import click
import pytest

from maas_lab import api, cli
from maas_lab.arguments import parse_words
from maas_lab.components import Param, Schema
from maas_lab.errors import MaasError, UsageError
from maas_lab.hints import prog_scope
from maas_lab.schemas import COMPARE, COMPRESS, EXPORT, SERVE

COMMANDS = [
    (SERVE, api.serve, "serve"),
    (COMPRESS, api.compress, "compress"),
    (COMPARE, api.compare, "compare"),
    (EXPORT, api.export, "export"),
]


@pytest.mark.parametrize(("schema", "function", "command"), COMMANDS)
def test_the_api_and_the_cli_take_their_defaults_from_the_schema(schema, function, command):
    signature = inspect.signature(function)
    options = {p.name: p for p in cli.cli.commands[command].params if isinstance(p, click.Option)}
    for param in schema:
        assert signature.parameters[param.name].default == schema.defaults()[param.name], param
        option = options[param.name]
        assert param.cli_flag in option.opts and option.help == param.help
        if param.type == "bool":
            assert option.default is bool(param.default) and option.is_flag
        elif param.multiple:
            assert option.multiple and not option.default
        else:
            assert option.default == param.default


def test_the_serving_layer_has_the_same_defaults_as_the_api():
    from maas_lab.serving import control

    signature = inspect.signature(control.serve)
    for param in SERVE:
        default = signature.parameters[param.name].default
        assert default == SERVE.defaults()[param.name] or (param.multiple and not default), param


def test_a_generated_option_parses_as_declared():
    ctx = cli.cli.commands["serve"].make_context(
        "serve", ["m@1", "--port", "0", "--allow-host", "a", "--allow-host", "b"]
    )
    assert ctx.params["port"] == 0 and ctx.params["allow_hosts"] == ("a", "b")
    assert ctx.params["max_batch"] == SERVE.param("max_batch").default
    ctx = cli.cli.commands["compare"].make_context("compare", ["a@1", "--no-log"])
    assert ctx.params["log"] is False and ctx.params["budget_s"] == 2.0
    with pytest.raises(click.BadParameter):
        cli.cli.commands["serve"].make_context("serve", ["m@1", "--port", "eighty"])


def test_a_schema_finds_its_params_and_converts_repeated_ones():
    schema = Schema(Param("tags", multiple=True), Param("n", "int", 3), Param("on", "bool", True))
    assert schema.defaults() == {"tags": (), "n": 3, "on": True}
    assert schema.param("n").convert("4") == 4 and schema.param("tags").convert("a") == ["a"]
    assert schema.param("tags").cli_flag == "--tags"
    with pytest.raises(KeyError):
        schema.param("missing")
    with pytest.raises(UsageError, match="^n expects an int"):  # a Python call: its keyword
        schema.param("n").convert("four")
    with prog_scope("maas"), pytest.raises(UsageError, match="^--n expects an int"):
        schema.param("n").convert("four")


TYPES = {"sparsity": "float", "structured": "bool", "name": "str"}


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["--sparsity", "0.5"], {"sparsity": "0.5"}),
        (["--sparsity=0.5", "--structured"], {"sparsity": "0.5", "structured": "true"}),
        (["--structured", "false", "--name", "x"], {"structured": "false", "name": "x"}),
        (["--structured", "--name", "-1"], {"structured": "true", "name": "-1"}),
    ],
)
def test_plugin_options_are_read_by_their_types(words, expected):
    assert parse_words(words, TYPES) == (expected, [], [])


@pytest.fixture
def typed_words():
    """parse_words reads a command line: cli.run has set the prog around it."""
    with prog_scope("maas"):
        yield


def test_plugin_option_mistakes_are_named(typed_words):
    with pytest.raises(UsageError, match=r"No option --spars\. Options: --name, --sparsity"):
        parse_words(["--spars", "0.5"], TYPES)
    with pytest.raises(UsageError, match="--sparsity needs a value"):
        parse_words(["--sparsity"], TYPES)
    with pytest.raises(UsageError, match="--sparsity needs a value"):
        parse_words(["--sparsity", "--structured"], TYPES)
    with pytest.raises(UsageError, match="Unexpected argument 'stray'"):
        parse_words(["--name", "x", "stray"], TYPES)
    with pytest.raises(UsageError, match="Unexpected `--`"):
        parse_words(["--", "x"], TYPES)


def test_positionals_and_words_after_dashes():
    assert parse_words(
        ["t.py", "--name", "a", "--", "--lr", "1"], TYPES, positionals=1, after_dashes=True
    ) == ({"name": "a"}, ["t.py"], ["--lr", "1"])
    # without a schema (an unknown compressor, which the API then names), a bare option is
    # a flag and anything else a value
    assert parse_words(["--a", "--b", "2", "--c"], None) == (
        {"a": "true", "b": "2", "c": "true"},
        [],
        [],
    )


def test_distill_is_compress_with_the_distill_compressor():
    """`maas distill` has no option of its own beyond --teacher: the rest is compress's and
    the distill compressor's, so the two spellings cannot differ."""
    distill, compress = cli.cli.commands["distill"], cli.cli.commands["compress"]
    own = {p.name for p in distill.params} - {p.name for p in compress.params}
    assert own == {"teacher"}
    with click.Context(distill) as ctx:
        epilog = distill.get_help(ctx)
    for flag in ("--student CODE", "--epochs INT", "--alpha FLOAT", "--processes INT"):
        assert flag in epilog
    with pytest.raises(UsageError, match=r"Compressor 'distill' has no option --epoch\b"):
        cli.run(["distill", "--teacher", "m@1", "--student", "x:y", "--epoch", "3"])


def test_yes_no_options_turn_off_and_nothing_is_given_twice():
    with prog_scope("maas"):
        assert parse_words(["--no-structured"], TYPES) == ({"structured": "false"}, [], [])
        with pytest.raises(UsageError, match=r"--structured expects true or false, got 'maybe'"):
            parse_words(["--structured", "maybe"], TYPES)
        with pytest.raises(UsageError, match=r"--sparsity is given twice"):
            parse_words(["--sparsity", "0.5", "--sparsity=0.6"], TYPES)
        with pytest.raises(UsageError, match=r"Unknown option '-x': options are spelled --name"):
            parse_words(["-x"], TYPES)
        with pytest.raises(
            UsageError,
            match=r"--name needs a value \(one that starts with two dashes goes after an equals",
        ):
            parse_words(["--name", "--a b"], TYPES)
        assert parse_words(["--name=--a b"], TYPES)[0] == {"name": "--a b"}
        assert parse_words(["--name", "-1.5e3"], TYPES)[0] == {"name": "-1.5e3"}


def test_the_api_checks_core_options_as_the_cli_does(maas_home):
    """From Python, a core option's value is converted and checked by its schema, as the
    CLI's is: no TypeError from deep below, and 'no' is not true."""
    assert COMPARE.convert({"log": "no", "budget_s": "1.5"}) == {"log": False, "budget_s": 1.5}
    with pytest.raises(UsageError, match=r"^port expects an int, got 'abc'"):
        api.serve("m@1", port="abc")
    with pytest.raises(UsageError, match=r"^atol expects a float"):
        api.export("m@1", "onnx", atol="abc")
    with pytest.raises(UsageError, match=r"^budget_s=0\.0: give the seconds"):
        api.compare("m@1", budget_s=0)
    with pytest.raises(UsageError, match=r"^limit=0: list at least 1 job"):
        api.jobs(limit=0)
    with pytest.raises(UsageError, match="no job has so large a number"):
        api.job("99999999999999999999999")
    with pytest.raises(UsageError, match="no version has so large a number"):
        api.show("m@99999999999999999999999")


def test_the_serve_token_comes_from_the_environment_in_python_too(monkeypatch):
    monkeypatch.setenv("MAAS_SERVE_TOKEN", "from-env")
    assert api._token(None) == "from-env" and api._token("given") == "given"
    monkeypatch.delenv("MAAS_SERVE_TOKEN")
    assert api._token(None) is None


def test_words_after_dashes_never_reach_a_plugin():
    """click drops a `--`; export, compress and distill refuse it rather than read what
    follows as options (`-- --lr 5` trained at lr 5)."""
    for args in (
        ["export", "m@1", "--to", "onnx", "--", "--opset", "17"],
        ["compress", "m@1", "--with", "prune", "--", "--sparsity", "0.5"],
        ["distill", "--teacher", "m@1", "--", "--lr", "5"],
    ):
        with pytest.raises(UsageError, match=r"Unexpected `--`"):
            cli.run(args)


def test_a_plugin_option_typo_is_matched_against_every_option():
    with pytest.raises(UsageError, match=r"has no option --max_drop\. Did you mean --max-drop\?"):
        cli.run(["compress", "m@1", "--with", "prune", "--max_drop", "cosine=0.1"])
    with pytest.raises(UsageError, match=r"has no option --sparsty\. Did you mean --sparsity\?"):
        cli.run(["compress", "m@1", "--with", "prune", "--sparsty", "0.5"])


def test_an_unknown_launcher_is_named_wherever_it_stands(maas_home):
    with pytest.raises(MaasError, match="nope"):
        cli.run(["launch", "train.py", "--processes", "2", "--launcher", "nope"])
