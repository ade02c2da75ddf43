"""Deploy files (deploy/: image, compose stacks, Kubernetes manifests) agree with the code they run.

Static only, as no container engine runs here: the linters and docker-compose's own loader run as subprocesses,
the kustomizations are rendered by this module, and compared with `kubectl kustomize` where kubectl is installed.
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from app.http import metrics
from app.settings import Settings
from app.settings.docs import field_docs
from app.webhooks.outbound import address_allowed

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_SENTINEL = DEPLOY / "compose.sentinel.yaml"
K8S = DEPLOY / "k8s"
KUSTOMIZATIONS = ("base", "overlays/example", "overlays/sentinel", "overlays/no-keda")
OVERLAYS = ("overlays/example", "overlays/sentinel", "overlays/no-keda")
WITHOUT_KEDA = ("overlays/no-keda",)
"""Kustomizations whose workers run a fixed count instead of KEDA's ScaledObject."""
AWS = DEPLOY / "aws"
VENV_BIN = Path(sys.executable).parent

# Kubernetes releases the manifests must be valid for: the oldest supported (preStop `sleep` is on by default
# from 1.30) and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
# What the files may run besides the project's console scripts (the data stores and the bucket init).
EXTERNAL_COMMANDS = {"valkey-server", "valkey-sentinel", "minio", "mc", "sh"}
# Inside `sh -c` scripts of those containers, besides the commands above.
SHELL_UTILITIES = {"cp", "echo", "exit"}
# Health checks: the API's own (python + urllib, as slim has no curl), the stores' CLIs, and busybox wget in nginx.
HEALTHCHECK_COMMANDS = {"python", "valkey-cli", "mc", "wget"}
CLUSTER_SCOPED_KINDS = {"Namespace"}
# Seconds between the end of the shutdown grace and SIGKILL, for the interpreter to exit.
SHUTDOWN_MARGIN_SECONDS = 5
# The image runs as this numeric user; the pod securityContexts say the same.
APP_UID = 10001


# ---------------------------------------------------------------------------------------------
# What the code defines.
# ---------------------------------------------------------------------------------------------
SETTING_NAMES = set(field_docs())


@functools.cache
def console_scripts() -> frozenset[str]:
    """The project's commands (pyproject.toml [project.scripts]), which the image installs."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return frozenset(pyproject["project"]["scripts"])


@functools.cache
def route_paths() -> frozenset[str]:
    """Paths of the app's routes, as the API builds them."""
    from app.http.app import create_app

    return frozenset(route.path for route in create_app(Settings()).routes)


