//! Plots: drawn in the terminal with plain characters, for commands whose output people would rather look at
//! than read, and written as hand-made SVG documents for reports.

/// Draws `values` (index = x) as a line chart `width` columns by `height` rows, with the y range on the left
/// and the x range underneath. Non-finite values are left out; an empty or all-non-finite series draws an empty
/// frame.
pub fn line_chart(values: &[f64], width: usize, height: usize) -> String {
    let width = width.max(2);
    let height = height.max(2);
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo > hi {
        (0.0, 1.0)
    } else if lo == hi {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    };
    let mut grid = vec![vec![' '; width]; height];
    if !values.is_empty() {
        for (col, cells) in (0..width).map(|c| (c, c * (values.len() - 1) / (width - 1))) {
            let v = values[cells];
            if v.is_finite() {
                let row = ((hi - v) / (hi - lo) * (height - 1) as f64).round() as usize;
                grid[row.min(height - 1)][col] = '*';
            }
        }
    }
    let label = |v: f64| format!("{v:>10.4}");
    let mut out = String::new();
    for (r, row) in grid.iter().enumerate() {
        let y = if r == 0 {
            label(hi)
        } else if r == height - 1 {
            label(lo)
        } else {
            " ".repeat(10)
        };
        out.push_str(&format!("{y} |{}\n", row.iter().collect::<String>()));
    }
    out.push_str(&format!("{} +{}\n", " ".repeat(10), "-".repeat(width)));
    let last = values.len().saturating_sub(1).to_string();
    out.push_str(&format!("{}  0{}{last}", " ".repeat(10), " ".repeat(width.saturating_sub(1 + last.len()))));
    out
}

/// One line of an SVG chart: its legend label, its (x, y) points in drawing order, and an optional band around it.
#[derive(Debug, Clone, PartialEq)]
pub struct SvgSeries {
    /// The legend label.
    pub label: String,
    /// The points; non-finite ones are left out.
    pub points: Vec<(f64, f64)>,
    /// A shaded band (x, low, high) in drawing order, such as a confidence interval over seeds; empty for none.
    /// Points with a non-finite coordinate are left out, and a band of fewer than two points is not drawn.
    pub band: Vec<(f64, f64, f64)>,
}

/// The frame of an SVG chart.
#[derive(Debug, Clone, PartialEq)]
pub struct SvgChart {
    /// The title above the plot area.
    pub title: String,
    /// The label under the x axis.
    pub x_label: String,
    /// The label beside the y axis.
    pub y_label: String,
    /// A fixed y range (e.g. 0 to 1 for rates); `None` fits the data.
    pub y_range: Option<(f64, f64)>,
}

/// Colours of successive series (Okabe–Ito, distinguishable with colour blindness), repeated beyond eight.
const PALETTE: [&str; 8] = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"];

/// Draws `series` as a standalone SVG document (640 × 400): one `<polyline>` per series with a circle at each
/// point, its band (if any) as a translucent `<polygon>` under the lines, axes with about five round-numbered ticks
/// each, axis labels, a title and a legend. Written by hand so that reports need no plotting dependency; the output
/// is deterministic, which keeps regenerated reports diffable.
pub fn svg_line_chart(chart: &SvgChart, series: &[SvgSeries]) -> String {
    const W: f64 = 640.0;
    const H: f64 = 400.0;
    const LEFT: f64 = 64.0;
    const RIGHT: f64 = 170.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 52.0;
    let finite = |&&(x, y): &&(f64, f64)| x.is_finite() && y.is_finite();
    let finite_band = |&&(x, lo, hi): &&(f64, f64, f64)| x.is_finite() && lo.is_finite() && hi.is_finite();
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| {
            let band = s.band.iter().filter(finite_band).flat_map(|&(x, lo, hi)| [(x, lo), (x, hi)]);
            s.points.iter().filter(finite).copied().chain(band)
        })
        .collect();
    let (x_lo, x_hi) = padded_range(all.iter().map(|p| p.0));
    let (y_lo, y_hi) = chart.y_range.unwrap_or_else(|| padded_range(all.iter().map(|p| p.1)));
    let (plot_w, plot_h) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let px = |x: f64| LEFT + (x - x_lo) / (x_hi - x_lo) * plot_w;
    let py = |y: f64| TOP + (y_hi - y) / (y_hi - y_lo) * plot_h;

    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>\n"
    );
    out.push_str(&format!(
        "<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n",
        LEFT + plot_w / 2.0,
        xml_escape(&chart.title)
    ));
    // Grid lines and ticks first, so that the data lines are drawn over them.
    for x in ticks(x_lo, x_hi) {
        let sx = px(x);
        out.push_str(&format!(
            "<line x1=\"{sx:.1}\" y1=\"{TOP}\" x2=\"{sx:.1}\" y2=\"{:.1}\" stroke=\"#e0e0e0\"/>\n\
             <text x=\"{sx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            TOP + plot_h,
            TOP + plot_h + 16.0,
            tick_label(x)
        ));
    }
    for y in ticks(y_lo, y_hi) {
        let sy = py(y);
        out.push_str(&format!(
            "<line x1=\"{LEFT}\" y1=\"{sy:.1}\" x2=\"{:.1}\" y2=\"{sy:.1}\" stroke=\"#e0e0e0\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            LEFT + plot_w,
            LEFT - 6.0,
            sy + 4.0,
            tick_label(y)
        ));
    }
    out.push_str(&format!(
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"none\" stroke=\"black\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n\
         <text x=\"16\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {:.1})\">{}</text>\n",
        LEFT + plot_w / 2.0,
        H - 12.0,
        xml_escape(&chart.x_label),
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        xml_escape(&chart.y_label)
    ));
    // The bands first, under every line: a translucent polygon along the highs and back along the lows.
    for (i, s) in series.iter().enumerate() {
        let band: Vec<(f64, f64, f64)> = s.band.iter().filter(finite_band).copied().collect();
        if band.len() < 2 {
            continue;
        }
        let clamp = |y: f64| y.clamp(y_lo, y_hi);
        let outline: Vec<String> = band
            .iter()
            .map(|&(x, _, hi)| (x, hi))
            .chain(band.iter().rev().map(|&(x, lo, _)| (x, lo)))
            .map(|(x, y)| format!("{:.1},{:.1}", px(x), py(clamp(y))))
            .collect();
        out.push_str(&format!(
            "<polygon fill=\"{}\" fill-opacity=\"0.15\" stroke=\"none\" points=\"{}\"/>\n",
            PALETTE[i % PALETTE.len()],
            outline.join(" ")
        ));
    }
    for (i, s) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let points: Vec<(f64, f64)> = s.points.iter().filter(finite).map(|&(x, y)| (px(x), py(y))).collect();
        let coords: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        out.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n",
            coords.join(" ")
        ));
        for (x, y) in &points {
            out.push_str(&format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"{colour}\"/>\n"));
        }
        let ly = TOP + 10.0 + 18.0 * i as f64;
        let lx = LEFT + plot_w + 12.0;
        out.push_str(&format!(
            "<line x1=\"{lx:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" stroke-width=\"2\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            xml_escape(&s.label)
        ));
    }
    out.push_str("</svg>\n");
    out
}

