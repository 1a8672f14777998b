//! `docs/configuration.md` and the configuration table of `README.md` are checked against the
//! code: every broker option (walked through clap's `CommandFactory`), the admin commands'
//! connection flag and every topic config must have a row with its flag, environment variable,
//! config key and default, and no row may name something that does not exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use causeway_broker::config::Cli;
use clap::{Arg, CommandFactory};

/// One documented option: what the code says it is.
#[derive(Debug)]
struct Documented {
    long: String,
    env: Option<String>,
    key: String,
    default: Option<String>,
}

fn repo_file(relative: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn describe(arg: &Arg) -> Option<Documented> {
    let id = arg.get_id().as_str();
    if id == "help" || id == "version" {
        return None;
    }
    let long = arg
        .get_long()
        .unwrap_or_else(|| panic!("option {id} has no long flag"));
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    Some(Documented {
        long: long.to_string(),
        env: arg.get_env().map(|e| e.to_string_lossy().into_owned()),
        key: id.to_string(),
        default: (!defaults.is_empty()).then(|| defaults.join(",")),
    })
}

/// Every option of `causeway serve`.
fn broker_options() -> Vec<Documented> {
    let command = Cli::command();
    let serve = command
        .find_subcommand("serve")
        .expect("the serve subcommand exists");
    serve.get_arguments().filter_map(describe).collect()
}

/// Options of `causeway topic` (shared by every admin command).
fn admin_options() -> Vec<Documented> {
    let command = Cli::command();
    let mut options: Vec<Documented> = Vec::new();
    for name in ["topic", "group", "table"] {
        let sub = command
            .find_subcommand(name)
            .unwrap_or_else(|| panic!("the {name} subcommand exists"));
        for option in sub.get_arguments().filter_map(describe) {
            if !options.iter().any(|o| o.long == option.long) {
                options.push(option);
            }
        }
    }
    options
}

/// Splits a Markdown table row into trimmed cells (`\|` stays inside a cell).
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut out = Vec::new();
    let mut cell = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cell.push('|');
                chars.next();
            }
            '|' => out.push(std::mem::take(&mut cell).trim().to_string()),
            _ => cell.push(c),
        }
    }
    out.push(cell.trim().to_string());
    out
}

/// The table rows of the `## heading` section of a Markdown text (the whole text when `heading`
/// is None), without header and separator rows.
fn table_rows(text: &str, heading: Option<&str>) -> Vec<Vec<String>> {
    let mut in_section = heading.is_none();
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            in_section = heading.is_none() || Some(title.trim()) == heading;
            continue;
        }
        if !in_section || !line.trim_start().starts_with('|') {
            continue;
        }
        let row = cells(line);
        let separator = row.iter().all(|c| c.chars().all(|c| c == '-' || c == ':'));
        if !separator {
            rows.push(row);
        }
    }
    rows
}

/// Rows whose first cell documents a flag, keyed by every `--long` flag the cell names.
fn rows_by_flag(rows: &[Vec<String>]) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for row in rows {
        let first = row.first().map(String::as_str).unwrap_or("");
        if !first.starts_with("`-") {
            continue;
        }
        for word in first.trim_matches('`').split([' ', ',', '`']) {
            if let Some(long) = word.strip_prefix("--") {
                out.insert(long.to_string(), row.clone());
            }
        }
    }
    out
}

/// Checks one option's row; `columns` says where env, key and default are (key None: not in
/// this table).
fn check_row(
    file: &str,
    option: &Documented,
    row: &[String],
    env: usize,
    key: Option<usize>,
    default: usize,
) -> Vec<String> {
    let mut problems = Vec::new();
    let cell = |i: usize| row.get(i).map(String::as_str).unwrap_or("");
    match &option.env {
        Some(var) if !cell(env).starts_with(&format!("`{var}`")) => problems.push(format!(
            "{file}: --{} environment is {:?}, the code says `{var}`",
            option.long,
            cell(env)
        )),
        None => problems.push(format!("--{} has no environment variable", option.long)),
        _ => {}
    }
    if let Some(key) = key {
        let expected = if option.key == "config" {
            "none".to_string()
        } else {
            format!("`{}`", option.key)
        };
        if !cell(key).starts_with(&expected) {
            problems.push(format!(
                "{file}: --{} config key is {:?}, expected {expected}",
                option.long,
                cell(key)
            ));
        }
    }
    match &option.default {
        Some(value) if !cell(default).starts_with(&format!("`{value}`")) => problems.push(format!(
            "{file}: --{} default is {:?}, the code says `{value}`",
            option.long,
            cell(default)
        )),
        None if cell(default).starts_with('`') => problems.push(format!(
            "{file}: --{} has no default in the code but the table gives {:?}",
            option.long,
            cell(default)
        )),
        _ => {}
    }
    problems
}

