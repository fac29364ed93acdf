//! Crash safety of the SQLite transport across real processes: a child process working the queue
//! is SIGKILLed at random moments and restarted; afterwards no message is lost and none was
//! settled twice.
//!
//! The child is this test binary itself, re-executed to run the ignored test
//! [`crash_child_works_the_queue_until_killed`] with the database and log paths in environment
//! variables. It loops receive → (send a continuation) → complete → append the id to a log and
//! fsync, like the worker does with continuations. The log is written after `complete` returns,
//! so a kill may lose the last few log lines, but a logged id was certainly completed.

// Helpers outside #[test] functions unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use onboarding_core::SystemClock;
use onboarding_transport::sqlite::{SqliteTransport, SqliteTransportOptions};
use onboarding_transport::{OutgoingMessage, Queue, QueueStats, SendOutcome};
use rand::Rng;

const CHILD_TEST: &str = "crash_child_works_the_queue_until_killed";
const DB_ENV: &str = "TRANSPORT_CRASH_DB";
const LOG_ENV: &str = "TRANSPORT_CRASH_LOG";
/// Set for the last child: work until the queue is empty, then exit.
const DRAIN_ENV: &str = "TRANSPORT_CRASH_DRAIN";
/// Concurrent receive loops inside one child.
const CHILD_LOOPS: usize = 2;
const CONTINUATION: &str = ":continued";

const KILLS: usize = 6;
const BATCH: usize = 120;
const SESSIONS: usize = 5;

fn options() -> SqliteTransportOptions {
    SqliteTransportOptions {
        // Short, so the locks a killed child held run out quickly; long enough for a loaded CI
        // machine to settle well within it.
        lock_duration: Duration::from_secs(2),
        // Kills may strand a message many times; it must never be dead-lettered here.
        max_delivery_count: 1000,
        duplicate_detection_window: Duration::from_secs(3600),
        ..Default::default()
    }
}

fn open(db: &Path) -> SqliteTransport {
    SqliteTransport::open(db, options(), Arc::new(SystemClock)).unwrap()
}

fn original(n: usize) -> OutgoingMessage {
    OutgoingMessage {
        message_id: format!("m{n}"),
        // Most in sessions (exclusivity across restarts), some without.
        session_id: (!n.is_multiple_of(SESSIONS + 1)).then(|| format!("s{}", n % (SESSIONS + 1))),
        body: format!("work {n}").into_bytes(),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The child

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of the crash test, which starts it with TRANSPORT_CRASH_DB set"]
async fn crash_child_works_the_queue_until_killed() {
    let (Ok(db), Ok(log)) = (std::env::var(DB_ENV), std::env::var(LOG_ENV)) else {
        eprintln!(
            "skipped: this is the crash test's child process; it needs {DB_ENV} and {LOG_ENV} (run the crash test instead)"
        );
        return;
    };
    let drain = std::env::var_os(DRAIN_ENV).is_some();
    let queue = open(Path::new(&db));
    let log = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap(),
    ));
    let loops: Vec<_> = (0..CHILD_LOOPS)
        .map(|_| tokio::spawn(work(queue.clone(), log.clone(), drain)))
        .collect();
    for l in loops {
        l.await.unwrap();
    }
}