/// The range of `values`, widened to a unit around a single value and to (0, 1) when there are none.
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        (0.0, 1.0)
    } else if lo == hi {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}

/// About five ticks at round numbers (1, 2 or 5 times a power of ten) inside `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let raw = (hi - lo) / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// A tick value without float noise: integers plainly, others to at most four significant decimals.
fn tick_label(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// Escapes text for an XML text node or attribute.
pub fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn svg_chart_has_one_polyline_per_series_and_is_well_formed() {
        let series = vec![
            SvgSeries { label: "atod".into(), points: vec![(0.0, 0.1), (2.0, 0.5), (4.0, 0.75)], band: vec![] },
            SvgSeries { label: "a <b> & \"c\"".into(), points: vec![(0.0, 0.1), (4.0, f64::NAN)], band: vec![] },
        ];
        let chart = SvgChart {
            title: "alfworld".into(),
            x_label: "step".into(),
            y_label: "success rate".into(),
            y_range: Some((0.0, 1.0)),
        };
        let svg = svg_line_chart(&chart, &series);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        // Every element is self-closed or closed, and no raw markup leaks from labels.
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        assert!(svg.contains("a &lt;b&gt; &amp; &quot;c&quot;"));
        // Ticks at round numbers on both axes.
        assert!(svg.contains(">0.2</text>") && svg.contains(">1</text>") && svg.contains(">4</text>"), "{svg}");
        // The NaN point is left out: the second series has one circle.
        assert_eq!(svg.matches("<circle").count(), 4);
    }

    #[test]
    fn a_band_is_drawn_under_its_line_and_clamped_to_the_range() {
        let chart = SvgChart {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            y_range: Some((0.0, 1.0)),
        };
        let series = [
            SvgSeries {
                label: "opd".into(),
                points: vec![(0.0, 0.5), (10.0, 0.9)],
                band: vec![(0.0, 0.4, 0.6), (10.0, 0.7, 1.3)],
            },
            SvgSeries { label: "grpo".into(), points: vec![(0.0, 0.2), (10.0, 0.3)], band: vec![(0.0, 0.1, 0.3)] },
        ];
        let svg = svg_line_chart(&chart, &series);
        // One polygon: the second band has a single point.
        assert_eq!(svg.matches("<polygon").count(), 1, "{svg}");
        assert!(svg.find("<polygon").unwrap() < svg.find("<polyline").unwrap(), "the band is under the lines");
        // Plot area: x from 64 to 470, y from 40 (y = 1) to 348 (y = 0). The outline runs along the highs (0.6, then
        // 1.3 clamped to 1) and back along the lows (0.7, then 0.4).
        assert!(svg.contains("points=\"64.0,163.2 470.0,40.0 470.0,132.4 64.0,224.8\""), "{svg}");
        assert!(svg.contains("fill=\"#0072B2\" fill-opacity=\"0.15\""), "{svg}");
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(0.0, 1.0), [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        assert_eq!(ticks(0.0, 100.0), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(tick_label(0.6000000000000001), "0.6");
        assert!(svg_line_chart(
            &SvgChart { title: String::new(), x_label: String::new(), y_label: String::new(), y_range: None },
            &[]
        )
        .starts_with("<svg"));
    }

    #[test]
    fn a_falling_line() {
        let values: Vec<f64> = (0..=10).map(|s| 1.0 - 0.1 * s as f64).collect();
        // The first line keeps expect-test from stripping the chart's own indentation.
        expect![[r#"
            chart:
                1.0000 |**        
                       |  **      
                       |    ***   
                       |       ** 
                0.0000 |         *
                       +----------
                        0       10"#]]
        .assert_eq(&format!("chart:\n{}", line_chart(&values, 10, 5)));
    }

    #[test]
    fn degenerate_series_draw_without_panicking() {
        assert!(line_chart(&[], 10, 4).contains('+'));
        assert!(line_chart(&[f64::NAN, f64::INFINITY], 10, 4).contains('+'));
        assert!(line_chart(&[3.0], 1, 1).contains('*'));
    }
}
