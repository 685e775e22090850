//! The HTTP client of `POST {base_url}/api/v1/open/esim/query`.
//!
//! One [`Provider`] (and every clone of it) shares one rate limit, so all
//! callers together stay within `requests_per_second`: the provider allows
//! 8 requests per second per account, and a burst would break that within a
//! second, so requests are spaced evenly (a burst of one). The limiter runs
//! on tokio's clock: governor's own `until_ready` sleeps on the wall clock,
//! which tokio's paused test clock cannot advance, and a caller waiting for
//! its turn can be cancelled (dropped) without using a turn.
//!
//! Each request is bounded by `timeout` (sending, the answer, its body); a
//! passing failure (connection refused or lost, a 5xx, a 429, a timeout) is
//! retried a few times with exponential backoff and jitter, each retry
//! taking its turn in the rate limit. "Not ready yet" (200010) is not
//! retried here: allocation takes minutes, so the caller schedules the next
//! question. The access code is a sensitive header value, never in `Debug`,
//! errors or logs.
//!
//! Nothing that gets in: the client follows no redirect (reqwest would follow
//! ten and keep `RT-AccessCode`, a custom header, on every hop, also to
//! another host or from https to http), so a 3xx is a refusal naming where
//! it pointed; and an answer is read chunk by chunk up to
//! [`MAX_ANSWER_BYTES`], so a huge or endless answer costs at most that much
//! memory, never what the other side chooses to send.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use rand::Rng;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use serde_json::{json, Value};

use super::wire::{self, Page};
use super::{Esim, ProviderError, ProviderSettings, ProviderSetupError};

/// The path of the query, after `base_url`.
pub const QUERY_PATH: &str = "/api/v1/open/esim/query";

/// Pages read for one query at most; at the default page size, 5,000 eSIMs.
const MAX_PAGES: u32 = 100;

