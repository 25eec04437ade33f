//! The single writer: one thread owns the write connection, takes every job that is
//! waiting, runs them in one `IMMEDIATE` transaction, commits once with
//! `synchronous=FULL`, and only then tells each caller how its job went.
//!
//! Jobs are written so that a refused operation changes nothing (each statement is
//! atomic), and so need no savepoint of their own: savepoints make SQLite copy every
//! page a job touches into a sub-journal, which cost a third of the writer's time.
//! A job that cannot finish (`keep: false`, e.g. its audit event could not be
//! written) fails the whole batch: nothing of it commits.
//!
//! A second thread checkpoints the WAL passively so the writer never waits on it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::{Session, StoreError, Tx};

/// Called once the batch holding the job has committed (`Ok`) or failed (`Err`).
pub type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// What a job decided: keep its changes or roll its savepoint back, and what to do
/// once the batch's fate is known.
pub struct JobOutcome {
    /// The job finished its unit of work; `false` rolls back the whole batch.
    pub keep: bool,
    /// Runs after commit (or failure) of the batch.
    pub completion: Completion,
    /// Whether the caller still waits ([`Claim`]); `None`: it always does.
    pub claim: Option<Arc<Claim>>,
}

/// Who decides a job's fate when its caller stops waiting: the writer, which
/// claims every job of a batch just before `COMMIT`, or the caller, which
/// abandons it when its wait runs out. Exactly one of them wins. A caller that
/// abandoned is told "unavailable" and the batch holding its job rolls back
/// whole (its other callers are told the same), so no caller is told a write
/// failed that committed; a caller that lost waits for the commit's outcome.
#[derive(Debug, Default)]
pub struct Claim(std::sync::atomic::AtomicU8);

impl Claim {
    const WAITING: u8 = 0;
    const COMMITTING: u8 = 1;
    const ABANDONED: u8 = 2;

    /// The writer's claim, just before `COMMIT`: false if the caller abandoned.
    pub fn try_commit(&self) -> bool {
        self.0
            .compare_exchange(
                Self::WAITING,
                Self::COMMITTING,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
    }

    /// The caller's: false if the writer is committing the job already.
    pub fn try_abandon(&self) -> bool {
        self.0
            .compare_exchange(
                Self::WAITING,
                Self::ABANDONED,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
    }

    /// Whether the caller abandoned the job.
    pub fn abandoned(&self) -> bool {
        self.0.load(Ordering::SeqCst) == Self::ABANDONED
    }
}

/// Claims every job of a batch for its `COMMIT` ([`Claim::try_commit`]); an
/// error if a caller abandoned its job (the batch must roll back).
fn claim_all(claims: &[Arc<Claim>]) -> Result<(), StoreError> {
    // Every claim is tried, so the callers that still wait are all told the
    // batch's outcome (none can abandon once claimed).
    let gone = claims.iter().filter(|c| !c.try_commit()).count();
    if gone > 0 {
        return Err(StoreError::Unavailable(
            "a caller stopped waiting before its batch could commit; batch rolled back",
        ));
    }
    Ok(())
}

impl std::fmt::Debug for JobOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobOutcome")
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

/// Hook state the writer keeps across batches (e.g. the audit chain's head), with a
/// way to roll it back when a savepoint or the whole batch is undone.
pub trait WriterState: Send + 'static {
    /// A copy of whatever must be restored on rollback.
    type Snapshot;
    /// Takes a snapshot.
    fn snapshot(&self) -> Self::Snapshot;
    /// Restores a snapshot.
    fn restore(&mut self, snap: Self::Snapshot);
    /// Runs when the batch's transaction has begun, before its jobs (e.g. to forget
    /// what was read from the database in the previous batch).
    fn begin_batch(&mut self, _tx: &Tx<'_>) {}
    /// Runs after the batch's jobs, inside its transaction, before the commit (e.g. to
    /// flush counters). An error fails the batch.
    fn before_commit(&mut self, _tx: &Tx<'_>) -> Result<(), StoreError> {
        Ok(())
    }
    /// Runs after every committed batch.
    fn after_commit(&mut self, _session: &mut Session) {}
    /// Runs once when the writer stops, after the last batch.
    fn on_shutdown(&mut self, _session: &mut Session) {}
    /// How long the writer may wait for a job before calling
    /// [`WriterState::on_idle`] (e.g. until the audit tail is due to be signed).
    fn idle_wait(&self) -> Duration {
        IDLE_WAIT
    }
    /// Runs when no job came for [`WriterState::idle_wait`], outside any
    /// transaction (e.g. to sign the audit log's tail on an idle server).
    fn on_idle(&mut self, _session: &mut Session) {}
}

/// How long the writer waits for a job at most between two idle calls.
const IDLE_WAIT: Duration = Duration::from_millis(500);

impl WriterState for () {
    type Snapshot = ();
    fn snapshot(&self) {}
    fn restore(&mut self, _snap: ()) {}
}

/// A unit of work run by the writer inside the batch transaction.
pub type Job<S> = Box<dyn for<'t> FnOnce(&Tx<'t>, &mut S) -> JobOutcome + Send>;

/// What a job will look up, announced when it is submitted: on PostgreSQL the
/// writer looks up every job's in a few statements at the start of the batch
/// (see `pg::session`), rather than each job in its own round trips. SQLite
/// ignores them (its look-ups are in-process).
#[derive(Debug, Default, Clone)]
pub struct Hints {
    /// Cards the job will lock and look up for deduplication: tenant and keyed
    /// fingerprint.
    pub cards: Vec<(String, Vec<u8>)>,
    /// Card rows (ids) whose liveness the job will re-check.
    pub live: Vec<i64>,
    /// Cards the job will read by tenant and token.
    pub reads: Vec<(String, String)>,
}

/// A job as it waits in the writer's queue.
type Queued<S> = (Job<S>, Hints);

/// Tuning of the writer.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// How many jobs may wait before submissions are refused (503, never blocking).
    pub queue: usize,
    /// At most this many jobs per transaction.
    pub max_batch: usize,
    /// How often the checkpointer runs.
    pub checkpoint_every: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            queue: 65_536,
            max_batch: 4096,
            checkpoint_every: Duration::from_millis(250),
        }
    }
}

