//! Draw the SVG charts of one benchmark run from its JSON results file.
//!
//! `carpd-bench-plot RESULTS.json OUTDIR` writes OUTDIR/*.svg. Every number in
//! a chart comes from the JSON; nothing is typed in by hand.

use std::error::Error;
use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

type Res<T> = Result<T, Box<dyn Error>>;

/// One bar: median with a min..max whisker.
#[derive(Clone, Copy)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

fn stat(v: &Value, key: &str, scale: f64) -> Option<Stat> {
    let s = v.get(key)?;
    Some(Stat {
        median: s.get("median")?.as_f64()? * scale,
        min: s.get("min")?.as_f64()? * scale,
        max: s.get("max")?.as_f64()? * scale,
    })
}

fn colour(impl_name: &str) -> RGBColor {
    match impl_name {
        n if n.starts_with("carpd") && ["freebsd", "fast", "openbsd", "realtime", "virtual", "guard"].iter().any(|v| n.contains(v)) => RGBColor(120, 170, 230),
        n if n.starts_with("carpd") => RGBColor(31, 100, 180),
        n if n.starts_with("keepalived") => RGBColor(230, 120, 30),
        n if n.starts_with("ucarp") => RGBColor(60, 160, 60),
        _ => RGBColor(120, 120, 120),
    }
}

