"""The console script's launcher (cli/launch.py): a Ctrl-C while shelf is still being
imported ends as one later does. Real Ctrl-Cs land there only by chance (the import takes
0.6 to 1 s, after Python's own 0.2 s start-up), so the interrupt is raised by the import
itself here: a stand-in for the signal, which can't be aimed at that moment for real."""

from __future__ import annotations

import builtins
import sys
from typing import Any

import pytest

from cli import launch


def test_ctrl_c_during_the_import_is_one_line_and_130(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real_import = builtins.__import__

    def interrupted(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "cli.main":
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "cli.main", raising=False)
    monkeypatch.setattr(builtins, "__import__", interrupted)
    with pytest.raises(SystemExit) as ended:
        launch.run()
    assert ended.value.code == 130
    assert capsys.readouterr().err == "shelf: interrupted\n"


def test_the_command_runs_and_its_exit_code_is_the_processes(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["shelf", "--help"])
    with pytest.raises(SystemExit) as ended:
        launch.run()
    assert ended.value.code == 0
    assert capsys.readouterr().out.strip()
