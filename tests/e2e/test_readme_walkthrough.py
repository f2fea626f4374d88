"""README.md's walk-through, executed: the fenced blocks marked `<!-- walkthrough -->` run, in
README order, as written, in a second "terminal" beside `scripts/up`, on a fresh copy of the
repository; a check fails if a marked block did not run or did not end as README says.

A marker may say how the block ends and what the user types: `<!-- walkthrough exit=1 -->`,
`<!-- walkthrough input=password -->` (a password, typed twice at the prompt).

The fresh copy holds what a clone would once everything is committed: the tracked files and the
new ones git does not ignore, taken from the working tree. Its `.venv` reuses the packages this
checkout's `.venv` holds (no network, seconds instead of minutes): scripts/bootstrap finds it
installed and scripts/up starts the copy's own code. SINERGI_WALKTHROUGH_INSTALL=1 lets
scripts/bootstrap install everything from the package index instead, exactly as on a new machine.
The copy's `scripts/up` gets SINERGI_HTTP_PORT_BASE (README: "moves all four") so the test does
not need 8001-8004 free; the blocks find the system by themselves (no SINERGI_* at all).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.support import ROOT, Up, all_gone

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

MARKER = re.compile(r"<!--\s*walkthrough\b(?P<opts>[^>]*?)\s*-->")
BLOCK = re.compile(r"[ \t]*\n```(?:sh|bash|console)?[ \t]*\n(?P<body>.*?)\n```", re.S)
PASSWORD = "walkthrough-password-1"


@dataclass(frozen=True)
class Block:
    line: int  # where it starts in README.md, for messages
    body: str
    exit: int = 0
    input: str | None = None


def walkthrough(readme: str) -> list[Block]:
    """Every marked block, in order; a marker not followed by a fenced block is an error."""
    blocks = []
    for m in MARKER.finditer(readme):
        line = readme.count("\n", 0, m.start()) + 1
        fenced = BLOCK.match(readme, m.end())
        assert fenced, f"README.md line {line}: a walkthrough marker must come right before a ``` block"
        opts = dict(o.split("=", 1) for o in m.group("opts").split())
        assert set(opts) <= {"exit", "input"}, f"README.md line {line}: unknown option in {opts}"
        typed = {"password": f"{PASSWORD}\n{PASSWORD}\n", None: None}[opts.get("input")]
        blocks.append(Block(line, fenced.group("body"), int(opts.get("exit", 0)), typed))
    return blocks


def test_the_markers_parse():
    blocks = walkthrough((ROOT / "README.md").read_text())
    assert len(blocks) >= 4 and all(b.body.strip() for b in blocks)
    assert walkthrough("x\n<!-- walkthrough exit=1 -->\n```sh\nfalse\n```\n") == [Block(2, "false", 1)]
    with pytest.raises(AssertionError, match="right before"):
        walkthrough("<!-- walkthrough -->\ntext\n")


def fresh_copy(dest: Path) -> Path:
    """The repository as a clone would have it: tracked and untracked-but-not-ignored files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file() or src.is_symlink():  # (a tracked file deleted in the tree is not there)
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel, follow_symlinks=False)
    return dest


def venv_with_installed_packages(repo: Path) -> None:
    """repo/.venv: a virtual environment seeing this checkout's installed packages, with the
    copy's own code on its path and a `sinergi` script, as `pip install -e .` would leave it."""
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(repo / ".venv")], check=True)
    venv_python = repo / ".venv" / "bin" / "python"
    site = Path(subprocess.run([str(venv_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "_sinergi_source.pth").write_text(f"{repo}\n")  # before the packages: the copy's code wins
    (site / "sinergi_packages.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n")
    bin_dir = repo / ".venv" / "bin"
    (bin_dir / "sinergi").write_text(f"#!{venv_python}\nimport sys\nfrom services.cli import main\nsys.exit(main())\n")
    (bin_dir / "sinergi").chmod(0o755)
    (bin_dir / "nats-server").symlink_to(Path(sys.executable).parent / "nats-server")
    (repo / ".venv" / ".sinergi-installed").touch()  # scripts/bootstrap: installed, up to date


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SINERGI_")}


def run_block(block: Block, repo: Path) -> subprocess.CompletedProcess:
    # its own session, as a second terminal's command would be without a tty: the password
    # prompt then reads what the test types on stdin
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.body], cwd=repo, env=clean_env(),
                          input=block.input, capture_output=True, text=True, timeout=300, start_new_session=True)


def test_readme_walkthrough_runs_as_written_on_a_fresh_copy(tmp_path):
    repo = fresh_copy(tmp_path / "sinergi")
    if os.environ.get("SINERGI_WALKTHROUGH_INSTALL") != "1":
        venv_with_installed_packages(repo)
        where = subprocess.run([str(repo / ".venv" / "bin" / "python"), "-c", "import services; print(services.__file__)"],
                               cwd=tmp_path, capture_output=True, text=True, check=True).stdout
        assert where.startswith(str(repo)), where  # the copy's code, not this checkout's
    blocks = walkthrough((repo / "README.md").read_text())
    up = Up(repo / ".sinergi", tmp_path / "up.log", argv=[str(repo / "scripts" / "up")], cwd=repo)
    ran: list[int] = []
    try:
        said = " ".join(up.output(tail=20000).split())
        first = re.search(r"(\.venv/bin/sinergi users add admin --role kabupaten)", said)
        assert first, said  # at the first start: the exact command for the first account, relative to here
        res = run_block(Block(0, first.group(1), input=f"{PASSWORD}\n{PASSWORD}\n"), repo)
        assert res.returncode == 0, res.stdout + res.stderr

        for block in blocks:
            res = run_block(block, repo)
            assert res.returncode == block.exit, (f"README.md line {block.line}: exit {res.returncode}, "
                                                  f"README says {block.exit}\n{block.body}\n{res.stdout}{res.stderr}")
            assert "Traceback" not in res.stderr, res.stderr
            ran.append(block.line)

        # what the walk-through promises afterwards
        assert (repo / "regency.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
        assert json.loads((repo / "saved.json").read_text())["head_hash"]
        assert len((repo / "examples" / "enrolments.rejected.csv").read_text().splitlines()) == 1 + 3
        login = httpx.post(up.url("intake") + "/auth/token", data={"username": "ani", "password": PASSWORD},
                           timeout=10)
        assert login.status_code == 200 and login.json()["area"] == "3317012001", login.text
        assert httpx.get(up.url("intake") + "/ui/", timeout=10).status_code < 400
    finally:
        code = up.interrupt()
    assert ran == [b.line for b in blocks], f"blocks that ran: {ran}"
    assert code == 0, up.output()
    all_gone(up.pids())
