//! The Kafka listeners a broker binds, Kafka-style: the main one (`--kafka-listen` with
//! `--kafka-security-protocol` and `--advertised-addr`) and any `--listener
//! NAME=PROTOCOL://HOST:PORT`, each advertised as `--advertised-listener NAME=HOST:PORT` says.
//! Metadata answers a client with the address of the listener it came in on, so clients of a
//! TLS listener are never sent to a plaintext one.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use anyhow::{bail, Context};
use clap::ValueEnum;

use crate::config::{BrokerOptions, SecurityProtocol};

/// Name of the listener `--kafka-listen` binds.
pub const MAIN_LISTENER: &str = "DEFAULT";

/// One Kafka listener: where it binds, how its clients authenticate, what they are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Its name, as `--advertised-listener` and the logs call it.
    pub name: String,
    /// How its clients authenticate.
    pub protocol: SecurityProtocol,
    /// The address it binds.
    pub bind: SocketAddr,
    /// What Metadata, FindCoordinator and DescribeCluster tell its clients to connect to.
    pub advertised: (String, i32),
}

/// Every listener the options describe, the main one first; refuses duplicate names or
/// addresses, malformed specifications and advertised addresses for unknown listeners.
pub fn listeners(options: &BrokerOptions) -> anyhow::Result<Vec<Listener>> {
    let mut all = vec![Listener {
        name: MAIN_LISTENER.to_owned(),
        protocol: options.kafka_security_protocol,
        bind: options.kafka_listen,
        advertised: options.advertised(),
    }];
    for spec in &options.listeners {
        let listener = parse_listener(spec).with_context(|| format!("--listener {spec:?}"))?;
        if all.iter().any(|l| l.name == listener.name) {
            bail!(
                "--listener {spec:?}: the name {} is taken (the main listener is {MAIN_LISTENER})",
                listener.name
            );
        }
        if all.iter().any(|l| l.bind == listener.bind) {
            bail!(
                "--listener {spec:?}: another listener binds {}",
                listener.bind
            );
        }
        all.push(listener);
    }
    let mut advertised_names = BTreeSet::new();
    for spec in &options.advertised_listeners {
        let (name, address) =
            parse_advertised(spec).with_context(|| format!("--advertised-listener {spec:?}"))?;
        if !advertised_names.insert(name.clone()) {
            bail!("--advertised-listener {spec:?}: {name} is advertised twice");
        }
        match all.iter_mut().find(|l| l.name == name) {
            Some(listener) if listener.name == MAIN_LISTENER => {
                bail!("--advertised-listener {spec:?}: the main listener's is --advertised-addr")
            }
            Some(listener) => listener.advertised = address,
            None => bail!("--advertised-listener {spec:?}: no --listener is named {name}"),
        }
    }
    Ok(all)
}

/// `NAME=PROTOCOL://HOST:PORT`, the host an IP address.
fn parse_listener(spec: &str) -> anyhow::Result<Listener> {
    let Some((name, rest)) = spec.split_once('=') else {
        bail!("not NAME=PROTOCOL://HOST:PORT");
    };
    check_name(name)?;
    let Some((protocol, address)) = rest.split_once("://") else {
        bail!("not NAME=PROTOCOL://HOST:PORT");
    };
    let protocol = SecurityProtocol::from_str(protocol, true).map_err(|_| {
        anyhow::anyhow!(
            "unknown security protocol {protocol:?} (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)"
        )
    })?;
    let bind: SocketAddr = address
        .parse()
        .with_context(|| format!("{address:?} is not IP:PORT"))?;
    Ok(Listener {
        name: name.to_owned(),
        protocol,
        bind,
        advertised: (bind.ip().to_string(), i32::from(bind.port())),
    })
}

/// `NAME=HOST:PORT`.
fn parse_advertised(spec: &str) -> anyhow::Result<(String, (String, i32))> {
    let Some((name, address)) = spec.split_once('=') else {
        bail!("not NAME=HOST:PORT");
    };
    check_name(name)?;
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => match port.parse::<u16>() {
            Ok(port) => Ok((name.to_owned(), (host.to_owned(), i32::from(port)))),
            Err(_) => bail!("{port:?} is not a port"),
        },
        _ => bail!("not NAME=HOST:PORT"),
    }
}

/// Listener names are what Kafka allows: letters, digits, `_` and `-`.
fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        bail!("listener name {name:?} is not 1 to 64 letters, digits, `_` or `-`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_cli_from;

    fn options(args: &[&str]) -> anyhow::Result<BrokerOptions> {
        let mut all = vec!["causeway"];
        all.extend_from_slice(args);
        Ok(parse_cli_from(all)?.serve)
    }

    #[test]
    fn the_main_listener_comes_first_and_others_follow_with_their_protocols() {
        let o = options(&[
            "--listener",
            "TLS=ssl://127.0.0.1:9093",
            "--listener",
            "clients=SASL_SSL://0.0.0.0:9094",
            "--advertised-listener",
            "clients=kafka.example:19094",
            "--ssl-certificate-file",
            "server.pem",
            "--ssl-private-key-file",
            "server.key",
        ])
        .expect("options");
        let all = listeners(&o).expect("listeners");
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].name, MAIN_LISTENER);
        assert_eq!(all[0].protocol, SecurityProtocol::Plaintext);
        assert_eq!(all[0].advertised, ("127.0.0.1".to_owned(), 9092));
        assert_eq!(all[1].protocol, SecurityProtocol::Ssl);
        assert_eq!(all[1].advertised, ("127.0.0.1".to_owned(), 9093));
        assert_eq!(all[2].protocol, SecurityProtocol::SaslSsl);
        assert_eq!(all[2].bind.to_string(), "0.0.0.0:9094");
        assert_eq!(all[2].advertised, ("kafka.example".to_owned(), 19094));
    }

    #[test]
    fn malformed_or_clashing_listeners_are_refused() {
        for args in [
            &["--listener", "A=tls://127.0.0.1:1"][..],
            &["--listener", "A=ssl://localhost:1"],
            &["--listener", "A=ssl:127.0.0.1:1"],
            &["--listener", "=ssl://127.0.0.1:1"],
            &["--listener", "a b=ssl://127.0.0.1:1"],
            &["--listener", "DEFAULT=ssl://127.0.0.1:1"],
            &["--listener", "A=ssl://127.0.0.1:9092"],
            &[
                "--listener",
                "A=ssl://127.0.0.1:1",
                "--listener",
                "A=ssl://127.0.0.1:2",
            ],
            &["--advertised-listener", "B=h:1"],
            &["--advertised-listener", "DEFAULT=h:1"],
            &[
                "--listener",
                "A=ssl://127.0.0.1:1",
                "--advertised-listener",
                "A=h:port",
            ],
            &[
                "--listener",
                "A=ssl://127.0.0.1:1",
                "--advertised-listener",
                "A=h:1",
                "--advertised-listener",
                "A=h:2",
            ],
        ] {
            let refused = options(args).and_then(|o| listeners(&o));
            assert!(refused.is_err(), "{args:?} was accepted");
        }
    }
}
