//! The classic group protocol: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! ListGroups, DescribeGroups and DeleteGroups. This broker is the coordinator of every group of
//! its region; the state lives in [`crate::groups`]. JoinGroup and SyncGroup are long polls: the
//! handler awaits the coordinator's reply while the connection, like Kafka's, serves one request
//! at a time.

use std::sync::Arc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    ApiKey, BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, RequestHeader, SyncGroupRequest,
    SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{changing_topics, code, str_bytes};
use crate::broker::{Broker, NODE_ID};
use crate::groups::state::{GroupState, JoinRequest, SyncRequest};
use crate::metrics;

/// FindCoordinator key type of consumer groups.
const KEY_TYPE_GROUP: i8 = 0;
/// FindCoordinator key type of transactional ids (issue 4).
const KEY_TYPE_TRANSACTION: i8 = 1;
/// JoinGroup v4 introduced MEMBER_ID_REQUIRED.
const JOIN_VERSION_MEMBER_ID_REQUIRED: i16 = 4;

fn count_error(api: ApiKey, error: i16) {
    if error != 0 {
        metrics::request_error(api, error);
    }
}

fn opt_str(value: &Option<StrBytes>) -> Option<&str> {
    value.as_ref().map(|v| v.as_str())
}

/// FindCoordinator: this broker coordinates every group and every transactional id.
pub fn find_coordinator(
    advertised: &(String, i32),
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let (host, port) = advertised.clone();
    let answer = |key_type: i8| -> (i16, i32, String, i32) {
        match key_type {
            KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION => (0, NODE_ID, host.clone(), port),
            _ => (ResponseError::InvalidRequest.code(), -1, String::new(), -1),
        }
    };
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let (error, node, host, port) = answer(request.key_type);
                count_error(ApiKey::FindCoordinator, error);
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(node))
                    .with_host(str_bytes(host))
                    .with_port(port)
                    .with_error_code(error)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (error, node, host, port) = answer(request.key_type);
    count_error(ApiKey::FindCoordinator, error);
    FindCoordinatorResponse::default()
        .with_error_code(error)
        .with_node_id(BrokerId(node))
        .with_host(str_bytes(host))
        .with_port(port)
}

/// JoinGroup: parks until the group's rebalance completes.
pub async fn join(
    broker: &Broker,
    header: &RequestHeader,
    client: &super::ClientContext,
    request: JoinGroupRequest,
    version: i16,
) -> JoinGroupResponse {
    let group_id = request.group_id.as_str().to_string();
    let result = if group_id.is_empty() {
        None
    } else {
        let join = JoinRequest {
            member_id: request.member_id.as_str().to_string(),
            instance_id: opt_str(&request.group_instance_id).map(str::to_string),
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: if version == 0 {
                request.session_timeout_ms
            } else {
                request.rebalance_timeout_ms
            },
            protocol_type: request.protocol_type.as_str().to_string(),
            protocols: request
                .protocols
                .into_iter()
                .map(|p| (p.name.as_str().to_string(), p.metadata))
                .collect(),
            client_id: opt_str(&header.client_id).unwrap_or_default().to_string(),
            client_host: client.host.clone(),
            require_known_member_id: version >= JOIN_VERSION_MEMBER_ID_REQUIRED,
        };
        Some(broker.groups.join(&group_id, join).await)
    };
    let Some(result) = result else {
        count_error(ApiKey::JoinGroup, ResponseError::InvalidGroupId.code());
        return JoinGroupResponse::default()
            .with_error_code(ResponseError::InvalidGroupId.code())
            .with_generation_id(-1)
            .with_member_id(request.member_id)
            .with_protocol_name((version < 7).then(StrBytes::default));
    };
    count_error(ApiKey::JoinGroup, result.error);
    let members = result
        .members
        .into_iter()
        .map(|m| {
            let member = JoinGroupResponseMember::default()
                .with_member_id(str_bytes(m.member_id))
                .with_metadata(m.metadata);
            if version >= 5 {
                member.with_group_instance_id(m.instance_id.map(str_bytes))
            } else {
                member
            }
        })
        .collect();
    let protocol_name = match (result.protocol_name, version >= 7) {
        (Some(name), _) => Some(str_bytes(name)),
        (None, true) => None,
        (None, false) => Some(StrBytes::default()),
    };
    let mut response = JoinGroupResponse::default()
        .with_error_code(result.error)
        .with_generation_id(result.generation_id)
        .with_protocol_name(protocol_name)
        .with_leader(str_bytes(result.leader))
        .with_member_id(str_bytes(result.member_id))
        .with_members(members);
    if version >= 7 {
        response = response.with_protocol_type(result.protocol_type.map(str_bytes));
    }
    if version >= 9 {
        response = response.with_skip_assignment(result.skip_assignment);
    }
    response
}

