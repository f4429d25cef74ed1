"""The template engine: jinja2 over the top-level ``templates/`` folder, strict and deterministic.

The folder is found through ``provisioner.resources`` (package data in a wheel, the
checkout's top level otherwise).

StrictUndefined turns a missing variable into an error naming it, so a template can never
silently render an empty flag. Output always ends with exactly one newline.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jinja2

from provisioner.resources import templates_dir

TEMPLATES_DIR = templates_dir()


def _to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _quote_list(values: list[str]) -> str:
    return ", ".join(json.dumps(v) for v in values)


@cache
def environment() -> jinja2.Environment:
    """The shared environment (cached: building it parses nothing, loading is lazy)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        auto_reload=False,  # templates do not change during a run; skips a stat per render
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["to_json"] = _to_json
    env.filters["quote_list"] = _quote_list
    return env


def render_template(name: str, context: dict[str, Any]) -> str:
    """Render ``templates/<name>`` with ``context``; the result ends with one newline."""
    text = environment().get_template(name).render(**context)
    return text.rstrip("\n") + "\n"
