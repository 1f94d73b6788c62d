"""One option schema per command: the CLI's options and the API's defaults come from the
schemas in maas_lab.schemas, and plugin options are read by one parser, by their types."""

from __future__ import annotations

import inspect

import click
import pytest

from maas_lab import api, cli
from maas_lab.arguments import parse_words
from maas_lab.components import Param, Schema
from maas_lab.errors import UsageError
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
    assert schema.types() == {"tags": "str", "n": "int", "on": "bool"}
    assert schema.param("n").convert("4") == 4 and schema.param("tags").convert("a") == ["a"]
    assert schema.param("tags").cli_flag == "--tags"
    with pytest.raises(KeyError):
        schema.param("missing")
    with pytest.raises(UsageError, match="^n expects a int"):  # a Python call: its keyword
        schema.param("n").convert("four")
    with prog_scope("maas"), pytest.raises(UsageError, match="^--n expects a int"):
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
        parse_words(["--structured", "stray"], TYPES)
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
