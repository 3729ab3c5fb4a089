use super::*;

fn log_roc() -> Chart {
    Chart {
        title: "ROC".into(),
        x: Axis::new("false accept rate", 1e-6, 1.0),
        x_scale: Scale::Log10,
        y: Axis::new("TAR", 0.0, 1.0),
        y2: None,
        legend: Corner::LowerRight,
        series: vec![Series::line(
            "LFW",
            PALETTE[1],
            vec![(0.0, 0.0), (1e-6, 0.0), (1e-3, 0.5), (1.0, 1.0)],
        )],
    }
}

/// The text of every SVG text element.
fn texts(svg: &str) -> Vec<&str> {
    let lines: Vec<&str> = svg.lines().collect();
    lines.windows(2).filter(|w| w[0].starts_with("<text")).map(|w| w[1]).collect()
}

/// The `points` of the SVG polyline drawn in `color`.
fn polyline(svg: &str, color: [u8; 3]) -> Vec<(f64, f64)> {
    let stroke = format!("stroke=\"#{:02X}{:02X}{:02X}\"", color[0], color[1], color[2]);
    let line = svg
        .lines()
        .find(|l| l.contains("<polyline") && l.contains(&stroke))
        .expect("series polyline");
    let points = line.split("points=\"").nth(1).and_then(|s| s.split('"').next()).expect("points");
    points
        .split_whitespace()
        .map(|p| {
            let (x, y) = p.split_once(',').expect("x,y");
            (x.parse().expect("x"), y.parse().expect("y"))
        })
        .collect()
}

#[test]
fn tick_labels_are_short_and_powers_of_ten_are_superscripts() {
    assert_eq!(label(0.6000000000000001, Scale::Linear), "0.6");
    assert_eq!(label(250000.0, Scale::Linear), "2.5e5");
    assert_eq!(label(1e-6, Scale::Linear), "1e-6");
    assert_eq!(label(1e-6, Scale::Log10), "10⁻⁶");
    assert_eq!(label(1e-12, Scale::Log10), "10⁻¹²");
    assert_eq!(label(0.1, Scale::Log10), "10⁻¹");
    assert_eq!(label(1.0, Scale::Log10), "1");
    assert_eq!(label(100.0, Scale::Log10), "10²");
    assert_eq!(label(2e-3, Scale::Log10), "0.002");
}

#[test]
fn a_log_axis_places_a_decade_by_its_exponent() {
    let svg = log_roc().svg().unwrap();
    // FAR 0 cannot be drawn on a log axis and is left out; 10⁻³ lies halfway between 10⁻⁶
    // and 1 in log space, and TAR 0.5 halfway up.
    let p = polyline(&svg, PALETTE[1]);
    assert_eq!(p.len(), 3, "{p:?}");
    assert!((p[1].0 - (p[0].0 + p[2].0) / 2.0).abs() <= 1.0, "{p:?}");
    assert!((p[1].1 - (p[0].1 + p[2].1) / 2.0).abs() <= 1.0, "{p:?}");
    assert!(p[2].0 - p[0].0 > 500.0, "the axis spans most of the width: {p:?}");
    // Every decade is labelled, as text.
    let t = texts(&svg);
    for want in [
        "10⁻⁶",
        "10⁻⁵",
        "10⁻⁴",
        "10⁻³",
        "10⁻²",
        "10⁻¹",
        "1",
        "false accept rate",
        "TAR",
        "ROC",
        "LFW",
    ] {
        assert!(t.contains(&want), "{want} missing from {t:?}");
    }
}

#[test]
fn no_label_is_turned_on_its_side() {
    let mut c = log_roc();
    c.y2 = Some(Axis::new("accuracy", 0.0, 1.0));
    c.series.push(Series {
        right: true,
        ..Series::line("acc", PALETTE[2], vec![(1e-3, 1.0)])
    });
    let svg = c.svg().unwrap();
    assert!(texts(&svg).contains(&"accuracy"));
    assert!(!svg.contains("rotate"), "a rotated text element");
}

