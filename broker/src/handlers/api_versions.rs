//! ApiVersions: what this broker implements, from the one table in `causeway-protocol`.

use causeway_protocol::response::api_versions_body;
use kafka_protocol::messages::ApiVersionsResponse;

/// The list of implemented APIs and versions.
pub fn handle() -> ApiVersionsResponse {
    api_versions_body(0)
}
