"""One command tree (wsml.cli): every command has one guard, ``--debug`` before or after it, exit code 2 with one
line on a user error, 130 on Ctrl-C, and one parser of ``key=value`` items."""

from __future__ import annotations

import signal

import pytest

from tests.conftest import cli_error
from wsml.cli import USER_ERRORS, build_parser, main
from wsml.config import ConfigError, parse_assignment

COMMANDS = ("prepare", "train", "eval", "predict", "report", "analyze", "find-missing", "review", "bench")


def _bad_argv(command: str, tmp) -> list:
    """A user error for each command: a missing data set, file or run folder."""
    return {"prepare": ["prepare", "imagenet"], "train": ["train", str(tmp / "nope.yaml")],
            "eval": ["eval", str(tmp)], "predict": ["predict", str(tmp), str(tmp / "nope.png")],
            "report": ["report", str(tmp / "nope")], "analyze": ["analyze", "memorization", str(tmp)],
            "find-missing": ["find-missing", str(tmp)], "review": ["review", str(tmp), "--export-only"],
            "bench": ["bench", str(tmp / "nope.yaml")]}[command]


def test_the_tree_has_every_command_with_help(capsys):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert tuple(sub.choices) == ("prepare", "train", "eval", "predict", "report", "analyze", "find-missing",
                                  "review", "bench")
    for command in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        out = capsys.readouterr().out
        assert e.value.code == 0 and out.startswith(f"usage: wsml {command}") and "--debug" in out, command


@pytest.mark.parametrize("command", COMMANDS)
def test_one_guard_and_debug_anywhere(command, tmp_path, capsys):
    argv = _bad_argv(command, tmp_path)
    cli_error(argv, capsys)  # exit code 2, one line `wsml: error: ...`
    for debug_argv in (["--debug", *argv], [*argv, "--debug"]):  # --debug: the traceback, before or after
        with pytest.raises(USER_ERRORS):
            main(debug_argv)
        capsys.readouterr()


def _ctrl_c(*args, **kwargs):
    signal.raise_signal(signal.SIGINT)  # a real SIGINT to this process, as Ctrl-C sends
    raise AssertionError("SIGINT did not interrupt")


@pytest.mark.parametrize("command, target", [("bench", "wsml.bench.grid.run_grid"),
                                             ("find-missing", "wsml.tools.find_missing.find_missing"),
                                             ("analyze", "wsml.analysis.memorization.memorization_summary")])
def test_ctrl_c_exits_130(command, target, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(target, _ctrl_c)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)  # also when the suite runs with SIGINT ignored
    try:
        (tmp_path / "c.yaml").write_text("train: {epochs: 1}\n")
        (tmp_path / "g.yaml").write_text("name: g\nconfig: c.yaml\nmethods: {an: [loss.name=an]}\n")
        argv = {"bench": ["bench", str(tmp_path / "g.yaml"), "--results", str(tmp_path)],
                "find-missing": ["find-missing", str(tmp_path)], "analyze": ["analyze", "memorization", str(tmp_path)]}
        assert main(argv[command]) == 130
    finally:
        signal.signal(signal.SIGINT, old)


def test_key_value_items_have_one_parser(tmp_path, capsys):
    assert parse_assignment("optim.lr=0.001") == ("optim.lr", 0.001) and parse_assignment("a=off") == ("a", False)
    assert parse_assignment("run.name=a=b") == ("run.name", "a=b") and parse_assignment("run.name=") == ("run.name", "")
    with pytest.raises(ConfigError, match=r"option 'seed' is not of the form key=value \(e.g. num_pos=1\)"):
        parse_assignment("seed", "option", "num_pos=1")
    # the same item, the same message from every command that takes key=value items (also after its options)
    assert cli_error(["train", "train.epochs=1", "=2"], capsys).endswith("override '=2': empty key\n")
    assert cli_error(["prepare", "fashion-mosaic", "--out", str(tmp_path), "=2"], capsys).endswith(
        "option '=2': empty key\n")
    err = cli_error(["analyze", "sweep", "--param", "a", "--values", "1", "--out", str(tmp_path / "s"),
                     "--method", "M:=2"], capsys)
    assert err.endswith("method 'M': override '=2': empty key\n")
    (tmp_path / "c.yaml").write_text("train: {epochs: 1}\n")
    (tmp_path / "g.yaml").write_text("name: g\nconfig: c.yaml\nmethods: {an: ['=2']}\n")
    assert cli_error(["bench", str(tmp_path / "g.yaml")], capsys).endswith("methods.an: override '=2': empty key\n")
    with pytest.raises(SystemExit):  # a command without key=value items rejects them
        main(["eval", str(tmp_path), "a=1"])
    assert "unrecognized arguments: a=1" in capsys.readouterr().err


@pytest.mark.slow  # starts another process
def test_output_piped_into_head_stops_quietly(tmp_path):
    """`wsml … | head`: the closed pipe ends the command with 141 and no traceback or error line."""
    import subprocess
    import sys

    script = ("import argparse, sys\nfrom wsml.cli._guard import guarded\n"
              "def spam(args):\n    for _ in range(100000):\n        print('x' * 50)\n    return 0\n"
              "sys.exit(guarded(spam, argparse.Namespace(debug=False)))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == "", err