# ---------------------------------------------------------------------------------------------
# Reading the files.
# ---------------------------------------------------------------------------------------------
def load_all(path: Path) -> list[dict[str, Any]]:
    """Every YAML document of a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def read_env_file(path: Path) -> dict[str, str]:
    """NAME=value lines of an env file (compose's syntax without quotes or interpolation)."""
    pairs = (line.partition("=") for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {name.strip(): value.strip() for name, _, value in pairs}


def run_tool(*args: str | Path) -> str:
    """Run a dev tool installed in this venv; fail the test with its output unless it exits 0."""
    binary = VENV_BIN / str(args[0])
    assert binary.exists(), f"{binary} is missing: `make install` installs the dev dependencies"
    done = subprocess.run([binary, *args[1:]], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode:
        pytest.fail(f"{' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            instructions.append((word.upper(), " ".join(rest.split())))
            pending = ""
    return instructions


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the image's last stage (from its FROM on)."""
    instructions = dockerfile_instructions()
    start = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[start:]


def compose_model(*files: Path) -> dict[str, Any]:
    """The compose project as docker-compose itself loads it (files merged, env files read, every profile on)."""
    args: list[str | Path] = ["docker-compose"]
    for f in files:
        args += ["-f", f]
    return dict(json.loads(run_tool(*args, "--profile", "*", "config", "--format", "json")))


COMPOSE_VARIANTS = {"compose": (COMPOSE,), "compose+sentinel": (COMPOSE, COMPOSE_SENTINEL)}


@functools.cache
def compose_variant(variant: str) -> dict[str, Any]:
    return compose_model(*COMPOSE_VARIANTS[variant])


# ---------------------------------------------------------------------------------------------
# kustomize, the part these files use: resources, namespace, images, strategic-merge patches by kind and name.
# ---------------------------------------------------------------------------------------------
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}


def merge_patch(target: Any, patch: Any) -> Any:
    """Strategic merge as kustomize does it for these files: maps merge, lists of named maps merge by name."""
    if isinstance(target, dict) and isinstance(patch, dict):
        merged = dict(target)
        for key, value in patch.items():
            merged[key] = merge_patch(target[key], value) if key in target else copy.deepcopy(value)
        return merged
    named = all(isinstance(item, dict) and "name" in item for item in [*target, *patch])
    if isinstance(target, list) and isinstance(patch, list) and named:
        by_name = {item["name"]: item for item in target}
        merged_list = [merge_patch(item, by_name[item["name"]]) for item in target]
        for item in patch:
            if item["name"] in by_name:
                merged_list = [merge_patch(m, item) if m["name"] == item["name"] else m for m in merged_list]
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


def containers_of(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] != "Deployment":
        return []
    spec = obj["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def split_image(image: str) -> tuple[str, str]:
    """(name, tag) of an image reference; a registry port is not a tag."""
    name, sep, tag = image.rpartition(":")
    return (name, tag) if sep and "/" not in tag else (image, "")


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize directory` prints (in file order)."""
    kustomization = load_all(directory / "kustomization.yaml")[0]
    unknown = set(kustomization) - KUSTOMIZE_FIELDS
    assert not unknown, f"{directory}: this test's renderer does not implement {sorted(unknown)}; add it here"
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        objects += render(path) if path.is_dir() else load_all(path)
    for patch_ref in kustomization.get("patches", []):
        assert set(patch_ref) == {"path"}, f"{directory}: only file patches are rendered here: {patch_ref}"
        for patch in load_all(directory / patch_ref["path"]):
            key = (patch["kind"], patch["metadata"]["name"])
            matches = [i for i, obj in enumerate(objects) if (obj["kind"], obj["metadata"]["name"]) == key]
            assert len(matches) == 1, f"{directory}: patch {patch_ref['path']} must match one object, not {matches}"
            if patch.get("$patch") == "delete":  # strategic merge's directive: the object is removed
                del objects[matches[0]]
            else:
                objects[matches[0]] = merge_patch(objects[matches[0]], patch)
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED_KINDS:
                obj["metadata"]["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images", []):
        for container in (c for obj in objects for c in containers_of(obj)):
            name, tag = split_image(container["image"])
            if name == image["name"]:
                new_tag = image.get("newTag", tag)
                container["image"] = image.get("newName", name) + (f":{new_tag}" if new_tag else "")
    return objects


@functools.cache
def rendered(kustomization: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(K8S / kustomization))


def the(objects: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def pod_env(objects: tuple[dict[str, Any], ...]) -> dict[str, str]:
    """The SPATIALGEN_* environment the pods get from the ConfigMap and the Secret."""
    env: dict[str, str] = {}
    for obj in objects:
        if obj["kind"] == "ConfigMap":
            env |= obj.get("data", {})
        elif obj["kind"] == "Secret":
            env |= obj.get("stringData", {})
    return env


def selects(selector: dict[str, str], deployment: dict[str, Any]) -> bool:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in selector.items())


def selected_deployment(objects: tuple[dict[str, Any], ...], selector: dict[str, str], what: str) -> dict[str, Any]:
    """The one Deployment whose pods `selector` selects."""
    hits = [d for d in the(objects, "Deployment") if selects(selector, d)]
    assert len(hits) == 1, f"{what}: selector {selector} must select the pods of one Deployment, not {len(hits)}"
    return hits[0]


def container_ports(deployment: dict[str, Any]) -> set[str | int]:
    ports = [p for c in containers_of(deployment) for p in c.get("ports", [])]
    return {p["containerPort"] for p in ports} | {p["name"] for p in ports if "name" in p}


def probes(deployment: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for container in containers_of(deployment):
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            if kind in container:
                yield kind, container[kind]


# ---------------------------------------------------------------------------------------------
# Linters.
# ---------------------------------------------------------------------------------------------
def test_yamllint_passes_over_deploy() -> None:
    run_tool("yamllint", "--strict", "-c", ROOT / ".yamllint", "deploy", ".yamllint")


def test_hadolint_passes_on_the_dockerfile() -> None:
    run_tool("hadolint", DOCKERFILE)


# ---------------------------------------------------------------------------------------------
# Across all deploy files.
# ---------------------------------------------------------------------------------------------
def deploy_files() -> list[Path]:
    """The files of deploy/ apart from deploy/local (the dev stack's Python, which has dev-only variables)."""
    return [p for p in sorted(DEPLOY.rglob("*")) if p.is_file() and DEPLOY / "local" not in p.parents]


def test_every_setting_named_in_deploy_files_exists() -> None:
    used: dict[str, set[str]] = {}
    for path in deploy_files():
        for name in re.findall(r"\bSPATIALGEN_[A-Z0-9_]+", path.read_text()):
            used.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert used, "no SPATIALGEN_* names found: is the scan broken?"
    unknown = {name: sorted(files) for name, files in sorted(used.items()) if name not in SETTING_NAMES}
    assert not unknown, "SPATIALGEN_* names used in deploy/ that app.settings.Settings does not define:\n" + "\n".join(
        f"  {name}  (in {', '.join(files)})" for name, files in unknown.items()
    )


# ---------------------------------------------------------------------------------------------
# The image.
# ---------------------------------------------------------------------------------------------
def test_image_is_multi_stage_slim_non_root_and_locked() -> None:
    instructions = dockerfile_instructions()
    args = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for w, a in instructions if w == "ARG")))
    froms = [a for w, a in instructions if w == "FROM"]
    assert len(froms) >= 2, "a build stage and a runtime stage"
    runtime = final_stage()
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], runtime[0][1].split()[0])
    assert base.startswith("python:3.11") and "-slim" in base, f"final stage must be python:3.11 slim, not {base}"
    final_text = " ".join(a for _, a in runtime)
    assert not re.search(r"apt-get install|\bgcc\b|build-essential|\buv\b", final_text), "no tools in the final stage"
    # Dependencies only from uv.lock, without the dev group, the project installed as a package.
    syncs = [a for w, a in instructions if w == "RUN" and "uv sync" in a]
    assert syncs and all("--frozen" in s and "--no-dev" in s for s in syncs), syncs
    assert "--no-editable" in syncs[-1]
    users = [a for w, a in runtime if w == "USER"]
    assert users, "the final stage sets a USER"
    uid = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], users[-1]).split(":")[0]
    assert uid.isdigit() and int(uid) == APP_UID, f"numeric non-root user, not {users[-1]!r}"
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for w, a in runtime if w == "ENV")))
    assert env["SPATIALGEN_HOST"] == "0.0.0.0"
    assert [a for w, a in runtime if w == "EXPOSE"] == [env["SPATIALGEN_PORT"]] == [str(Settings().server.port)]


def test_image_runs_the_console_scripts_and_checks_a_real_route() -> None:
    runtime = final_stage()
    assert not [a for w, a in runtime if w == "ENTRYPOINT"], "no ENTRYPOINT: `docker run IMAGE spatialgen-worker`"
    cmd = json.loads(next(a for w, a in runtime if w == "CMD"))
    assert cmd == ["spatialgen-api"] and cmd[0] in console_scripts()
    healthcheck = next(a for w, a in runtime if w == "HEALTHCHECK")
    check = json.loads(healthcheck[healthcheck.index("CMD ") + 4 :])
    assert check[0] in HEALTHCHECK_COMMANDS
    assert http_paths(" ".join(check)) == ["/health/live"]


def test_build_context_lets_in_exactly_what_the_image_copies() -> None:
    patterns = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert patterns[0] == "*", ".dockerignore is an allow-list"
    allowed = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for word, arg in dockerfile_instructions():
        if word == "COPY" and not arg.startswith("--from"):
            copied |= {src.rstrip("/") for src in arg.split()[:-1]}
    assert copied == allowed
    assert all((ROOT / src).exists() for src in copied)


# ---------------------------------------------------------------------------------------------
# Commands and health checks, wherever they are written.
# ---------------------------------------------------------------------------------------------
def http_paths(text: str) -> list[str]:
    """URL paths in a health-check command: http://host:port/path, or a quoted '/path' joined to a URL."""
    return [a or b for a, b in re.findall(r"https?://[^/\s'\"]+(/[\w./-]*)|['\"](/[\w./-]+)['\"]", text)]


def check_command(argv: list[str], own_image: bool, where: str) -> None:
    """A command is one of the console scripts (our image) or an allowed external tool (`sh -c` scripts too)."""
    assert argv, f"{where}: empty command"
    if own_image:
        assert argv[0] in console_scripts(), f"{where}: {argv[0]!r} is not a console script of pyproject.toml"
        return
    assert argv[0] in EXTERNAL_COMMANDS, f"{where}: {argv[0]!r} is not an allowed external command"
    if argv[0] == "sh":
        assert argv[1] == "-c" and len(argv) == 3, f"{where}: sh runs one -c script"
        for words in script_commands(argv[2]):
            program = words[1] if words[0] == "exec" else words[0]
            assert program in EXTERNAL_COMMANDS - {"sh"} | SHELL_UTILITIES, f"{where}: script runs {program!r}"


SHELL_SEPARATORS = {";", "&&", "||", "|", "(", "{", "}", ")", "!", "then", "else", "do"}
REDIRECTIONS = {">", ">>", "<", ">&", "<&"}


def skip_to(tokens: Iterator[str], ends: set[str]) -> None:
    """Consume tokens up to and including the first of `ends`."""
    for token in tokens:
        if token in ends:
            return


def script_commands(script: str) -> list[list[str]]:
    """The simple commands of a `sh -c` script, in order, each as its words: lists, `{ }` groups, `$( )`, `case`.

    Enough shell for these files: assignments before a command and redirections are dropped, case patterns skipped.
    """
    commands: list[list[str]] = [[]]
    tokens = iter(shlex.shlex(script, posix=True, punctuation_chars=True))
    for token in tokens:
        current = commands[-1]
        if token in SHELL_SEPARATORS | {";;", "esac", "fi", "$"}:
            commands.append([])
            if token == ";;":
                skip_to(tokens, {")", "esac"})  # the next case pattern
        elif token == "case" and not current:
            skip_to(tokens, {")"})  # `case WORD in PATTERN)`
        elif token in REDIRECTIONS:
            next(tokens)
            if current and current[-1].isdigit():
                current.pop()  # the descriptor of `2>&1`
        elif current or not token.endswith("="):  # NAME=$(…): the command is the substitution's
            current.append(token)
    return [words for words in commands if words]


# ---------------------------------------------------------------------------------------------
# Compose.
# ---------------------------------------------------------------------------------------------
def own_services(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    image = model["services"]["api"]["image"]
    return {name: svc for name, svc in model["services"].items() if svc["image"] == image}


@pytest.mark.parametrize("variant", COMPOSE_VARIANTS)
def test_compose_runs_the_stack_the_spec_asks_for(variant: str) -> None:
    model = compose_variant(variant)
    services = model["services"]
    ours = own_services(model)
    assert set(ours) == {"api", "worker", "admin"}
    assert services["api"]["build"] == {"context": str(ROOT), "dockerfile": "deploy/Dockerfile"}
    assert services["api"]["deploy"]["replicas"] == 2 and services["worker"]["deploy"]["replicas"] == 2
    assert services["admin"]["profiles"] == ["tools"], "the CLI runs on demand only"
    env_file = read_env_file(DEPLOY / "compose.env")
    for name, svc in ours.items():
        assert env_file.items() <= svc["environment"].items(), f"{name}: settings come from compose.env"
        Settings.from_env(svc["environment"])  # exits on a malformed value
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"] and svc["tmpfs"] == ["/tmp"], name
        for dep, condition in (("valkey", "service_healthy"), ("minio-init", "service_completed_successfully")):
            assert svc["depends_on"][dep]["condition"] == condition, f"{name} waits for {dep}"
    grace = Settings.from_env(env_file).server.shutdown_grace_seconds
    for name in ("api", "worker"):
        stop = int(services[name]["stop_grace_period"].removesuffix("s"))
        assert stop >= grace + SHUTDOWN_MARGIN_SECONDS, f"{name}: stop_grace_period {stop}s < grace {grace}s"
    # The store keeps every acknowledged write and never evicts state.
    for name, svc in services.items():
        if (svc.get("command") or [""])[0] == "valkey-server":
            cmd = " ".join(svc["command"])
            assert "--appendonly yes" in cmd and "--maxmemory-policy noeviction" in cmd, name
    # The init step creates the bucket (and the service's MinIO user: see the next test).
    assert "mc mb --ignore-existing" in services["minio-init"]["command"][0]


@pytest.mark.parametrize("variant", COMPOSE_VARIANTS)
def test_compose_gives_the_service_a_minio_user_limited_to_its_bucket(variant: str) -> None:
    services = compose_variant(variant)["services"]
    env_file = read_env_file(DEPLOY / "compose.env")
    root = services["minio"]["environment"]
    init = services["minio-init"]
    # Root credentials: MinIO and its init step only; the service signs with other keys, which MinIO accepts.
    assert {k: init["environment"][k] for k in root} == root
    assert env_file["SPATIALGEN_S3_ACCESS_KEY_ID"] != root["MINIO_ROOT_USER"]
    assert len(env_file["SPATIALGEN_S3_ACCESS_KEY_ID"]) >= 3 and len(env_file["SPATIALGEN_S3_SECRET_ACCESS_KEY"]) >= 8
    for name, svc in own_services({"services": services}).items():
        assert not set(root) & set(svc["environment"]), f"{name} sees MinIO's root credentials"
        assert not set(root.values()) & set(svc["environment"].values()), f"{name} sees MinIO's root credentials"
    # As root: the bucket, the policy, the user with the service's keys, the policy attached to that user.
    assert init["entrypoint"] == ["sh", "-c"] and len(init["command"]) == 1, "one sh -c script"
    script = init["command"][0].replace("$$", "$")  # compose's escape of the shell's $
    key_id, secret = "$SPATIALGEN_S3_ACCESS_KEY_ID", "$SPATIALGEN_S3_SECRET_ACCESS_KEY"
    policy_name, policy_path = "spatialgen-upload", "/etc/spatialgen/minio-policy.json"
    assert script_commands(script) == [
        ["mc", "alias", "set", "local", "$SPATIALGEN_S3_ENDPOINT_URL", "$MINIO_ROOT_USER", "$MINIO_ROOT_PASSWORD"],
        ["mc", "mb", "--ignore-existing", "local/$SPATIALGEN_S3_BUCKET"],
        ["mc", "admin", "policy", "create", "local", policy_name, policy_path],
        ["mc", "admin", "user", "add", "local", key_id, secret],
        ["mc", "admin", "policy", "attach", "local", policy_name, "--user", key_id],
        ["echo", "$attached"],
        ["exit", "1"],
    ]
    # Each step may run again (`up` after `up`): MinIO refuses an attach already in effect with an error (its
    # errNoPolicyToAttachOrDetach), the one failure the script lets through; any other ends it with 1.
    assert " && { attached=$(mc admin policy attach " in script and script.endswith(
        '|| case "$attached" in *"already in effect"*) ;; *) echo "$attached" >&2; exit 1 ;; esac; }'
    )
    # The policy is the production one (exactly the S3 calls the service makes: the test below) on compose's bucket
    # and key prefix.
    (mount,) = [v for v in init["volumes"] if v["target"] == policy_path]
    policy = json.loads(Path(mount["source"]).read_text())
    storage = Settings.from_env(env_file).storage
    production = (AWS / "s3-policy.json").read_text()
    example = Settings.from_env(pod_env(rendered("overlays/example"))).storage
    assert example.key_prefix == storage.key_prefix
    assert policy == json.loads(production.replace(example.bucket, storage.bucket)), "conf/minio-policy.json"


@pytest.mark.parametrize("variant", COMPOSE_VARIANTS)
def test_compose_commands_and_health_checks(variant: str) -> None:
    model = compose_variant(variant)
    ours = own_services(model)
    routes = route_paths()
    for name, svc in model["services"].items():
        argv = [*(svc.get("entrypoint") or []), *(svc.get("command") or [])]
        if argv:
            # $$ is compose's escape of a literal $ (expanded by the container's shell).
            check_command([a.replace("$$", "$") for a in argv], name in ours, f"{variant}: {name}")
        check = svc.get("healthcheck", {})
        if check.get("disable"):
            continue
        if not check:
            # Ours have the image's HEALTHCHECK; a one-shot init step has nothing to check.
            assert name in ours or svc["restart"] == "no", f"{variant}: {name} has no health check"
            continue
        assert check["test"][0] == "CMD" and check["test"][1] in HEALTHCHECK_COMMANDS, f"{name}: {check['test']}"
        paths = http_paths(" ".join(check["test"]))
        assert all(p in routes for p in paths), f"{variant}: {name} checks {paths}, not routes of the app"
        if name in ours:
            assert paths, f"{name}: our containers are checked on a health route"
    assert model["services"]["worker"]["healthcheck"] == {"disable": True}, "a worker has no HTTP port"
    assert "healthcheck" in model["services"]["api"]


def test_compose_gateway_balances_over_the_api_replicas() -> None:
    model = compose_variant("compose")
    gateway = model["services"]["gateway"]
    conf_mount = next(v for v in gateway["volumes"] if v["target"] == "/etc/nginx/conf.d/default.conf")
    conf = Path(conf_mount["source"]).read_text()
    port = Settings.from_env(model["services"]["api"]["environment"]).server.port
    (upstream,) = re.findall(r"^upstream \w+ \{([^}]*)\}", conf, re.M)
    assert re.findall(r"^\s*server\s+(\S+)\s", upstream, re.M) == [f"api:{port}"], "upstream is the api service"
    assert "resolve" in conf, "re-resolve the replicas' addresses"
    assert gateway["depends_on"]["api"]["condition"] == "service_healthy"
    assert [p["published"] for p in gateway["ports"]] == ["8000"]
    assert "ports" not in model["services"]["api"], "the replicas are reached through the gateway only"


def test_compose_sentinel_variant_points_at_its_sentinels() -> None:
    services = compose_variant("compose+sentinel")["services"]
    sentinels = {n for n, s in services.items() if "valkey-sentinel" in " ".join(s.get("command") or [])}
    assert len(sentinels) == 3
    conf = (DEPLOY / "conf" / "sentinel.conf").read_text()
    (port,) = re.findall(r"^port (\d+)$", conf, re.M)
    ((master, host, host_port, quorum),) = re.findall(r"^sentinel monitor (\S+) (\S+) (\d+) (\d+)$", conf, re.M)
    assert services[host]["command"][0] == "valkey-server" and host_port == "6379"
    assert len(sentinels) // 2 < int(quorum) <= len(sentinels)
    replica = " ".join(services["valkey-replica"]["command"])
    assert f"--replicaof {host} {host_port}" in replica
    for name, svc in own_services({"services": services}).items():
        env = svc["environment"]
        listed = env["SPATIALGEN_REDIS_SENTINELS"].split(",")
        assert sorted(listed) == sorted(f"{s}:{port}" for s in sentinels), name
        assert env["SPATIALGEN_REDIS_SENTINEL_MASTER"] == master, name
        assert int(env["SPATIALGEN_REDIS_WRITE_REPLICAS"]) >= 1
        assert all(svc["depends_on"][s]["condition"] == "service_healthy" for s in sentinels)


# ---------------------------------------------------------------------------------------------
# Kubernetes.
# ---------------------------------------------------------------------------------------------
def check_scaled_object(obj: dict[str, Any]) -> None:
    """KEDA's ScaledObject is a CRD (no schema here): the fields KEDA requires, and the prometheus trigger's."""
    assert obj["apiVersion"] == "keda.sh/v1alpha1" and obj["metadata"]["name"]
    spec = obj["spec"]
    assert spec["scaleTargetRef"]["name"]
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["triggers"], "at least one trigger"
    for trigger in spec["triggers"]:
        assert trigger["type"] == "prometheus"
        meta = trigger["metadata"]
        assert {"serverAddress", "query", "threshold"} <= set(meta)
        assert all(isinstance(v, str) for v in meta.values()), "trigger metadata values are strings"
        assert re.match(r"https?://", meta["serverAddress"])
        float(meta["threshold"])


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_kubernetes_object_is_valid(kustomization: str) -> None:
    objects = rendered(kustomization)
    assert objects
    problems = []
    for obj in objects:
        if obj["kind"] == "ScaledObject":
            check_scaled_object(obj)
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = "/".join(map(str, exc.absolute_path))
                problems.append(f"{obj['kind']}/{obj['metadata']['name']} (k8s {version}) at {where}: {exc.message}")
    assert not problems, f"{kustomization}:\n" + "\n".join(problems)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_kubernetes_objects_refer_to_each_other_consistently(kustomization: str) -> None:
    objects = rendered(kustomization)
    deployments = {d["metadata"]["name"]: d for d in the(objects, "Deployment")}
    assert set(deployments) == {"spatialgen-api", "spatialgen-worker"}
    for name, deployment in deployments.items():
        assert selected_deployment(objects, deployment["spec"]["selector"]["matchLabels"], name) is deployment
    images = {c["image"] for d in deployments.values() for c in containers_of(d)}
    assert len(images) == 1, f"one image runs the API and the workers: {images}"
    for service in the(objects, "Service"):
        target = selected_deployment(objects, service["spec"]["selector"], f"Service {service['metadata']['name']}")
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports(target), f"Service port {port} is no container port"
    budgets = [
        selected_deployment(objects, pdb["spec"]["selector"]["matchLabels"], f"PDB {pdb['metadata']['name']}")
        for pdb in the(objects, "PodDisruptionBudget")
    ]
    assert sorted(d["metadata"]["name"] for d in budgets) == sorted(deployments), "one PDB per Deployment"
    autoscaled = [o["spec"]["scaleTargetRef"] for o in [*the(objects, "HorizontalPodAutoscaler"),
                                                         *the(objects, "ScaledObject")]]  # fmt: skip
    fixed = {name for name, d in deployments.items() if "replicas" in d["spec"]}
    assert fixed == ({"spatialgen-worker"} if kustomization in WITHOUT_KEDA else set()), fixed
    assert sorted(ref["name"] for ref in autoscaled) == sorted(set(deployments) - fixed), (
        "each Deployment has one autoscaler, or a fixed count"
    )
    for ref in autoscaled:
        assert ref.get("kind", "Deployment") == "Deployment" and ref.get("apiVersion", "apps/v1") == "apps/v1"
        assert "replicas" not in deployments[ref["name"]]["spec"], "the autoscaler owns the replica count"
    (hpa,) = the(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "spatialgen-api"
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert hpa["spec"]["minReplicas"] >= 2
    if kustomization in OVERLAYS:  # the base leaves the Secret to its overlays
        present = {(o["kind"], o["metadata"]["name"]) for o in objects}
        for deployment in deployments.values():
            for container in containers_of(deployment):
                for source in container.get("envFrom", []):
                    ((kind, ref),) = source.items()
                    wanted = ("ConfigMap" if kind == "configMapRef" else "Secret", ref["name"])
                    assert wanted in present, f"{deployment['metadata']['name']} reads missing {wanted}"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_pods_run_the_console_scripts_with_probes_on_real_routes(kustomization: str) -> None:
    objects = rendered(kustomization)
    routes = route_paths()
    settings = Settings.from_env(pod_env(objects))
    for deployment in the(objects, "Deployment"):
        name = deployment["metadata"]["name"]
        for container in containers_of(deployment):
            check_command([*container.get("command", []), *container.get("args", [])], True, name)
            for hook in container.get("lifecycle", {}).values():
                assert set(hook) == {"sleep"}, f"{name}: lifecycle hooks only sleep (nothing else is in the image)"
        ports = container_ports(deployment)
        for kind, probe in probes(deployment):
            assert probe["httpGet"]["path"] in routes, f"{name} {kind}: {probe['httpGet']['path']} is no route"
            assert probe["httpGet"]["port"] in ports, f"{name} {kind}: port {probe['httpGet']['port']} is not exposed"
        if ports:
            assert settings.server.port in ports, f"{name}: containerPort is SPATIALGEN_PORT ({settings.server.port})"
            paths = {kind: probe["httpGet"]["path"] for kind, probe in probes(deployment)}
            # Liveness must not depend on Redis or S3: an outage would restart every API pod at once.
            assert paths["livenessProbe"] == "/health/live" and paths["readinessProbe"] == "/health/ready"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_pods_are_locked_down_sized_spread_and_shut_down_gracefully(kustomization: str) -> None:
    objects = rendered(kustomization)
    grace = Settings.from_env(pod_env(objects)).server.shutdown_grace_seconds
    for deployment in the(objects, "Deployment"):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == APP_UID
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        # Service links would add SERVICE_NAME_PORT=tcp://… variables, and our settings share that namespace.
        assert pod["enableServiceLinks"] is False and pod["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["capabilities"] == {"drop": ["ALL"]}, name
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: a writable /tmp on a read-only root"
            for section in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][section]), f"{name}: {section}"
            pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            needed = pre_stop + grace + SHUTDOWN_MARGIN_SECONDS
            assert pod["terminationGracePeriodSeconds"] >= needed, f"{name}: SIGKILL before the shutdown grace ends"
        if container_ports(deployment):
            assert pre_stop > 0, f"{name}: preStop sleep while the endpoint removal propagates"
        spread = pod["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        assert all(selects(c["labelSelector"]["matchLabels"], deployment) for c in spread), name


@pytest.mark.parametrize("kustomization", [k for k in KUSTOMIZATIONS if k not in WITHOUT_KEDA])
def test_workers_scale_on_the_queue_depth_the_api_exports(kustomization: str) -> None:
    objects = rendered(kustomization)
    settings = Settings.from_env(pod_env(objects))
    (scaled,) = the(objects, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "spatialgen-worker"
    assert scaled["spec"]["minReplicaCount"] >= 1, "cron sweeps need a worker at all times"
    (trigger,) = scaled["spec"]["triggers"]
    query = trigger["metadata"]["query"]
    # Every API pod exports the same Redis-backed value: max across pods, never sum.
    match = re.fullmatch(r"max\((\w+)\{([^}]*)\}\)", query)
    assert match, f"query {query!r} is max(metric{{labels}})"
    metric, labels = match.group(1), dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
    assert labels == {"queue": settings.worker.queue_name, "state": "due"}
    # The series the query selects is one the API's /metrics really writes for these settings.
    queues = dict.fromkeys(settings.worker.queues, (7, 0))
    exposition = metrics.ApiMetrics().render(metrics.SharedCounts(queues, 0, 0, {}))[0].decode()
    label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # prometheus_client sorts labels
    series = rf"^{metric}\{{{label_text}\}} 7(\.0)?$"
    assert re.search(series, exposition, re.M), f"{metric}{{{label_text}}} not exported"
    assert float(trigger["metadata"]["threshold"]) == settings.worker.worker_max_jobs, (
        "one pod per WORKER_MAX_JOBS due jobs"
    )


def test_overlays_settings_are_valid_and_mark_their_example_values() -> None:
    for kustomization in OVERLAYS:
        env = pod_env(rendered(kustomization))
        Settings.from_env(env)  # exits on a malformed value
        (secret,) = the(rendered(kustomization), "Secret")
        assert all("EXAMPLE" in value for value in secret["stringData"].values()), "Secret values are examples"
        images = {c["image"] for d in the(rendered(kustomization), "Deployment") for c in containers_of(d)}
        assert images == {"registry.example.com/spatialgen/upload:0.1.0"}
    assert "SPATIALGEN_REDIS_SENTINELS" in pod_env(rendered("overlays/sentinel"))
    assert "SPATIALGEN_REDIS_SENTINELS" not in pod_env(rendered("overlays/example"))


@pytest.mark.parametrize("kustomization", WITHOUT_KEDA)
def test_without_keda_the_workers_run_a_fixed_count_and_nothing_needs_keda(kustomization: str) -> None:
    objects = rendered(kustomization)
    assert not [o for o in objects if o["apiVersion"].startswith("keda.sh/")], "no KEDA resource left"
    (worker,) = [d for d in the(objects, "Deployment") if d["metadata"]["name"] == "spatialgen-worker"]
    (budget,) = [b for b in the(objects, "PodDisruptionBudget") if b["metadata"]["name"] == "spatialgen-worker"]
    # The cron sweeps need a worker while another is replaced, and the budget lets one go at a time.
    assert worker["spec"]["replicas"] >= 2 and budget["spec"]["maxUnavailable"] == 1
    # Everything else is the example overlay's.
    example = {(o["kind"], o["metadata"]["name"]) for o in rendered("overlays/example")}
    assert {(o["kind"], o["metadata"]["name"]) for o in objects} == example - {("ScaledObject", "spatialgen-worker")}


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_the_ingress_serves_the_api_over_tls_and_keeps_metrics_inside(kustomization: str) -> None:
    objects = rendered(kustomization)
    (ingress,) = the(objects, "Ingress")
    services = {s["metadata"]["name"]: s for s in the(objects, "Service")}
    hosts = {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
    routed = []
    for rule in ingress["spec"]["rules"]:
        assert rule["host"] in hosts, f"{rule['host']} is served without TLS"
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            ports = services[backend["name"]]["spec"]["ports"]
            assert backend["port"] in ({"name": p["name"]} for p in ports) or backend["port"] in (
                {"number": p["port"]} for p in ports
            ), backend
            routed.append(path["path"])
    routes = route_paths()
    assert {"/api", "/schema"} <= set(routed) and all(any(r.startswith(p) for r in routes) for p in routed)
    # /metrics and the probes have no API key: they stay inside the cluster.
    assert not [p for p in routed if "/metrics".startswith(p) or "/health/live".startswith(p)], routed
    # The proxy lets through a body the API refuses itself (413 problem+json), not its own HTML error page.
    limit = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert int(limit.removesuffix("m")) * 1024**2 > Settings.from_env(pod_env(objects)).api.max_body_bytes


# ---------------------------------------------------------------------------------------------
# Kubernetes: the ports, and who may connect to what (NetworkPolicy).
# ---------------------------------------------------------------------------------------------
ANYWHERE = "anywhere"
"""A NetworkPolicy peer list that is absent or empty: every source or destination."""
MONITORING_NAMESPACE = "monitoring"
"""Where Prometheus runs, as base/worker-scaledobject.yaml and base/api-networkpolicy.yaml assume it."""


def port_number(deployment: dict[str, Any], port: str | int) -> int:
    """A container port of the Deployment's pods by name or number, as its number."""
    for container in containers_of(deployment):
        for p in container.get("ports", []):
            if port in (p["containerPort"], p.get("name")):
                return int(p["containerPort"])
    raise AssertionError(f"{deployment['metadata']['name']} has no container port {port!r}")


def namespace_peer(namespace: str) -> dict[str, Any]:
    """The peer that selects every pod of one namespace (by the label Kubernetes sets on each namespace)."""
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}


def policy_rules(objects: tuple[dict[str, Any], ...], deployment: dict[str, Any], direction: str) -> list[Any]:
    """The NetworkPolicy rules of one direction (Ingress/Egress) that apply to the Deployment's pods, as
    (ports: {(number, protocol)} or ANYWHERE, peers: list or ANYWHERE); None if no policy isolates them."""
    key, peers_key = {"Ingress": ("ingress", "from"), "Egress": ("egress", "to")}[direction]
    rules: list[Any] | None = None
    for policy in the(objects, "NetworkPolicy"):
        spec = policy["spec"]
        if direction in spec["policyTypes"] and selects(spec["podSelector"].get("matchLabels", {}), deployment):
            rules = rules or []
            for rule in spec.get(key, []):
                ports = rule.get("ports")
                allowed = ANYWHERE if not ports else {
                    (port_number(deployment, p["port"]) if peers_key == "from" else int(p["port"]),
                     p.get("protocol", "TCP")) for p in ports
                }  # fmt: skip
                rules.append((allowed, rule.get(peers_key) or ANYWHERE))
    return rules if rules is not None else [None]


def allows(rules: list[Any], port: int, protocol: str, namespace: str | None, address: str | None = None) -> bool:
    """Whether the rules let a connection through on port/protocol with a pod of `namespace`, or else (None) with
    an address outside the cluster: `address` where an ipBlock peer covers it, any such address where a rule is open
    to every peer."""
    for allowed, peers in rules:
        if allowed != ANYWHERE and (port, protocol) not in allowed:
            continue
        if peers == ANYWHERE or (namespace is not None and namespace_peer(namespace) in peers):
            return True
        if namespace is None and address is not None and any(in_block(p, address) for p in peers):
            return True
    return False


def in_block(peer: dict[str, Any], address: str) -> bool:
    """Whether an ipBlock peer covers the address (in its cidr, in none of its `except` ranges)."""
    block = peer.get("ipBlock")
    if block is None:
        return False
    ip = ipaddress.ip_address(address)
    return ip in ipaddress.ip_network(block["cidr"]) and not any(
        ip in ipaddress.ip_network(cidr) for cidr in block.get("except", [])
    )


def service_namespace(host: str) -> str:
    """The namespace of an in-cluster DNS name: a Service's `name.namespace.svc[.cluster.local]`, or a pod's behind a
    headless Service, `pod.name.namespace.svc[...]`."""
    parts = host.split(".")
    assert "svc" in parts[2:], f"{host} is no in-cluster name with its namespace"
    return parts[parts.index("svc", 2) - 1]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_api_pods_serve_the_api_and_the_ops_port_apart(kustomization: str) -> None:
    objects = rendered(kustomization)
    server = Settings.from_env(pod_env(objects)).server
    assert server.ops_port and server.ops_port != server.port, "the pods serve the operations routes apart"
    api = selected_deployment(objects, {"app.kubernetes.io/component": "api"}, "api")
    assert port_number(api, "http") == server.port and port_number(api, "ops") == server.ops_port
    # Probes on the ops port (the API port answers them 404), and Prometheus told to scrape it there.
    assert {port_number(api, probe["httpGet"]["port"]) for _, probe in probes(api)} == {server.ops_port}
    annotations = api["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(server.ops_port)
    assert annotations["prometheus.io/path"] == "/metrics" in route_paths()
    # Every Service carries the API port only: the ops port is reached on the pods, never through a Service.
    for service in the(objects, "Service"):
        target = selected_deployment(objects, service["spec"]["selector"], service["metadata"]["name"])
        targets = {port_number(target, p["targetPort"]) for p in service["spec"]["ports"]}
        assert targets == {server.port}, f"Service {service['metadata']['name']} exposes {targets}"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_network_policies_let_in_clients_on_the_api_port_and_prometheus_on_the_ops_port(kustomization: str) -> None:
    objects = rendered(kustomization)
    server = Settings.from_env(pod_env(objects)).server
    api = selected_deployment(objects, {"app.kubernetes.io/component": "api"}, "api")
    worker = selected_deployment(objects, {"app.kubernetes.io/component": "worker"}, "worker")
    rules = policy_rules(objects, api, "Ingress")
    assert None not in rules, "the API pods are isolated for ingress"
    # Exactly two openings: the API port from anywhere (every route needs a key), the ops port from Prometheus.
    assert sorted(rules, key=str) == sorted([
        ({(server.port, "TCP")}, ANYWHERE),
        ({(server.ops_port, "TCP")}, [namespace_peer(MONITORING_NAMESPACE)]),
    ], key=str)  # fmt: skip
    assert allows(rules, server.port, "TCP", None) and allows(rules, server.port, "TCP", "anything")
    assert allows(rules, server.ops_port, "TCP", MONITORING_NAMESPACE)
    assert not allows(rules, server.ops_port, "TCP", None) and not allows(rules, server.ops_port, "TCP", "spatialgen")
    # Workers: isolated, and nothing may connect to them.
    assert policy_rules(objects, worker, "Ingress") == [], "worker pods accept no connection"
    # Prometheus is where KEDA queries it.
    for scaled in the(objects, "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            host = re.sub(r"^https?://([^:/]+).*", r"\1", trigger["metadata"]["serverAddress"])
            assert service_namespace(host) == MONITORING_NAMESPACE, host


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_network_policies_let_the_pods_reach_dns_redis_and_storage_only(kustomization: str) -> None:
    objects = rendered(kustomization)
    settings = Settings.from_env(pod_env(objects))
    redis = urlsplit(settings.redis.url)
    storage = urlsplit(settings.storage.endpoint_url)
    storage_port = storage.port or {"https": 443, "http": 80}[storage.scheme]
    sentinels = [s.strip().rpartition(":") for s in settings.redis.sentinels.split(",") if s.strip()]
    for deployment in the(objects, "Deployment"):
        name = deployment["metadata"]["name"]
        rules = policy_rules(objects, deployment, "Egress")
        assert None not in rules, f"{name}: isolated for egress"
        assert all(allowed != ANYWHERE for allowed, _ in rules), f"{name}: every egress rule names its ports"
        assert allows(rules, 53, "UDP", "kube-system") and allows(rules, 53, "TCP", "kube-system"), f"{name}: DNS"
        assert allows(rules, 53, "UDP", None), f"{name}: DNS also where NodeLocal DNSCache answers"
        assert allows(rules, redis.port or 6379, "TCP", service_namespace(redis.hostname or "")), f"{name}: Redis"
        for host, _, port in sentinels:
            assert allows(rules, int(port), "TCP", service_namespace(host)), f"{name}: sentinel {host}:{port}"
        assert allows(rules, storage_port, "TCP", None), f"{name}: storage at {settings.storage.endpoint_url}"
        # Nothing else: no other port to the Redis namespace, no plain HTTP out.
        assert not allows(rules, 22, "TCP", None) and not allows(rules, 80, "TCP", None), name
        assert not allows(rules, 5432, "TCP", service_namespace(redis.hostname or "")), name
    assert bool(sentinels) == (kustomization == "overlays/sentinel")


WEBHOOK_PORT = 443
"""Where deliveries go: endpoints are https:// URLs (app/domain/webhooks.py), on HTTPS's port unless they say."""
PUBLIC_ADDRESSES = ("8.8.8.8", "1.1.1.1", "52.95.110.1", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e")
INTERNAL_ADDRESSES = (
    "10.96.0.1",
    "172.20.0.10",
    "192.168.1.1",
    "100.64.0.10",
    "127.0.0.1",
    "169.254.169.254",
    "100.100.100.200",
    "224.0.0.1",
    "255.255.255.255",
    "::1",
    "fd00:ec2::254",
    "fe80::1",
    "ff02::1",
)


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_network_policies_let_the_workers_alone_deliver_webhooks_to_public_addresses(kustomization: str) -> None:
    objects = rendered(kustomization)
    allow_private = Settings.from_env(pod_env(objects)).webhooks.allow_private_targets
    api = selected_deployment(objects, {"app.kubernetes.io/component": "api"}, "api")
    worker = selected_deployment(objects, {"app.kubernetes.io/component": "worker"}, "worker")
    # With every policy: the workers reach an endpoint at a public address on 443 (the API delivers nothing).
    for address in PUBLIC_ADDRESSES:
        assert allows(policy_rules(objects, worker, "Egress"), WEBHOOK_PORT, "TCP", None, address), address
    # The webhook policy alone, so that narrowing the storage rule (open to any address on 443) keeps deliveries:
    # the workers only, and the addresses the delivery guard allows (app/webhooks/outbound.py), on 443 only.
    (webhooks,) = [p for p in the(objects, "NetworkPolicy") if p["metadata"]["name"] == "spatialgen-egress-webhooks"]
    assert policy_rules((webhooks,), api, "Egress") == [None], "the API pods deliver no webhook"
    rules = policy_rules((webhooks,), worker, "Egress")
    for address in PUBLIC_ADDRESSES + INTERNAL_ADDRESSES:
        guard = address_allowed(ipaddress.ip_address(address), allow_private=allow_private)
        assert allows(rules, WEBHOOK_PORT, "TCP", None, address) == guard, address
        assert not allows(rules, 80, "TCP", None, address), address
    # Every range it leaves out is one the guard refuses (first and last address of each).
    for _, peers in rules:
        for block in (p["ipBlock"] for p in peers):
            for cidr in block.get("except", []):
                network = ipaddress.ip_network(cidr)
                for address in (network[0], network[-1]):
                    assert not address_allowed(address, allow_private=allow_private), (cidr, address)
    assert not allows(rules, WEBHOOK_PORT, "TCP", "spatialgen"), "no pod of the cluster through this policy"


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_overlays_put_every_object_in_the_namespace(kustomization: str) -> None:
    namespaced = [o for o in rendered(kustomization) if o["kind"] not in CLUSTER_SCOPED_KINDS]
    assert {o["metadata"].get("namespace") for o in namespaced} == {"spatialgen"}, [
        (o["kind"], o["metadata"]["name"]) for o in namespaced if o["metadata"].get("namespace") != "spatialgen"
    ]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_kubectl_kustomize_renders_what_this_module_renders(kustomization: str) -> None:
    done = subprocess.run(["kubectl", "kustomize", str(K8S / kustomization)], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    theirs = [doc for doc in yaml.safe_load_all(done.stdout) if doc]

    def by_key(objects: Any) -> dict[tuple[str, str], Any]:
        return {(o["kind"], o["metadata"]["name"]): o for o in objects}

    assert by_key(theirs) == by_key(rendered(kustomization))


# ---------------------------------------------------------------------------------------------
# AWS: the storage permissions and lifecycle rule the README's Deploying section applies.
# ---------------------------------------------------------------------------------------------
S3_CALL_ACTIONS = {
    "head_bucket": "s3:ListBucket",
    "create_multipart_upload": "s3:PutObject",
    "complete_multipart_upload": "s3:PutObject",
    "abort_multipart_upload": "s3:AbortMultipartUpload",
    "list_parts": "s3:ListMultipartUploadParts",
    "list_multipart_uploads": "s3:ListBucketMultipartUploads",
    "list_objects_v2": "s3:ListBucket",
    "head_object": "s3:GetObject",
    "get_object": "s3:GetObject",
    "put_object": "s3:PutObject",
    "delete_objects": "s3:DeleteObject",
}
"""The IAM action each S3 call of app/storage/s3.py needs (AWS's "Actions, resources and condition keys for S3")."""
DEV_ONLY_CALLS = {"create_bucket"}
"""ensure_bucket creates the bucket for the dev stack and the tests; in production it exists beforehand."""
PRESIGNED_ACTIONS = {"s3:PutObject"}
"""Clients PUT parts and single files with URLs the service signs (UploadPart, PutObject): its identity needs it."""
BUCKET_ACTIONS = {"s3:ListBucket", "s3:ListBucketMultipartUploads"}


def test_the_iam_policy_grants_exactly_the_s3_calls_the_service_makes() -> None:
    calls = set(re.findall(r"self\.client\.(\w+)\(", (ROOT / "app" / "storage" / "s3.py").read_text()))
    unknown = calls - set(S3_CALL_ACTIONS) - DEV_ONLY_CALLS
    assert not unknown, f"app/storage/s3.py makes {sorted(unknown)}: add their IAM actions here and to the policy"
    needed = {S3_CALL_ACTIONS[c] for c in calls - DEV_ONLY_CALLS} | PRESIGNED_ACTIONS
    policy = json.loads((AWS / "s3-policy.json").read_text())
    granted: dict[str, set[str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and "Condition" not in statement
        for action in statement["Action"]:
            granted.setdefault(action, set()).add(statement["Resource"])
    assert set(granted) == needed, "least privilege: exactly the calls made"
    env = pod_env(rendered("overlays/example"))
    storage = Settings.from_env(env).storage
    bucket = f"arn:aws:s3:::{storage.bucket}"
    for action, resources in granted.items():
        wanted = bucket if action in BUCKET_ACTIONS else f"{bucket}/{storage.key_prefix}/*"
        assert resources == {wanted}, (action, resources)


def test_the_lifecycle_rule_outlives_every_group() -> None:
    (rule,) = json.loads((AWS / "s3-lifecycle.json").read_text())["Rules"]
    settings = Settings()
    assert rule["Status"] == "Enabled" and rule["Filter"]["Prefix"] == f"{settings.storage.key_prefix}/"
    days = rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
    # Shorter than a group's lifetime, it would abort uploads clients are still sending (storage_upload_gone).
    assert days * 86400 > settings.uploads.session_ttl_seconds
