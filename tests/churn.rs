//! Scale-out and failure in one consumer group on a real broker (Tansu): three service
//! instances share the input partitions, one is killed with `kill -9` and another added
//! mid-run. The store ends with exactly the offline oracle's audit records and every
//! partition's final checkpoint holds the oracle's final state.
//!
//! A fifth of the records is published only once the added instance has been assigned
//! partitions, so it always joins while there is work left, however fast the others are.

mod support;

use std::time::{Duration, Instant};

use support::crash::{Rng, Run};
use support::Broker;

/// `AUDIT_STREAM_TEST_RECORDS` changes the run's size.
fn records() -> usize {
    std::env::var("AUDIT_STREAM_TEST_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(80_000)
}

fn wait_committed(run: &Run, point: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while run.committed_total() < point {
        assert!(
            Instant::now() < deadline,
            "no progress to {point}\n{}",
            run.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_killed_one_added_lose_and_double_nothing() {
    let broker = Broker::start(false);
    let n = records();
    let held = n / 5;
    let mut run = Run::prepare_holding_back(
        &broker.bootstrap(),
        |t, p| broker.create_topic(t, p),
        n,
        held,
    )
    .await;
    let mut rng = Rng::from_env();
    let started = Instant::now();
    let a = run.start("a", &[]);
    let b = run.start("b", &[]);
    let c = run.start("c", &[]);
    wait_committed(&run, rng.between(10, 25) as i64 * n as i64 / 100);
    std::thread::sleep(Duration::from_millis(rng.between(0, 1_000)));
    b.kill9();
    eprintln!(
        "b killed at {} committed after {:?}",
        run.committed_total(),
        started.elapsed()
    );
    // The dead member's session runs out first (see tests/crash_kill.rs): the new
    // member's join then moves b's partitions, and some of a's and c's, to d.
    std::thread::sleep(Duration::from_secs(7));
    let d = run.start("d", &[]);
    wait_assigned(&run, "d");
    eprintln!(
        "d assigned partitions at {} committed after {:?}",
        run.committed_total(),
        started.elapsed()
    );
    run.publish_held().await;
    run.wait_committed_to_end(Duration::from_secs(180));
    eprintln!("run finished after {:?}", started.elapsed());
    for service in [a, c, d] {
        service.stop();
    }
    let log = run.rebalance_history();
    eprintln!("{log}");
    let outcome = run.verify().await;
    eprintln!("{outcome:?}");
    outcome.assert_exact();
}

/// Waits until `service`'s log says it was assigned partitions (an empty assignment does
/// not count).
fn wait_assigned(run: &Run, service: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let path = run.dir.path().join(format!("{service}.log"));
    while !std::fs::read_to_string(&path)
        .unwrap_or_default()
        .contains("Partitions assigned partitions=[(")
    {
        assert!(
            Instant::now() < deadline,
            "{service} was not assigned partitions\n{}",
            run.rebalance_history()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
