//! Server-rendered SVG: the latency sparkline and chart, the 90-day bar, badges, and the
//! number formatting they share. Pure functions of their input, unit-tested below.

use std::fmt::Write;

/// `ratio` (0..=1) as a percentage with two decimals, or "no data".
pub fn percent(ratio: Option<f64>) -> String {
    match ratio {
        Some(r) => format!("{:.2}%", (r * 100.0).clamp(0.0, 100.0)),
        None => "no data".to_string(),
    }
}

/// Milliseconds as "87 ms" or "1.24 s".
pub fn millis(ms: Option<f64>) -> String {
    match ms {
        Some(ms) if ms >= 1000.0 => format!("{:.2} s", ms / 1000.0),
        Some(ms) => format!("{} ms", ms.round() as u64),
        None => "no data".to_string(),
    }
}

/// The colour class of a day's uptime: "good" from 99.9 %, "warn" from 95 %, else "bad";
/// "none" without data.
pub fn uptime_class(ratio: Option<f64>) -> &'static str {
    match ratio {
        Some(r) if r >= 0.999 => "good",
        Some(r) if r >= 0.95 => "warn",
        Some(_) => "bad",
        None => "none",
    }
}

/// The polyline points of `values` (None: a gap) scaled into `w` x `h`, 0 at the bottom,
/// the largest value at the top: one list per unbroken run.
pub fn polyline_runs(values: &[Option<f64>], w: f64, h: f64, max: f64) -> Vec<String> {
    let n = values.len();
    let dx = if n > 1 { w / (n - 1) as f64 } else { 0.0 };
    let max = if max > 0.0 { max } else { 1.0 };
    let mut runs = Vec::new();
    let mut cur = String::new();
    for (i, v) in values.iter().enumerate() {
        match v {
            Some(v) => {
                let x = i as f64 * dx;
                let y = h - (v / max).clamp(0.0, 1.0) * h;
                if !cur.is_empty() {
                    cur.push(' ');
                }
                let _ = write!(cur, "{x:.1},{y:.1}");
            }
            None if !cur.is_empty() => runs.push(std::mem::take(&mut cur)),
            None => {}
        }
    }
    if !cur.is_empty() {
        runs.push(cur);
    }
    runs
}

fn max_of<'a>(series: impl Iterator<Item = &'a Option<f64>>) -> f64 {
    series.flatten().copied().fold(0.0, f64::max)
}

/// A small latency sparkline (120 x 24), with a text alternative.
pub fn sparkline(values: &[Option<f64>]) -> String {
    let max = max_of(values.iter());
    let known: Vec<f64> = values.iter().flatten().copied().collect();
    let label = if known.is_empty() {
        "latency 24 h: no data".to_string()
    } else {
        let mean = known.iter().sum::<f64>() / known.len() as f64;
        format!(
            "latency 24 h: mean {}, max {}",
            millis(Some(mean)),
            millis(Some(max))
        )
    };
    let mut s = format!(
        r#"<svg class="spark" viewBox="-1 -1 122 26" width="120" height="24" role="img" aria-label="{label}"><title>{label}</title>"#
    );
    for run in polyline_runs(values, 120.0, 24.0, max) {
        let _ = write!(s, r#"<polyline fill="none" points="{run}"/>"#);
    }
    s.push_str("</svg>");
    s
}

/// A latency chart: one line per location over the same steps, a legend, axis labels.
/// Each point is also a `<circle class="pt" data-location=..>` so a test and a screen reader
/// can count them.
pub fn latency_chart(locations: &[(String, Vec<Option<f64>>)], span_label: &str) -> String {
    const W: f64 = 600.0;
    const H: f64 = 160.0;
    let max = locations
        .iter()
        .map(|(_, v)| max_of(v.iter()))
        .fold(0.0, f64::max);
    let mut s = format!(
        r#"<svg class="chart" viewBox="-50 -10 {} {}" role="img" aria-label="latency per location over {span_label}, highest {}"><title>latency per location over {span_label}</title>"#,
        W + 60.0,
        H + 40.0,
        millis(Some(max))
    );
    let _ = write!(
        s,
        r#"<line class="axis" x1="0" y1="{H}" x2="{W}" y2="{H}"/><line class="axis" x1="0" y1="0" x2="0" y2="{H}"/><text x="-6" y="8" text-anchor="end">{}</text><text x="-6" y="{H}" text-anchor="end">0</text><text x="0" y="{}">{span_label} ago</text><text x="{W}" y="{}" text-anchor="end">now</text>"#,
        millis(Some(max)),
        H + 16.0,
        H + 16.0
    );
    for (k, (loc, values)) in locations.iter().enumerate() {
        let class = format!("l{}", k % 6);
        let n = values.len();
        let dx = if n > 1 { W / (n - 1) as f64 } else { 0.0 };
        for run in polyline_runs(values, W, H, max) {
            let _ = write!(
                s,
                r#"<polyline class="{class}" fill="none" points="{run}"/>"#
            );
        }
        for (i, v) in values.iter().enumerate() {
            if let Some(v) = v {
                let x = i as f64 * dx;
                let y = H - (v / if max > 0.0 { max } else { 1.0 }).clamp(0.0, 1.0) * H;
                let _ = write!(
                    s,
                    r#"<circle class="pt {class}" data-location="{}" cx="{x:.1}" cy="{y:.1}" r="2"><title>{}: {}</title></circle>"#,
                    esc(loc),
                    esc(loc),
                    millis(Some(*v))
                );
            }
        }
    }
    s.push_str("</svg>");
    s
}

/// The 90-day bar: one cell a day, oldest first; each cell's class by its uptime and its
/// figure in a `<title>` (the hover text). `days` are (label, ratio).
pub fn uptime_bar(days: &[(String, Option<f64>)]) -> String {
    let n = days.len().max(1);
    let w = 4.0;
    let gap = 1.0;
    let total = n as f64 * (w + gap);
    let mut s = format!(
        r#"<svg class="bar" viewBox="0 0 {total} 24" preserveAspectRatio="none" role="img" aria-label="uptime per day, {n} days"><title>uptime per day, {n} days</title>"#
    );
    for (i, (label, ratio)) in days.iter().enumerate() {
        let x = i as f64 * (w + gap);
        // Shape as well as colour: a bad day is a full cell, a warn day a shorter one, no
        // data a low stub.
        let (y, h) = match uptime_class(*ratio) {
            "none" => (18.0, 6.0),
            "warn" => (6.0, 18.0),
            _ => (0.0, 24.0),
        };
        let _ = write!(
            s,
            r#"<rect class="day {}" data-day="{}" x="{x}" y="{y}" width="{w}" height="{h}"><title>{}: {}</title></rect>"#,
            uptime_class(*ratio),
            esc(label),
            esc(label),
            percent(*ratio)
        );
    }
    s.push_str("</svg>");
    s
}

/// A flat two-part badge ("label | value"), its colour by `class`.
pub fn badge(label: &str, value: &str, class: &str) -> String {
    let colour = match class {
        "good" => "#1a7f37",
        "warn" => "#9a6700",
        "bad" => "#cf222e",
        _ => "#57606a",
    };
    // About 7 px a character at 11 px Verdana-like sans; padding 6 on each side.
    let lw = 12 + 7 * label.chars().count();
    let vw = 12 + 7 * value.chars().count();
    let total = lw + vw;
    let (l, v) = (esc(label), esc(value));
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" aria-label="{l}: {v}"><title>{l}: {v}</title><rect width="{lw}" height="20" fill="#555"/><rect x="{lw}" width="{vw}" height="20" fill="{colour}"/><g fill="#fff" font-family="DejaVu Sans,Verdana,sans-serif" font-size="11" text-anchor="middle"><text x="{}" y="14">{l}</text><text x="{}" y="14">{v}</text></g></svg>"##,
        lw / 2,
        lw + vw / 2
    )
}

