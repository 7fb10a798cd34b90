//! The revision of a git working tree, computed the same way by this
//! crate's build script (for the binaries' `--version`) and by the test
//! harness (for the tree under test), so the two can be compared.
//!
//! The revision is the id of the git tree object holding the *working*
//! content of every tracked file (staged or not): equal ids mean the same
//! sources, whatever was committed. It is computed with a scratch copy of
//! the index, so the real index is never touched. Untracked files are not
//! part of it: `git add` a new source file to make it count.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A working tree's revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeRevision {
    /// `HEAD`'s commit id (40 hex digits).
    pub commit: String,
    /// The tree id of the tracked files' working content (40 hex digits).
    pub tree: String,
    /// True when `tree` differs from `HEAD`'s tree (uncommitted changes).
    pub dirty: bool,
}

impl TreeRevision {
    /// The revision of the working tree that contains `dir`.
    pub fn of_worktree(dir: &Path) -> Result<TreeRevision, String> {
        let root = git(dir, &["rev-parse", "--show-toplevel"], None)?;
        let root = PathBuf::from(root);
        let commit = git(&root, &["rev-parse", "HEAD"], None)?;
        let head_tree = git(&root, &["rev-parse", "HEAD^{tree}"], None)?;
        let index = PathBuf::from(git(&root, &["rev-parse", "--path-format=absolute", "--git-path", "index"], None)?);
        let scratch = std::env::temp_dir().join(format!(
            "strata-revision-index-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
        ));
        std::fs::copy(&index, &scratch).map_err(|e| format!("cannot copy {}: {e}", index.display()))?;
        let tree = git(&root, &["add", "--update", "--", "."], Some(&scratch))
            .and_then(|_| git(&root, &["write-tree"], Some(&scratch)));
        let _ = std::fs::remove_file(&scratch);
        let tree = tree?;
        Ok(TreeRevision { dirty: tree != head_tree, commit, tree })
    }

    /// The form `--version` prints and [`TreeRevision::parse`] reads:
    /// `commit <12 hex>[-dirty], tree <40 hex>`.
    pub fn describe(&self) -> String {
        let short = &self.commit[..self.commit.len().min(12)];
        format!("commit {short}{}, tree {}", if self.dirty { "-dirty" } else { "" }, self.tree)
    }

    /// The tree id from text containing [`TreeRevision::describe`]'s form
    /// (e.g. a binary's `--version` output).
    pub fn parse_tree(text: &str) -> Option<String> {
        let rest = &text[text.find("tree ")? + "tree ".len()..];
        let id: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
        (id.len() == 40).then_some(id)
    }
}

/// Every path whose change can change the revision of the working tree
/// containing `dir`: the tracked files that exist, the index (a `git add`
/// of a new file makes it tracked), `HEAD`, the branch it points to and the
/// packed refs. A build script watches these.
pub fn watched_paths(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let root = PathBuf::from(git(dir, &["rev-parse", "--show-toplevel"], None)?);
    let files = git(&root, &["ls-files", "-z"], None)?;
    let mut paths: Vec<PathBuf> = files.split('\0').filter(|f| !f.is_empty()).map(|f| root.join(f)).collect();
    for git_path in ["index", "HEAD", "packed-refs"] {
        paths.push(PathBuf::from(git(&root, &["rev-parse", "--path-format=absolute", "--git-path", git_path], None)?));
    }
    if let Ok(branch) = git(&root, &["symbolic-ref", "-q", "HEAD"], None) {
        paths.push(PathBuf::from(git(&root, &["rev-parse", "--path-format=absolute", "--git-path", &branch], None)?));
    }
    paths.retain(|p| p.exists());
    Ok(paths)
}

/// Runs git in `dir` (with `index` as the index file if given) and returns
/// its trimmed standard output.
fn git(dir: &Path, args: &[&str], index: Option<&Path>) -> Result<String, String> {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir).args(args);
    if let Some(index) = index {
        cmd.env("GIT_INDEX_FILE", index);
    }
    let out = cmd.output().map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {} failed in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
