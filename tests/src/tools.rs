//! Outside tools the end-to-end tests use (mount, prlimit, openssl, Python modules).

/// A tool a test needs is missing. Outside CI the test prints SKIPPED and returns;
/// under CI (`CI` set, as `.ci/run` runs) or with `PANVAULT_REQUIRE_TOOLS=1` it fails:
/// a skip counted as a pass would hide a hole, and `.ci/run` installs every tool.
pub fn missing(test: &str, what: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    let required = std::env::var("PANVAULT_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
    assert!(
        !(ci || required),
        "{test}: {what}, and CI requires it (.ci/run installs it)"
    );
    println!("SKIPPED {test}: {what}");
}
