//! The two SVG plots of a sweep: depth versus `T` and median time versus
//! `T`, both on log-log axes, one series per family instance × plan.
//!
//! Colour tells the family instance apart and the marker tells the plan
//! apart, so 18 series stay readable.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;

use super::report::{Row, RowKind};
use super::{Result, SweepError};

/// Plot size in pixels.
const SIZE: (u32, u32) = (1100, 720);

/// Series name → points `(T, y)` sorted by `T`, in first-seen order of the
/// family instances (so colours follow the table).
struct Series {
    family_idx: usize,
    plan_idx: usize,
    name: String,
    points: Vec<(f64, f64)>,
}

fn series(rows: &[Row], y: impl Fn(&Row) -> f64) -> Vec<Series> {
    let mut families: Vec<String> = Vec::new();
    let mut plans: Vec<String> = Vec::new();
    let mut map: BTreeMap<(usize, usize, String), Vec<(f64, f64)>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.kind == RowKind::Sweep) {
        let label = format!("{} {}", r.label, r.dtype.name());
        let fi = index_of(&mut families, &label);
        let pi = index_of(&mut plans, &r.plan);
        let v = y(r);
        if v.is_finite() && v > 0.0 {
            map.entry((fi, pi, format!("{label} · {}", r.plan)))
                .or_default()
                .push((r.len as f64, v));
        }
    }
    map.into_iter()
        .map(|((family_idx, plan_idx, name), mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                family_idx,
                plan_idx,
                name,
                points,
            }
        })
        .collect()
}

fn index_of(list: &mut Vec<String>, s: &str) -> usize {
    match list.iter().position(|x| x == s) {
        Some(i) => i,
        None => {
            list.push(s.to_string());
            list.len() - 1
        }
    }
}

/// `[lo, hi]` widened to whole powers of ten (log axes need `lo > 0`).
fn log_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() || hi <= 0.0 {
        return (1.0, 10.0);
    }
    let lo = 10f64.powf(lo.log10().floor());
    let mut hi = 10f64.powf(hi.log10().ceil());
    if hi <= lo {
        hi = lo * 10.0;
    }
    (lo, hi)
}

/// Writes `depth_vs_t.svg` (measured depth) into `dir`.
pub fn depth_plot(rows: &[Row], path: &Path) -> Result<()> {
    plot(
        rows,
        path,
        "Measured depth vs sequence length",
        "depth (combines on the critical path)",
        |r| r.depth as f64,
    )
}

/// Writes `time_vs_t.svg` (median wall time, ms) into `dir`.
pub fn time_plot(rows: &[Row], path: &Path) -> Result<()> {
    plot(
        rows,
        path,
        "Median wall time vs sequence length",
        "median time (ms)",
        |r| r.median_ms,
    )
}

fn plot(
    rows: &[Row],
    path: &Path,
    title: &str,
    y_desc: &str,
    y: impl Fn(&Row) -> f64,
) -> Result<()> {
    let all = series(rows, y);
    let (x_lo, x_hi) = log_bounds(all.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let (y_lo, y_hi) = log_bounds(all.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let err = |e: &dyn std::fmt::Display| {
        SweepError::Output(format!("drawing {}: {e}", path.display()))
    };

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_lo..y_hi).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("T (steps)")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format_tick(*x))
        .y_label_formatter(&|y| format_tick(*y))
        .draw()
        .map_err(|e| err(&e))?;

    for s in &all {
        let color = Palette99::pick(s.family_idx).to_rgba();
        let line_style = color.stroke_width(2);
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), line_style))
            .map_err(|e| err(&e))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        let marker = s.plan_idx % 3;
        chart
            .draw_series(s.points.iter().map(move |&p| -> DynElement<_, _> {
                match marker {
                    0 => Circle::new(p, 4, color.filled()).into_dyn(),
                    1 => TriangleMarker::new(p, 5, color.filled()).into_dyn(),
                    _ => Cross::new(p, 5, color.stroke_width(2)).into_dyn(),
                }
            }))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// `1024` → `1024`, `1048576` → `2^20`, `0.001` → `0.001`.
fn format_tick(v: f64) -> String {
    if v >= 1.0 && v.fract() == 0.0 {
        let i = v as u64;
        if i >= 4096 && i.is_power_of_two() {
            return format!("2^{}", i.trailing_zeros());
        }
        if v >= 1e6 {
            return format!("{v:.0e}");
        }
        return format!("{i}");
    }
    format!("{v}")
}
