//! One evaluation report per run: a table for people, JSON for tools.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use foil_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::flips::FlipReport;
use crate::similarity::SimilaritySummary;

/// Everything measured about one counterfactual run; absent metrics stay `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The method and its settings, as the user names them.
    pub method: String,
    /// Number of inputs.
    pub inputs: usize,
    /// Success ratio per direction and overall.
    pub flips: Option<FlipReport>,
    /// Mean LPIPS between originals and counterfactuals.
    pub lpips: Option<f64>,
    /// FID between originals and counterfactuals.
    pub fid: Option<f64>,
    /// Split-half FID.
    pub sfid: Option<f64>,
    /// Mean COUT.
    pub cout: Option<f64>,
    /// Mean MNAC.
    pub mnac: Option<f64>,
    /// Face similarity (FS mean, FVA share).
    pub face: Option<SimilaritySummary>,
    /// SimSiam similarity (S3).
    pub simsiam: Option<SimilaritySummary>,
    /// Mean diversity across seeds.
    pub diversity: Option<f64>,
    /// Anything else, by name (changed-pixel fraction, seconds per image, ...).
    pub extra: BTreeMap<String, f64>,
}

impl Evaluation {
    /// JSON text of the report.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::format("evaluation", e))
    }

    /// Reads a report written by [`write_json`](Self::write_json).
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::format("evaluation JSON", e))
    }

    /// Writes the report as JSON, atomically.
    pub fn write_json(&self, path: impl AsRef<Path>) -> Result<()> {
        foil_core::image_io::write_atomic(path.as_ref(), self.to_json()?.as_bytes())
    }

    fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![("inputs".to_string(), self.inputs.to_string())];
        if let Some(f) = &self.flips {
            rows.push(("success ratio".into(), format!("{:.4}", f.overall)));
            for d in &f.directions {
                rows.push((
                    format!("  {} -> {}", d.from, d.to),
                    format!("{:.4} ({}/{})", d.ratio, d.flipped, d.total),
                ));
            }
        }
        let mut opt = |name: &str, v: Option<f64>| {
            if let Some(v) = v {
                rows.push((name.to_string(), format!("{v:.4}")));
            }
        };
        opt("LPIPS", self.lpips);
        opt("FID", self.fid);
        opt("sFID", self.sfid);
        opt("COUT", self.cout);
        opt("MNAC", self.mnac);
        opt("diversity", self.diversity);
        for (name, s) in [("FS", &self.face), ("S3", &self.simsiam)] {
            if let Some(s) = s {
                rows.push((name.into(), format!("{:.4}", s.mean)));
                if name == "FS" {
                    rows.push((
                        format!("FVA (> {})", s.threshold),
                        format!("{:.4}", s.share_above),
                    ));
                }
            }
        }
        for (k, v) in &self.extra {
            rows.push((k.clone(), format!("{v:.4}")));
        }
        rows
    }
}

impl fmt::Display for Evaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = self.rows();
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0).max(6);
        writeln!(
            f,
            "{}",
            if self.method.is_empty() {
                "evaluation"
            } else {
                &self.method
            }
        )?;
        writeln!(f, "{:-<1$}", "", width + 14)?;
        for (k, v) in rows {
            writeln!(f, "{k:<width$}  {v}")?;
        }
        Ok(())
    }
}
