"""The Dockerfile, read as text (no container engine here): both targets install the project's pinned
requirements from constraints.txt, as scripts/setup.sh does, and run `influence-trace` as non-root."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
TARGET_EXTRAS = {"operator": ["operator"], "worker": ["worker"]}


def stages() -> dict[str, dict]:
    """Stage name -> {"from": parent, "instructions": [(KEYWORD, args)]}, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", args.strip(), re.IGNORECASE)
            assert match, f"every stage is named: {line}"
            current = out[match.group(2)] = {"from": match.group(1), "instructions": []}
        elif current is not None:
            current["instructions"].append((keyword, args.strip()))
    return out


def effective(target: str) -> list[tuple[str, str]]:
    """A target's instructions including those of the stages it is built FROM."""
    all_stages = stages()
    stage = all_stages[target]
    parent = stage["from"]
    return (effective(parent) if parent in all_stages else []) + stage["instructions"]


def run_mounts_and_commands(args: str) -> tuple[list[str], list[list[str]]]:
    """A RUN's leading --mount options, and its commands (split at &&)."""
    words = shlex.split(args)
    mounts = []
    while words and words[0].startswith("--mount="):
        mounts.append(words.pop(0).removeprefix("--mount="))
    commands: list[list[str]] = [[]]
    for word in words:
        if word == "&&":
            commands.append([])
        else:
            commands[-1].append(word)
    return mounts, commands


def pip_installs(target: str) -> list[list[str]]:
    return [
        command
        for keyword, args in effective(target)
        if keyword == "RUN"
        for command in run_mounts_and_commands(args)[1]
        if command[:2] == ["pip", "install"]
    ]


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            spec = list(req.specifier)
            assert len(spec) == 1 and spec[0].operator == "==", f"not an exact pin: {line}"
            pins[canonicalize_name(req.name)] = spec[0].version
    return pins


def test_every_project_requirement_is_pinned() -> None:
    pins = constraints()
    wanted = list(PYPROJECT["dependencies"])
    for extra in PYPROJECT["optional-dependencies"].values():
        wanted += extra
    for line in wanted:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} (pyproject.toml) has no pin in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} violates {line}"
    # The worker's torch is PyPI's CUDA build: its CUDA runtime libraries are pinned too.
    assert {"torch", "nvidia-cublas", "nvidia-cudnn-cu13", "nvidia-nccl-cu13"} <= set(pins)


@pytest.mark.parametrize("target", sorted(TARGET_EXTRAS))
def test_target_installs_its_extras_with_the_constraints(target: str) -> None:
    """First the dependencies of the target's extras, listed from pyproject.toml (a layer that stays
    cached while only the code changes), then the project itself without dependencies."""
    deps, project_install = pip_installs(target)
    for install in (deps, project_install):
        assert install[install.index("-c") + 1] == "constraints.txt"
        assert not any("index-url" in arg for arg in install), "torch must come from PyPI (the CUDA build)"
    assert deps[deps.index("-r") + 1] == "requirements.txt"
    extras = TARGET_EXTRAS[target]
    (copy_requirements,) = [
        args for keyword, args in effective(target) if keyword == "COPY" and args.startswith("--from=")
    ]
    assert copy_requirements == f"--from=requirements /requirements-{'-'.join(extras)}.txt requirements.txt"
    (listing,) = [args for keyword, args in stages()["requirements"]["instructions"] if keyword == "RUN"]
    assert 'p["dependencies"] + p["optional-dependencies"][e]' in listing
    assert f'"{extras[0]}"' in listing and "/requirements-{e}.txt" in listing
    assert "--no-deps" in project_install
    (project,) = [arg for arg in project_install if arg.startswith(".[")]
    assert project.removeprefix(".[").removesuffix("]").split(",") == extras
    assert set(extras) <= set(PYPROJECT["optional-dependencies"])
    copied = " ".join(args for keyword, args in effective(target) if keyword == "COPY")
    assert "constraints.txt" in copied and "pyproject.toml" in copied
    # The code is copied after the dependencies are installed.
    runs = [(k, a) for k, a in effective(target) if k in ("COPY", "RUN")]
    install_deps = next(i for i, (k, a) in enumerate(runs) if k == "RUN" and "-r requirements.txt" in a)
    assert runs.index(("COPY", "worker/ worker/")) > install_deps


@pytest.mark.parametrize("target", sorted(TARGET_EXTRAS))
def test_pip_configuration_reaches_the_build_only_as_mounts(target: str) -> None:
    """hack/images.sh hands the host's pip configuration and certificate to the build as secrets, and
    pip's cache is a cache mount: none of them is copied into an image or set in its environment."""
    for keyword, args in effective(target):
        pip_setting = re.search(r"pip\.conf|PIP_(INDEX|CERT|CONFIG)", args)
        assert not (keyword in ("COPY", "ADD", "ENV", "ARG") and pip_setting), (keyword, args)
        if keyword == "RUN" and "pip install" in args:
            mounts, _ = run_mounts_and_commands(args)
            assert "type=secret,id=pip.conf,target=/etc/pip.conf" in mounts
            assert "type=secret,id=pip-ca,target=/etc/pip-ca.pem" in mounts
            assert "type=cache,target=/root/.cache/pip" in mounts
    script = (ROOT / "hack" / "images.sh").read_text()
    assert "id=pip.conf,src=" in script and "id=pip-ca,src=" in script and "cert = /etc/pip-ca.pem" in script


def test_setup_script_uses_the_same_constraints() -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert re.search(r"pip install .*-c constraints\.txt", setup)


def test_operator_image_has_no_torch() -> None:
    names = [Requirement(r).name for r in PYPROJECT["dependencies"]]
    for extra in TARGET_EXTRAS["operator"]:
        names += [Requirement(r).name for r in PYPROJECT["optional-dependencies"][extra]]
    assert not {"torch", "transformers"} & {canonicalize_name(n) for n in names}


def test_base_image_is_pinned() -> None:
    text = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert match and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", match.group(1)), match


@pytest.mark.parametrize("target", sorted(TARGET_EXTRAS))
def test_target_runs_influence_trace_as_non_root(target: str) -> None:
    instructions = effective(target)
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users, f"{target} sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0)
    useradd = " ".join(args for keyword, args in instructions if keyword == "RUN" and "useradd" in args)
    assert f"--uid {uid}" in useradd
    entry = [json.loads(args) for keyword, args in instructions if keyword == "ENTRYPOINT"]
    assert entry[-1] == ["influence-trace"]
    assert PYPROJECT["scripts"]["influence-trace"] == "influence_trace.cli:main"
    if target == "operator":  # the chart runs the operator image as this user
        deployment = (
            ROOT / "charts" / "influence-trace-operator" / "templates" / "deployment.yaml"
        ).read_text()
        assert f"runAsUser: {uid}" in deployment
        cmd = [json.loads(args) for keyword, args in instructions if keyword == "CMD"]
        assert cmd[-1] == ["operator"]
