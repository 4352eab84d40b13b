//! Side table of `correct`: per space, the latency each (decision, option) costs on one
//! backend — BBSSP's corrected table, and the naive table of blocks timed alone.

use serde::{Deserialize, Serialize};

/// One option's entries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LutEntry {
    /// BBSSP's layer-adaptive entry: `t_i + (Lat(SSBN_(i,j)) − Lat(SSBN_0))`.
    pub corrected_ms: f64,
    /// The option timed alone with its real input shape (summed over its uses), if timed.
    pub naive_ms: Option<f64>,
}

/// One decision's row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LutRow {
    pub decision: u32,
    /// `t_i`: the decision's share of Lat(SSBN_0) with its default option.
    pub share_ms: f64,
    pub options: Vec<LutEntry>,
}

/// Where the shares `t_i` came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareSource {
    /// The backend's per-layer profile of SSBN_0, scaled to sum to its latency.
    Profile,
    /// The default blocks timed alone, scaled to sum to Lat(SSBN_0).
    Standalone,
    /// Nothing to go by: Lat(SSBN_0) split evenly. Predictions do not depend on the split.
    Even,
}

/// The latency table of one space on one backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpaceLut {
    pub space: u32,
    /// The backend fingerprint the latencies belong to.
    pub backend: String,
    /// Lat(SSBN_0).
    pub base_ms: f64,
    /// What is not any decision's: stem, fixed parts, head (`base_ms − Σ share_ms`).
    pub fixed_ms: f64,
    /// The fixed parts timed alone, summed (the naive table's constant), if timed.
    pub fixed_naive_ms: Option<f64>,
    pub shares: ShareSource,
    pub rows: Vec<LutRow>,
}

impl SpaceLut {
    /// Σ of the corrected entries of `choices` plus the fixed part: BBSSP's prediction.
    pub fn corrected(&self, choices: &[u32]) -> f64 {
        self.fixed_ms
            + self
                .rows
                .iter()
                .zip(choices)
                .map(|(r, &c)| r.options[c as usize].corrected_ms)
                .sum::<f64>()
    }

    /// Σ of the naive entries plus the fixed parts timed alone, if every entry was timed.
    pub fn naive(&self, choices: &[u32]) -> Option<f64> {
        let mut total = self.fixed_naive_ms?;
        for (r, &c) in self.rows.iter().zip(choices) {
            total += r.options[c as usize].naive_ms?;
        }
        Some(total)
    }
}
