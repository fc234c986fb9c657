//! The apply lock: one small object under the target's internal folder that
//! records who is applying, since when, which commit, and when the claim
//! expires. It is created with a conditional write, renewed while the apply
//! runs and removed at the end.
//!
//! Exclusion rests on the server honouring `If-None-Match: *` and
//! `If-Match`. Some S3-compatible servers (Garage, for one) ignore both;
//! there r2sync reads the lock before writing it, which narrows the race
//! but cannot close it, and says so once per run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Condition, Remote, RemoteError};

pub const LOCK_FORMAT: &str = "r2sync-lock";
/// Name of the lock object inside the internal folder.
pub const LOCK_FILE: &str = "lock.json";
/// Name of the object that the conditional-write probe may leave behind on
/// servers that ignore conditions; it is deleted right away.
const PROBE_FILE: &str = "lock.probe";

/// Lifetime of a claim without renewal.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// The content of the lock object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub format: String,
    /// Identifier to pass to `r2sync force-unlock`.
    pub id: String,
    /// User, host and process of the holder.
    pub holder: String,
    pub operation: String,
    /// Commit being applied.
    pub commit: String,
    pub created_at: DateTime<Utc>,
    pub renewed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "lock {} held by {} ({} of {}) since {}, expires {}",
            self.id,
            self.holder,
            self.operation,
            short(&self.commit),
            self.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            self.expires_at.format("%Y-%m-%d %H:%M:%S UTC"),
        )
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Errors of the lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{key} is held: {info}; waited {waited_secs} s (--lock-timeout). If that run is gone, remove the lock with `r2sync force-unlock {id}` and the same target options", id = info.id)]
    Held {
        key: String,
        info: Box<LockInfo>,
        waited_secs: u64,
    },
    #[error("no lock is held on {target} ({key} does not exist); check --target and the other target options")]
    NotHeld { key: String, target: String },
    #[error("{key}: the lock is {info}, not {id}; nothing was removed", info = current.id)]
    OtherId {
        key: String,
        id: String,
        current: Box<LockInfo>,
    },
    #[error("{key}: the lock object is not r2sync lock JSON ({message}); delete it by hand if no apply is running")]
    Invalid { key: String, message: String },
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// Settings of [`acquire`].
#[derive(Clone, Debug)]
pub struct LockOptions {
    /// How long to wait for another holder before failing.
    pub timeout: Duration,
    /// How long one claim holds; renewed every third of it.
    pub ttl: Duration,
    /// Operation of the holder, such as "apply".
    pub operation: String,
    pub commit: String,
    /// Set when the lock is lost, so that the apply stops starting writes.
    pub on_loss: Option<Arc<AtomicBool>>,
}

/// A lock this process holds. Dropping it stops the renewal but leaves the
/// object; call [`HeldLock::release`].
#[derive(Debug)]
pub struct HeldLock {
    remote: Remote,
    key: String,
    pub info: LockInfo,
    /// Set when someone else's write replaced the lock object.
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
}

/// The outcome of [`acquire`].
#[derive(Debug)]
pub struct Acquired {
    pub lock: HeldLock,
    /// Whether another holder had to be waited for (or taken over).
    pub waited: bool,
    /// An expired lock that was replaced.
    pub took_over: Option<LockInfo>,
    /// False when the server ignored a conditional write, so exclusion is
    /// only best effort.
    pub conditional_writes: bool,
}

/// Key of the lock object for a remote.
pub fn lock_key(remote: &Remote) -> String {
    format!("{}/{LOCK_FILE}", remote.internal_prefix())
}

/// Reads the current lock and its ETag, if there is one.
pub async fn read(remote: &Remote) -> Result<Option<(LockInfo, Option<String>)>, LockError> {
    let key = lock_key(remote);
    let Some((bytes, etag)) = remote.get(&key).await? else {
        return Ok(None);
    };
    let info = parse(&key, &bytes)?;
    Ok(Some((info, etag)))
}

