//! Loopback ports for test brokers, taken from below the kernel's ephemeral range.
//!
//! A port found by binding port 0 comes from the ephemeral range, the same range the kernel
//! draws from for every outgoing connection and every other port-0 bind. Between the probe and
//! the broker's own bind, a librdkafka connection or a proxy of a test running in parallel can
//! take it, and a mesh (whose regions must know each other's ports before any starts) then fails
//! to start. Ports below that range are never handed out by the kernel, so only a test that names
//! them explicitly can collide, and this allocator never names the same one twice in a process.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Result};

/// The lowest port handed to a test broker.
const LOWEST: u16 = 10_000;

/// Where the kernel's ephemeral ports start when `/proc` does not say (Linux's default).
const DEFAULT_EPHEMERAL_LOW: u16 = 32_768;

/// Ports handed out so far by this process.
static HANDED_OUT: AtomicU32 = AtomicU32::new(0);

/// The first port of the kernel's ephemeral range.
pub fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(DEFAULT_EPHEMERAL_LOW)
}

/// A loopback TCP port below the ephemeral range that nobody holds now and that this process has
/// not handed out before. Processes start at different points of the range (by process id), so
/// test binaries run side by side rarely meet; a port held by another one is skipped.
pub fn free_port() -> Result<u16> {
    let high = ephemeral_low();
    if high <= LOWEST + 1_000 {
        bail!("the ephemeral port range starts at {high}: no room below it for test ports");
    }
    let span = u32::from(high - LOWEST);
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        let offset = u16::try_from(start.wrapping_add(n) % span)?;
        let port = LOWEST + offset;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port in {LOWEST}..{high}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn ports_come_from_below_the_ephemeral_range_and_never_twice() {
        let high = ephemeral_low();
        let mut seen = BTreeSet::new();
        for _ in 0..200 {
            let port = free_port().expect("a free port");
            assert!(
                (LOWEST..high).contains(&port),
                "{port} is in the ephemeral range that starts at {high}"
            );
            assert!(seen.insert(port), "{port} handed out twice");
        }
    }
}
