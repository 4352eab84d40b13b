//! `spacetune run` end to end at the tiny budget: killed (`kill -9`) mid-profile and
//! mid-search and run again, it finishes without redoing finished work; its report renders
//! in headless Chromium with every plot drawn and no console message.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Two candidate spaces over one small skeleton, on synthetic 1×28×28 data.
const FILE: &str = r#"
input 1x28x28
classes 10
block c(k) {
    conv(out, k=k, stride=stride) | bn | relu
}
block dw(k) {
    dwconv(k=k, stride=stride) | bn | relu
    conv(out, k=1) | bn | relu
}
space plain {
    candidates {
        c(k) for k in [1, 3, 5]
    }
    default c(3)
}
space separable {
    candidates {
        dw(k) for k in [3, 5, 7]
    }
    default dw(3)
}
skeleton {
    stem conv(8, k=3, stride=2) | bn | relu
    search out=[8, 16, 16] stride=[1, 2, 1]
    head gap | linear(classes)
}
"#;

/// SSBNs of FILE: 1 + 3 × 2 per space.
const SSBNS: usize = 14;

struct Run {
    dir: tempfile::TempDir,
    /// What the run that finished printed (stdout, then stderr).
    log: String,
    /// Accuracies in the store when the first run was killed.
    profiled_at_kill: usize,
}

impl Run {
    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }
}

fn args(dir: &Path) -> Vec<String> {
    let file = dir.join("two.space");
    let mut v: Vec<String> = ["run", file.to_str().unwrap(), "--backend", "sim"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // Fine-tuning sizes that make the profile last long enough to be killed in.
    for (k, val) in [
        ("--dataset", "synthetic".to_string()),
        ("--train-subset", "512".into()),
        ("--validation", "128".into()),
        ("--epochs", "1".into()),
        ("--finetune-subset", "384".into()),
        ("--batch", "32".into()),
        ("--budget", "tiny".to_string()),
        ("--mode", "proxyless".into()),
        ("--random-k", "2".into()),
        ("--eval-samples", "12".into()),
        ("--db", dir.join("m.db").display().to_string()),
        ("--out", dir.join("out").display().to_string()),
    ] {
        v.push(k.to_string());
        v.push(val);
    }
    v
}

fn spawn(dir: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_spacetune"))
        .args(args(dir))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Accuracy rows in the store (0 while it does not exist yet).
fn accuracies(db: &Path) -> usize {
    if !db.exists() {
        return 0;
    }
    use spacetune::backends::store::{Sqlite, Store};
    Sqlite::open(db)
        .and_then(|c| c.accuracy_count())
        .unwrap_or(0)
}

/// Epochs in the newest search checkpoint beside the store.
fn checkpointed_epochs(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("search-"))
        .filter_map(|e| std::fs::read_to_string(e.path().join("search.json")).ok())
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map(|v| v["logs"].as_array().map_or(0, Vec::len))
        .max()
        .unwrap_or(0)
}

/// Waits for `ready`, then kills the process with SIGKILL.
fn kill_when(mut child: std::process::Child, what: &str, ready: impl Fn() -> bool) {
    let start = Instant::now();
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before {what}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "{what}: timed out"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The run, killed mid-profile and mid-search, then run to the end (once per test binary).
fn the_run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("two.space"), FILE).unwrap();
        let db = dir.path().join("m.db");
        kill_when(spawn(dir.path()), "3 accuracies", || accuracies(&db) >= 3);
        let profiled_at_kill = accuracies(&db);
        assert!(profiled_at_kill < SSBNS, "the profile had ended");
        kill_when(spawn(dir.path()), "a search epoch", || {
            checkpointed_epochs(dir.path()) >= 1
        });
        let out: Output = Command::new(env!("CARGO_BIN_EXE_spacetune"))
            .args(args(dir.path()))
            .output()
            .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{log}");
        Run {
            dir,
            log,
            profiled_at_kill,
        }
    })
}

