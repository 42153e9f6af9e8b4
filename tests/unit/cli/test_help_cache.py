"""A help request is answered from typer's kept rendering only under the conditions typer
rendered it in (fhir_cart.cli.help_cache): the same arguments, environment, terminal and
code. The process tests compare the kept text with typer's live rendering (cache off) for
several widths and colour settings, on a pipe and on a terminal."""

from __future__ import annotations

import io
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from collections.abc import Sequence
from fcntl import ioctl
from pathlib import Path

import pytest

import fhir_cart
from fhir_cart.cli import help_cache
from fhir_cart.cli.help_cache import (
    Tee,
    answer_help,
    help_key,
    is_help_request,
    read_help,
    stamps,
    write_help,
)

SRC = Path(fhir_cart.__file__).resolve().parents[1]
_PROGRAM = "import sys; sys.argv[0] = 'fhir-cart'\nfrom fhir_cart.cli import entry\nentry()"


def test_only_command_names_then_help_is_a_help_request() -> None:
    assert is_help_request(["--help"])
    assert is_help_request(["registry", "build", "--help"])
    assert not is_help_request([])
    assert not is_help_request(["map", "--out", "--help"])  # --help is --out's value there
    assert not is_help_request(["map", "study.csv", "--help"])
    assert not is_help_request(["--help", "map"])
    assert not is_help_request(["--version"])
    assert not is_help_request(["Map", "--help"])
    assert not is_help_request(["-x", "--help"])


def _key(env: dict[str, str], terminal: Sequence[object] = ((80, 24), None, None)) -> str:
    return help_key(["--help"], ["fhir-cart", None, None], env, terminal)


def test_the_key_changes_with_what_the_rendering_reads_and_not_with_the_folder() -> None:
    base = {"TERM": "xterm", "COLUMNS": "80", "PWD": "/a"}
    assert _key(base) == _key({**base, "PWD": "/b", "OLDPWD": "/c", "SHLVL": "3", "_": "x"})
    assert _key(base) != _key({**base, "COLUMNS": "81"})
    assert _key(base) != _key({**base, "NO_COLOR": "1"})
    assert _key(base) != _key({**base, "FHIR_CART_ANYTHING": "1"})  # any variable counts
    assert _key(base) != _key(base, ((100, 24), None, None))
    assert _key(base) != help_key(["map", "--help"], ["fhir-cart", None, None], base, [])


