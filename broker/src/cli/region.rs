//! `causeway region status`: this region's clock and each peer link, from `GET /v1/regions`.

use std::fmt::Write as _;

use clap::Subcommand;
use serde_json::Value;

use super::http_json::get_json;

/// Region commands.
#[derive(Debug, Subcommand)]
pub enum RegionCommand {
    /// Print this region's vector clock and, per peer, link state, lag and buffered batches
    /// (exit 1 if the broker cannot be reached).
    Status {
        /// Print the raw JSON document instead of tables.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one region command against the HTTP listener at `http` (HOST:PORT).
pub fn run(http: &str, command: RegionCommand) -> anyhow::Result<()> {
    let RegionCommand::Status { json } = command;
    let status = get_json(&format!("http://{http}/v1/regions"))?;
    if json {
        println!("{status}");
    } else {
        print!("{}", render(&status));
    }
    Ok(())
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

/// The status document as plain tables.
fn render(status: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "REGION {} (id {})  buffered batches: {}",
        text(&status["region"]),
        text(&status["region_id"]),
        text(&status["buffered_batches"])
    );
    let _ = writeln!(out, "\nCLOCK (batches applied per origin)");
    for (origin, batches) in status["clock"].as_object().into_iter().flatten() {
        let _ = writeln!(out, "  {origin:<16} {}", text(batches));
    }
    let _ = writeln!(
        out,
        "\n{:<16} {:<22} {:<10} {:>10} {:>9} {:>12} {:>8}  LAST ERROR",
        "PEER", "ADDRESS", "STATE", "LAG", "LAG (s)", "APPLIED", "STALE"
    );
    for peer in status["peers"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<16} {:<22} {:<10} {:>10} {:>9} {:>12} {:>8}  {}",
            text(&peer["name"]),
            text(&peer["addr"]),
            text(&peer["state"]),
            text(&peer["lag_batches"]),
            text(&peer["lag_seconds"]),
            text(&peer["batches_applied"]),
            text(&peer["stale"]),
            text(&peer["last_error"]),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_renders_clock_and_peers() {
        let status: Value = serde_json::from_str(
            r#"{"region":"eu","region_id":7,"buffered_batches":0,"clock":{"eu":12,"us":5},
                "peers":[{"name":"us","addr":"10.0.0.2:9092","state":"connected","lag_batches":3,
                "lag_seconds":0.5,"batches_applied":5,"stale":false,"last_error":null}]}"#,
        )
        .expect("json");
        let text = render(&status);
        assert!(text.contains("REGION eu (id 7)"), "{text}");
        assert!(text.contains("us               5"), "{text}");
        assert!(text.contains("connected"), "{text}");
        assert!(text.contains("10.0.0.2:9092"), "{text}");
    }
}
