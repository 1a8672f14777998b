//! AlterUserScramCredentials and DescribeUserScramCredentials (KIP-554): Kafka's admin tools
//! manage SASL/SCRAM users on a running broker. The client sends the salted password
//! (`Hi(password, salt, iterations)`), never the password; the broker keeps only the keys derived
//! from it. Every change of a request is judged first, then the valid ones are written, each
//! durably before it is answered.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::broker::Broker;
use crate::sasl::{Mechanism, ScramCredential};
use crate::users::validate_user_name;

/// The mechanism a request's `mechanism` byte names (Kafka's ScramMechanism: 1 and 2).
fn mechanism_of(code: i8) -> Option<Mechanism> {
    match code {
        1 => Some(Mechanism::ScramSha256),
        2 => Some(Mechanism::ScramSha512),
        _ => None,
    }
}

/// The byte Kafka uses for a SCRAM mechanism in these APIs.
fn code_of(mechanism: Mechanism) -> i8 {
    match mechanism {
        Mechanism::ScramSha256 => 1,
        Mechanism::ScramSha512 => 2,
        Mechanism::Plain => 0,
    }
}

/// One change a request asks for, judged.
enum Change {
    Put(Mechanism, ScramCredential),
    Delete(Mechanism),
}

type Refusal = (ResponseError, String);

/// Judges every change of `request`, by user in the order users first appear: a user named
/// twice for one mechanism is refused whole (DUPLICATE_RESOURCE), as Kafka does.
fn judge(
    request: &AlterUserScramCredentialsRequest,
) -> Vec<(String, Result<Vec<Change>, Refusal>)> {
    let mut order: Vec<String> = Vec::new();
    let mut by_user: BTreeMap<String, Result<Vec<Change>, Refusal>> = BTreeMap::new();
    let mut seen: BTreeSet<(String, i8)> = BTreeSet::new();
    let deletions = request
        .deletions
        .iter()
        .map(|d| (d.name.as_str(), d.mechanism, None));
    let upsertions = request.upsertions.iter().map(|u| {
        (
            u.name.as_str(),
            u.mechanism,
            Some((u.iterations, &u.salt, &u.salted_password)),
        )
    });
    for (user, code, upsert) in deletions.chain(upsertions) {
        if !by_user.contains_key(user) {
            order.push(user.to_string());
            by_user.insert(user.to_string(), Ok(Vec::new()));
        }
        let entry = by_user.entry(user.to_string()).or_insert(Ok(Vec::new()));
        let Ok(changes) = entry else { continue };
        let judged = if !seen.insert((user.to_string(), code)) {
            Err((
                ResponseError::DuplicateResource,
                format!("user {user} is named twice for one mechanism"),
            ))
        } else if let Err(why) = validate_user_name(user) {
            Err((ResponseError::UnacceptableCredential, why))
        } else {
            match (mechanism_of(code), upsert) {
                (None, _) => Err((
                    ResponseError::UnsupportedSaslMechanism,
                    format!("unknown SCRAM mechanism {code}"),
                )),
                (Some(mechanism), None) => Ok(Change::Delete(mechanism)),
                (Some(mechanism), Some((iterations, salt, salted))) => u32::try_from(iterations)
                    .map_err(|_| format!("{iterations} iterations"))
                    .and_then(|i| ScramCredential::from_salted_password(mechanism, salted, salt, i))
                    .map(|credential| Change::Put(mechanism, credential))
                    .map_err(|why| (ResponseError::UnacceptableCredential, why)),
            }
        };
        match judged {
            Ok(change) => changes.push(change),
            Err(refusal) => *entry = Err(refusal),
        }
    }
    order
        .into_iter()
        .map(|user| {
            let judged = by_user.remove(&user).unwrap_or_else(|| Ok(Vec::new()));
            (user, judged)
        })
        .collect()
}

