//! An in-process SMTP server (mailin-embedded) over real TCP on 127.0.0.1,
//! whose answers a test scripts: queue a reply for the next MAIL, RCPT or end
//! of DATA, and read back every message it accepted.

use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use mailin_embedded::{Handler, Response, Server};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Default)]
pub struct Shared {
    pub ehlos: usize,
    /// Answers for the next MAIL commands, OK once empty.
    pub mail: VecDeque<(u16, &'static str)>,
    /// Answers for the next RCPT commands, OK once empty.
    pub rcpt: VecDeque<(u16, &'static str)>,
    /// Answers for the next ends of DATA, OK once empty.
    pub data_end: VecDeque<(u16, &'static str)>,
    /// Every message that reached the end of DATA, accepted or not.
    pub tried: Vec<String>,
    /// The accepted ones.
    pub received: Vec<String>,
    pub rcpt_to: Vec<String>,
}

/// mailin clones the handler for each connection, so the message being
/// received lives here, per connection; what tests read is in `Shared`.
#[derive(Clone, Default)]
pub struct TestHandler(pub Arc<Mutex<Shared>>, Vec<u8>);

impl Handler for TestHandler {
    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        self.0.lock().unwrap().ehlos += 1;
        mailin_embedded::response::OK
    }

    fn mail(&mut self, _ip: IpAddr, _domain: &str, _from: &str) -> Response {
        match self.0.lock().unwrap().mail.pop_front() {
            Some((code, msg)) => Response::custom(code, msg.to_string()),
            None => mailin_embedded::response::OK,
        }
    }

    fn rcpt(&mut self, to: &str) -> Response {
        let mut s = self.0.lock().unwrap();
        s.rcpt_to.push(to.to_string());
        match s.rcpt.pop_front() {
            Some((code, msg)) => Response::custom(code, msg.to_string()),
            None => mailin_embedded::response::OK,
        }
    }

    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        _to: &[String],
    ) -> Response {
        self.1.clear();
        mailin_embedded::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        self.1.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mail = String::from_utf8_lossy(&std::mem::take(&mut self.1)).into_owned();
        let mut s = self.0.lock().unwrap();
        s.tried.push(mail.clone());
        match s.data_end.pop_front() {
            Some((code, msg)) => Response::custom(code, msg.to_string()),
            None => {
                s.received.push(mail);
                mailin_embedded::response::OK
            }
        }
    }
}

/// What a test holds of its SMTP server: the shared state (scripted
/// answers in, messages out), reachable through `Deref`.
#[derive(Clone, Default)]
pub struct Mailin(pub Arc<Mutex<Shared>>);

impl std::ops::Deref for Mailin {
    type Target = Mutex<Shared>;
    fn deref(&self) -> &Mutex<Shared> {
        &self.0
    }
}

impl Mailin {
    pub fn received(&self) -> Vec<String> {
        self.0.lock().unwrap().received.clone()
    }
    pub fn tried(&self) -> Vec<String> {
        self.0.lock().unwrap().tried.clone()
    }
}

/// Starts a mailin server on a free port; the thread lives until the test binary exits.
pub fn mailin_server() -> (u16, Mailin) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (port, mailin_on(listener))
}

/// Starts a mailin server on a listener the test already holds (e.g. a port
/// that was refusing connections until now).
pub fn mailin_on(listener: std::net::TcpListener) -> Mailin {
    let handler = TestHandler::default();
    let shared = Mailin(handler.0.clone());
    let mut server = Server::new(handler);
    server
        .with_name("mailin.test")
        .with_num_threads(4)
        .with_tcp_listener(listener);
    std::thread::spawn(move || {
        let _ = server.serve();
    });
    shared
}

/// A port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` different ports nothing listens on: every listener stays bound until
/// all are chosen, so two calls in a row cannot hand out the same port (seen
/// in CI: a config with `server.listen` and `admin.listen` on one port).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// A scripted server for what mailin-embedded cannot play: one answer per
/// command line (`None`: stay silent), a leading `!` in an answer hangs up.
pub type Script = fn(&str) -> Option<String>;

