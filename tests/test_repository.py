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


def test_ci_starts_a_pool_and_requires_the_live_pool_tests() -> None:
    """The condor path is proven on a real pool in CI: started before the tests, stopped at
    exit, and its tests may not skip."""
    script = (ROOT / ".ci" / "run").read_text()
    start = script.index('bash "$pool_sh" start')
    assert start < script.index('trap \'bash "$pool_sh" stop') < script.index("python -m pytest")
    assert 'eval "$(bash "$pool_sh" env)"' in script
    assert "export ABFLOW_REQUIRE_POOL=1" in script
    # nothing in the product depends on the shared pool
    for path in [
        *ROOT.glob("src/**/*.py"),
        *ROOT.glob("workflow/**/*"),
        *ROOT.glob("profiles/*/*"),
    ]:
        if path.is_file():
            assert "shared/condor" not in path.read_text(errors="replace"), path


def test_the_project_cites_only_its_own_documents() -> None:
    """Code, tests and docs cite the project's own documents (docs/dfos.md, docs/upstream.md,
    the README), never documents outside the checkout; only .ci/run names the personal pool it
    starts."""
    outside = re.compile(r"dfos-reference\.md|snakemake-notes\.md|design\.md|pipelines\.md|"
                         r"\.\./shared|shared/docs|shared/condor")  # fmt: skip
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()  # fmt: skip
    assert "docs/dfos.md" in tracked and "docs/upstream.md" in tracked
    for name in tracked:
        if name in (".ci/run", "tests/test_repository.py") or name.startswith("tests/data/golden"):
            continue
        path = ROOT / name
        if path.is_file() and path.suffix not in (".fits", ".png"):
            text = path.read_text(errors="replace")
            hits = sorted(set(outside.findall(text)))
            assert not hits, f"{name} cites {hits}"
    for cited in re.findall(r"docs/(\w+\.md) §([\d.]+)", "".join(
        (ROOT / n).read_text(errors="replace") for n in tracked if n.endswith((".py", ".md"))
    )):  # fmt: skip
        heading = cited[1].rstrip(".")
        text = (ROOT / "docs" / cited[0]).read_text()
        assert re.search(rf"^#+ {re.escape(heading)}\.? ", text, re.M), cited


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
