//! Smooth weighted round robin over a rule's backendRefs (nginx's algorithm).
//!
//! Deterministic: with weights 90/10 every run of 100 picks gives exactly 90 and 10, spread out
//! (not 90 in a row); weight 0 is never picked.

use parking_lot::Mutex;

#[derive(Debug)]
pub struct SmoothWeighted {
    weights: Box<[i64]>,
    total: i64,
    current: Mutex<Box<[i64]>>,
}

impl SmoothWeighted {
    pub fn new(weights: &[u32]) -> Self {
        let weights: Box<[i64]> = weights.iter().map(|&w| i64::from(w)).collect();
        let total = weights.iter().sum();
        let current = Mutex::new(vec![0; weights.len()].into_boxed_slice());
        SmoothWeighted {
            weights,
            total,
            current,
        }
    }

    /// The index of the next pick, or `None` when every weight is 0.
    pub fn pick(&self) -> Option<usize> {
        if self.total == 0 {
            return None;
        }
        let mut current = self.current.lock();
        let mut best = usize::MAX;
        let mut best_value = i64::MIN;
        for (i, (c, &w)) in current.iter_mut().zip(self.weights.iter()).enumerate() {
            if w == 0 {
                continue;
            }
            *c += w;
            if *c > best_value {
                best = i;
                best_value = *c;
            }
        }
        current[best] -= self.total;
        Some(best)
    }
}

#[cfg(test)]
mod tests;
