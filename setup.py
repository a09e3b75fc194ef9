"""Packages for the wheel. The agreed layout keeps `templates/` and `migrations/` at the top of
the repository; the wheel carries them inside the package, as `recovery/templates` and
`recovery/migrations` (recovery/resources.py finds them in either place). Data directories
(translations, templates) are namespace packages so that their files ride along."""

from pathlib import Path

from setuptools import find_namespace_packages, setup

MAPPED = {"recovery.templates": "templates", "recovery.migrations": "migrations"}


def tree(package: str, directory: str) -> list[str]:
    root = Path(directory)
    subdirs = (p for p in sorted(root.rglob("*")) if p.is_dir() and "__pycache__" not in p.parts)
    return [package, *(".".join([package, *p.relative_to(root).parts]) for p in subdirs)]


setup(
    packages=[
        *find_namespace_packages(include=["recovery", "recovery.*"], exclude=["*__pycache__*"]),
        *(name for package, directory in MAPPED.items() for name in tree(package, directory)),
    ],
    package_dir=MAPPED,
    package_data={"": ["*"]},
    exclude_package_data={"": ["*.pyc"]},
)
