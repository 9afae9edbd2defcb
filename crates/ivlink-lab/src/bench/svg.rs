//! A small hand-written SVG latency plot: one line per mechanism, latency on a
//! log scale against the percentile on a "nines" scale (0 %, 90 %, 99 %,
//! 99.9 %...), as HdrHistogram plots do, so the tail stays visible.

use std::fmt::Write;

/// One mechanism's line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// `(quantile in 0..=1, latency in ns)` points, quantile ascending.
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 540.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 290.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
/// Deepest quantile drawn: 99.999 %.
const MAX_NINES: f64 = 5.0;

/// Renders the plot; `title` may have several lines. Points that are not finite and positive are skipped; with
/// no usable point the plot has axes and legend only.
pub fn latency_plot(title: &str, series: &[Series]) -> String {
    let axes = Axes::fit(series);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    write_title(&mut svg, title);
    write_grid(&mut svg, &axes);
    write_frame(&mut svg, &axes);
    write_series(&mut svg, &axes, series);
    svg.push_str("</svg>\n");
    svg
}

/// Whether a point can be drawn on log axes.
fn usable(&(q, ns): &(f64, f64)) -> bool {
    q.is_finite() && ns.is_finite() && ns > 0.0
}

/// The plot area and its scales: decades of latency up, nines of quantile across.
struct Axes {
    lo_decade: f64,
    hi_decade: f64,
    nines: f64,
    plot_w: f64,
    plot_h: f64,
}

impl Axes {
    /// Scales that hold every usable point of `series`.
    fn fit(series: &[Series]) -> Self {
        let values = series
            .iter()
            .flat_map(|s| s.points.iter().filter(|p| usable(p)).map(|p| p.1));
        let (lo, hi) = values.fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let (lo_decade, hi_decade) = if lo.is_finite() {
            let lo = lo.log10().floor();
            (lo, hi.log10().ceil().max(lo + 1.0))
        } else {
            (2.0, 5.0)
        };
        let nines = series
            .iter()
            .flat_map(|s| s.points.iter().filter(|p| usable(p)))
            .map(|&(q, _)| nines_of(q))
            .fold(1f64, f64::max)
            .ceil();
        Axes {
            lo_decade,
            hi_decade,
            nines,
            plot_w: WIDTH - LEFT - RIGHT,
            plot_h: HEIGHT - TOP - BOTTOM,
        }
    }

    fn x(&self, q: f64) -> f64 {
        LEFT + self.plot_w * nines_of(q).min(self.nines) / self.nines
    }

    fn y(&self, ns: f64) -> f64 {
        TOP + self.plot_h
            * (1.0 - (ns.log10() - self.lo_decade) / (self.hi_decade - self.lo_decade))
    }
}

/// The title, one line per line of `title`.
fn write_title(svg: &mut String, title: &str) {
    for (i, line) in title.lines().enumerate() {
        let _ = writeln!(
            svg,
            r#"<text x="{LEFT}" y="{}" font-size="{}">{}</text>"#,
            20 + 18 * i,
            if i == 0 { 15 } else { 12 },
            escape(line)
        );
    }
}

/// One grid line per decade of latency and per nine of quantile, labelled.
fn write_grid(svg: &mut String, axes: &Axes) {
    // Horizontal grid: one line per decade of latency.
    for decade in (axes.lo_decade as i32)..=(axes.hi_decade as i32) {
        let ns = 10f64.powi(decade);
        let py = axes.y(ns);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/>"##,
            LEFT + axes.plot_w
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            py + 4.0,
            duration_label(ns)
        );
    }
    // Vertical grid: 0 %, 90 %, 99 %...
    for n in 0..=(axes.nines as i32) {
        let q = 1.0 - 10f64.powi(-n);
        let px = axes.x(q);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            TOP + axes.plot_h
        );
        let _ = writeln!(
            svg,
            r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + axes.plot_h + 20.0,
            percent_label(n)
        );
    }
}

