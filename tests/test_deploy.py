"""The deployable artifacts of config/deploy (docs/operations.md, "Deploying"), checked as far as this
machine allows: no container runtime runs here, so the image's install steps are run outside Docker
(`test_the_wheel_installs_from_the_lock_and_runs_the_demo`), and the compose file, the Kubernetes
manifests and the systemd unit are read and held to their invariants."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gateway.http.app import create_app
from gateway.http.serving import DRAIN_S
from gateway.registry.model import Registry
from gateway.settings import Settings
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "config" / "deploy"
K8S = DEPLOY / "k8s"
LOCK = DEPLOY / "requirements.txt"
DEV_LOCK = DEPLOY / "requirements-dev.txt"
PYPROJECT = ROOT / "pyproject.toml"


def drain_s() -> float:
    """How long the gateway drains after SIGTERM: the serving constant, or a setting's default where
    gateway/settings.py has one (whichever is longer)."""
    defaults = [
        field.default
        for field in msgspec.structs.fields(Settings)
        if any(word in field.name for word in ("drain", "grace", "shutdown"))
        and isinstance(field.default, int | float)
    ]
    return float(max([DRAIN_S, *defaults]))


@pytest.fixture
def routes(registry: Registry, sqlite_url: str) -> set[str]:
    """Every path the app answers."""
    return {route.path for route in create_app(make_settings(sqlite_url), registry).routes}


# -- lock files ---------------------------------------------------------------------------------------------


def _locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip-compile lock; every requirement must be ``==`` with hashes."""
    pins: dict[str, tuple[str, list[str]]] = {}
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        requirement, *options = line.split(" --hash=")
        pin = Requirement(requirement.strip())
        (spec,) = pin.specifier
        assert spec.operator == "==", f"{path.name}: {requirement} is not pinned with =="
        assert options, f"{path.name}: {requirement} has no --hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h.strip()) for h in options), requirement
        pins[canonicalize_name(pin.name)] = (spec.version, [h.strip() for h in options])
    return pins


def _declared(extra: str | None = None) -> list[Requirement]:
    import tomllib

    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    declared = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [Requirement(text) for text in declared]


@pytest.mark.parametrize(("lock", "extras"), [(LOCK, []), (DEV_LOCK, ["dev"])], ids=["runtime", "dev"])
def test_the_lock_pins_every_declared_dependency_with_hashes(lock: Path, extras: list[str]) -> None:
    pins = _locked(lock)
    assert "bash config/deploy/lock.sh" in lock.read_text(encoding="utf-8"), "regenerate with lock.sh"
    for requirement in [*_declared(), *(r for extra in extras for r in _declared(extra))]:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock.name} lacks {name}: run `bash config/deploy/lock.sh`"
        version, _ = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock.name} pins {name}=={version}, outside pyproject.toml's {requirement}: "
            "run `bash config/deploy/lock.sh`"
        )


def test_tests_run_the_versions_that_ship() -> None:
    runtime, dev = _locked(LOCK), _locked(DEV_LOCK)
    differ = {name: (runtime[name][0], dev[name][0]) for name in runtime if dev[name][0] != runtime[name][0]}
    assert not differ


def test_ci_and_the_readme_install_from_the_dev_lock() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_screen = re.search(r"```sh\n(.*?)```", readme, re.S)
    assert first_screen
    commands = [x for x in first_screen.group(1).splitlines() if x.strip() and not x.startswith("#")]
    assert len(commands) == 2, "the README's first screen has two commands: the demo, the tests"
    tests = commands[1]
    assert "--require-hashes -r config/deploy/requirements-dev.txt" in tests
    assert "--no-deps -e ." in tests
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert tests in ci_lines, ".ci/run must run the README's test command, as written"


# -- the demo's registry ------------------------------------------------------------------------------------


def test_the_packaged_example_registry_is_the_documented_one() -> None:
    documented = ROOT / "config" / "registry.example.yaml"
    packaged = ROOT / "gateway" / "registry" / "example.yaml"
    assert packaged.read_bytes() == documented.read_bytes(), (
        "gateway/registry/example.yaml (what `gateway demo` reads) differs from "
        "config/registry.example.yaml: cp config/registry.example.yaml gateway/registry/example.yaml"
    )


# -- Dockerfile ---------------------------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines = [x for x in path.read_text(encoding="utf-8").splitlines() if not x.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (x.strip().partition(" ") for x in joined.splitlines() if x.strip())
    ]