fn check_table(
    file: &str,
    rows: &BTreeMap<String, Vec<String>>,
    options: &[Documented],
    columns: (usize, Option<usize>, usize),
) -> Vec<String> {
    let mut problems = Vec::new();
    let (env, key, default) = columns;
    for option in options {
        match rows.get(&option.long) {
            Some(row) => problems.extend(check_row(file, option, row, env, key, default)),
            None => problems.push(format!("{file} has no row for --{}", option.long)),
        }
    }
    let known: BTreeSet<&str> = options.iter().map(|o| o.long.as_str()).collect();
    for long in rows.keys() {
        if !known.contains(long.as_str()) {
            problems.push(format!("{file} documents --{long}, which does not exist"));
        }
    }
    problems
}

fn assert_no_problems(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "the configuration docs drifted from the code:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn configuration_md_documents_every_broker_option_with_flag_env_key_and_default() {
    let doc = repo_file("docs/configuration.md");
    let rows = rows_by_flag(&table_rows(&doc, Some("Broker options")));
    // Columns: flag | environment | config key | default | meaning
    assert_no_problems(check_table(
        "docs/configuration.md (Broker options)",
        &rows,
        &broker_options(),
        (1, Some(2), 3),
    ));
}

#[test]
fn readme_configuration_table_lists_every_broker_option_with_env_and_default() {
    let readme = repo_file("README.md");
    let rows = rows_by_flag(&table_rows(&readme, Some("Configuration")));
    // Columns: flag | environment | default | meaning
    assert_no_problems(check_table(
        "README.md (Configuration)",
        &rows,
        &broker_options(),
        (1, None, 2),
    ));
}

#[test]
fn configuration_md_documents_the_admin_commands_connection_flags() {
    let doc = repo_file("docs/configuration.md");
    let rows = rows_by_flag(&table_rows(&doc, Some("Admin commands")));
    // Columns: flag | environment | default | meaning
    assert_no_problems(check_table(
        "docs/configuration.md (Admin commands)",
        &rows,
        &admin_options(),
        (1, None, 2),
    ));
}

#[test]
fn configuration_md_documents_every_topic_config_with_its_default() {
    let doc = repo_file("docs/configuration.md");
    let rows: BTreeMap<String, Vec<String>> = table_rows(&doc, Some("Topic configs"))
        .into_iter()
        .filter(|row| row.first().is_some_and(|c| c.starts_with('`')))
        .map(|row| (row[0].trim_matches('`').to_string(), row))
        .collect();
    let mut problems = Vec::new();
    for config in causeway_storage::TOPIC_CONFIGS {
        match rows.get(config.name) {
            Some(row) => {
                let default = row.get(1).map(String::as_str).unwrap_or("");
                if !default.starts_with(&format!("`{}`", config.default)) {
                    problems.push(format!(
                        "{} default is {default:?}, the code says `{}`",
                        config.name, config.default
                    ));
                }
            }
            None => problems.push(format!("no row for topic config {}", config.name)),
        }
    }
    let known: BTreeSet<&str> = causeway_storage::TOPIC_CONFIGS
        .iter()
        .map(|c| c.name)
        .collect();
    for name in rows.keys() {
        if !known.contains(name.as_str()) {
            problems.push(format!(
                "topic config {name} is documented but not accepted"
            ));
        }
    }
    assert_no_problems(problems);
}
