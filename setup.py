"""Package layout: one import root, `skyge`, over the user's top-level folders.

The repository keeps `protos/`, `services/` and `clients/` at the top (the user's layout); they are
mapped under `skyge.` so nothing called `services` or `clients` lands in site-packages. The list of
sub-packages is computed here because pyproject.toml cannot express a mapped package search.
"""
from setuptools import find_packages, setup

PACKAGE_ROOTS = {
    "skyge": "protos/skyge",  # package root + generated contracts (skyge.v1)
    "skyge.services": "services",
    "skyge.clients": "clients",
}

packages = []
for prefix, folder in PACKAGE_ROOTS.items():
    packages.append(prefix)
    packages += [f"{prefix}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=PACKAGE_ROOTS)
