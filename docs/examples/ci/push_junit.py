#!/usr/bin/env python3
"""Push one CI run's JUnit XML results to a Pushgateway-compatible endpoint
(strata-agent --push.listen-address, or a Pushgateway) with Prometheus'
Python client, unchanged. Part of docs/ci-metrics.md; run by
controlplane/e2e/tests/ci_metrics.rs.

  python3 push_junit.py --gateway 127.0.0.1:9091 --pipeline shop --branch main results.xml

One group per pipeline and branch (job="ci"): each run replaces the
previous one (PUT), so the series hold the latest run's results and their
history lives in Strata.
"""
import argparse
import sys
import xml.etree.ElementTree as ET

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateway", required=True, help="host:port of the agent's push API")
    ap.add_argument("--pipeline", required=True)
    ap.add_argument("--branch", required=True)
    ap.add_argument("junit", help="JUnit XML file")
    a = ap.parse_args()

    root = ET.parse(a.junit).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    r = CollectorRegistry()
    passed = Gauge("ci_test_passed", "1 if the test passed in the latest run, 0 if it failed or errored", ["suite", "test"], registry=r)
    duration = Gauge("ci_test_duration_seconds", "The test's duration in the latest run", ["suite", "test"], registry=r)
    tests = Gauge("ci_run_tests", "Tests in the latest run by outcome", ["outcome"], registry=r)
    run_duration = Gauge("ci_run_duration_seconds", "Sum of the latest run's test durations", registry=r)
    success = Gauge("ci_run_success", "1 if every test of the latest run passed", registry=r)

    counts = {"passed": 0, "failed": 0, "skipped": 0}
    total = 0.0
    for s in suites:
        for case in s.iter("testcase"):
            name = f'{case.get("classname", "")}.{case.get("name", "")}'.strip(".")
            t = float(case.get("time", "0") or 0)
            total += t
            if case.find("skipped") is not None:
                counts["skipped"] += 1
                continue
            ok = case.find("failure") is None and case.find("error") is None
            counts["passed" if ok else "failed"] += 1
            passed.labels(s.get("name", ""), name).set(1 if ok else 0)
            duration.labels(s.get("name", ""), name).set(t)
    for outcome, n in counts.items():
        tests.labels(outcome).set(n)
    run_duration.set(total)
    success.set(1 if counts["failed"] == 0 else 0)
    push_to_gateway(a.gateway, job="ci", registry=r, grouping_key={"pipeline": a.pipeline, "branch": a.branch})
    print(f"pushed {sum(counts.values())} tests: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
