//! An HTTP layer under object_store's S3 client. It counts every request by
//! method, for the request totals in reports, and numbers the attempts of
//! one operation, for the `attempt` field in logs. The S3 client retries
//! inside one call, so each attempt passes through here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use async_trait::async_trait;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use object_store::ClientOptions;

tokio::task_local! {
    /// Attempts made so far by the operation running in this task.
    static ATTEMPTS: AtomicU64;
}

/// Requests sent by this process, by HTTP method.
static REQUESTS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// Returns the number of requests sent so far, by HTTP method.
pub fn request_counts() -> BTreeMap<String, u64> {
    REQUESTS.lock().expect("request counter lock").clone()
}

/// Runs `operation` with its own attempt counter and returns its output with
/// the number of HTTP attempts it made.
pub async fn counting_attempts<T>(operation: impl std::future::Future<Output = T>) -> (T, u64) {
    ATTEMPTS
        .scope(AtomicU64::new(0), async {
            let output = operation.await;
            let attempts = ATTEMPTS.with(|attempts| attempts.load(Ordering::Relaxed));
            (output, attempts)
        })
        .await
}

/// Connector that wraps reqwest's with [`ObservedService`].
#[derive(Debug, Default)]
pub struct ObservedConnector {
    inner: ReqwestConnector,
}

impl HttpConnector for ObservedConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = self.inner.connect(options)?;
        Ok(HttpClient::new(ObservedService { inner }))
    }
}

#[derive(Debug)]
struct ObservedService {
    inner: HttpClient,
}

#[async_trait]
impl HttpService for ObservedService {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let method = request.method().to_string();
        *REQUESTS
            .lock()
            .expect("request counter lock")
            .entry(method.clone())
            .or_default() += 1;
        let attempt = ATTEMPTS
            .try_with(|attempts| attempts.fetch_add(1, Ordering::Relaxed) + 1)
            .unwrap_or(1);

        let started = Instant::now();
        let result = self.inner.execute(request).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(response) => tracing::debug!(
                method,
                status = response.status().as_u16(),
                attempt,
                latency_ms,
                "HTTP {method} returned {} (attempt {attempt})",
                response.status()
            ),
            Err(err) => {
                tracing::debug!(method, attempt, latency_ms, error = %err, "HTTP {method} failed (attempt {attempt})")
            }
        }
        result
    }
}
