//! What one client may hold of the Kafka listener: connections per address
//! (`max.connections.per.ip`), and bytes of requests buffered but not yet answered across every
//! connection (`queued.max.request.bytes`). Both are shared by all connections, so they live
//! here rather than in one connection's loop.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::Semaphore;

/// Connections open per client address; an entry lives while its address has one.
pub struct PerAddressCount {
    open: DashMap<IpAddr, u32>,
    max: u32,
}

/// One connection counted against its address until dropped.
pub struct AddressSlot {
    counts: Arc<PerAddressCount>,
    address: IpAddr,
}

impl PerAddressCount {
    /// Allows `max` connections per address.
    pub fn new(max: u32) -> Arc<PerAddressCount> {
        Arc::new(PerAddressCount {
            open: DashMap::new(),
            max,
        })
    }

    /// Counts one more connection from `address`, unless it already has `max`.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Option<AddressSlot> {
        let mut count = self.open.entry(address).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            counts: self.clone(),
            address,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        self.counts.open.remove_if_mut(&self.address, |_, count| {
            *count -= 1;
            *count == 0
        });
    }
}

/// Bytes of request data buffered across all connections. A connection takes budget before it
/// reads more bytes and gives it back once the request is answered, so a flood of large or
/// trickled frames makes readers wait instead of exhausting memory; one that waits too long is
/// closed, which frees what it held.
pub struct RequestBudget {
    bytes: Semaphore,
    wait_max: Duration,
}

/// Budget one connection holds; returned in full when dropped.
pub struct HeldBudget {
    budget: Arc<RequestBudget>,
    held: usize,
}

/// The budget was not available in time.
#[derive(Debug)]
pub struct BudgetExhausted;

impl RequestBudget {
    /// A budget of `bytes`; a reader waits at most `wait_max` for its share.
    pub fn new(bytes: usize, wait_max: Duration) -> Arc<RequestBudget> {
        Arc::new(RequestBudget {
            bytes: Semaphore::new(bytes.min(Semaphore::MAX_PERMITS)),
            wait_max,
        })
    }

    /// Nothing held yet, for one connection.
    pub fn holder(self: &Arc<Self>) -> HeldBudget {
        HeldBudget {
            budget: self.clone(),
            held: 0,
        }
    }
}

impl HeldBudget {
    /// Makes sure at least `bytes` are held, waiting for the shortfall.
    pub async fn hold(&mut self, bytes: usize) -> Result<(), BudgetExhausted> {
        let Some(shortfall) = bytes.checked_sub(self.held).filter(|&s| s > 0) else {
            return Ok(());
        };
        let permits = u32::try_from(shortfall).map_err(|_| BudgetExhausted)?;
        let acquire = self.budget.bytes.acquire_many(permits);
        match tokio::time::timeout(self.budget.wait_max, acquire).await {
            Ok(Ok(permit)) => {
                permit.forget();
                self.held += shortfall;
                Ok(())
            }
            _ => Err(BudgetExhausted),
        }
    }

    /// Gives back all but `keep` bytes (what is still buffered).
    pub fn release_to(&mut self, keep: usize) {
        if let Some(excess) = self.held.checked_sub(keep).filter(|&e| e > 0) {
            self.budget.bytes.add_permits(excess);
            self.held = keep;
        }
    }
}

impl Drop for HeldBudget {
    fn drop(&mut self) {
        self.release_to(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_at_most_max_connections_and_slots_come_back() {
        let counts = PerAddressCount::new(2);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let first = counts.admit(a);
        let second = counts.admit(a);
        assert!(first.is_some() && second.is_some());
        assert!(counts.admit(a).is_none());
        assert!(counts.admit(b).is_some());
        drop(first);
        assert!(counts.admit(a).is_some());
    }

    #[tokio::test]
    async fn budget_is_shared_waited_for_and_returned() {
        let budget = RequestBudget::new(100, Duration::from_millis(50));
        let mut one = budget.holder();
        let mut two = budget.holder();
        assert!(one.hold(80).await.is_ok());
        assert!(two.hold(30).await.is_err(), "only 20 bytes are left");
        one.release_to(10);
        assert!(two.hold(30).await.is_ok());
        drop(one);
        assert!(
            two.hold(90).await.is_ok(),
            "a dropped holder returns everything"
        );
    }
}