/// The frame and the axis titles.
fn write_frame(svg: &mut String, axes: &Axes) {
    let (plot_w, plot_h) = (axes.plot_w, axes.plot_h);
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile (one-way latency at or below)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 15.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">one-way latency</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
}

/// One polyline per series, with its legend entry.
fn write_series(svg: &mut String, axes: &Axes, series: &[Series]) {
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = s
            .points
            .iter()
            .filter(|p| usable(p))
            .map(|&(q, ns)| format!("{:.1},{:.1}", axes.x(q), axes.y(ns)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let ly = TOP + 10.0 + 22.0 * i as f64;
        let lx = LEFT + axes.plot_w + 15.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/>"#,
            lx + 24.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}">{}</text>"#,
            lx + 30.0,
            ly + 4.0,
            escape(&s.label)
        );
    }
}

/// How many nines a quantile has: 0.9 → 1, 0.99 → 2 (capped).
fn nines_of(q: f64) -> f64 {
    let tail = (1.0 - q.clamp(0.0, 1.0)).max(10f64.powf(-MAX_NINES));
    -tail.log10()
}

fn percent_label(nines: i32) -> String {
    match nines {
        0 => "0%".into(),
        n => {
            let p = 100.0 * (1.0 - 10f64.powi(-n));
            format!("{p:.*}%", (n - 2).max(0) as usize)
        }
    }
}

fn duration_label(ns: f64) -> String {
    match ns {
        ns if ns >= 1e9 => format!("{} s", ns / 1e9),
        ns if ns >= 1e6 => format!("{} ms", ns / 1e6),
        ns if ns >= 1e3 => format!("{} µs", ns / 1e3),
        ns => format!("{ns} ns"),
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

    fn series(label: &str, base: f64) -> Series {
        Series {
            label: label.into(),
            points: vec![
                (0.0, base),
                (0.9, base * 1.5),
                (0.99, base * 3.0),
                (1.0, base * 40.0),
            ],
        }
    }

    #[test]
    fn draws_one_line_and_legend_entry_per_series() {
        let svg = latency_plot("t", &[series("busy", 150.0), series("eventfd", 30_000.0)]);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">busy</text>") && svg.contains(">eventfd</text>"));
        // Decades from 100 ns to 10 ms label the latency axis.
        for label in ["100 ns", "1 µs", "10 µs", "100 µs", "1 ms", "10 ms"] {
            assert!(svg.contains(&format!(">{label}</text>")), "{label}");
        }
        for label in ["0%", "90%", "99%"] {
            assert!(svg.contains(&format!(">{label}</text>")), "{label}");
        }
        // Every coordinate is a finite number.
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn escapes_text_and_skips_unusable_points() {
        let bad = Series {
            label: "<a & \"b\">".into(),
            points: vec![
                (0.5, f64::NAN),
                (0.6, -1.0),
                (0.7, 0.0),
                (f64::INFINITY, 5.0),
            ],
        };
        let svg = latency_plot("x < y", &[bad]);
        assert!(svg.contains("&lt;a &amp; &quot;b&quot;&gt;"));
        assert!(svg.contains("x &lt; y"));
        assert!(svg.contains(r#"points="""#), "no usable point drawn");
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn an_empty_plot_is_still_well_formed() {
        let svg = latency_plot("empty", &[]);
        assert_eq!(svg.matches("<svg").count(), 1);
        assert_eq!(svg.matches("</svg>").count(), 1);
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    }

    #[test]
    fn labels_read_naturally() {
        assert_eq!(percent_label(3), "99.9%");
        assert_eq!(percent_label(1), "90%");
        assert_eq!(duration_label(1e3), "1 µs");
        assert_eq!(duration_label(100.0), "100 ns");
        assert!((nines_of(0.999) - 3.0).abs() < 1e-9);
        assert_eq!(nines_of(1.0), MAX_NINES);
    }
}