/// SyncGroup: parks until the leader's assignment arrives.
pub async fn sync(broker: &Broker, request: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let result = if request.group_id.is_empty() {
        None
    } else {
        let sync = SyncRequest {
            member_id: request.member_id.as_str().to_string(),
            instance_id: opt_str(&request.group_instance_id).map(str::to_string),
            generation_id: request.generation_id,
            protocol_type: opt_str(&request.protocol_type).map(str::to_string),
            protocol_name: opt_str(&request.protocol_name).map(str::to_string),
            assignments: request
                .assignments
                .into_iter()
                .map(|a| (a.member_id.as_str().to_string(), a.assignment))
                .collect(),
        };
        Some(broker.groups.sync(request.group_id.as_str(), sync).await)
    };
    let Some(result) = result else {
        count_error(ApiKey::SyncGroup, ResponseError::InvalidGroupId.code());
        return SyncGroupResponse::default().with_error_code(ResponseError::InvalidGroupId.code());
    };
    count_error(ApiKey::SyncGroup, result.error);
    let response = SyncGroupResponse::default()
        .with_error_code(result.error)
        .with_assignment(result.assignment);
    if version >= 5 {
        response
            .with_protocol_type(result.protocol_type.map(str_bytes))
            .with_protocol_name(result.protocol_name.map(str_bytes))
    } else {
        response
    }
}

/// Heartbeat: keeps the session alive and tells the member whether to rejoin.
pub fn heartbeat(broker: &Broker, request: HeartbeatRequest) -> HeartbeatResponse {
    let error = if request.group_id.is_empty() {
        ResponseError::InvalidGroupId.code()
    } else {
        code(broker.groups.heartbeat(
            request.group_id.as_str(),
            request.member_id.as_str(),
            opt_str(&request.group_instance_id),
            request.generation_id,
        ))
    };
    count_error(ApiKey::Heartbeat, error);
    HeartbeatResponse::default().with_error_code(error)
}

/// LeaveGroup: one member (v0-2) or a batch of members by id or instance id (v3+).
pub fn leave(broker: &Broker, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let batched = version >= 3;
    let members: Vec<(String, Option<String>)> = if batched {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.as_str().to_string(),
                    opt_str(&m.group_instance_id).map(str::to_string),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.as_str().to_string(), None)]
    };
    if request.group_id.is_empty() {
        count_error(ApiKey::LeaveGroup, ResponseError::InvalidGroupId.code());
        return LeaveGroupResponse::default().with_error_code(ResponseError::InvalidGroupId.code());
    }
    let errors = broker.groups.leave(request.group_id.as_str(), &members);
    if !batched {
        let error = errors.into_iter().next().map_or(0, code);
        count_error(ApiKey::LeaveGroup, error);
        return LeaveGroupResponse::default().with_error_code(error);
    }
    let responses = members
        .into_iter()
        .zip(errors)
        .map(|((member_id, instance_id), result)| {
            let error = code(result);
            count_error(ApiKey::LeaveGroup, error);
            MemberResponse::default()
                .with_member_id(str_bytes(member_id))
                .with_group_instance_id(instance_id.map(str_bytes))
                .with_error_code(error)
        })
        .collect();
    LeaveGroupResponse::default().with_members(responses)
}

