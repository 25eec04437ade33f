//! What the end-to-end tests of several `panvault serve` nodes on PostgreSQL share:
//! starting a node under a name of the shared audit log, checking a token
//! detokenizes, the log verifying at the end, and load that tokenizes fresh cards
//! through a fault and is then held to what it was told (nothing acknowledged
//! lost, nothing refused stored, no answer but 201 or 503, none hanging). No card
//! number is printed (messages show masked numbers).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::{self, BinVault, Client, Resp, ServeProcess, cards};

/// How long an admin command may take.
const LIMIT: Duration = Duration::from_secs(60);

/// `panvault serve` for `v` as node `name` of the shared audit log.
pub(crate) async fn node(v: &BinVault, name: &str) -> ServeProcess {
    let mut cmd = tokio::process::Command::new(util::panvault_bin());
    cmd.args(v.serve_args()).env("PANVAULT_NODE", name);
    ServeProcess::spawn(cmd).await.unwrap()
}

/// `token` detokenizes on `payments` to `card`.
pub(crate) async fn assert_detokenizes(payments: &Client, token: &str, card: &str) {
    let d = payments.detokenize(token, "check").await;
    assert_eq!(d.status, 200, "{}", d.text());
    assert!(
        d.json()["card"]["number"] == card,
        "detokenized number differs from {}",
        cards::masked(card)
    );
}

/// `panvault audit verify` of `v` succeeds: the whole shared log, every node's
/// chain, checked with the public key alone.
pub(crate) async fn audit_verifies(v: &BinVault) {
    let out = v.run(&["audit", "verify"], false, LIMIT).await;
    assert!(
        out.success(),
        "audit verify: {}\n{}",
        out.stdout,
        out.stderr
    );
}

/// Stops `nodes` (SIGTERM: each must exit cleanly), then the log must verify.
pub(crate) async fn stop_and_verify(v: &BinVault, nodes: impl IntoIterator<Item = ServeProcess>) {
    for n in nodes {
        assert!(n.terminate().await.success());
    }
    audit_verifies(v).await;
}

/// Polls `GET /healthz` on `client` until it answers `want` (at most 60 s); that
/// answer.
pub(crate) async fn health(client: &Client, want: u16) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.request("GET", "/healthz", None, None).await
            && r.status == want
        {
            return r;
        }
        assert!(Instant::now() < deadline, "/healthz never answered {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the load saw: every answer's status, the longest wait for one, and the
/// cards acknowledged (201) or refused (503).
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) statuses: Vec<u16>,
    pub(crate) longest: Duration,
    pub(crate) acked: Vec<(String, String)>,
    pub(crate) refused: Vec<String>,
}

/// Tasks tokenizing fresh cards, one per client given, until stopped.
pub(crate) struct Load {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts one task per client.
    pub(crate) fn start(clients: Vec<Client>) -> Load {
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = clients
            .into_iter()
            .map(|sf| {
                let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let card = cards::fresh();
                        let t = Instant::now();
                        let r = sf.tokenize(&card).await;
                        let took = t.elapsed();
                        let mut s = seen.lock().unwrap();
                        s.statuses.push(r.status);
                        s.longest = s.longest.max(took);
                        match r.status {
                            201 => {
                                let token = r.json()["token"].as_str().unwrap().to_owned();
                                s.acked.push((token, card));
                            }
                            503 => s.refused.push(card),
                            _ => {}
                        }
                    }
                })
            })
            .collect();
        Load { seen, stop, tasks }
    }

    /// Tokens acknowledged so far.
    pub(crate) fn acked(&self) -> usize {
        self.seen.lock().unwrap().acked.len()
    }

    /// Answers so far.
    pub(crate) fn answers(&self) -> usize {
        self.seen.lock().unwrap().statuses.len()
    }

    /// Waits until `n` tokens are acknowledged (at most 60 s).
    pub(crate) async fn acked_at_least(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.acked() < n {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} tokens acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until an answer after the first `from` is `status` (at most 60 s).
    pub(crate) async fn answered_since(&self, from: usize, status: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self
            .seen
            .lock()
            .unwrap()
            .statuses
            .get(from..)
            .is_some_and(|s| s.contains(&status))
        {
            assert!(Instant::now() < deadline, "no {status} answered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the tasks after their requests in flight; what they saw.
    pub(crate) async fn stop(self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// After a fault: only 201 and 503 were answered, none waited past the write
/// timeout (10 s) by much, every acknowledged token detokenizes on `pay`, and
/// every refused card was truly not stored (tokenizing it again creates it: 201,
/// not the 200 of a card found).
pub(crate) async fn check_told_the_truth(seen: Seen, sf: &Client, pay: &Client) {
    let odd: Vec<u16> = seen
        .statuses
        .iter()
        .copied()
        .filter(|s| *s != 201 && *s != 503)
        .collect();
    assert!(odd.is_empty(), "answers other than 201 and 503: {odd:?}");
    assert!(
        seen.longest < Duration::from_secs(15),
        "a request hung for {:?}",
        seen.longest
    );
    for (token, card) in &seen.acked {
        let d = pay.detokenize(token, "check").await;
        assert_eq!(d.status, 200, "acknowledged, then lost: {}", d.text());
        assert!(
            d.json()["card"]["number"] == card.as_str(),
            "detokenized number differs from {}",
            cards::masked(card)
        );
    }
    for card in &seen.refused {
        let r = sf.tokenize(card).await;
        assert_eq!(
            r.status,
            201,
            "{} was refused with 503 but stored: {}",
            cards::masked(card),
            r.text()
        );
    }
}
