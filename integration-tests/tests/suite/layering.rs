//! The layering of the workspace, checked over `cargo metadata` so it lives in a test rather than
//! in comments: `causal` and `protocol` are leaves, `storage` knows nothing of sockets,
//! `replication` is a pure state machine with no I/O crate beneath it, and only `broker` wires
//! the layers together; the test harness (`testkit`) stands outside them all. Dependencies are
//! followed through every crate Cargo resolved, external ones included, so `replication`
//! depending on `storage` is caught by the rule against `rocksdb` as well as by its own, and a
//! networking crate that a new dependency brings along is caught like a direct one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Crates that do network I/O or run an async runtime: a layer below `broker` takes none.
const NETWORKING: &[&str] = &[
    "tokio",
    "hyper",
    "hyper-util",
    "axum",
    "ureq",
    "rdkafka",
    "mio",
    "socket2",
    "tokio-io-timeout",
];

/// Crates that touch the disk or the operating system: the replication core takes none.
const DISK_AND_OS: &[&str] = &["rocksdb", "libc", "tempfile", "memmap2"];

/// Per workspace crate: the workspace crates it may depend on (directly or through others).
fn allowed_workspace_dependencies() -> BTreeMap<&'static str, &'static [&'static str]> {
    BTreeMap::from([
        ("causeway-causal", &[][..]),
        ("causeway-protocol", &[][..]),
        ("causeway-storage", &["causeway-causal"][..]),
        ("causeway-replication", &["causeway-causal"][..]),
        // The harness drives the `causeway` binary from outside, as a client would.
        ("causeway-testkit", &[][..]),
        (
            "causeway-broker",
            &[
                "causeway-causal",
                "causeway-protocol",
                "causeway-storage",
                "causeway-replication",
            ][..],
        ),
    ])
}

/// Normal (non-dev, non-build) dependencies of every package in the build, by package name.
struct Workspace {
    /// The workspace's own crates.
    members: BTreeSet<String>,
    /// Per package (workspace or external), the packages it depends on for its normal build,
    /// as Cargo resolved them.
    direct: BTreeMap<String, BTreeSet<String>>,
}

/// The target this machine builds for, as `rustc -vV` names it.
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let output = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .expect("rustc names its host")
        .to_owned()
}

impl Workspace {
    fn load() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("integration-tests sits in the workspace");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        // Only what builds here: other platforms' crates are not downloaded offline.
        let output = Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--offline"])
            .args(["--filter-platform", &host_triple()])
            .current_dir(root)
            .output()
            .expect("cargo metadata runs");
        assert!(
            output.status.success(),
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
        let name_of: BTreeMap<&str, String> = metadata["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .map(|p| {
                let id = p["id"].as_str().expect("package id");
                (id, p["name"].as_str().expect("package name").to_owned())
            })
            .collect();
        let members = metadata["workspace_members"]
            .as_array()
            .expect("workspace members")
            .iter()
            .map(|id| name_of[id.as_str().expect("member id")].clone())
            .collect();
        let mut direct: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for node in metadata["resolve"]["nodes"].as_array().expect("resolve") {
            let name = name_of[node["id"].as_str().expect("node id")].clone();
            let normal = node["deps"]
                .as_array()
                .expect("deps")
                .iter()
                .filter(|dep| {
                    dep["dep_kinds"]
                        .as_array()
                        .is_some_and(|kinds| kinds.iter().any(|k| k["kind"].is_null()))
                })
                .map(|dep| name_of[dep["pkg"].as_str().expect("dep id")].clone());
            direct.entry(name).or_default().extend(normal);
        }
        Workspace { members, direct }
    }

    /// Everything `package` depends on for its normal build, through any crate, external ones
    /// included: a networking crate pulled in by a dependency counts as much as a direct one.
    fn reachable(&self, package: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut pending = vec![package.to_owned()];
        while let Some(next) = pending.pop() {
            for dependency in self.direct.get(&next).into_iter().flatten() {
                if seen.insert(dependency.clone()) {
                    pending.push(dependency.clone());
                }
            }
        }
        seen
    }

    fn is_member(&self, package: &str) -> bool {
        self.members.contains(package)
    }
}

#[test]
fn every_layer_depends_only_on_the_layers_below_it() {
    let workspace = Workspace::load();
    let allowed = allowed_workspace_dependencies();
    for (package, permitted) in &allowed {
        assert!(
            workspace.is_member(package),
            "{package} is not in the workspace"
        );
        let reached_members: BTreeSet<String> = workspace
            .reachable(package)
            .into_iter()
            .filter(|dependency| workspace.is_member(dependency))
            .collect();
        let permitted: BTreeSet<String> = permitted.iter().map(|p| (*p).to_owned()).collect();
        let beyond: Vec<&String> = reached_members.difference(&permitted).collect();
        assert!(
            beyond.is_empty(),
            "{package} depends on {beyond:?}; it may depend only on {permitted:?}"
        );
    }
}

#[test]
fn the_causal_types_are_a_leaf_with_no_dependencies() {
    let workspace = Workspace::load();
    let reached = workspace.reachable("causeway-causal");
    assert!(reached.is_empty(), "causeway-causal depends on {reached:?}");
}

/// The crates of `forbidden` that `package` reaches.
fn reached_among<'a>(
    workspace: &Workspace,
    package: &str,
    forbidden: impl Iterator<Item = &'a &'a str>,
) -> Vec<&'a str> {
    let reached = workspace.reachable(package);
    forbidden
        .filter(|name| reached.contains(**name))
        .copied()
        .collect()
}

#[test]
fn storage_and_protocol_take_no_networking_crate() {
    let workspace = Workspace::load();
    for package in ["causeway-storage", "causeway-protocol", "causeway-causal"] {
        let networking = reached_among(&workspace, package, NETWORKING.iter());
        assert!(
            networking.is_empty(),
            "{package} depends on networking crates {networking:?}"
        );
    }
}

#[test]
fn the_replication_core_takes_no_io_crate() {
    let workspace = Workspace::load();
    let io = reached_among(
        &workspace,
        "causeway-replication",
        NETWORKING.iter().chain(DISK_AND_OS),
    );
    assert!(
        io.is_empty(),
        "causeway-replication depends on I/O crates {io:?}"
    );
}

#[test]
fn nothing_but_the_test_crates_depends_on_the_broker_or_the_harness() {
    let workspace = Workspace::load();
    let wiring_and_tools = [
        "causeway-broker",
        "causeway-bench",
        "causeway-integration-tests",
        "causeway-testkit",
    ];
    for (package, dependencies) in &workspace.direct {
        if !workspace.is_member(package) || wiring_and_tools.contains(&package.as_str()) {
            continue;
        }
        for tool in wiring_and_tools {
            assert!(
                !dependencies.contains(tool),
                "{package} depends on {tool}, which only wires or tests the layers"
            );
        }
    }
}
