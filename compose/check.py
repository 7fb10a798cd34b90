#!/usr/bin/env python3
"""Checks, without a Docker engine, that compose/Dockerfile builds what
compose/docker-compose.yml runs, with the command CI runs:

* the Dockerfile's build stage runs `make binaries` (the Makefile target
  `make demo` runs; its packages exist and have binaries, which `make test`
  builds with the rest of the workspace);
* every binary it copies into the runtime image is one `make binaries`
  builds (a `-p` package of that target);
* every service that runs the Strata image starts one of the binaries the
  image holds.

Usage: python3 compose/check.py [resolved-compose.yml]  (default: runs
`docker-compose config` on compose/docker-compose.yml, every profile).
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def fail(msg: str) -> None:
    print(f"compose/check.py: {msg}", file=sys.stderr)
    sys.exit(1)


def make_binaries_packages() -> set[str]:
    makefile = (ROOT / "Makefile").read_text()
    m = re.search(r"^binaries:\n\t(.+)$", makefile, re.M)
    if not m:
        fail("Makefile has no `binaries` target")
    # `make test` runs `unit`, which builds every binary of the workspace
    # (test-build) before the tests.
    build = re.search(r"^test-build:\n\t(.+)$", makefile, re.M)
    if (
        not re.search(r"^test:.*\bunit\b", makefile, re.M)
        or not re.search(r"^unit:.*\btest-build\b", makefile, re.M)
        or not build
        or "--workspace" not in build.group(1)
        or "--bins" not in build.group(1)
    ):
        fail("`make test` no longer builds every binary before the tests (test -> unit -> test-build)")
    packages = set(re.findall(r"-p\s+(\S+)", m.group(1)))
    # Each package `make binaries` names exists in the workspace and has a binary.
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout
    )
    with_bins = {p["name"] for p in meta["packages"] if any("bin" in t["kind"] for t in p["targets"])}
    missing = sorted(packages - with_bins)
    if missing:
        fail(f"`make binaries` names packages without a binary in the workspace: {missing}")
    return packages


def dockerfile_binaries() -> set[str]:
    text = (ROOT / "compose" / "Dockerfile").read_text()
    run = re.search(r"^RUN (?:.*\\\n)*.*$", text.split("AS build", 1)[-1], re.M)
    if not run or not re.search(r"\bmake binaries\b", run.group(0)):
        fail("the Dockerfile's build stage does not run `make binaries`")
    copied = re.findall(r"target/release/([\w-]+)", run.group(0))
    if not copied:
        fail("the Dockerfile's build stage copies no binaries")
    return set(copied)


def resolved_compose(*overrides: str) -> dict:
    if len(sys.argv) > 1 and not overrides:
        return yaml.safe_load(Path(sys.argv[1]).read_text())
    files = ["docker-compose.yml", *overrides]
    cmd = ["docker-compose"]
    for f in files:
        cmd += ["-f", str(ROOT / "compose" / f)]
    out = subprocess.run(cmd + ["--profile", "grafana", "config"], check=True, capture_output=True, text=True).stdout
    return yaml.safe_load(out)


def check_services(services: dict, in_image: set[str]) -> dict:
    strata = {n: s for n, s in services.items() if str(s.get("image", "")).startswith("strata:")}
    if not strata:
        fail("no service runs the Strata image")
    for name, svc in strata.items():
        cmd = svc.get("command") or []
        entry = svc.get("entrypoint") or []
        first = (entry or cmd or [""])[0]
        if first not in in_image and first != "/bin/sh":
            fail(f"service {name} runs {first!r}, which the image does not hold ({sorted(in_image)})")
    return strata


def check_secure(strata: dict) -> int:
    """The secure profile: every Strata server reads the web config, the
    gRPC listeners require client certificates, gRPC clients present one,
    agents deliver over HTTPS with a token; the flags are the binaries'."""
    web = ROOT / "compose" / "secure" / "web.yml"
    text = web.read_text()
    if "tls_server_config" not in text or "tenants" not in text:
        fail("compose/secure/web.yml must turn on TLS and list tenants")
    bins = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
    checked = 0
    for name, svc in strata.items():
        cmd = svc.get("command") or []
        if not cmd or cmd[0] not in ("strata", "strata-agent"):
            continue
        checked += 1
        if cmd[0] == "strata":
            if "--web.config.file=/etc/strata/secure/web.yml" not in cmd:
                fail(f"secure profile: {name} does not read the web config")
            if cmd[1] in ("ingester", "store") and "--grpc.tls-client-ca-file=/certs/ca.crt" not in cmd:
                fail(f"secure profile: {name}'s gRPC port does not require client certificates")
            if cmd[1] in ("ingester", "querier", "ruler") and "--grpc-client.tls-cert-file=/certs/tls.crt" not in cmd:
                fail(f"secure profile: {name} does not present a client certificate")
            if cmd[1] == "ruler" and (
                not all(a.startswith("--remote-write.url=https://") for a in cmd if a.startswith("--remote-write.url="))
                or "--remote-write.bearer-token-file=/etc/strata/secure/ruler-token" not in cmd
            ):
                fail(f"secure profile: {name} does not write rule results over HTTPS with its token")
        elif not any(a.startswith("--remote-write.url=https://") for a in cmd) or \
                "--remote-write.bearer-token-file=/etc/strata/secure/agent-token" not in cmd:
            fail(f"secure profile: {name} does not write over HTTPS with the token")
        binary = bins / cmd[0]
        if binary.exists():
            p = subprocess.run([str(binary), *cmd[1:], "--help"], capture_output=True, text=True)
            if p.returncode != 0:
                fail(f"secure profile: {name}: {cmd[0]} rejects its arguments: {p.stderr}")
    return checked


def main() -> None:
    packages = make_binaries_packages()
    in_image = dockerfile_binaries()
    extra = in_image - packages
    if extra:
        fail(f"the Dockerfile copies {sorted(extra)}, which `make binaries` does not build ({sorted(packages)})")
    strata = check_services(resolved_compose().get("services", {}), in_image)
    print(f"compose/Dockerfile builds {sorted(in_image)} with `make binaries`; {len(strata)} services run them")
    if len(sys.argv) == 1:
        secure = check_services(resolved_compose("docker-compose.secure.yml").get("services", {}), in_image)
        n = check_secure(secure)
        print(f"compose/docker-compose.secure.yml: auth and TLS on the {n} Strata servers and agents")


if __name__ == "__main__":
    main()
