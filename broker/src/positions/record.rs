//! The rows of the positions table: one per group, topic incarnation and partition, keyed and
//! encoded as JSON so an operator can read them with the table API.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::frontier::Position;

/// One committed position as it travels: the commit as the committing region answered it, and
/// its [`Position`] for every other region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    /// The committing region's id.
    pub region: u32,
    /// When it was committed there (ms since the epoch): orders it against local commits.
    pub commit_ms: i64,
    /// The committed offset, in the committing region's log.
    pub offset: i64,
    /// The committed leader epoch, as the client sent it.
    pub leader_epoch: i32,
    /// The commit's metadata string.
    pub metadata: Option<String>,
    /// What the group had consumed, in terms every region understands.
    pub position: Position,
}

/// The row key of `group`'s position in partition `partition` of the topic incarnation `topic`:
/// the JSON array `["group","topic-id",partition]`, so one group's rows share the prefix
/// [`group_prefix`].
pub fn row_key(group: &str, topic: Uuid, partition: i32) -> Vec<u8> {
    serde_json::to_vec(&(group, topic.to_string(), partition)).unwrap_or_default()
}

/// The key prefix every row of `group` starts with.
pub fn group_prefix(group: &str) -> Vec<u8> {
    let mut prefix = b"[".to_vec();
    prefix.extend(serde_json::to_vec(group).unwrap_or_default());
    prefix.push(b',');
    prefix
}

/// The topic incarnation and partition a row key of `group` names; `None` for another group's
/// key or a malformed one.
pub fn parse_key(group: &str, key: &[u8]) -> Option<(Uuid, i32)> {
    let (key_group, topic, partition) = parse_any_key(key)?;
    (key_group == group).then_some((topic, partition))
}

/// The group, topic incarnation and partition any row key names; `None` for a malformed one.
pub fn parse_any_key(key: &[u8]) -> Option<(String, Uuid, i32)> {
    let (group, topic, partition): (String, String, i32) = serde_json::from_slice(key).ok()?;
    Some((group, Uuid::parse_str(&topic).ok()?, partition))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_group_share_its_prefix_and_parse_back() {
        let topic = Uuid::from_u128(7);
        for group in ["g", "with \"quotes\"", "a,b", "ü/\\"] {
            let key = row_key(group, topic, 3);
            assert!(key.starts_with(&group_prefix(group)), "{group}");
            assert_eq!(parse_key(group, &key), Some((topic, 3)));
        }
        // A group whose name extends another's does not share its prefix.
        assert!(!row_key("gg", topic, 0).starts_with(&group_prefix("g")));
        assert_eq!(parse_key("g", &row_key("gg", topic, 0)), None);
        assert_eq!(parse_key("g", b"not json"), None);
        assert_eq!(
            parse_any_key(&row_key("gg", topic, 2)),
            Some(("gg".into(), topic, 2))
        );
    }
}