#[test]
fn the_secondary_axis_measures_its_own_series() {
    // Loss up to 10 on the left, accuracy 0..1 on the right: accuracy 1 reaches the top, as
    // loss 10 does.
    let chart = Chart {
        title: "Training".into(),
        x: Axis::new("step", 0.0, 10.0),
        x_scale: Scale::Linear,
        y: Axis::new("loss", 0.0, 10.0),
        y2: Some(Axis::new("accuracy", 0.0, 1.0)),
        legend: Corner::UpperRight,
        series: vec![
            Series::line("loss", PALETTE[0], vec![(0.0, 10.0), (10.0, 0.0)]),
            Series {
                right: true,
                ..Series::line("accuracy", PALETTE[2], vec![(0.0, 0.0), (10.0, 1.0)])
            },
        ],
    };
    let svg = chart.svg().unwrap();
    let (loss, acc) = (polyline(&svg, PALETTE[0]), polyline(&svg, PALETTE[2]));
    assert!(
        (loss[0].1 - acc[1].1).abs() <= 1.0 && (loss[1].1 - acc[0].1).abs() <= 1.0,
        "{loss:?} {acc:?}"
    );
}

#[test]
fn the_png_matches_the_svg_and_has_its_text() {
    let mut chart = log_roc();
    chart.series[0].style = Style::Dots;
    let svg = chart.svg().unwrap();
    let png = chart.png().unwrap();
    assert_eq!((png.width(), png.height()), (W, H));
    // The dot at (10⁻³, 0.5): where the SVG puts its circle, the PNG has its colour.
    let circle = svg
        .lines()
        .filter(|l| l.contains("<circle") && l.contains("#D62728"))
        .nth(1)
        .expect("second dot");
    let attr = |name: &str| -> f64 {
        circle
            .split(&format!("{name}=\""))
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(png.get_pixel(attr("cx") as u32, attr("cy") as u32).0, PALETTE[1]);
    // The title is drawn from the embedded font: dark pixels in the top rows.
    let dark = (0..W)
        .flat_map(|x| (0..36).map(move |y| (x, y)))
        .filter(|&(x, y)| png.get_pixel(x, y).0[0] < 100)
        .count();
    assert!(dark > 20, "{dark} dark pixels in the title band");
}

#[test]
fn the_same_chart_gives_the_same_bytes() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    log_roc().save(&a, "roc").unwrap();
    log_roc().save(&b, "roc").unwrap();
    for f in ["roc.svg", "roc.png"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f}");
    }
    assert_eq!(image::open(a.join("roc.png")).unwrap().width(), W);
}

#[test]
fn the_sphere_puts_features_by_angle_and_fades_the_far_side() {
    // 2-D: (1, 0) to the right of the centre, (0, 2) straight above it.
    let flat = Sphere {
        title: "circle".into(),
        features: vec![vec![1.0, 0.0], vec![0.0, 2.0]],
        labels: vec![0, 1],
    };
    let p = flat.projected();
    assert!((p[0].0 - 1.0).abs() < 1e-12 && p[0].1.abs() < 1e-12, "{p:?}");
    assert!(p[1].0.abs() < 1e-12 && (p[1].1 - 1.0).abs() < 1e-12, "{p:?}");
    // 3-D: most features around +z; the one at -z is behind, so it is drawn first.
    let ball = Sphere {
        title: "sphere".into(),
        features: vec![vec![0.0, 0.1, 1.0], vec![0.1, 0.0, 1.0], vec![0.0, 0.0, -1.0]],
        labels: vec![0, 0, 1],
    };
    let p = ball.projected();
    assert_eq!(p[0].3, 1);
    assert!(p[0].2 < 0.0 && p[1].2 > 0.0 && p[2].2 > 0.0, "{p:?}");
    let svg = ball.svg().unwrap();
    // Palette colour 1 (214, 39, 40) faded two thirds toward white.
    assert!(svg.contains("#F1B7B7"), "faded far-side dot");
    assert_eq!(ball.png().unwrap().width(), 520);
}
