//! The PostgreSQL harness, and the vault's PostgreSQL engine (settings, verified TLS,
//! the pool, the schema) against a real server the harness starts. Not yet through
//! the binary: the engine is not behind the store's seam yet.

use crate::util::TestPki;
use crate::util::postgres::PgServer;
use panvault_vault::store::pg::{self, PgError, PgPool, PgSettings, schema};

fn settings(url: &str) -> PgSettings {
    PgSettings::from_url(url).unwrap()
}

/// Every way the settings or an error could show the password.
fn assert_no_password(pg: &PgServer, texts: &[String]) {
    for t in texts {
        assert!(!t.contains(pg.password()), "password printed: {t}");
    }
}

#[test]
fn harness_starts_stops_and_restarts_postgres() {
    let Some(mut pg) = PgServer::start("harness_starts_stops_and_restarts_postgres") else {
        return;
    };
    let port = pg.port();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    pg.restart();
    assert_eq!(pg.port(), port);
    let mut c = pg::connect(&settings(&pg.url("disable"))).unwrap();
    c.batch_execute("SELECT 1").unwrap();
    drop(c);
    // The unix socket too (no TLS there; the harness trusts local connections).
    let socket = format!(
        "postgres://panvault@:{port}/postgres?host={}",
        pg.socket_dir().display()
    );
    let mut c = pg::connect(&settings(&socket)).unwrap();
    c.batch_execute("SELECT 1").unwrap();
    drop(c);
    pg.stop();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn schema_is_created_reopened_and_a_newer_one_refused() {
    let Some(pg) = PgServer::start("schema_is_created_reopened_and_a_newer_one_refused") else {
        return;
    };
    let s = settings(&pg.url("disable"));
    let mut c = pg::connect(&s).unwrap();
    assert_eq!(schema::version(&mut c).unwrap(), None);
    assert_eq!(schema::migrate(&mut c).unwrap(), schema::latest_version());
    c.batch_execute(
        "INSERT INTO cards (token, tenant, key_version, nonce, ciphertext, fingerprint, brand, bin,
                            last4, exp_month, exp_year, created_at)
         VALUES ('tok_1', 'shop', 1, '\\x00', '\\x00', '\\x00', 'visa', '424242', '4242', 12, 2031, 0)",
    )
    .unwrap();
    drop(c);

    // Re-opened by another connection (another node): nothing to do, nothing lost.
    let mut c = pg::connect(&s).unwrap();
    assert_eq!(schema::migrate(&mut c).unwrap(), schema::latest_version());
    assert_eq!(
        schema::version(&mut c).unwrap(),
        Some(schema::latest_version())
    );
    let n: i64 = c
        .query_one("SELECT count(*) FROM cards", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);

    // A newer build wrote it: refused, and left as it was.
    c.batch_execute("UPDATE panvault_schema SET version = version + 1")
        .unwrap();
    let newer = schema::latest_version() + 1;
    match schema::migrate(&mut c) {
        Err(PgError::SchemaTooNew { found, known }) => {
            assert_eq!((found, known), (newer, schema::latest_version()));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert_eq!(schema::version(&mut c).unwrap(), Some(newer));
}

#[test]
fn nodes_starting_at_once_create_the_schema_once() {
    let Some(pg) = PgServer::start("nodes_starting_at_once_create_the_schema_once") else {
        return;
    };
    let url = pg.url("disable");
    let nodes: Vec<_> = (0..4)
        .map(|_| {
            let s = settings(&url);
            std::thread::spawn(move || schema::migrate(&mut pg::connect(&s).unwrap()).unwrap())
        })
        .collect();
    for n in nodes {
        assert_eq!(n.join().unwrap(), schema::latest_version());
    }
}

#[test]
fn a_database_with_foreign_tables_is_refused() {
    let Some(pg) = PgServer::start("a_database_with_foreign_tables_is_refused") else {
        return;
    };
    let mut c = pg::connect(&settings(&pg.url("disable"))).unwrap();
    c.batch_execute("CREATE TABLE invoices (id bigint)")
        .unwrap();
    let e = schema::migrate(&mut c).unwrap_err();
    assert!(matches!(e, PgError::Foreign(_)), "{e:?}");
    assert_eq!(schema::version(&mut c).unwrap(), None);
}

#[test]
fn tls_is_verified_against_the_configured_ca() {
    let Some(dir) = tempfile::tempdir().ok() else {
        return;
    };
    let pki = TestPki::new(&dir.path().join("pki"));
    let Some(pg) = PgServer::start_tls("tls_is_verified_against_the_configured_ca", &pki) else {
        return;
    };
    let ca = pki.dir.join("ca.pem");
    let ssl_in_use = |c: &mut pg::PgClient| -> bool {
        c.query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0)
    };

    // verify-full with the right CA: connected, over TLS.
    let url = format!("{}&sslrootcert={}", pg.url("verify-full"), ca.display());
    let mut c = pg::connect(&settings(&url)).unwrap();
    assert!(ssl_in_use(&mut c));
    assert_eq!(schema::migrate(&mut c).unwrap(), schema::latest_version());

    // `require` encrypts without checking; `disable` does not encrypt.
    assert!(ssl_in_use(
        &mut pg::connect(&settings(&pg.url("require"))).unwrap()
    ));
    assert!(!ssl_in_use(
        &mut pg::connect(&settings(&pg.url("disable"))).unwrap()
    ));

    // Another CA: refused, for the certificate, and the password never shows.
    let other = TestPki::new(&dir.path().join("other-pki"));
    let url = format!(
        "{}&sslrootcert={}",
        pg.url("verify-full"),
        other.dir.join("ca.pem").display()
    );
    let s = settings(&url);
    let e = refused(&s);
    let chain = error_chain(&e);
    assert!(
        chain.contains("certificate") || chain.contains("UnknownIssuer"),
        "{chain}"
    );
    assert_no_password(
        &pg,
        &[chain, format!("{e:?}"), s.to_string(), format!("{s:?}")],
    );
}

/// The request path's reads (the asynchronous driver, `pg::reads`) connect as the
/// pool does: verified TLS with the configured CA, refused with another, the
/// password never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_paths_reads_verify_tls_against_the_configured_ca() {
    let Some(dir) = tempfile::tempdir().ok() else {
        return;
    };
    let pki = TestPki::new(&dir.path().join("pki"));
    let Some(pg) = PgServer::start_tls(
        "the_request_paths_reads_verify_tls_against_the_configured_ca",
        &pki,
    ) else {
        return;
    };
    let url = format!(
        "{}&sslrootcert={}",
        pg.url("verify-full"),
        pki.dir.join("ca.pem").display()
    );
    let mut c = tokio::task::block_in_place(|| pg::connect(&settings(&url))).unwrap();
    tokio::task::block_in_place(|| schema::migrate(&mut c)).unwrap();
    let reads = pg::reads::AsyncReads::new(&settings(&url)).unwrap();
    assert_eq!(
        reads.card_by_token("tok_nothing", "shop").await.unwrap(),
        None
    );
    // Every connection of the vault's user but this one: the reads', over TLS.
    let unencrypted: i64 = tokio::task::block_in_place(|| {
        c.query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'panvault' AND NOT s.ssl AND s.pid <> pg_backend_pid()",
            &[],
        )
    })
    .unwrap()
    .get(0);
    let encrypted: i64 = tokio::task::block_in_place(|| {
        c.query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'panvault' AND s.ssl AND s.pid <> pg_backend_pid()",
            &[],
        )
    })
    .unwrap()
    .get(0);
    assert_eq!((encrypted, unencrypted), (1, 0));
    // The synchronous client blocks on its own runtime, also when dropped.
    tokio::task::block_in_place(|| drop(c));

    let other = TestPki::new(&dir.path().join("other-pki"));
    let url = format!(
        "{}&sslrootcert={}",
        pg.url("verify-full"),
        other.dir.join("ca.pem").display()
    );
    let reads = pg::reads::AsyncReads::new(&settings(&url)).unwrap();
    let e = reads
        .card_by_token("tok_nothing", "shop")
        .await
        .unwrap_err();
    let chain = error_chain(&e);
    assert!(
        chain.contains("certificate") || chain.contains("UnknownIssuer"),
        "{chain}"
    );
    assert_no_password(&pg, &[chain, format!("{e:?}")]);
}