/// ListGroups: every group of this region, filtered by state (v4+) and type (v5).
pub fn list(broker: &Broker, request: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let groups = match broker.groups.list() {
        Ok(groups) => groups,
        Err(error) => {
            tracing::error!(%error, "listing groups failed");
            count_error(
                ApiKey::ListGroups,
                ResponseError::CoordinatorNotAvailable.code(),
            );
            return ListGroupsResponse::default()
                .with_error_code(ResponseError::CoordinatorNotAvailable.code());
        }
    };
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.as_str().to_ascii_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.as_str().to_ascii_lowercase())
        .collect();
    let listed = groups
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.to_ascii_lowercase()))
        .filter(|g| types.is_empty() || types.iter().any(|t| t == g.group_type))
        .map(|g| {
            let mut listed = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(g.group_id)))
                .with_protocol_type(str_bytes(g.protocol_type));
            if version >= 4 {
                listed = listed.with_group_state(str_bytes(g.state));
            }
            if version >= 5 {
                listed = listed.with_group_type(str_bytes(g.group_type));
            }
            listed
        })
        .collect();
    ListGroupsResponse::default().with_groups(listed)
}

/// DescribeGroups: state, selected assignor, members with metadata and assignments.
pub fn describe(
    broker: &Broker,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|group_id| {
            let described = DescribedGroup::default().with_group_id(group_id.clone());
            if group_id.is_empty() {
                count_error(ApiKey::DescribeGroups, ResponseError::InvalidGroupId.code());
                return described
                    .with_error_code(ResponseError::InvalidGroupId.code())
                    .with_group_state(str_bytes(GroupState::Dead.name()));
            }
            match broker.groups.describe(group_id.as_str()) {
                Ok(d) => {
                    let members = d
                        .members
                        .into_iter()
                        .map(|m| {
                            let member = DescribedGroupMember::default()
                                .with_member_id(str_bytes(m.member_id))
                                .with_client_id(str_bytes(m.client_id))
                                .with_client_host(str_bytes(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment);
                            if version >= 4 {
                                member.with_group_instance_id(m.instance_id.map(str_bytes))
                            } else {
                                member
                            }
                        })
                        .collect();
                    described
                        .with_group_state(str_bytes(d.state.name()))
                        .with_protocol_type(str_bytes(d.protocol_type))
                        .with_protocol_data(str_bytes(d.protocol_name))
                        .with_members(members)
                }
                Err(error) => {
                    tracing::error!(%error, "describing group failed");
                    count_error(
                        ApiKey::DescribeGroups,
                        ResponseError::CoordinatorNotAvailable.code(),
                    );
                    described
                        .with_error_code(ResponseError::CoordinatorNotAvailable.code())
                        .with_group_state(str_bytes(GroupState::Dead.name()))
                }
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

/// DeleteGroups: empty groups and their offsets go; groups with members stay (NON_EMPTY_GROUP).
pub async fn delete(broker: &Arc<Broker>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in request.groups_names {
        let mut deleted = broker.groups.delete_group(group_id.as_str()).await;
        if broker.replication.enabled()
            && matches!(deleted, Ok(()) | Err(ResponseError::GroupIdNotFound))
        {
            // Positions other regions committed are the group's too: delete them everywhere.
            let group = group_id.as_str().to_string();
            let had_rows = changing_topics(broker, move |b| {
                let had_rows = crate::positions::group_rows(b.positions(), &group)
                    .is_ok_and(|rows| !rows.is_empty());
                crate::positions::forget(b, &group, None);
                had_rows
            })
            .await;
            if had_rows {
                deleted = Ok(());
            }
        }
        let error = code(deleted);
        count_error(ApiKey::DeleteGroups, error);
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(error),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
