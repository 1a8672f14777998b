//! `causeway certs init`: the certificates of a mesh of regions that talk mutual TLS
//! (`--replication-tls`), made offline with rcgen: an authority (`ca.pem`, `ca.key`) and for
//! each region a certificate whose subject common name is the region's name (what a peer checks
//! against the region a pull claims) with the region's name, `localhost`, `127.0.0.1` and any
//! `--hosts` as subject alternative names, good for serving (the region's TLS listeners) and for
//! connecting (its links to peers): `REGION.pem`, `REGION.key`.
//!
//! It only writes what is missing and never replaces a file, so it can run before every start:
//! a second run writes nothing, and a region added later gets its certificate from the
//! authority already there. Private keys are written with mode 0600.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Subcommand;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Common name of the authority `certs init` makes.
const CA_COMMON_NAME: &str = "Causeway regions CA";

/// Least validity of the authority, in days (region certificates are renewed under it).
const CA_DAYS_MIN: u32 = 3650;

/// `causeway certs ...`
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Creates, where missing, an authority and one certificate per region (common name: the
    /// region's name) for `--replication-tls` and the regions' TLS listeners.
    Init {
        /// Where to write `ca.pem`, `ca.key`, `REGION.pem` and `REGION.key` (created if absent).
        #[arg(long)]
        dir: PathBuf,
        /// The regions' names, as given to `--region` (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        regions: Vec<String>,
        /// More host names or IP addresses every region certificate is valid for, besides the
        /// region's name, `localhost` and `127.0.0.1` (comma-separated).
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        /// Validity of the region certificates, in days (the authority's: ten years, or this
        /// if longer).
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

/// Runs a certs command; what it prints on success.
pub fn run(command: CertsCommand) -> anyhow::Result<String> {
    execute(command)
}

/// Carries out `command`; returns what to print.
fn execute(command: CertsCommand) -> anyhow::Result<String> {
    match command {
        CertsCommand::Init {
            dir,
            regions,
            hosts,
            days,
        } => init(&dir, &regions, &hosts, days),
    }
}

/// An authority able to sign: its certificate (as rcgen needs it to name the issuer) and key.
struct Authority {
    certificate: Certificate,
    key: KeyPair,
}

fn init(dir: &Path, regions: &[String], hosts: &[String], days: u32) -> anyhow::Result<String> {
    if days == 0 {
        bail!("--days must be at least 1");
    }
    let regions = checked_regions(regions)?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    for host in hosts.iter().map(|h| h.trim()).filter(|h| !h.is_empty()) {
        san(host).with_context(|| format!("--hosts {host:?}"))?;
        if !names.iter().any(|n| n == host) {
            names.push(host.to_string());
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut out = String::new();
    let (ca_pem, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let mut authority = None;
    match (ca_pem.exists(), ca_key.exists()) {
        (true, true) => {}
        (false, false) => {
            let created = new_authority(days.max(CA_DAYS_MIN))?;
            write_new(&ca_key, created.key.serialize_pem().as_bytes(), 0o600)?;
            write_new(&ca_pem, created.certificate.pem().as_bytes(), 0o644)?;
            let _ = writeln!(out, "wrote {} (authority)", ca_pem.display());
            let _ = writeln!(out, "wrote {} (its key)", ca_key.display());
            authority = Some(created);
        }
        (true, false) => bail!(
            "{} exists without {}: cannot sign; move it away to start a new authority",
            ca_pem.display(),
            ca_key.display()
        ),
        (false, true) => bail!(
            "{} exists without {}; move it away to start a new authority",
            ca_key.display(),
            ca_pem.display()
        ),
    }
    for region in &regions {
        let (pem, key) = (
            dir.join(format!("{region}.pem")),
            dir.join(format!("{region}.key")),
        );
        match (pem.exists(), key.exists()) {
            (true, true) => {
                let mut wanted = vec![region.clone()];
                wanted.extend(names.iter().cloned());
                let missing = missing_names(&pem, &wanted)?;
                if missing.is_empty() {
                    let _ = writeln!(out, "kept {}", pem.display());
                } else {
                    let _ = writeln!(
                        out,
                        "kept {}; it is not valid for {} (delete it and {} to issue a new one)",
                        pem.display(),
                        missing.join(", "),
                        key.display()
                    );
                }
                continue;
            }
            (false, false) => {}
            (true, false) | (false, true) => bail!(
                "{} and {} must both exist or both be absent",
                pem.display(),
                key.display()
            ),
        }
        if authority.is_none() {
            authority = Some(load_authority(&ca_pem, &ca_key)?);
        }
        let Some(signer) = authority.as_ref() else {
            bail!("no authority to sign with");
        };
        let (certificate, private_key) = region_certificate(signer, region, &names, days)?;
        write_new(&key, private_key.serialize_pem().as_bytes(), 0o600)?;
        write_new(&pem, certificate.pem().as_bytes(), 0o644)?;
        let _ = writeln!(
            out,
            "wrote {} (CN={region}; {}, {}; {days} days) and {}",
            pem.display(),
            region,
            names.join(", "),
            key.display()
        );
    }
    Ok(out)
}

/// The region names, each usable as a file name and a DNS name, without repeats.
fn checked_regions(regions: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for region in regions.iter().map(|r| r.trim()) {
        let valid = !region.is_empty()
            && region.len() <= 63
            && region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !region.starts_with('-');
        if !valid {
            bail!("--regions: {region:?} is not a region name (letters, digits, '-' and '_')");
        }
        if region == "ca" {
            bail!(
                "--regions: a region cannot be named \"ca\" (its files would be the authority's)"
            );
        }
        if out.iter().any(|r| r == region) {
            bail!("--regions names {region} twice");
        }
        out.push(region.to_string());
    }
    if out.is_empty() {
        bail!("--regions names no region");
    }
    Ok(out)
}

/// A subject alternative name: an IP address, else a DNS name.
fn san(name: &str) -> anyhow::Result<SanType> {
    Ok(match name.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => {
            let labels_ok = name.split('.').enumerate().all(|(i, label)| {
                (i == 0 && label == "*")
                    || (!label.is_empty()
                        && label.len() <= 63
                        && !label.starts_with('-')
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
            });
            if !labels_ok || name.len() > 253 {
                bail!("{name:?} is neither an IP address nor a DNS name");
            }
            SanType::DnsName(
                name.try_into()
                    .with_context(|| format!("{name:?} is not a DNS name"))?,
            )
        }
    })
}

/// The authority's parameters (its name and the key usages of an authority).
fn authority_params(days: u32) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, days)?;
    Ok(params)
}

fn new_authority(days: u32) -> anyhow::Result<Authority> {
    let key = KeyPair::generate().context("generating the authority's key")?;
    let certificate = authority_params(days)?
        .self_signed(&key)
        .context("signing the authority's certificate")?;
    Ok(Authority { certificate, key })
}

/// The authority written by an earlier run, to sign a region added since. rcgen names the
/// issuer from a certificate of its own, so the authority's certificate is made again from its
/// key and name; a `ca.pem` not made by `certs init` (another name, another key) is refused.
fn load_authority(ca_pem: &Path, ca_key: &Path) -> anyhow::Result<Authority> {
    let key_pem =
        std::fs::read_to_string(ca_key).with_context(|| format!("reading {}", ca_key.display()))?;
    let key = KeyPair::from_pem(&key_pem).with_context(|| format!("{}", ca_key.display()))?;
    let der = CertificateDer::from_pem_file(ca_pem)
        .with_context(|| format!("reading {}", ca_pem.display()))?;
    let (_, parsed) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| anyhow::anyhow!("{}: {e}", ca_pem.display()))?;
    if parsed.tbs_certificate.subject_pki.raw != key.public_key_der().as_slice() {
        bail!(
            "{} is not the key of {}",
            ca_key.display(),
            ca_pem.display()
        );
    }
    let certificate = authority_params(CA_DAYS_MIN)?
        .self_signed(&key)
        .context("the authority")?;
    let (_, remade) = X509Certificate::from_der(certificate.der().as_ref())
        .map_err(|e| anyhow::anyhow!("the authority: {e}"))?;
    if remade.subject().as_raw() != parsed.subject().as_raw() {
        bail!(
            "{} was not made by `causeway certs init` (its subject is not CN={CA_COMMON_NAME}): issue region certificates with the tools that made it",
            ca_pem.display()
        );
    }
    Ok(Authority { certificate, key })
}

/// A region's certificate and key: CN the region, SANs the region and `names`, server and
/// client authentication.
fn region_certificate(
    authority: &Authority,
    region: &str,
    names: &[String],
    days: u32,
) -> anyhow::Result<(Certificate, KeyPair)> {
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, region);
    params.distinguished_name = subject;
    params.subject_alt_names = std::iter::once(region)
        .chain(names.iter().map(String::as_str))
        .map(san)
        .collect::<anyhow::Result<_>>()?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days)?;
    let key = KeyPair::generate().context("generating a region's key")?;
    let certificate = params
        .signed_by(&key, &authority.certificate, &authority.key)
        .with_context(|| format!("signing {region}'s certificate"))?;
    Ok((certificate, key))
}

