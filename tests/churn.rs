//! Scale-out and failure in one consumer group on a real broker (Tansu): three service
//! instances share the input partitions, one is killed with `kill -9` and another added
//! mid-run. The store ends with exactly the offline oracle's audit records and every
//! partition's final checkpoint holds the oracle's final state.

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
    let run = Run::prepare(&broker.bootstrap(), |t, p| broker.create_topic(t, p), n).await;
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
    // d took part: it was assigned partitions mid-run.
    let d_log = std::fs::read_to_string(run.dir.path().join("d.log")).expect("d's log");
    assert!(
        d_log.contains("Partitions assigned partitions=[("),
        "the added instance was assigned partitions\n{log}"
    );
}
