//! Contact sheets of a run folder written by [`foil_run::run_set`]: each direction's
//! per-input grids stacked into one image. Scoring a run folder is
//! [`foil_metrics::run::evaluate_run`]'s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use foil_core::{Error, Result};
use foil_run::read_results;

pub use foil_metrics::run::LPIPS_MIN_SIDE;

/// Stacks each direction's per-input grids (original | counterfactual | change heat map) into
/// one PNG per direction, `out/<from>_to_<to>.png`, at most `max_rows` rows (sorted by key),
/// written atomically. Returns the files written.
pub fn contact_sheets(out: &Path, max_rows: usize) -> Result<Vec<PathBuf>> {
    let mut by_dir: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for (path, _) in read_results(out)? {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        by_dir
            .entry(dir)
            .or_default()
            .push(path.with_extension("grid.png"));
    }
    let mut written = Vec::new();
    for (dir, grids) in by_dir {
        let rows = grids
            .iter()
            .take(max_rows)
            .map(|p| {
                image::open(p)
                    .map(|i| i.to_rgb8())
                    .map_err(|e| Error::format(p.display().to_string(), e))
            })
            .collect::<Result<Vec<_>>>()?;
        let width = rows.iter().map(|r| r.width()).max().unwrap_or(0);
        let height = rows
            .iter()
            .map(|r| r.height() + 2)
            .sum::<u32>()
            .saturating_sub(2);
        let mut sheet = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
        let mut y = 0;
        for row in &rows {
            image::GenericImage::copy_from(&mut sheet, row, 0, y)
                .map_err(|e| Error::format("contact sheet", e))?;
            y += row.height() + 2;
        }
        let path = dir.with_extension("png");
        foil_run::save_png(&path, &sheet)?;
        written.push(path);
    }
    Ok(written)
}
