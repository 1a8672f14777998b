//! Replication frames from a peer (or anyone who reaches the Kafka port): the credentials
//! prefix, then pull requests and responses; what decodes re-encodes to the same value.
#![no_main]

use causeway_replication::wire::{PullRequest, PullResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = PullRequest::credentials(data);
    if let Ok(request) = PullRequest::decode(data) {
        let again = PullRequest::decode(&request.encode());
        assert_eq!(again.as_ref().ok(), Some(&request));
    }
    if let Ok(response) = PullResponse::decode(data) {
        let again = PullResponse::decode(&response.encode());
        assert_eq!(again.as_ref().ok(), Some(&response));
    }
});