/// Answers AlterUserScramCredentials, writing on the metadata lane.
pub async fn alter(
    broker: &Arc<Broker>,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let judged = judge(&request);
    let writer = broker.clone();
    let results = crate::blocking::METADATA
        .run(move || apply(&writer, judged))
        .await
        .unwrap_or_else(|error| {
            vec![(
                String::new(),
                Err((ResponseError::UnknownServerError, error.to_string())),
            )]
        });
    let mut response = AlterUserScramCredentialsResponse::default();
    response.results = results
        .into_iter()
        .map(|(user, outcome)| {
            let mut result = AlterUserScramCredentialsResult::default();
            result.user = str_bytes(user);
            if let Err((error, message)) = outcome {
                result.error_code = error.code();
                result.error_message = Some(str_bytes(message));
            }
            result
        })
        .collect();
    response
}

fn apply(
    broker: &Broker,
    judged: Vec<(String, Result<Vec<Change>, Refusal>)>,
) -> Vec<(String, Result<(), Refusal>)> {
    let catalog = broker.topics.catalog();
    judged
        .into_iter()
        .map(|(user, changes)| {
            let outcome = changes.and_then(|changes| {
                for change in changes {
                    match change {
                        Change::Put(mechanism, credential) => broker
                            .users
                            .put(&broker.security, catalog, &user, mechanism, credential)
                            .map_err(|why| (ResponseError::UnknownServerError, why))?,
                        Change::Delete(mechanism) => {
                            let deleted = broker
                                .users
                                .delete(&broker.security, catalog, &user, mechanism)
                                .map_err(|why| (ResponseError::UnknownServerError, why))?;
                            if !deleted {
                                return Err((
                                    ResponseError::ResourceNotFound,
                                    format!("user {user} has no {} credential", mechanism.name()),
                                ));
                            }
                        }
                    }
                }
                tracing::info!(user = %user, "changed SCRAM credentials");
                Ok(())
            });
            (user, outcome)
        })
        .collect()
}

/// Answers DescribeUserScramCredentials: every user when none is named, else each one named
/// (RESOURCE_NOT_FOUND for a user without credentials, DUPLICATE_RESOURCE for one named twice).
pub fn describe(
    broker: &Broker,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let users = broker.users.list();
    let info = |mechanisms: &[(Mechanism, u32)]| -> Vec<CredentialInfo> {
        mechanisms
            .iter()
            .map(|(mechanism, iterations)| {
                let mut info = CredentialInfo::default();
                info.mechanism = code_of(*mechanism);
                info.iterations = i32::try_from(*iterations).unwrap_or(i32::MAX);
                info
            })
            .collect()
    };
    let mut response = DescribeUserScramCredentialsResponse::default();
    let named: Vec<&StrBytes> = request.users.iter().flatten().map(|u| &u.name).collect();
    if named.is_empty() {
        response.results = users
            .iter()
            .map(|user| {
                let mut result = DescribeUserScramCredentialsResult::default();
                result.user = str_bytes(user.name.clone());
                result.credential_infos = info(&user.mechanisms);
                result
            })
            .collect();
        return response;
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for name in &named {
        *counts.entry(name.as_str()).or_default() += 1;
    }
    let mut answered = BTreeSet::new();
    for name in named {
        if !answered.insert(name.as_str()) {
            continue;
        }
        let mut result = DescribeUserScramCredentialsResult::default();
        result.user = name.clone();
        if counts[name.as_str()] > 1 {
            result.error_code = ResponseError::DuplicateResource.code();
            result.error_message = Some(str_bytes(format!("user {name} is named twice")));
        } else if let Some(user) = users.iter().find(|u| u.name == name.as_str()) {
            result.credential_infos = info(&user.mechanisms);
        } else {
            result.error_code = ResponseError::ResourceNotFound.code();
            result.error_message = Some(str_bytes(format!(
                "attempt to describe a user credential that does not exist: {name}"
            )));
        }
        response.results.push(result);
    }
    response
}
