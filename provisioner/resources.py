"""Where the data that ships beside the code is found: ``templates/``, ``playbooks/`` and the
``Vagrantfile``.

They live at the top level of the repository. A wheel (``pip install .``, ``pipx install .``)
carries them as package data in ``provisioner/_data/`` (pyproject.toml maps them there); a
checkout (the editable install of ``make install``, or ``PYTHONPATH``) has no ``_data`` and
uses the top-level originals. The installed copy wins, so an installed provisioner never
reads a checkout it happens to run in, whatever the working directory.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
INSTALLED_DIR = PACKAGE_DIR / "_data"
"""Package data of an installed wheel."""
CHECKOUT_DIR = PACKAGE_DIR.parent
"""The repository's top level, when the package runs from a checkout."""
_CHECKOUT_MARKER = "pyproject.toml"


def data_path(name: str) -> Path:
    """The top-level repository file or directory ``name``: the installed package data, else
    the checkout's copy. Never raises: a missing path fails where it is used, naming it."""
    installed = INSTALLED_DIR / name
    if installed.exists() or not (CHECKOUT_DIR / _CHECKOUT_MARKER).is_file():
        return installed
    return CHECKOUT_DIR / name


def templates_dir() -> Path:
    """The jinja2 templates (``templates/``)."""
    return data_path("templates")


def playbooks_dir() -> Path:
    """The Ansible project (``playbooks/``: phase playbooks, roles, filter plugins)."""
    return data_path("playbooks")


def vagrantfile_dir() -> Path:
    """The directory holding the project's ``Vagrantfile``."""
    return data_path("Vagrantfile").parent
