"""Dockerfile: the image agrees with the Helm chart and the Makefile.

No image is built here (no container daemon, and the base image cannot be fetched:
only package registries are reachable), so this checks what the chart relies on.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
VALUES = yaml.safe_load((ROOT / "deploy" / "helm" / "engram" / "values.yaml").read_text())


def stages() -> list[str]:
    """The Dockerfile's build stages, each from its FROM line on."""
    parts = re.split(r"^(?=FROM )", DOCKERFILE, flags=re.M)
    return [p for p in parts if p.startswith("FROM ")]


def test_two_stages_on_slim_python() -> None:
    build, final = stages()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", DOCKERFILE, re.M)
    assert " AS build" in build.splitlines()[0]
    assert "COPY --from=build /opt/engram /opt/engram" in final
    # Nothing is compiled or installed in the final stage: no pip, apt or sources.
    assert not re.search(r"pip install|apt-get|gcc|build-essential|COPY (src|pyproject)", final)


def test_the_final_stage_runs_as_the_chart_user() -> None:
    final = stages()[-1]
    user = re.search(r"^USER (\d+):(\d+)$", final, re.M)
    assert user is not None
    pod = VALUES["podSecurityContext"]
    assert (int(user[1]), int(user[2])) == (pod["runAsUser"], pod["runAsGroup"])
    assert pod["runAsNonRoot"] is True and int(user[1]) != 0
    assert 'ENTRYPOINT ["engram"]' in final


def test_the_model_is_prepared_at_build_where_the_runtime_looks() -> None:
    build, final = stages()
    prepared = re.search(r"engram model prepare --model-dir (\S+)", build)
    runtime = re.search(r"ENGRAM_EMBEDDER__MODEL_DIR=(\S+)", final)
    assert prepared and runtime and prepared[1] == runtime[1]
    assert "ENGRAM_DATA_DIR=/var/lib/engram" in final  # the chart's emptyDir


def test_torch_is_the_makefiles_cpu_pin_and_comes_first() -> None:
    pin = re.search(r"install --quiet (torch==\S+)", (ROOT / "Makefile").read_text())
    assert pin is not None
    build = stages()[0]
    assert pin[1] in build
    assert build.index(pin[1]) < build.index('pip install "/build')


def test_only_the_package_sources_are_sent_to_the_build() -> None:
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line and not line.startswith("#")]  # fmt: skip
    assert ignore[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!src/"} <= set(ignore)
