//! The PostgreSQL harness itself, and the vault's PostgreSQL engine against a real server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use panvault_tests::postgres::PgServer;

#[test]
fn harness_starts_stops_and_restarts_postgres() {
    let Some(mut pg) = PgServer::start("harness_starts_stops_and_restarts_postgres") else {
        return;
    };
    let port = pg.port();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    pg.restart();
    assert_eq!(pg.port(), port);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    pg.stop();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
