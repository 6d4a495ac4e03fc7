"""Cross-file checks of the deployment, run by scripts/check-deploy.sh (which first has `docker-compose
config` validate the compose file against the Compose specification).

    check_deploy.py compose CONFIG_JSON   the resolved compose model (`config --format json`)
    check_deploy.py dockerfile            deploy/Dockerfile's structure and build context
    check_deploy.py monitoring CONFIG_JSON  prometheus.yml and Grafana against compose and README
    check_deploy.py workflow              .github/workflows/ci.yml runs what .ci/run runs
    check_deploy.py healthcheck           deploy/healthcheck.sh against a local HTTP server
    check_deploy.py config-table          prints README's configuration table from .env.example

Each check prints what it found wrong and exits 1; it prints nothing else when all is well.
"""

import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROBLEMS = []

# The image every log-analyzer role runs; services built from it are the application services.
APP_DOCKERFILE = "deploy/Dockerfile"
ADMIN_PORT = 9090


def problem(text):
    PROBLEMS.append(text)


def env_example():
    """(name, default, meaning) for every variable of .env.example, in file order."""
    rows, comment = [], []
    for line in (ROOT / ".env.example").read_text().splitlines():
        line = line.strip()
        if not line:
            comment = []
        elif line.startswith("#"):
            comment.append(line.lstrip("# ").strip())
        else:
            name, _, value = line.partition("=")
            rows.append((name.strip(), value.strip(), " ".join(comment)))
            comment = []
    return rows


def app_services(model):
    return {
        name: svc
        for name, svc in model["services"].items()
        if (svc.get("build") or {}).get("dockerfile") == APP_DOCKERFILE
    }


def has_healthcheck(name, svc, model):
    check = svc.get("healthcheck") or {}
    if check.get("disable"):
        return False
    # Application services inherit deploy/Dockerfile's HEALTHCHECK unless they override it.
    return bool(check.get("test")) or name in app_services(model)


def check_compose(config_json):
    model = json.loads(Path(config_json).read_text())
    services = model["services"]
    apps = app_services(model)
    documented = {name for name, _, _ in env_example()}

    for name in ("kafka", "postgres", "redis", "prometheus", "grafana", "migrate", "ingest", "api", "schedule",
                 "generator"):
        if name not in services:
            problem(f"compose: service {name} is missing")

    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            if dep not in services:
                problem(f"compose: {name} depends on {dep}, which is not a service")
                continue
            condition = spec.get("condition")
            target = services[dep]
            if condition == "service_healthy" and not has_healthcheck(dep, target, model):
                problem(f"compose: {name} waits for {dep} to be healthy, but {dep} has no healthcheck")
            if condition == "service_completed_successfully" and target.get("restart", "no") != "no":
                problem(f"compose: {name} waits for one-shot {dep} to complete, but {dep} restarts")

    for name, svc in apps.items():
        for var in (svc.get("environment") or {}):
            if var not in documented:
                problem(f"compose: {name} passes {var}, which .env.example does not list")
        if (svc.get("environment") or {}).get("ADMIN_ADDR") != f"0.0.0.0:{ADMIN_PORT}":
            problem(f"compose: {name} must set ADMIN_ADDR=0.0.0.0:{ADMIN_PORT} for Prometheus")
        for port in svc.get("ports") or []:
            if int(port.get("target", 0)) == ADMIN_PORT:
                problem(f"compose: {name} publishes the admin listener ({ADMIN_PORT}); keep it private")

    ingest = services.get("ingest", {})
    if ingest.get("container_name") or ingest.get("ports"):
        problem("compose: ingest must have no container_name and no ports, or --scale ingest=3 fails")
    if "load" not in (services.get("generator") or {}).get("profiles", []):
        problem("compose: the generator belongs to the `load` profile")
    api_ports = [int(p.get("target", 0)) for p in services.get("api", {}).get("ports") or []]
    if 8080 not in api_ports:
        problem("compose: api must publish 8080")


def dockerfile_stages():
    """[(base image with ARG defaults substituted, [(instruction, arguments)])] of deploy/Dockerfile."""
    text = (ROOT / APP_DOCKERFILE).read_text()
    text = re.sub(r"\\\n", " ", text)
    args, stages = {}, []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif instruction == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), rest.split()[0])
            stages.append((image, []))
        elif stages:
            stages[-1][1].append((instruction, rest.strip()))
    return stages


