//! Round robin over a backend's endpoints.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// The next of `n` endpoints, or `None` when there are none.
    pub fn pick(&self, n: usize) -> Option<usize> {
        (n > 0).then(|| self.next.fetch_add(1, Relaxed) % n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_through_every_endpoint_in_order() {
        let rr = RoundRobin::default();
        let picks: Vec<_> = (0..7).map(|_| rr.pick(3).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(rr.pick(0), None);
    }
}
