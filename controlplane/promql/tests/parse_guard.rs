//! Queries that make the parser library panic must come back as errors.

#[test]
fn absurd_numbers_are_errors_not_panics() {
    let mut bad = Vec::new();
    for q in [
        "1\n[9999999999999999999999999999999999999]\n[12]\n[]",
        "up[99999999999999999999]",
        "up offset 99999999999999999999",
        "rate(up[5m:99999999999999999999])",
        "up @ 1e300",
        "up @ -1e300",
        "up[1e300s]",
        "up offset 1e300",
        "up[5m] @ 9999999999999999999999",
    ] {
        let r = std::panic::catch_unwind(|| strata_promql::parse(q));
        match r {
            Ok(Ok(_)) | Ok(Err(_)) => {}
            Err(_) => bad.push(q),
        }
    }
    assert!(bad.is_empty(), "parse panicked on {bad:?}");
}
