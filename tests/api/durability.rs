//! "Acknowledged means on disk, even if the power goes" (issue 9), proved on
//! the built binary: it runs under `strace`, and the trace must show, for
//! every webhook answered `200 accepted` and every admin suppression change
//! answered 200, an `fdatasync` of sled's data file that started after the
//! request's body was read and returned before the 200 was written. sled's
//! own `flush()` ends with `sync_file_range`, which flushes neither the
//! device cache nor the file's size, so without our sync there is none.
//!
//! Skipped (it says why) when `strace` is missing or ptrace is not allowed,
//! unless `ESIM_NOTIFY_REQUIRE_STRACE=1` (set by `.ci/run`), which makes
//! that a failure.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;

const SEQUENTIAL: usize = 20;
const CONCURRENT: usize = 20;
const SUPPRESSED: &str = "trace-suppressed@example.com";

/// Whether `strace` can trace here; `Err` says why not.
fn strace_usable() -> Result<(), String> {
    match Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Err(e) => Err(format!("strace cannot be run: {e}")),
        Ok(o) if !o.status.success() => Err(format!(
            "strace cannot trace here (ptrace not permitted?): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => Ok(()),
    }
}

/// One system call, joined from its `<unfinished ...>` and `resumed` halves.
#[derive(Debug)]
struct Call {
    /// Trace line where it was entered, and where it returned.
    start: usize,
    end: usize,
    name: String,
    fd: Option<u32>,
    /// The path `-y` printed with the first argument (`socket:[…]` for sockets).
    fd_path: String,
    text: String,
    ok: bool,
}

/// Parses `strace -f -y` output: `PID TIME name(args) = ret`, where a call
/// interrupted by another thread's is printed as `name(args <unfinished ...>`
/// and later `<... name resumed>rest) = ret` on the same PID.
fn parse(trace: &str) -> Vec<Call> {
    let mut pending: HashMap<&str, (usize, String)> = HashMap::new();
    let mut calls = Vec::new();
    for (i, line) in trace.lines().enumerate() {
        // strace pads the pid to a width, so split on runs of spaces.
        let Some((pid, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Some((_time, rest)) = rest.trim_start().split_once(' ') else {
            continue;
        };
        let (start, text) = if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(pid, (i, head.to_string()));
            continue;
        } else if rest.starts_with("<... ") {
            let Some((start, head)) = pending.remove(pid) else {
                continue;
            };
            let tail = rest.split_once("resumed>").map_or("", |(_, t)| t);
            (start, format!("{head}{tail}"))
        } else {
            (i, rest.to_string())
        };
        let Some((name, args)) = text.split_once('(') else {
            continue;
        };
        let digits: String = args.chars().take_while(char::is_ascii_digit).collect();
        let fd_path = args[digits.len()..]
            .strip_prefix('<')
            .and_then(|p| p.split_once('>'))
            .map_or(String::new(), |(p, _)| p.to_string());
        let ret = text.rsplit_once(" = ").map_or("", |(_, r)| r);
        let ok = !ret.is_empty() && !ret.starts_with('-') && !ret.starts_with('?');
        calls.push(Call {
            start,
            end: i,
            name: name.to_string(),
            fd: digits.parse().ok(),
            fd_path,
            text,
            ok,
        });
    }
    calls.sort_by_key(|c| c.end);
    calls
}

const READS: &[&str] = &["read", "recvfrom", "readv", "recvmsg"];
const WRITES: &[&str] = &["write", "sendto", "writev", "sendmsg"];

/// For the request whose body contains `marker`: the trace lines of its
/// body's read and of the `HTTP/1.1 200` written back on that connection,
/// and whether an `fdatasync` of the store's `db` ran entirely in between.
fn synced_before_answer(
    calls: &[Call],
    marker: &str,
    status: &str,
    body: &str,
) -> Result<(), String> {
    let read = calls
        .iter()
        .find(|c| c.ok && READS.contains(&c.name.as_str()) && c.text.contains(marker))
        .ok_or_else(|| format!("no read of a request carrying {marker}"))?;
    let answer = calls
        .iter()
        .find(|c| {
            c.start > read.end
                && c.fd == read.fd
                && WRITES.contains(&c.name.as_str())
                && c.text.contains("HTTP/1.1 ")
        })
        .ok_or_else(|| format!("no answer written for {marker}"))?;
    if !answer.text.contains(&format!("HTTP/1.1 {status}")) || !answer.text.contains(body) {
        return Err(format!(
            "{marker} was not answered {status} {body}: {}",
            answer.text
        ));
    }
    let synced = calls.iter().any(|c| {
        c.ok && c.name == "fdatasync"
            && c.fd_path.ends_with("/db")
            && c.start > read.end
            && c.end < answer.start
    });
    if synced {
        Ok(())
    } else {
        Err(format!(
            "{marker}: no fdatasync of the store's db file between its read (trace line {}) and its 200 (line {})",
            read.end + 1,
            answer.start + 1
        ))
    }
}

/// The server's pid: strace's only child.
fn traced_pid(strace: &Child) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", strace.id())).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

fn sigterm(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

/// Waits a bounded time for a process to exit, then kills it.
fn reap(child: &mut Child, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn start_traced(dir: &Path, public: u16, admin: u16) -> Child {
    let extra = format!(
        "[server]\nlisten = \"127.0.0.1:{public}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[email]\ntransport = \"file\"\n"
    );
    let config = dir.join("config.toml");
    std::fs::write(&config, test_config_toml(dir, 9, &extra)).unwrap();
    Command::new("strace")
        .args(["-f", "-tt", "-y", "-s", "4096", "-o"])
        .arg(dir.join("trace.txt"))
        .args([
            "-e",
            "trace=read,recvfrom,readv,recvmsg,write,sendto,writev,sendmsg,fsync,fdatasync,sync_file_range",
        ])
        .arg(env!("CARGO_BIN_EXE_esim-notify"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env_remove("ESIM_NOTIFY_CONFIG")
        .env_remove(esim_notify::store::flusher::UNSAFE_NO_FDATASYNC)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting strace")
}

#[test]
fn every_acknowledgement_follows_an_fdatasync() {
    if crate::helpers::sled_only(
        "sled's fdatasync before each answer (strace); PostgreSQL answers after COMMIT",
    ) {
        return;
    }
    if let Err(why) = strace_usable() {
        if std::env::var("ESIM_NOTIFY_REQUIRE_STRACE").as_deref() == Ok("1") {
            panic!("ESIM_NOTIFY_REQUIRE_STRACE=1 but {why}");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let [public, admin] = free_ports();
    let mut strace = start_traced(dir.path(), public, admin);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let run = rt.block_on(async {
        let http = reqwest::Client::new();
        let ready = until_ready(&http, public, Duration::from_secs(60)).await;
        if !ready {
            return Err("the traced server did not become ready".to_string());
        }
        let url = format!("http://127.0.0.1:{public}/webhooks/esimaccess");
        let post = |http: reqwest::Client, url: String, id: String, i: usize| async move {
            let body = data_usage(&id, &format!("TR{i:04}"), &format!("89{i:018}"), 1000, 50);
            let r = http
                .post(url)
                .body(body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            if status == 200 && text.contains("accepted") {
                Ok(id)
            } else {
                Err(format!("{id}: {status} {text}"))
            }
        };
        let mut ids = Vec::new();
        for i in 0..SEQUENTIAL {
            ids.push(post(http.clone(), url.clone(), format!("trseq{i:03}"), i).await?);
        }
        let tasks: Vec<_> = (0..CONCURRENT)
            .map(|i| {
                // A client each, so that they really are separate connections.
                let http = reqwest::Client::new();
                tokio::spawn(post(http, url.clone(), format!("trcon{i:03}"), 100 + i))
            })
            .collect();
        for t in tasks {
            ids.push(t.await.unwrap()?);
        }
        let suppression = format!("http://127.0.0.1:{admin}/admin/suppressions/{SUPPRESSED}");
        for method in [reqwest::Method::PUT, reqwest::Method::DELETE] {
            let r = http
                .request(method.clone(), &suppression)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !r.status().is_success() {
                return Err(format!("{method} suppression: {}", r.status()));
            }
        }
        Ok(ids)
    });
    match traced_pid(&strace) {
        Some(pid) => sigterm(pid),
        None => {
            let _ = strace.kill();
        }
    }
    reap(&mut strace, Duration::from_secs(30));
    let ids = run.unwrap();
    let trace = std::fs::read_to_string(dir.path().join("trace.txt")).unwrap();
    let calls = parse(&trace);
    let fdatasyncs = calls.iter().filter(|c| c.name == "fdatasync").count();
    eprintln!(
        "{} webhooks, {fdatasyncs} fdatasync calls in {} traced calls",
        ids.len(),
        calls.len()
    );
    let mut failures: Vec<String> = ids
        .iter()
        .filter_map(|id| {
            synced_before_answer(&calls, &format!("{id}\\\""), "200", "accepted").err()
        })
        .collect();
    // The PUT and the DELETE both name the address in their request line.
    let admin_calls: Vec<&Call> = calls
        .iter()
        .filter(|c| c.ok && READS.contains(&c.name.as_str()) && c.text.contains(SUPPRESSED))
        .collect();
    if admin_calls.len() < 2 {
        failures.push(format!(
            "expected the PUT and DELETE of {SUPPRESSED} in the trace, found {} reads",
            admin_calls.len()
        ));
    }
    // The PUT answers 200 with the suppression, the DELETE 204.
    for (method, status) in [("PUT ", "200"), ("DELETE ", "204")] {
        let marker = format!("{method}/admin/suppressions/{SUPPRESSED}");
        if let Err(e) = synced_before_answer(&calls, &marker, status, "") {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} acknowledgements not preceded by an fdatasync:\n{}",
        failures.len(),
        ids.len() + 2,
        failures.join("\n")
    );
}

/// strace pads pids to a width: a 4-digit pid is followed by two spaces.
/// The parser must read both, or it sees no call at all once pids wrap.
#[test]
fn the_trace_parser_reads_padded_pids_and_split_calls() {
    let trace = "6843  10:26:36.643010 fdatasync(11</tmp/x/data/db>) = 0\n\
                 26535 10:26:36.700000 write(12<TCP:[1]>, \"HTTP/1.1 200\", 12 <unfinished ...>\n\
                 26535 10:26:36.700100 <... write resumed>) = 12\n";
    let calls = parse(trace);
    assert_eq!(calls.len(), 2, "{}", calls.len());
    assert_eq!(calls[0].name, "fdatasync");
    assert_eq!(calls[0].fd_path, "/tmp/x/data/db");
    assert!(calls[0].ok);
    assert_eq!(calls[1].name, "write");
    assert_eq!((calls[1].start, calls[1].end), (1, 2));
    assert!(calls[1].ok);
}
