"""The shell command and the notebook magics: same commands, same results, short errors."""

import json
import os
import subprocess
import sys

import pytest

from maas_lab import api
from maas_lab.cli import cli, run
from maas_lab.errors import MaasError, NotFoundError, UsageError
from maas_lab.results import Report, Table


def maas(*args, env=None, check=True):
    """Run the real `maas` console script in a subprocess."""
    exe = os.path.join(os.path.dirname(sys.executable), "maas")
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, env=env or dict(os.environ), check=check
    )


def test_shell_session(maas_home, tiny_torch_model):
    config = json.dumps(tiny_torch_model["config"])
    out = maas(
        "register",
        "digits-mlp",
        "--from-torch",
        "maas_lab.zoo:mlp",
        "--config",
        config,
        "--weights",
        str(tiny_torch_model["weights"]),
        "--task",
        "classification",
        "--tag",
        "digits",
        "--metric",
        "accuracy=0.9",
    ).stdout
    assert out.startswith("digits-mlp@1\n") and "model.safetensors  weights" in out
    assert "digits-mlp  classification  1" in maas("list").stdout
    assert "digits-mlp@prod -> digits-mlp@1" in maas("alias", "digits-mlp", "prod", "1").stdout
    shown = maas("show", "digits-mlp@prod").stdout
    assert "aliases  prod" in shown and "accuracy  0.9" in shown
    assert "digits-mlp@1" in maas("search", "digits").stdout
    assert "#1, highest first" in maas("recommend", "--sort", "accuracy").stdout
    failed = maas("show", "digits-mpl", check=False)
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.strip() == (
        "Not found: No model named 'digits-mpl'. Did you mean 'digits-mlp'?"
    )
    bad_option = maas("list", "--bogus", check=False)
    assert bad_option.returncode == 1 and bad_option.stderr == (
        "Usage error: No such option '--bogus' (see `maas list --help`).\n"
    )
    # --root beats MAAS_LAB_HOME, per call.
    other = maas_home.parent / "other"
    assert "0 model(s)" in maas("--root", str(other), "list").stdout


def all_commands(group=cli, prefix=()):
    for name, command in group.commands.items():
        path = (*prefix, name)
        yield path, command
        if hasattr(command, "commands"):
            yield from all_commands(command, path)


@pytest.mark.parametrize("path", [p for p, _ in all_commands()], ids=" ".join)
def test_every_subcommand_has_help(path, capsys):
    assert run([*path, "--help"]) is None
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: maas {' '.join(path)}")
    command = dict(all_commands())[path]
    assert command.help and len(command.help.strip()) > 10


def test_magics_return_rich_objects(maas_shell, tiny_torch_model):
    config = json.dumps(tiny_torch_model["config"])
    weights = tiny_torch_model["weights"]
    report = maas_shell.run_line_magic(
        "maas",
        f"register digits-mlp --from-torch maas_lab.zoo:mlp --config '{config}' "
        f"--weights {weights} --task classification",
    )
    assert isinstance(report, Report) and report["ref"] == "digits-mlp@1"
    # %%maas: the cell continues the command line, one option per line, with comments.
    cell = f"""
    --from-torch maas_lab.zoo:mlp   # the architecture
    --config '{config}'
    --weights {weights}
    --tag reviewed=yes
    """
    second = maas_shell.run_cell_magic("maas", "register digits-mlp", cell)
    assert second["ref"] == "digits-mlp@2" and second["tags"] == {"reviewed": "yes"}
    rows = maas_shell.run_line_magic("maas", "list")
    assert isinstance(rows, Table) and rows[0]["versions"] == 2
    html = rows._repr_html_()
    assert html.startswith("<h4>1 model(s)") and "<td>digits-mlp</td>" in html
    assert "{" not in str(rows)  # a table, not a dict dump
    assert "<h4>Files</h4>" in report._repr_html_()


def test_magic_errors_are_exceptions_with_short_messages(maas_shell, capsys):
    with pytest.raises(NotFoundError) as err:
        maas_shell.run_line_magic("maas", "show nothing-here")
    assert err.value._render_traceback_() == [
        "\x1b[31mNot found:\x1b[0m No model named 'nothing-here'."
    ]
    with pytest.raises(UsageError, match=r"No such option '--nope' \(see `%maas list --help`\)\."):
        maas_shell.run_line_magic("maas", "list --nope")
    with pytest.raises(UsageError, match="Cannot parse the command line"):
        maas_shell.run_line_magic("maas", "search 'unclosed")
    # A failing magic fails the cell: what nbval and a person running the notebook see.
    result = maas_shell.run_cell("%maas show nothing-here")
    assert isinstance(result.error_in_exec, MaasError)


def test_magic_help_prints_and_returns_nothing(maas_shell, capsys):
    assert maas_shell.run_line_magic("maas", "alias --help") is None
    assert "Usage: %maas alias [OPTIONS] NAME ALIAS [VERSION]" in capsys.readouterr().out
    assert maas_shell.run_line_magic("maas", "") is None
    assert "Commands:" in capsys.readouterr().out


def test_load_ext_is_light():
    code = (
        "import sys, IPython\n"
        "shell = IPython.core.interactiveshell.InteractiveShell.instance()\n"
        "shell.run_line_magic('load_ext', 'maas_lab')\n"
        "shell.run_line_magic('maas', 'plugins')\n"
        "heavy = {'torch', 'onnxruntime', 'transformers', 'accelerate', 'onnx'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_python_api_is_reachable_from_the_package(maas_home):
    import maas_lab

    assert maas_lab.list_models is api.list_models
    assert maas_lab.api.registry().root == maas_home
    with pytest.raises(AttributeError):
        maas_lab.no_such_function  # noqa: B018


def test_cell_body_expands_user_variables_only(maas_shell, tiny_torch_model):
    # Names the magic itself uses inside must not shadow the user's variables.
    maas_shell.user_ns.update(line="mine", args="also-mine", cell="c", weights="w")
    cell = f"""
    --from-torch maas_lab.zoo:mlp
    --config '{{json}}'
    --weights {tiny_torch_model["weights"]}
    --tag who={{line}} --tag what={{args}}
    """
    maas_shell.user_ns["json"] = json.dumps(tiny_torch_model["config"])
    report = maas_shell.run_cell_magic("maas", "register digits-mlp", cell)
    assert report["tags"] == {"who": "mine", "what": "also-mine"}


def test_search_scores_rank_and_read_as_relevance(maas_home, tiny_torch_model):
    """`search embedding` over models that all mention it showed score 0 on every row
    (bm25 near zero when a word is in every document): scores must tell the rows apart,
    in the order shown, the best as 1."""

    def register(name, **kwargs):
        api.register(
            name,
            from_torch=tiny_torch_model["factory"],
            config=json.dumps(tiny_torch_model["config"]),
            weights=tiny_torch_model["weights"],
            **kwargs,
        )

    register("minilm-embedding", task="sentence-embedding", description="sentence embedding")
    register("e5", task="sentence-embedding", description="an embedding model")
    register("bge", task="sentence-embedding", description="text vectors")
    hits = api.search("embedding")
    scores = [h["score"] for h in hits]
    assert [h["ref"] for h in hits][0] == "minilm-embedding@1" and len(hits) == 3
    assert scores[0] == 1.0 and all(0 < s for s in scores)
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)
