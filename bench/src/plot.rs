//! The latency percentile curve, drawn like HdrHistogram's plotter: the x axis is
//! `1/(1-percentile)` on a log scale, so 90%, 99%, 99.9%, ... are evenly spaced and the tail
//! gets as much room as the median.
//!
//! Text needs a TrueType font; one is loaded at run time from the usual system locations (or
//! `RIPTIDE_BENCH_FONT`), so the binary carries none and needs no fontconfig.

use crate::hist::LatencyHistogram;
use anyhow::{anyhow, bail, Context, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
];

const FONT_FAMILY: &str = "sans-serif";
const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
];

fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let mut candidates: Vec<String> = Vec::new();
            if let Ok(path) = std::env::var("RIPTIDE_BENCH_FONT") {
                candidates.push(path);
            }
            candidates.extend(FONT_CANDIDATES.iter().map(|s| s.to_string()));
            for path in &candidates {
                if let Ok(bytes) = std::fs::read(path) {
                    // Fonts live for the process: plotters wants 'static bytes.
                    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                    if plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, bytes).is_ok()
                    {
                        return Ok(());
                    }
                }
            }
            Err(format!(
                "no TrueType font found (tried {}); set RIPTIDE_BENCH_FONT to a .ttf file",
                candidates.join(", ")
            ))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// `(x = 1/(1-q), latency ms)` points of a histogram's percentile curve.
pub fn percentile_curve(histogram: &LatencyHistogram) -> Vec<(f64, f64)> {
    let h = histogram.inner();
    if h.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<(f64, f64)> = h
        .iter_quantiles(5)
        .filter(|step| step.quantile_iterated_to() < 1.0)
        .map(|step| {
            (
                1.0 / (1.0 - step.quantile_iterated_to()),
                step.value_iterated_to() as f64 / 1e6,
            )
        })
        .collect();
    // Close the curve at the max, one decade past the count's resolution.
    let x_max = max_x(h.len());
    points.push((x_max, h.max() as f64 / 1e6));
    points.retain(|(x, _)| *x <= x_max);
    points
}

/// The x extent: 1/(1-q) cannot resolve beyond the sample count.
fn max_x(count: u64) -> f64 {
    let decades = (count.max(10) as f64).log10().ceil().clamp(1.0, 7.0);
    10f64.powf(decades)
}

fn percentile_label(x: f64) -> String {
    let decade = x.log10();
    if (decade - decade.round()).abs() > 1e-6 {
        return String::new();
    }
    let decade = decade.round() as i32;
    if decade == 0 {
        return "0%".to_string();
    }
    // 1 - 10^-d as a percentage: 90%, 99%, 99.9%, ...
    let nines = decade as usize;
    if nines <= 2 {
        format!("{}%", 100 - 100 / 10i32.pow(decade as u32))
    } else {
        format!("99.{}%", "9".repeat(nines - 2))
    }
}

/// Draws the percentile curves of `series` (name, histogram) into `path` (.png or .svg).
pub fn plot_percentiles(
    path: &Path,
    title: &str,
    series: &[(&str, &LatencyHistogram)],
) -> Result<()> {
    register_font()?;
    let curves: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, h)| (*name, percentile_curve(h)))
        .filter(|(_, points)| !points.is_empty())
        .collect();
    if curves.is_empty() {
        bail!("nothing to plot: no latency samples");
    }
    let x_max = curves
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.0))
        .fold(10.0, f64::max);
    let y_max = curves
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        .max(0.001)
        * 1.08;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let size = (1200u32, 700u32);
    match extension.as_str() {
        "svg" => {
            let root = SVGBackend::new(path, size).into_drawing_area();
            draw(&root, title, &curves, x_max, y_max)?;
            root.present().context("writing SVG")?;
        }
        "png" => {
            let root = BitMapBackend::new(path, size).into_drawing_area();
            draw(&root, title, &curves, x_max, y_max)?;
            root.present().context("writing PNG")?;
        }
        other => bail!("--plot wants a .png or .svg file, got .{other}"),
    }
    Ok(())
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    curves: &[(&str, Vec<(f64, f64)>)],
    x_max: f64,
    y_max: f64,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let error = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing: {e:?}");
    root.fill(&WHITE).map_err(error)?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT_FAMILY, 24))
        .margin(20)
        .margin_right(60)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((1f64..x_max).log_scale(), 0f64..y_max)
        .map_err(error)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| format!("{y:.3}"))
        .label_style((FONT_FAMILY, 16))
        .axis_desc_style((FONT_FAMILY, 18))
        .draw()
        .map_err(error)?;
    for (index, (name, points)) in curves.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                ShapeStyle::from(color).stroke_width(2),
            ))
            .map_err(error)?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT_FAMILY, 16))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_the_nines() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(1e5), "99.999%");
        assert_eq!(percentile_label(50.0), "");
    }

    #[test]
    fn curve_is_monotonic_and_ends_at_max() {
        let mut h = LatencyHistogram::new();
        for us in 1..=100_000u64 {
            h.record_ns(us * 100);
        }
        let curve = percentile_curve(&h);
        assert!(curve
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        let last = curve.last().unwrap();
        assert_eq!(last.0, 1e5);
        assert!((last.1 - 10.0).abs() < 0.01);
    }

    #[test]
    fn draws_png_and_svg_when_a_font_exists() {
        if register_font().is_err() {
            eprintln!("skipping: no system font for plot text");
            return;
        }
        let directory = tempfile::tempdir().unwrap();
        let mut h = LatencyHistogram::new();
        for us in 1..=10_000u64 {
            h.record_ns(us * 1_000);
        }
        for name in ["p.png", "p.svg"] {
            let path = directory.path().join(name);
            plot_percentiles(&path, "test", &[("produce", &h), ("e2e", &h)]).unwrap();
            assert!(std::fs::metadata(&path).unwrap().len() > 1000);
        }
        assert!(plot_percentiles(&directory.path().join("p.jpg"), "t", &[("a", &h)]).is_err());
    }
}
