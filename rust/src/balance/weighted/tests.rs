use super::*;

fn counts(weights: &[u32], picks: usize) -> Vec<usize> {
    let w = SmoothWeighted::new(weights);
    let mut counts = vec![0; weights.len()];
    for _ in 0..picks {
        counts[w.pick().unwrap()] += 1;
    }
    counts
}

#[test]
fn ninety_ten_is_exact_over_ten_thousand() {
    assert_eq!(counts(&[90, 10], 10_000), [9000, 1000]);
}

#[test]
fn picks_are_spread_not_bunched() {
    let w = SmoothWeighted::new(&[5, 1, 1]);
    let seq: String = (0..7).map(|_| ["a", "b", "c"][w.pick().unwrap()]).collect();
    assert_eq!(seq, "aabacaa"); // nginx's documented sequence for 5/1/1
}

#[test]
fn weight_zero_is_never_picked() {
    assert_eq!(counts(&[0, 1, 0, 2], 3000), [0, 1000, 0, 2000]);
}

#[test]
fn all_zero_or_empty_picks_nothing() {
    assert_eq!(SmoothWeighted::new(&[0, 0]).pick(), None);
    assert_eq!(SmoothWeighted::new(&[]).pick(), None);
}

#[test]
fn extreme_weights_interleave_exactly() {
    // The minority lands exactly once per period of 1,000,000.
    assert_eq!(counts(&[999_999, 1], 1_000_000), [999_999, 1]);
    assert_eq!(counts(&[1_000_000, 1_000_000, 1], 2_000_001), [1_000_000, 1_000_000, 1]);
}
