//! kill -9 of the service at random points of a 100k-record run on a real broker
//! (Tansu), each time restarted: the store ends with exactly the offline oracle's audit
//! records (none missing, none extra, every BLOCK decision equal) and every partition's
//! final checkpoint holds the oracle's final state.

mod support;

use std::time::{Duration, Instant};

use support::crash::{Rng, Run};
use support::Broker;

/// `AUDIT_STREAM_TEST_RECORDS` shortens the run for a quick local try.
fn records() -> usize {
    std::env::var("AUDIT_STREAM_TEST_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000)
}

const KILLS: usize = 3;

/// After a kill the dead member stays in the group until its session times out (6 s).
/// A member joining before that is assigned nothing, and Tansu 0.6 does not rebalance
/// when the dead member expires later (real Kafka does): the restart waits it out, as a
/// process supervisor's restart delay would.
fn wait_out_session() {
    std::thread::sleep(Duration::from_secs(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_then_restart_loses_and_doubles_nothing() {
    let broker = Broker::start(false);
    let n = records();
    let run = Run::prepare(&broker.bootstrap(), |t, p| broker.create_topic(t, p), n).await;
    let mut rng = Rng::from_env();
    let started = Instant::now();
    for i in 0..KILLS {
        // Somewhere in the next 8 to 25 % of the run, and no further than its end: a
        // service killed well past its point may have finished every record already.
        let point =
            (run.committed_total() + rng.between(8, 25) as i64 * n as i64 / 100).min(n as i64);
        let service = run.start(&format!("run-{i}"), &[]);
        let deadline = Instant::now() + Duration::from_secs(120);
        while run.committed_total() < point {
            assert!(
                Instant::now() < deadline,
                "no progress to {point}\n{}",
                run.logs_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // Somewhere between two commits.
        std::thread::sleep(Duration::from_millis(rng.between(0, 1_000)));
        service.kill9();
        wait_out_session();
        eprintln!(
            "killed at {} committed (point {point}) after {:?}",
            run.committed_total(),
            started.elapsed()
        );
    }
    let service = run.start("final", &[]);
    run.wait_committed_to_end(Duration::from_secs(180));
    service.stop();
    eprintln!("run finished after {:?}", started.elapsed());
    let outcome = run.verify().await;
    eprintln!("{outcome:?}");
    outcome.assert_exact();
}
