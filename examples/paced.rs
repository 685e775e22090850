//! A small open-loop HTTP load generator for the benchmarks: posts
//! DATA_USAGE webhooks (distinct notifyIds, distinct eSIMs) over keep-alive
//! connections, either at a fixed rate or as fast as the server answers,
//! and prints the latency distribution.
//!
//! Paced mode (`--rate R`): request k is due at t0 + k/R. A connection that
//! is still busy when a request falls due sends it late, and that request's
//! latency counts from when it was due (no coordinated omission); the
//! generator's own timer slop (tokio sleeps in 1 ms ticks) is not counted.
//!
//! ```text
//! paced --addr 127.0.0.1:8080 --path /webhooks/esimaccess --rate 1000 --duration 10 \
//!       [--connections 32] [--prefix p] [--start 0] [--remain-pct 5]
//! paced --addr ... --count 10000            # as fast as possible, stops after N
//! ```
//! Prints one line: `sent= ok= failed= elapsed_s= rate= p50_ms= p90_ms= p99_ms= max_ms=`.

#[path = "benchkit/mod.rs"]
mod benchkit;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Plan {
    addr: String,
    path: String,
    rate: f64,
    total: u64,
    prefix: String,
    start: u64,
    remain_pct: u64,
    t0: Instant,
    next: AtomicU64,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    lat_us: Vec<u64>,
}

async fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Sends one request and reads one response; Ok(status).
async fn exchange(s: &mut TcpStream, req: &[u8], buf: &mut Vec<u8>) -> std::io::Result<u16> {
    s.write_all(req).await?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = std::str::from_utf8(&buf[..end]).unwrap_or("");
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < end + 4 + len {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        return Ok(status);
    }
}

async fn worker(plan: Arc<Plan>) -> Tally {
    let mut t = Tally::default();
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let k = plan.next.fetch_add(1, Ordering::Relaxed);
        if k >= plan.total {
            return t;
        }
        let free_at = Instant::now();
        let start = if plan.rate > 0.0 {
            let due = plan.t0 + Duration::from_secs_f64(k as f64 / plan.rate);
            if due > free_at {
                tokio::time::sleep_until(due.into()).await;
                // On time: count from the moment it was really sent.
                Instant::now()
            } else {
                // Late because this connection was busy: count from when it was due.
                due
            }
        } else {
            free_at
        };
        let body = benchkit::data_usage(&plan.prefix, plan.start + k, plan.remain_pct);
        let req = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            plan.path,
            plan.addr,
            body.len(),
            body
        );
        let mut result = Err(std::io::Error::other("not sent"));
        for _attempt in 0..2 {
            if conn.is_none() {
                match connect(&plan.addr).await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            let s = conn.as_mut().expect("connected");
            result = exchange(s, req.as_bytes(), &mut buf).await;
            if result.is_ok() {
                break;
            }
            conn = None; // the server closed a keep-alive connection: reconnect once
        }
        match result {
            Ok(200) => {
                t.ok += 1;
                t.lat_us.push(start.elapsed().as_micros() as u64);
            }
            Ok(_) | Err(_) => t.failed += 1,
        }
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = benchkit::required("--addr");
    let path: String = benchkit::arg("--path", "/webhooks/esimaccess".to_string());
    let rate: f64 = benchkit::arg("--rate", 0.0);
    let duration: f64 = benchkit::arg("--duration", 0.0);
    let count: u64 = benchkit::arg("--count", 0);
    let connections: usize = benchkit::arg("--connections", 32);
    let prefix: String = benchkit::arg("--prefix", "paced".to_string());
    let start: u64 = benchkit::arg("--start", 0);
    let remain_pct: u64 = benchkit::arg("--remain-pct", 5);
    let total = if count > 0 {
        count
    } else if rate > 0.0 && duration > 0.0 {
        (rate * duration) as u64
    } else {
        eprintln!("give --count N, or --rate R with --duration S");
        std::process::exit(2);
    };
    let plan = Arc::new(Plan {
        addr,
        path,
        rate,
        total,
        prefix,
        start,
        remain_pct,
        t0: Instant::now() + Duration::from_millis(20),
        next: AtomicU64::new(0),
    });
    let began = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(worker(plan.clone())))
        .collect();
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await.expect("worker");
        all.ok += t.ok;
        all.failed += t.failed;
        all.lat_us.extend(t.lat_us);
    }
    let elapsed = began.elapsed().as_secs_f64();
    all.lat_us.sort_unstable();
    println!(
        "sent={} ok={} failed={} elapsed_s={:.3} rate={:.1} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        total,
        all.ok,
        all.failed,
        elapsed,
        all.ok as f64 / elapsed,
        pct(&all.lat_us, 50.0),
        pct(&all.lat_us, 90.0),
        pct(&all.lat_us, 99.0),
        all.lat_us.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
}
