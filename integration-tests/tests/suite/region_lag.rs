//! How an operator tells a region is behind and has caught up: one region stops while the others
//! take writes, then restarts. The regions that kept writing report it behind (batches and the
//! age of the oldest missing one, in `/v1/regions`, metrics and a log line by name), then caught
//! up; the restarted region logs its links coming up; `causeway region status --also ...` shows
//! the whole mesh from one command.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use causeway_integration_tests::regions::{
    metric, peer_status, regions_status, with_mesh, Mesh, MeshPlan,
};
use causeway_integration_tests::{
    broker_binary, produce_all, topic_name, wait_until, BrokerProcess, TestRecord,
};

const NAMES: [&str; 3] = ["eu", "us", "ap"];
const EU: usize = 0;
const US: usize = 1;

/// eu's view of us: (batches of eu's us lacks, age of the oldest in seconds).
fn us_behind_eu(eu: &BrokerProcess) -> Result<(u64, f64)> {
    let status = regions_status(eu)?;
    let us = peer_status(&status, "us").context("us in eu's status")?;
    Ok((
        us["peer_behind_batches"]
            .as_u64()
            .context("peer_behind_batches")?,
        us["peer_behind_seconds"]
            .as_f64()
            .context("peer_behind_seconds")?,
    ))
}

fn produce_in(region: &BrokerProcess, topic: &str, from: usize, count: usize) -> Result<()> {
    let producer = region.producer_config().set("acks", "all").create()?;
    let records: Vec<TestRecord> = (from..from + count)
        .map(|n| TestRecord::value(format!("v{n}")))
        .collect();
    produce_all(&producer, topic, &records)?;
    Ok(())
}

/// `causeway region status` over every region of the mesh: whether it exited 0, and its output.
fn mesh_status(mesh: &Mesh) -> Result<(bool, String)> {
    let mut command = Command::new(broker_binary()?);
    command.args([
        "region",
        "status",
        "--http",
        &mesh.region(EU).http_addr().to_string(),
    ]);
    for i in 1..mesh.len() {
        command.args(["--also", &mesh.region(i).http_addr().to_string()]);
    }
    let output = command.output()?;
    Ok((output.status.success(), String::from_utf8(output.stdout)?))
}

#[test]
fn a_region_that_was_away_is_reported_behind_then_caught_up() {
    with_mesh(MeshPlan::new(&NAMES).expect("a plan"), |mesh| {
        let topic = topic_name("lag");
        produce_in(mesh.region(EU), &topic, 0, 5)?;
        let written = regions_status(mesh.region(EU))?["clock"]["eu"].clone();
        mesh.wait_all("eu's records everywhere", Duration::from_secs(20), |r| {
            Ok(regions_status(r)?["clock"]["eu"] == written)
        })?;
        let current = wait_until(Duration::from_secs(20), || {
            us_behind_eu(mesh.region(EU)).is_ok_and(|gap| gap == (0, 0.0))
        });
        if !current {
            bail!(
                "eu never saw us hold its first records: {:?}",
                regions_status(mesh.region(EU))
            );
        }
        mesh.region_mut(US).terminate()?;
        produce_in(mesh.region(EU), &topic, 5, 20)?;
        // eu names us behind: 20 batches or fewer (librdkafka may batch records), the oldest
        // ageing, and after five seconds a warning by name.
        let mut seen = (0, 0.0);
        let aged = wait_until(Duration::from_secs(20), || {
            us_behind_eu(mesh.region(EU)).is_ok_and(|gap| {
                seen = gap;
                gap.0 > 0 && gap.1 >= 5.0
            })
        });
        if !aged {
            bail!("eu never reported us behind with an ageing oldest batch: {seen:?}");
        }
        let gauge = metric(
            mesh.region(EU),
            r#"causeway_replication_peer_behind_batches{peer="us"}"#,
        )?;
        if gauge.unwrap_or(0.0) < 1.0 {
            bail!("eu's peer_behind_batches gauge for us is {gauge:?}");
        }
        let warned = wait_until(Duration::from_secs(5), || {
            !mesh
                .log_lines("peer region us is behind this region")
                .is_empty()
        });
        if !warned {
            bail!("eu logged nothing about us falling behind");
        }
        let us_http = mesh.region(US).http_addr().to_string();
        let (all_reached, while_away) = mesh_status(mesh)?;
        if all_reached
            || !while_away.contains("MESH")
            || !while_away.contains("REGION eu")
            || !while_away.contains(&format!("{us_http}: unreachable"))
        {
            bail!("the mesh status with us away should show eu and ap and us unreachable, and exit 1:\n{while_away}");
        }
        mesh.region_mut(US).restart()?;
        let caught_up = wait_until(Duration::from_secs(30), || {
            us_behind_eu(mesh.region(EU)).is_ok_and(|gap| gap == (0, 0.0))
        });
        if !caught_up {
            bail!(
                "us never caught up in eu's view: {:?}",
                us_behind_eu(mesh.region(EU))
            );
        }
        let logged = wait_until(Duration::from_secs(5), || {
            !mesh
                .log_lines("peer region us caught up with this region")
                .is_empty()
        });
        if !logged {
            bail!("eu logged nothing about us catching up");
        }
        let gauge_back = wait_until(Duration::from_secs(10), || {
            metric(
                mesh.region(EU),
                r#"causeway_replication_peer_behind_batches{peer="us"}"#,
            )
            .is_ok_and(|gauge| gauge == Some(0.0))
        });
        if !gauge_back {
            bail!(
                "eu's peer_behind_batches gauge for us did not come back to 0 after the catch-up"
            );
        }
        let us_status = regions_status(mesh.region(US))?;
        let eu_seen_by_us = peer_status(&us_status, "eu").context("eu in us's status")?;
        if eu_seen_by_us["lag_batches"].as_u64() != Some(0) {
            bail!("us still lacks eu's batches: {eu_seen_by_us}");
        }
        let links_up: Vec<String> = mesh
            .log_lines("replication link up")
            .into_iter()
            .filter(|l| l.starts_with("us: ") && l.contains("peer=eu"))
            .collect();
        if links_up.len() < 2 {
            bail!(
                "us logged its link to eu coming up {} times (before and after its restart)",
                links_up.len()
            );
        }
        let (all_reached, after) = mesh_status(mesh)?;
        if !all_reached {
            bail!("the mesh status failed with every region up:\n{after}");
        }
        let eu_row = after
            .lines()
            .find(|l| l.starts_with("us "))
            .context("a row for us in the mesh view")?;
        if !eu_row.contains("0 / 0s") && !eu_row.contains("0 / 0.0s") {
            bail!("the mesh view shows us still lacking something:\n{after}");
        }
        Ok(())
    });
}
