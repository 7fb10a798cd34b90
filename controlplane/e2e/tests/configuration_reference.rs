//! docs/configuration.md is the `--help` of every binary and subcommand, so
//! it cannot drift from the code: this test regenerates it and compares.
//! After changing a flag: `STRATA_UPDATE_DOCS=1 cargo nextest run -p
//! controlplane-e2e --test configuration_reference` rewrites the file.

use std::path::PathBuf;
use std::process::Command;

use controlplane_e2e::bin;

const INTRO: &str = "# Configuration reference

Generated from each binary's `--help` (see
`controlplane/e2e/tests/configuration_reference.rs`, which fails when this
page and the binaries disagree).

Flags use Prometheus-style dotted names. `strata` reads every flag also
from the YAML file given by `--config.file` (keys are flag names without
the dashes, e.g. `raft.node-id: 1`, `objstore.s3.bucket: blocks`); flags on
the command line win. `strata-agent` has its own YAML schema
([dataplane.md](dataplane.md#configuration-file)) and environment
variables (shown as `[env: …]`). Durations take units (`200ms`, `5m`,
`2h`).
";

/// (binary, arguments before --help, heading)
const COMMANDS: [(&str, &[&str], &str); 14] = [
    ("strata", &["ingester"], "strata ingester"),
    ("strata", &["store"], "strata store"),
    ("strata", &["querier"], "strata querier"),
    ("strata", &["query-frontend"], "strata query-frontend"),
    ("strata", &["compact"], "strata compact"),
    ("strata", &["demo"], "strata demo"),
    ("strata-agent", &[], "strata-agent"),
    ("sample-api", &[], "sample-api"),
    ("strata-loadgen", &["run"], "strata-loadgen run"),
    ("strata-loadgen", &["bench", "write"], "strata-loadgen bench write"),
    ("strata-loadgen", &["bench", "otlp"], "strata-loadgen bench otlp"),
    ("strata-loadgen", &["bench", "sink"], "strata-loadgen bench sink"),
    ("strata-loadgen", &["bench", "query"], "strata-loadgen bench query"),
    ("strata", &[], "strata"),
];

fn render() -> String {
    let mut out = String::from(INTRO);
    for (program, args, heading) in COMMANDS {
        let o = Command::new(bin(program))
            .args(args)
            .arg("--help")
            // Variables set here would show up as `[env: NAME=value]`.
            .env_clear()
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(o.status.success(), "{heading} --help failed: {}", String::from_utf8_lossy(&o.stderr));
        let help = String::from_utf8_lossy(&o.stdout);
        let help: String = help.lines().map(|l| l.trim_end()).collect::<Vec<_>>().join("\n");
        out.push_str(&format!("\n## `{heading}`\n\n```text\n{}\n```\n", help.trim_end()));
    }
    out
}

#[test]
fn configuration_reference_matches_every_binarys_help() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let want = render();
    if std::env::var("STRATA_UPDATE_DOCS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &want).expect("write docs/configuration.md");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have != want {
        let first = have.lines().zip(want.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "docs/configuration.md is out of date (first difference at line {}: {:?} vs {:?}); regenerate it with \
             STRATA_UPDATE_DOCS=1 cargo nextest run -p controlplane-e2e --test configuration_reference",
            first + 1,
            have.lines().nth(first),
            want.lines().nth(first)
        );
    }
}
