//! `causeway region status`: this region's clock and each peer link, from `GET /v1/regions`.

use std::fmt::Write as _;

use clap::Subcommand;
use serde_json::Value;

use super::http_json::HttpClient;
use super::HttpTarget;

/// Region commands.
#[derive(Debug, Subcommand)]
pub enum RegionCommand {
    /// Print this region's vector clock and, per peer, link state, lag and buffered batches
    /// (exit 1 if the broker cannot be reached).
    Status {
        /// Print the raw JSON document instead of tables (an array, one per region, with
        /// `--also`).
        #[arg(long)]
        json: bool,
        /// The HTTP listener (HOST:PORT) of another region to show side by side with this one:
        /// give each region of the mesh once to see the whole mesh from one command.
        #[arg(long, value_name = "HOST:PORT")]
        also: Vec<String>,
    },
}

/// Runs one region command against the HTTP listener of `target` (and those `--also` names,
/// reached the same way).
pub fn run(target: &HttpTarget, command: RegionCommand) -> anyhow::Result<()> {
    let RegionCommand::Status { json, also } = command;
    let client = HttpClient::new(&target.access)?;
    let http = target.http.as_str();
    if also.is_empty() {
        let status = client.get_json(http, "/v1/regions")?;
        match json {
            true => println!("{status}"),
            false => print!("{}", render(&status)),
        }
        return Ok(());
    }
    // Side by side: a region that cannot be reached is shown as such (the mesh is what an
    // operator looks at when one is down), and the command then exits 1.
    let mut statuses = Vec::new();
    let mut unreachable = Vec::new();
    for addr in std::iter::once(http).chain(also.iter().map(String::as_str)) {
        match client.get_json(addr, "/v1/regions") {
            Ok(status) => statuses.push(status),
            Err(error) => unreachable.push(format!("{addr}: unreachable: {error:#}")),
        }
    }
    if json {
        println!("{}", Value::Array(statuses.clone()));
    } else {
        print!("{}", render_mesh(&statuses));
        for line in &unreachable {
            println!("{line}");
        }
        for status in &statuses {
            print!("\n{}", render(status));
        }
    }
    if !unreachable.is_empty() {
        anyhow::bail!("{} of the regions could not be reached", unreachable.len());
    }
    Ok(())
}

/// Every region side by side: per region (row) and peer (column), the peer's batches the region
/// lacks and the age of the oldest of them, so one look tells whether the mesh has caught up.
fn render_mesh(statuses: &[Value]) -> String {
    let names: Vec<String> = statuses.iter().map(|s| text(&s["region"])).collect();
    let mut out = String::from(
        "MESH: batches each region (row) lacks of each peer (column), oldest missing in seconds\n",
    );
    let _ = write!(out, "{:<16}", "");
    for name in &names {
        let _ = write!(out, " {name:>18}");
    }
    out.push('\n');
    for (status, name) in statuses.iter().zip(&names) {
        let _ = write!(out, "{name:<16}");
        for column in &names {
            let cell = status["peers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| text(&p["name"]) == *column)
                .map_or_else(
                    || "-".to_string(),
                    |p| format!("{} / {}s", text(&p["lag_batches"]), text(&p["lag_seconds"])),
                );
            let _ = write!(out, " {cell:>18}");
        }
        out.push('\n');
    }
    out
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
        "\n{:<16} {:<22} {:<10} {:>10} {:>9} {:>10} {:>9} {:>12} {:>8}  LAST ERROR",
        "PEER",
        "ADDRESS",
        "STATE",
        "LACKING",
        "OLDEST s",
        "IT LACKS",
        "OLDEST s",
        "APPLIED",
        "STALE"
    );
    for peer in status["peers"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<16} {:<22} {:<10} {:>10} {:>9} {:>10} {:>9} {:>12} {:>8}  {}",
            text(&peer["name"]),
            text(&peer["addr"]),
            text(&peer["state"]),
            text(&peer["lag_batches"]),
            text(&peer["lag_seconds"]),
            text(&peer["peer_behind_batches"]),
            text(&peer["peer_behind_seconds"]),
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

    #[test]
    fn the_mesh_shows_what_each_region_lacks_of_each_peer() {
        let eu: Value = serde_json::from_str(
            r#"{"region":"eu","peers":[{"name":"us","lag_batches":3,"lag_seconds":6.5}]}"#,
        )
        .expect("json");
        let us: Value = serde_json::from_str(
            r#"{"region":"us","peers":[{"name":"eu","lag_batches":0,"lag_seconds":0.0}]}"#,
        )
        .expect("json");
        let text = render_mesh(&[eu, us]);
        let rows: Vec<&str> = text.lines().collect();
        assert!(
            rows[2].starts_with("eu") && rows[2].contains("3 / 6.5s"),
            "{text}"
        );
        assert!(
            rows[3].starts_with("us") && rows[3].contains("0 / 0.0s"),
            "{text}"
        );
    }
}
