//! The harness runs only binaries built from the sources under test: each
//! binary's `--version` names the working tree's revision, and a binary
//! that names another (a leftover from an earlier build) is refused with
//! the command that rebuilds it.

use std::path::Path;

use dataplane_e2e::{bin, check_revision};
use strata_revision::tree::TreeRevision;

fn working_tree() -> TreeRevision {
    TreeRevision::of_worktree(Path::new(env!("CARGO_MANIFEST_DIR"))).expect("the tests run in a git checkout")
}

#[test]
fn every_binary_reports_the_working_trees_revision() {
    let tree = working_tree();
    for name in ["strata", "strata-agent", "sample-api", "strata-loadgen"] {
        let p = bin(name);
        let out = std::process::Command::new(&p).arg("--version").output().expect("--version");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with(&format!("{name} ")), "{text}");
        assert!(text.contains(&tree.describe()), "{name} --version printed {text:?}, expected {}", tree.describe());
        check_revision(&p, &tree.tree).expect("built from this tree");
    }
}

#[test]
fn a_binary_built_from_another_revision_is_refused() {
    let tree = working_tree();
    let real = bin("strata-agent");
    let dir = dataplane_e2e::test_dir();

    // The same binary with the tree id in its version string changed: it
    // runs, and reports another revision.
    let mut bytes = std::fs::read(&real).expect("read binary");
    let needle = tree.tree.as_bytes();
    let other: Vec<u8> = needle.iter().map(|b| if *b == b'0' { b'1' } else { b'0' }).collect();
    let mut patched = 0;
    let mut i = 0;
    while i + needle.len() <= bytes.len() {
        if &bytes[i..i + needle.len()] == needle {
            bytes[i..i + needle.len()].copy_from_slice(&other);
            patched += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    assert!(patched > 0, "the tree id is not in the binary");
    let copy = dir.path().join("strata-agent");
    std::fs::write(&copy, &bytes).expect("write copy");
    set_executable(&copy);
    let out = std::process::Command::new(&copy).arg("--version").output().expect("run the copy");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(std::str::from_utf8(&other).expect("hex")), "{text}");

    let err = check_revision(&copy, &tree.tree).expect_err("another revision must be refused");
    assert!(err.contains("built from other sources") && err.contains("make test-build"), "{err}");
    // The unpatched binary passes the same check.
    check_revision(&real, &tree.tree).expect("the real binary");

    // A program that reports no revision at all is refused too.
    let stub = dir.path().join("old-strata");
    std::fs::write(&stub, "#!/bin/sh\necho 'strata 0.1.0'\n").expect("write stub");
    set_executable(&stub);
    let err = check_revision(&stub, &tree.tree).expect_err("no revision must be refused");
    assert!(err.contains("does not report the revision") && err.contains("make test-build"), "{err}");
}

fn set_executable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}
