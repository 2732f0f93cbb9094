//! SVG plots of a run (plotters, SVG backend only: no system font libraries).
//! Floating point appears here only to draw; every amount was computed in integers.

use crate::engine::{HourStat, PRICE_CLASSES};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

type Series = (String, Vec<(f64, f64)>);

fn line_chart(path: &Path, title: &str, y_desc: &str, series: &[Series]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let x_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let (mut y_min, mut y_max) = (f64::INFINITY, f64::NEG_INFINITY);
    for (_, pts) in series {
        for p in pts {
            y_min = y_min.min(p.1);
            y_max = y_max.max(p.1);
        }
    }
    if !y_min.is_finite() || !y_max.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.05).max(y_max.abs() * 1e-6).max(1e-9);
    let y_lo = if y_min >= 0.0 && y_min - pad < 0.0 {
        0.0
    } else {
        y_min - pad
    };
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..x_max, y_lo..y_max + pad)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("simulated hour")
        .y_desc(y_desc)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| label(*v))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// An axis label: thousands separated, two decimals below 10.
fn label(v: f64) -> String {
    if v.abs() < 10.0 {
        return format!("{v:.2}");
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

/// Writes the five plots into `dir`; returns their paths.
pub fn write_all(dir: &Path, series: &[HourStat], io_unit: u64) -> Result<Vec<PathBuf>, String> {
    let io = |v: u128| v as f64 / io_unit.max(1) as f64;
    let x = |s: &HourStat| s.hour as f64;
    // one series over the hours
    let one = |name: &str, v: &dyn Fn(&HourStat) -> f64| -> Vec<Series> {
        vec![(
            name.to_string(),
            series.iter().map(|s| (x(s), v(s))).collect(),
        )]
    };
    let mut out = Vec::new();
    let mut plot = |file: &str, title: &str, y_desc: &str, lines: Vec<Series>| {
        let p = dir.join(file);
        line_chart(&p, title, y_desc, &lines)?;
        out.push(p);
        Ok::<_, String>(())
    };

    let prices: Vec<Series> = PRICE_CLASSES
        .iter()
        .enumerate()
        .map(|(k, m)| {
            (
                m.name().to_string(),
                series
                    .iter()
                    .map(|s| (x(s), s.prices_micro_usd[k] as f64 / 1e6))
                    .collect(),
            )
        })
        .collect();
    plot(
        "prices.svg",
        "Market price per GPU-hour by class",
        "USD per GPU-hour",
        prices,
    )?;
    plot(
        "utilization.svg",
        "Fleet GPU utilization",
        "% of online GPU time busy",
        one("utilization", &|s| s.utilization_ppm as f64 / 1e4),
    )?;
    plot(
        "earnings.svg",
        "Provider earnings (IO compute + idle rewards, cumulative)",
        "IO",
        one("providers", &|s| io(s.provider_earnings_io)),
    )?;
    plot(
        "burned.svg",
        "IO burned (fees, buyback, slashing; cumulative)",
        "IO",
        one("burned", &|s| io(s.burned_io)),
    )?;
    plot(
        "supply.svg",
        "Circulating IO supply (total less stake, treasury reserve, escrow, undistributed emission)",
        "IO",
        one("circulating", &|s| io(s.circulating_io)),
    )?;
    Ok(out)
}
