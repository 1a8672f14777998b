//! Plain HTTP GETs against a broker's HTTP listener.

use anyhow::{Context, Result};

/// GETs `url` and returns the status and body.
pub fn get(agent: &ureq::Agent, url: &str) -> Result<(u16, Vec<u8>)> {
    let mut response = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url} failed"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_vec()
        .with_context(|| format!("reading the body of GET {url} failed"))?;
    Ok((status, body))
}
