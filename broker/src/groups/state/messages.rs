//! What goes in and out of a group's state machine ([`super::Group`]): the JoinGroup and
//! SyncGroup requests as it sees them, the answers and replies to parked requests, the events
//! the coordinator acts on, and members as DescribeGroups shows them.

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::WaiterId;

/// What a JoinGroup asks.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Empty on a first join.
    pub member_id: String,
    /// `group.instance.id` (static membership).
    pub instance_id: Option<String>,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout (v0: the session timeout).
    pub rebalance_timeout_ms: i32,
    /// "consumer" for consumers.
    pub protocol_type: String,
    /// Assignors in preference order with their subscription metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// Client id from the request header.
    pub client_id: String,
    /// Client host, for DescribeGroups.
    pub client_host: String,
    /// v4+: a new dynamic member must first be given an id (MEMBER_ID_REQUIRED).
    pub require_known_member_id: bool,
}

/// What a SyncGroup asks of the group.
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    /// The member's id.
    pub member_id: String,
    /// `group.instance.id` (static membership).
    pub instance_id: Option<String>,
    /// The generation the member joined.
    pub generation_id: i32,
    /// v5+: the protocol type the member expects (checked when given).
    pub protocol_type: Option<String>,
    /// v5+: the assignor the member expects (checked when given).
    pub protocol_name: Option<String>,
    /// The leader's assignment per member id (empty from followers).
    pub assignments: Vec<(String, Bytes)>,
}

/// A JoinGroup answer.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinResult {
    /// Kafka error code (0 = none).
    pub error: i16,
    /// Generation joined.
    pub generation_id: i32,
    /// Protocol type of the group.
    pub protocol_type: Option<String>,
    /// Selected assignor.
    pub protocol_name: Option<String>,
    /// Leader's member id.
    pub leader: String,
    /// The member's id.
    pub member_id: String,
    /// Members and their metadata (only for the leader).
    pub members: Vec<JoinedMember>,
    /// v9: the leader must not compute a new assignment (static leader rejoined a stable group).
    pub skip_assignment: bool,
}

impl JoinResult {
    /// A JoinGroup answer carrying only `error`.
    pub(crate) fn error(error: ResponseError, member_id: &str) -> JoinResult {
        JoinResult {
            error: error.code(),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

/// One member as the leader sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinedMember {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Subscription metadata for the selected protocol.
    pub metadata: Bytes,
}

/// A SyncGroup answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncResult {
    /// Kafka error code.
    pub error: i16,
    /// Protocol type of the group.
    pub protocol_type: Option<String>,
    /// Selected assignor.
    pub protocol_name: Option<String>,
    /// The member's assignment.
    pub assignment: Bytes,
}

impl SyncResult {
    /// A SyncGroup answer carrying only `error`.
    pub(crate) fn error(error: ResponseError) -> SyncResult {
        SyncResult {
            error: error.code(),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// A reply to a parked request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Answers a parked JoinGroup.
    Join(WaiterId, JoinResult),
    /// Answers a parked SyncGroup.
    Sync(WaiterId, SyncResult),
}

/// Something worth a log line or a metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A rebalance completed into this generation with this many members.
    Rebalanced {
        /// New generation.
        generation_id: i32,
        /// Members in it.
        members: usize,
    },
    /// A member was removed because its session or rebalance timeout passed.
    Evicted {
        /// Member id.
        member_id: String,
        /// Which timeout.
        reason: &'static str,
    },
}

/// What an operation produced besides its own answer.
#[derive(Debug, Default)]
pub struct Output {
    /// Replies to other parked requests.
    pub replies: Vec<Reply>,
    /// Events to log and count.
    pub events: Vec<Event>,
}

/// Either an immediate answer or "parked until a reply names this waiter".
#[derive(Debug, PartialEq)]
pub enum Answer<T> {
    /// Answer now.
    Now(T),
    /// Wait for a [`Reply`] with the waiter id.
    Parked,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Metadata for the selected protocol.
    pub metadata: Bytes,
    /// Current assignment.
    pub assignment: Bytes,
}
