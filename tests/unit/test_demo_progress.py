"""`bash scripts/demo` shows its set-up's progress (issue 22 item 8: it was silent for
about 4.5 minutes on a fresh machine): each step of scripts/setup is shown as it starts,
the rest goes to a log that is shown when set-up fails."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.support import ROOT


def demo_with(tmp_path: Path, setup: str) -> subprocess.CompletedProcess[str]:
    """scripts/demo as shipped, beside a stand-in set-up and fhir-cart."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "demo", tmp_path / "scripts" / "demo")
    (tmp_path / "scripts" / "setup").write_text(setup)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    fake = tmp_path / ".venv" / "bin" / "fhir-cart"
    fake.write_text('#!/usr/bin/env bash\necho "fhir-cart $*"\n')
    fake.chmod(0o755)
    return subprocess.run(
        ["bash", str(tmp_path / "scripts" / "demo"), "--keep"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_steps_are_shown_and_the_noise_is_not(tmp_path: Path) -> None:
    setup = 'echo "==> [1/2] tools"\necho "pip: lots of noise"\necho "==> [2/2] servers"\n'
    done = demo_with(tmp_path, setup)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "==> [1/2] tools" in lines
    assert "==> [2/2] servers" in lines
    assert lines.index("==> [1/2] tools") < lines.index("==> [2/2] servers")
    assert lines[0].startswith("Setting up")
    assert "noise" not in done.stdout + done.stderr
    assert lines[-1] == "fhir-cart demo --keep"


def test_a_failed_set_up_shows_its_log_and_stops(tmp_path: Path) -> None:
    done = demo_with(tmp_path, 'echo "==> [1/2] tools"\necho "pip: no space left" >&2\nexit 1\n')
    assert done.returncode == 1
    assert "no space left" in done.stderr
    assert "fhir-cart demo" not in done.stdout


def test_every_part_of_the_set_up_is_a_numbered_step() -> None:
    text = (ROOT / "scripts" / "setup").read_text()
    steps = [(int(a), int(b)) for a, b in re.findall(r"^step (\d+) (\d+) ", text, re.M)]
    total = steps[0][1]
    assert steps == [(n, total) for n in range(1, total + 1)]
    # each fetch script and test-server install is announced by a step
    for call in re.findall(r"^bash scripts/(\S+)", text, re.M):
        before = text.split(f"bash scripts/{call}", 1)[0].rstrip().splitlines()[-1]
        assert before.startswith("step "), call