#[test]
fn verify_full_against_a_server_without_tls_is_refused() {
    let Some(dir) = tempfile::tempdir().ok() else {
        return;
    };
    let pki = TestPki::new(&dir.path().join("pki"));
    let Some(pg) = PgServer::start("verify_full_against_a_server_without_tls_is_refused") else {
        return;
    };
    let url = format!(
        "{}&sslrootcert={}",
        pg.url("verify-full"),
        pki.dir.join("ca.pem").display()
    );
    let e = refused(&settings(&url));
    assert_no_password(&pg, &[error_chain(&e), format!("{e:?}")]);
}

#[test]
fn a_wrong_password_is_refused_without_printing_either() {
    let Some(pg) = PgServer::start("a_wrong_password_is_refused_without_printing_either") else {
        return;
    };
    let wrong = pg
        .url("disable")
        .replace(pg.password(), "wrong-pw-0123456789");
    let s = settings(&wrong);
    let e = refused(&s);
    assert_eq!(e.sqlstate(), Some("28P01"), "{e}");
    let texts = [
        error_chain(&e),
        format!("{e:?}"),
        s.to_string(),
        format!("{s:?}"),
    ];
    for t in &texts {
        assert!(!t.contains("wrong-pw"), "password printed: {t}");
    }
    let right = settings(&pg.url("disable"));
    assert_no_password(&pg, &[right.to_string(), format!("{right:?}")]);
}

#[test]
fn the_pool_is_bounded_and_reconnects_after_a_database_restart() {
    let Some(mut pg) =
        PgServer::start("the_pool_is_bounded_and_reconnects_after_a_database_restart")
    else {
        return;
    };
    let s = settings(&format!(
        "{}&pool_size=2&connect_timeout=1",
        pg.url("disable")
    ));
    let pool = PgPool::open(&s).unwrap();
    assert_eq!(pool.max_size(), 2);
    let mut a = pool.get().unwrap();
    let b = pool.get().unwrap();
    // Both in use: a third caller is refused after the wait, not queued forever.
    let Err(e) = pool.get() else {
        panic!("expected no connection")
    };
    assert!(matches!(e, PgError::Pool { .. }), "{e:?}");
    let pid: i32 = a.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    drop(b);
    pool.get().unwrap().batch_execute("SELECT 1").unwrap();

    // The database goes away: refused within the wait, the password never shown.
    drop(a);
    pg.stop();
    let Err(e) = pool.get() else {
        panic!("expected no connection")
    };
    assert_no_password(
        &pg,
        &[error_chain(&e), format!("{e:?}"), format!("{pool:?}")],
    );
    // Back: the pool replaces the connections the restart closed.
    pg.restart();
    let mut c = pool.get().unwrap();
    let new_pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    assert_ne!(pid, new_pid);
}

fn refused(s: &PgSettings) -> PgError {
    match pg::connect(s) {
        Ok(_) => panic!("connected, expected a refusal"),
        Err(e) => e,
    }
}

/// The error and all its sources, as a log line with `{:#}`-style chains would show.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
