//! CreateAcls, DescribeAcls and DeleteAcls: Kafka's admin tools (`kafka-acls.sh`, AdminClient,
//! librdkafka) manage the bindings of a running broker. Each creation and each filter is judged
//! alone and answered with its own error; the valid ones of a request are written together,
//! durably, before the answer.

use std::sync::Arc;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{changing_topics, str_bytes};
use crate::acl::{
    AclBinding, AclFilter, Operation, PatternFilter, PatternType, Permission, ResourcePattern,
    ResourceType,
};
use crate::broker::Broker;

/// The code Kafka uses for "any" in a filter's resource type, pattern type, operation and
/// permission.
const ANY: i8 = 1;
/// The pattern type filter that matches every pattern covering the name.
const MATCH: i8 = 2;

fn invalid(why: impl Into<String>) -> (ResponseError, String) {
    (ResponseError::InvalidRequest, why.into())
}

fn code<T>(
    what: &str,
    value: i8,
    parse: impl Fn(i8) -> Option<T>,
) -> Result<T, (ResponseError, String)> {
    parse(value).ok_or_else(|| invalid(format!("{what} {value} is not one a binding can have")))
}

/// The binding a CreateAcls entry asks for.
fn binding_of(
    resource_type: i8,
    name: &StrBytes,
    pattern_type: i8,
    principal: &StrBytes,
    host: &StrBytes,
    operation: i8,
    permission: i8,
) -> Result<AclBinding, (ResponseError, String)> {
    let binding = AclBinding {
        pattern: ResourcePattern {
            resource_type: code("resource type", resource_type, ResourceType::from_code)?,
            name: name.to_string(),
            pattern_type: code("pattern type", pattern_type, PatternType::from_code)?,
        },
        principal: principal.to_string(),
        host: host.to_string(),
        operation: code("operation", operation, Operation::from_code)?,
        permission: code("permission", permission, Permission::from_code)?,
    };
    binding.validate().map_err(invalid)?;
    Ok(binding)
}

