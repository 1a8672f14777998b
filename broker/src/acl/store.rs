//! The broker's ACL bindings: kept in the replicated security state (`acl/<binding>`,
//! [`crate::security_state`]), so a grant or revocation made in one region holds in all of them,
//! and in memory for the request path, asked once per resource a request touches.

use std::collections::BTreeSet;
use std::sync::{Mutex, RwLock};

use causeway_storage::{Catalog, StorageError};

use crate::metrics::LogLimiter;
use crate::security_state::{SecurityChange, SecurityStore, ACL_KEY_PREFIX};

use super::{operations_field, AclBinding, AclFilter, Operation, ResourceType, Rules};

/// The ACL bindings and the policy around them.
pub struct Acls {
    enabled: bool,
    rules: RwLock<Rules>,
    /// Held while a change is written, so changes land in the catalog and in memory in one
    /// order, without holding up authorization during the fsync.
    changing: Mutex<()>,
    /// At most one denial a second is logged; the rest are only counted, so a client retrying
    /// a refused request cannot flood the log.
    denials_logged: LogLimiter,
}

impl Acls {
    /// Loads every binding of the security state; one that does not decode is corrupt. With
    /// `enabled` false, every request is allowed (bindings are still kept and managed).
    pub fn load(
        security: &SecurityStore,
        enabled: bool,
        super_users: &[String],
        allow_if_no_acl: bool,
    ) -> Result<Acls, StorageError> {
        let mut bindings = BTreeSet::new();
        for (encoded, _) in security.values_under(ACL_KEY_PREFIX) {
            let binding = AclBinding::decode(&encoded)
                .map_err(|why| StorageError::Corrupt(format!("ACL binding {encoded}: {why}")))?;
            bindings.insert(binding);
        }
        let super_users = super_users
            .iter()
            .flat_map(|names| names.split(';'))
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_string)
            .collect();
        Ok(Acls {
            enabled,
            rules: RwLock::new(Rules {
                bindings,
                super_users,
                allow_if_no_acl,
            }),
            changing: Mutex::new(()),
            denials_logged: LogLimiter::new(),
        })
    }

    /// Whether requests are checked at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether `principal` from `host` may do `operation` to the resource; a refusal is counted
    /// and (rate-limited) logged.
    pub fn authorize(
        &self,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if !self.enabled {
            return true;
        }
        let allowed = self
            .read()
            .authorize(principal, host, operation, resource_type, name);
        if !allowed {
            self.denied(principal, host, operation, resource_type, name);
        }
        allowed
    }

    /// KIP-430's authorized operations ([`Rules::authorized_operations`]); every operation of
    /// the type when authorization is off, as Kafka answers without an authorizer. Asking is not
    /// doing, so what is not allowed is neither counted nor logged as a denial.
    pub fn authorized_operations(
        &self,
        principal: &str,
        host: &str,
        resource_type: ResourceType,
        name: &str,
    ) -> i32 {
        if !self.enabled {
            return operations_field(resource_type.operations().iter().copied());
        }
        self.read()
            .authorized_operations(principal, host, resource_type, name)
    }

    /// Whether `principal` may do `operation` to some resource of the type ([`Rules::authorize_any`]).
    pub fn authorize_any(
        &self,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        !self.enabled
            || self
                .read()
                .authorize_any(principal, host, operation, resource_type)
    }

    /// Adds bindings, durably first; adding one that exists changes nothing.
    pub fn create(
        &self,
        security: &SecurityStore,
        catalog: &Catalog,
        bindings: &[AclBinding],
    ) -> Result<(), String> {
        for binding in bindings {
            binding.validate()?;
        }
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let changes: Vec<SecurityChange> = bindings
            .iter()
            .map(|b| (key_of(b), Some(Vec::new())))
            .collect();
        security.write(catalog, &changes)?;
        self.write().bindings.extend(bindings.iter().cloned());
        Ok(())
    }

    /// Removes every binding each filter matches, durably first, and answers what each filter
    /// removed (a binding two filters match is reported by both, as Kafka does).
    pub fn delete(
        &self,
        security: &SecurityStore,
        catalog: &Catalog,
        filters: &[AclFilter],
    ) -> Result<Vec<Vec<AclBinding>>, String> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let matched: Vec<Vec<AclBinding>> =
            filters.iter().map(|filter| self.describe(filter)).collect();
        let doomed: BTreeSet<&AclBinding> = matched.iter().flatten().collect();
        let changes: Vec<SecurityChange> = doomed.iter().map(|b| (key_of(b), None)).collect();
        security.write(catalog, &changes)?;
        let mut rules = self.write();
        for binding in doomed {
            rules.bindings.remove(binding);
        }
        Ok(matched)
    }

    /// Every binding the filter matches, in a stable order.
    pub fn describe(&self, filter: &AclFilter) -> Vec<AclBinding> {
        self.read()
            .bindings
            .iter()
            .filter(|binding| filter.matches(binding))
            .cloned()
            .collect()
    }

    /// Follows a change a peer region made (`rest` is the key after `acl/`); a binding that does
    /// not decode is logged and ignored.
    pub fn apply(&self, rest: &str, present: bool) {
        match AclBinding::decode(rest) {
            Ok(binding) if present => {
                self.write().bindings.insert(binding);
            }
            Ok(binding) => {
                self.write().bindings.remove(&binding);
            }
            Err(why) => tracing::warn!(key = rest, %why, "ignoring a peer's ACL binding"),
        }
    }

    fn denied(
        &self,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) {
        crate::metrics::authorization_denied(resource_type.name(), operation.name());
        if self.denials_logged.allow() {
            tracing::warn!(
                principal,
                host,
                operation = operation.name(),
                resource_type = resource_type.name(),
                resource = name,
                "authorization denied (further denials within a second are only counted)"
            );
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Rules> {
        self.rules.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Rules> {
        self.rules.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The security state's key of a binding.
fn key_of(binding: &AclBinding) -> String {
    format!("{ACL_KEY_PREFIX}{}", binding.encode())
}
