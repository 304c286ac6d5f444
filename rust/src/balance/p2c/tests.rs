use super::*;

#[test]
fn peak_is_taken_at_once_and_decays_toward_recent_observations() {
    let t0 = Instant::now();
    let e = PeakEwma::new(t0);
    e.observe(Duration::from_millis(200), t0);
    let now = t0 + Duration::from_millis(1);
    let peak = e.cost(0, now);
    assert!((peak - 200e6).abs() / 200e6 < 0.01, "peak {peak}");
    // Fast answers pull the estimate down over the decay period, not at once.
    e.observe(Duration::from_millis(1), t0 + Duration::from_secs(1));
    let after_1s = e.cost(0, t0 + Duration::from_secs(1));
    assert!(after_1s > 150e6 && after_1s < 200e6, "after 1 s {after_1s}");
    e.observe(Duration::from_millis(1), t0 + Duration::from_secs(60));
    assert!(e.cost(0, t0 + Duration::from_secs(60)) < 5e6);
}

#[test]
fn pending_requests_raise_the_cost() {
    let t0 = Instant::now();
    let e = PeakEwma::new(t0);
    assert!((e.cost(3, t0) - 4.0 * DEFAULT_RTT.as_nanos() as f64).abs() < 1.0);
}

#[test]
fn prefers_the_faster_endpoint() {
    let t0 = Instant::now();
    let loads: Vec<PeakEwma> = (0..3).map(|_| PeakEwma::new(t0)).collect();
    loads[0].observe(Duration::from_millis(50), t0);
    loads[1].observe(Duration::from_millis(1), t0);
    loads[2].observe(Duration::from_millis(50), t0);
    for _ in 0..50 {
        loads[1].observe(Duration::from_millis(1), t0);
    }
    let now = t0 + Duration::from_millis(10);
    let mut counts = [0; 3];
    for _ in 0..3000 {
        counts[pick(3, |i| loads[i].cost(0, now)).unwrap()] += 1;
    }
    // The fast one wins every draw it is in: 2 of the 3 possible pairs.
    assert!(counts[1] > 1800, "{counts:?}");
    assert!(
        counts[0] > 0 && counts[2] > 0,
        "slow ones still get the draws without the fast one"
    );
}

#[test]
fn two_endpoints_always_compare_both() {
    let mut n = 0;
    for _ in 0..1000 {
        if pick(2, |i| if i == 1 { 1.0 } else { 2.0 }) == Some(1) {
            n += 1;
        }
    }
    assert_eq!(n, 1000);
    assert_eq!(pick(0, |_| 0.0), None);
    assert_eq!(pick(1, |_| 0.0), Some(0));
}
