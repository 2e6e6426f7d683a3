"""The Dockerfile, read by a parser: no Docker engine runs where ringprobe is developed.

``parse`` follows the Dockerfile reference (https://docs.docker.com/reference/dockerfile/): one
instruction per logical line, a trailing backslash continues it, comment lines (also between
continued lines) and blank lines are dropped, and an argument list that is a JSON array is the
exec form. The tests check what the image promises (docs/scheduled.md): a slim Python base new
enough for pyproject's requires-python, the install steps of the documented block word for word,
COPY lines that bring everything the wheel is built from, a non-root user before the entry point,
the /results volume and an entry point on the venv's PATH.
"""

from __future__ import annotations

import json
import posixpath
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.unit.test_ci_mode import documented_install

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


@dataclass(frozen=True, slots=True)
class Instruction:
    """One Dockerfile instruction: keyword (upper case), its arguments and where it starts."""

    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON-array (exec) form's items, or None for the shell form."""
        if not self.args.startswith("["):
            return None
        try:
            items = json.loads(self.args)
        except json.JSONDecodeError:
            return None  # Docker, too, reads a malformed array as the shell form
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            return None
        return items

    def words(self) -> list[str]:
        """Arguments as words: the exec form's items, else split on whitespace."""
        items = self.exec_form()
        return items if items is not None else self.args.split()


