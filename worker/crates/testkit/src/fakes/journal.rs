//! [`MemJournal`]: an in-memory [`Journal`] with compare-and-swap and a crash switch.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use onboarding_journal::{Journal, JournalError, NameClaim, Versioned};
use serde_json::Value;

/// In-memory journal with compare-and-swap, and a switch that makes it "crash" (fail every
/// call) after a given number of successful stores.
#[derive(Debug, Default)]
pub struct MemJournal {
    docs: Mutex<HashMap<String, (u64, Value)>>,
    claims: Mutex<HashMap<(String, String), String>>,
    pub stores: AtomicU64,
    crash_after: Mutex<Option<u64>>,
    crashed: AtomicBool,
}

impl MemJournal {
    pub fn crash_after(&self, stores: Option<u64>) {
        *self.crash_after.lock().unwrap() = stores.map(|n| self.stores.load(Ordering::SeqCst) + n);
        self.crashed.store(false, Ordering::SeqCst);
    }
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }
    fn check(&self) -> Result<(), JournalError> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(JournalError::Unavailable("simulated crash".into()));
        }
        Ok(())
    }
    pub fn record(&self, key: &str) -> Option<Value> {
        self.docs.lock().unwrap().get(key).map(|(_, v)| v.clone())
    }
}

#[async_trait::async_trait]
impl Journal for MemJournal {
    async fn load(&self, key: &str) -> Result<Option<Versioned<Value>>, JournalError> {
        self.check()?;
        Ok(self
            .docs
            .lock()
            .unwrap()
            .get(key)
            .map(|(v, val)| Versioned {
                version: *v,
                value: val.clone(),
            }))
    }
    async fn store(
        &self,
        key: &str,
        value: &Value,
        expected: Option<u64>,
    ) -> Result<u64, JournalError> {
        self.check()?;
        if let Some(limit) = *self.crash_after.lock().unwrap()
            && self.stores.load(Ordering::SeqCst) >= limit
        {
            self.crashed.store(true, Ordering::SeqCst);
            return Err(JournalError::Unavailable("simulated crash".into()));
        }
        let mut docs = self.docs.lock().unwrap();
        let found = docs.get(key).map(|(v, _)| *v);
        if found != expected {
            return Err(JournalError::Conflict {
                key: key.into(),
                expected,
                found,
            });
        }
        let next = found.unwrap_or(0) + 1;
        docs.insert(key.into(), (next, value.clone()));
        self.stores.fetch_add(1, Ordering::SeqCst);
        Ok(next)
    }
    async fn keys(&self) -> Result<Vec<String>, JournalError> {
        let mut k: Vec<_> = self.docs.lock().unwrap().keys().cloned().collect();
        k.sort();
        Ok(k)
    }
    async fn claim_names(&self, tenant: &str, claims: &[NameClaim]) -> Result<(), JournalError> {
        self.check()?;
        let mut map = self.claims.lock().unwrap();
        for c in claims {
            if let Some(owner) = map.get(&(c.kind.clone(), c.name.clone()))
                && owner != tenant
            {
                return Err(JournalError::NameTaken {
                    kind: c.kind.clone(),
                    name: c.name.clone(),
                    tenant: tenant.into(),
                    owner: owner.clone(),
                });
            }
        }
        for c in claims {
            map.insert((c.kind.clone(), c.name.clone()), tenant.into());
        }
        Ok(())
    }
    async fn release_names(&self, tenant: &str, claims: &[NameClaim]) -> Result<(), JournalError> {
        self.check()?;
        let mut map = self.claims.lock().unwrap();
        for c in claims {
            let key = (c.kind.clone(), c.name.clone());
            if map.get(&key).is_some_and(|owner| owner == tenant) {
                map.remove(&key);
            }
        }
        Ok(())
    }
    async fn ping(&self) -> Result<(), JournalError> {
        self.check()
    }
}
