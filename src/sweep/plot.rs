//! The two SVG plots of a sweep, both on log-log axes with the legend
//! beside the chart:
//! - depth versus `T`: one series per plan and family instance, where
//!   instances whose depths coincide (depth depends on the plan's chunk, not
//!   on the arithmetic) are merged into one series naming them all;
//! - median time versus `T`: one series per family instance × plan, colour
//!   by instance and marker by plan.

use std::path::Path;

use plotters::coord::combinators::IntoLogRange;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::{Row, RowKind};
use super::{Result, SweepError};

/// Whole picture, pixels.
const SIZE: (u32, u32) = (1280, 720);
/// Width of the chart; the legend gets the rest.
const CHART_WIDTH: u32 = 900;

/// Distinct, print-safe colours (Tableau 10, yellow last).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
];

/// Marker shapes, one per plan (cycled).
#[derive(Clone, Copy)]
enum Marker {
    Circle,
    Triangle,
    Cross,
    Square,
}

/// Greys of the reference curves (told apart by shade).
const REFERENCE_GREYS: [RGBColor; 3] = [
    RGBColor(90, 90, 90),
    RGBColor(140, 140, 140),
    RGBColor(185, 185, 185),
];

/// Reference curves are drawn without markers.
const NO_MARKER: Option<Marker> = None;

const MARKERS: [Marker; 4] = [
    Marker::Circle,
    Marker::Triangle,
    Marker::Cross,
    Marker::Square,
];

/// One drawn series.
struct Series {
    name: String,
    color: RGBColor,
    /// Line width in pixels.
    width: u32,
    marker: Option<Marker>,
    points: Vec<(f64, f64)>,
}

/// `(T, y)` points of one curve, sorted by `T`.
type Points = Vec<(f64, f64)>;

/// The rows of one family instance under one plan.
struct Group {
    instance: String,
    plan: String,
    points: Points,
}

/// Index of `s` in `list`, appending it when new (first-seen order).
fn index_of(list: &mut Vec<String>, s: &str) -> usize {
    match list.iter().position(|x| x == s) {
        Some(i) => i,
        None => {
            list.push(s.to_string());
            list.len() - 1
        }
    }
}

/// Groups grid rows by (instance, plan), in table order, with `y` values
/// that are positive and finite (log axes).
fn grouped(rows: &[Row], y: &dyn Fn(&Row) -> f64) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for r in rows.iter().filter(|r| r.kind == RowKind::Sweep) {
        let v = y(r);
        if !(v.is_finite() && v > 0.0) {
            continue;
        }
        let instance = format!("{} {}", r.label, r.dtype.name());
        match out
            .iter_mut()
            .find(|g| g.instance == instance && g.plan == r.plan)
        {
            Some(g) => g.points.push((r.len as f64, v)),
            None => out.push(Group {
                instance,
                plan: r.plan.clone(),
                points: vec![(r.len as f64, v)],
            }),
        }
    }
    for g in &mut out {
        g.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// Time series: colour per instance, marker per plan.
fn time_series(rows: &[Row]) -> Vec<Series> {
    let (mut instances, mut plans) = (Vec::new(), Vec::new());
    grouped(rows, &|r| r.median_ms)
        .into_iter()
        .map(
            |Group {
                 instance,
                 plan,
                 points,
             }| {
                let ci = index_of(&mut instances, &instance);
                let pi = index_of(&mut plans, &plan);
                Series {
                    name: format!("{instance} · {plan}"),
                    color: PALETTE[ci % PALETTE.len()],
                    width: 2,
                    marker: Some(MARKERS[pi % MARKERS.len()]),
                    points,
                }
            },
        )
        .collect()
}

/// Depth series: identical curves of one plan merged, colour per merged
/// series, marker per plan.
fn depth_series(rows: &[Row]) -> Vec<Series> {
    let groups = grouped(rows, &|r| r.depth as f64);
    let mut all_instances: Vec<String> = Vec::new();
    for g in &groups {
        index_of(&mut all_instances, &g.instance);
    }
    // (plan, points, instances with exactly these points)
    let mut merged: Vec<(String, Points, Vec<String>)> = Vec::new();
    for g in groups {
        match merged
            .iter_mut()
            .find(|(p, pts, _)| *p == g.plan && *pts == g.points)
        {
            Some((_, _, who)) => who.push(g.instance),
            None => merged.push((g.plan, g.points, vec![g.instance])),
        }
    }
    let mut plans = Vec::new();
    merged
        .into_iter()
        .enumerate()
        .map(|(i, (plan, points, who))| {
            let pi = index_of(&mut plans, &plan);
            let who = if who.len() == all_instances.len() && who.len() > 1 {
                "every family".to_string()
            } else {
                who.join(", ")
            };
            Series {
                name: format!("{plan} · {who}"),
                color: PALETTE[i % PALETTE.len()],
                // Curves can still coincide over part of the range (auto
                // is sequential at short T): earlier ones are drawn wider,
                // so they show as a border around later ones.
                width: 6u32.saturating_sub(i as u32).max(2),
                marker: Some(MARKERS[pi % MARKERS.len()]),
                points,
            }
        })
        .collect()
}

/// The data range widened by a third of a decade on each side (log axes
/// need `lo > 0`).
fn log_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || hi <= 0.0 {
        return (1.0, 10.0);
    }
    let pad = 10f64.powf(1.0 / 3.0);
    (lo / pad, hi * pad)
}

