//! Connections: the URL (checked, shown without its password), TLS with
//! rustls, and a deadpool pool that lives on a small runtime of its own.
//!
//! The [`super::super::Storage`] trait is synchronous and is called both from
//! inside tokio tasks (the dispatcher, HTTP handlers) and from threads with
//! no runtime (the CLI, `spawn_blocking`). `Handle::block_on` panics inside a
//! runtime, so the backend never uses the caller's: it owns a runtime whose
//! threads run the connection tasks and the pool's connects, and callers
//! wait on plain futures with `futures_executor::block_on`. A checked-out
//! client's queries are channel round trips to its connection task, so
//! waiting on them needs no reactor on the caller's thread.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::{Host, SslMode};

/// How long opening a connection may take (a database down at start is
/// reported after this, not after the OS's TCP timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a unit waits for a free connection of the pool.
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// `sslmode`s tokio-postgres does not parse, mapped to what this backend does
/// anyway: rustls always verifies the server's certificate chain (webpki
/// roots) and host name, so `require` here already means `verify-full`.
fn normalise(url: &str) -> String {
    url.replace("sslmode=verify-full", "sslmode=require")
        .replace("sslmode=verify-ca", "sslmode=require")
}

/// A URL as this backend reads it: tokio-postgres's settings, and the CA
/// file of libpq's `sslrootcert` (which tokio-postgres does not parse):
/// managed databases (Amazon RDS, Cloud SQL, Azure) sign their servers'
/// certificates with a CA of their own that no public root list holds.
pub struct Url {
    pub config: tokio_postgres::Config,
    pub root_cert: Option<std::path::PathBuf>,
}

/// Takes `sslrootcert=…` out of a URL (`?…&sslrootcert=/path`) or a
/// key=value string (`… sslrootcert=/path …`).
fn take_root_cert(url: &str) -> (String, Option<String>) {
    if let Some((base, query)) = url.split_once('?') {
        let mut cert = None;
        let kept: Vec<&str> = query
            .split('&')
            .filter(|p| match p.strip_prefix("sslrootcert=") {
                Some(v) => {
                    cert = Some(
                        percent_encoding::percent_decode_str(v)
                            .decode_utf8_lossy()
                            .into_owned(),
                    );
                    false
                }
                None => true,
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, cert);
    }
    let mut cert = None;
    let kept: Vec<&str> = url
        .split_whitespace()
        .filter(|p| match p.strip_prefix("sslrootcert=") {
            Some(v) => {
                cert = Some(v.trim_matches('\'').to_string());
                false
            }
            None => true,
        })
        .collect();
    (kept.join(" "), cert)
}

/// The parsed URL, or why it is not one (without echoing it: it may hold a
/// password).
pub fn parse(url: &str) -> Result<Url, String> {
    let (url, root_cert) = take_root_cert(url);
    let mut config: tokio_postgres::Config = normalise(&url)
        .parse()
        .map_err(|e: tokio_postgres::Error| format!("not a PostgreSQL URL ({e})"))?;
    if config.get_hosts().is_empty() {
        return Err("names no host".into());
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("esim-notify");
    }
    if root_cert.is_some() && matches!(config.get_ssl_mode(), SslMode::Disable | SslMode::Prefer) {
        return Err(
            "sslrootcert is set but sslmode is not require, verify-ca or verify-full: \
                    the certificate would never be checked"
                .into(),
        );
    }
    Ok(Url {
        config,
        root_cert: root_cert.map(std::path::PathBuf::from),
    })
}

/// The URL as it may be logged: user, hosts, ports and database, never the
/// password or the other parameters.
pub fn shown(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            };
            match config.get_ports().get(i).or(config.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let db = config.get_dbname().unwrap_or_default();
    format!("postgres://{user}{}/{db}", hosts.join(","))
}

/// TLS for `sslmode=require`: rustls with ring, the stack the SMTP client
/// already uses; trusting the webpki roots, or only the certificates of
/// `sslrootcert` when it is given (as libpq does).
fn tls(
    root_cert: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let roots = match root_cert {
        None => rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
        Some(path) => {
            let why = |e: &dyn std::fmt::Display| format!("sslrootcert {}: {e}", path.display());
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| why(&e))? {
                roots.add(cert.map_err(|e| why(&e))?).map_err(|e| why(&e))?;
            }
            if roots.is_empty() {
                return Err(why(&"no certificate in the file"));
            }
            roots
        }
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The runtime and the pool on it.
pub struct Connections {
    /// `None` only while dropping (see [`Drop`]).
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
}

impl Connections {
    pub fn new(url: Url, size: usize) -> Result<Connections, String> {
        let Url { config, root_cert } = url;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("store-postgres")
            .enable_all()
            .build()
            .map_err(|e| format!("starting the database runtime: {e}"))?;
        let manager = match config.get_ssl_mode() {
            // `prefer` (libpq's default, and so the URL's when it says
            // nothing) would try TLS and accept any certificate; a verified
            // rustls would then refuse a server's self-signed one (Debian's
            // default). So only `require` means TLS here, always verified.
            SslMode::Disable | SslMode::Prefer => Manager::from_config(
                config,
                tokio_postgres::NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            ),
            _ => Manager::from_config(
                config,
                tls(root_cert.as_deref())?,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            ),
        };
        let pool = Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| format!("building the connection pool: {e}"))?;
        Ok(Connections { rt: Some(rt), pool })
    }

    /// A connection of the pool, from any thread (see the module doc).
    pub fn get(&self) -> Result<Object, String> {
        let pool = self.pool.clone();
        self.on_runtime(async move { pool.get().await.map_err(|e| e.to_string()) })?
    }

    /// Runs `f` on the backend's runtime and waits for it from any thread.
    pub fn on_runtime<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, String> {
        let rt = self.rt.as_ref().ok_or("the database runtime is stopped")?;
        futures_executor::block_on(rt.spawn(f)).map_err(|e| e.to_string())
    }
}

impl Drop for Connections {
    fn drop(&mut self) {
        // Dropping a runtime inside another one's async context panics; the
        // last owner of the storage may be a tokio task.
        self.pool.close();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Waits for a future on the caller's thread (a query on a checked-out
/// client: see the module doc).
pub fn wait<F: std::future::Future>(f: F) -> F::Output {
    futures_executor::block_on(f)
}
