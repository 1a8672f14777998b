//! `causeway table get|scan`: read table rows from a broker's HTTP listener.

use clap::Subcommand;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use super::http_json::HttpClient;
use super::HttpTarget;

/// Reading tables.
#[derive(Debug, Subcommand)]
pub enum TableCommand {
    /// Print one row as JSON (exit 1 if it does not exist).
    Get {
        /// Table (compacted topic).
        topic: String,
        /// Row key.
        key: String,
    },
    /// Print rows, one JSON object per line, following pages to the end.
    Scan {
        /// Table (compacted topic).
        topic: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Rows per HTTP request.
        #[arg(long, default_value_t = 100)]
        page: usize,
    },
}

/// `text` as one segment (or query value) of a URL.
pub(crate) fn url_segment(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

/// Runs one table command against the HTTP listener of `target`.
pub fn run(target: &HttpTarget, command: TableCommand) -> anyhow::Result<()> {
    let client = HttpClient::new(&target.access)?;
    let http = target.http.as_str();
    match command {
        TableCommand::Get { topic, key } => {
            let path = format!(
                "/v1/tables/{}/rows/{}",
                url_segment(&topic),
                url_segment(&key)
            );
            let row = client.get_json(http, &path)?;
            println!("{row}");
        }
        TableCommand::Scan {
            topic,
            prefix,
            page,
        } => {
            let mut after: Option<String> = None;
            loop {
                let mut path = format!(
                    "/v1/tables/{}/rows?prefix={}&limit={page}",
                    url_segment(&topic),
                    url_segment(&prefix)
                );
                if let Some(after) = &after {
                    path.push_str(&format!("&after={}", url_segment(after)));
                }
                let answer = client.get_json(http, &path)?;
                for row in answer["rows"].as_array().into_iter().flatten() {
                    println!("{row}");
                }
                match answer["next"].as_str() {
                    Some(next) => after = Some(next.to_string()),
                    None => break,
                }
            }
        }
    }
    Ok(())
}
