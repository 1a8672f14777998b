//! Certificates the TLS tests make for themselves (rcgen): a certificate authority, a server
//! certificate for `127.0.0.1` and `localhost`, and client certificates whose subject names a
//! principal. Everything is written as PEM files, as a broker and clients read them.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::{kcat, KcatOutput};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate authority that signs the test's server and client certificates.
pub struct Authority {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate (PEM).
    pub certificate: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
}

impl Authority {
    /// A new self-signed authority named `name`.
    pub fn new(name: &str) -> Result<Authority> {
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(&[(DnType::CommonName, name)]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().context("CA key")?;
        let pem = params.clone().self_signed(&key).context("CA")?.pem();
        Ok(Authority { params, key, pem })
    }

    /// Writes the authority's certificate to `path` (what clients trust) and returns it.
    pub fn write(&self, path: &Path) -> Result<PathBuf> {
        std::fs::write(path, &self.pem).with_context(|| format!("write {}", path.display()))?;
        Ok(path.to_path_buf())
    }

    /// A server certificate for `127.0.0.1` and `localhost`, written as `<stem>.pem` and
    /// `<stem>.key` in `dir`.
    pub fn server(&self, dir: &Path, stem: &str) -> Result<Issued> {
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(&[(DnType::CommonName, "causeway")]);
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().context("DNS name")?),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, dir, stem)
    }

    /// A region's certificate: common name `name` (what peers check against the region a
    /// pull claims), for `127.0.0.1` and `localhost`, good for serving and for connecting to
    /// peers; written as `<name>.pem` and `<name>.key`.
    pub fn region(&self, dir: &Path, name: &str) -> Result<Issued> {
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(&[(DnType::CommonName, name)]);
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().context("DNS name")?),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.issue(params, dir, name)
    }

    /// A client certificate whose subject is `subject` (Kafka's principal becomes
    /// `User:` and the subject in RFC 2253 order), written as `<stem>.pem` and `<stem>.key`.
    pub fn client(
        &self,
        dir: &Path,
        stem: &str,
        subject_parts: &[(DnType, &str)],
    ) -> Result<Issued> {
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(subject_parts);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, dir, stem)
    }

    fn issue(&self, mut params: CertificateParams, dir: &Path, stem: &str) -> Result<Issued> {
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().context("key")?;
        let issuer = self
            .params
            .clone()
            .self_signed(&self.key)
            .context("CA certificate")?;
        let certificate = params
            .signed_by(&key, &issuer, &self.key)
            .context("signing")?;
        let issued = Issued {
            certificate: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&issued.certificate, certificate.pem())?;
        std::fs::write(&issued.key, key.serialize_pem())?;
        Ok(issued)
    }
}

fn subject(parts: &[(DnType, &str)]) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    for (kind, value) in parts {
        name.push(kind.clone(), *value);
    }
    name
}

/// kcat over SSL to `bootstrap`, trusting `ca`, presenting `client` if given, with `args` and
/// `stdin`; fails only if kcat cannot run or overruns 30 s.
pub fn kcat_ssl(
    bootstrap: &str,
    ca: &Path,
    client: Option<&Issued>,
    args: &[&str],
    stdin: &[u8],
) -> Result<KcatOutput> {
    let ca = format!("ssl.ca.location={}", ca.display());
    let mut all = vec!["-b", bootstrap, "-X", "security.protocol=SSL", "-X", &ca];
    let certificate;
    let key;
    if let Some(client) = client {
        certificate = format!("ssl.certificate.location={}", client.certificate.display());
        key = format!("ssl.key.location={}", client.key.display());
        all.extend(["-X", &certificate, "-X", &key]);
    }
    all.extend_from_slice(args);
    kcat(&all, stdin, Duration::from_secs(30))
}
