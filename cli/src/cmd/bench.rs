//! `panvault bench`: a load generator for a running server. Opens N keep-alive mTLS
//! connections (HTTP/1.1) and runs tokenize, detokenize, an alternation of the two,
//! or a storefront's mixed traffic for a duration, each connection one request at a
//! time; prints requests/s and latency percentiles per operation, and the errors.
//! Every card is a random Luhn-valid test number.
//!
//! ```text
//! panvault bench --config DIR/panvault.toml --client storefront --op tokenize \
//!     --connections 64 --duration 10s [--preload 1000000]
//! ```
//!
//! One file on purpose (about 850 lines): it is a developer's measuring tool, read
//! top to bottom as one program (arguments, workers, the rewrap run beside them,
//! the report), and none of it is library API.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use panvault_vault::config::{Config, Permission};
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::common::{CliError, parse_duration};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Op {
    /// `POST /v1/tokens` with a fresh card each time.
    Tokenize,
    /// `POST /v1/tokens/{token}/detokenize` of tokens made beforehand.
    Detokenize,
    /// Alternately one and the other.
    Mix,
    /// A storefront's traffic, for soak runs: half the connections act as
    /// --preload-client (tokenize cards of a pool of returning customers, so most
    /// are answered by dedup; 10 % deletes of its own tokens, which the pool then
    /// tokenizes anew; 10 % metadata reads), half as --client (80 % detokenize,
    /// 20 % metadata reads). The number of stored cards stays about constant.
    Mixed,
}

/// The operations a run reports on, in report order.
const KINDS: [&str; 4] = ["tokenize", "detokenize", "read", "delete"];

/// Index into [`KINDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tokenize = 0,
    Detokenize = 1,
    Read = 2,
    Delete = 3,
}

/// Cards in each storefront connection's pool of returning customers (`--op mixed`).
const POOL: usize = 64;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's configuration (for its address and the PKI paths).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The client (a `[[clients]]` name) to act as; its certificate is
    /// `<dir of tls.client_ca>/<name>.pem` and `.key` unless --cert/--key say otherwise.
    #[arg(long, value_name = "NAME")]
    pub client: String,
    /// The operation.
    #[arg(long, value_enum, default_value = "tokenize")]
    pub op: Op,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// How long to measure (e.g. 10s, 500ms, 1m); 0s with --preload only preloads.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before measuring (not counted).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// First tokenize this many cards through the batch endpoint.
    #[arg(long, default_value_t = 0)]
    pub preload: u64,
    /// Cards per batch request of --preload (1 to 1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub preload_batch: u64,
    /// Where to keep tokens between runs: --preload writes a sample (up to 100,000,
    /// spread over all it made) here; a detokenize run without --preload reads it.
    #[arg(long, value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,
    /// The client that tokenizes (preload, and the tokens detokenize uses) if not
    /// --client; must be in the same tenant.
    #[arg(long, value_name = "NAME")]
    pub preload_client: Option<String>,
    /// Client certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// CA that signed the server's certificate [default: tls.client_ca].
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Server address [default: the configuration's listen address]. Repeat it
    /// to spread the connections over several nodes (round robin).
    #[arg(long, value_name = "ADDR")]
    pub addr: Vec<SocketAddr>,
    /// Threads of the load generator (the server on the same machine needs the
    /// rest).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Name to verify the server certificate against.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// Measure twice: idle, then while `panvault keys rewrap` (full speed, in its own
    /// process, after a `keys rotate`) re-encrypts the whole store of the
    /// configuration's data directory; reports both. The passphrase comes from
    /// --passphrase-file or PANVAULT_PASSPHRASE.
    #[arg(long)]
    pub during_rewrap: bool,
    /// The vault's passphrase file, for --during-rewrap.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// An extra argument for `keys rewrap` (repeat; e.g. `--rewrap-arg=--batch=500`).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub rewrap_arg: Vec<String>,
}

/// A client identity's TLS setup.
struct Target {
    /// The nodes; each new connection goes to the next one.
    addrs: Vec<SocketAddr>,
    next_addr: AtomicUsize,
    server_name: ServerName<'static>,
    connector: TlsConnector,
}

