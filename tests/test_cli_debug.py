"""The CLI's error boundary: an unexpected exception is one line naming it (exit 3) with a pointer to
`--debug`; `--debug`, before or after the command, shows the traceback of any error."""

from __future__ import annotations

import pytest

import inertia.plugin_listing
from inertia.cli import main

INTERNAL = "error: internal error: ValueError: no width\\nmore (rerun with --debug for the traceback)\n"


@pytest.fixture
def broken_listing(monkeypatch):
    """`inertia plugins` raising what a bug in inertia would: not an InertiaError, from no plugin."""
    def describe_registry(registry):
        raise ValueError("no width\nmore")

    monkeypatch.setattr(inertia.plugin_listing, "describe_registry", describe_registry)


def test_an_unexpected_exception_is_one_line_with_exit_3(broken_listing, capsys):
    assert main(["plugins"]) == 3
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", INTERNAL)


@pytest.mark.parametrize("argv", [["--debug", "plugins"], ["plugins", "--debug"]], ids=["before", "after"])
def test_debug_shows_the_traceback_then_the_line(broken_listing, capsys, argv):
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):\n") and "in describe_registry" in err
    assert err.endswith("\nerror: internal error: ValueError: no width\\nmore\n")


def test_debug_shows_the_traceback_of_a_user_error_too(capsys):
    assert main(["run", "--backbone", "nope"]) == 2
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and line.startswith("error: ")
    assert main(["--debug", "run", "--backbone", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):\n") and err.endswith("\n" + line)


def test_debug_given_before_the_command_is_not_reset_by_it():
    from inertia.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["--debug", "sweep", "x.yaml"]).debug is True
    assert parser.parse_args(["sweep", "x.yaml", "--debug"]).debug is True
    assert parser.parse_args(["testbed", "evaluate", "--debug"]).debug is True
    assert parser.parse_args(["sweep", "x.yaml"]).debug is False
