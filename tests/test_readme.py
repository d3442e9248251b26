"""The README is executable: its shell blocks run, in order, in a temp copy of the repository.

Blocks are the ```bash / ```sh / ```console fences of README.md. An HTML comment on the line
before a fence changes how it is run:

- ``<!-- readme-test: skip (REASON) -->``: not run (the reason is required);
- ``<!-- readme-test: needs ../shared/data -->``: run with ``../shared`` of the temp copy
  linked to the real shared data (the test skips, like every data test, when it is absent).

Set-up lines that create or activate a virtual environment or ``pip install`` are dropped:
the test interpreter already has edgekit installed, and its ``bin`` folder comes first on
PATH, so ``edgekit`` is the command of this venv. Every relative path in the blocks
(models, data, outputs) resolves inside the temp copy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.file_seconds(55)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(bash|sh|console)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
MARKER = re.compile(r"<!--\s*readme-test:\s*(skip|needs ../shared/data)\s*(\(([^)]*)\))?\s*-->")
SETUP_PARTS = (re.compile(r"^python3? -m venv\b"), re.compile(r"^(\.|source) \S*activate$"),
               re.compile(r"^(python3? -m )?pip install\b"))


@dataclass(frozen=True)
class Block:
    """One shell block: its commands, its line in README.md and its readme-test marker."""

    line: int
    script: str
    marker: str | None  # None, "skip" or "needs ../shared/data"
    reason: str


def readme_blocks(text: str) -> list[Block]:
    """The shell blocks of ``text`` in order, ``console`` prompts (``$ ``) reduced to commands."""
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        body = match.group(2)
        if match.group(1) == "console":
            body = "".join(line[2:] + "\n" for line in body.splitlines() if line.startswith("$ "))
        blocks.append(Block(line=text.count("\n", 0, match.start()) + 1, script=body,
                            marker=marker.group(1) if marker else None,
                            reason=(marker.group(3) or "") if marker else ""))
    return blocks


def without_setup(script: str) -> str:
    """``script`` without venv creation/activation and ``pip install`` (``&&``-joined parts)."""
    lines = []
    for line in script.splitlines():
        parts = [p.strip() for p in line.split("&&")]
        kept = [p for p in parts if not any(rx.match(p) for rx in SETUP_PARTS)]
        if kept:
            lines.append(" && ".join(kept))
    return "\n".join(lines) + "\n"


def _copy_repo(dest: Path) -> None:
    """Tracked files (and new files not ignored) of the checkout, or the tree without build
    outputs where there is no git."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], cwd=ROOT, capture_output=True,
                                check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(ROOT, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "out", "tuned", "*.egg-info", ".*cache"))
        return
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def _run_blocks(blocks: list[Block], tmp_path: Path) -> Path:
    """Copy the repository to ``tmp_path/repo``, run ``blocks`` there with ``set -e``; the copy."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_repo(repo)
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (tmp_path / "shared").symlink_to(shared, target_is_directory=True)
    script = "set -euo pipefail\n" + "".join(without_setup(b.script) for b in blocks)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(["bash", "-c", script], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"{script}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert "Traceback" not in proc.stdout + proc.stderr
    return repo


def test_readme_blocks_are_marked_and_setup_is_two_commands() -> None:
    text = README.read_text()
    blocks = readme_blocks(text)
    assert len(blocks) >= 5
    for block in blocks:
        assert block.marker != "skip" or block.reason.strip(), f"line {block.line}: no reason"
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    first, second = readme_blocks(setup)[:2]
    assert len(readme_blocks(setup)) == 2  # exactly two commands for a new user
    assert [len(b.script.strip().splitlines()) for b in (first, second)] == [1, 1]
    assert "pip install" in first.script
    assert without_setup(first.script).startswith("edgekit export models/fashion_cnn.keras ")
    assert "python -m pytest -q" in second.script and second.marker == "skip"
    assert without_setup(". .venv/bin/activate && python3 -m venv v && pip install -e x") == "\n"
    # the data blocks say so in the block itself, for a reader without the marker
    for block in blocks:
        if "../shared/data" in block.script:
            assert block.marker is not None and "# " in block.script, block.line


@pytest.mark.slow
def test_readme_shell_blocks_run_in_a_copy(tmp_path: Path, fashion_dir: Path) -> None:
    blocks = [b for b in readme_blocks(README.read_text()) if b.marker != "skip"]
    assert any(b.marker == "needs ../shared/data" for b in blocks)
    repo = _run_blocks(blocks, tmp_path)
    out = repo / "out"
    # set-up: the main job on the shipped model
    report = json.loads((out / "fashion_cnn.report.json").read_text())
    assert report["validation"]["passed"] is True
    assert report["validation"]["max_abs_error"] <= 1e-4
    # export --quantize int8 --format ort with the accuracy gate, on the same -o out (--force)
    for name in ("fashion_cnn.onnx", "fashion_cnn.int8.onnx", "fashion_cnn.int8.ort"):
        assert (out / name).stat().st_size > 1000, name
    evaluation = json.loads((out / "fashion_cnn.report.json").read_text())["variants"]["int8"][
        "evaluation"]
    assert evaluation["samples"] == 10_000 and evaluation["accuracy_drop"] <= 0.5
    # tune
    tuned = repo / "tuned"
    assert (tuned / "fashion_cnn.tuned.onnx").stat().st_size > 1000
    tune = json.loads((tuned / "fashion_cnn.tune.json").read_text())
    assert tune["winner"]["accepted"] and len(tune["candidates"]) >= 2
    assert tune["config"]["threads"] == 1 and tune["config"]["batch"] == 1
    assert not list(repo.glob(".edgekit-tmp-*")) and not list(out.glob(".*"))


# -- the README's command table against the real --help --------------------------------------
#: a cell's options: ``-o``, ``--max-accuracy-drop`` (not the ``-4`` of ``1e-4``)
OPTION = re.compile(r"(?<![\w-])--?[a-zA-Z][\w-]*")


def readme_cli_table(text: str) -> dict[str, set[str]]:
    """``{command: options}`` of the README table whose header is ``| command | what it does |``:
    the options of the usage cell (```edgekit CMD ...```) and the options quoted in the
    description cell (```--package```)."""
    lines = text.splitlines()
    start = lines.index("| command | what it does |") + 2
    rows: dict[str, set[str]] = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        usage, what = (c.strip() for c in re.split(r"(?<!\\)\|", line)[1:3])
        words = usage.strip("`").split()
        assert words[0] == "edgekit" and words[1] not in rows, line
        quoted = [span for span in re.findall(r"`([^`]*)`", what) if span.startswith("-")]
        rows[words[1]] = set(OPTION.findall(" ".join(words[2:] + quoted)))
    return rows


def help_text(*command: str) -> str:
    """``edgekit [COMMAND] --help`` as printed."""
    from click.testing import CliRunner

    from edgekit.cli.main import cli

    result = CliRunner().invoke(cli, [*command, "--help"], prog_name="edgekit")
    assert result.exit_code == 0, result.output
    return result.output


def help_commands(text: str) -> set[str]:
    """The commands of the ``Commands:`` section of a group's help."""
    section = text.split("\nCommands:\n", 1)[1]
    return {line.split()[0] for line in section.splitlines() if line.startswith("  ")}