fn parse(key: &str, bytes: &[u8]) -> Result<LockInfo, LockError> {
    let info: LockInfo = serde_json::from_slice(bytes).map_err(|err| LockError::Invalid {
        key: key.to_string(),
        message: err.to_string(),
    })?;
    if info.format != LOCK_FORMAT {
        return Err(LockError::Invalid {
            key: key.to_string(),
            message: format!("format is {:?}", info.format),
        });
    }
    Ok(info)
}

/// Takes the lock, waiting up to `options.timeout` for another holder.
/// `on_wait` is called once with the holder when waiting starts.
pub async fn acquire(
    remote: &Remote,
    options: &LockOptions,
    on_wait: &(dyn Fn(&LockInfo) + Sync),
) -> Result<Acquired, LockError> {
    let key = lock_key(remote);
    let started = Instant::now();

    // Servers that ignore conditions would let two runs both "create" the
    // lock, so find out first and read before writing on those.
    let conditional_writes = probe_conditional_writes(remote).await?;

    let mut info = new_info(options);
    let mut waited = false;
    let mut took_over = None;
    let mut announced = false;
    loop {
        // On a server that ignores conditions, look before writing.
        let existing = if conditional_writes {
            None
        } else {
            read(remote).await?
        };
        let current = match &existing {
            Some((current, _)) if current.expires_at > Utc::now() => current.clone(),
            _ => {
                // On such a server an expired claim read above is replaced
                // by the write below.
                if let Some((expired, _)) = existing {
                    took_over = Some(expired);
                }
                refresh(&mut info, options.ttl);
                match claim(remote, &key, &info, Condition::Absent).await? {
                    Claim::Taken(etag) => {
                        tracing::info!(id = %info.id, "took lock {key} as {}", info.id);
                        return Ok(Acquired {
                            lock: HeldLock::start(remote.clone(), key, info, etag, options),
                            waited,
                            took_over,
                            conditional_writes,
                        });
                    }
                    Claim::Refused => match read(remote).await? {
                        // Released in between: try again at once.
                        None => continue,
                        Some((current, etag)) if current.expires_at <= Utc::now() => {
                            // An expired claim is replaced only if it is still
                            // the one just read.
                            refresh(&mut info, options.ttl);
                            let condition = etag.map_or(Condition::None, Condition::Matches);
                            match claim(remote, &key, &info, condition).await? {
                                Claim::Taken(etag) => {
                                    tracing::info!("replaced an expired lock: {current}");
                                    took_over = Some(current);
                                    return Ok(Acquired {
                                        lock: HeldLock::start(
                                            remote.clone(),
                                            key,
                                            info,
                                            etag,
                                            options,
                                        ),
                                        waited: true,
                                        took_over,
                                        conditional_writes,
                                    });
                                }
                                Claim::Refused => continue,
                            }
                        }
                        Some((current, _)) => current,
                    },
                }
            }
        };

        // Held by someone else: wait, or give up after the timeout.
        let elapsed = started.elapsed();
        if elapsed >= options.timeout {
            return Err(LockError::Held {
                key,
                info: Box::new(current),
                waited_secs: elapsed.as_secs(),
            });
        }
        if !announced {
            on_wait(&current);
            announced = true;
        }
        waited = true;
        let pause = Duration::from_secs(2).min(options.timeout - elapsed);
        tokio::time::sleep(pause.max(Duration::from_millis(100))).await;
    }
}

/// Attempts at one lock write whose outcome stays unclear (a reset or a
/// timeout after the server may have taken it).
const CLAIM_ATTEMPTS: usize = 4;

/// The outcome of one conditional lock write.
enum Claim {
    /// The lock object is ours, with this ETag.
    Taken(Option<String>),
    /// The condition failed: someone else's claim is in place.
    Refused,
}

