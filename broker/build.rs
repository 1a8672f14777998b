//! Records the git commit the broker is built from, for the `causeway_build_info` metric
//! ("unknown" outside a git checkout, as in a container build from a source copy).

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=CAUSEWAY_COMMIT={commit}");
    for moved_by_a_commit in ["../.git/HEAD", "../.git/refs/heads", "../.git/packed-refs"] {
        if std::path::Path::new(moved_by_a_commit).exists() {
            println!("cargo:rerun-if-changed={moved_by_a_commit}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
