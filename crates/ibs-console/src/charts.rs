//! Charts over the retained backup history, drawn on the server as SVG with plotters' SVG
//! backend and served as images (`/charts/duration.svg`, `/charts/bytes.svg`): no script, no
//! inline style on the page.

use crate::pages::list_backups;
use crate::{ConsoleState, Signed};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use ibs_types::{Job, JobKind, JobStatus};
use plotters::prelude::*;

/// The backups a chart covers: the newest 1000 of the history.
const HISTORY: u32 = 1000;

/// One series: (title, unit, values oldest first).
pub fn series(name: &str, jobs: &[Job]) -> Option<(&'static str, &'static str, Vec<f64>)> {
    let done = jobs.iter().rev().filter(|j| {
        j.kind == JobKind::Backup
            && matches!(j.status, JobStatus::Succeeded | JobStatus::PartialSucceeded)
    });
    match name {
        "duration.svg" => Some((
            "Backup duration",
            "seconds",
            done.map(|j| j.duration_ms.unwrap_or(0) as f64 / 1000.0)
                .collect(),
        )),
        "bytes.svg" => Some((
            "Bytes stored per backup",
            "MiB",
            done.map(|j| j.bytes_stored as f64 / (1024.0 * 1024.0))
                .collect(),
        )),
        _ => None,
    }
}

/// An SVG line chart of `values` (one point per backup, oldest first).
pub fn draw(title: &str, unit: &str, values: &[f64]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 260)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let n = values.len().max(2);
        let top = values.iter().cloned().fold(0.0_f64, f64::max).max(1e-3) * 1.15;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(1..n, 0.0..top)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("backup (oldest to newest)")
            .y_desc(unit)
            .draw()
            .map_err(|e| e.to_string())?;
        let points: Vec<(usize, f64)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (i + 1, *v))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), &BLUE))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(points.into_iter().map(|p| Circle::new(p, 3, BLUE.filled())))
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

pub async fn chart(
    State(st): State<ConsoleState>,
    s: Signed,
    Path(name): Path<String>,
) -> Result<Response, Response> {
    let (jobs, _) = list_backups(&st, &s, HISTORY, None).await?;
    let Some((title, unit, values)) = series(&name, &jobs) else {
        return Ok((StatusCode::NOT_FOUND, "no such chart").into_response());
    };
    match draw(title, unit, &values) {
        Ok(svg) => Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response()),
        Err(e) => {
            tracing::error!("console chart {name}: {e}");
            Ok((StatusCode::INTERNAL_SERVER_ERROR, "chart error").into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_an_svg_with_its_title_and_one_point_per_backup() {
        let svg = draw("Backup duration", "seconds", &[1.0, 2.5, 2.0]).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("Backup duration"));
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(!svg.contains("<script"));
    }
}