/// Writes `info` to the lock under `condition`. When the outcome is unclear,
/// or the condition failed, the lock is read back: if it carries our id,
/// an earlier attempt of ours got through and the claim is taken. The
/// write is tried again only while the outcome stays unclear.
async fn claim(
    remote: &Remote,
    key: &str,
    info: &LockInfo,
    condition: Condition,
) -> Result<Claim, LockError> {
    let body = Bytes::from(serde_json::to_vec_pretty(info).expect("lock serializes"));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let error = match remote
            .put_internal(key, body.clone(), condition.clone())
            .await
        {
            Ok(etag) => return Ok(Claim::Taken(etag)),
            Err(err @ (RemoteError::AlreadyExists { .. } | RemoteError::Precondition { .. })) => {
                err
            }
            Err(err @ RemoteError::Store { .. }) => err,
            Err(err) => return Err(err.into()),
        };
        let refused = matches!(
            error,
            RemoteError::AlreadyExists { .. } | RemoteError::Precondition { .. }
        );

        // Whose claim is in place now?
        match read(remote).await {
            Ok(Some((current, etag))) if current.id == info.id => {
                tracing::debug!("lock write {key} reported \"{error}\", but the lock is ours");
                return Ok(Claim::Taken(etag));
            }
            Ok(_) if refused => return Ok(Claim::Refused),
            Err(err) if refused => return Err(err),
            _ => {}
        }
        if attempt >= CLAIM_ATTEMPTS {
            return Err(error.into());
        }
        tracing::info!("lock write {key} failed ({error}); trying again");
    }
}

/// Deletes an internal object, trying again when the outcome is unclear
/// (object_store does not retry bulk deletes after a reset).
async fn delete_with_retries(remote: &Remote, key: &str) -> Result<(), RemoteError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match remote.delete_internal(key).await {
            Ok(()) => return Ok(()),
            Err(err) if attempt < CLAIM_ATTEMPTS => {
                tracing::info!("delete {key} failed ({err}); trying again");
            }
            Err(err) => return Err(err),
        }
    }
}

/// Removes the lock with `id`, whichever process holds it.
pub async fn force_unlock(remote: &Remote, id: &str) -> Result<LockInfo, LockError> {
    let key = lock_key(remote);
    let Some((current, _)) = read(remote).await? else {
        return Err(LockError::NotHeld {
            key,
            target: remote.to_string(),
        });
    };
    if current.id != id {
        return Err(LockError::OtherId {
            key,
            id: id.to_string(),
            current: Box::new(current),
        });
    }
    delete_with_retries(remote, &key).await?;
    Ok(current)
}

/// Tells whether the server enforces `If-Match`: a conditional write to a
/// key that does not exist must fail. Where it succeeds, the probe object
/// is deleted again.
async fn probe_conditional_writes(remote: &Remote) -> Result<bool, LockError> {
    if !remote.is_s3() {
        // Local directories create files exclusively.
        return Ok(true);
    }
    let key = format!("{}/{PROBE_FILE}", remote.internal_prefix());
    let condition = Condition::Matches("r2sync-probe-never-matches".into());
    let mut attempt = 0;
    loop {
        attempt += 1;
        match remote
            .put_internal(&key, Bytes::from_static(b"{}"), condition.clone())
            .await
        {
            Err(RemoteError::Precondition { .. }) => return Ok(true),
            Ok(_) => {
                tracing::debug!("{remote} accepted a write with a failing If-Match");
                // A probe object left behind is harmless: it lies in the
                // internal folder and the next probe replaces it.
                if let Err(err) = delete_with_retries(remote, &key).await {
                    tracing::warn!("cannot delete {key}: {err}");
                }
                return Ok(false);
            }
            Err(err @ RemoteError::Store { .. }) if attempt < CLAIM_ATTEMPTS => {
                tracing::info!("conditional-write probe {key} failed ({err}); trying again");
            }
            Err(err) => return Err(err.into()),
        }
    }
}

fn new_info(options: &LockOptions) -> LockInfo {
    let now = Utc::now();
    let holder = holder();
    // Unique per claim: the holder, the time and a counter for claims made
    // within one clock tick.
    static CLAIMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let claim = CLAIMS.fetch_add(1, Ordering::Relaxed);
    let seed = format!(
        "{holder} {} {claim} {}",
        now.timestamp_nanos_opt().unwrap_or_default(),
        options.commit
    );
    let id = blake3::hash(seed.as_bytes()).to_hex()[..16].to_string();
    LockInfo {
        format: LOCK_FORMAT.to_string(),
        id,
        holder,
        operation: options.operation.clone(),
        commit: options.commit.clone(),
        created_at: now,
        renewed_at: now,
        expires_at: now + options.ttl,
    }
}

