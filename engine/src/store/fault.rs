//! [`Faulty`]: a backend that fails on purpose, for tests. Rules in a shared
//! [`Faults`] say which requests fail and how: refused outright (transient
//! or not), landed but answered with an error (a lost answer), out of space,
//! read back damaged (a flipped bit, a short body), slow, or left out of
//! listings that have not caught up with new objects. Tests drive every
//! pipeline through it to show that a failing store never loses data and
//! never yields a wrong byte.
//!
//! It returns `None` from [`Backend::local_root`], so even a local directory
//! is reached only through it: no direct reads, no staging.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use super::backend::{Backend, ObjectInfo, ObjectMeta, PutMode, Version};
use crate::{Error, Result};

/// A storage operation, for fault rules and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `put_opts`.
    Put,
    /// `get_opts`.
    Get,
    /// `head`.
    Head,
    /// `list`.
    List,
    /// `delete`.
    Delete,
    /// `sync_existing`.
    Sync,
}

impl Op {
    /// The operation's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::Head => "head",
            Op::List => "list",
            Op::Delete => "delete",
            Op::Sync => "sync",
        }
    }
}

/// What happens to a request a rule catches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The request fails without reaching the backend.
    Fail {
        /// Whether the error says trying again may help.
        retryable: bool,
    },
    /// A put lands, but the caller is told it failed (a lost answer).
    LostAnswer {
        /// Whether the error says trying again may help.
        retryable: bool,
    },
    /// A put fails as on a full disk (`ENOSPC`); nothing lands.
    NoSpace,
    /// A get returns its bytes with one bit flipped (at `offset` modulo the
    /// length).
    FlipBit {
        /// Where, within what the get returns.
        offset: u64,
    },
    /// A get returns only the first half of its bytes.
    Truncate,
    /// The request waits this long, then goes through.
    Latency(std::time::Duration),
    /// A listing leaves out every object written through this wrapper
    /// (an eventually consistent listing that has not caught up).
    OmitNew,
}

/// Which requests fail, and how.
#[derive(Debug, Clone)]
pub struct FaultRule {
    op: Op,
    prefix: String,
    skip: u64,
    times: u64,
    fault: Fault,
}

impl FaultRule {
    /// Every `op` on a key starting with `prefix` gets `fault`.
    pub fn new(op: Op, prefix: &str, fault: Fault) -> FaultRule {
        FaultRule { op, prefix: prefix.to_string(), skip: 0, times: u64::MAX, fault }
    }

    /// Lets the first `n` matching requests through.
    pub fn skip(mut self, n: u64) -> FaultRule {
        self.skip = n;
        self
    }

    /// Fails at most `n` requests, then lets the rest through.
    pub fn times(mut self, n: u64) -> FaultRule {
        self.times = n;
        self
    }
}

/// The rules a [`Faulty`] backend follows; shared, so a test can add rules
/// and read counts while the store is in use.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<(FaultRule, u64)>>,
    injected: AtomicU64,
    log: Option<std::path::PathBuf>,
}

/// Test-only: the variable that puts a [`Faulty`] around every store this
/// process opens, so end-to-end tests can fail real commands' requests.
pub const FAULTS_ENV: &str = "CAIRN_TEST_FAULTS";
/// Test-only: a file each injected fault appends a line to (`op key`).
pub const FAULTS_LOG_ENV: &str = "CAIRN_TEST_FAULTS_LOG";

impl Faults {
    /// An empty set of rules (nothing fails).
    pub fn new() -> Arc<Faults> {
        Arc::default()
    }