fn target_for(args: &Args, config: &Config, client: &str) -> Result<Target, CliError> {
    let pki_dir = config
        .tls
        .client_ca
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let (cert, key) = if client == args.client && args.cert.is_some() {
        let cert = args.cert.clone().unwrap_or_default();
        let key = args
            .key
            .clone()
            .ok_or_else(|| CliError::usage("--cert needs --key"))?;
        (cert, key)
    } else {
        panvault_vault::DataDir::pki_pair(&pki_dir, client)
    };
    let ca = args
        .ca
        .clone()
        .unwrap_or_else(|| config.tls.client_ca.clone());
    let e = |e: panvault_vault::config::ConfigError| CliError::usage(e.to_string());
    let roots = panvault_vault::tls::load_certs("--ca", &ca).map_err(e)?;
    let chain = panvault_vault::tls::load_certs("client certificate", &cert).map_err(e)?;
    let key = panvault_vault::tls::load_key("client key", &key).map_err(e)?;
    let tls = panvault_vault::tls::client_config(roots, chain, key, &[b"http/1.1"])
        .map_err(|e| CliError::usage(format!("TLS client: {e}")))?;
    let addrs = if args.addr.is_empty() {
        let mut addr = config.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::IpAddr::from([127, 0, 0, 1]));
        }
        vec![addr]
    } else {
        args.addr.clone()
    };
    if addrs.iter().any(|a| a.port() == 0) {
        return Err(CliError::usage(
            "the configuration listens on port 0; give the real address with --addr",
        ));
    }
    let server_name = ServerName::try_from(args.server_name.clone())
        .map_err(|e| CliError::usage(format!("--server-name: {e}")))?;
    Ok(Target {
        addrs,
        next_addr: AtomicUsize::new(0),
        server_name,
        connector: TlsConnector::from(tls),
    })
}

type Conn = SendRequest<Full<Bytes>>;