/// Writes the depth-versus-`T` plot (measured depth) to `path`.
pub fn depth_plot(rows: &[Row], path: &Path) -> Result<()> {
    draw(
        &depth_series(rows),
        path,
        "Measured depth vs sequence length",
        "depth (combines on the critical path)",
    )
}

/// Writes the time-versus-`T` plot (median wall time, ms) to `path`.
pub fn time_plot(rows: &[Row], path: &Path) -> Result<()> {
    draw(
        &time_series(rows),
        path,
        "Median wall time vs sequence length",
        "median time per scan (ms)",
    )
}

/// Writes the hierarchy plot to `path`: measured depth versus `T` of the
/// sequential loop, of the lowest-depth scan plan of every linear family
/// instance, and of the Newton solves of every nonlinear cell, with the
/// paper's predicted shapes as thin grey reference curves anchored at the
/// first point of the curve they describe: `T` (sequential), `c·log2 T`
/// (scans; and Newton with an iteration count flat in `T`, each iteration
/// a log-depth scan) and `c·T·log2 T` (Newton needing about `T`
/// iterations, each a log-depth scan).
pub fn hierarchy_plot(rows: &[Row], path: &Path) -> Result<()> {
    draw(
        &hierarchy_series(rows),
        path,
        "Depth hierarchy: sequential, linear scans, Newton",
        "measured depth (combines / parallel steps on the critical path)",
    )
}

/// Minimum `y` per `T` of rows passing `keep`, sorted by `T`.
fn min_per_t(rows: &[&Row], y: impl Fn(&Row) -> f64) -> Points {
    let mut pts: Points = Vec::new();
    for r in rows {
        let v = y(r);
        if !(v.is_finite() && v > 0.0) {
            continue;
        }
        let t = r.len as f64;
        match pts.iter_mut().find(|p| p.0 == t) {
            Some(p) => p.1 = p.1.min(v),
            None => pts.push((t, v)),
        }
    }
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts
}