/// Accepts any number of connections; `greeting` None means "accept, then never say a word".
pub async fn scripted_server(greeting: Option<&'static str>, script: Script) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (rd, mut wr) = sock.into_split();
                let Some(greeting) = greeting else {
                    // Hold the connection open and silent until the client gives up.
                    let mut rd = BufReader::new(rd);
                    let mut sink = String::new();
                    while rd.read_line(&mut sink).await.unwrap_or(0) > 0 {}
                    return;
                };
                if wr.write_all(greeting.as_bytes()).await.is_err() {
                    return;
                }
                let mut lines = BufReader::new(rd).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let answer = if upper.starts_with("QUIT") {
                        Some("221 bye\r\n".to_string())
                    } else {
                        script(&upper)
                    };
                    if let Some(a) = answer {
                        // A leading '!' means: answer, then hang up.
                        let (a, hang_up) = match a.strip_prefix('!') {
                            Some(rest) => (rest.to_string(), true),
                            None => (a, false),
                        };
                        if wr.write_all(a.as_bytes()).await.is_err() {
                            return;
                        }
                        if hang_up || a.starts_with("221") {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

/// A scripted server that can misbehave, then behave (`set`): for AUTH
/// over plain TCP and a server that never answers, which mailin cannot play.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Mode {
    /// Refuses AUTH with 535.
    AuthFails,
    /// Accepts the connection and never says a word.
    Silent,
    /// A plain working server (AUTH accepted).
    Behaves,
}

#[derive(Clone)]
pub struct Switchable {
    mode: Arc<Mutex<Mode>>,
    received: Arc<Mutex<Vec<String>>>,
}

impl Switchable {
    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
    pub fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }
}

pub async fn switchable_server(mode: Mode) -> (u16, Switchable) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let s = Switchable {
        mode: Arc::new(Mutex::new(mode)),
        received: Arc::default(),
    };
    let server = s.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let s = server.clone();
            tokio::spawn(async move {
                let mode = *s.mode.lock().unwrap();
                let (rd, mut wr) = sock.into_split();
                let mut lines = BufReader::new(rd).lines();
                if mode == Mode::Silent {
                    while let Ok(Some(_)) = lines.next_line().await {}
                    return;
                }
                if wr.write_all(b"220 scripted ESMTP\r\n").await.is_err() {
                    return;
                }
                let mut in_data = false;
                let mut message = String::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    if in_data {
                        if line == "." {
                            in_data = false;
                            s.received
                                .lock()
                                .unwrap()
                                .push(std::mem::take(&mut message));
                            let _ = wr.write_all(b"250 queued\r\n").await;
                        } else {
                            message.push_str(&line);
                            message.push_str("\r\n");
                        }
                        continue;
                    }
                    let upper = line.to_ascii_uppercase();
                    let answer: &[u8] = if upper.starts_with("EHLO") {
                        b"250-scripted\r\n250 AUTH PLAIN LOGIN\r\n"
                    } else if upper.starts_with("AUTH") {
                        if mode == Mode::AuthFails {
                            b"535 5.7.8 Authentication credentials invalid\r\n"
                        } else {
                            b"235 2.7.0 ok\r\n"
                        }
                    } else if upper.starts_with("MAIL") || upper.starts_with("RCPT") {
                        b"250 ok\r\n"
                    } else if upper == "DATA" {
                        in_data = true;
                        b"354 go ahead\r\n"
                    } else if upper.starts_with("RSET") || upper.starts_with("NOOP") {
                        b"250 ok\r\n"
                    } else if upper.starts_with("QUIT") {
                        let _ = wr.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"502 not implemented\r\n"
                    };
                    if wr.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, s)
}

/// A relay that can go down and come back on the same port: a TCP proxy on
/// its own port in front of a mailin server. `stop` closes the listener and
/// cuts every open connection (a relay restart, a crash), so connecting is
/// refused until `start` listens again.
pub struct Stoppable {
    pub port: u16,
    pub mailin: Mailin,
    upstream: u16,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Stoppable {
    pub async fn new() -> Stoppable {
        let (upstream, mailin) = mailin_server();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let relay = Stoppable {
            port,
            mailin,
            upstream,
            tasks: Mutex::default(),
            conns: Arc::default(),
        };
        relay.serve(listener);
        relay
    }

    fn serve(&self, listener: TcpListener) {
        let (upstream, conns) = (self.upstream, self.conns.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns.lock().unwrap().push(conn.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(task);
    }

    /// Down: nothing listens on `port` and every connection is cut.
    pub fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Up again on the same port.
    pub async fn start(&self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.port),
            }
        };
        self.serve(listener);
    }
}
