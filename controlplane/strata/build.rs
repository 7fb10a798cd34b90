// Records the source revision for `--version` (see strata-revision).
fn main() {
    strata_revision::build_script();
}
