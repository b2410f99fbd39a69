//! A config of many files (`include:`, one file per tenant) on the real binary against the
//! fake Divalto server: each file is accepted or refused on its own, at start and on every
//! reload, the per-file metric says which, counters of the other tenants never reset, and
//! `check-config`, the API and the status page name each probe's file.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Exporter, Fake, SECRET_CODE, Scrape, fake};

/// A main file including `conf.d/*.yaml`, with the fake as the shared server `erp` and
/// defaults every tenant's probes inherit.
struct Layout {
    dir: tempfile::TempDir,
}

impl Layout {
    fn new(fake: &Fake) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        let main = format!(
            "include: [\"conf.d/*.yaml\"]\ndefaults:\n  interval: 1s\n  timeout: 500ms\nservers:\n  erp: {{base_url: \"{}\"}}\nprobes:\n  - {{name: main-ok, server: erp, code: \"{SECRET_CODE}-ok\"}}\n",
            fake.server.base_url()
        );
        std::fs::write(dir.path().join("main.yaml"), main).unwrap();
        Self { dir }
    }

    fn main(&self) -> PathBuf {
        self.dir.path().join("main.yaml")
    }

    fn file(&self, tenant: &str) -> PathBuf {
        self.dir
            .path()
            .join("conf.d")
            .join(format!("{tenant}.yaml"))
    }

    fn label(&self, tenant: &str) -> String {
        self.file(tenant).display().to_string()
    }

    /// A good file for `tenant`, with one probe `<tenant>-1`.
    fn good(&self, tenant: &str) {
        std::fs::write(
            self.file(tenant),
            format!(
                "probes:\n  - name: {tenant}-1\n    server: erp\n    code: \"{SECRET_CODE}-ok\"\n"
            ),
        )
        .unwrap();
    }

    /// A broken file for `tenant`: its probe has an invalid interval at line 5, column 15.
    fn broken(&self, tenant: &str) {
        std::fs::write(
            self.file(tenant),
            format!("probes:\n  - name: {tenant}-1\n    server: erp\n    code: \"{SECRET_CODE}-ok\"\n    interval: banana\n"),
        )
        .unwrap();
    }

    fn flag(&self) -> String {
        format!("--config.file={}", self.main().display())
    }
}

fn runs(scrape: &Scrape, probe: &str) -> f64 {
    ["success", "failure"]
        .iter()
        .filter_map(|r| {
            scrape.value(
                "webhook_probe_runs_total",
                &[("probe", probe), ("result", r)],
            )
        })
        .sum()
}

fn file_ok(scrape: &Scrape, file: &str) -> Option<f64> {
    scrape.value(
        "webhook_exporter_config_file_last_reload_successful",
        &[("file", file)],
    )
}

fn reload(exporter: &Exporter) -> common::HttpResponse {
    common::http_request(exporter.address, "POST", "/-/reload", &[])
}

/// Generous: probes run every second, a slow machine may need a few.
const WAIT: Duration = Duration::from_secs(20);

