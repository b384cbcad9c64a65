//! Retry and breaker rules by key, resolved once per key and cached until the next reload.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use model::breaker::BreakerConfig;
use model::config::breaker::BreakerRules;
use model::config::retry::RetryRules;
use model::config::{BreakerFile, FieldSource, RetryFile};
use model::retry::RetryPolicy;

#[derive(Debug)]
struct Compiled {
    retry: RetryRules,
    breaker: BreakerRules,
    retry_cache: RwLock<HashMap<String, RetryPolicy>>,
}

/// The policies in force. Cheap to share (`Arc<Policies>`).
#[derive(Debug)]
pub struct Policies {
    current: RwLock<Arc<Compiled>>,
    generation: std::sync::atomic::AtomicU64,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Policies {
    /// Policies from parsed files.
    pub fn new(retry: &RetryFile, breaker: &BreakerFile) -> Self {
        Self {
            current: RwLock::new(Arc::new(Compiled {
                retry: retry.compile(),
                breaker: breaker.compile(),
                retry_cache: RwLock::default(),
            })),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The seed defaults shipped with COGO.
    pub fn seed() -> Self {
        use model::config::{ConfigFile, parse};
        let retry = parse::<RetryFile>("retry_policy.json", ConfigFile::Retry.seed())
            .unwrap_or_else(|_| RetryFile { default: Default::default(), policies: Default::default() });
        let breaker = parse::<BreakerFile>("circuit_breaker.json", ConfigFile::Breaker.seed())
            .unwrap_or_else(|_| BreakerFile { default: Default::default(), breakers: Default::default() });
        Self::new(&retry, &breaker)
    }

    fn compiled(&self) -> Arc<Compiled> {
        read(&self.current).clone()
    }

    /// The retry policy for `key`. A key seen before is served from the cache without allocating.
    pub fn retry(&self, key: &str) -> RetryPolicy {
        let compiled = self.compiled();
        if let Some(policy) = read(&compiled.retry_cache).get(key) {
            return *policy;
        }
        let policy = compiled.retry.resolve(key);
        let mut cache = write(&compiled.retry_cache);
        if cache.len() < 100_000 {
            cache.insert(key.to_owned(), policy);
        }
        policy
    }

    /// The breaker configuration for `key`.
    pub fn breaker(&self, key: &str) -> BreakerConfig {
        self.compiled().breaker.resolve(key)
    }

    /// Which rule supplies each retry field for `key`.
    pub fn explain_retry(&self, key: &str) -> (Vec<String>, Vec<FieldSource>) {
        let compiled = self.compiled();
        let chain = compiled.retry.chain(key).map(|(name, _)| name.to_owned()).collect();
        (chain, compiled.retry.explain(key))
    }

    /// Which rule supplies each breaker field for `key`.
    pub fn explain_breaker(&self, key: &str) -> (Vec<String>, Vec<FieldSource>) {
        let compiled = self.compiled();
        let chain = compiled.breaker.chain(key).map(|(name, _)| name.to_owned()).collect();
        (chain, compiled.breaker.explain(key))
    }

    /// Replaces the retry rules (keeps the breaker rules).
    pub fn replace_retry(&self, retry: &RetryFile) {
        let mut current = write(&self.current);
        *current = Arc::new(Compiled {
            retry: retry.compile(),
            breaker: current.breaker.clone(),
            retry_cache: RwLock::default(),
        });
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// Replaces the breaker rules (keeps the retry rules).
    pub fn replace_breaker(&self, breaker: &BreakerFile) {
        let mut current = write(&self.current);
        *current = Arc::new(Compiled {
            retry: current.retry.clone(),
            breaker: breaker.compile(),
            retry_cache: RwLock::default(),
        });
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// Bumped on every reload; breakers compare it to pick up new configurations.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }
}