#[test]
fn a_run_killed_twice_finishes_without_redoing_finished_work() {
    let run = the_run();
    let log = &run.log;
    // Every SSBN trained exactly once over the three runs: the last one trained none.
    assert!(
        log.contains(&format!(
            "{SSBNS} networks: 0 profiled now, {SSBNS} from the database"
        )),
        "{log}"
    );
    assert!(run.profiled_at_kill >= 3);
    assert_eq!(accuracies(&run.dir.path().join("m.db")), SSBNS);
    // Every SSBN's latency from the store.
    assert!(log.contains(&format!("{SSBNS} from the cache")), "{log}");
    // The search took its finished epochs over from the checkpoint of the killed run.
    let resumed = log
        .split(" from a checkpoint)")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no resumed epochs in\n{log}"));
    assert!(resumed >= 1, "{log}");
    // And it went on to the chosen network, the baselines and the report.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.out().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["phase"], "Compared");
    let names: Vec<&str> = summary["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names[..2], ["chosen", "ssbn0"], "{names:?}");
    assert!(names.len() >= 4, "{names:?}");
    assert_eq!(
        summary["failures"].as_array().unwrap().len(),
        0,
        "{summary}"
    );
}

/// Renders `page` in headless Chromium: the DOM after the page's scripts ran, and every
/// console line Chromium logged.
fn chromium(page: &Path, screenshot: Option<&Path>) -> (String, Vec<String>) {
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1280,4000",
    ]);
    match screenshot {
        Some(png) => cmd.arg(format!("--screenshot={}", png.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs (scripts/test.sh installs Debian's chromium)");
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

/// Every `data-rendered="WxH N"` the page's check wrote: plot id, size and shapes.
fn rendered(dom: &str) -> Vec<(String, f64, f64, usize)> {
    dom.split("<figure ")
        .skip(1)
        .filter_map(|f| {
            let attr = |name: &str| {
                let at = f.find(&format!("{name}=\""))? + name.len() + 2;
                Some(f[at..at + f[at..].find('"')?].to_string())
            };
            let r = attr("data-rendered")?;
            let (size, n) = r.split_once(' ')?;
            let (w, h) = size.split_once('x')?;
            Some((
                attr("id")?,
                w.parse().ok()?,
                h.parse().ok()?,
                n.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn the_report_renders_in_headless_chromium_with_every_plot_drawn() {
    let run = the_run();
    let page = run.out().join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing loaded from elsewhere (SVG's xmlns is a name, not a load).
    for reach in ["src=", "href=", "url(", "@import"] {
        assert!(!html.contains(reach), "the page loads something: {reach}");
    }
    let (dom, console) = chromium(&page, None);
    assert!(console.is_empty(), "console: {console:#?}");
    let plots = rendered(&dom);
    let ids: Vec<&str> = plots.iter().map(|p| p.0.as_str()).collect();
    for want in [
        "space-plain",
        "space-separable",
        "latency-corrected",
        "curve-loss",
        "curve-latency",
        "curve-temperature",
        "curve-entropy",
        "outcomes",
    ] {
        assert!(ids.contains(&want), "no plot {want} in {ids:?}");
    }
    for (id, w, h, shapes) in &plots {
        assert!(
            *w > 100.0 && *h > 100.0 && *shapes > 3,
            "{id}: {w}x{h}, {shapes} shapes"
        );
    }
    assert_eq!(
        html.matches("<figure class=\"plot\"").count(),
        plots.len(),
        "a plot was not rendered"
    );
    let png = run.out().join("report.png");
    chromium(&page, Some(&png));
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "{} bytes",
        bytes.len()
    );
    // Kept beside the build for a person to look at.
    let keep = common::root().join("target/report-screenshot.png");
    let _ = std::fs::copy(&png, keep);
}

/// The check above can fail: an empty plot is caught, by the page's own check and by the
/// console.
#[test]
fn an_empty_plot_is_caught() {
    let run = the_run();
    let html = std::fs::read_to_string(run.out().join("report.html")).unwrap();
    let broken = html.replacen(
        "<h2>",
        "<figure class=\"plot\" id=\"broken\"><svg width=\"0\" height=\"0\"></svg></figure><h2>",
        1,
    );
    let page = run.out().join("broken.html");
    std::fs::write(&page, broken).unwrap();
    let (dom, console) = chromium(&page, None);
    assert!(
        console.iter().any(|l| l.contains("empty plot broken")),
        "{console:?}"
    );
    let broken = rendered(&dom)
        .into_iter()
        .find(|p| p.0 == "broken")
        .unwrap();
    assert_eq!((broken.1, broken.3), (0.0, 0));
}
