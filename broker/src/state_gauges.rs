//! Gauges of what exists right now, rendered in Prometheus text at each scrape from the current
//! topics and committed offsets rather than kept in the metrics registry: a registered series
//! lives for the life of the process, so a deleted topic's partitions or a deleted group's lag
//! would be exported for ever. Rendered here, a series goes when its topic or group goes.

use std::collections::BTreeMap;
use std::fmt::Write;

use causeway_storage::TableStore;

use crate::groups::state::GroupState;
use crate::groups::GroupCoordinator;
use crate::positions::{travelled_lags, PositionsView};
use crate::tables::{is_table, lag as table_lag, store_name};
use crate::topics::Topics;

/// One gauge family: its name, help text and samples (label pairs, value).
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    fn new(name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            samples: Vec::new(),
        }
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} gauge", self.name);
        for (labels, value) in &self.samples {
            let labels: Vec<String> = labels
                .iter()
                .map(|(name, value)| format!("{name}=\"{}\"", escape(value)))
                .collect();
            let _ = writeln!(out, "{}{{{}}} {value}", self.name, labels.join(","));
        }
    }
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The partition, table and consumer-group gauges of the current state, in Prometheus text
/// format.
pub fn render(
    topics: &Topics,
    groups: &GroupCoordinator,
    tables: &TableStore,
    positions: Option<PositionsView<'_>>,
) -> String {
    let mut end = Family::new("causeway_partition_log_end_offset", "Log end offset.");
    let mut start = Family::new("causeway_partition_log_start_offset", "Log start offset.");
    let mut size = Family::new(
        "causeway_partition_size_bytes",
        "Bytes of the partition's segments.",
    );
    let mut damaged = Family::new(
        "causeway_partition_damaged_batches",
        "Ranges of batches found damaged on disk.",
    );
    let mut rows = Family::new("causeway_table_rows", "Live rows of a table topic.");
    let mut lag_records = Family::new(
        "causeway_table_lag_records",
        "Records below the last stable offset not applied to the table yet.",
    );
    let mut lag_seconds = Family::new(
        "causeway_table_lag_seconds",
        "Age of the oldest record not applied to the table yet.",
    );
    for topic in topics.all() {
        if is_table(&topic.overrides()) {
            for partition in topic.partitions() {
                let (records, behind_ms) = table_lag(tables, &topic, &partition);
                let labels = vec![
                    ("topic", topic.name.clone()),
                    ("partition", partition.index().to_string()),
                ];
                lag_records.samples.push((labels.clone(), records as f64));
                lag_seconds
                    .samples
                    .push((labels, behind_ms as f64 / 1000.0));
            }
            match tables.live_rows(&store_name(&topic)) {
                Ok(live) => rows
                    .samples
                    .push((vec![("topic", topic.name.clone())], live as f64)),
                Err(error) => {
                    tracing::warn!(topic = %topic.name, %error, "counting table rows failed")
                }
            }
        }
        for partition in topic.partitions() {
            let labels = vec![
                ("topic", topic.name.clone()),
                ("partition", partition.index().to_string()),
            ];
            let log = partition.log();
            end.samples
                .push((labels.clone(), log.log_end_offset() as f64));
            start
                .samples
                .push((labels.clone(), log.log_start_offset() as f64));
            size.samples.push((labels.clone(), log.size_bytes() as f64));
            damaged
                .samples
                .push((labels, log.damaged_ranges().len() as f64));
        }
    }
    let mut lag = Family::new(
        "causeway_consumer_group_lag",
        "Log end offset minus the committed offset (or, for a position another region \
         committed, where the group would resume here), per group and partition.",
    );
    match groups.all_offsets() {
        Ok(offsets) => {
            let mut behind: BTreeMap<(String, String, i32), i64> = BTreeMap::new();
            for (group, entry) in &offsets {
                let Some(partition) = topics
                    .get(&entry.topic)
                    .and_then(|t| t.partition(entry.partition))
                else {
                    continue;
                };
                let end = partition.log().log_end_offset();
                behind.insert(
                    (group.clone(), entry.topic.clone(), entry.partition),
                    (end - entry.committed.offset).max(0),
                );
            }
            if let Some(view) = positions {
                match travelled_lags(view, &offsets) {
                    Ok(travelled) => behind.extend(travelled),
                    Err(error) => {
                        tracing::warn!(%error, "reading travelled positions for the lag gauge failed")
                    }
                }
            }
            for ((group, topic, partition), value) in behind {
                let labels = vec![
                    ("group", group),
                    ("topic", topic),
                    ("partition", partition.to_string()),
                ];
                lag.samples.push((labels, value as f64));
            }
        }
        Err(error) => tracing::warn!(%error, "reading committed offsets for the lag gauge failed"),
    }
    let mut states = Family::new("causeway_consumer_groups", "Consumer groups per state.");
    match groups.state_counts() {
        Ok(counts) => {
            // Every classic state, then the consumer-protocol ones (Assigning, Reconciling) in use.
            let mut names: Vec<&str> = GroupState::ALL.iter().map(|s| s.name()).collect();
            let mut more: Vec<&str> = counts
                .keys()
                .copied()
                .filter(|name| !names.contains(name))
                .collect();
            more.sort_unstable();
            names.extend(more);
            for name in names {
                let count = counts.get(name).copied().unwrap_or(0);
                states
                    .samples
                    .push((vec![("state", name.to_owned())], count as f64));
            }
        }
        Err(error) => tracing::warn!(%error, "counting groups failed"),
    }
    let mut out = String::new();
    for family in [
        &end,
        &start,
        &size,
        &damaged,
        &rows,
        &lag_records,
        &lag_seconds,
        &lag,
        &states,
    ] {
        family.render(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_samples_rendered() {
        let mut family = Family::new("causeway_x", "An example.");
        family
            .samples
            .push((vec![("group", "a\"b\\c\nd".to_owned())], 3.0));
        let mut out = String::new();
        family.render(&mut out);
        assert_eq!(
            out,
            "# HELP causeway_x An example.\n# TYPE causeway_x gauge\ncauseway_x{group=\"a\\\"b\\\\c\\nd\"} 3\n"
        );
    }
}
