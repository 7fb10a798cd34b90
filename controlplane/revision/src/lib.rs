//! The source revision each Strata binary was built from.
//!
//! Each binary's build script calls [`build_script`], which records the
//! [`tree::TreeRevision`] of the working tree in `STRATA_REVISION`, and its
//! `--version` prints [`version!`], e.g.
//! `strata 0.1.0 (commit 8491011abcde-dirty, tree 4b82…)`. The multi-process
//! test harness computes the same revision for the working tree and refuses
//! to run a binary built from other sources.
//!
//! Only the binaries' build scripts depend on the tree's contents, so a
//! change anywhere rebuilds just the four binary crates, not this one.

pub mod tree;

use std::path::Path;

/// For a binary's `build.rs`: sets `STRATA_REVISION` to the revision of the
/// working tree containing the crate (`revision unknown` outside a git
/// checkout) and asks cargo to run the script again when any tracked file
/// or the checked-out commit changes.
pub fn build_script() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let dir = Path::new(&dir);
    println!("cargo:rerun-if-changed=build.rs");
    let revision = match tree::TreeRevision::of_worktree(dir) {
        Ok(rev) => {
            match tree::watched_paths(dir) {
                Ok(paths) => {
                    for p in paths {
                        println!("cargo:rerun-if-changed={}", p.display());
                    }
                }
                Err(e) => println!("cargo:warning=cannot list the files to watch: {e}"),
            }
            rev.describe()
        }
        Err(e) => {
            println!("cargo:warning=source revision unknown: {e}");
            UNKNOWN.to_string()
        }
    };
    println!("cargo:rustc-env=STRATA_REVISION={revision}");
}

/// The revision of a build outside a git checkout.
pub const UNKNOWN: &str = "revision unknown";

/// What `--version` prints after the program name, for a crate whose build
/// script calls [`build_script`]: `<version> (commit <12 hex>[-dirty], tree <40 hex>)`.
#[macro_export]
macro_rules! version {
    () => {
        concat!(env!("CARGO_PKG_VERSION"), " (", env!("STRATA_REVISION"), ")")
    };
}

#[cfg(test)]
mod tests {
    use super::tree::TreeRevision;

    #[test]
    fn describe_round_trips_through_parse_tree() {
        let rev = TreeRevision {
            commit: "a".repeat(40),
            tree: "0123456789abcdef0123456789abcdef01234567".into(),
            dirty: true,
        };
        let text = format!("strata 0.1.0 ({})", rev.describe());
        assert_eq!(text, format!("strata 0.1.0 (commit {}-dirty, tree {})", "a".repeat(12), rev.tree));
        assert_eq!(TreeRevision::parse_tree(&text).as_deref(), Some(rev.tree.as_str()));
        assert_eq!(TreeRevision::parse_tree("strata 0.1.0 (revision unknown)"), None);
        assert_eq!(TreeRevision::parse_tree("tree 0123"), None);
    }

    #[test]
    fn a_change_to_a_tracked_file_changes_the_tree_and_sets_dirty() {
        let dir = tempfile_dir();
        let run = |args: &[&str]| {
            let ok =
                std::process::Command::new("git").current_dir(&dir).args(args).output().map(|o| o.status.success());
            assert_eq!(ok.ok(), Some(true), "git {args:?}");
        };
        run(&["init", "-q"]);
        std::fs::write(dir.join("a.rs"), "fn main() {}\n").unwrap();
        run(&["add", "a.rs"]);
        run(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one"]);
        let clean = TreeRevision::of_worktree(&dir).expect("revision");
        assert!(!clean.dirty);
        std::fs::write(dir.join("a.rs"), "fn main() { println!(); }\n").unwrap();
        let edited = TreeRevision::of_worktree(&dir).expect("revision");
        assert!(edited.dirty);
        assert_eq!(edited.commit, clean.commit);
        assert_ne!(edited.tree, clean.tree);
        // Untracked files are not part of it; the real index is untouched.
        std::fs::write(dir.join("untracked.rs"), "x").unwrap();
        assert_eq!(TreeRevision::of_worktree(&dir).expect("revision").tree, edited.tree);
        let status = std::process::Command::new("git").current_dir(&dir).args(["diff", "--cached", "--quiet"]).status();
        assert!(status.map(|s| s.success()).unwrap_or(false), "index changed");
        let watched = super::tree::watched_paths(&dir).expect("paths");
        assert!(watched.contains(&dir.join("a.rs")) && !watched.contains(&dir.join("untracked.rs")), "{watched:?}");
        std::fs::remove_dir_all(&dir).ok();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("strata-revision-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