def test_the_image_is_multi_stage_non_root_and_installs_from_the_lock(routes: set[str]) -> None:
    dockerfile = DEPLOY / "Dockerfile"
    steps = _instructions(dockerfile)
    stages = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    assert len(stages) >= 2
    final = steps[stages[-1] :]
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    kept = {x[1:].rstrip("/") for x in ignore if x.startswith("!")}
    copied: dict[str, str] = {}  # destination file -> source, in the final stage
    for index, (word, args) in enumerate(steps):
        if word != "COPY" or args.startswith("--from"):
            continue
        *sources, destination = shlex.split(args)
        for source in sources:
            assert list(ROOT.glob(source)), f"COPY {source}: no such file in the repository"
            assert source.rstrip("/") in kept, f"Dockerfile.dockerignore leaves {source} out of the context"
            if index > stages[-1]:
                copied[destination.rstrip("/") + "/" + Path(source).name] = source
    runs = " ".join(args for word, args in final if word == "RUN")
    install = re.search(r"sh (\S+/install\.sh) (\S+) (\S+) (\S+)", runs)
    assert install, "the final stage installs with config/deploy/install.sh"
    script, _, requirements, _ = install.groups()
    assert copied.get(script) == "config/deploy/install.sh"
    assert copied.get(requirements) == "config/deploy/requirements.txt"
    assert "--require-hashes" in (DEPLOY / "install.sh").read_text(encoding="utf-8")
    user = [args for word, args in final if word == "USER"]
    assert user
    assert user[-1].split(":")[0] not in ("0", "root")
    (healthcheck,) = [args for word, args in final if word == "HEALTHCHECK"]
    assert re.search(r"http://127\.0\.0\.1:8000(/\w+)", healthcheck)[1] in routes  # type: ignore[index]
    (entrypoint,) = [json.loads(args) for word, args in final if word == "ENTRYPOINT"]
    assert entrypoint[:2] == ["gateway", "serve"]
    assert "--no-migrate" in dockerfile.read_text(encoding="utf-8")


# -- compose ------------------------------------------------------------------------------------------------


