//! Training curves: train and test loss, test accuracy and the learning rate per epoch, three
//! panels side by side with labelled axes, from a run's epoch reports or its `--metrics` file.

use super::{register_font, FONT_FAMILY};
use plotters::prelude::*;
use std::path::Path;

/// One epoch's point on the curves.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub epoch: usize,
    pub train_loss: f64,
    pub test_loss: f64,
    /// 0-1.
    pub test_accuracy: f64,
    /// The epoch's last learning rate (metrics written before it was recorded lack it).
    pub lr: Option<f64>,
}

impl From<&crate::train::EpochReport> for Point {
    fn from(r: &crate::train::EpochReport) -> Point {
        Point {
            epoch: r.epoch,
            train_loss: r.train_loss,
            test_loss: r.test_loss,
            test_accuracy: r.test_accuracy,
            lr: Some(r.lr),
        }
    }
}

/// The last run in a `--metrics` file (runs append to it; a resumed run continues the epochs,
/// a new run starts again at epoch 1).
pub fn read_metrics(path: &Path) -> Result<Vec<Point>, String> {
    let name = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: cannot read: {e}"))?;
    let mut points: Vec<Point> = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = format!("{name} line {}", i + 1);
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("{at}: not a JSON object ({e}); expected a --metrics file"))?;
        let num =
            |k: &str| v.get(k).and_then(|x| x.as_f64()).ok_or_else(|| format!("{at}: field {k}: expected a number"));
        let epoch = v
            .get("epoch")
            .and_then(|x| x.as_u64())
            .ok_or_else(|| format!("{at}: field epoch: expected a whole number"))? as usize;
        let p = Point {
            epoch,
            train_loss: num("train_loss")?,
            test_loss: num("test_loss")?,
            test_accuracy: num("test_accuracy")?,
            lr: v.get("lr").and_then(|x| x.as_f64()),
        };
        if points.last().is_some_and(|last| p.epoch <= last.epoch) {
            points.clear();
        }
        points.push(p);
    }
    if points.is_empty() {
        return Err(format!("{name}: holds no epochs; expected the JSON lines train --metrics writes"));
    }
    Ok(points)
}

const PANEL: (u32, u32) = (420, 340);

/// The curves of `points` as a picture: width, height, RGB.
pub fn render(points: &[Point], title: &str) -> Result<(u32, u32, Vec<u8>), String> {
    register_font()?;
    let (w, h) = (PANEL.0 * 3, PANEL.1 + 30);
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    draw(&mut rgb, (w, h), points, title).map_err(|e| format!("drawing the curves: {e}"))?;
    Ok((w, h, rgb))
}

fn draw(rgb: &mut [u8], size: (u32, u32), points: &[Point], title: &str) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(rgb, size).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT_FAMILY, 18))?;
    let panels = root.split_evenly((1, 3));
    let first = points.first().map_or(1, |p| p.epoch) as f64;
    let last = points.last().map_or(1, |p| p.epoch) as f64;
    let xs = (first - 0.5)..(last + 0.5);
    let series = |f: &dyn Fn(&Point) -> Option<f64>| -> Vec<(f64, f64)> {
        points.iter().filter_map(|p| f(p).filter(|v| v.is_finite()).map(|v| (p.epoch as f64, v))).collect()
    };
    let range = |vals: &[&[(f64, f64)]]| {
        let (lo, hi) = vals
            .iter()
            .flat_map(|s| s.iter())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, v)| (lo.min(v), hi.max(v)));
        if !lo.is_finite() {
            return 0.0..1.0;
        }
        let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.02).max(1e-12);
        (lo - pad)..(hi + pad)
    };
    let train = series(&|p| Some(p.train_loss));
    let test = series(&|p| Some(p.test_loss));
    let acc = series(&|p| Some(100.0 * p.test_accuracy));
    let lr = series(&|p| p.lr);
    let panel = [
        ("loss", "loss", vec![("train loss", train, BLUE), ("test loss", test, RED)]),
        ("test accuracy", "test accuracy (%)", vec![("test accuracy", acc, RGBColor(0, 140, 60))]),
        ("learning rate", "learning rate (last step of the epoch)", vec![("lr", lr, BLACK)]),
    ];
    for (area, (caption, y_desc, lines)) in panels.iter().zip(panel) {
        let all: Vec<&[(f64, f64)]> = lines.iter().map(|l| l.1.as_slice()).collect();
        let mut ys = range(&all);
        if caption == "test accuracy" {
            ys = ys.start.max(0.0)..ys.end.min(100.0);
        }
        let mut chart = ChartBuilder::on(area)
            .caption(caption, (FONT_FAMILY, 15))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(62)
            .build_cartesian_2d(xs.clone(), ys)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(y_desc)
            .x_labels(points.len().clamp(2, 10))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .label_style((FONT_FAMILY, 12))
            .axis_desc_style((FONT_FAMILY, 13))
            .draw()?;
        let several = lines.len() > 1;
        for (label, data, color) in lines {
            let style = ShapeStyle::from(color).stroke_width(2);
            chart.draw_series(data.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            let drawn = chart.draw_series(LineSeries::new(data, style))?;
            if several {
                drawn.label(label).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
            }
        }
        if several {
            chart
                .configure_series_labels()
                .label_font((FONT_FAMILY, 12))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}
