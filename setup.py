"""Packaging that pyproject.toml cannot express.

* graphopt/* is found with find_packages; the top-level `passes/` installs as `graphopt_passes`.
* The hand-written C in the top-level `csrc/` is copied into the built package as
  graphopt/backend/csrc/, so a non-editable install compiles models too.
"""
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildWithCsrc(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "graphopt" / "backend" / "csrc"
        target.mkdir(parents=True, exist_ok=True)
        for source in sorted(Path(__file__).parent.joinpath("csrc").glob("*.[ch]")):
            self.copy_file(str(source), str(target / source.name))


setup(packages=find_packages(include=["graphopt", "graphopt.*"]) + ["graphopt_passes"],
      cmdclass={"build_py": BuildWithCsrc})
