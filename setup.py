"""Package discovery that pyproject.toml cannot express: graphopt/* found, passes/ mapped."""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["graphopt", "graphopt.*"]) + ["graphopt_passes"])