/// Handle to the writer thread.
pub struct Writer<S: WriterState> {
    tx: Mutex<Option<SyncSender<Queued<S>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
    stop: Arc<AtomicBool>,
}

impl<S: WriterState> std::fmt::Debug for Writer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

impl<S: WriterState> Writer<S> {
    /// Starts the writer on `session` with initial `state`, and (SQLite) a
    /// checkpointer on the database file `path`.
    pub fn start(
        mut session: Session,
        state: S,
        path: Option<PathBuf>,
        cfg: WriterConfig,
    ) -> Result<Self, StoreError> {
        // Admin commands write from other processes in short transactions with
        // gaps between them: poll for the lock so the writer takes it in the first
        // gap rather than sleeping through several.
        session.poll_for_locks(super::LOCK_WAIT)?;
        let (tx, rx) = sync_channel::<Queued<S>>(cfg.queue);
        let restart = Arc::new(AtomicBool::new(false));
        let restart2 = Arc::clone(&restart);
        let max_batch = cfg.max_batch.max(1);
        let thread = std::thread::Builder::new()
            .name("panvault-writer".into())
            .spawn(move || run(session, state, rx, max_batch, restart))
            .map_err(|_| StoreError::Unavailable("could not start the writer thread"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);

        let every = cfg.checkpoint_every;
        // PostgreSQL checkpoints its own WAL.
        let checkpointer = match path {
            Some(path) => Some(
                std::thread::Builder::new()
                    .name("panvault-checkpoint".into())
                    .spawn(move || checkpoint_loop(path, every, stop2, restart2))
                    .map_err(|_| {
                        StoreError::Unavailable("could not start the checkpointer thread")
                    })?,
            ),
            None => None,
        };
        Ok(Writer {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            checkpointer: Mutex::new(checkpointer),
            stop,
        })
    }

    /// Queues a job. Never blocks: a full queue or a stopped writer is an error.
    pub fn submit(&self, job: Job<S>) -> Result<(), StoreError> {
        self.submit_with(job, Hints::default())
    }

    /// Queues a job that announces what it will look up ([`Hints`]).
    pub fn submit_with(&self, job: Job<S>, hints: Hints) -> Result<(), StoreError> {
        let guard = self
            .tx
            .lock()
            .map_err(|_| StoreError::Unavailable("writer lock poisoned"))?;
        let Some(tx) = guard.as_ref() else {
            return Err(StoreError::Unavailable("writer stopped"));
        };
        match tx.try_send((job, hints)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(StoreError::Unavailable("write queue full")),
            Err(TrySendError::Disconnected(_)) => Err(StoreError::Unavailable("writer stopped")),
        }
    }

    /// Stops taking jobs, finishes those queued, and joins both threads.
    pub fn shutdown(&self) {
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
        if let Ok(mut g) = self.thread.lock()
            && let Some(h) = g.take()
        {
            let _ = h.join();
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(mut g) = self.checkpointer.lock()
            && let Some(h) = g.take()
        {
            let _ = h.join();
        }
    }
}

impl<S: WriterState> Drop for Writer<S> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run<S: WriterState>(
    mut session: Session,
    mut state: S,
    rx: Receiver<Queued<S>>,
    max_batch: usize,
    restart: Arc<AtomicBool>,
) {
    let mut batch: Vec<Queued<S>> = Vec::with_capacity(max_batch);
    let mut completions: Vec<Completion> = Vec::with_capacity(max_batch);
    let mut claims: Vec<Arc<Claim>> = Vec::with_capacity(max_batch);
    let mut stats = Stats::new();
    loop {
        match rx.recv_timeout(state.idle_wait()) {
            Ok(job) => batch.push(job),
            Err(RecvTimeoutError::Timeout) => {
                state.on_idle(&mut session);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let before = state.snapshot();
        let t0 = std::time::Instant::now();
        let n = batch.len();
        let result = match session.conn_mut() {
            Some(conn) => run_batch(conn, &mut state, &mut batch, &mut completions, &mut claims),
            None => run_batch_pg(
                &session,
                &mut state,
                &mut batch,
                &mut completions,
                &mut claims,
            ),
        };
        stats.record(n, t0.elapsed());
        if let Err(e) = &result {
            // Every caller of the batch gets 503; say why, for the operator (a full
            // disk or an unwritable audit log is otherwise silent), but at most once
            // a second: a full disk fails every batch.
            if let Some(suppressed) = ROLLBACK_WARN.check() {
                tracing::warn!(error = %e, jobs = n, suppressed, "write batch rolled back");
            }
            state.restore(before);
        }
        claims.clear();
        let failed = result.err();
        // The state follows the commit before any caller hears of it, so what a
        // caller reads after its answer (e.g. the running token count) includes
        // its own change.
        if failed.is_none() {
            state.after_commit(&mut session);
        }
        for c in completions.drain(..) {
            match &failed {
                None => c(Ok(())),
                Some(e) => c(Err(clone_err(e))),
            }
        }
        if restart.swap(false, Ordering::SeqCst)
            && let Some(conn) = session.conn_mut()
        {
            // Most frames are already copied by the passive checkpoints: this copies
            // the rest and lets the next transaction start the WAL from the top.
            let _ = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()));
        }
    }
    state.on_shutdown(&mut session);
}

/// Limits the "WAL checkpoint failed" warning to one a minute.
static CHECKPOINT_WARN: super::WarnLimiter = super::WarnLimiter::new(Duration::from_secs(60));

/// Limits the "write batch rolled back" warning to one a second.
static ROLLBACK_WARN: super::WarnLimiter = super::WarnLimiter::new(Duration::from_secs(1));

fn clone_err(e: &StoreError) -> StoreError {
    match e {
        StoreError::Sqlite { reason, source } => StoreError::Sqlite {
            reason: reason.clone(),
            source: source.clone(),
        },
        StoreError::Postgres {
            reason,
            code,
            connection,
            source,
        } => StoreError::Postgres {
            reason: reason.clone(),
            code: code.clone(),
            connection: *connection,
            source: source.clone(),
        },
        StoreError::Config(s) => StoreError::Config(s.clone()),
        StoreError::NoVault => StoreError::NoVault,
        StoreError::Unsupported(s) => StoreError::Unsupported(s),
        StoreError::SchemaTooNew(v) => StoreError::SchemaTooNew(*v),
        StoreError::Corrupt(s) => StoreError::Corrupt(s.clone()),
        StoreError::Unavailable(s) => StoreError::Unavailable(s),
        StoreError::LockHeld(s) => StoreError::LockHeld(*s),
        StoreError::TaskRunning(s) => StoreError::TaskRunning(s),
    }
}

fn run_batch<S: WriterState>(
    conn: &mut Connection,
    state: &mut S,
    batch: &mut Vec<Queued<S>>,
    completions: &mut Vec<Completion>,
    claims: &mut Vec<Arc<Claim>>,
) -> Result<(), StoreError> {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            // The jobs never ran: fail them all.
            let err = StoreError::from(e);
            for job in batch.drain(..) {
                drop(job);
            }
            return Err(err);
        }
    };
    let unit = Tx::new(&tx);
    state.begin_batch(&unit);
    let mut abort = false;
    for (job, _) in batch.drain(..) {
        let outcome = job(&unit, state);
        abort |= !outcome.keep;
        completions.push(outcome.completion);
        claims.extend(outcome.claim);
    }
    if abort {
        // A job could not finish its unit of work (e.g. its audit event could not be
        // written): nothing of the batch may commit.
        drop(unit);
        drop(tx);
        return Err(StoreError::Unavailable(
            "a job in the batch failed; batch rolled back",
        ));
    }
    state.before_commit(&unit)?;
    drop(unit);
    claim_all(claims)?;
    tx.commit()?;
    Ok(())
}