fn refresh(info: &mut LockInfo, ttl: Duration) {
    let now = Utc::now();
    info.renewed_at = now;
    info.expires_at = now + ttl;
}

/// `user@host (pid N)`, from what the environment offers.
fn holder() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{user}@{host} (pid {})", std::process::id())
}

impl HeldLock {
    fn start(
        remote: Remote,
        key: String,
        info: LockInfo,
        etag: Option<String>,
        options: &LockOptions,
    ) -> Self {
        let ttl = options.ttl;
        let lost = Arc::new(AtomicBool::new(false));
        let on_loss = options.on_loss.clone();
        let etag = Arc::new(Mutex::new(etag));

        // Renew every third of the time-to-live, and never more than once
        // per second (R2 throttles faster writes to one key).
        let period = (ttl / 3).max(Duration::from_secs(1));
        let renewer = tokio::spawn({
            let (remote, key, info, lost, etag) = (
                remote.clone(),
                key.clone(),
                info.clone(),
                lost.clone(),
                etag.clone(),
            );
            async move {
                let mut info = info;
                loop {
                    tokio::time::sleep(period).await;
                    refresh(&mut info, ttl);
                    let current = etag.lock().expect("lock etag").clone();
                    let condition = current.map_or(Condition::None, Condition::Matches);
                    match claim(&remote, &key, &info, condition).await {
                        Ok(Claim::Taken(new)) => {
                            tracing::debug!("renewed lock {key} until {}", info.expires_at);
                            *etag.lock().expect("lock etag") = new;
                        }
                        Ok(Claim::Refused) => {
                            tracing::error!(
                                "lost lock {key}: another run replaced it; changes already in flight finish, and conditional writes protect the rest"
                            );
                            lost.store(true, Ordering::Relaxed);
                            if let Some(flag) = &on_loss {
                                flag.store(true, Ordering::Relaxed);
                            }
                            return;
                        }
                        Err(err) => tracing::warn!("cannot renew lock {key}: {err}"),
                    }
                }
            }
        });
        HeldLock {
            remote,
            key,
            info,
            lost,
            renewer,
        }
    }

    /// Tells whether another run replaced the lock while it was held.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Stops renewing and removes the lock object, unless it was lost.
    pub async fn release(self) -> Result<(), LockError> {
        self.renewer.abort();
        let lost = self.is_lost();
        let _ = self.renewer.await;
        if lost {
            return Ok(());
        }
        delete_with_retries(&self.remote, &self.key).await?;
        tracing::info!("released lock {}", self.key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> LockInfo {
        new_info(&LockOptions {
            timeout: Duration::ZERO,
            ttl: DEFAULT_TTL,
            operation: "apply".into(),
            commit: "0123456789abcdef0123".into(),
            on_loss: None,
        })
    }

    #[test]
    fn lock_round_trips_and_names_its_holder() {
        let info = info();
        let bytes = serde_json::to_vec(&info).unwrap();
        assert_eq!(parse("k", &bytes).unwrap(), info);
        let shown = info.to_string();
        assert!(shown.contains(&info.id), "{shown}");
        assert!(shown.contains("apply of 0123456789ab"), "{shown}");
        assert!(info.holder.contains(&format!("pid {}", std::process::id())));
    }

    #[test]
    fn foreign_json_is_not_a_lock() {
        let err = parse("p/.r2sync/lock.json", br#"{"hello": 1}"#).unwrap_err();
        assert!(err.to_string().contains("p/.r2sync/lock.json"), "{err}");
        let mut other = info();
        other.format = "other".into();
        let err = parse("k", &serde_json::to_vec(&other).unwrap()).unwrap_err();
        assert!(err.to_string().contains("format"), "{err}");
    }

    #[test]
    fn ids_differ_between_claims() {
        assert_ne!(info().id, info().id);
    }
}
