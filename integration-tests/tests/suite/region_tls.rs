//! Regions linked by mutual TLS (`--replication-tls`): each region's Kafka listener speaks TLS
//! and asks for client certificates, links present the region's certificate, and a pull is
//! served only to a certificate whose common name is the region the pull claims to be. Records
//! flow over such links; a region presenting another region's certificate, or a client
//! certificate that names no region, is refused even with the right shared secret.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};
use causeway_integration_tests::certs::{kcat_ssl, Authority, Issued};
use causeway_integration_tests::regions::{with_mesh, Mesh, MeshPlan};
use causeway_integration_tests::{topic_name, wait_until, BrokerProcess, KcatOutput};
use causeway_testkit::mesh::metric;
use rcgen::DnType;

const NAMES: [&str; 2] = ["eu", "us"];
const EU: usize = 0;
const US: usize = 1;

/// Region `region` serves TLS on its Kafka listener, requires client certificates from `ca`,
/// presents `certificate` to clients and peers, and links to peers over mutual TLS.
fn mutual_tls(plan: MeshPlan, region: usize, ca: &Path, certificate: &Issued) -> MeshPlan {
    plan.flag(region, "--kafka-security-protocol", "ssl")
        .flag(
            region,
            "--ssl-certificate-file",
            certificate.certificate.display(),
        )
        .flag(region, "--ssl-private-key-file", certificate.key.display())
        .flag(region, "--ssl-client-auth", "required")
        .flag(region, "--ssl-client-ca-file", ca.display())
        .flag(region, "--replication-tls", "true")
}

/// kcat over SSL to `region`, presenting `client`; a produce sends the record `across`.
fn kcat_tls(
    region: &BrokerProcess,
    ca: &Path,
    client: &Issued,
    args: &[&str],
) -> Result<KcatOutput> {
    let input: &[u8] = if args.contains(&"-P") {
        b"across\n"
    } else {
        b""
    };
    kcat_ssl(&region.bootstrap(), ca, Some(client), args, input)
}

/// Whether `region` holds the record `kcat_tls` produces, read over TLS.
fn holds_record(region: &BrokerProcess, ca: &Path, client: &Issued, topic: &str) -> bool {
    kcat_tls(
        region,
        ca,
        client,
        &["-C", "-t", topic, "-o", "beginning", "-c", "1", "-e"],
    )
    .is_ok_and(|out| out.stdout.lines().any(|line| line == "across"))
}

/// Refusals of pulls for bad credentials counted by `region`.
fn refused_pulls(region: &BrokerProcess) -> f64 {
    metric(
        region,
        "causeway_replication_refused_total{reason=\"authentication failed\"}",
    )
    .ok()
    .flatten()
    .unwrap_or(0.0)
}

struct Pki {
    dir: tempfile::TempDir,
    authority: Authority,
    ca: std::path::PathBuf,
    client: Issued,
}

fn pki() -> Result<Pki> {
    let dir = tempfile::TempDir::new()?;
    let authority = Authority::new("causeway regions CA")?;
    let ca = authority.write(&dir.path().join("ca.pem"))?;
    let client = authority.client(dir.path(), "client", &[(DnType::CommonName, "tester")])?;
    Ok(Pki {
        dir,
        authority,
        ca,
        client,
    })
}

/// eu (with its own certificate) and us (presenting `us_certificate`) linked by mutual TLS;
/// once a record is produced in eu over TLS, `body` gets the mesh and the record's topic.
fn with_record_produced_in_eu(
    pki: &Pki,
    us_certificate: &Issued,
    body: impl FnOnce(&mut Mesh, &str) -> Result<()>,
) {
    let eu = pki.authority.region(pki.dir.path(), "eu").expect("eu");
    let plan = MeshPlan::new(&NAMES).expect("plan");
    let plan = mutual_tls(plan, EU, &pki.ca, &eu);
    let plan = mutual_tls(plan, US, &pki.ca, us_certificate);
    with_mesh(plan, |mesh| {
        let topic = topic_name("mtls-mesh");
        let produced = kcat_tls(mesh.region(EU), &pki.ca, &pki.client, &["-P", "-t", &topic])?;
        ensure!(
            produced.status.success(),
            "produce in eu: {}",
            produced.stderr
        );
        body(mesh, &topic)
    });
}

#[test]
fn regions_replicate_over_mutual_tls() {
    let pki = pki().expect("certificates");
    let us = pki.authority.region(pki.dir.path(), "us").expect("us");
    with_record_produced_in_eu(&pki, &us, |mesh, topic| {
        ensure!(
            wait_until(Duration::from_secs(30), || holds_record(
                mesh.region(US),
                &pki.ca,
                &pki.client,
                topic
            )),
            "the record did not reach us over mutual TLS:\n{}",
            mesh.diagnostics()
        );
        ensure!(
            refused_pulls(mesh.region(EU)) == 0.0 && refused_pulls(mesh.region(US)) == 0.0,
            "pulls were refused:\n{}",
            mesh.diagnostics()
        );
        Ok(())
    });
}

/// `us` presents a certificate whose common name is `name` (not `us`): eu refuses every pull
/// of it, whatever secret it carries, so eu's records never reach us.
fn refused_when_us_presents(name: &str) {
    let pki = pki().expect("certificates");
    let elsewhere = pki.dir.path().join("impostor");
    std::fs::create_dir(&elsewhere).expect("dir");
    let impostor = pki.authority.region(&elsewhere, name).expect("certificate");
    with_record_produced_in_eu(&pki, &impostor, |mesh, topic| {
        ensure!(
            wait_until(Duration::from_secs(20), || refused_pulls(mesh.region(EU))
                >= 1.0),
            "eu never refused us's pulls presenting {name}'s certificate:\n{}",
            mesh.diagnostics()
        );
        std::thread::sleep(Duration::from_secs(2));
        ensure!(
            !holds_record(mesh.region(US), &pki.ca, &pki.client, topic),
            "eu's record reached us through a refused link"
        );
        Ok(())
    });
}

#[test]
fn a_region_presenting_another_regions_certificate_is_refused() {
    refused_when_us_presents("eu");
}

#[test]
fn a_certificate_that_names_no_region_cannot_pull() {
    refused_when_us_presents("alice");
}