/// The largest answer read. A page of 50 eSIMs is under 100 KiB.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Backoff between retries never exceeds this.
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// What to look up: one order (all its eSIMs) or one eSIM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EsimQuery<'a> {
    OrderNo(&'a str),
    EsimTranNo(&'a str),
    /// ICCIDs are recycled: the answer may list several eSIMs.
    Iccid(&'a str),
}

impl EsimQuery<'_> {
    fn field(&self) -> (&'static str, &str) {
        match self {
            EsimQuery::OrderNo(v) => ("orderNo", v),
            EsimQuery::EsimTranNo(v) => ("esimTranNo", v),
            EsimQuery::Iccid(v) => ("iccid", v),
        }
    }
}

/// The limiter's clock: tokio's, so a paused test clock moves it too.
#[derive(Clone)]
struct TokioClock {
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// The API client. Cheap to clone: clones share the connection pool and the
/// rate limit.
#[derive(Clone)]
pub struct Provider {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    url: String,
    access_code: HeaderValue,
    limiter: Limiter,
    clock: TokioClock,
    settings: ProviderSettings,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("url", &self.inner.url)
            .field(
                "requests_per_second",
                &self.inner.settings.requests_per_second,
            )
            .field("timeout", &self.inner.settings.timeout)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Checks the settings up front, naming the key to fix.
    pub fn new(settings: ProviderSettings) -> Result<Provider, ProviderSetupError> {
        let setup = |setting, reason: String| ProviderSetupError { setting, reason };
        let code = settings.access_code.expose().trim();
        if code.is_empty() {
            return Err(setup("provider.access_code", "is empty".into()));
        }
        let mut access_code = HeaderValue::from_str(code).map_err(|_| {
            setup(
                "provider.access_code",
                "must be printable ASCII (it is sent as an HTTP header)".into(),
            )
        })?;
        access_code.set_sensitive(true);
        let base = settings.base_url.trim().trim_end_matches('/');
        let parsed = reqwest::Url::parse(base)
            .map_err(|e| setup("provider.base_url", format!("`{base}` is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(setup(
                "provider.base_url",
                format!("`{base}` must start with https:// (or http://)"),
            ));
        }
        let rps = NonZeroU32::new(settings.requests_per_second)
            .ok_or_else(|| setup("provider.requests_per_second", "must be at least 1".into()))?;
        if settings.timeout.is_zero() {
            return Err(setup(
                "provider.timeout",
                "must be greater than zero".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("esim-notify/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| setup("provider.base_url", format!("cannot build a client: {e}")))?;
        let clock = TokioClock {
            start: tokio::time::Instant::now(),
        };
        let quota = Quota::per_second(rps).allow_burst(NonZeroU32::MIN);
        Ok(Provider {
            inner: Arc::new(Inner {
                http,
                url: format!("{base}{QUERY_PATH}"),
                access_code,
                limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
                clock,
                settings,
            }),
        })
    }

    /// Every eSIM of one order (the answer to ORDER_STATUS GOT_RESOURCE).
    pub async fn query_by_order(&self, order_no: &str) -> Result<Vec<Esim>, ProviderError> {
        self.query(EsimQuery::OrderNo(order_no)).await
    }

    /// One eSIM by its stable key; `None` when the provider lists no eSIM
    /// with that esimTranNo.
    pub async fn query_by_esim_tran_no(
        &self,
        esim_tran_no: &str,
    ) -> Result<Option<Esim>, ProviderError> {
        let list = self.query(EsimQuery::EsimTranNo(esim_tran_no)).await?;
        let exact = list
            .iter()
            .position(|e| e.esim_tran_no.as_deref() == Some(esim_tran_no));
        Ok(match exact {
            Some(i) => list.into_iter().nth(i),
            // An answer that leaves esimTranNo out still answers the question.
            None if list.len() == 1 && list[0].esim_tran_no.is_none() => list.into_iter().next(),
            None => None,
        })
    }

    /// The eSIMs that have had this ICCID (the provider recycles them):
    /// pick by esimTranNo.
    pub async fn query_by_iccid(&self, iccid: &str) -> Result<Vec<Esim>, ProviderError> {
        self.query(EsimQuery::Iccid(iccid)).await
    }

    /// All pages of one query, in the provider's order, each eSIM once.
    pub async fn query(&self, q: EsimQuery<'_>) -> Result<Vec<Esim>, ProviderError> {
        let mut out: Vec<Esim> = Vec::new();
        let mut page_num = 1;
        loop {
            let page = self.page(q, page_num).await?;
            let got = page.esims.len();
            for e in page.esims {
                if !out.iter().any(|o| same_esim(o, &e)) {
                    out.push(e);
                }
            }
            let total = page.total.unwrap_or(0);
            if got == 0 || out.len() as u64 >= total {
                break;
            }
            if page_num >= MAX_PAGES {
                tracing::warn!(
                    pages = page_num,
                    total,
                    read = out.len(),
                    "provider query: stopped paging at the page limit"
                );
                break;
            }
            page_num += 1;
        }
        Ok(out)
    }

    /// One page, with the retries of a passing failure.
    async fn page(&self, q: EsimQuery<'_>, page_num: u32) -> Result<Page, ProviderError> {
        let (field, value) = q.field();
        let body = json!({
            field: value,
            "pager": {"pageNum": page_num, "pageSize": self.inner.settings.page_size},
        });
        let mut retry = 0;
        loop {
            self.turn().await;
            match self.attempt(&body).await {
                Err(e) if e.passing() && retry < self.inner.settings.retries => {
                    let wait = self.backoff(retry);
                    tracing::debug!(
                        query = field,
                        page = page_num,
                        retry = retry + 1,
                        wait_ms = wait.as_millis() as u64,
                        error = %e,
                        "provider query failed; retrying"
                    );
                    tokio::time::sleep(wait).await;
                    retry += 1;
                }
                other => return other,
            }
        }
    }

    /// Waits for this request's turn in the shared rate limit.
    async fn turn(&self) {
        while let Err(not_until) = self.inner.limiter.check() {
            let wait = not_until.wait_time_from(self.inner.clock.now());
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }

    fn backoff(&self, retry: u32) -> Duration {
        let base = self
            .inner
            .settings
            .initial_backoff
            .saturating_mul(1u32 << retry.min(16))
            .min(MAX_BACKOFF);
        // Between half and all of it, so callers that failed together do not retry together.
        base.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }

    /// One request, bounded by the timeout.
    async fn attempt(&self, body: &Value) -> Result<Page, ProviderError> {
        let inner = &self.inner;
        let limit = inner.settings.timeout;
        let exchange = async {
            let response = inner
                .http
                .post(&inner.url)
                .header("RT-AccessCode", inner.access_code.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string())
                .send()
                .await?;
            let status = response.status();
            if status.is_redirection() {
                return Ok(Err(redirected(&response)));
            }
            let body = read_capped(response).await?;
            Ok::<_, reqwest::Error>(body.map(|bytes| (status, bytes)))
        };
        let (status, bytes) = match tokio::time::timeout(limit, exchange).await {
            Err(_) => return Err(ProviderError::Timeout(limit)),
            Ok(Err(e)) if e.is_timeout() => return Err(ProviderError::Timeout(limit)),
            Ok(Err(e)) => return Err(ProviderError::Transport(describe(&e))),
            Ok(Ok(Err(refusal))) => return Err(refusal),
            Ok(Ok(Ok(answer))) => answer,
        };
        if status.is_success() {
            return wire::parse_page(&bytes);
        }
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(ProviderError::Transport(format!(
                "HTTP {}",
                status.as_u16()
            )));
        }
        // A 4xx may still carry the envelope with the provider's reason.
        if let Ok(Value::Object(root)) = serde_json::from_slice::<Value>(&bytes) {
            if root.contains_key("success") {
                wire::refusal(&root)?;
            }
        }
        Err(ProviderError::Refused {
            code: format!("HTTP {}", status.as_u16()),
            msg: wire::shorten(&String::from_utf8_lossy(&bytes)),
        })
    }
}

/// A 3xx: not followed, since the next hop would get the access code. The
/// error names where it pointed, which is what an operator needs to fix
/// `provider.base_url` (or to see that someone redirects it).
fn redirected(response: &reqwest::Response) -> ProviderError {
    let to = response
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned())
        .unwrap_or_else(|| "nowhere (no Location)".into());
    ProviderError::Refused {
        code: format!("HTTP {}", response.status().as_u16()),
        msg: wire::shorten(&format!(
            "redirected to {}: redirects are not followed (they would carry the access code); check provider.base_url",
            to.escape_debug()
        )),
    }
}

/// The body, read chunk by chunk and given up as soon as it passes
/// [`MAX_ANSWER_BYTES`] (a `Content-Length` over it is refused unread).
async fn read_capped(
    mut response: reqwest::Response,
) -> Result<Result<Vec<u8>, ProviderError>, reqwest::Error> {
    let too_large = || {
        ProviderError::Malformed(format!(
            "the answer is larger than {} MiB; stopped reading it",
            MAX_ANSWER_BYTES / (1024 * 1024)
        ))
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Ok(Err(too_large()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Ok(Err(too_large()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Ok(body))
}

/// Two listings of one eSIM (pages can shift while they are read).
fn same_esim(a: &Esim, b: &Esim) -> bool {
    match (&a.esim_tran_no, &b.esim_tran_no) {
        (Some(x), Some(y)) => x == y,
        (None, None) => a.iccid.is_some() && a.iccid == b.iccid,
        _ => false,
    }
}

/// A transport error with its causes ("connection refused"), which the
/// top-level message of reqwest leaves out.
fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    wire::shorten(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn settings(code: &str, url: &str) -> ProviderSettings {
        ProviderSettings {
            access_code: Secret::new(code),
            base_url: url.into(),
            requests_per_second: 8,
            timeout: Duration::from_secs(1),
            retries: 1,
            initial_backoff: Duration::from_millis(10),
            page_size: 2,
        }
    }

    #[tokio::test]
    async fn settings_are_checked_by_key() {
        let key = |s| Provider::new(s).unwrap_err().setting;
        assert_eq!(key(settings("", "https://x")), "provider.access_code");
        assert_eq!(key(settings("a\nb", "https://x")), "provider.access_code");
        assert_eq!(key(settings("c", "not a url")), "provider.base_url");
        assert_eq!(key(settings("c", "ftp://x")), "provider.base_url");
        let p = Provider::new(settings("c", "https://api.example.com/")).unwrap();
        assert_eq!(
            p.inner.url,
            "https://api.example.com/api/v1/open/esim/query"
        );
    }

    #[tokio::test]
    async fn debug_never_shows_the_access_code() {
        let s = settings("TOPSECRET-CODE-1", "https://api.example.com");
        assert!(!format!("{s:?}").contains("TOPSECRET"));
        let p = Provider::new(s).unwrap();
        assert!(!format!("{p:?}").contains("TOPSECRET"));
        assert!(!format!("{:?}", p.inner.access_code).contains("TOPSECRET"));
    }

    /// No burst: after one turn the next waits 1/rate, for every clone.
    #[tokio::test]
    async fn one_turn_then_a_wait_of_one_interval_shared_by_clones() {
        let p = Provider::new(settings("c", "https://x")).unwrap();
        let other = p.clone();
        assert!(p.inner.limiter.check().is_ok());
        let refused = other.inner.limiter.check().unwrap_err();
        let wait = refused.wait_time_from(other.inner.clock.now());
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(125),
            "{wait:?}"
        );
    }

    #[test]
    fn backoff_doubles_within_jitter_and_a_cap() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        let mut s = settings("c", "https://x");
        s.initial_backoff = Duration::from_millis(400);
        let p = Provider::new(s).unwrap();
        for (retry, full) in [(0, 400), (1, 800), (2, 1600), (10, 8000)] {
            let b = p.backoff(retry).as_millis();
            assert!(b >= full / 2 && b <= full, "retry {retry}: {b}");
        }
    }
}