fn hierarchy_series(rows: &[Row]) -> Vec<Series> {
    let grid: Vec<&Row> = rows.iter().filter(|r| r.kind == RowKind::Sweep).collect();
    let depth = |r: &Row| r.depth as f64;
    let sequential: Vec<&Row> = grid
        .iter()
        .copied()
        .filter(|r| r.plan.starts_with("sequential"))
        .collect();
    let mut out = Vec::new();
    let mut color = 0usize;
    let mut push = |out: &mut Vec<Series>, name: String, marker: Marker, points: Points| {
        if points.is_empty() {
            return;
        }
        out.push(Series {
            name,
            color: PALETTE[color % PALETTE.len()],
            width: 2,
            marker: Some(marker),
            points,
        });
        color += 1;
    };
    push(
        &mut out,
        "sequential loop (any family or cell)".into(),
        Marker::Square,
        min_per_t(&sequential, depth),
    );
    let mut labels: Vec<String> = Vec::new();
    for r in &grid {
        if !r.plan.starts_with("sequential") {
            index_of(&mut labels, &format!("{}\u{1}{}", r.family, r.label));
        }
    }
    let mut scan_first: Option<(f64, f64)> = None;
    let mut newton: Vec<(String, Points)> = Vec::new();
    for key in &labels {
        let (family, label) = key.split_once('\u{1}').unwrap_or((key, key));
        let mine: Vec<&Row> = grid
            .iter()
            .copied()
            .filter(|r| r.family == family && r.label == label && !r.plan.starts_with("sequential"))
            .collect();
        let pts = min_per_t(&mine, depth);
        if family == "newton" {
            newton.push((label.to_string(), pts));
        } else {
            if scan_first.is_none() {
                scan_first = pts.first().copied();
            }
            push(&mut out, format!("scan · {label}"), Marker::Circle, pts);
        }
    }
    // Newton curves: contractive (flattest) first, the hard ones after.
    let mut newton_first: Vec<(f64, f64, bool)> = Vec::new();
    for (label, pts) in newton {
        let growth = match (pts.first(), pts.last()) {
            (Some(a), Some(b)) if b.0 > a.0 => (b.1 / a.1).ln() / (b.0 / a.0).ln(),
            _ => 0.0,
        };
        // Slope ≥ 0.7 on log-log axes: depth grows like a power of T.
        let hard = growth >= 0.7;
        if let Some(&(t, d)) = pts.first() {
            newton_first.push((t, d, hard));
        }
        let marker = if hard {
            Marker::Cross
        } else {
            Marker::Triangle
        };
        push(&mut out, format!("newton · {label}"), marker, pts);
    }

    // Reference curves over the plotted T range.
    let ts: Vec<f64> = {
        let mut v: Vec<f64> = grid.iter().map(|r| r.len as f64).collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        v
    };
    let lg = |t: f64| t.log2().max(1.0);
    let mut reference = |name: &str, anchor: Option<(f64, f64)>, f: &dyn Fn(f64) -> f64| {
        if let Some((t0, d0)) = anchor {
            let c = d0 / f(t0);
            out.push(Series {
                name: name.to_string(),
                color: REFERENCE_GREYS[out.len() % REFERENCE_GREYS.len()],
                width: 2,
                marker: NO_MARKER,
                points: ts.iter().map(|&t| (t, c * f(t))).collect(),
            });
        }
    };
    reference(
        "reference: T (sequential)",
        ts.first().map(|&t| (t, t)),
        &|t| t,
    );
    reference("reference: c·log2 T (scans, NC¹/PNC¹)", scan_first, &lg);
    let contractive = newton_first.iter().find(|x| !x.2).map(|x| (x.0, x.1));
    reference(
        "reference: c·log2 T (Newton, flat iterations × log-depth scans)",
        contractive,
        &lg,
    );
    let hard = newton_first.iter().find(|x| x.2).map(|x| (x.0, x.1));
    reference(
        "reference: c·T·log2 T (Newton, ~T iterations)",
        hard,
        &|t| t * lg(t),
    );
    out
}

