//! The layering of the workspace, checked over `cargo metadata` so it lives in a test rather than
//! in comments: `causal` and `protocol` are leaves, `storage` knows nothing of sockets,
//! `replication` is a pure state machine with no I/O crate beneath it, and only `broker` wires
//! the layers together; the test harness (`testkit`) stands outside them all. Dependencies are followed through workspace crates, so `replication`
//! depending on `storage` is caught by the rule against `rocksdb` as well as by its own.

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

/// Normal (non-dev, non-build) dependencies of each workspace crate, by package name.
struct Workspace {
    direct: BTreeMap<String, BTreeSet<String>>,
}

impl Workspace {
    fn load() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("integration-tests sits in the workspace");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let output = Command::new(cargo)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--offline",
            ])
            .current_dir(root)
            .output()
            .expect("cargo metadata runs");
        assert!(
            output.status.success(),
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
        let mut direct = BTreeMap::new();
        for package in metadata["packages"].as_array().expect("packages") {
            let name = package["name"].as_str().expect("package name").to_owned();
            let dependencies = package["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|dependency| dependency["kind"].is_null())
                .map(|dependency| dependency["name"].as_str().expect("name").to_owned())
                .collect();
            direct.insert(name, dependencies);
        }
        Workspace { direct }
    }

    /// Everything `package` depends on, following workspace crates transitively (external
    /// crates are listed but not opened: their own dependencies are not in `--no-deps`).
    fn reachable(&self, package: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut pending = vec![package.to_owned()];
        while let Some(next) = pending.pop() {
            for dependency in self.direct.get(&next).into_iter().flatten() {
                if seen.insert(dependency.clone()) && self.direct.contains_key(dependency) {
                    pending.push(dependency.clone());
                }
            }
        }
        seen
    }

    fn is_member(&self, package: &str) -> bool {
        self.direct.contains_key(package)
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
        if wiring_and_tools.contains(&package.as_str()) {
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