def parse(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile (no parser directives, no heredocs: we use neither)."""
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not parts:
            assert not re.match(r"#\s*(escape|syntax|check)\s*=", line), "parser directive"
        if not line or line.startswith("#"):
            continue  # also inside a continued instruction
        if not parts:
            start = number
        if line.endswith("\\"):
            parts.append(line[:-1].strip())
            continue
        parts.append(line)
        keyword, _, args = " ".join(p for p in parts if p).partition(" ")
        assert "<<" not in args or keyword.upper() != "RUN", f"line {start}: heredoc"
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        parts = []
    assert not parts, "the last instruction ends with a backslash"
    return instructions


def commands(shell: str) -> list[str]:
    """A shell-form RUN's commands, split on && (our RUN lines use nothing else)."""
    assert not re.search(r"(?<!&)[;|](?!\|)|\|\|", shell), f"only && chains: {shell}"
    return [" ".join(part.split()) for part in shell.split("&&")]


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse(DOCKERFILE.read_text())


def _all(instructions: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in instructions if i.keyword == keyword]


def _index(instructions: list[Instruction], keyword: str) -> int:
    (found,) = [n for n, i in enumerate(instructions) if i.keyword == keyword]
    return found


# --- the parser itself ---------------------------------------------------------------------------


def test_parser_joins_continuations_and_drops_comments() -> None:
    text = (
        "# a comment\n"
        "FROM python:3.11-slim AS base\n"
        "\n"
        "RUN a \\\n"
        "    # comment inside a continued RUN\n"
        "    && b \\\n"
        "\n"
        "    && c\n"
        'ENTRYPOINT ["ringprobe", "run"]\n'
        "CMD [not json\n"
        "env A=1\n"
    )
    parsed = parse(text)
    assert [(i.keyword, i.line) for i in parsed] == [
        ("FROM", 2),
        ("RUN", 4),
        ("ENTRYPOINT", 9),
        ("CMD", 10),
        ("ENV", 11),
    ]
    assert commands(parsed[1].args) == ["a", "b", "c"]
    assert parsed[2].exec_form() == ["ringprobe", "run"]
    assert parsed[3].exec_form() is None  # shell form, as Docker reads it
    assert parse("FROM x\n#comment \\\nRUN y\n")[1].args == "y"


def test_parser_refuses_what_it_does_not_understand() -> None:
    with pytest.raises(AssertionError, match="backslash"):
        parse("FROM x\nRUN a \\\n")
    with pytest.raises(AssertionError, match="directive"):
        parse("# syntax=docker/dockerfile:1\nFROM x\n")
    with pytest.raises(AssertionError, match="only && chains"):
        commands("a; b")


# --- the image -----------------------------------------------------------------------------------


def test_base_is_a_slim_python_new_enough(dockerfile: list[Instruction]) -> None:
    assert dockerfile[0].keyword == "FROM"
    assert len(_all(dockerfile, "FROM")) == 1
    image = dockerfile[0].words()[0]
    match = re.fullmatch(
        r"python:(3)\.(\d+)(?:\.\d+)?-slim(?:-[a-z]+)?(?:@sha256:[0-9a-f]{64})?", image
    )
    assert match, f"{image} is not a slim Python image"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    floor = re.fullmatch(r">=\s*3\.(\d+)", pyproject["project"]["requires-python"])
    assert floor
    assert int(match.group(2)) >= int(floor.group(1))


def _install_run(dockerfile: list[Instruction]) -> Instruction:
    (run,) = [i for i in _all(dockerfile, "RUN") if "pip install" in i.args]
    return run


def _workdir_at(dockerfile: list[Instruction], instruction: Instruction) -> str:
    workdirs = [i for i in _all(dockerfile, "WORKDIR") if i.line < instruction.line]
    assert workdirs, f"no WORKDIR before line {instruction.line}"
    path = workdirs[-1].args
    assert path.startswith("/"), "WORKDIR is absolute"
    return path


def test_install_steps_are_the_documented_ones(dockerfile: list[Instruction]) -> None:
    run = _install_run(dockerfile)
    assert run.exec_form() is None
    assert commands(run.args) == documented_install()


def test_copy_brings_everything_the_wheel_is_built_from(dockerfile: list[Instruction]) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wheel = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {
        "pyproject.toml",
        pyproject["project"]["readme"],
        *wheel["packages"],
        *wheel.get("force-include", {}),
        posixpath.dirname(pyproject["tool"]["hatch"]["version"]["path"]),
    }
    install = _install_run(dockerfile)
    build_dir = _workdir_at(dockerfile, install)
    landed: dict[str, str] = {}  # source in the checkout -> where it lands in the image
    for copy in _all(dockerfile, "COPY"):
        assert copy.line < install.line, "every COPY comes before the install"
        words = [w for w in copy.words() if not w.startswith("--")]
        *sources, dest = words
        base = posixpath.join(_workdir_at(dockerfile, copy), dest)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such path in the checkout"
            # A directory's contents go to dest; a file goes into dest when dest is a directory
            # (a trailing slash, or several sources), else it is dest.
            if (ROOT / source).is_dir():
                target = base
            elif dest.endswith("/") or len(sources) > 1:
                target = posixpath.join(base, posixpath.basename(source))
            else:
                target = base
            landed[source] = posixpath.normpath(target)
    for path in sorted(needed):
        assert path in landed, f"nothing copies {path}"
        assert landed[path] == posixpath.normpath(posixpath.join(build_dir, path)), path


def test_runs_as_a_user_that_is_not_root(dockerfile: list[Instruction]) -> None:
    users = [
        i
        for i in _all(dockerfile, "USER")
        if i.line < dockerfile[_index(dockerfile, "ENTRYPOINT")].line
    ]
    assert users, "no USER before ENTRYPOINT"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0")
    useradd = re.compile(rf"\buseradd\b[^&]*\s{re.escape(user)}(\s|$)")
    created = [i for i in _all(dockerfile, "RUN") if useradd.search(i.args)]
    assert created, f"no RUN creates the user {user}"
    assert created[0].line < users[-1].line
    assert _install_run(dockerfile).line < users[-1].line  # installed as root: read-only to it


def test_results_are_a_volume_the_user_owns(dockerfile: list[Instruction]) -> None:
    volumes = [w for v in _all(dockerfile, "VOLUME") for w in v.words()]
    assert "/results" in volumes
    (owner,) = [i for i in _all(dockerfile, "RUN") if "chown" in i.args]
    assert re.search(r"mkdir -p [^&]*/results", owner.args)
    assert re.search(r"chown \S+ [^&]*/results", owner.args)
    assert _workdir_at(dockerfile, dockerfile[_index(dockerfile, "ENTRYPOINT")]) == "/results"


def test_entrypoint_is_the_installed_ringprobe(dockerfile: list[Instruction]) -> None:
    entrypoint = dockerfile[_index(dockerfile, "ENTRYPOINT")].exec_form()
    assert entrypoint == ["ringprobe"]
    assert dockerfile[_index(dockerfile, "CMD")].exec_form() is not None
    install = _install_run(dockerfile)
    venv = commands(install.args)[0].split()[-1]  # python3 -m venv DIR
    bin_dir = posixpath.join(_workdir_at(dockerfile, install), venv, "bin")
    env = " ".join(i.args for i in _all(dockerfile, "ENV"))
    path = re.search(r"\bPATH=(\S+)", env)
    assert path, "ENV sets no PATH"
    assert path.group(1).split(":")[0] == bin_dir


def test_the_capability_note_names_net_raw_only() -> None:
    text = DOCKERFILE.read_text()
    assert "--cap-add NET_RAW" in text
    assert set(re.findall(r"--cap-add\s+(\S+)", text)) == {"NET_RAW"}
    assert "--privileged" not in text
