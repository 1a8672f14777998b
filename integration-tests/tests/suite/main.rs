//! Every end-to-end test but `open_files` (which lowers this process's open-file limit), as one
//! test binary: each binary links RocksDB, librdkafka and OpenSSL, and thirty-odd of them filled
//! CI's disk and spent minutes linking. Each module is one area, tested with real clients
//! against the real `causeway` binary.

mod acls;
mod admin;
mod attacks;
mod bad_input;
mod consumer_protocol;
mod disk_faults;
mod durability;
mod fetch;
mod group_failover;
mod groups;
mod groups_bench;
mod http_auth;
mod idempotence;
mod layering;
mod lifecycle;
mod limits;
mod meta_rebuild;
mod offsets;
mod operations;
mod other_clients;
mod quotas;
mod region_join;
mod region_lag;
mod region_security;
mod region_tls;
mod region_transactions;
mod regions;
mod rogue_peer;
mod roundtrip;
mod sasl;
mod scrub;
mod tables;
mod tls;
mod transactions;
