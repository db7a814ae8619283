//! Summary statistics shared by the benchmark binaries: every figure is a median of several
//! samples with its spread (p10/p90 and min/max). Benchmarks report; they never assert on timing.

use serde::Serialize;

/// A figure: the median of `n` samples and their spread.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    /// Summarises `samples` (nearest-rank percentiles). An empty slice gives zeros with `n = 0`.
    pub fn of(samples: &[f64]) -> Self {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let Some((&min, &max)) = v.first().zip(v.last()) else {
            return Self {
                median: 0.0,
                p10: 0.0,
                p90: 0.0,
                min: 0.0,
                max: 0.0,
                n: 0,
            };
        };
        Self {
            median: median_sorted(&v),
            p10: percentile_sorted(&v, 10.0),
            p90: percentile_sorted(&v, 90.0),
            min,
            max,
            n: v.len(),
        }
    }

    /// Summarises durations given in seconds or any other unit, after mapping.
    pub fn of_iter(samples: impl IntoIterator<Item = f64>) -> Self {
        Self::of(&samples.into_iter().collect::<Vec<_>>())
    }
}

/// The median of sorted values (mean of the middle two for an even count).
pub fn median_sorted(v: &[f64]) -> f64 {
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The median of unsorted values.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    median_sorted(&v)
}

/// Nearest-rank percentile of sorted values.
pub fn percentile_sorted(v: &[f64], pct: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = (pct / 100.0 * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Nearest-rank percentile of unsorted values.
pub fn percentile(values: &[f64], pct: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    percentile_sorted(&v, pct)
}
