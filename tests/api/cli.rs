//! The command line of SPEC §2, run as the built binary against a config in
//! a temp dir: on the store directly, and through a running server's admin
//! listener when that server holds the store.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_esim-notify");
use crate::helpers::{copy_dir, TEMPLATES};
const ADMIN_TOKEN: &str = "cli-test-token";

/// The reference DATA_USAGE sample (reference/payloads.md): 9.97 % left.
const DATA_USAGE_SAMPLE: &str = r#"{"notifyType":"DATA_USAGE","eventGenerateTime":"2025-07-21T10:57:28Z","notifyId":"f776267e8d6745db8cc316e4c146ea0c","content":{"orderNo":"B25052822150009","transactionId":"unique_id_from_partner","esimTranNo":"25052822150009","iccid":"8943108170001029631","totalVolume":53687091200,"orderUsage":48335585458,"remain":5351505742,"lastUpdateTime":"2025-07-21T09:38:25Z","remainThreshold":0.1}}"#;

struct Env {
    dir: tempfile::TempDir,
    admin_port: u16,
    public_port: u16,
}

use crate::smtp::{free_port, free_ports};

impl Env {
    fn new() -> Env {
        Env::with_templates(Path::new(TEMPLATES))
    }

    fn with_templates(templates: &Path) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let [admin_port, public_port] = free_ports();
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:{public_port}"
[admin]
listen = "127.0.0.1:{admin_port}"
token = "{ADMIN_TOKEN}"
[store]
{store}
[email]
transport = "file"
file_dir = "{mail}"
[templates]
dir = "{templates}"
"#,
            store = crate::helpers::store_keys(&dir.path().join("data")),
            mail = dir.path().join("mail-out").display(),
            templates = templates.display(),
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        Env {
            dir,
            admin_port,
            public_port,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(self.path("config.toml"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("ESIM_NOTIFY_CONFIG")
            .env("RUST_LOG", "warn");
        for (k, _) in std::env::vars() {
            if k.starts_with("ESIM_NOTIFY_") {
                c.env_remove(k);
            }
        }
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }

    /// As [`Env::run`] with extra environment variables.
    fn run_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        let out = self
            .command(args)
            .envs(vars.iter().copied())
            .output()
            .expect("the binary runs");
        Run::from(args, out)
    }

    /// Starts `serve` and waits until its admin listener answers.
    fn serve(&self) -> Server {
        let child = self
            .command(&["serve"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve starts");
        let server = Server { child };
        wait_for_admin(self.admin_port);
        server
    }

    /// Sends email over SMTP to a test server on `port` instead of files.
    fn use_smtp(&self, port: u16) {
        let path = self.path("config.toml");
        let config = std::fs::read_to_string(&path).unwrap().replace(
            "transport = \"file\"",
            "transport = \"smtp\"\nsend_timeout = \"5s\"",
        );
        let smtp = format!("\n[email.smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n");
        std::fs::write(path, config + &smtp).unwrap();
    }

    /// Posts a webhook body to the running server; its status.
    fn webhook(&self, body: &str) -> u16 {
        reqwest::blocking::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/webhooks/esimaccess",
                self.public_port
            ))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
            .status()
            .as_u16()
    }

    /// Polls `dead list --json` until it holds `n` dead letters; their ids.
    fn wait_dead(&self, n: usize) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let run = self.run(&["dead", "list", "--json"]);
            let rows: Vec<serde_json::Value> =
                serde_json::from_str(&run.stdout).unwrap_or_default();
            if rows.len() == n {
                return rows.iter().map(|r| r["id"].as_u64().unwrap()).collect();
            }
            assert!(Instant::now() < deadline, "{}", run.stdout);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn admin_get(&self, path: &str) -> u16 {
        reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{}{path}", self.admin_port))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .unwrap()
            .status()
            .as_u16()
    }
}

/// Waits (at most 20 s) until the admin listener answers `/healthz`.
fn wait_for_admin(port: u16) {
    let url = format!("http://127.0.0.1:{port}/healthz");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::blocking::get(&url)
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        assert!(Instant::now() < deadline, "the server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Env {
    /// `customers add --email E --esim-tran-no T`, which must succeed.
    fn add_customer(&self, email: &str, esim_tran_no: &str) {
        self.run(&[
            "customers",
            "add",
            "--email",
            email,
            "--esim-tran-no",
            esim_tran_no,
        ])
        .code(0);
    }
}

struct Server {
    child: Child,
}

impl Server {
    /// SIGTERM, as an operator's service manager would, then a clean exit.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                assert!(s.success(), "serve exited with {s}");
                return;
            }
            assert!(Instant::now() < deadline, "serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Run {
    what: String,
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(args: &[&str], out: Output) -> Run {
        Run {
            what: args.join(" "),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    #[track_caller]
    fn code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code, expected,
            "`{}` exited {}\nstdout:\n{}\nstderr:\n{}",
            self.what, self.code, self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    fn says(&self, text: &str) -> &Self {
        let all = format!("{}{}", self.stdout, self.stderr);
        assert!(
            all.contains(text),
            "`{}` does not say {text:?}\nstdout:\n{}\nstderr:\n{}",
            self.what,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// The same customer commands, once on the store and once through the server.
fn customer_round_trip(env: &Env) {
    env.run(&[
        "customers",
        "add",
        "--email",
        "Ana@Example.COM",
        "--name",
        "Ana",
        "--iccid",
        "8943108170001029631",
        "--order-no",
        "B1",
    ])
    .code(0)
    .says("Bound Ana@example.com");
    env.run(&["customers", "get", "--iccid", "8943108170001029631"])
        .code(0)
        .says("Ana@example.com")
        .says("Ana");
    env.run(&["customers", "get", "--order-no", "B1", "--json"])
        .code(0)
        .says("\"email\": \"Ana@example.com\"");
    env.run(&["customers", "get", "--esim-tran-no", "unknown"])
        .code(1)
        .says("no customer bound");
    env.run(&["customers", "forget", "--email", "ana@example.com"])
        .code(0)
        .says("2 binding(s) removed");
    env.run(&["customers", "forget", "--email", "ana@example.com"])
        .code(1)
        .says("No customer is bound to ana@example.com");
    env.run(&["customers", "get", "--iccid", "8943108170001029631"])
        .code(1);
}

#[test]
fn customers_work_on_the_store_and_through_a_running_server() {
    let env = Env::new();
    customer_round_trip(&env);

    let server = env.serve();
    customer_round_trip(&env);
    // The server itself saw the binding: the command went through it.
    env.run(&[
        "customers",
        "add",
        "--email",
        "b@example.com",
        "--iccid",
        "890000000000000077",
    ])
    .code(0);
    assert_eq!(
        env.admin_get("/admin/customers?iccid=890000000000000077"),
        200
    );
    server.stop();

    // And it is on disk once the server has gone.
    env.run(&["customers", "get", "--iccid", "890000000000000077"])
        .code(0)
        .says("b@example.com");
}

#[test]
fn a_server_with_another_token_refuses_the_command() {
    let env = Env::new();
    let server = env.serve();
    let config = std::fs::read_to_string(env.path("config.toml")).unwrap();
    std::fs::write(
        env.path("config.toml"),
        config.replace(ADMIN_TOKEN, "not-the-token"),
    )
    .unwrap();
    env.run(&["suppress", "list"]).code(1).says("admin token");
    server.stop();
}

#[test]
fn import_reports_each_rejected_row_by_line() {
    let env = Env::new();
    std::fs::write(
        env.path("customers.csv"),
        "email,name,iccid,esimTranNo,timezone\n\
         ana@example.com,Ana,890000000000000111,,Europe/Madrid\n\
         not-an-address,Bob,890000000000000222,,\n\
         carla@example.com,Carla,,T333,\n\
         dan@example.com,Dan,,,\n\
         eve@example.com,Eve,890000000000000555,,Mars/Olympus\n",
    )
    .unwrap();
    env.run(&["customers", "import", "customers.csv"])
        .code(1)
        .says("line 3")
        .says("not an email address")
        .says("line 5")
        .says("no identifier")
        .says("line 6")
        .says("imported 2, rejected 3");
    env.run(&["customers", "get", "--iccid", "890000000000000111"])
        .code(0);
    env.run(&["customers", "get", "--esim-tran-no", "T333"])
        .code(0)
        .says("carla@example.com");
    env.run(&["customers", "get", "--iccid", "890000000000000555"])
        .code(1);

    std::fs::write(env.path("clean.csv"), "email,orderNo\nf@example.com,B9\n").unwrap();
    env.run(&["customers", "import", "clean.csv"])
        .code(0)
        .says("imported 1, rejected 0");

    std::fs::write(env.path("noid.csv"), "email,name\nf@example.com,F\n").unwrap();
    env.run(&["customers", "import", "noid.csv"])
        .code(2)
        .says("line 1");
}

/// Through a running server, a row too large for the admin body limit is
/// one rejected row with its line number; the rows after it are imported.
#[test]
fn import_through_a_server_rejects_an_over_large_row_and_goes_on() {
    let env = Env::new();
    std::fs::write(
        env.path("big.csv"),
        format!(
            "email,orderNo\nana@example.com,{}\nbob@example.com,B222\n",
            "8".repeat(300_000)
        ),
    )
    .unwrap();
    let server = env.serve();
    env.run(&["customers", "import", "big.csv"])
        .code(1)
        .says("line 2: rejected")
        .says("imported 1, rejected 1");
    env.run(&["customers", "get", "--order-no", "B222"])
        .code(0)
        .says("bob@example.com");
    server.stop();
}

#[test]
fn the_suppression_list_is_managed_from_the_command_line() {
    let env = Env::new();
    env.run(&[
        "suppress",
        "add",
        "bounce@example.com",
        "--reason",
        "complained",
    ])
    .code(0);
    env.run(&["suppress", "add", "other@example.com"]).code(0);
    env.run(&["suppress", "list"])
        .code(0)
        .says("bounce@example.com")
        .says("complained")
        .says("other@example.com");
    env.run(&["suppress", "remove", "bounce@example.com"])
        .code(0);
    env.run(&["suppress", "remove", "bounce@example.com"])
        .code(1)
        .says("not suppressed");
    let list = env.run(&["suppress", "list", "--json"]);
    list.code(0);
    assert!(
        !list.stdout.contains("bounce@example.com"),
        "{}",
        list.stdout
    );
    env.run(&["suppress", "add", "not-an-address"]).code(2);
}

#[test]
fn queue_commands_work_on_an_idle_store() {
    let env = Env::new();
    env.run(&["outbox"]).code(0).says("empty");
    env.run(&["outbox", "--json"]).code(0).says("[]");
    env.run(&["outbox", "cancel", "42"]).code(1).says("42");
    env.run(&["dead", "list"]).code(0).says("No dead letters");
    env.run(&["dead", "retry", "42"]).code(1);
    env.run(&["dead", "retry", "--all"])
        .code(0)
        .says("Requeued 0 of 0");
    env.run(&["pause"]).code(0).says("paused");
    env.run(&["resume"]).code(0).says("resumed");
    env.run(&["backup", "copy"]).code(0);
    assert!(env.path("copy").join("db").exists());
    env.run(&["backup", "copy"]).code(1).says("not empty");
}

/// `backup DIR` refuses, as a reported failure, a target inside what the
/// config names, resolves a relative DIR against the config file's
/// directory (as the config's own paths), and says where it wrote; on the
/// store and through a running server alike.
#[test]
fn backup_refuses_bad_targets_and_says_where_it_wrote() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("elsewhere")).unwrap();
    let from_elsewhere = |args: &[&str]| {
        let out = env
            .command(args)
            .current_dir(env.path("elsewhere"))
            .output()
            .unwrap();
        Run::from(args, out)
    };
    std::os::unix::fs::symlink(env.path("nowhere"), env.path("dangling")).unwrap();
    for round in ["store", "server"] {
        let server = (round == "server").then(|| env.serve());
        let copy = format!("copy-{round}");
        from_elsewhere(&["backup", &copy])
            .code(0)
            .says(&format!("Backup written to {}", env.path(&copy).display()));
        assert!(env.path(&copy).join("db").exists(), "{round}");
        assert!(!env.path("elsewhere").join(&copy).exists(), "{round}");
        env.run(&["backup", "data/inside"])
            .code(1)
            .says("inside the store");
        env.run(&["backup", "mail-out/inside"])
            .code(1)
            .says("inside the mail-out folder");
        env.run(&["backup", "dangling"])
            .code(1)
            .says("symbolic link");
        if let Some(s) = server {
            s.stop();
        }
    }
}

#[test]
fn render_prints_the_email_of_a_webhook_body() {
    let env = Env::new();
    std::fs::write(env.path("data_usage.json"), DATA_USAGE_SAMPLE).unwrap();
    let run = env.run(&[
        "render",
        "data_usage.json",
        "--name",
        "<script>alert(1)</script>",
        "--email",
        "jane@example.com",
    ]);
    run.code(0);
    let out = &run.stdout;
    let subject = out
        .lines()
        .find(|l| l.starts_with("Subject: "))
        .unwrap_or_else(|| panic!("no subject in\n{out}"));
    assert!(subject.contains("10%"), "{subject}");
    assert!(
        out.contains("To: <script>alert(1)</script> <jane@example.com>"),
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with("Message-ID: <")), "{out}");
    let (text, html) = out
        .split_once("----- text/html -----")
        .expect("an HTML part");
    let text = text
        .split_once("----- text/plain -----")
        .expect("a text part")
        .1;
    assert!(
        text.contains("<script>alert(1)</script>"),
        "text part:\n{text}"
    );
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "html part:\n{html}"
    );
    assert!(!html.contains("<script>"), "html part:\n{html}");
    // It changed nothing: no store was created.
    assert!(!env.path("data").exists());

    env.run(&["render", "missing.json"]).code(1);
    env.run(&["render", "data_usage.json", "--email", "nope"])
        .code(2);
}

#[test]
fn check_names_the_broken_template() {
    Env::new().run(&["check"]).code(0).says("OK");

    let broken = tempfile::tempdir().unwrap();
    copy_dir(Path::new(TEMPLATES), broken.path());
    std::fs::write(
        broken.path().join("data_usage.txt.hbs"),
        "Hello {{customer.name}\n{{#if usage.remain}}unclosed\n",
    )
    .unwrap();
    Env::with_templates(broken.path())
        .run(&["check"])
        .code(1)
        .says("data_usage.txt.hbs");

    // An unknown variable inside an {{#if}} (strict mode alone would not see
    // it) is reported with its file and line.
    let unknown = tempfile::tempdir().unwrap();
    copy_dir(Path::new(TEMPLATES), unknown.path());
    std::fs::write(
        unknown.path().join("esim_expired.subject.hbs"),
        "Your eSIM has expired\n{{#if esim.iccdi}}({{esim.iccid}}){{/if}}\n",
    )
    .unwrap();
    Env::with_templates(unknown.path())
        .run(&["check"])
        .code(1)
        .says("esim_expired.subject.hbs:2")
        .says("esim.iccdi");
}

/// SPEC §7 through the CLI: a locale folder with some parts of a template
/// fails `check`, naming the files; one with all three parts passes, with a
/// warning for each partial with words it does not translate.
#[test]
fn check_fails_on_a_half_translated_locale_and_warns_of_untranslated_partials() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(Path::new(TEMPLATES), dir.path());
    let it = dir.path().join("it");
    std::fs::create_dir_all(&it).unwrap();
    std::fs::write(
        it.join("data_usage.subject.hbs"),
        "Dati: {{percent usage.threshold}}\n",
    )
    .unwrap();
    Env::with_templates(dir.path())
        .run(&["check"])
        .code(1)
        .says("half-translated")
        .says("it/data_usage.txt.hbs")
        .says("it/data_usage.html.hbs");

    for part in ["txt", "html"] {
        std::fs::copy(
            dir.path().join(format!("data_usage.{part}.hbs")),
            it.join(format!("data_usage.{part}.hbs")),
        )
        .unwrap();
    }
    Env::with_templates(dir.path())
        .run(&["check"])
        .code(0)
        .says("warning: ")
        .says("missing partial")
        .says("it/partials/footer.hbs")
        .says("OK");
}

#[test]
fn bad_usage_exits_2() {
    let env = Env::new();
    env.run(&["customers", "get"]).code(2);
    env.run(&["customers", "get", "--iccid", "1", "--order-no", "2"])
        .code(2);
    env.run(&["customers", "add", "--email", "a@example.com"])
        .code(2)
        .says("no identifier");
    env.run(&["customers", "add", "--email", "nope", "--iccid", "1"])
        .code(2);
    env.run(&["dead", "retry"]).code(2);
    env.run(&["outbox", "cancel", "abc"]).code(2);
    env.run(&["no-such-command"]).code(2);
    env.run(&["send-test", "--to", "not an address"])
        .code(2)
        .says("not an email address");
}

#[test]
fn send_test_reports_the_transport_result() {
    let env = Env::new();
    env.run(&["send-test", "--to", "ops@example.com"])
        .code(0)
        .says("ops@example.com")
        .says("via the file transport (into ");
    let sent: Vec<_> = std::fs::read_dir(env.path("mail-out"))
        .expect("the file transport wrote something")
        .collect();
    assert_eq!(sent.len(), 1);

    // SMTP to a port where nothing listens: reported, exit 1.
    let config = std::fs::read_to_string(env.path("config.toml")).unwrap();
    let port = free_port();
    let config =
        config.replace(
            "transport = \"file\"",
            "transport = \"smtp\"\nsend_timeout = \"5s\"",
        ) + &format!("[email.smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n");
    std::fs::write(env.path("config.toml"), config).unwrap();
    env.run(&["send-test", "--to", "ops@example.com"])
        .code(1)
        .says("failed");
}

const GB: u64 = 1024 * 1024 * 1024;

#[test]
fn dead_retry_lifts_only_its_own_suppression_and_fails_naming_any_other() {
    let env = Env::new();
    let (port, smtp) = crate::smtp::mailin_server();
    env.use_smtp(port);
    env.add_customer("ana@example.com", "T1");
    env.add_customer("bob@example.com", "T2");
    let server = env.serve();

    // Ana's mailbox is unknown at RCPT: dead, and suppressed automatically.
    smtp.lock()
        .unwrap()
        .rcpt
        .push_back((550, "5.1.1 user unknown"));
    assert_eq!(
        env.webhook(&crate::helpers::data_usage("n1", "T1", "8901", 10 * GB, GB)),
        200
    );
    let ana = env.wait_dead(1)[0];
    // Bob's message is refused after DATA; then he complains.
    smtp.lock()
        .unwrap()
        .data_end
        .push_back((554, "5.6.0 refused"));
    assert_eq!(
        env.webhook(&crate::helpers::data_usage("n2", "T2", "8902", 10 * GB, GB)),
        200
    );
    let bob = *env.wait_dead(2).iter().find(|id| **id != ana).unwrap();
    env.run(&[
        "suppress",
        "add",
        "bob@example.com",
        "--reason",
        "complaint",
    ])
    .code(0);

    env.run(&["dead", "retry", "--all"])
        .code(1)
        .says(&format!("notice {bob}: dead letter {bob} stays"))
        .says("complaint")
        .says("`esim-notify suppress remove bob@example.com` lifts it")
        .says("the suppression of ana@example.com its own failure added (bounced: user unknown")
        .says("Requeued 1 of 2");
    let deadline = Instant::now() + Duration::from_secs(20);
    while smtp.received().is_empty() {
        assert!(Instant::now() < deadline, "ana's notice was not delivered");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(env.wait_dead(1), vec![bob], "bob's dead letter stays");
    env.run(&["suppress", "list"])
        .code(0)
        .says("bob@example.com");
    server.stop();

    // The same answer on the store itself.
    env.run(&["dead", "retry", &bob.to_string()])
        .code(1)
        .says("complaint")
        .says("esim-notify suppress remove bob@example.com");
    // SPEC §2: `dead list` says when and why each died.
    env.run(&["dead", "list"])
        .code(0)
        .says(&bob.to_string())
        .says("DIED AT")
        .says("message rejected (554)");
}

/// What `outbox` and `outbox --parked` show for one queued notice (paused)
/// and one parked for T9; the same through a server and on the store.
fn paused_and_parked(env: &Env) {
    env.run(&["outbox"]).code(0).says("paused by operator");
    env.run(&["outbox", "--parked"])
        .code(0)
        .says("T9")
        .says("8909")
        .says("data_usage (10%)")
        .says("EXPIRES AT");
    let json = env.run(&["outbox", "--parked", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(rows.len(), 1, "{}", json.stdout);
    assert_eq!(rows[0]["esim"]["esimTranNo"], "T9");
    let at = |k: &str| chrono::DateTime::parse_from_rfc3339(rows[0][k].as_str().unwrap()).unwrap();
    assert_eq!(
        at("expires_at") - at("parked_at"),
        chrono::Duration::hours(72)
    );
}

#[test]
fn outbox_shows_the_operator_pause_and_lists_parked_notices() {
    let env = Env::new();
    env.add_customer("ana@example.com", "T1");
    env.run(&["pause"]).code(0);
    env.run(&["outbox", "--parked"])
        .code(0)
        .says("No parked notices");
    let server = env.serve();
    assert_eq!(
        env.webhook(&crate::helpers::data_usage("n1", "T1", "8901", 10 * GB, GB)),
        200
    );
    // Nobody is bound to T9 yet: parked.
    assert_eq!(
        env.webhook(&crate::helpers::data_usage("n2", "T9", "8909", 10 * GB, GB)),
        200
    );
    paused_and_parked(&env);
    server.stop();
    paused_and_parked(&env);
}

#[test]
fn check_prints_every_configuration_warning() {
    let env = Env::new();
    env.run_with(
        &["check"],
        &[
            ("ESIM_NOTIFY_SERVER_LISTEN", "0.0.0.0:80"),
            ("ESIM_NOTIFY_CONFIG", "/ignored/because/of/--config"),
            ("ESIM_NOTIFY_EMAIL__TRANSPORT", "smtp"),
            ("ESIM_NOTIFY_EMAIL__SMTP__HOST", "mail.example.com"),
            ("ESIM_NOTIFY_EMAIL__SMTP__TLS", "none"),
            ("ESIM_NOTIFY_EMAIL__SMTP__USERNAME", "mailer"),
            ("ESIM_NOTIFY_EMAIL__SMTP__PASSWORD", "0123"),
            ("ESIM_NOTIFY_EMAIL__LIST_UNSUBSCRIBE", "one-click"),
            (
                "ESIM_NOTIFY_SECURITY__ALLOWED_IPS",
                r#"["::ffff:3.1.131.226", "127.0.0.1"]"#,
            ),
            ("ESIM_NOTIFY_SECURITY__TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .code(0)
    .says("warning: environment variable ESIM_NOTIFY_SERVER_LISTEN names no key and is ignored; did you mean ESIM_NOTIFY_SERVER__LISTEN?")
    .says("warning: email.smtp.tls = \"none\" with a username or password: the credentials travel unencrypted to mail.example.com")
    .says("warning: email.list_unsubscribe = \"one-click\" with server.public_url empty")
    .says("warning: security.allowed_ips[0] = ::ffff:3.1.131.226/128 is IPv4-mapped IPv6")
    .says("write it as 3.1.131.226")
    .says("warning: 127.0.0.1/32 in security.allowed_ips overlaps 127.0.0.1/32 in security.trusted_proxies");
    let quiet = env.run(&["check"]);
    quiet.code(0);
    for new_kind in [
        "names no key",
        "unencrypted",
        "one-click",
        "IPv4-mapped",
        "overlaps",
    ] {
        assert!(!quiet.stdout.contains(new_kind), "{}", quiet.stdout);
    }
}

#[test]
fn check_refuses_every_config_problem_at_once() {
    let env = Env::new();
    let good = std::fs::read_to_string(env.path("config.toml")).unwrap();
    let bad = good.replace("[server]\n", "[server]\nlisten_addr = \"x\"\n")
        + "[retry]\nmax_age = \"soon\"\n";
    std::fs::write(env.path("config.toml"), bad).unwrap();
    env.run_with(
        &["check"],
        &[(
            "ESIM_NOTIFY_NOTIFY__DATA_USAGE__THRESHOLDS",
            "[0.5, 0.2, 0.5]",
        )],
    )
    .code(1)
    .says("server.listen_addr: unknown key")
    .says("retry.max_age: `soon` is not a duration")
    .says("notify.data_usage.thresholds[2]: 0.5 is listed twice");

    std::fs::write(env.path("config.toml"), good.replace("[store]", "[store")).unwrap();
    let lines_before = good[..good.find("[store]").unwrap()].matches('\n').count();
    env.run(&["check"])
        .code(1)
        .says(&format!("line {}, column 7: TOML syntax", lines_before + 1));

    // A token of spaces is no token: refused off loopback like an empty one.
    std::fs::write(env.path("config.toml"), &good).unwrap();
    env.run_with(
        &["check"],
        &[
            ("ESIM_NOTIFY_ADMIN__LISTEN", "0.0.0.0:0"),
            ("ESIM_NOTIFY_ADMIN__TOKEN", "   "),
        ],
    )
    .code(1)
    .says("admin.token: required when admin.listen");
}

/// An admin token of `007` from the environment is `007` (not 7), and a
/// SIGHUP after the webhook token changed says it needs a restart.
#[test]
fn env_secrets_stay_as_written_and_sighup_notices_a_changed_secret() {
    use std::io::BufRead;
    let env = Env::new();
    let mut child = env
        .command(&["serve"])
        .env("ESIM_NOTIFY_ADMIN__TOKEN", "007")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let server = Server { child };
    wait_for_admin(env.admin_port);
    let admin = |token: &str| {
        reqwest::blocking::Client::new()
            .get(format!(
                "http://127.0.0.1:{}/admin/customers?iccid=77",
                env.admin_port
            ))
            .bearer_auth(token)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(admin("7"), 401);
    assert_eq!(admin("007"), 404);

    let config = std::fs::read_to_string(env.path("config.toml")).unwrap();
    std::fs::write(
        env.path("config.toml"),
        config + "[security]\nwebhook_token = \"new-hook-secret\"\n",
    )
    .unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(30)) {
        let done = line.contains("configuration and templates reloaded");
        seen.push(line);
        if done {
            break;
        }
    }
    let all = seen.join("\n");
    assert!(
        all.contains("security.webhook_token changed: it takes effect after a restart"),
        "{all}"
    );
    assert!(!all.contains("new-hook-secret"), "{all}");
    server.stop();
}

/// The README's `render` example names a shipped file, and every shipped
/// sample body (one per notifyType) prints the email it names, whatever
/// today's date and without a provider access code: render counts from the
/// body's `eventGenerateTime` and shows the install email with sample data.
#[test]
fn the_shipped_webhook_samples_render() {
    let env = Env::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("render examples/webhooks/data_usage.json"));
    let dir = root.join("examples/webhooks");
    // What each sample is there to show.
    let expected = [
        ("check_health.json", "CHECK_HEALTH", None),
        ("data_usage.json", "DATA_USAGE", Some("data_usage")),
        ("esim_status.json", "ESIM_STATUS", Some("esim_activated")),
        ("order_status.json", "ORDER_STATUS", Some("esim_ready")),
        (
            "validity_usage.json",
            "VALIDITY_USAGE",
            Some("validity_usage"),
        ),
    ];
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        expected.iter().map(|e| e.0).collect::<Vec<_>>(),
        "a new sample needs its expected email here"
    );
    for (file, notify_type, template) in expected {
        let path = dir.join(file);
        let body: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(body["notifyType"], notify_type, "{file}");
        let run = env.run(&["render", path.to_str().unwrap()]);
        run.code(0);
        match template {
            Some(t) => {
                run.says(&format!("Template: {t}\n"))
                    .says("Subject: ")
                    .says("as of the body's eventGenerateTime");
                assert!(
                    !run.stdout.contains("sends no email"),
                    "{file}: {}",
                    run.stdout
                );
            }
            None => {
                run.says("This delivery sends no email");
            }
        }
    }
    env.run(&["render", dir.join("order_status.json").to_str().unwrap()])
        .says("provider.access_code is empty")
        .says("SAMPLE data");
    env.run(&["render", dir.join("data_usage.json").to_str().unwrap()])
        .code(0)
        .says("Subject: 10% or less of your data left");
}

/// The README's advice for a bounced address (issue 18): fix the address
/// with `customers add`, then `dead retry`. The retry goes to the address
/// bound now; the old one stays suppressed as bounced; `customers add` says
/// which identifier it took from which address.
#[test]
fn a_bounced_address_corrected_with_customers_add_is_where_dead_retry_sends() {
    let env = Env::new();
    let (port, smtp) = crate::smtp::mailin_server();
    env.use_smtp(port);
    env.add_customer("ana@typo.example", "T1");
    let server = env.serve();
    smtp.lock()
        .unwrap()
        .rcpt
        .push_back((550, "5.1.1 <ana@typo.example>: user unknown"));
    assert_eq!(
        env.webhook(&crate::helpers::data_usage("n1", "T1", "8901", 10 * GB, GB)),
        200
    );
    let id = env.wait_dead(1)[0];

    env.run(&[
        "customers",
        "add",
        "--email",
        "ana@example.com",
        "--esim-tran-no",
        "T1",
    ])
    .code(0)
    .says("esimTranNo T1 was bound to a***@typo.example");
    env.run(&["dead", "retry", &id.to_string()]).code(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while smtp.received().is_empty() {
        assert!(Instant::now() < deadline, "the retry was not delivered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = smtp.received().remove(0);
    assert!(sent.contains("ana@example.com"), "{sent}");
    assert!(!sent.contains("typo.example"), "{sent}");
    let tried = smtp.lock().unwrap().rcpt_to.clone();
    assert_eq!(
        tried.last().map(|t| t.contains("ana@example.com")),
        Some(true),
        "{tried:?}"
    );
    // The mailbox that does not exist stays suppressed.
    env.run(&["suppress", "list"])
        .code(0)
        .says("ana@typo.example")
        .says("bounced");
    // An import says it per row; the same address again is no replacement.
    std::fs::write(
        env.path("rebind.csv"),
        "email,esimTranNo\nana@example.com,T1\nbea@example.com,T1\n",
    )
    .unwrap();
    let import = env.run(&["customers", "import", "rebind.csv"]);
    import
        .code(0)
        .says("line 3: replaced: esimTranNo T1 was bound to a***@example.com");
    assert!(
        !import.stdout.contains("line 2: replaced"),
        "{}",
        import.stdout
    );
    server.stop();
}

/// A validity warning is decided and worded as of its body's time: a body
/// from ten years ahead, or one long past, still shows "1 day left".
#[test]
fn render_counts_from_the_bodys_event_time() {
    let env = Env::new();
    for year in [2016, 2036] {
        let body = format!(
            r#"{{"notifyType":"VALIDITY_USAGE","notifyId":"v{year}","eventGenerateTime":"{year}-04-22T17:13:54Z","content":{{"esimTranNo":"26032416140018","remain":1,"totalDuration":30,"durationUnit":"DAY","expiredTime":"{year}-04-23T17:13:19Z"}}}}"#
        );
        std::fs::write(env.path("v.json"), body).unwrap();
        env.run(&["render", "v.json"])
            .code(0)
            .says("Template: validity_usage")
            .says(&format!("eventGenerateTime {year}-04-22T17:13:54Z"));
    }
}

/// Polls `http://{host}:{port}/healthz` until it answers 200.
fn wait_for_healthz(host: &str, port: u16) {
    let url = format!("http://{host}:{port}/healthz");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::blocking::get(&url)
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        assert!(Instant::now() < deadline, "{url} did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Both listeners may be named by host (`localhost:PORT`, as the README's
/// commands say), the CLI reaches the admin listener by that name, and two
/// listeners on one port are refused by `check` and `serve` naming both keys
/// (not left to fail at bind as if another program held the port).
#[test]
fn listeners_take_host_names_and_refuse_one_port_for_both() {
    let env = Env::new();
    let cfg = env.path("config.toml");
    let original = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, original.replace("\"127.0.0.1:", "\"localhost:")).unwrap();
    env.run(&["check"]).code(0);
    let child = env
        .command(&["serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    let server = Server { child };
    wait_for_healthz("localhost", env.admin_port);
    wait_for_healthz("localhost", env.public_port);
    // Through the running server's admin listener, found by its host name.
    env.run(&["pause"]).code(0);
    env.run(&["resume"]).code(0);
    server.stop();

    let same = original.replace(
        &format!("\"127.0.0.1:{}\"", env.admin_port),
        &format!("\"localhost:{}\"", env.public_port),
    );
    std::fs::write(&cfg, same).unwrap();
    let port = env.public_port.to_string();
    env.run(&["check"])
        .code(1)
        .says("server.listen (127.0.0.1:")
        .says("admin.listen (localhost:")
        .says(&format!("both on port {port}"));
    let serve = env.run(&["serve"]);
    assert_ne!(serve.code, 0, "serve started on one port twice");
    serve.says(&format!("both on port {port}"));
}

/// `customers add` and `customers import` refuse what `PUT /admin/customers`
/// refuses, with the same reason (import: with the row's line), and split a
/// `Name <address>` as shops export it.
#[test]
fn the_cli_and_import_refuse_what_the_admin_api_refuses() {
    let env = Env::new();
    let add = |extra: &[&str]| {
        let mut args = vec!["customers", "add"];
        args.extend_from_slice(extra);
        env.run(&args)
    };
    add(&["--email", "a@example.com", "--iccid", "abc"])
        .code(2)
        .says("iccid `abc`: an ICCID is 18 to 22 digits");
    add(&[
        "--email",
        "a@example.com",
        "--esim-tran-no",
        "T1",
        "--locale",
        "english",
    ])
    .code(2)
    .says("locale `english`: not a language tag");
    add(&[
        "--email",
        "a@example.com",
        "--esim-tran-no",
        "T1",
        "--locale",
        "xx-YY",
    ])
    .code(2)
    .says("not a language CLDR knows");
    add(&["--email", "x@y", "--esim-tran-no", "T1"])
        .code(2)
        .says("has no dot");
    add(&[
        "--email",
        "Ana López <ana@example.com>",
        "--esim-tran-no",
        "T1",
        "--locale",
        "es-419",
    ])
    .code(0);
    env.run(&["customers", "get", "--esim-tran-no", "T1"])
        .code(0)
        .says("email:    ana@example.com")
        .says("name:     Ana López")
        .says("locale:   es-419");

    std::fs::write(
        env.path("shop.csv"),
        "email,locale,iccid\n\
         bad-iccid@example.com,en,abc\n\
         bad-locale@example.com,english,890000000000000003\n\
         x@y,en,890000000000000004\n\
         \"Bob Pérez <bob@example.com>\",pt-BR,0089000000000000005\n",
    )
    .unwrap();
    env.run(&["customers", "import", "shop.csv"])
        .code(1)
        .says("line 2: rejected: iccid `abc`: an ICCID is 18 to 22 digits")
        .says("line 3: rejected: locale `english`")
        .says("line 4: rejected: `x@y` cannot be sent to: the domain `y` has no dot")
        .says("imported 1, rejected 3");
    env.run(&["customers", "get", "--iccid", "0089000000000000005"])
        .code(0)
        .says("email:    bob@example.com")
        .says("name:     Bob Pérez")
        .says("locale:   pt-BR");
}

/// `check` names the key meant for a misspelt one, in the file and in the
/// environment.
#[test]
fn check_suggests_the_key_meant() {
    let env = Env::new();
    env.run_with(
        &["check"],
        &[("ESIM_NOTIFY_RATE_LIMIT__PER_RECIPIENT_PER_HR", "3")],
    )
    .code(0)
    .says("did you mean ESIM_NOTIFY_RATE_LIMIT__PER_RECIPIENT_PER_HOUR?");
    let cfg = env.path("config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text + "[rate_limit]\nper_recipient_per_hr = 3\n").unwrap();
    env.run(&["check"])
        .code(1)
        .says("rate_limit.per_recipient_per_hr: unknown key; did you mean rate_limit.per_recipient_per_hour?");
}

/// A `;`-separated file, as spreadsheets in Europe export CSV, with a UTF-8
/// BOM and Windows line ends, imports as a `,`-separated one; so does a
/// tab-separated one.
#[test]
fn import_takes_semicolon_and_tab_separated_files_with_a_bom() {
    let env = Env::new();
    std::fs::write(
        env.path("excel.csv"),
        "\u{feff}email;name;locale;esimTranNo\r\n\
         ana@example.com;\"López; Ana\";es-ES;S1\r\n\
         bob@example.com;Bob;pt-BR;S2\r\n\
         nope;Carla;en;S3\r\n",
    )
    .unwrap();
    env.run(&["customers", "import", "excel.csv"])
        .code(1)
        .says("line 4: rejected: `nope` is not an email address")
        .says("imported 2, rejected 1");
    env.run(&["customers", "get", "--esim-tran-no", "S1"])
        .code(0)
        .says("email:    ana@example.com")
        .says("name:     López; Ana")
        .says("locale:   es-ES");
    env.run(&["customers", "get", "--esim-tran-no", "S2"])
        .code(0)
        .says("bob@example.com");

    std::fs::write(
        env.path("tabs.tsv"),
        "email\torderNo\nfay@example.com\tB7\n",
    )
    .unwrap();
    env.run(&["customers", "import", "tabs.tsv"])
        .code(0)
        .says("imported 1, rejected 0");
    env.run(&["customers", "get", "--order-no", "B7"])
        .code(0)
        .says("fay@example.com");
}

/// On PostgreSQL no lock says a server runs: the CLI works on the database
/// directly when no server answers on `admin.listen`, and goes through the
/// running server when one does (its in-memory queue must see changes),
/// which a server with another admin token proves by refusing.
#[test]
fn on_postgres_the_cli_works_directly_and_through_a_running_server() {
    let env = Env::new();
    let config = std::fs::read_to_string(env.path("config.toml")).unwrap();
    // On a postgres run the Env's config names a database already.
    let (_db, on_pg) = if crate::helpers::on_postgres() {
        (None, config)
    } else {
        let Some(db) = crate::pg::test_db() else {
            return;
        };
        let on_pg = config.replace(
            "[store]\n",
            &format!(
                "[store]\nbackend = \"postgres\"\nurl = {:?}\npool = 2\n",
                db.url
            ),
        );
        (Some(db), on_pg)
    };
    std::fs::write(env.path("config.toml"), &on_pg).unwrap();
    customer_round_trip(&env);
    env.add_customer("c@example.com", "PG-T1");
    assert!(!env.path("data").exists(), "nothing was written to sled");

    let server = env.serve();
    // The server reads what the CLI wrote to the database before it ran.
    assert_eq!(env.admin_get("/admin/customers?esimTranNo=PG-T1"), 200);
    customer_round_trip(&env);
    std::fs::write(
        env.path("config.toml"),
        on_pg.replace(ADMIN_TOKEN, "not-the-token"),
    )
    .unwrap();
    env.run(&["customers", "get", "--esim-tran-no", "PG-T1"])
        .code(1)
        .says("admin token");
    std::fs::write(env.path("config.toml"), &on_pg).unwrap();
    server.stop();
    env.run(&["customers", "get", "--esim-tran-no", "PG-T1"])
        .code(0)
        .says("c@example.com");
}