async fn connect(t: &Target) -> Result<Conn, String> {
    let n = t.next_addr.fetch_add(1, Ordering::Relaxed);
    let addr = t
        .addrs
        .get(n.checked_rem(t.addrs.len()).unwrap_or(0))
        .copied()
        .ok_or("no server address")?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let tls = t
        .connector
        .connect(t.server_name.clone(), tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// Sends one request; returns the status and body.
async fn send(
    conn: &mut Conn,
    host: &str,
    method: &str,
    path: &str,
    body: String,
) -> Result<(u16, Bytes), String> {
    conn.ready().await.map_err(|e| e.to_string())?;
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = conn.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// xorshift64*: test cards, not secrets.
struct Rng(u64);

impl Rng {
    fn seeded(salt: u64) -> Self {
        let mut b = [0u8; 8];
        let _ = panvault_vault::core::rng::fill(&mut b);
        Rng(u64::from_le_bytes(b) ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A random 16-digit Luhn-valid number starting with 4 (a test card).
    fn card(&mut self) -> String {
        panvault_audit::card::testing::card(self.next())
    }
}

fn tokenize_body(card: &str, year: i32) -> String {
    format!("{{\"card\":{{\"number\":\"{card}\",\"exp_month\":12,\"exp_year\":{year}}}}}")
}

/// Most tokens kept for detokenize.
const SAMPLE: u64 = 100_000;

/// Tokenizes `n` cards through the batch endpoint over `conns`; keeps a sample of
/// the tokens spread over all of them.
async fn preload(
    target: Arc<Target>,
    conns: usize,
    n: u64,
    batch: u64,
    year: i32,
) -> Result<Vec<String>, CliError> {
    let next = Arc::new(AtomicU64::new(0));
    let stride = (n / SAMPLE).max(1);
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for c in 0..conns.clamp(1, 16) {
        let (target, next) = (Arc::clone(&target), Arc::clone(&next));
        set.spawn(async move {
            let mut conn = connect(&target).await?;
            let mut rng = Rng::seeded(c as u64 + 1000);
            let mut tokens = Vec::new();
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= n {
                    return Ok::<_, String>(tokens);
                }
                let k = batch.min(n - first);
                let items: Vec<String> = (0..k).map(|_| tokenize_body(&rng.card(), year)).collect();
                let body = format!("{{\"items\":[{}]}}", items.join(","));
                let (status, body) =
                    send(&mut conn, "localhost", "POST", "/v1/tokens/batch", body).await?;
                if status != 200 {
                    return Err(format!(
                        "batch answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    ));
                }
                let v: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|e| e.to_string())?;
                let results = v
                    .get("results")
                    .and_then(|r| r.as_array())
                    .cloned()
                    .unwrap_or_default();
                for (i, r) in (first..).zip(results.iter()) {
                    if i % stride == 0 {
                        tokens.extend(r.get("token").and_then(|t| t.as_str()).map(str::to_owned));
                    }
                }
                let done = first + k;
                if done.is_multiple_of(100_000) {
                    eprintln!(
                        "  preloaded {done} ({:.0}/s)",
                        done as f64 / start.elapsed().as_secs_f64()
                    );
                }
            }
        });
    }
    let mut tokens = Vec::new();
    while let Some(r) = set.join_next().await {
        let r = r.map_err(|e| CliError::usage(format!("preload task: {e}")))?;
        tokens.extend(r.map_err(|e| CliError::usage(format!("preload: {e}")))?);
    }
    eprintln!(
        "preloaded {n} cards in {:.1}s ({:.0}/s)",
        start.elapsed().as_secs_f64(),
        n as f64 / start.elapsed().as_secs_f64()
    );
    Ok(tokens)
}

#[derive(Default)]
struct Tally {
    /// Latencies in µs, by [`Kind`].
    lat: [Vec<u32>; 4],
    /// Error statuses (0: transport error).
    errors: std::collections::BTreeMap<u16, u64>,
    first_error: Option<String>,
}

/// What a worker's connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `--op tokenize|detokenize|mix`.
    Plain(Op),
    /// `--op mixed`, as the storefront (the tokenizing client).
    Storefront,
    /// `--op mixed`, as the payment service (`--client`).
    Payments,
}

/// One worker's traffic: the next request of `role`, as (kind, method, path, body).
struct Traffic {
    role: Role,
    rng: Rng,
    i: usize,
    year: i32,
    tokens: Arc<Vec<String>>,
    /// The storefront's returning customers, and their tokens once made.
    pool: Vec<(String, Option<String>)>,
}

impl Traffic {
    fn new(role: Role, id: usize, year: i32, tokens: Arc<Vec<String>>) -> Traffic {
        let mut rng = Rng::seeded(id as u64);
        let pool = if role == Role::Storefront {
            (0..POOL).map(|_| (rng.card(), None)).collect()
        } else {
            Vec::new()
        };
        Traffic {
            role,
            rng,
            i: id,
            year,
            tokens,
            pool,
        }
    }

    fn shared_token(&mut self) -> String {
        let n = self.tokens.len().max(1) as u64;
        self.tokens
            .get(usize::try_from(self.rng.next() % n).unwrap_or(0))
            .map_or_else(|| "tok_none".to_owned(), String::clone)
    }

    fn next(&mut self) -> (Kind, &'static str, String, String) {
        self.i += 1;
        let slot = self.i % 10;
        let kind = match self.role {
            Role::Plain(Op::Detokenize) => Kind::Detokenize,
            Role::Plain(Op::Mix) if self.i.is_multiple_of(2) => Kind::Detokenize,
            Role::Plain(_) => Kind::Tokenize,
            Role::Payments if slot < 8 => Kind::Detokenize,
            Role::Payments => Kind::Read,
            Role::Storefront if slot < 8 => Kind::Tokenize,
            Role::Storefront if slot == 8 => Kind::Delete,
            Role::Storefront => Kind::Read,
        };
        let pick = usize::try_from(self.rng.next() % POOL as u64).unwrap_or(0);
        match kind {
            Kind::Tokenize => {
                let card = match self.pool.get(pick) {
                    Some((card, _)) => card.clone(),
                    None => self.rng.card(),
                };
                let body = tokenize_body(&card, self.year);
                (kind, "POST", "/v1/tokens".into(), body)
            }
            Kind::Detokenize => {
                let tok = self.shared_token();
                let path = format!("/v1/tokens/{tok}/detokenize");
                (
                    kind,
                    "POST",
                    path,
                    "{\"purpose\":\"panvault bench\"}".into(),
                )
            }
            Kind::Read => {
                let own = self.pool.get(pick).and_then(|(_, t)| t.clone());
                let tok = own.unwrap_or_else(|| self.shared_token());
                (kind, "GET", format!("/v1/tokens/{tok}"), String::new())
            }
            Kind::Delete => {
                // One of our own tokens (forgotten now: its card is tokenized anew
                // later); a read of a shared token if we have none yet.
                match self.pool.get_mut(pick).and_then(|(_, t)| t.take()) {
                    Some(tok) => (kind, "DELETE", format!("/v1/tokens/{tok}"), String::new()),
                    None => {
                        let tok = self.shared_token();
                        (
                            Kind::Read,
                            "GET",
                            format!("/v1/tokens/{tok}"),
                            String::new(),
                        )
                    }
                }
            }
        }
    }

    /// Remembers the token a storefront's tokenize returned for its pool card.
    fn learn(&mut self, body: &[u8]) {
        if self.role != Role::Storefront {
            return;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return;
        };
        let (Some(token), Some(last4)) = (
            v.get("token").and_then(|t| t.as_str()),
            v.pointer("/card/last4").and_then(|t| t.as_str()),
        ) else {
            return;
        };
        let bin = v
            .pointer("/card/bin")
            .and_then(|t| t.as_str())
            .unwrap_or("");
        if let Some((_, slot)) = self
            .pool
            .iter_mut()
            .find(|(card, _)| card.starts_with(bin) && card.ends_with(last4))
        {
            *slot = Some(token.to_owned());
        }
    }
}

async fn worker(
    target: Arc<Target>,
    mut traffic: Traffic,
    warm_until: Instant,
    end: Instant,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    let mut conn = None;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        let c = match &mut conn {
            Some(c) => c,
            None => match connect(&target).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    *tally.errors.entry(0).or_default() += 1;
                    tally.first_error.get_or_insert(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (kind, method, path, body) = traffic.next();
        let t0 = Instant::now();
        let result = send(c, "localhost", method, &path, body).await;
        let us = u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX);
        let expected = |status: u16| match kind {
            Kind::Tokenize => status == 200 || status == 201,
            Kind::Delete => status == 204,
            Kind::Detokenize | Kind::Read => status == 200,
        };
        match result {
            Ok((status, body)) if expected(status) => {
                if kind == Kind::Tokenize {
                    traffic.learn(&body);
                }
                if let Some(lat) = tally
                    .lat
                    .get_mut(kind as usize)
                    .filter(|_| t0 >= warm_until)
                {
                    lat.push(us);
                }
            }
            Ok((status, body)) => {
                *tally.errors.entry(status).or_default() += 1;
                tally
                    .first_error
                    .get_or_insert_with(|| format!("{status}: {}", String::from_utf8_lossy(&body)));
            }
            Err(e) => {
                *tally.errors.entry(0).or_default() += 1;
                tally.first_error.get_or_insert(e);
                conn = None;
            }
        }
    }
    tally
}

/// The `per_mille`/1000 quantile of `sorted` latencies (µs), in milliseconds.
fn percentile(sorted: &[u32], per_mille: usize) -> f64 {
    let rank = per_mille.saturating_mul(sorted.len()).div_ceil(1000);
    f64::from(
        sorted
            .get(rank.saturating_sub(1))
            .or(sorted.last())
            .copied()
            .unwrap_or(0),
    ) / 1000.0
}

fn report(name: &str, mut lat: Vec<u32>, secs: f64) {
    if lat.is_empty() {
        return;
    }
    lat.sort_unstable();
    println!(
        "{name:<11} {:>9} ok  {:>9.0} req/s  p50 {:>6.2} ms  p90 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms",
        lat.len(),
        lat.len() as f64 / secs,
        percentile(&lat, 500),
        percentile(&lat, 900),
        percentile(&lat, 990),
        percentile(&lat, 1000)
    );
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    let config = Config::load(&args.config)
        .map_err(|e| CliError::usage(format!("{}: {e}", args.config.display())))?;
    let client = config.client(&args.client).ok_or_else(|| {
        CliError::usage(format!(
            "--client: no client named {:?} in the configuration",
            args.client
        ))
    })?;
    let preload_name = args
        .preload_client
        .clone()
        .unwrap_or_else(|| args.client.clone());
    let preloader = config.client(&preload_name).ok_or_else(|| {
        CliError::usage(format!(
            "--preload-client: no client named {preload_name:?}"
        ))
    })?;
    if preloader.tenant != client.tenant {
        return Err(CliError::usage(format!(
            "--preload-client {preload_name:?} is in tenant {:?}, not {:?}",
            preloader.tenant, client.tenant
        )));
    }
    let needs_tokens = args.op != Op::Tokenize;
    if (args.preload > 0 || needs_tokens) && !preloader.can(Permission::Tokenize) {
        return Err(CliError::usage(format!(
            "client {preload_name:?} may not tokenize; name one that may with --preload-client"
        )));
    }
    // Who needs which permission: (client, name, permission).
    let mut needed = Vec::new();
    match args.op {
        Op::Tokenize => needed.push((client, &args.client, Permission::Tokenize)),
        Op::Detokenize => needed.push((client, &args.client, Permission::Detokenize)),
        Op::Mix => {
            needed.push((client, &args.client, Permission::Tokenize));
            needed.push((client, &args.client, Permission::Detokenize));
        }
        Op::Mixed => {
            needed.push((client, &args.client, Permission::Detokenize));
            needed.push((client, &args.client, Permission::Read));
            needed.push((preloader, &preload_name, Permission::Read));
            needed.push((preloader, &preload_name, Permission::Delete));
        }
    }
    if let Some((_, name, p)) = needed.iter().find(|(c, _, p)| !c.can(*p)) {
        return Err(CliError::usage(format!(
            "client {name:?} may not {}{}",
            p.as_str(),
            if args.op == Op::Mixed {
                " (--op mixed: --client detokenizes and reads, --preload-client tokenizes, reads and deletes)"
            } else {
                ""
            }
        )));
    }
    let target = Arc::new(target_for(&args, &config, &args.client)?);
    let pre_target = Arc::new(target_for(&args, &config, &preload_name)?);
    let conns = args.connections.max(1);
    let year = time::OffsetDateTime::now_utc().year() + 4;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| CliError::usage(e.to_string()))?;
    rt.block_on(async {
        let mut tokens = Vec::new();
        if let Some(f) = args
            .tokens_file
            .as_ref()
            .filter(|f| args.preload == 0 && f.exists())
        {
            let text = std::fs::read_to_string(f)
                .map_err(|e| CliError::usage(format!("{}: {e}", f.display())))?;
            tokens = text.lines().map(str::to_owned).collect();
            eprintln!("read {} tokens from {}", tokens.len(), f.display());
        }
        let preload_n = if needs_tokens && args.preload == 0 && tokens.is_empty() {
            10_000
        } else {
            args.preload
        };
        if preload_n > 0 {
            tokens = preload(
                Arc::clone(&pre_target),
                conns,
                preload_n,
                args.preload_batch,
                year,
            )
            .await?;
            if let Some(f) = &args.tokens_file {
                std::fs::write(f, tokens.join("\n"))
                    .map_err(|e| CliError::usage(format!("{}: {e}", f.display())))?;
            }
        }
        if args.duration.is_zero() {
            return Ok(ExitCode::SUCCESS);
        }
        let tokens = Arc::new(tokens);
        let phase = Phase {
            args: &args,
            conns,
            year,
            target: &target,
            pre_target: &pre_target,
            tokens: &tokens,
        };
        if !args.during_rewrap {
            let (tally, secs) = phase.measure(args.warmup, args.duration, None).await?;
            print_report(&args, &target, tally, secs, args.warmup, "");
            return Ok(ExitCode::SUCCESS);
        }
        let (idle, idle_secs) = phase.measure(args.warmup, args.duration, None).await?;
        print_report(&args, &target, idle, idle_secs, args.warmup, " (idle)");
        admin(&args, &config, &["keys", "rotate"])?;
        // The server reloads its keys within a second; then new cards are sealed
        // under the new key and the rewrap has a fixed amount of work.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let rewrap = {
            let (args_pf, data) = (args.passphrase_file.clone(), config.data_dir.clone());
            let mut cmd: Vec<String> = vec!["keys".into(), "rewrap".into(), "--quiet".into()];
            cmd.extend(args.rewrap_arg.iter().cloned());
            let stop = Arc::clone(&stop);
            tokio::task::spawn_blocking(move || {
                let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
                let out = admin_cmd(args_pf.as_deref(), &data, &cmd).output();
                stop.store(true, Ordering::Relaxed);
                out
            })
        };
        let (busy, busy_secs) = phase
            .measure(Duration::ZERO, Duration::from_secs(24 * 3600), Some(stop))
            .await?;
        let out = rewrap
            .await
            .map_err(|e| CliError::usage(format!("rewrap task: {e}")))?
            .map_err(|e| CliError::usage(format!("cannot run keys rewrap: {e}")))?;
        print_report(
            &args,
            &target,
            busy,
            busy_secs,
            Duration::ZERO,
            " (during keys rewrap)",
        );
        println!(
            "keys rewrap {}: {}{}",
            if out.status.success() {
                "finished"
            } else {
                "FAILED"
            },
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// How to run one measured phase of load.
struct Phase<'a> {
    args: &'a Args,
    conns: usize,
    year: i32,
    target: &'a Arc<Target>,
    pre_target: &'a Arc<Target>,
    tokens: &'a Arc<Vec<String>>,
}

impl Phase<'_> {
    /// Runs the load for `warmup` then `duration` (or until `stop`); returns what the
    /// workers saw and the seconds measured.
    async fn measure(
        &self,
        warmup: Duration,
        duration: Duration,
        stop: Option<Arc<std::sync::atomic::AtomicBool>>,
    ) -> Result<(Tally, f64), CliError> {
        let stop = stop.unwrap_or_default();
        let start = Instant::now();
        let warm_until = start + warmup;
        let end = warm_until + duration;
        let mut set = tokio::task::JoinSet::new();
        for id in 0..self.conns {
            let (role, t) = match self.args.op {
                Op::Mixed if id % 2 == 0 => (Role::Storefront, self.pre_target),
                Op::Mixed => (Role::Payments, self.target),
                op => (Role::Plain(op), self.target),
            };
            let traffic = Traffic::new(role, id, self.year, Arc::clone(self.tokens));
            set.spawn(worker(
                Arc::clone(t),
                traffic,
                warm_until,
                end,
                Arc::clone(&stop),
            ));
        }
        let mut total = Tally::default();
        while let Some(t) = set.join_next().await {
            let t = t.map_err(|e| CliError::usage(format!("worker: {e}")))?;
            for (all, mine) in total.lat.iter_mut().zip(t.lat) {
                all.extend(mine);
            }
            for (k, v) in t.errors {
                *total.errors.entry(k).or_default() += v;
            }
            if total.first_error.is_none() {
                total.first_error = t.first_error;
            }
        }
        let secs = Instant::now()
            .min(end)
            .saturating_duration_since(warm_until)
            .as_secs_f64()
            .max(1e-9);
        Ok((total, secs))
    }
}

fn print_report(
    args: &Args,
    target: &Target,
    total: Tally,
    secs: f64,
    warmup: Duration,
    label: &str,
) {
    println!(
        "panvault bench{label}: {:?} against {} as {:?}, {} connections, {secs:.1}s measured after {:.1}s warm-up",
        args.op,
        target
            .addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        args.client,
        args.connections.max(1),
        warmup.as_secs_f64()
    );
    let all: Vec<u32> = total.lat.iter().flatten().copied().collect();
    let kinds = total.lat.iter().filter(|l| !l.is_empty()).count();
    for (name, lat) in KINDS.iter().zip(total.lat) {
        report(name, lat, secs);
    }
    if kinds > 1 {
        report("all", all, secs);
    }
    let errors: u64 = total.errors.values().sum();
    if errors > 0 {
        let by: Vec<String> = total
            .errors
            .iter()
            .map(|(s, n)| {
                if *s == 0 {
                    format!("transport: {n}")
                } else {
                    format!("{s}: {n}")
                }
            })
            .collect();
        println!("errors      {errors} ({})", by.join(", "));
        if let Some(e) = total.first_error {
            println!("first error {}", e.chars().take(300).collect::<String>());
        }
    } else {
        println!("errors      0");
    }
}

/// `panvault ARGS --data-dir DATA [--passphrase-file F]` (this same binary).
fn admin_cmd(
    pass: Option<&std::path::Path>,
    data: &std::path::Path,
    args: &[&str],
) -> std::process::Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("panvault"));
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args).arg("--data-dir").arg(data);
    if let Some(p) = pass {
        cmd.arg("--passphrase-file").arg(p);
    }
    cmd.stdin(std::process::Stdio::null());
    cmd
}

/// Runs an admin command to its end; an error if it fails.
fn admin(args: &Args, config: &Config, cmd: &[&str]) -> Result<(), CliError> {
    let out = admin_cmd(args.passphrase_file.as_deref(), &config.data_dir, cmd)
        .output()
        .map_err(|e| CliError::usage(format!("cannot run {}: {e}", cmd.join(" "))))?;
    if !out.status.success() {
        return Err(CliError::usage(format!(
            "{} failed: {}",
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_cards() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("soon").is_err());
        let mut r = Rng::seeded(1);
        let c = r.card();
        assert_eq!(c.len(), 16);
        assert!(panvault_audit::card::luhn_valid(c.as_bytes()));
        assert_ne!(c, r.card());
        assert_eq!(percentile(&[1000, 2000, 3000, 4000], 500), 2.0);
        assert_eq!(percentile(&[1000, 2000, 3000, 4000], 990), 4.0);
        assert_eq!(percentile(&[1000, 2000, 3000, 4000], 1000), 4.0);
        assert_eq!(percentile(&[], 500), 0.0);
    }
}
