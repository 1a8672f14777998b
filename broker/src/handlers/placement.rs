//! Explicit replica assignments in CreateTopics and CreatePartitions. A region is one broker
//! (node id [`NODE_ID`]) holding every partition, so the only placement a client can ask for is
//! that broker; an assignment still says how many partitions to make, as it does in Kafka (admin
//! tools and librdkafka's own tests create topics this way).

use crate::broker::NODE_ID;
use crate::topics::TopicError;

/// `num_partitions` / `replication_factor` value meaning "the broker default".
pub const USE_DEFAULT: i32 = -1;

/// The partition count and replication factor a CreateTopics entry asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Partitions to create.
    pub partitions: u32,
    /// Replication factor to report back (every region holds every partition whatever it is).
    pub replication_factor: i16,
}

/// Reads a CreateTopics entry. Without `assignments`, the counts (or the defaults) apply. With
/// them, their partition indexes must be 0..n, each naming this broker once; `num_partitions`
/// and `replication_factor` must be unset (-1) or agree with them. Kafka refuses both set even
/// when they agree; accepting the agreeing case loses nothing and spares clients that send both.
pub fn new_topic_placement(
    num_partitions: i32,
    replication_factor: i16,
    assignments: &[(i32, Vec<i32>)],
    default_partitions: u32,
) -> Result<Placement, TopicError> {
    if assignments.is_empty() {
        let partitions = match num_partitions {
            USE_DEFAULT => default_partitions,
            n => u32::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
                TopicError::InvalidPartitions(format!(
                    "number of partitions must be at least 1, got {n}"
                ))
            })?,
        };
        let replication_factor = match i32::from(replication_factor) {
            USE_DEFAULT => 1,
            _ => replication_factor,
        };
        return Ok(Placement {
            partitions,
            replication_factor,
        });
    }
    for (expected, (index, brokers)) in assignments.iter().enumerate() {
        if usize::try_from(*index).ok() != Some(expected) {
            return Err(TopicError::InvalidReplicaAssignment(format!(
                "the assignment's partition indexes must be 0 to {} in order; found {index} at position {expected}",
                assignments.len() - 1
            )));
        }
        check_brokers(*index, brokers)?;
    }
    let partitions = u32::try_from(assignments.len()).unwrap_or(u32::MAX);
    let agrees = |given: i32, actual: i32| given == USE_DEFAULT || given == actual;
    if !agrees(num_partitions, assignments.len() as i32)
        || !agrees(i32::from(replication_factor), 1)
    {
        return Err(TopicError::InvalidRequest(format!(
            "numPartitions {num_partitions} or replicationFactor {replication_factor} disagree with a replica assignment of {partitions} partitions on one broker; leave them at -1"
        )));
    }
    Ok(Placement {
        partitions,
        replication_factor: 1,
    })
}

/// Checks a CreatePartitions entry's assignments: when present, one per added partition, each
/// naming this broker once.
pub fn check_added_assignments(
    current: u32,
    count: u32,
    assignments: &[Vec<i32>],
) -> Result<(), TopicError> {
    let added = count.saturating_sub(current);
    if assignments.len() != added as usize {
        return Err(TopicError::InvalidReplicaAssignment(format!(
            "increasing the number of partitions by {added} but {} assignments provided",
            assignments.len()
        )));
    }
    for (index, brokers) in (current..).zip(assignments) {
        check_brokers(i32::try_from(index).unwrap_or(i32::MAX), brokers)?;
    }
    Ok(())
}

/// One partition's replica list must be exactly this broker.
fn check_brokers(partition: i32, brokers: &[i32]) -> Result<(), TopicError> {
    match brokers {
        [NODE_ID] => Ok(()),
        [] => Err(TopicError::InvalidReplicaAssignment(format!(
            "partition {partition} is assigned no broker"
        ))),
        [_, _, ..] => Err(TopicError::InvalidReplicaAssignment(format!(
            "partition {partition} is assigned {} brokers; a Causeway region is one broker (id {NODE_ID}) holding every partition",
            brokers.len()
        ))),
        [unknown] => Err(TopicError::InvalidReplicaAssignment(format!(
            "partition {partition} is assigned broker {unknown}, but no such broker is registered (this region's broker is {NODE_ID})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_this_broker(n: i32) -> Vec<(i32, Vec<i32>)> {
        (0..n).map(|i| (i, vec![NODE_ID])).collect()
    }

    #[test]
    fn an_assignment_sets_the_partition_count() {
        let placed = new_topic_placement(-1, -1, &on_this_broker(5), 4).expect("placed");
        assert_eq!(placed.partitions, 5);
        assert_eq!(placed.replication_factor, 1);
        assert_eq!(
            new_topic_placement(5, 1, &on_this_broker(5), 4)
                .map(|p| p.partitions)
                .ok(),
            Some(5)
        );
    }

    #[test]
    fn counts_without_an_assignment_take_the_defaults() {
        assert_eq!(
            new_topic_placement(-1, -1, &[], 4).ok(),
            Some(Placement {
                partitions: 4,
                replication_factor: 1
            })
        );
        assert_eq!(
            new_topic_placement(3, 3, &[], 4)
                .map(|p| p.replication_factor)
                .ok(),
            Some(3)
        );
        assert!(matches!(
            new_topic_placement(0, 1, &[], 4),
            Err(TopicError::InvalidPartitions(_))
        ));
    }

    #[test]
    fn bad_assignments_are_refused() {
        let gap = vec![(0, vec![NODE_ID]), (2, vec![NODE_ID])];
        let refusals = [
            new_topic_placement(-1, -1, &gap, 4),
            new_topic_placement(-1, -1, &[(0, vec![7])], 4),
            new_topic_placement(-1, -1, &[(0, vec![])], 4),
            new_topic_placement(-1, -1, &[(0, vec![NODE_ID, NODE_ID])], 4),
        ];
        for refusal in refusals {
            assert!(
                matches!(refusal, Err(TopicError::InvalidReplicaAssignment(_))),
                "{refusal:?}"
            );
        }
        assert!(matches!(
            new_topic_placement(3, -1, &on_this_broker(5), 4),
            Err(TopicError::InvalidRequest(_))
        ));
    }

    #[test]
    fn added_partitions_need_one_assignment_each() {
        assert!(check_added_assignments(2, 4, &[vec![NODE_ID], vec![NODE_ID]]).is_ok());
        assert!(check_added_assignments(2, 4, &[vec![NODE_ID]]).is_err());
        assert!(check_added_assignments(2, 4, &[vec![NODE_ID], vec![3]]).is_err());
    }
}
