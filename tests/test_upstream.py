"""Canaries: every place abflow reaches into an upstream package beyond its public interface
(docs/upstream.md), checked against the installed versions. Each failure names the upstream
symbol and the versions abflow was checked with: an upgrade fails here, loudly, before it can
change a night quietly."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from importlib.metadata import version
from typing import Any

import pytest
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase
from snakemake_interface_logger_plugins.tests import TestLogHandlerBase

from abflow.upstream import htcondor_plugin, snakemake

PINS = {  # package -> the versions abflow was checked with (pyproject.toml)
    "snakemake": snakemake.CHECKED,
    "snakemake-executor-plugin-htcondor": htcondor_plugin.CHECKED,
}


def checked(symbol: str, package: str) -> str:
    """The failure message of a canary."""
    return (f"{symbol} is not what abflow relies on in {package} {version(package)} (checked "
            f"with {PINS.get(package, 'the pinned versions')}; see docs/upstream.md)")  # fmt: skip


@pytest.mark.parametrize("package", sorted(PINS))
def test_the_installed_versions_are_the_checked_ones(package: str) -> None:
    installed = version(package)
    assert installed == PINS[package] or installed.startswith(PINS[package] + "."), (
        f"{package} {installed} is installed; abflow's reaches into it were checked with "
        f"{PINS[package]} (docs/upstream.md): check each canary, then move the pin"
    )


def test_snakemake_cli_parses_the_command_line_as_abflow_reads_it(tmp_path) -> None:
    from snakemake.cli import get_argument_parser, get_profile_dir, parse_args, parse_config

    what = "snakemake.cli.get_argument_parser/parse_args"
    argv = ["--prof", "p", "-n", "--config", "a=1", "-e", "local"]
    args = get_argument_parser().parse_args(argv)
    got = (args.profile, args.dryrun, args.config, args.executor)
    assert got == (["p"], True, ["a=1"], "local"), checked(what, "snakemake")
    profile = tmp_path / "prof"
    profile.mkdir()
    (profile / "config.yaml").write_text("executor: dryrun\nconfig: [b=2]\n")
    _, merged = parse_args(["--profile", str(profile)])
    assert merged.executor == "dryrun", checked(what + " (profile defaults)", "snakemake")
    found = get_profile_dir(str(profile))
    assert found and str(found[1]).endswith("config.yaml"), checked(
        "snakemake.cli.get_profile_dir", "snakemake"
    )
    parsed = dict(parse_config(["date=2024-07-12", "jobs=4", "limits={'qc': '2'}", "on=True"]))
    assert parsed == {"date": "2024-07-12", "jobs": 4, "limits": {"qc": "2"}, "on": True}, checked(
        "snakemake.cli.parse_config", "snakemake"
    )


def test_snakemake_takes_a_precomputed_signature() -> None:
    from snakemake.common import get_function_params

    def wrapped(*args: Any) -> None: ...

    def original(wildcards: Any, threads: int) -> None: ...

    snakemake.precomputed_signature(wrapped, of=original)
    assert list(get_function_params(wrapped)) == ["wildcards", "threads"], checked(
        "snakemake.common.overwrite_function_params/get_function_params", "snakemake"
    )


def test_the_workflow_has_what_abflow_reads_and_sets() -> None:
    import snakemake.api  # noqa: F401 (imports snakemake.workflow in the order Snakemake does)
    from snakemake.settings.types import ResourceSettings
    from snakemake.workflow import Workflow

    fields = {f.name for f in dataclasses.fields(Workflow)}
    for name in ("resource_settings", "executor_settings"):
        assert name in fields, checked(f"snakemake.workflow.Workflow.{name}", "snakemake")
    assert "self.global_resources = " in inspect.getsource(Workflow.__post_init__), checked(
        "snakemake.workflow.Workflow.global_resources", "snakemake"
    )
    assert isinstance(inspect.getattr_static(Workflow, "executor_plugin"), property), checked(
        "snakemake.workflow.Workflow.executor_plugin", "snakemake"
    )
    params = list(inspect.signature(Workflow.register_resource).parameters)
    source = inspect.getsource(Workflow.register_resource)
    assert params == ["self", "name", "value"] and "global_resources[name]" in source, checked(
        "snakemake.workflow.Workflow.register_resource", "snakemake"
    )
    resource_fields = {f.name for f in dataclasses.fields(ResourceSettings)}
    assert {"cores", "nodes"} <= resource_fields, checked(
        "snakemake.settings.types.ResourceSettings.cores/nodes", "snakemake"
    )


def test_snakemakes_console_handler_is_built_as_abflow_builds_it() -> None:
    class Settings:
        nocolor, quiet, debug_dag, verbose, dryrun = True, None, False, False, False
        printshellcmds, show_failed_logs = False, False

    import io

    handler = snakemake.snakemake_console_handler(Settings(), io.StringIO())
    assert isinstance(handler, logging.Handler), checked(
        "snakemake.logging.ColorizingTextHandler/DefaultFilter/DefaultFormatter", "snakemake"
    )


def test_the_htcondor_plugin_builds_a_job_as_abflow_relies_on() -> None:
    from snakemake_executor_plugin_htcondor import Executor, ExecutorSettings, common_settings

    assert dataclasses.is_dataclass(ExecutorSettings) and dataclasses.is_dataclass(
        common_settings
    ), checked("ExecutorSettings/common_settings", "snakemake-executor-plugin-htcondor")
    base = inspect.getsource(Executor._get_base_exec_and_args)
    run_job = inspect.getsource(Executor.run_job)
    package = "snakemake-executor-plugin-htcondor"
    assert f'job.resources.get("{htcondor_plugin.JOB_WRAPPER}")' in base, checked(
        "Executor: the job_wrapper resource as the executable", package
    )
    assert f'key.startswith("{htcondor_plugin.CLASSAD_PREFIX}")' in run_job, checked(
        "Executor.run_job: classad_* resources as job attributes", package
    )
    assert "submit_dict[classad_key] = f'\"{value}\"'" in run_job, checked(
        "Executor.run_job: a str ClassAd value quoted, unescaped", package
    )
    assert f'job.resources.get("{htcondor_plugin.ENVIRONMENT}")' in run_job, checked(
        "Executor.run_job: the environment resource as the job's environment", package
    )
    assert '_$(ClusterId).err"' in run_job, checked("Executor.run_job: the .err file name", package)
    assert hasattr(Executor, "check_active_jobs") and hasattr(Executor, "run_job")


def test_the_stderr_file_of_a_held_job_is_found_by_the_plugins_name(tmp_path) -> None:
    rule = tmp_path / "process_ab"
    rule.mkdir()
    (rule / "process_ab-12_345.err").write_text("")
    assert htcondor_plugin.stderr_file(str(tmp_path), 345).endswith("process_ab-12_345.err")
    assert htcondor_plugin.stderr_file(str(tmp_path), 34) == ""
    assert htcondor_plugin.stderr_file("", 345) == ""


class TestLoggerConformance(TestLogHandlerBase):
    """The logger interface's own conformance tests, on abflow's console logger."""

    __test__ = True

    def get_log_handler_cls(self) -> Any:
        from snakemake_logger_plugin_abflow import LogHandler

        return LogHandler

    def get_log_handler_settings(self) -> LogHandlerSettingsBase:
        from snakemake_logger_plugin_abflow import LogHandlerSettings

        return LogHandlerSettings()