def help_options(text: str) -> set[str]:
    """Every option name declared in the ``Options:`` section (``-o, --output PATH``,
    ``--per-channel / --per-tensor``); the wrapped description lines are indented further."""
    section = text.split("\nOptions:\n", 1)[1]
    found: set[str] = set()
    for line in section.splitlines():
        if line.startswith("  -"):
            found.update(OPTION.findall(re.split(r"\s{2,}", line.strip())[0]))
    return found


def test_readme_command_table_matches_the_cli_help() -> None:
    """Every command of ``edgekit --help`` has a row in the README's command table and every
    row is a command; every option a row names exists in that command's ``--help``."""
    table = readme_cli_table(README.read_text())
    assert set(table) == help_commands(help_text())
    missing = {cmd: sorted(opts - help_options(help_text(cmd))) for cmd, opts in table.items()}
    assert {cmd: opts for cmd, opts in missing.items() if opts} == {}


def test_readme_table_reader_and_help_reader() -> None:
    text = ("| command | what it does |\n| --- | --- |\n"
            "| `edgekit x M -o D [--a-b 1e-4] [--c\\|--d] [--e [--f]]` | uses `--g` and `x` |\n"
            "\nafter\n")
    assert readme_cli_table(text) == {"x": {"-o", "--a-b", "--c", "--d", "--e", "--f", "--g"}}
    usage = ("Usage: edgekit x [OPTIONS]\n\nOptions:\n  -o, --output PATH     Folder.\n"
             "  --per-channel / --per-tensor\n                        Scales (see\n"
             "                        --calibration).\n  -h, --help            Show this.\n")
    assert help_options(usage) == {"-o", "--output", "--per-channel", "--per-tensor", "-h",
                                   "--help"}
    group = "Usage: edgekit\n\nOptions:\n  --version\n\nCommands:\n  bench  Measure...\n  run\n"
    assert help_commands(group) == {"bench", "run"}
