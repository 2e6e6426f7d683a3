"""`ringprobe lab` on the command line without building a lab (no root needed): the doctor's
report and exit status, and the one-line refusal when the machine cannot run a lab."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from probe.cli import cli
from probe.lab import doctor

MISSING = doctor.Tool("ringprobe-no-such-tool", "ringprobe-no-such-package", "a test")


def test_doctor_names_what_is_missing_and_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(doctor, "TOOLS", (*doctor.TOOLS[:1], MISSING))
    result = CliRunner().invoke(cli, ["lab", "doctor"])
    assert result.exit_code == 1
    assert "MISSING ringprobe-no-such-tool" in result.output
    assert "apt-get install -y --no-install-recommends ringprobe-no-such-package" in result.output


def test_up_without_root_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    result = CliRunner().invoke(cli, ["lab", "up", "--name", "unit-noroot"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert "root" in lines[0]
    assert "ringprobe lab doctor" in lines[0]


def test_bad_lab_name_is_exit_2() -> None:
    result = CliRunner().invoke(cli, ["lab", "down", "--name", "Not A Name"])
    assert result.exit_code == 2
    assert "lab name" in result.output


def test_install_line_lists_each_package_once() -> None:
    findings = [
        doctor.Finding("a", False, "missing", "pkg-a"),
        doctor.Finding("b", False, "missing", "pkg-a"),
        doctor.Finding("c", True, "/usr/bin/c"),
        doctor.Finding("root", False, "not root"),
    ]
    assert doctor.install_line(findings) == "apt-get install -y --no-install-recommends pkg-a"
    assert doctor.install_line(findings[2:3]) is None


def test_install_script_installs_every_lab_package() -> None:
    script = (Path(__file__).parents[2] / "scripts" / "install.sh").read_text()
    listed = re.search(r"APT_PACKAGES=\(([^)]*)\)", script)
    assert listed is not None
    packages = set(listed.group(1).split())
    assert {t.package for t in doctor.TOOLS} <= packages
    assert "iputils-ping" in packages  # the TTL tests' ping
