//! The one HTTP call the HTTP-backed commands (`table`, `region`) make: GET a JSON document.

use serde_json::Value;

/// GETs `url` and returns the JSON body of a 200, or the server's error message.
pub(crate) fn get_json(url: &str) -> anyhow::Result<Value> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut response = agent
        .get(url)
        .call()
        .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| anyhow::anyhow!("reading the answer of {url}: {e}"))?;
    let json: Value = serde_json::from_str(&body)
        .map_err(|e| anyhow::anyhow!("{url} answered non-JSON ({e}): {body}"))?;
    if status != 200 {
        let message = json["error"].as_str().unwrap_or(&body).to_string();
        anyhow::bail!("{message} (HTTP {status})");
    }
    Ok(json)
}
