//! The broker restarts mid-run: Tansu on file-backed storage is killed and started
//! again on the same port while the service runs. The service reconnects and finishes,
//! and the store ends with exactly the offline oracle's audit records and every
//! partition's final checkpoint holds the oracle's final state.

mod support;

use std::time::{Duration, Instant};

use support::crash::{Rng, Run};
use support::Tansu;

/// `AUDIT_STREAM_TEST_RECORDS` changes the run's size.
fn records() -> usize {
    std::env::var("AUDIT_STREAM_TEST_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_reconnects_after_a_broker_restart_and_finishes_exactly() {
    let mut broker = Tansu::start_file_backed();
    let n = records();
    let run = Run::prepare(&broker.bootstrap(), |t, p| broker.create_topic(t, p), n).await;
    let mut rng = Rng::from_env();
    let started = Instant::now();
    let service = run.start("service", &[]);
    let point = rng.between(20, 50) as i64 * n as i64 / 100;
    let deadline = Instant::now() + Duration::from_secs(120);
    while run.committed_total() < point {
        assert!(
            Instant::now() < deadline,
            "no progress to {point}\n{}",
            run.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = run.committed_total();
    broker.restart(Duration::from_secs(3));
    eprintln!(
        "broker restarted at {before} committed after {:?}",
        started.elapsed()
    );
    run.wait_committed_to_end(Duration::from_secs(180));
    eprintln!("run finished after {:?}", started.elapsed());
    service.stop();
    eprintln!("{}", run.rebalance_history());
    let outcome = run.verify().await;
    eprintln!("{outcome:?}");
    outcome.assert_exact();
}