def test_compose_runs_two_replicas_after_a_one_shot_migration() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "gateway"} <= set(services)
    migrate, gateway = services["migrate"], services["gateway"]
    assert migrate["entrypoint"] == ["gateway", "db", "upgrade"]
    assert migrate["restart"] == "no"
    assert gateway["deploy"]["replicas"] == 2
    assert "--no-migrate" in gateway["command"]
    assert gateway["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert _seconds(gateway["stop_grace_period"]) > drain_s()
    for service in (migrate, gateway):
        (registry,) = service["volumes"]
        assert registry["read_only"] is True
        assert registry["target"] == "/etc/gateway/registry.yaml"
        assert (DEPLOY / f"{service['env_file']}.example").is_file()
    assert (DEPLOY / f"{services['postgres']['env_file']}.example").is_file()
    gitignore = (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    assert "config/deploy/gateway.env" in gitignore
    assert "config/deploy/postgres.env" in gitignore


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, duration
    return float(match[1])


# -- Kubernetes ---------------------------------------------------------------------------------------------


def _kustomization(folder: Path) -> Iterator[dict[str, Any]]:
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    for resource in kustomization["resources"]:
        yield from yaml.safe_load_all((folder / resource).read_text(encoding="utf-8"))


def _of_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [x for x in documents if x["kind"] == kind]
    return found


def test_the_deployment_drains_probes_and_reloads_within_its_grace(routes: set[str]) -> None:
    documents = list(_kustomization(K8S))
    deployment = _of_kind(documents, "Deployment")
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    containers = {c["name"]: c for c in spec["containers"]}
    gateway = containers["gateway"]
    assert "--no-migrate" in gateway["args"]
    ports = {p["name"]: p for p in gateway["ports"]}
    port, admin = ports["http"], ports["admin"]
    env = {x["name"]: x["value"] for x in gateway["env"]}

    for probe in ("readinessProbe", "livenessProbe"):
        check = gateway[probe]["httpGet"]
        assert check["path"] in routes, f"{probe} asks {check['path']}, which the app does not serve"
        assert check["port"] in (port["name"], port["containerPort"])
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"

    pre_stop = gateway["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert spec["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain_s()

    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    for container in spec["containers"]:
        assert container["resources"]["requests"]["cpu"]
        assert container["resources"]["requests"]["memory"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False

    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    # Scraped on the admin port, the one that serves /metrics once GATEWAY_ADMIN_PORT is set.
    assert int(annotations["prometheus.io/port"]) == admin["containerPort"] == int(env["GATEWAY_ADMIN_PORT"])
    assert annotations["prometheus.io/path"] == "/metrics"

    # The registry: a ConfigMap volume, read-only where GATEWAY_CONFIG points, which every replica watches.
    (volume,) = [v for v in spec["volumes"] if "configMap" in v]
    (mount,) = [m for m in gateway["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    assert "subPath" not in mount, "a subPath mount never sees the ConfigMap's updates"
    assert str(Path(mount["mountPath"]) / "registry.yaml") == env["GATEWAY_CONFIG"]
    assert float(env["GATEWAY_REGISTRY_WATCH_S"]) > 0
    assert set(containers) == {"gateway"}, "no reloader beside the gateway: it watches its file itself"

    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    budget = _of_kind(documents, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]
    service = _of_kind(documents, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= {port["name"], port["containerPort"]}
    assert admin["containerPort"] != port["containerPort"]  # the Service never exposes the admin port


def test_the_migration_job_upgrades_the_schema_as_non_root() -> None:
    job = _of_kind(list(_kustomization(K8S / "migrate")), "Job")
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"] == ["gateway", "db", "upgrade"]
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert "pre-upgrade" in job["metadata"]["annotations"]["helm.sh/hook"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders the kustomizations")
@pytest.mark.parametrize("folder", [K8S, K8S / "migrate"], ids=["gateway", "migrate"])
def test_kustomize_renders(folder: Path) -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=60, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    kinds = {x["kind"] for x in yaml.safe_load_all(rendered.stdout)}
    gateway = {"Deployment", "Service", "PodDisruptionBudget"}
    assert kinds == ({"Job"} if folder.name == "migrate" else gateway)


# -- systemd ------------------------------------------------------------------------------------------------


def _unit(text: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_the_systemd_unit_is_hardened_and_migrates_first() -> None:
    unit = _unit((DEPLOY / "systemd" / "gateway.service").read_text(encoding="utf-8"))
    assert unit["User"] not in (["root"], ["0"])
    assert unit["EnvironmentFile"]
    assert any(x.endswith("gateway db upgrade") for x in unit["ExecStartPre"])
    (start,) = unit["ExecStart"]
    assert "gateway serve --no-migrate" in start
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["NoNewPrivileges"] == ["yes"]
    assert unit["ProtectSystem"] == ["strict"]
    assert float(unit["TimeoutStopSec"][0]) > drain_s()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze verifies units")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # verify insists that the commands exist: the one this test runs with stands in for /opt/gateway's
    gateway = Path(sys.executable).parent / "gateway"
    unit = (DEPLOY / "systemd" / "gateway.service").read_text(encoding="utf-8")
    (tmp_path / "gateway.service").write_text(unit.replace("/opt/gateway/bin/gateway", str(gateway)))
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "gateway.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (verified.returncode, verified.stderr) == (0, "")


# -- the image's install steps, outside Docker --------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.slow
def test_the_wheel_installs_from_the_lock_and_runs_the_demo(tmp_path: Path) -> None:
    """What the Dockerfile does, in a clean venv: the wheel built, the runtime lock installed with
    hashes, the wheel without dependencies; then `gateway demo` from outside the repository, which needs
    everything the wheel must carry (the example registry, templates, migrations)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "VIRTUAL_ENV"))}
    # The image compiles every module at install; here that would only double the test's time.
    environ["PIP_COMPILE"] = "false"
    wheels = tmp_path / "dist"

    def run(*command: str | Path) -> None:
        done = subprocess.run(
            [str(x) for x in command], env=environ, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, f"{command}: {done.stderr[-3000:]}"

    # The build stage's context, copied as its COPY steps do: an in-tree build would also pick up stale
    # files from an old build/ folder.
    source = tmp_path / "src"
    shutil.copytree(ROOT / "gateway", source / "gateway", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", source, "-w", wheels)
    (wheel,) = wheels.glob("group_gateway-*.whl")
    venv = tmp_path / "venv"
    run("sh", DEPLOY / "install.sh", venv, LOCK, wheel)
    run(venv / "bin" / "gateway", "--help")

    port, simulator_port = _free_port(), _free_port()
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [venv / "bin" / "gateway", "demo", "--port", str(port), "--simulator-port", str(simulator_port)],
            cwd=tmp_path,  # no config/ here: the registry must come from the package
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 45
        while "demo is running" not in log.read_text(encoding="utf-8", errors="replace"):
            assert demo.poll() is None, log.read_text(encoding="utf-8", errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the demo did not start within 45 s"
            time.sleep(0.2)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 200
        assert all(p["ticket_age_s"] is not None for p in ready.json()["platforms"])
        token = httpx.get(
            f"{base}/v1/authorizers/wxa0000000000001/access-token",
            headers={"Authorization": "Bearer demo-crm-key"},
        )
        assert token.status_code == 200, token.text
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(timeout=40)
        except subprocess.TimeoutExpired:
            demo.kill()
            raise
    assert demo.returncode == 0, log.read_text(encoding="utf-8", errors="replace")[-3000:]