/// Escapes text for HTML and SVG (element text and quoted attributes).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_and_millis() {
        assert_eq!(percent(Some(0.9999)), "99.99%");
        assert_eq!(percent(Some(0.5)), "50.00%");
        assert_eq!(percent(Some(1.5)), "100.00%");
        assert_eq!(percent(None), "no data");
        assert_eq!(millis(Some(87.4)), "87 ms");
        assert_eq!(millis(Some(1240.0)), "1.24 s");
        assert_eq!(millis(None), "no data");
    }

    #[test]
    fn uptime_classes_at_their_edges() {
        assert_eq!(uptime_class(Some(1.0)), "good");
        assert_eq!(uptime_class(Some(0.999)), "good");
        assert_eq!(uptime_class(Some(0.998)), "warn");
        assert_eq!(uptime_class(Some(0.95)), "warn");
        assert_eq!(uptime_class(Some(0.9)), "bad");
        assert_eq!(uptime_class(None), "none");
    }

    #[test]
    fn polyline_scales_and_breaks_at_gaps() {
        let runs = polyline_runs(&[Some(0.0), Some(10.0), None, Some(5.0)], 30.0, 10.0, 10.0);
        assert_eq!(
            runs,
            vec!["0.0,10.0 10.0,0.0".to_string(), "30.0,5.0".to_string()]
        );
        assert!(polyline_runs(&[None, None], 10.0, 10.0, 0.0).is_empty());
    }

    #[test]
    fn chart_has_a_point_per_known_value_and_location() {
        let svg = latency_chart(
            &[
                ("a".into(), vec![Some(1.0), None, Some(3.0)]),
                ("b<".into(), vec![Some(2.0)]),
            ],
            "1 h",
        );
        assert_eq!(svg.matches(r#"data-location="a""#).count(), 2);
        assert_eq!(svg.matches(r#"data-location="b&lt;""#).count(), 1);
    }

    #[test]
    fn bar_has_a_cell_per_day_with_its_figure() {
        let svg = uptime_bar(&[
            ("d1".into(), Some(1.0)),
            ("d2".into(), Some(0.5)),
            ("d3".into(), None),
        ]);
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains(r#"class="day bad" data-day="d2""#));
        assert!(svg.contains("<title>d2: 50.00%</title>"));
    }

    #[test]
    fn badge_is_escaped_and_sized() {
        let svg = badge("up<", "99.50%", "good");
        assert!(svg.contains("up&lt;: 99.50%"));
        assert!(svg.contains(r##"fill="#1a7f37""##));
        assert!(svg.starts_with(r#"<svg xmlns="http://www.w3.org/2000/svg" width="87""#));
    }
}
