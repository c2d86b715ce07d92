//! The one percentile estimator of every benchmark and test report:
//! nearest rank. The q-quantile of n sorted samples is the sample of rank
//! ceil(q * n) (1-based, at least 1): always a value that was measured, and
//! p99 of 100 samples is the 99th, never an interpolation towards the max.

/// The nearest-rank `q`-quantile (0 < q <= 1) of `sorted` (ascending), or
/// `None` when there are no samples.
pub fn percentile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), Some(500));
        assert_eq!(percentile(&v, 0.99), Some(990));
        assert_eq!(percentile(&v, 0.999), Some(999));
        assert_eq!(percentile(&v, 1.0), Some(1000));
        assert_eq!(percentile(&[7], 0.999), Some(7));
        assert_eq!(percentile(&[1, 2], 0.0), Some(1));
        assert_eq!(percentile::<u32>(&[], 0.5), None);
    }
}
