//! TLS to the database (SPEC §10: managed databases need it): `sslmode`
//! `require`/`verify-full` always verify the server's certificate and name
//! with rustls, against the public roots or, with libpq's `sslrootcert`, the
//! database's own CA. On a PostgreSQL of the test's own that accepts TLS
//! connections only (`hostssl` in pg_hba.conf), its certificate signed by a
//! CA the test makes with `openssl`.

use std::path::Path;
use std::process::Command;

use esim_notify::store::PgStorage;

use crate::pg::OwnServer;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a server certificate for 127.0.0.1 it signs; pg_hba.conf
/// refusing every connection without TLS.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=esim-notify test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ],
    );
    std::fs::write(
        dir.join("data/pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
    )
    .unwrap();
    // PostgreSQL refuses a key others can read.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

fn tls_server() -> Option<OwnServer> {
    // Relative paths: PostgreSQL reads them from its data directory, and
    // the certificates lie beside it in the cluster's temp dir.
    OwnServer::start(
        &[
            "ssl=on",
            "ssl_cert_file=../server.crt",
            "ssl_key_file=../server.key",
        ],
        certificates,
    )
}

#[test]
fn tls_to_the_database_is_verified_against_sslrootcert() {
    let Some(pg) = tls_server() else { return };
    let ca = pg.dir.join("ca.crt");

    // The server takes no plain connection: what works below is TLS.
    let plain = PgStorage::open(&pg.url("sslmode=disable"), 1).err();
    assert!(
        plain.is_some(),
        "pg_hba.conf refuses a connection without TLS"
    );

    // Its CA is in no public root list: refused, naming the URL, never
    // silently unverified.
    let unverified = PgStorage::open(&pg.url("sslmode=require"), 1)
        .err()
        .expect("a certificate from an unknown CA is refused");
    let msg = unverified.to_string();
    assert!(msg.contains("store.url"), "{msg}");

    // With the CA given as libpq spells it: it opens, in both URL forms.
    let url = pg.url(&format!("sslmode=verify-full&sslrootcert={}", ca.display()));
    let s = PgStorage::open(&url, 1).expect("verified with sslrootcert");
    drop(s);
    let kv = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=require sslrootcert={}",
        pg.port,
        ca.display()
    );
    drop(PgStorage::open(&kv, 1).expect("the key=value form too"));

    // A CA file that is not there is a clear error.
    let missing = PgStorage::open(
        &pg.url("sslmode=require&sslrootcert=/nonexistent/ca.pem"),
        1,
    )
    .err()
    .expect("a missing CA file is refused");
    assert!(missing.to_string().contains("sslrootcert"), "{missing}");

    // sslrootcert with TLS off would never be checked: refused.
    let off = PgStorage::open(
        &pg.url(&format!("sslmode=disable&sslrootcert={}", ca.display())),
        1,
    )
    .err()
    .expect("sslrootcert without TLS is refused");
    assert!(off.to_string().contains("sslrootcert"), "{off}");
}
