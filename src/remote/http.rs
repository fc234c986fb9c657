//! An HTTP layer under object_store's S3 client. It counts every request by
//! method, for the request totals in reports, and numbers the attempts of
//! one operation, for the `attempt` field in logs. The S3 client retries
//! inside one call, so each attempt passes through here.
//!
//! It also shields listings from keys that object_store cannot represent.
//! object_store parses every listed key as a path and fails the whole
//! listing on `a//b` or `x/../y`, and it silently turns `dir/` into `dir`.
//! Such keys can only come from other writers. In a ListObjectsV2 response
//! each of them is replaced by [`UNPARSEABLE_MARKER`] and the key in
//! base64url, which [`decode_marked_key`] turns back, so that r2sync can
//! report the key as unmanaged instead of failing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use async_trait::async_trait;
use base64::Engine as _;
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

        let listing = is_listing(&request);
        let started = Instant::now();
        let mut result = self.inner.execute(request).await;
        if listing {
            if let Ok(response) = result {
                result = mark_listing(response).await;
            }
        }
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

/// Prefix of the stand-in for a listed key that object_store cannot parse.
pub const UNPARSEABLE_MARKER: &str = ".r2sync-unparseable-key/";

/// Tells whether object_store can name `key` exactly: it parses and comes back
/// unchanged (no empty, `.` or `..` segment, no control character, no
/// leading or trailing slash).
pub fn is_addressable(key: &str) -> bool {
    object_store::path::Path::parse(key).is_ok_and(|path| path.as_ref() == key)
}

/// Returns the original key behind a stand-in, or `None` for an ordinary key.
pub fn decode_marked_key(listed: &str) -> Option<String> {
    let encoded = listed.strip_prefix(UNPARSEABLE_MARKER)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()?;
    String::from_utf8(bytes).ok()
}

fn is_listing(request: &HttpRequest) -> bool {
    request.method() == ::http::Method::GET
        && request
            .uri()
            .query()
            .is_some_and(|query| query.split('&').any(|pair| pair == "list-type=2"))
}

async fn mark_listing(response: HttpResponse) -> Result<HttpResponse, HttpError> {
    if !response.status().is_success() {
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    let bytes = body.bytes().await?;
    let body = match mark_unparseable_keys(&bytes) {
        Some(text) => {
            parts.headers.insert(
                ::http::header::CONTENT_LENGTH,
                ::http::HeaderValue::from(text.len()),
            );
            object_store::client::HttpResponseBody::from(text)
        }
        None => object_store::client::HttpResponseBody::from(bytes),
    };
    Ok(HttpResponse::from_parts(parts, body))
}

/// Replaces each `<Key>` that object_store cannot parse with its stand-in,
/// or returns `None` when every key is fine.
fn mark_unparseable_keys(xml: &[u8]) -> Option<String> {
    const OPEN: &str = "<Key>";
    const CLOSE: &str = "</Key>";
    let text = std::str::from_utf8(xml).ok()?;
    let mut marked = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find(CLOSE) else { break };
        let raw = &after[..end];
        marked.push_str(&rest[..start + OPEN.len()]);
        match quick_xml::escape::unescape(raw) {
            Ok(key) if !is_addressable(&key) => {
                tracing::debug!("listing has a key object_store cannot parse: {key:?}");
                marked.push_str(UNPARSEABLE_MARKER);
                marked.push_str(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.as_bytes()),
                );
                changed = true;
            }
            _ => marked.push_str(raw),
        }
        rest = &after[end..];
    }
    marked.push_str(rest);
    changed.then_some(marked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awkward_keys_are_marked_and_decoded_back() {
        let xml = "<ListBucketResult><Contents><Key>p/ok.md</Key></Contents>\
                   <Contents><Key>p/a//b</Key></Contents>\
                   <Contents><Key>p/x/../y &amp; z</Key></Contents>\
                   <Contents><Key>p/dir/</Key></Contents></ListBucketResult>";
        let marked = mark_unparseable_keys(xml.as_bytes()).unwrap();
        assert!(marked.contains("<Key>p/ok.md</Key>"), "{marked}");
        let keys: Vec<String> = marked
            .split("<Key>")
            .skip(1)
            .map(|part| part.split("</Key>").next().unwrap().to_string())
            .collect();
        assert_eq!(keys.len(), 4);
        assert!(keys[1..].iter().all(|key| is_addressable(key)), "{keys:?}");
        let decoded: Vec<String> = keys[1..]
            .iter()
            .map(|key| decode_marked_key(key).unwrap())
            .collect();
        assert_eq!(decoded, ["p/a//b", "p/x/../y & z", "p/dir/"]);
        assert_eq!(decode_marked_key("p/ok.md"), None);
    }

    #[test]
    fn clean_listings_are_left_alone() {
        let xml = "<ListBucketResult><Contents><Key>p/caf\u{e9} &amp; co.md</Key></Contents></ListBucketResult>";
        assert_eq!(mark_unparseable_keys(xml.as_bytes()), None);
    }

    #[test]
    fn addressable_means_parsed_unchanged() {
        assert!(is_addressable("docs/a b+c%41.md"));
        assert!(!is_addressable("docs//a.md"));
        assert!(!is_addressable("/docs/a.md"));
        assert!(!is_addressable("docs/a.md/"));
        assert!(!is_addressable("docs/./a.md"));
        assert!(!is_addressable("docs/\u{7}.md"));
    }
}
