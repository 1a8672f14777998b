//! Replication frames from a peer (or anyone who reaches the Kafka port): the credentials
//! prefix, then pull requests and responses (API key 32000) and seed requests and responses
//! (API key 32001); what decodes re-encodes to the same value.
#![no_main]

use bytes::Bytes;
use causeway_replication::wire::{PullRequest, PullResponse, SeedRequest, SeedResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A seed body starts like a pull's (region, secret), and the server authenticates both
    // with this before decoding the rest.
    let _ = PullRequest::credentials(data);
    if let Ok(request) = PullRequest::decode(data) {
        let again = PullRequest::decode(&request.encode());
        assert_eq!(again.as_ref().ok(), Some(&request));
    }
    let shared = Bytes::copy_from_slice(data);
    if let Ok(response) = PullResponse::decode(&shared) {
        let again = PullResponse::decode(&response.encode().into_bytes());
        assert_eq!(again.as_ref().ok(), Some(&response));
    }
    if let Ok(request) = SeedRequest::decode(data) {
        let again = SeedRequest::decode(&request.encode());
        assert_eq!(again.as_ref().ok(), Some(&request));
    }
    if let Ok(response) = SeedResponse::decode(&shared) {
        let again = SeedResponse::decode(&response.encode().into_bytes());
        assert_eq!(again.as_ref().ok(), Some(&response));
    }
});