    /// Adds a rule; the first matching rule that still fires wins.
    pub fn add(&self, rule: FaultRule) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).push((rule, 0));
    }

    /// The rules in `CAIRN_TEST_FAULTS`, if set: comma-separated
    /// `op:prefix:kind[:skip[:times]]`, `op` one of put, get, head, list,
    /// delete, sync; `kind` one of fail (permanent), transient, lost (a
    /// put lands, its answer is an error), nospace, flip, truncate, slow
    /// (100 ms). Injections are logged to the file `CAIRN_TEST_FAULTS_LOG` names when set.
    pub fn from_env() -> Result<Option<Arc<Faults>>> {
        let Ok(spec) = std::env::var(FAULTS_ENV) else { return Ok(None) };
        let bad = |why: &str| Error::Config(format!("{FAULTS_ENV}={spec:?}: {why}"));
        let mut rules = Vec::new();
        for r in spec.split(',').filter(|r| !r.is_empty()) {
            let f: Vec<&str> = r.split(':').collect();
            let [op, prefix, kind, rest @ ..] = f.as_slice() else { return Err(bad("op:prefix:kind[:skip[:times]]")) };
            let op = match *op {
                "put" => Op::Put,
                "get" => Op::Get,
                "head" => Op::Head,
                "list" => Op::List,
                "delete" => Op::Delete,
                "sync" => Op::Sync,
                _ => return Err(bad("unknown operation")),
            };
            let fault = match *kind {
                "fail" => Fault::Fail { retryable: false },
                "transient" => Fault::Fail { retryable: true },
                "lost" => Fault::LostAnswer { retryable: false },
                "nospace" => Fault::NoSpace,
                "flip" => Fault::FlipBit { offset: 7 },
                "truncate" => Fault::Truncate,
                "slow" => Fault::Latency(std::time::Duration::from_millis(100)),
                _ => return Err(bad("unknown fault")),
            };
            let num = |i: usize| rest.get(i).map(|n| n.parse::<u64>().map_err(|_| bad("skip and times are numbers")));
            let mut rule = FaultRule::new(op, prefix, fault);
            if let Some(n) = num(0) {
                rule = rule.skip(n?);
            }
            if let Some(n) = num(1) {
                rule = rule.times(n?);
            }
            rules.push((rule, 0));
        }
        let log = std::env::var_os(FAULTS_LOG_ENV).map(Into::into);
        Ok(Some(Arc::new(Faults { rules: Mutex::new(rules), injected: AtomicU64::new(0), log })))
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// The fault for this request, if a rule catches it.
    fn check(&self, op: Op, key: &str) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        for (rule, seen) in rules.iter_mut() {
            if rule.op != op || !key.starts_with(&rule.prefix) {
                continue;
            }
            *seen += 1;
            if *seen > rule.skip && *seen - rule.skip <= rule.times {
                self.injected.fetch_add(1, Ordering::Relaxed);
                if let Some(p) = &self.log {
                    use std::io::Write;
                    let line = format!("{} {key} {:?}\n", op.name(), rule.fault);
                    let _ = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)
                        .and_then(|mut f| f.write_all(line.as_bytes()));
                }
                return Some(rule.fault.clone());
            }
        }
        None
    }
}

/// A backend that fails as its [`Faults`] say.
#[derive(Debug)]
pub struct Faulty<B> {
    inner: B,
    faults: Arc<Faults>,
    written: Mutex<std::collections::HashSet<String>>,
}

impl<B: Backend> Faulty<B> {
    /// Puts `faults` between callers and `inner`.
    pub fn new(inner: B, faults: Arc<Faults>) -> Faulty<B> {
        Faulty { inner, faults, written: Mutex::default() }
    }

    /// Refuses the request when a rule says so (faults that act on the
    /// result are left to the caller).
    async fn refuse(&self, op: Op, key: &str) -> Result<Option<Fault>> {
        let fault = self.faults.check(op, key);
        if let Some(Fault::Latency(d)) = fault {
            tokio::time::sleep(d).await;
            return Ok(None);
        }
        match fault {
            Some(Fault::Fail { retryable }) => Err(injected(key, retryable)),
            Some(Fault::NoSpace) if op == Op::Put => {
                Err(Error::io(key, std::io::Error::from_raw_os_error(libc::ENOSPC)))
            }
            other => Ok(other),
        }
    }
}

fn injected(key: &str, retryable: bool) -> Error {
    Error::Storage { object: key.to_string(), retryable, source: "injected fault".into() }
}

#[async_trait]
impl<B: Backend> Backend for Faulty<B> {
    async fn put_opts(&self, key: &str, bytes: Bytes, mode: PutMode) -> Result<Version> {
        let fault = self.refuse(Op::Put, key).await?;
        let v = self.inner.put_opts(key, bytes, mode).await?;
        self.written.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string());
        match fault {
            Some(Fault::LostAnswer { retryable }) => Err(injected(key, retryable)),
            _ => Ok(v),
        }
    }

    async fn get_opts(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        let fault = self.refuse(Op::Get, key).await?;
        let b = self.inner.get_opts(key, range).await?;
        Ok(match fault {
            Some(Fault::FlipBit { offset }) if !b.is_empty() => {
                let mut v = b.to_vec();
                v[(offset % b.len() as u64) as usize] ^= 1;
                Bytes::from(v)
            }
            Some(Fault::Truncate) => b.slice(..b.len() / 2),
            _ => b,
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.refuse(Op::Head, key).await?;
        self.inner.head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let fault = self.refuse(Op::List, prefix).await?;
        let mut all = self.inner.list(prefix).await?;
        if fault == Some(Fault::OmitNew) {
            let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            all.retain(|o| !written.contains(&o.key));
        }
        Ok(all)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.refuse(Op::Delete, key).await?;
        self.inner.delete(key).await
    }

    async fn sync_existing(&self, key: &str) -> Result<()> {
        self.refuse(Op::Sync, key).await?;
        self.inner.sync_existing(key).await
    }
}