def test_a_kept_rendering_is_read_back_while_its_code_is_unchanged(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text("x = 1\n")
    folder = tmp_path / "help"
    text = "Usage: fhir-cart\n\u2500 a box \u256d\n\n"
    write_help(folder, "k1", stamps([str(module)]), text)
    assert read_help(folder, "k1") == text
    assert read_help(folder, "k2") is None
    module.write_text("x = 22\n")  # the code that rendered it changed: typer renders anew
    assert read_help(folder, "k1") is None
    write_help(folder, "k1", stamps([str(module)]), text)
    module.unlink()
    assert read_help(folder, "k1") is None


def test_a_file_that_is_not_a_kept_rendering_of_that_key_is_not_used(tmp_path: Path) -> None:
    folder = tmp_path / "help"
    write_help(folder, "k1", [], "help\n")
    (folder / "k2.txt").write_bytes((folder / "k1.txt").read_bytes())  # another key's file
    assert read_help(folder, "k2") is None
    (folder / "k3.txt").write_text("fhir-cart help v1 k3\nnot a number\nhelp\n")
    assert read_help(folder, "k3") is None
    (folder / "k4.txt").write_bytes(b"fhir-cart help v1 k4\n0\n\xff\xfe")
    assert read_help(folder, "k4") is None
    (folder / "k5.txt").write_text("fhir-cart help v1 k5\n2\n/a\t1\t2\n")  # cut short
    assert read_help(folder, "k5") is None


def test_only_the_newest_renderings_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(help_cache, "KEEP", 3)
    folder = tmp_path / "help"
    for n in range(5):
        write_help(folder, f"k{n}", [], f"help {n}\n")
        os.utime(folder / f"k{n}.txt", ns=(n * 10**9, n * 10**9))
    write_help(folder, "k5", [], "help 5\n")
    assert sorted(p.name for p in folder.glob("*.txt")) == ["k3.txt", "k4.txt", "k5.txt"]


def test_the_tee_keeps_what_it_writes_through_and_refuses_bytes() -> None:
    target = io.StringIO()
    tee = Tee(target)  # type: ignore[arg-type]
    tee.write("a")
    tee.writelines(["b", "c"])
    with pytest.raises(TypeError):  # click probes a stream with bytes
        tee.write(b"")  # type: ignore[arg-type]
    assert tee.text() == target.getvalue() == "abc"
    assert not hasattr(tee, "buffer")


def _answer(run: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("FHIR_CART_HELP_CACHE", "on")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return answer_help(["--help"], run)  # type: ignore[arg-type]


def test_a_rendering_is_kept_and_served_without_running_typer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[list[str]] = []

    def run(argv: list[str]) -> int:
        calls.append(argv)
        sys.stdout.write("Usage: fhir-cart\n")
        return 0

    assert _answer(run, tmp_path, monkeypatch) == 0
    assert _answer(run, tmp_path, monkeypatch) == 0
    assert calls == [["--help"]]
    assert capsys.readouterr().out == "Usage: fhir-cart\n" * 2
    monkeypatch.setenv("COLUMNS", "61")  # other conditions: typer renders
    assert _answer(run, tmp_path, monkeypatch) == 0
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("code", "stderr"), [(2, ""), (0, "warning\n")], ids=["exit code 2", "wrote to stderr"]
)
def test_a_failed_or_noisy_rendering_is_not_kept(
    code: int,
    stderr: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def run(argv: list[str]) -> int:
        sys.stdout.write("Usage\n")
        sys.stderr.write(stderr)
        return code

    assert _answer(run, tmp_path, monkeypatch) == code
    assert _answer(run, tmp_path, monkeypatch) == code
    assert capsys.readouterr().out == "Usage\n" * 2  # typer ran both times
    assert not list(tmp_path.rglob("*.txt"))


def test_an_unwritable_cache_folder_still_shows_the_help(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")

    def run(argv: list[str]) -> int:
        sys.stdout.write("Usage\n")
        return 0

    assert _answer(run, blocker, monkeypatch) == 0
    assert capsys.readouterr().out == "Usage\n"


def test_off_turns_the_cache_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert help_cache.cache_folder({"FHIR_CART_HELP_CACHE": "off", "HOME": "/h"}) is None
    assert help_cache.cache_folder({"HOME": "/h"}) == "/h/.cache/fhir-cart/help"
    assert help_cache.cache_folder({"XDG_CACHE_HOME": "/x"}) == "/x/fhir-cart/help"
    assert help_cache.cache_folder({}) is None  # no home: nothing kept


def _env(tmp_path: Path, cache: bool, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TERMINAL_WIDTH", "TERM")
    }
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    env["FHIR_CART_HELP_CACHE"] = "on" if cache else "off"
    return env


def _run(argv: Sequence[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _PROGRAM, *argv], capture_output=True, text=True, env=env
    )


CONDITIONS = [
    {"COLUMNS": "60"},
    {"COLUMNS": "100", "NO_COLOR": "1"},
    {"COLUMNS": "140", "FORCE_COLOR": "1", "TERM": "xterm-256color"},
    {"TERMINAL_WIDTH": "72", "FORCE_COLOR": "1"},
]


@pytest.mark.slow  # about 20 processes that render with typer
@pytest.mark.parametrize("argv", [["--help"], ["registry", "build", "--help"]], ids=" ".join)
def test_the_kept_help_is_what_typer_renders_under_each_condition(
    argv: list[str], tmp_path: Path
) -> None:
    folder = tmp_path / "xdg" / "fhir-cart" / "help"
    shown: set[str] = set()
    for n, condition in enumerate(CONDITIONS, start=1):
        live = _run(argv, _env(tmp_path, False, **condition))
        first = _run(argv, _env(tmp_path, True, **condition))  # rendered by typer, kept
        again = _run(argv, _env(tmp_path, True, **condition))  # the kept copy
        assert live.returncode == first.returncode == again.returncode == 0
        assert live.stdout == first.stdout == again.stdout, condition
        assert len(list(folder.glob("*.txt"))) == n  # one rendering per condition
        shown.add(live.stdout)
    assert len(shown) == len(CONDITIONS)  # the conditions do change the rendering
    # the kept copy is what was served: change it and the change shows
    (kept,) = [p for p in folder.glob("*.txt") if p.read_text().endswith(again.stdout)]
    kept.write_text(kept.read_text().replace("Usage:", "Usage!"))
    assert "Usage!" in _run(argv, _env(tmp_path, True, **CONDITIONS[-1])).stdout


@pytest.mark.slow
def test_a_failed_help_request_is_not_kept(tmp_path: Path) -> None:
    ran = _run(["nosuch", "--help"], _env(tmp_path, True))
    assert ran.returncode == 2
    assert "No such command" in ran.stderr
    assert not list(tmp_path.rglob("*.txt"))


def _on_a_terminal(argv: Sequence[str], env: dict[str, str], columns: int) -> bytes:
    """What the program writes to a terminal of ``columns`` columns (a pseudo-terminal)."""
    leader, follower = pty.openpty()
    ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-c", _PROGRAM, *argv],
        stdin=follower,
        stdout=follower,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    os.close(follower)
    out = bytearray()
    while True:
        ready, _, _ = select.select([leader], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the program ended and closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert process.wait(30) == 0
    return bytes(out)


@pytest.mark.slow
def test_on_a_terminal_the_kept_help_has_typer_s_colours_and_width(tmp_path: Path) -> None:
    env_live = _env(tmp_path, False, TERM="xterm-256color")
    env_kept = _env(tmp_path, True, TERM="xterm-256color")
    shown = set()
    for columns in (70, 110):
        live = _on_a_terminal(["map", "--help"], env_live, columns)
        first = _on_a_terminal(["map", "--help"], env_kept, columns)
        again = _on_a_terminal(["map", "--help"], env_kept, columns)
        assert b"\x1b[" in live  # colours on a terminal
        assert live == first == again
        shown.add(live)
    assert len(shown) == 2  # the width changes the rendering
    assert len(list((tmp_path / "xdg").rglob("*.txt"))) == 2  # one kept per width
