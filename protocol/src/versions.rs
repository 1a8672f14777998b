//! The API keys and versions Causeway implements. ApiVersions advertises exactly this table and
//! every request is checked against it before its body is decoded.
//!
//! Ranges are chosen so that librdkafka 2.x (kcat, confluent-kafka), kafka-python 2.x, KafkaJS 2.x
//! and the Java client 3.x/4.x all negotiate a version we implement: minimums follow Kafka 4.x
//! (KIP-896); maximums stop before versions that need features we lack (topic ids in Produce 13
//! and Fetch 13+, transactions V2 in Produce 12).

use kafka_protocol::messages::ApiKey;

/// One implemented API and the versions of it we answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupportedApi {
    /// The API.
    pub key: ApiKey,
    /// Lowest version advertised.
    pub min: i16,
    /// Highest version advertised.
    pub max: i16,
    /// Lowest version actually served. Produce is advertised from 0 as Kafka 4 does (older
    /// librdkafka checks for it and otherwise disables compression) but versions below 3 carry
    /// old message formats and are refused.
    pub min_served: i16,
}

const fn api(key: ApiKey, min: i16, max: i16) -> SupportedApi {
    SupportedApi {
        key,
        min,
        max,
        min_served: min,
    }
}

/// Every API the broker implements, in API-key order.
pub const SUPPORTED_APIS: &[SupportedApi] = &[
    SupportedApi {
        key: ApiKey::Produce,
        min: 0,
        max: 11,
        min_served: 3,
    },
    api(ApiKey::Fetch, 4, 12),
    api(ApiKey::ListOffsets, 1, 8),
    api(ApiKey::Metadata, 0, 12),
    // OffsetCommit 10 and OffsetFetch 10 name topics by id: not advertised.
    api(ApiKey::OffsetCommit, 2, 9),
    api(ApiKey::OffsetFetch, 1, 9),
    api(ApiKey::FindCoordinator, 0, 4),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 5),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::DescribeGroups, 0, 5),
    api(ApiKey::ListGroups, 0, 5),
    // SaslHandshake 0 would send raw SASL tokens after it, outside Kafka framing: only 1 is
    // served. 0 is advertised because librdkafka before 2.1 (Debian's kcat) refuses SASL unless
    // the range starts at 0, though it then sends 1 (as Kafka brokers advertise 0..1).
    SupportedApi {
        key: ApiKey::SaslHandshake,
        min: 0,
        max: 1,
        min_served: 1,
    },
    api(ApiKey::ApiVersions, 0, 3),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::DeleteRecords, 0, 2),
    api(ApiKey::InitProducerId, 0, 5),
    api(ApiKey::OffsetForLeaderEpoch, 2, 4),
    // AddPartitionsToTxn 4+ is broker-to-broker batching; EndTxn 5 and AddOffsetsToTxn 4 belong
    // to transactions V2 (KIP-890), which clients use only when the broker finalizes that
    // feature: not advertised.
    api(ApiKey::AddPartitionsToTxn, 0, 3),
    api(ApiKey::AddOffsetsToTxn, 0, 3),
    api(ApiKey::EndTxn, 0, 4),
    api(ApiKey::TxnOffsetCommit, 0, 4),
    // ACLs: v0 has no pattern type, which the codec does not know either.
    api(ApiKey::DescribeAcls, 1, 3),
    api(ApiKey::CreateAcls, 1, 3),
    api(ApiKey::DeleteAcls, 1, 3),
    api(ApiKey::DescribeConfigs, 1, 4),
    api(ApiKey::AlterConfigs, 0, 2),
    api(ApiKey::DescribeLogDirs, 1, 4),
    api(ApiKey::SaslAuthenticate, 0, 2),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::DeleteGroups, 0, 2),
    api(ApiKey::IncrementalAlterConfigs, 0, 1),
    api(ApiKey::OffsetDelete, 0, 0),
    // Client quotas (KIP-546); v1 only adds flexible encoding.
    api(ApiKey::DescribeClientQuotas, 0, 1),
    api(ApiKey::AlterClientQuotas, 0, 1),
    api(ApiKey::DescribeUserScramCredentials, 0, 0),
    api(ApiKey::AlterUserScramCredentials, 0, 0),
    api(ApiKey::DescribeCluster, 0, 1),
    api(ApiKey::DescribeProducers, 0, 0),
    api(ApiKey::DescribeTransactions, 0, 0),
    api(ApiKey::ListTransactions, 0, 1),
    // KIP-848 consumer groups; librdkafka sends only v1 (member ids made by the client).
    api(ApiKey::ConsumerGroupHeartbeat, 0, 1),
    api(ApiKey::ConsumerGroupDescribe, 0, 1),
];

/// The entry for `key`, if implemented.
pub fn supported(key: ApiKey) -> Option<&'static SupportedApi> {
    SUPPORTED_APIS.iter().find(|api| api.key == key)
}

/// Whether a request of `key` at `version` is served.
pub fn serves(key: ApiKey, version: i16) -> bool {
    supported(key).is_some_and(|api| (api.min_served..=api.max).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_served_version_is_known_to_the_codec() {
        for api in SUPPORTED_APIS {
            let codec = api.key.valid_versions();
            assert!(
                api.min_served >= codec.min && api.max <= codec.max,
                "{:?} advertises {}..={} but the codec knows {}",
                api.key,
                api.min_served,
                api.max,
                codec
            );
        }
    }

    #[test]
    fn table_is_sorted_and_unique() {
        let keys: Vec<i16> = SUPPORTED_APIS.iter().map(|api| api.key as i16).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn old_produce_versions_are_advertised_but_not_served() {
        assert!(!serves(ApiKey::Produce, 2));
        assert!(serves(ApiKey::Produce, 3));
        assert!(!serves(ApiKey::Produce, 12));
    }

    #[test]
    fn sasl_handshake_0_is_advertised_for_old_librdkafka_but_only_1_is_served() {
        let handshake = supported(ApiKey::SaslHandshake).expect("advertised");
        assert_eq!((handshake.min, handshake.max), (0, 1));
        assert!(!serves(ApiKey::SaslHandshake, 0));
        assert!(serves(ApiKey::SaslHandshake, 1));
    }

    #[test]
    fn unimplemented_api_is_not_served() {
        assert!(!serves(ApiKey::ElectLeaders, 0));
    }

    #[test]
    fn group_apis_are_served_at_the_versions_librdkafka_and_kafkajs_use() {
        for (key, version) in [
            (ApiKey::FindCoordinator, 2),
            (ApiKey::JoinGroup, 5),
            (ApiKey::SyncGroup, 3),
            (ApiKey::Heartbeat, 3),
            (ApiKey::LeaveGroup, 1),
            (ApiKey::OffsetCommit, 9),
            (ApiKey::OffsetFetch, 9),
            (ApiKey::OffsetFetch, 4),
        ] {
            assert!(serves(key, version), "{key:?} v{version}");
        }
        assert!(!serves(ApiKey::OffsetCommit, 10), "v10 needs topic ids");
    }
}
