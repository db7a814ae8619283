//! Reading the benchmark binaries' JSON (they are separate crates, so the report reads values,
//! not shared types) and formatting figures.

use serde_json::Value;

use super::svg::Pt;

/// A figure as the benches write it: `{"median", "p10", "p90", "min", "max", "n"}`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fig {
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
    pub min: f64,
    pub max: f64,
    pub n: u64,
}

impl Fig {
    pub fn from(v: &Value) -> Option<Self> {
        Some(Self {
            median: v.get("median")?.as_f64()?,
            p10: v.get("p10")?.as_f64()?,
            p90: v.get("p90")?.as_f64()?,
            min: v.get("min")?.as_f64()?,
            max: v.get("max")?.as_f64()?,
            n: v.get("n")?.as_u64()?,
        })
    }

    /// The point to plot at `x`, with the p10–p90 spread.
    pub fn pt(&self, x: f64) -> Pt {
        Pt {
            x,
            y: self.median,
            lo: self.p10,
            hi: self.p90,
        }
    }

    /// `median (p10–p90)` with `digits` decimals.
    pub fn cell(&self, digits: usize) -> String {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median,
            self.p10,
            self.p90,
            d = digits
        )
    }
}

/// The string at `key`, or "".
pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The number at `key`, or NaN.
pub fn f(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// The array at `key`, or empty.
pub fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// 10 → "10", 1000 → "1k", 100000 → "100k".
pub fn count(n: f64) -> String {
    if n >= 1e6 && n % 1e6 == 0.0 {
        format!("{}M", n / 1e6)
    } else if n >= 1e3 && n % 1e3 == 0.0 {
        format!("{}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / 1048576.0)
}

/// Sorted distinct values of `key` over `items`.
pub fn distinct(items: &[Value], key: &str) -> Vec<f64> {
    let mut v: Vec<f64> = items
        .iter()
        .map(|i| f(i, key))
        .filter(|x| x.is_finite())
        .collect();
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

/// A target line for the summary: what, the goal, the measured figure, met or not.
#[derive(Debug, Clone)]
pub struct Target {
    pub what: String,
    pub goal: String,
    pub measured: String,
    /// None: not measured in this run.
    pub met: Option<bool>,
}

impl Target {
    pub fn row(&self) -> String {
        let verdict = match self.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        format!(
            "| {} | {} | {} | {} |",
            self.what, self.goal, self.measured, verdict
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_and_format() {
        let v = serde_json::json!({"median": 2.0, "p10": 1.0, "p90": 3.5, "min": 0.5, "max": 4.0, "n": 9});
        let fig = Fig::from(&v).unwrap();
        assert_eq!(fig.cell(1), "2.0 (1.0–3.5)");
        assert!(Fig::from(&serde_json::json!({"median": 1})).is_none());
        assert_eq!(count(100_000.0), "100k");
        assert_eq!(count(1_500.0), "1500");
    }
}