/// How long a PostgreSQL batch waits for the shared key lock (an admin
/// transaction holds it exclusively for milliseconds): past it the batch fails
/// (503), rather than the writer hanging behind a stuck admin command.
const BATCH_LOCK_WAIT: Duration = Duration::from_secs(10);

/// A batch on PostgreSQL: one transaction (`BEGIN`, the key lock shared, every
/// job, `COMMIT`), so a node's callers share one durable commit as on SQLite.
/// PostgreSQL makes the commit atomic: a connection broken anywhere in the batch
/// fails every job of it, and a `COMMIT` whose answer was lost is reported as an
/// error (the batch may have committed; no caller is told it did). A statement
/// that failed aborts PostgreSQL's transaction, so the batch rolls back whole
/// (each caller gets the error). A connection the server closed is replaced from
/// the pool before the next batch.
fn run_batch_pg<S: WriterState>(
    session: &Session,
    state: &mut S,
    batch: &mut Vec<Queued<S>>,
    completions: &mut Vec<Completion>,
    claims: &mut Vec<Arc<Claim>>,
) -> Result<(), StoreError> {
    let Some(conn) = session.pg() else {
        batch.clear();
        return Err(StoreError::Unavailable(
            "the writer has no database connection",
        ));
    };
    let begun = conn.reconnect_if_closed().and_then(|()| {
        let cards: Vec<(&str, &[u8])> = batch
            .iter()
            .flat_map(|(_, h)| h.cards.iter().map(|(t, f)| (t.as_str(), f.as_slice())))
            .collect();
        let live: Vec<i64> = batch
            .iter()
            .flat_map(|(_, h)| h.live.iter().copied())
            .collect();
        let reads: Vec<(&str, &str)> = batch
            .iter()
            .flat_map(|(_, h)| h.reads.iter().map(|(t, k)| (t.as_str(), k.as_str())))
            .collect();
        conn.begin_batch(BATCH_LOCK_WAIT, &cards, &live, &reads)
    });
    if let Err(e) = begun {
        // The jobs never ran: fail them all.
        conn.rollback();
        batch.clear();
        return Err(e);
    }
    let unit = Tx::pg(conn);
    state.begin_batch(&unit);
    let mut abort = false;
    for (job, _) in batch.drain(..) {
        let outcome = job(&unit, state);
        abort |= !outcome.keep;
        completions.push(outcome.completion);
        claims.extend(outcome.claim);
    }
    if abort {
        drop(unit);
        conn.rollback();
        return Err(StoreError::Unavailable(
            "a job in the batch failed; batch rolled back",
        ));
    }
    if let Err(e) = state.before_commit(&unit) {
        drop(unit);
        conn.rollback();
        return Err(e);
    }
    drop(unit);
    // What waits is written first, so only `COMMIT` follows the claims.
    if let Err(e) = conn.flush().and_then(|()| claim_all(claims)) {
        conn.rollback();
        return Err(e);
    }
    conn.commit()
}