def check_dockerfile():
    stages = dockerfile_stages()
    if len(stages) < 2:
        problem("Dockerfile: needs a build stage and a runtime stage")
        return
    build_image, build = stages[0]
    run_image, run = stages[-1]
    if not re.fullmatch(r"rust:\d+\.\d+(\.\d+)?-slim-(\w+)", build_image):
        problem(f"Dockerfile: build stage {build_image!r} is not a pinned rust:X.Y-slim-<debian> image")
    release = build_image.rsplit("-", 1)[-1]
    if run_image != f"debian:{release}-slim":
        problem(f"Dockerfile: runtime {run_image!r} is not debian:{release}-slim (the builder's glibc)")
    given = {instruction for instruction, _ in run}
    for needed in ("USER", "HEALTHCHECK", "ENTRYPOINT"):
        if needed not in given:
            problem(f"Dockerfile: the runtime stage has no {needed}")
    for instruction, rest in run:
        if instruction == "USER" and rest.split(":")[0] in ("root", "0"):
            problem("Dockerfile: the runtime stage runs as root")
        if instruction == "ENTRYPOINT" and json.loads(rest) != ["log-analyzer"]:
            problem(f"Dockerfile: ENTRYPOINT is {rest}, not [\"log-analyzer\"]")
    if not any(i == "RUN" and "cargo build --release --locked" in r for i, r in build):
        problem("Dockerfile: no locked release build")
    # The dependency layer builds against stub sources: it needs every workspace manifest first.
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    before_build = []
    for instruction, rest in build:
        if instruction == "RUN" and "cargo build" in rest:
            break
        if instruction == "COPY":
            before_build += rest.split()[:-1]
    for member in members:
        manifest = "Cargo.toml" if member == "." else f"{member}/Cargo.toml"
        if manifest not in before_build:
            problem(f"Dockerfile: the dependency layer does not copy {manifest}")
    if "Cargo.lock" not in before_build:
        problem("Dockerfile: the dependency layer does not copy Cargo.lock")
    # Every COPY source from the context must exist and must not be left out by .dockerignore.
    ignored = [
        line.strip().strip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for _, instructions in stages:
        for instruction, rest in instructions:
            if instruction != "COPY" or "--from=" in rest:
                continue
            sources = [w for w in rest.split() if not w.startswith("--")][:-1]
            for source in sources:
                if not (ROOT / source.rstrip("/")).exists():
                    problem(f"Dockerfile: COPY {source}: no such file in the repository")
                if any(source.rstrip("/") == i or source.startswith(i + "/") for i in ignored):
                    problem(f"Dockerfile: COPY {source}, but .dockerignore leaves it out")
    for needed in ("target", ".stack", ".git", ".env"):
        if needed not in ignored:
            problem(f".dockerignore: {needed} is not ignored")


def documented_metrics():
    """Metric names in README.md's Operations section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Operations", 1)[-1].split("\n## ", 1)[0]
    return set(re.findall(r"`(log_analyzer_\w+)", section))


def check_monitoring(config_json):
    model = json.loads(Path(config_json).read_text())
    services = model["services"]
    apps = app_services(model)

    prometheus = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    scraped = set()
    for job in prometheus["scrape_configs"]:
        addresses = [t for sc in job.get("static_configs", []) for t in sc["targets"]]
        for sd in job.get("dns_sd_configs", []):
            if sd.get("type") != "A" or "port" not in sd:
                problem(f"prometheus: job {job['job_name']}: dns_sd_configs needs type A and a port")
            addresses += [f"{n}:{sd.get('port')}" for n in sd["names"]]
        for address in addresses:
            host, _, port = address.rpartition(":")
            if host == "localhost":
                continue
            if host not in apps:
                problem(f"prometheus: job {job['job_name']} scrapes {host}, which is no log-analyzer service")
            elif port != str(ADMIN_PORT):
                problem(f"prometheus: {address} is not the admin port {ADMIN_PORT}")
            scraped.add(host)
    for name in apps:
        if name != "migrate" and name not in scraped:
            problem(f"prometheus: service {name} is not scraped")

    graf = ROOT / "deploy/grafana"
    sources = yaml.safe_load((graf / "provisioning/datasources/prometheus.yml").read_text())["datasources"]
    uids = {s["uid"] for s in sources}
    providers = yaml.safe_load((graf / "provisioning/dashboards/log-analyzer.yml").read_text())["providers"]
    mounts = {
        v.get("target"): v.get("source", "")
        for v in services["grafana"].get("volumes", [])
    }
    for provider in providers:
        path = provider["options"]["path"]
        source = mounts.get(path, "")
        if not source.endswith("deploy/grafana/dashboards"):
            problem(f"grafana: dashboards path {path} is not the mount of deploy/grafana/dashboards")
    if not mounts.get("/etc/grafana/provisioning", "").endswith("deploy/grafana/provisioning"):
        problem("grafana: deploy/grafana/provisioning is not mounted at /etc/grafana/provisioning")

    known = documented_metrics()
    if not known:
        problem("README.md: the Operations section lists no log_analyzer_ metric")
    shown = set()
    for path in sorted((graf / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        ids = [p["id"] for p in dashboard["panels"]]
        if len(ids) != len(set(ids)):
            problem(f"{path.name}: panel ids repeat")
        for panel in dashboard["panels"]:
            if panel["type"] == "row":
                continue
            if panel.get("datasource", {}).get("uid") not in uids:
                problem(f"{path.name}: panel {panel['title']!r} uses an unprovisioned datasource")
            for target in panel.get("targets", []):
                for metric in re.findall(r"\blog_analyzer_\w+", target["expr"]):
                    base = re.sub(r"_(bucket|sum|count)$", "", metric)
                    if metric not in known and base not in known:
                        problem(f"{path.name}: panel {panel['title']!r} uses {metric}, not in README's metrics")
                    shown.add(base)
    for metric in sorted(known - shown):
        problem(f"grafana: README documents {metric}, but no dashboard panel shows it")


def run_lines(text):
    """The commands of `run:` steps (or script lines), one per line."""
    return {line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")}


def check_workflow():
    ci_run = run_lines((ROOT / ".ci/run").read_text())
    workflow = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    steps = [s for job in workflow["jobs"].values() for s in job.get("steps", [])]
    commands = set()
    for step in steps:
        commands |= run_lines(step.get("run", ""))
    for needed in ("cargo fmt --all -- --check", "cargo clippy --workspace --all-targets -- -D warnings",
                   "scripts/check-deploy.sh", "scripts/test.sh"):
        if needed not in ci_run:
            problem(f".ci/run: does not run `{needed}`")
        if needed not in commands:
            problem(f"ci.yml: does not run `{needed}` as .ci/run does")
    for step in steps:
        uses = step.get("uses", "")
        if uses and not re.search(r"@v\d+\.\d+\.\d+$|@[0-9a-f]{40}$", uses):
            problem(f"ci.yml: {uses} is not pinned to a release or a commit")
    test = workflow["jobs"].get("test", {})
    for service in ("kafka", "postgres", "redis"):
        if service not in test.get("services", {}):
            problem(f"ci.yml: the test job has no {service} service container")


def check_healthcheck():
    """The image's healthcheck passes on 200, fails on another status and on a closed port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path in ("/healthz", "/metrics") else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
    cases = [
        ({"HTTP_ADDR": f"0.0.0.0:{port}"}, [], 0),
        ({"ADMIN_ADDR": f"127.0.0.1:{port}"}, ["ADMIN_ADDR", "/metrics"], 0),
        ({"HTTP_ADDR": f"0.0.0.0:{port}"}, ["HTTP_ADDR", "/missing"], 1),
        ({"HTTP_ADDR": f"0.0.0.0:{closed_port}"}, [], 1),
    ]
    for env, args, expected in cases:
        result = subprocess.run(["bash", str(ROOT / "deploy/healthcheck.sh"), *args], env={**os.environ, **env},
                                capture_output=True, timeout=10)
        if (result.returncode == 0) != (expected == 0):
            problem(f"healthcheck.sh {' '.join(args)} with {env}: exit {result.returncode}, expected {expected}")
    server.shutdown()


def config_table():
    print("| variable | default | meaning |")
    print("|---|---|---|")
    for name, default, meaning in env_example():
        shown = f"`{default}`" if default else "(empty)"
        meaning = meaning.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        print(f"| `{name}` | {shown} | {meaning} |")


def check_readme_config():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Operations", 1)[-1].split("\n## ", 1)[0]
    for name, _, _ in env_example():
        if f"| `{name}` |" not in section:
            problem(f"README.md: the Operations configuration table lacks {name} (see `check_deploy.py config-table`)")


def main(argv):
    what = argv[1] if len(argv) > 1 else ""
    if what == "compose":
        check_compose(argv[2])
    elif what == "dockerfile":
        check_dockerfile()
        check_healthcheck()
    elif what == "monitoring":
        check_monitoring(argv[2])
        check_readme_config()
    elif what == "workflow":
        check_workflow()
    elif what == "config-table":
        config_table()
        return 0
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for text in PROBLEMS:
        print(f"check-deploy: {text}", file=sys.stderr)
    return 1 if PROBLEMS else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
