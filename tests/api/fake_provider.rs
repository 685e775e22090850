//! A fake of the eSIM Access API on a loopback port, served by the test
//! itself: `POST /api/v1/open/esim/query` answered from a script (one reply
//! per request, in order), then from a fallback. It records every request
//! (when it arrived, its path, its `RT-AccessCode`, its JSON body), so tests
//! can count requests, check their pace and what was asked.
//!
//! HTTP/1.1 by hand on a tokio listener, one request per connection
//! (`Connection: close`), so a reply can also be "never answer" or "hang up".

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One answer of the fake.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with this JSON body.
    Json(Value),
    /// This status and raw body (a 5xx, a proxy's HTML page).
    Status(u16, String),
    /// 200 with a body that is not the envelope (or not JSON at all).
    Raw(String),
    /// Waits, then answers.
    Slow(Duration, Box<Reply>),
    /// Closes the connection without a word.
    HangUp,
    /// This 3xx status with `Location: <url>`.
    Redirect(u16, String),
    /// 200 with a body that never ends (no Content-Length, bytes until the
    /// client hangs up); the bytes written are counted (`streamed`).
    Endless,
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub access_code: Option<String>,
    pub content_type: Option<String>,
    pub body: Value,
}

type Fallback = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

struct State {
    script: VecDeque<Reply>,
    fallback: Fallback,
    seen: Vec<Seen>,
    /// Bytes written by `Reply::Endless` answers.
    streamed: u64,
    /// `Reply::Endless` answers whose client hung up.
    endless_ended: usize,
}

/// A running fake; clones share it.
#[derive(Clone)]
pub struct FakeProvider {
    pub base_url: String,
    state: Arc<Mutex<State>>,
}

impl FakeProvider {
    /// Answers `script` in order, then `success:false` "no script left"
    /// (an error code no test expects, so a surplus request shows).
    pub async fn start(script: Vec<Reply>) -> FakeProvider {
        Self::start_with(script, |_| refused("999999", "the fake has no answer left")).await
    }

    /// Answers `script` in order, then asks `fallback` (e.g. by orderNo).
    pub async fn start_with(
        script: Vec<Reply>,
        fallback: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> FakeProvider {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            script: script.into(),
            fallback: Arc::new(fallback),
            seen: Vec::new(),
            streamed: 0,
            endless_ended: 0,
        }));
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, s.clone()));
            }
        });
        FakeProvider {
            base_url: format!("http://127.0.0.1:{port}"),
            state,
        }
    }

    /// Queues more answers after the current script.
    pub fn push(&self, reply: Reply) {
        self.state.lock().unwrap().script.push_back(reply);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Bytes `Reply::Endless` managed to write before the client hung up.
    pub fn streamed(&self) -> u64 {
        self.state.lock().unwrap().streamed
    }

    /// How many `Reply::Endless` answers ended (their client hung up).
    pub fn endless_ended(&self) -> usize {
        self.state.lock().unwrap().endless_ended
    }

    pub fn count(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }

    /// The most requests that arrived within any window of `window`
    /// (both ends included).
    pub fn most_within(&self, window: Duration) -> usize {
        let times: Vec<Instant> = self.requests().iter().map(|s| s.at).collect();
        (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|t| t.duration_since(times[i]) <= window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }
}

/// Reads one request (headers, then Content-Length bytes of body), bounded.
async fn read_request(sock: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length.min(1024 * 1024) {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head, body))
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
}

async fn serve(mut sock: TcpStream, state: Arc<Mutex<State>>) {
    let Some((head, body)) = read_request(&mut sock).await else {
        return;
    };
    let mut first = head.lines().next().unwrap_or("").split(' ');
    let seen = Seen {
        at: Instant::now(),
        method: first.next().unwrap_or("").to_string(),
        path: first.next().unwrap_or("").to_string(),
        access_code: header(&head, "rt-accesscode"),
        content_type: header(&head, "content-type"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let reply = {
        let mut s = state.lock().unwrap();
        s.seen.push(seen.clone());
        match s.script.pop_front() {
            Some(r) => r,
            None => (s.fallback)(&seen),
        }
    };
    let mut reply = reply;
    loop {
        let (status, body) = match reply {
            Reply::Slow(wait, inner) => {
                tokio::time::sleep(wait).await;
                reply = *inner;
                continue;
            }
            Reply::HangUp => return,
            Reply::Redirect(code, to) => {
                let answer = format!(
                    "HTTP/1.1 {code} X\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = sock.write_all(answer.as_bytes()).await;
                let _ = sock.shutdown().await;
                return;
            }
            Reply::Endless => {
                let head = "HTTP/1.1 200 X\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"pad\":\"";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                while sock.write_all(&chunk).await.is_ok() {
                    state.lock().unwrap().streamed += chunk.len() as u64;
                }
                state.lock().unwrap().endless_ended += 1;
                return;
            }
            Reply::Json(v) => (200, v.to_string()),
            Reply::Raw(s) => (200, s),
            Reply::Status(code, s) => (code, s),
        };
        let answer = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = sock.write_all(answer.as_bytes()).await;
        let _ = sock.shutdown().await;
        return;
    }
}

// --- answers as the reference shows them --------------------------------

/// One eSIM of `obj.esimList[]`, shaped like the reference's sample
/// (empty strings for unknowns, `+0000` times, `activeType` a number).
pub fn esim(esim_tran_no: &str, iccid: &str, order_no: &str, ac: &str) -> Value {
    json!({
        "esimTranNo": esim_tran_no, "orderNo": order_no,
        "transactionId": "7544949834056-1-TR_50_30", "iccid": iccid, "ac": ac,
        "qrCodeUrl": format!("https://p.qrsim.net/{esim_tran_no}.png"),
        "shortUrl": format!("https://p.qrsim.net/{esim_tran_no}"),
        "smdpStatus": "RELEASED", "eid": "", "activeType": 1,
        "expiredTime": "2026-05-29T18:34:17+0000", "totalVolume": 5368709120u64,
        "totalDuration": 30, "durationUnit": "DAY", "orderUsage": 0,
        "esimStatus": "GOT_RESOURCE", "pin": "", "puk": "", "apn": "drei.at",
        "packageList": [{
            "packageName": "Spain 5GB 30Days", "packageCode": "CKH003", "slug": "ES_5_30",
            "duration": 30, "volume": 5368709120u64, "locationCode": "ES",
            "createTime": "2026-04-29T18:34:17+0000"
        }]
    })
}

/// `success:true` with these eSIMs as page `page_num` of `total`.
pub fn page(esims: Vec<Value>, page_num: u32, total: usize) -> Reply {
    Reply::Json(json!({
        "success": true, "errorCode": "0", "errorMsg": null,
        "obj": {"esimList": esims, "pager": {"pageSize": 20, "pageNum": page_num, "total": total}}
    }))
}

/// `success:false` with an error code, as HTTP 200.
pub fn refused(code: &str, msg: &str) -> Reply {
    Reply::Json(json!({"success": false, "errorCode": code, "errorMsg": msg, "obj": null}))
}

/// "Profiles are still being allocated".
pub fn not_ready() -> Reply {
    refused("200010", "the order is being processed, please query later")
}