/// The filter a DescribeAcls or DeleteAcls entry names.
#[allow(clippy::too_many_arguments)]
fn filter_of(
    resource_type: i8,
    name: Option<&StrBytes>,
    pattern_type: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<AclFilter, (ResponseError, String)> {
    let any_or = |value: i8| (value != ANY).then_some(value);
    Ok(AclFilter {
        resource_type: any_or(resource_type)
            .map(|c| code("resource type", c, ResourceType::from_code))
            .transpose()?,
        name: name.map(|n| n.to_string()),
        pattern: match pattern_type {
            ANY => PatternFilter::Any,
            MATCH => PatternFilter::Match,
            other => PatternFilter::Exactly(code("pattern type", other, PatternType::from_code)?),
        },
        principal: principal.map(|p| p.to_string()),
        host: host.map(|h| h.to_string()),
        operation: any_or(operation)
            .map(|c| code("operation", c, Operation::from_code))
            .transpose()?,
        permission: any_or(permission)
            .map(|c| code("permission", c, Permission::from_code))
            .transpose()?,
    })
}

/// CreateAcls: every valid binding is added, durably, and each entry answered.
pub async fn create(broker: &Arc<Broker>, request: CreateAclsRequest) -> CreateAclsResponse {
    let judged: Vec<Result<AclBinding, (ResponseError, String)>> = request
        .creations
        .iter()
        .map(|c| {
            binding_of(
                c.resource_type,
                &c.resource_name,
                c.resource_pattern_type,
                &c.principal,
                &c.host,
                c.operation,
                c.permission_type,
            )
        })
        .collect();
    let valid: Vec<AclBinding> = judged
        .iter()
        .filter_map(|j| j.as_ref().ok().cloned())
        .collect();
    let written = changing_topics(broker, move |b| {
        Some(b.acls.create(&b.security, b.topics.catalog(), &valid))
    })
    .await
    .unwrap_or_else(|| Err("the ACL change did not run".into()));
    let results = judged
        .into_iter()
        .map(|judged| {
            let outcome = judged.map(|_| ()).and_then(|()| {
                written
                    .clone()
                    .map_err(|why| (ResponseError::KafkaStorageError, why))
            });
            match outcome {
                Ok(()) => AclCreationResult::default(),
                Err((error, why)) => AclCreationResult::default()
                    .with_error_code(error.code())
                    .with_error_message(Some(str_bytes(why))),
            }
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

/// DescribeAcls: the bindings the filter matches, grouped by resource pattern.
pub fn describe(broker: &Broker, request: DescribeAclsRequest) -> DescribeAclsResponse {
    let filter = filter_of(
        request.resource_type_filter,
        request.resource_name_filter.as_ref(),
        request.pattern_type_filter,
        request.principal_filter.as_ref(),
        request.host_filter.as_ref(),
        request.operation,
        request.permission_type,
    );
    let filter = match filter {
        Ok(filter) => filter,
        Err((error, why)) => {
            return DescribeAclsResponse::default()
                .with_error_code(error.code())
                .with_error_message(Some(str_bytes(why)))
        }
    };
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    // Bindings are sorted by pattern first, so one pattern's bindings are adjacent.
    for binding in broker.acls.describe(&filter) {
        let description = AclDescription::default()
            .with_principal(str_bytes(binding.principal))
            .with_host(str_bytes(binding.host))
            .with_operation(binding.operation.code())
            .with_permission_type(binding.permission.code());
        let pattern = &binding.pattern;
        match resources.last_mut() {
            Some(last)
                if last.resource_type == pattern.resource_type.code()
                    && last.resource_name.as_str() == pattern.name
                    && last.pattern_type == pattern.pattern_type.code() =>
            {
                last.acls.push(description);
            }
            _ => resources.push(
                DescribeAclsResource::default()
                    .with_resource_type(pattern.resource_type.code())
                    .with_resource_name(str_bytes(pattern.name.clone()))
                    .with_pattern_type(pattern.pattern_type.code())
                    .with_acls(vec![description]),
            ),
        }
    }
    DescribeAclsResponse::default().with_resources(resources)
}

/// DeleteAcls: every binding each valid filter matches is removed, durably, and reported.
pub async fn delete(broker: &Arc<Broker>, request: DeleteAclsRequest) -> DeleteAclsResponse {
    let judged: Vec<Result<AclFilter, (ResponseError, String)>> = request
        .filters
        .iter()
        .map(|f| {
            filter_of(
                f.resource_type_filter,
                f.resource_name_filter.as_ref(),
                f.pattern_type_filter,
                f.principal_filter.as_ref(),
                f.host_filter.as_ref(),
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    let valid: Vec<AclFilter> = judged
        .iter()
        .filter_map(|j| j.as_ref().ok().cloned())
        .collect();
    let removed = changing_topics(broker, move |b| {
        Some(b.acls.delete(&b.security, b.topics.catalog(), &valid))
    })
    .await
    .unwrap_or_else(|| Err("the ACL change did not run".into()));
    let mut removed_per_filter = match &removed {
        Ok(lists) => lists.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    let results = judged
        .into_iter()
        .map(|judged| match (judged, &removed) {
            (Err((error, why)), _) => DeleteAclsFilterResult::default()
                .with_error_code(error.code())
                .with_error_message(Some(str_bytes(why))),
            (Ok(_), Err(why)) => DeleteAclsFilterResult::default()
                .with_error_code(ResponseError::KafkaStorageError.code())
                .with_error_message(Some(str_bytes(why.clone()))),
            (Ok(_), Ok(_)) => DeleteAclsFilterResult::default().with_matching_acls(
                removed_per_filter
                    .next()
                    .unwrap_or_default()
                    .into_iter()
                    .map(matching_acl)
                    .collect(),
            ),
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}

fn matching_acl(binding: AclBinding) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl::default()
        .with_resource_type(binding.pattern.resource_type.code())
        .with_resource_name(str_bytes(binding.pattern.name))
        .with_pattern_type(binding.pattern.pattern_type.code())
        .with_principal(str_bytes(binding.principal))
        .with_host(str_bytes(binding.host))
        .with_operation(binding.operation.code())
        .with_permission_type(binding.permission.code())
}