fn draw(all: &[Series], path: &Path, title: &str, y_desc: &str) -> Result<()> {
    let err =
        |e: &dyn std::fmt::Display| SweepError::Output(format!("drawing {}: {e}", path.display()));
    let (x_lo, x_hi) = log_bounds(all.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let (y_lo, y_hi) = log_bounds(all.iter().flat_map(|s| s.points.iter().map(|p| p.1)));

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (left, right) = root.split_horizontally(CHART_WIDTH);
    let mut chart = ChartBuilder::on(&left)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(75)
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

    for s in all {
        if s.marker.is_none() {
            // Reference curves: dashed, so they read as guides, not data.
            chart
                .draw_series(DashedLineSeries::new(
                    s.points.iter().copied(),
                    8,
                    6,
                    s.color.stroke_width(s.width),
                ))
                .map_err(|e| err(&e))?;
            continue;
        }
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                s.color.stroke_width(s.width),
            ))
            .map_err(|e| err(&e))?;
        let (c, pts) = (s.color, s.points.iter().copied());
        // One arm per marker type: each is a different element type.
        let Some(marker) = s.marker else {
            continue;
        };
        match marker {
            Marker::Circle => chart
                .draw_series(pts.map(|p| Circle::new(p, 4, c.filled())))
                .map(|_| ()),
            Marker::Triangle => chart
                .draw_series(pts.map(|p| TriangleMarker::new(p, 5, c.filled())))
                .map(|_| ()),
            Marker::Cross => chart
                .draw_series(pts.map(|p| Cross::new(p, 4, c.stroke_width(2))))
                .map(|_| ()),
            Marker::Square => {
                chart
                    .draw_series(pts.map(|p| {
                        EmptyElement::at(p) + Rectangle::new([(-4, -4), (4, 4)], c.filled())
                    }))
                    .map(|_| ())
            }
        }
        .map_err(|e| err(&e))?;
    }
    legend(&right, all).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// The legend, one entry per series (line, marker, name wrapped at
/// commas to fit beside the chart), top to bottom.
fn legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    all: &[Series],
) -> std::result::Result<(), DrawingAreaErrorKind<std::io::Error>> {
    const LINE_H: i32 = 16;
    const MAX_CHARS: usize = 52;
    let font = ("sans-serif", 12).into_font().color(&BLACK);
    let mut y = 50;
    for s in all {
        let c = s.color;
        area.draw(&PathElement::new(vec![(8, y), (36, y)], c.stroke_width(2)))?;
        let at = (22, y);
        match s.marker {
            Some(Marker::Circle) => area.draw(&Circle::new(at, 4, c.filled()))?,
            Some(Marker::Triangle) => area.draw(&TriangleMarker::new(at, 5, c.filled()))?,
            Some(Marker::Cross) => area.draw(&Cross::new(at, 4, c.stroke_width(2)))?,
            Some(Marker::Square) => {
                area.draw(&Rectangle::new([(18, y - 4), (26, y + 4)], c.filled()))?
            }
            None => {}
        }
        for line in wrap(&s.name, MAX_CHARS) {
            area.draw(&Text::new(line, (44, y - 7), font.clone()))?;
            y += LINE_H;
        }
        y += 4;
    }
    Ok(())
}

/// Splits `text` after commas into lines of at most about `width`
/// characters (a single long item stays whole).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = vec![String::new()];
    for (i, part) in text.split(", ").enumerate() {
        let piece = if i == 0 {
            part.to_string()
        } else {
            format!(" {part}")
        };
        let cur = lines.last_mut().expect("at least one line");
        if !cur.is_empty() && cur.chars().count() + piece.chars().count() + 1 > width {
            cur.push(',');
            lines.push(format!("    {}", piece.trim_start()));
        } else {
            if i > 0 {
                cur.push(',');
            }
            cur.push_str(&piece);
        }
    }
    lines
}

/// `1024` → `1024`, `1048576` → `2^20`, `0.01` → `0.01`.
fn format_tick(v: f64) -> String {
    if v >= 1.0 && (v - v.round()).abs() < 1e-9 * v {
        let i = v.round() as u64;
        if i >= 4096 && i.is_power_of_two() {
            return format!("2^{}", i.trailing_zeros());
        }
        if v >= 1e6 {
            return format!("{v:.0e}");
        }
        return format!("{i}");
    }
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_at_commas() {
        assert_eq!(wrap("a · b", 10), vec!["a · b"]);
        assert_eq!(
            wrap("auto · aaaa, bbbb, cccc", 14),
            vec!["auto · aaaa,", "    bbbb, cccc"]
        );
    }

    #[test]
    fn ticks() {
        assert_eq!(format_tick(1024.0), "1024");
        assert_eq!(format_tick(1048576.0), "2^20");
        assert_eq!(format_tick(0.01), "0.01");
        assert_eq!(format_tick(2e6), "2e6");
    }
}
