"""Install abflow-quiet-htcondor.pth beside the packages (also with ``pip install -e``).

Snakemake imports every executor plugin to build its command line, so on a machine without an
HTCondor configuration the htcondor bindings warn (``CONDOR_CONFIG is unset ... Using
/dev/null``) at the start of every command, pool or not. The .pth file (one line, run at
interpreter start) ignores that one warning; commands that do use a pool check for a
configuration themselves and say what is missing (abflow.state.queue.pool_configured).
Everything else is in pyproject.toml.
"""

import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = "abflow-quiet-htcondor.pth"
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src", PTH)


class BuildPyWithPth(build_py):
    """A wheel: the .pth at the wheel's root (installed into site-packages)."""

    def run(self) -> None:
        super().run()
        self.copy_file(SOURCE, os.path.join(self.build_lib, PTH), preserve_mode=False)


# The only hook that places a file at the root of an editable wheel is private: check it is
# there (setuptools is pinned in pyproject.toml's build-system; docs/upstream.md).
if not callable(getattr(editable_wheel, "_install_namespaces", None)):
    raise SystemExit(
        "abflow's setup.py: setuptools.command.editable_wheel.editable_wheel._install_namespaces "
        "is gone in this setuptools; the build-system pin in pyproject.toml must exclude it"
    )


class EditableWheelWithPth(editable_wheel):
    """An editable install: the .pth at the editable wheel's root too."""

    def _install_namespaces(self, installation_dir, pth_prefix):  # type: ignore[no-untyped-def]
        super()._install_namespaces(installation_dir, pth_prefix)
        shutil.copyfile(SOURCE, os.path.join(installation_dir, PTH))


setup(cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth})