/// A grouped bar chart: one group per category, one bar per series; optional
/// per-category reference line (a protocol bound).
fn bars(
    path: &Path,
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[String],
    value: &dyn Fn(usize, usize) -> Option<Stat>,
    bound: &dyn Fn(usize, usize) -> Option<f64>,
) -> Res<()> {
    let mut ymax: f64 = 0.0;
    for c in 0..categories.len() {
        for s in 0..series.len() {
            if let Some(v) = value(c, s) {
                ymax = ymax.max(v.max);
            }
        }
        for s in 0..series.len() {
            if let Some(b) = bound(c, s) {
                ymax = ymax.max(b);
            }
        }
    }
    let ymax = if ymax <= 0.0 { 1.0 } else { ymax * 1.6 };
    let width = (160 + categories.len() * (40 + series.len() * 34)).max(640) as u32;
    let root = SVGBackend::new(path, (width, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = categories.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..n, 0.0..ymax)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(0)
        .y_desc(y_label)
        .draw()?;
    let slot = 0.8 / series.len() as f64;
    for (s, name) in series.iter().enumerate() {
        let col = colour(name);
        let mut first = true;
        for c in 0..categories.len() {
            let Some(v) = value(c, s) else { continue };
            let x0 = c as f64 + 0.1 + s as f64 * slot;
            let x1 = x0 + slot * 0.9;
            let bar = chart.draw_series(std::iter::once(Rectangle::new(
                [(x0, 0.0), (x1, v.median)],
                col.filled(),
            )))?;
            if first {
                bar.label(name.as_str()).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], col.filled())
                });
                first = false;
            }
            let xm = (x0 + x1) / 2.0;
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(xm, v.min), (xm, v.max)],
                BLACK.stroke_width(1),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                label(v.median),
                (x0, v.max + ymax * 0.012),
                ("sans-serif", 11).into_font().color(&BLACK),
            )))?;
        }
    }
    let mut bound_labelled = false;
    for c in 0..categories.len() {
        for s in 0..series.len() {
            let (Some(b), Some(_)) = (bound(c, s), value(c, s)) else { continue };
            let x0 = c as f64 + 0.1 + s as f64 * slot;
            let l = chart.draw_series(std::iter::once(PathElement::new(
                vec![(x0 - slot * 0.05, b), (x0 + slot * 0.95, b)],
                RED.stroke_width(2),
            )))?;
            if !bound_labelled {
                l.label("protocol bound of that implementation and setting")
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], RED.stroke_width(2)));
                bound_labelled = true;
            }
        }
        chart.draw_series(std::iter::once(Text::new(
            categories[c].clone(),
            (c as f64 + 0.08, -ymax * 0.06),
            ("sans-serif", 12).into_font().color(&BLACK),
        )))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn label(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A line chart of a per-run value against the number of vhosts, one line per implementation.
fn lines(
    path: &Path,
    title: &str,
    y_label: &str,
    points: &[(String, Vec<(f64, f64)>)],
) -> Res<()> {
    // Log-log: the implementations differ by orders of magnitude. Zero values are left out.
    let points: Vec<(String, Vec<(f64, f64)>)> = points
        .iter()
        .map(|(n, p)| (n.clone(), p.iter().copied().filter(|q| q.0 > 0.0 && q.1 > 0.0).collect()))
        .collect();
    let xmax = points
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(1.0, f64::max);
    let ymax = points
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .fold(1e-3, f64::max)
        * 3.0;
    let ymin = points
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .fold(f64::INFINITY, f64::min)
        .min(ymax / 10.0)
        / 2.0;
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((0.7..xmax * 1.5).log_scale(), (ymin..ymax).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("vhosts (log scale)")
        .y_desc(y_label)
        .draw()?;
    for (name, pts) in &points {
        let col = colour(name);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), col.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], col.stroke_width(2)));
        chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, col.filled())))?;
        chart.draw_series(pts.iter().map(|p| {
            Text::new(
                label(p.1),
                (p.0 * 1.05, p.1 * 1.05),
                ("sans-serif", 11).into_font().color(&BLACK),
            )
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn rows<'a>(results: &'a Value, scenario: &str) -> Vec<&'a Value> {
    results["scenarios"][scenario]["rows"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn s(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(x) => x.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn unique(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

fn crash(results: &Value, out: &Path) -> Res<()> {
    let r = rows(results, "crash");
    if r.is_empty() {
        return Ok(());
    }
    for (mode, key, what) in [
        ("linkdown", "outage_s", "client outage after the master's link goes down"),
        ("kill9", "takeover_s", "takeover after kill -9 of the master"),
    ] {
        let sel: Vec<&&Value> = r.iter().filter(|v| s(v, "mode") == mode).collect();
        let cats = unique(sel.iter().map(|v| format!("backup advskew {}", s(v, "advskew_backup"))));
        let series = unique(sel.iter().map(|v| s(v, "impl")));
        let find = |c: usize, i: usize| {
            sel.iter().copied().find(|v| {
                format!("backup advskew {}", s(v, "advskew_backup")) == cats[c] && s(v, "impl") == series[i]
            })
        };
        bars(
            &out.join(format!("crash-{mode}.svg")),
            &format!("Crash failover, advbase 1: {what}"),
            "ms (median, whisker min..max)",
            &cats,
            &series,
            &|c, i| find(c, i).and_then(|v| stat(v, key, 1000.0)),
            &|c, i| find(c, i).and_then(|v| v["bound_s"].as_f64()).map(|b| b * 1000.0),
        )?;
    }
    Ok(())
}

fn simple(
    results: &Value,
    out: &Path,
    scenario: &str,
    file: &str,
    title: &str,
    key: &str,
    cat: &dyn Fn(&Value) -> String,
    with_bound: bool,
) -> Res<()> {
    let r = rows(results, scenario);
    let r: Vec<&Value> = r.into_iter().filter(|v| v.get(key).is_some()).collect();
    if r.is_empty() {
        return Ok(());
    }
    let cats: Vec<String> = r.iter().map(|v| cat(v)).collect();
    let series = unique(r.iter().map(|v| s(v, "impl")));
    bars(
        &out.join(file),
        title,
        "ms (median, whisker min..max)",
        &cats,
        &series,
        &|c, i| {
            if s(r[c], "impl") == series[i] {
                stat(r[c], key, 1000.0)
            } else {
                None
            }
        },
        &|c, i| {
            if with_bound && s(r[c], "impl") == series[i] {
                r[c]["bound_s"].as_f64().map(|b| b * 1000.0)
            } else {
                None
            }
        },
    )
}

fn scale(results: &Value, out: &Path) -> Res<()> {
    let r = rows(results, "scale");
    if r.is_empty() {
        return Ok(());
    }
    let impls = unique(r.iter().map(|v| s(v, "impl")));
    for (file, title, key, div) in [
        ("scale-cpu.svg", "Idle CPU of the master node (CPU seconds per minute)", "cpu_s_per_min_master", 1.0),
        ("scale-cpu-backup.svg", "Idle CPU of the backup node (CPU seconds per minute)", "cpu_s_per_min_backup", 1.0),
        ("scale-pss.svg", "Memory of the master node (Pss, MiB, all processes)", "pss_kib_master", 1024.0),
        ("scale-hwm.svg", "Peak RSS of the master node (sum of VmHWM, MiB)", "vmhwm_kib_master", 1024.0),
        ("scale-adverts.svg", "Advertisements per second sent by the master", "adverts_per_s", 1.0),
    ] {
        let pts: Vec<(String, Vec<(f64, f64)>)> = impls
            .iter()
            .map(|name| {
                let p = r
                    .iter()
                    .filter(|v| &s(v, "impl") == name)
                    .filter_map(|v| Some((v["vhosts"].as_f64()?, v[key].as_f64()? / div)))
                    .collect();
                (name.clone(), p)
            })
            .collect();
        let unit = if div > 1.0 {
            "MiB (log scale)"
        } else if key.starts_with("cpu") {
            "CPU s / min (log scale)"
        } else {
            "adverts / s (log scale)"
        };
        lines(&out.join(file), title, unit, &pts)?;
    }
    Ok(())
}

fn packet(results: &Value, out: &Path) -> Res<()> {
    let r = rows(results, "packet");
    if r.is_empty() {
        return Ok(());
    }
    let cats: Vec<String> = r.iter().map(|v| s(v, "bench")).collect();
    let series = vec!["carpd".to_string()];
    bars(
        &out.join("packet.svg"),
        "carp-proto packet path (criterion, ns per advertisement)",
        "ns (median, whisker = criterion interval)",
        &cats,
        &series,
        &|c, _| {
            Some(Stat {
                median: r[c]["median_ns"].as_f64()?,
                min: r[c]["low_ns"].as_f64()?,
                max: r[c]["high_ns"].as_f64()?,
            })
        },
        &|_, _| None,
    )
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: {} RESULTS.json OUTDIR", args[0]);
        std::process::exit(2);
    }
    let results: Value = serde_json::from_str(&std::fs::read_to_string(&args[1])?)?;
    let out = Path::new(&args[2]);
    std::fs::create_dir_all(out)?;
    crash(&results, out)?;
    simple(
        &results,
        out,
        "switchover",
        "switchover.svg",
        "Planned switchover: client outage",
        "outage_s",
        &|v| format!("{} {}", s(v, "impl"), s(v, "how")),
        false,
    )?;
    simple(
        &results,
        out,
        "preempt",
        "preempt.svg",
        "Preemption by a better node joining: client outage",
        "outage_s",
        &|v| s(v, "impl"),
        false,
    )?;
    simple(
        &results,
        out,
        "subsecond",
        "subsecond.svg",
        "Sub-second mode: client outage after link down",
        "outage_s",
        &|v| s(v, "impl"),
        true,
    )?;
    simple(
        &results,
        out,
        "many",
        "many.svg",
        "1000 IPv4 + 1000 IPv6 addresses: decision to all reachable",
        "all_reachable_after_decision_s",
        &|v| s(v, "impl"),
        false,
    )?;
    simple(
        &results,
        out,
        "daemonkill",
        "daemonkill.svg",
        "kill -9 of the MASTER's daemon: kill to peer MASTER",
        "takeover_s",
        &|v| s(v, "impl"),
        false,
    )?;
    simple(
        &results,
        out,
        "vrrp3",
        "vrrp3.svg",
        "VRRPv3 crash failover (link down): client outage",
        "outage_s",
        &|v| format!("{} backup priority {}", s(v, "impl"), s(v, "prio_backup")),
        true,
    )?;
    scale(&results, out)?;
    packet(&results, out)?;
    Ok(())
}