/// Valid from an hour ago (clocks of machines differ) for `days` days.
fn validity(params: &mut CertificateParams, days: u32) -> anyhow::Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?;
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(Duration::from_secs(3600));
    params.not_after = epoch + now + Duration::from_secs(u64::from(days) * 86_400);
    Ok(())
}

/// Which of `wanted` (DNS names or IP addresses) the certificate at `path` is not valid for.
fn missing_names(path: &Path, wanted: &[String]) -> anyhow::Result<Vec<String>> {
    let der = CertificateDer::from_pem_file(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let (_, parsed) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(sans)) = parsed.subject_alternative_name() {
        for name in &sans.value.general_names {
            match name {
                GeneralName::DNSName(n) => dns.push(n.to_ascii_lowercase()),
                GeneralName::IPAddress(bytes) => ips.push(bytes.to_vec()),
                _ => {}
            }
        }
    }
    Ok(wanted
        .iter()
        .filter(|name| match name.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => !ips.contains(&ip.octets().to_vec()),
            Ok(IpAddr::V6(ip)) => !ips.contains(&ip.octets().to_vec()),
            Err(_) => !dns.contains(&name.to_ascii_lowercase()),
        })
        .cloned()
        .collect())
}

/// Writes a file that must not exist yet, with `mode` (Unix permissions).
fn write_new(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(path: &Path) -> (String, Vec<String>, Vec<Vec<u8>>, Vec<u8>) {
        let der = CertificateDer::from_pem_file(path).expect("a PEM certificate");
        let (_, cert) = X509Certificate::from_der(der.as_ref()).expect("a certificate");
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|n| n.as_str().ok())
            .expect("a common name")
            .to_string();
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for name in &cert
            .subject_alternative_name()
            .expect("SAN extension")
            .expect("SANs")
            .value
            .general_names
        {
            match name {
                GeneralName::DNSName(n) => dns.push(n.to_string()),
                GeneralName::IPAddress(ip) => ips.push(ip.to_vec()),
                other => panic!("unexpected SAN {other:?}"),
            }
        }
        let eku = cert
            .extended_key_usage()
            .expect("EKU")
            .expect("EKU present")
            .value;
        assert!(
            eku.server_auth && eku.client_auth,
            "serverAuth and clientAuth"
        );
        (cn, dns, ips, cert.issuer().as_raw().to_vec())
    }

    fn init_in(dir: &Path, regions: &[&str], hosts: &[&str]) -> anyhow::Result<String> {
        execute(CertsCommand::Init {
            dir: dir.to_path_buf(),
            regions: regions.iter().map(|r| r.to_string()).collect(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            days: 30,
        })
    }

    fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| {
                let e = e.expect("entry");
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).expect("read"),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn init_writes_an_authority_and_region_certificates_once() {
        let temp = tempfile::TempDir::new().expect("dir");
        let dir = temp.path().join("certs");
        let printed = init_in(
            &dir,
            &["eu", "us", "ap"],
            &["kafka.example.com", "10.0.0.7"],
        )
        .expect("init");
        for name in ["ca.pem", "ca.key", "eu.pem", "eu.key", "us.pem", "ap.key"] {
            assert!(dir.join(name).is_file(), "{name} written");
            assert!(printed.contains(name), "{name} reported: {printed}");
        }
        #[cfg(unix)]
        for name in ["ca.key", "eu.key", "us.key", "ap.key"] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(name))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}'s mode");
        }
        let ca_der = CertificateDer::from_pem_file(dir.join("ca.pem")).expect("CA");
        let (_, ca) = X509Certificate::from_der(ca_der.as_ref()).expect("CA parses");
        assert!(ca.is_ca(), "ca.pem is an authority");
        for region in ["eu", "us", "ap"] {
            let (cn, dns, ips, issuer) = parse(&dir.join(format!("{region}.pem")));
            assert_eq!(cn, region);
            assert_eq!(
                dns,
                vec![
                    region.to_string(),
                    "localhost".into(),
                    "kafka.example.com".into()
                ]
            );
            assert_eq!(ips, vec![vec![127, 0, 0, 1], vec![10, 0, 0, 7]]);
            assert_eq!(issuer, ca.subject().as_raw().to_vec(), "issued by ca.pem");
        }

        // A second run writes nothing.
        let before = files(&dir);
        let again = init_in(
            &dir,
            &["eu", "us", "ap"],
            &["kafka.example.com", "10.0.0.7"],
        )
        .expect("second init");
        assert!(!again.contains("wrote"), "{again}");
        assert_eq!(files(&dir), before, "nothing rewritten");

        // A region added later is signed by the authority already there; a missing host is
        // reported for the kept certificates, which are not replaced.
        let added = init_in(&dir, &["eu", "sa"], &["other.example.com"]).expect("add sa");
        assert!(added.contains("sa.pem"), "{added}");
        assert!(added.contains("not valid for"), "{added}");
        let (cn, dns, _, issuer) = parse(&dir.join("sa.pem"));
        assert_eq!(cn, "sa");
        assert!(dns.contains(&"other.example.com".to_string()));
        assert_eq!(
            issuer,
            ca.subject().as_raw().to_vec(),
            "sa issued by ca.pem"
        );
        let eu = files(&dir)
            .into_iter()
            .find(|(name, _)| name == "eu.pem")
            .expect("eu.pem");
        assert_eq!(
            Some(&eu),
            before.iter().find(|(name, _)| name == "eu.pem"),
            "eu.pem kept"
        );
    }

    #[test]
    fn init_refuses_bad_names_and_half_present_pairs() {
        let temp = tempfile::TempDir::new().expect("dir");
        let dir = temp.path();
        assert!(
            init_in(dir, &["eu", "eu"], &[]).is_err(),
            "a repeated region"
        );
        assert!(init_in(dir, &["ca"], &[]).is_err(), "a region named ca");
        assert!(init_in(dir, &["e/u"], &[]).is_err(), "a slash");
        assert!(init_in(dir, &["eu"], &["bad host"]).is_err(), "a bad host");
        init_in(dir, &["eu"], &[]).expect("init");
        std::fs::remove_file(dir.join("eu.key")).expect("remove");
        assert!(init_in(dir, &["eu"], &[]).is_err(), "eu.pem without eu.key");
        std::fs::remove_file(dir.join("ca.key")).expect("remove");
        assert!(init_in(dir, &["us"], &[]).is_err(), "ca.pem without ca.key");
    }
}
