//! The treemap of `nixoci inspect --svg`: the image as one rectangle per
//! store path, with its area proportional to the path's NAR size, grouped by
//! layer. Squarified (Bruls, Huizing and van Wijk), so rectangles stay near
//! square; corners snapped to whole pixels and drawn with crisp edges, so
//! what a browser paints is exactly what is laid out. Plain SVG: names show
//! as labels where they fit and as tooltips (`<title>`), without scripts.
//! The same report always gives the same bytes.

use std::fmt::Write as _;

use super::{human, Report};

/// Canvas size in pixels.
pub const WIDTH: f64 = 1600.0;
pub const HEIGHT: f64 = 1000.0;
/// Rectangles smaller than this (in px²) get no label, only a tooltip.
const LABEL_AREA: f64 = 40_000.0;

#[derive(Clone, Copy, Debug, PartialEq)]
struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

impl Rect {
    /// The same rectangle with x and y swapped.
    fn transposed(self) -> Rect {
        Rect {
            x: self.y,
            y: self.x,
            w: self.h,
            h: self.w,
        }
    }
}

/// Lays `sizes` (biggest first) out in `rect`: one rectangle each, in order.
fn squarify(sizes: &[f64], rect: Rect) -> Vec<Rect> {
    let total: f64 = sizes.iter().sum();
    if sizes.is_empty() || total <= 0.0 {
        return vec![
            Rect {
                w: 0.0,
                h: 0.0,
                ..rect
            };
            sizes.len()
        ];
    }
    let scale = rect.w * rect.h / total;
    let areas: Vec<f64> = sizes.iter().map(|s| s * scale).collect();
    let mut out = Vec::with_capacity(areas.len());
    let mut free = rect;
    let mut start = 0;
    while start < areas.len() {
        let side = free.w.min(free.h);
        let mut end = start + 1;
        while end < areas.len()
            && worst(&areas[start..=end], side) <= worst(&areas[start..end], side)
        {
            end += 1;
        }
        let row = &areas[start..end];
        let row_area: f64 = row.iter().sum();
        // The last row takes whatever is left, so rounding never leaves a gap.
        let last = end == areas.len();
        // A column at the left of a wide space; a tall one is laid out
        // transposed, so that the column becomes a row at the top.
        let tall = free.w < free.h;
        let space = if tall { free.transposed() } else { free };
        let width = if last { space.w } else { row_area / space.h };
        let mut y = space.y;
        for (i, area) in row.iter().enumerate() {
            let height = if i + 1 == row.len() {
                space.y + space.h - y
            } else {
                area / width
            };
            let rect = Rect {
                x: space.x,
                y,
                w: width,
                h: height,
            };
            out.push(if tall { rect.transposed() } else { rect });
            y += height;
        }
        let rest = Rect {
            x: space.x + width,
            w: space.w - width,
            ..space
        };
        free = if tall { rest.transposed() } else { rest };
        start = end;
    }
    out
}

/// The worst aspect ratio of `row` laid along a side of length `side`.
fn worst(row: &[f64], side: f64) -> f64 {
    let sum: f64 = row.iter().sum();
    let (min, max) = row
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), a| (lo.min(*a), hi.max(*a)));
    let side2 = side * side;
    (side2 * max / (sum * sum)).max(sum * sum / (side2 * min))
}

/// The fill of the `index`th rectangle: distinct for up to 8000 paths, so a
/// rendering can be measured color by color.
fn fill(index: usize) -> String {
    let code = (index * 2371) % 8000;
    let (r, g, b) = (code % 20, (code / 20) % 20, code / 400);
    format!("#{:02x}{:02x}{:02x}", 64 + r * 8, 64 + g * 8, 64 + b * 8)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG treemap of `report`, titled `name`.
pub fn svg(report: &Report, name: &str) -> String {
    let canvas = Rect {
        x: 0.0,
        y: 0.0,
        w: WIDTH,
        h: HEIGHT,
    };
    // Layers with store paths, biggest first; paths within each, biggest first.
    let mut groups: Vec<(usize, Vec<usize>, f64)> = report
        .layers
        .iter()
        .map(|layer| {
            let rows: Vec<usize> = (0..report.paths.len())
                .filter(|&i| report.paths[i].layer == layer.index)
                .collect();
            let size = rows.iter().map(|&i| report.paths[i].nar_size as f64).sum();
            (layer.index, rows, size)
        })
        .filter(|(_, rows, size)| !rows.is_empty() && *size > 0.0)
        .collect();
    groups.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    let layer_rects = squarify(&groups.iter().map(|g| g.2).collect::<Vec<_>>(), canvas);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" shape-rendering="crispEdges" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        out,
        "<title>{}: {} store paths, {} (NAR)</title>",
        escape(name),
        report.paths.len(),
        human(report.nar_size)
    );
    let mut color = 0;
    for ((layer, rows, size), area) in groups.iter().zip(&layer_rects) {
        let _ = writeln!(
            out,
            r#"<g id="layer-{layer}"><title>layer {layer}: {} store paths, {}</title>"#,
            rows.len(),
            human(*size as u64)
        );
        let sizes: Vec<f64> = rows
            .iter()
            .map(|&i| report.paths[i].nar_size as f64)
            .collect();
        for (&i, rect) in rows.iter().zip(squarify(&sizes, *area)) {
            let path = &report.paths[i];
            let (x0, y0) = (rect.x.round(), rect.y.round());
            let (x1, y1) = ((rect.x + rect.w).round(), (rect.y + rect.h).round());
            let tip = format!("{} ({}, layer {layer})", path.path, human(path.nar_size));
            let _ = writeln!(
                out,
                r#"<rect x="{x0}" y="{y0}" width="{}" height="{}" fill="{}" data-path="{}"><title>{}</title></rect>"#,
                x1 - x0,
                y1 - y0,
                fill(color),
                escape(&path.path),
                escape(&tip)
            );
            color += 1;
            if (x1 - x0) * (y1 - y0) >= LABEL_AREA {
                let label = format!("{} {}", path.name, path.version);
                let _ = writeln!(
                    out,
                    r##"<text x="{}" y="{}" fill="#000000">{}</text>"##,
                    x0 + 4.0,
                    y0 + 14.0,
                    escape(label.trim())
                );
            }
        }
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squarified_rectangles_tile_the_canvas_with_proportional_areas() {
        let sizes = [6.0, 6.0, 4.0, 3.0, 2.0, 2.0, 1.0];
        let canvas = Rect {
            x: 0.0,
            y: 0.0,
            w: 600.0,
            h: 400.0,
        };
        let rects = squarify(&sizes, canvas);
        let total: f64 = sizes.iter().sum();
        for (size, rect) in sizes.iter().zip(&rects) {
            let expected = size / total * 240_000.0;
            assert!(
                (rect.w * rect.h - expected).abs() < 1e-6 * expected,
                "{rect:?}"
            );
            assert!(
                rect.x >= 0.0
                    && rect.y >= 0.0
                    && rect.x + rect.w <= 600.0 + 1e-9
                    && rect.y + rect.h <= 400.0 + 1e-9
            );
        }
        // Near square: no rectangle thinner than 1:4 for these sizes.
        for rect in &rects {
            assert!(rect.w.max(rect.h) / rect.w.min(rect.h) < 4.0, "{rect:?}");
        }
    }

    #[test]
    fn fills_are_distinct() {
        let fills: std::collections::BTreeSet<String> = (0..8000).map(fill).collect();
        assert_eq!(fills.len(), 8000);
    }
}
