//! The report as a table: one column for all inputs, one per direction, then the notes.

use std::fmt;

use super::{Metrics, RunEvaluation, SIMILARITY_THRESHOLD, Similarity};

fn cell(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.4}"))
}

fn rows(m: &Metrics) -> Vec<(String, String)> {
    let sim = |f: fn(&Similarity) -> Option<f64>| m.similarity.as_ref().and_then(f);
    vec![
        ("inputs".into(), m.inputs.to_string()),
        ("flipped".into(), m.flipped.to_string()),
        ("success ratio".into(), format!("{:.4}", m.success_ratio)),
        (
            "LPIPS, flipped (papers)".into(),
            cell(m.lpips.and_then(|a| a.flipped)),
        ),
        ("LPIPS, all".into(), cell(m.lpips.map(|a| a.all))),
        ("FID".into(), cell(m.fid)),
        ("sFID".into(), cell(m.sfid)),
        ("COUT, all".into(), cell(m.cout.map(|a| a.all))),
        ("COUT, flipped".into(), cell(m.cout.and_then(|a| a.flipped))),
        (
            "MNAC, flipped (papers)".into(),
            cell(m.mnac.and_then(|a| a.flipped)),
        ),
        ("MNAC, all".into(), cell(m.mnac.map(|a| a.all))),
        (
            "similarity, flipped".into(),
            cell(sim(|s| s.flipped.map(|f| f.mean))),
        ),
        (
            format!("  share > {SIMILARITY_THRESHOLD}, flipped"),
            cell(sim(|s| s.flipped.map(|f| f.share_above))),
        ),
        ("similarity, all".into(), cell(sim(|s| Some(s.all.mean)))),
        (
            "diversity (LPIPS VGG)".into(),
            cell(m.diversity.map(|d| d.mean)),
        ),
        (
            "changed fraction".into(),
            format!("{:.4}", m.changed_fraction),
        ),
        (
            "mean abs change".into(),
            format!("{:.4}", m.mean_abs_change),
        ),
        (
            "denoiser calls / input".into(),
            format!("{:.1}", m.denoiser_calls),
        ),
    ]
}

impl fmt::Display for RunEvaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let title = if self.method.is_empty() {
            "evaluation"
        } else {
            &self.method
        };
        writeln!(f, "{title}: {}", self.scored_folder.display())?;
        if !self.seeds.is_empty() {
            writeln!(
                f,
                "seeds {:?}: diversity compares them all; every other metric is of the first \
                 seed's folder",
                self.seeds
            )?;
        }
        for (what, label) in [
            ("FID / sFID encoder", &self.fid_encoder),
            ("similarity encoder", &self.similarity_encoder),
        ] {
            if let Some(l) = label {
                let caveat = if l.inception {
                    "InceptionV3: compares with the papers"
                } else {
                    "not InceptionV3: does not compare with the papers' numbers"
                };
                writeln!(f, "{what}: {} ({caveat})", l.name)?;
            }
        }
        if !self.mnac_attributes.is_empty() {
            let excluded = match self.mnac_excluded {
                Some(j) => format!(
                    ", without {} (not the papers' count)",
                    self.mnac_attributes.get(j).map_or("?", String::as_str)
                ),
                None => ", every attribute counted (as the papers)".into(),
            };
            writeln!(
                f,
                "MNAC attributes: {}{excluded}",
                self.mnac_attributes.join(", ")
            )?;
        }
        let mut columns = vec![("all".to_string(), rows(&self.overall))];
        for d in &self.directions {
            columns.push((d.label(), rows(&d.metrics)));
        }
        let labels: Vec<&String> = columns[0].1.iter().map(|(k, _)| k).collect();
        let first = labels.iter().map(|k| k.len()).max().unwrap_or(0);
        let widths: Vec<usize> = columns
            .iter()
            .map(|(h, r)| {
                r.iter()
                    .map(|(_, v)| v.len())
                    .chain([h.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        write!(f, "{:first$}", "")?;
        for ((h, _), w) in columns.iter().zip(&widths) {
            write!(f, "  {h:>w$}")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:-<1$}",
            "",
            first + widths.iter().map(|w| w + 2).sum::<usize>()
        )?;
        for (row, label) in labels.iter().enumerate() {
            write!(f, "{label:first$}")?;
            for ((_, r), w) in columns.iter().zip(&widths) {
                write!(f, "  {:>w$}", r[row].1)?;
            }
            writeln!(f)?;
        }
        if !self.notes.is_empty() {
            writeln!(f, "not computed (-):")?;
            for n in &self.notes {
                let scope = n
                    .direction
                    .as_ref()
                    .map_or(String::new(), |d| format!(" ({d})"));
                writeln!(f, "  {}{scope}: {}", n.metric.name(), n.reason)?;
            }
        }
        Ok(())
    }
}
