"""Repository-level checks: README commands match CI, code style and Snakemake lint gates."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.*?)\n```", text, flags=re.S)[:2]


def test_readme_starts_with_the_example_and_the_test_command() -> None:
    example, tests = readme_commands()
    assert "\n" not in example and "\n" not in tests
    assert example.startswith("apt-get update && apt-get install -y")
    assert example.endswith("abflow example && snakemake --profile profiles/local")
    assert tests.endswith("python -m pytest")
    for package in ("esorex", "cpl-plugin-giraf", "cpl-plugin-uves", "cpl-plugin-muse"):
        assert package in example and package in tests


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    script = (ROOT / ".ci" / "run").read_text().splitlines()
    _, tests = readme_commands()
    assert script[-1] == tests
    assert "set -euo pipefail" in script
    assert os.access(ROOT / ".ci" / "run", os.X_OK)


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, check=False)


def test_ruff_is_clean() -> None:
    check = run(sys.executable, "-m", "ruff", "check", ".")
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_snakefmt_is_clean() -> None:
    proc = run(sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_snakemake_lint_is_clean(tmp_path) -> None:
    # a clean clone has no example archive yet (abflow example makes it): lint must not need it
    archive = tmp_path / "archive"
    archive.mkdir()
    proc = run(
        sys.executable, "-m", "snakemake", "--lint", "--directory", str(tmp_path),
        "--config", f"archive={archive}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations" in proc.stdout + proc.stderr