async fn work(queue: SqliteTransport, log: Arc<Mutex<std::fs::File>>, drain: bool) {
    loop {
        let Some(d) = queue.receive(Duration::from_millis(100)).await.unwrap() else {
            if drain {
                let s = queue.stats().await.unwrap();
                if s.active + s.scheduled + s.locked == 0 {
                    return;
                }
            }
            continue;
        };
        let id = d.message.message_id.clone();
        if !id.ends_with(CONTINUATION) {
            // The worker's pattern: send the continuation, then complete. A redelivery after a
            // kill between the two sends it again, and duplicate detection drops it.
            let next = OutgoingMessage {
                message_id: format!("{id}{CONTINUATION}"),
                session_id: d.message.session_id.clone(),
                body: d.message.body.clone(),
                ..Default::default()
            };
            let outcome = queue.send(next).await.unwrap();
            assert!(matches!(
                outcome,
                SendOutcome::Accepted | SendOutcome::Duplicate
            ));
        }
        // A lost lock (a stall longer than the lock) just means redelivery: not logged.
        if queue.complete(&d.lock).await.is_ok() {
            let mut f = log.lock().unwrap();
            f.write_all(format!("{id}\n").as_bytes()).unwrap();
            f.sync_data().unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The parent

/// A child to be killed (its stderr appended to `stderr`), or without it the draining child.
fn spawn_child(db: &Path, log: &Path, stderr: Option<&Path>) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        CHILD_TEST,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(DB_ENV, db)
    .env(LOG_ENV, log)
    .stdin(Stdio::null());
    match stderr {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap();
            cmd.env_remove(DRAIN_ENV).stdout(Stdio::null()).stderr(file)
        }
        None => cmd
            .env(DRAIN_ENV, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    };
    cmd.spawn().unwrap()
}

/// A child process killed when dropped, so a failing (panicking) test leaves no orphan working
/// the queue behind it.
struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }

    /// SIGKILL on Unix, then reap it.
    fn kill_and_wait(&mut self) {
        self.child().kill().unwrap();
        self.child().wait().unwrap();
    }

    /// The child, no longer killed on drop (for one that has exited, to collect its output).
    fn into_inner(mut self) -> Child {
        self.0.take().unwrap()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            // Errors only mean it has already exited and been reaped: nothing left to clean up.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Completed ids from the log; a torn last line (killed mid-write) is not a completion record.
fn logged(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut lines: Vec<&str> = text.split('\n').collect();
    lines.pop(); // after the last newline: empty, or a torn line
    lines.into_iter().map(str::to_owned).collect()
}

/// Every message id still in the file, live or dead-lettered, read behind the transport's back.
fn ids_in_file(db: &Path) -> BTreeSet<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT message_id FROM queue_messages")
        .unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn killing_a_worker_process_at_random_moments_loses_no_message_and_settles_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db: PathBuf = dir.path().join("queue.db");
    let log: PathBuf = dir.path().join("completed.log");
    let stderr: PathBuf = dir.path().join("children.stderr");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let queue = open(&db);
    let mut rng = rand::rng();
    let mut sent = 0;
    let mut progress = Vec::new();

    for _ in 0..KILLS {
        // Kill after a random amount of this child's work rather than a random time, so every
        // kill lands mid-work however fast or loaded the machine is. Counted before the child
        // starts: read after the batch is sent, the count would include completions this child
        // already made, and the target could exceed what the round can ever produce (the queue
        // empties and the loop below waits forever). A round of BATCH originals yields 2 × BATCH
        // completions (each original and its continuation), so `before + BATCH` is always
        // reached with a good margin left over for the kill to land mid-work.
        let before = logged(&log).len();
        let target = before + rng.random_range(1..=BATCH);
        let mut child = KillOnDrop(Some(spawn_child(&db, &log, Some(&stderr))));
        // Fresh work each round, sent while the child runs: two processes writing at once.
        rt.block_on(async {
            for n in sent..sent + BATCH {
                assert_eq!(
                    queue.send(original(n)).await.unwrap(),
                    SendOutcome::Accepted
                );
            }
        });
        sent += BATCH;
        let started = Instant::now();
        while logged(&log).len() < target {
            if let Some(status) = child.child().try_wait().unwrap() {
                panic!(
                    "the child exited early ({status}); see {}",
                    stderr.display()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the child completed nothing for 60 s; see {}",
                stderr.display()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // SIGKILL on Unix: no destructors, no flush, no goodbye.
        child.kill_and_wait();
        progress.push(logged(&log).len());

        let completed: BTreeSet<String> = logged(&log).into_iter().collect();
        let still_there = ids_in_file(&db);
        assert!(
            !still_there.is_empty(),
            "the kill landed after all work was done"
        );
        let resurrected: Vec<_> = completed.intersection(&still_there).collect();
        assert!(
            resurrected.is_empty(),
            "messages logged as completed are back in the queue: {resurrected:?}"
        );
    }

    let mut drainer = KillOnDrop(Some(spawn_child(&db, &log, None)));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = drainer.child().try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the draining child did not empty the queue within 120 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // It has exited: the guard has nothing left to kill.
    let out = drainer.into_inner().wait_with_output().unwrap();
    assert!(
        status.success(),
        "the draining child failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let lines = logged(&log);
    let mut times: HashMap<&str, usize> = HashMap::new();
    for id in &lines {
        *times.entry(id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "messages completed twice: {twice:?}");

    let expected: BTreeSet<String> = (0..sent)
        .flat_map(|n| [format!("m{n}"), format!("m{n}{CONTINUATION}")])
        .collect();
    let seen: BTreeSet<String> = lines.iter().cloned().collect();
    let unexpected: Vec<_> = seen.difference(&expected).collect();
    assert!(
        unexpected.is_empty(),
        "unknown ids completed: {unexpected:?}"
    );
    assert_eq!(
        rt.block_on(queue.stats()).unwrap(),
        QueueStats::default(),
        "the queue must be empty after draining (nothing stuck, nothing dead-lettered)"
    );
    // Not in the log and not in the queue: completed, but the child was killed before logging
    // it. Each kill can cost at most the in-flight log line of each of its loops.
    let unlogged: Vec<_> = expected.difference(&seen).collect();
    assert!(
        unlogged.len() <= KILLS * CHILD_LOOPS,
        "{} messages vanished without a completion record, more than {KILLS} kills explain: {unlogged:?}",
        unlogged.len()
    );
    eprintln!(
        "{sent} originals, {} completions logged after each kill: {progress:?}, {} unlogged",
        lines.len(),
        unlogged.len()
    );
}