#[test]
fn each_tenant_file_is_accepted_or_refused_on_its_own_at_start_and_on_reload() {
    let fake = fake();
    let layout = Layout::new(&fake);
    layout.good("acme");
    layout.good("globex");
    layout.broken("initech");
    let main = layout.main().display().to_string();
    let exporter = Exporter::start(&[&layout.flag()], &[]);

    // At start: the broken tenant's probe is absent, the others run.
    let start = exporter.wait_for(WAIT, "the good tenants to run", |s| {
        runs(s, "acme-1") >= 2.0 && runs(s, "globex-1") >= 1.0 && runs(s, "main-ok") >= 1.0
    });
    assert_eq!(runs(&start, "initech-1"), 0.0);
    assert!(!start.text.contains("initech-1"), "{}", start.text);
    assert_eq!(file_ok(&start, &main), Some(1.0));
    assert_eq!(file_ok(&start, &layout.label("acme")), Some(1.0));
    assert_eq!(file_ok(&start, &layout.label("globex")), Some(1.0));
    assert_eq!(file_ok(&start, &layout.label("initech")), Some(0.0));
    let (_, page) = exporter.get("/");
    assert!(
        page.contains(&format!("refused: {}", layout.label("initech"))),
        "{page}"
    );
    assert_eq!(
        start.value("webhook_exporter_config_last_reload_successful", &[]),
        Some(0.0)
    );
    let logs = exporter.logs();
    assert!(
        logs.contains(&format!("{}:5:15:", layout.label("initech"))),
        "{logs}"
    );
    assert!(!logs.contains(SECRET_CODE), "{logs}");

    // Fixed: its probe appears, the others keep their counters.
    layout.good("initech");
    let answer = reload(&exporter);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let fixed = exporter.wait_for(WAIT, "the fixed tenant to run", |s| {
        runs(s, "initech-1") >= 2.0
    });
    assert!(runs(&fixed, "acme-1") >= runs(&start, "acme-1"));
    assert_eq!(file_ok(&fixed, &layout.label("initech")), Some(1.0));
    assert_eq!(
        fixed.value("webhook_exporter_config_last_reload_successful", &[]),
        Some(1.0)
    );

    // Broken again (another mistake): it keeps running its last good version.
    std::fs::write(
        layout.file("initech"),
        format!("probes:\n  - name: initech-1\n    server: erp\n    code: \"{SECRET_CODE}-ok\"\n    retries: 1\n    colour: blue\n"),
    )
    .unwrap();
    let answer = reload(&exporter);
    assert_eq!(answer.status, 500, "{}", answer.body);
    assert!(
        answer
            .body
            .contains(&format!("{}:6:5:", layout.label("initech"))),
        "{}",
        answer.body
    );
    assert!(!answer.body.contains(SECRET_CODE), "{}", answer.body);
    let kept = exporter.scrape();
    let initech_runs = runs(&kept, "initech-1");
    let acme_runs = runs(&kept, "acme-1");
    assert!(acme_runs >= runs(&fixed, "acme-1"));
    assert!(initech_runs >= runs(&fixed, "initech-1"));
    assert_eq!(file_ok(&kept, &layout.label("initech")), Some(0.0));
    assert_eq!(file_ok(&kept, &layout.label("acme")), Some(1.0));
    assert_eq!(file_ok(&kept, &main), Some(1.0));
    let later = exporter.wait_for(WAIT, "the kept version to go on running", |s| {
        runs(s, "initech-1") >= initech_runs + 2.0
    });
    assert!(runs(&later, "acme-1") >= acme_runs);
    let logs = exporter.logs();
    assert!(
        logs.contains(&format!("{}:6:5:", layout.label("initech"))),
        "{logs}"
    );

    // A file added and a file removed are picked up.
    layout.good("newco");
    std::fs::remove_file(layout.file("globex")).unwrap();
    let answer = reload(&exporter);
    assert_eq!(answer.status, 500, "{}", answer.body); // initech is still refused
    let moved = exporter.wait_for(WAIT, "the new tenant to run", |s| runs(s, "newco-1") >= 1.0);
    assert!(!moved.text.contains("globex-1"), "{}", moved.text);
    assert_eq!(file_ok(&moved, &layout.label("globex")), None);
    assert_eq!(file_ok(&moved, &layout.label("newco")), Some(1.0));
    assert!(runs(&moved, "initech-1") >= initech_runs);
    assert!(runs(&moved, "acme-1") >= acme_runs);

    // An invalid main file is refused whole: nothing changes but its own series.
    let main_text = std::fs::read_to_string(layout.main()).unwrap();
    std::fs::write(layout.main(), format!("{main_text}history_size: 0\n")).unwrap();
    let answer = reload(&exporter);
    assert_eq!(answer.status, 500, "{}", answer.body);
    let refused = exporter.scrape();
    assert_eq!(file_ok(&refused, &main), Some(0.0));
    assert_eq!(file_ok(&refused, &layout.label("newco")), Some(1.0));
    assert!(runs(&refused, "newco-1") >= 1.0 && runs(&refused, "acme-1") >= acme_runs);
}

#[test]
fn the_api_and_the_status_page_name_each_probes_file() {
    let fake = fake();
    let layout = Layout::new(&fake);
    layout.good("acme");
    let exporter = Exporter::start(&[&layout.flag()], &[]);
    let (status, body) = exporter.get("/api/v1/probes/acme-1");
    assert_eq!(status, 200, "{body}");
    let probe: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(probe["file"], layout.label("acme"));
    let (_, body) = exporter.get("/api/v1/probes");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let main = list["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "main-ok")
        .unwrap();
    assert_eq!(main["file"], layout.main().display().to_string());
    let (status, page) = exporter.get("/");
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!(
            "<span class=\"file\" title=\"config file\">{}</span>",
            layout.label("acme")
        )),
        "{page}"
    );

    // Moved to another file unchanged: same counters, the new file named.
    let before = exporter.wait_for(WAIT, "a run", |s| runs(s, "acme-1") >= 1.0);
    std::fs::rename(layout.file("acme"), layout.file("beta")).unwrap();
    let answer = reload(&exporter);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer
            .body
            .contains("0 added, 0 removed, 0 changed, 2 unchanged"),
        "{}",
        answer.body
    );
    assert!(runs(&exporter.scrape(), "acme-1") >= runs(&before, "acme-1"));
    let (_, body) = exporter.get("/api/v1/probes/acme-1");
    let probe: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(probe["file"], layout.label("beta"));
}

#[test]
fn check_config_checks_every_file_and_groups_the_probes_per_file() {
    let fake = fake();
    let layout = Layout::new(&fake);
    layout.good("acme");
    layout.broken("initech");
    let (code, stdout, stderr) = common::run_binary(&["check-config", &layout.flag()], &[], None);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("{}:5:15:", layout.label("initech"))),
        "{stderr}"
    );
    assert!(
        stdout.contains(&format!("{}: refused, 1 error(s)", layout.label("initech"))),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{}: valid, 1 probe(s), 0 server(s)",
            layout.label("acme")
        )),
        "{stdout}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let acme = lines
        .iter()
        .position(|l| *l == layout.label("acme"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(lines[acme + 1].starts_with("PROBE"), "{stdout}");
    assert!(lines[acme + 2].starts_with("acme-1 "), "{stdout}");
    assert!(!format!("{stdout}{stderr}").contains(SECRET_CODE));

    layout.good("initech");
    let (code, stdout, stderr) = common::run_binary(&["check-config", &layout.flag()], &[], None);
    assert_eq!(code, 0, "{stdout}{stderr}");
}