use super::WAL_RESTART_FRAMES;

/// Longest pause between two attempts to scrub a WAL marked as holding deleted data
/// while readers keep preventing it.
const SCRUB_BACKOFF_MAX: Duration = Duration::from_secs(8);

fn checkpoint_loop(
    path: PathBuf,
    every: Duration,
    stop: Arc<AtomicBool>,
    restart: Arc<AtomicBool>,
) {
    let mut conn: Option<Connection> = None;
    let mut scrub = ScrubRetry::new(every);
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(every);
        if conn.is_none() {
            conn = Connection::open(&path).ok();
            if let Some(c) = &conn {
                let _ = c.busy_timeout(Duration::from_millis(100));
            }
        }
        if let Some(c) = &mut conn {
            // PASSIVE: copies what it can without blocking the writer or readers.
            let frames = match c
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1))
            {
                Ok(f) => f,
                Err(e) => {
                    // Not fatal (the next tick tries again), but not hidden either.
                    if let Some(suppressed) = CHECKPOINT_WARN.check() {
                        tracing::warn!(error = %super::StoreError::from(e), suppressed, "WAL checkpoint failed");
                    }
                    0
                }
            };
            // Under steady load a passive checkpoint never finishes, and the WAL only
            // restarts once one does: past the limit, ask the writer to restart the
            // log between two batches (doing it here would make the writer wait on
            // the lock through SQLite's sleeping busy handler).
            if frames > WAL_RESTART_FRAMES {
                restart.store(true, Ordering::SeqCst);
            }
            scrub.tick(c);
        }
    }
    if let Some(c) = &mut conn {
        if matches!(super::scrub_pending(c), Ok(Some(_))) {
            let _ = super::scrub_wal_on(c, Duration::from_millis(500), unix_now());
        } else {
            let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .unwrap_or(i64::MAX)
}

/// Retries a pending WAL scrub (deleted data whose page copies may still be in the
/// WAL, marked in `meta` by an erasure, a purge or a key destruction whose own
/// truncation was blocked by a reader) until a `TRUNCATE` checkpoint succeeds.
/// Each try may hold the write lock for a few milliseconds, so failed tries back
/// off up to [`SCRUB_BACKOFF_MAX`].
struct ScrubRetry {
    base: Duration,
    pause: Duration,
    next: std::time::Instant,
}

impl ScrubRetry {
    fn new(base: Duration) -> ScrubRetry {
        ScrubRetry {
            base,
            pause: base,
            next: std::time::Instant::now(),
        }
    }

    fn tick(&mut self, conn: &mut Connection) {
        if std::time::Instant::now() < self.next {
            return;
        }
        match super::scrub_pending(conn) {
            Ok(Some(_)) => {}
            _ => {
                self.pause = self.base;
                return;
            }
        }
        match super::scrub_wal_on(conn, Duration::ZERO, unix_now()) {
            Ok(true) => {
                tracing::info!("WAL truncated: no copy of deleted data is left in it");
                self.pause = self.base;
            }
            _ => {
                self.pause = (self.pause * 2).min(SCRUB_BACKOFF_MAX);
                self.next = std::time::Instant::now() + self.pause;
            }
        }
    }
}

/// Batch statistics, logged every 5 s at debug level (`PANVAULT_LOG=panvault_vault=debug`).
struct Stats {
    since: std::time::Instant,
    batches: u64,
    jobs: u64,
    busy: Duration,
}

impl Stats {
    fn new() -> Self {
        Stats {
            since: std::time::Instant::now(),
            batches: 0,
            jobs: 0,
            busy: Duration::ZERO,
        }
    }

    fn record(&mut self, jobs: usize, took: Duration) {
        self.batches += 1;
        // usize is at most 64 bits on every target panvault builds for.
        self.jobs = self
            .jobs
            .saturating_add(u64::try_from(jobs).unwrap_or(u64::MAX));
        self.busy += took;
        let elapsed = self.since.elapsed();
        if elapsed >= Duration::from_secs(5) {
            tracing::debug!(
                batches = self.batches,
                jobs = self.jobs,
                busy_ms = u64::try_from(self.busy.as_millis()).unwrap_or(u64::MAX),
                elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                "writer"
            );
            *self = Stats::new();
        }
    }
}
