//! The status page in a real browser: Debian's `chromium`, driven through `chromedriver` by
//! the `fantoccini` WebDriver client, against the real binary probing a fake Divalto server.
//!
//! CI installs the browser: `apt-get install chromium chromium-driver`. Without it these
//! tests fail (they never skip), saying what to install.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Exporter, FakeDivalto, SECRET_CODE};
use fantoccini::elements::{Element, ElementRef};
use fantoccini::error::CmdError;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const XSS_MESSAGE: &str = "<img src=x onerror=alert(1)>";
/// Installed in every document before its own scripts: records dialogs (an XSS payload's
/// `alert(1)`) and Content-Security-Policy violations (the page breaking its own policy).
const PROBE_SCRIPT: &str = r#"
window.__dialogs = [];
for (const name of ["alert", "confirm", "prompt"]) {
  window[name] = function (...args) { window.__dialogs.push(name + ":" + String(args[0])); };
}
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
"#;

// ---------------------------------------------------------------------------------------
// The WebDriver client: fantoccini, driven from these blocking tests on a runtime of its own.

/// How long one WebDriver command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

/// `chromedriver` on a free port; killed when dropped.
struct ChromeDriver {
    child: Child,
    address: SocketAddr,
    /// Runs the WebDriver sessions (fantoccini is async; these tests are not).
    runtime: tokio::runtime::Runtime,
}

impl ChromeDriver {
    fn start() -> Self {
        let driver = find_chromedriver();
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: the status page tests need Debian's chromium; install it with \
             `apt-get install -y --no-install-recommends chromium chromium-driver`"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let driver = Self {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(status) = common::try_http_request(driver.address, "GET", "/status", &[])
                && status.status == 200
                && serde_json::from_str::<Value>(&status.body)
                    .is_ok_and(|status| status["value"]["ready"] == true)
            {
                return driver;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for one WebDriver exchange, failing the test after [`COMMAND_TIMEOUT`].
    fn block<T>(&self, what: &str, exchange: impl Future<Output = T>) -> T {
        self.runtime
            .block_on(async { tokio::time::timeout(COMMAND_TIMEOUT, exchange).await })
            .unwrap_or_else(|_| {
                panic!("{what}: no answer from chromedriver in {COMMAND_TIMEOUT:?}")
            })
    }

    /// Runs one WebDriver exchange to its end: its answer, or its error.
    fn run<T>(
        &self,
        what: &str,
        exchange: impl Future<Output = Result<T, CmdError>>,
    ) -> Result<T, String> {
        self.block(what, exchange)
            .map_err(|e| format!("{what}: {e}"))
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_chromedriver() -> PathBuf {
    for candidate in ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "chromedriver is missing: the status page tests need Debian's chromium-driver; install \
         it with `apt-get install -y --no-install-recommends chromium chromium-driver`"
    );
}

/// A Chrome DevTools Protocol command, through chromedriver's `goog/cdp/execute` endpoint
/// (not part of W3C WebDriver, so fantoccini has no method for it).
#[derive(Debug)]
struct Cdp {
    cmd: String,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session_id.expect("a CDP command needs a session");
        base_url.join(&format!("session/{session}/goog/cdp/execute"))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// One browser. Elements are passed around by their WebDriver reference (a `String`).
struct Browser<'a> {
    driver: &'a ChromeDriver,
    client: Client,
    _profile: tempfile::TempDir,
}

impl<'a> Browser<'a> {
    fn open(driver: &'a ChromeDriver, javascript: bool) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let mut options = json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1400,1500",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        });
        if !javascript {
            options["prefs"] = json!({ "profile.managed_default_content_settings.javascript": 2 });
        }
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": options,
            // Leave any dialog open, so a test can see that one was opened.
            "unhandledPromptBehavior": "ignore",
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object")
        };
        let url = format!("http://{}", driver.address);
        let client = driver
            .block(
                "new session",
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&url),
            )
            .unwrap_or_else(|e| panic!("chromedriver did not open a session: {e}"));
        let browser = Self {
            driver,
            client,
            _profile: profile,
        };
        if javascript {
            browser.cdp(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({ "source": PROBE_SCRIPT }),
            );
        }
        browser
    }

    /// Runs a command that must succeed.
    fn run<T>(&self, what: &str, command: impl Future<Output = Result<T, CmdError>>) -> T {
        self.driver
            .run(what, command)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The element behind a reference.
    fn element(&self, element: &str) -> Element {
        Element::from_element_id(self.client.clone(), ElementRef::from(element.to_owned()))
    }

    fn cdp(&self, cmd: &str, params: Value) -> Value {
        let command = Cdp {
            cmd: cmd.to_owned(),
            params,
        };
        self.run(cmd, self.client.issue_cmd(command))
    }

    fn go(&self, url: &str) {
        self.run(&format!("go to {url}"), self.client.goto(url));
    }

    fn find_all(&self, css: &str) -> Vec<String> {
        self.run(css, self.client.find_all(Locator::Css(css)))
            .iter()
            .map(|e| e.element_id().to_string())
            .collect()
    }

    fn find(&self, css: &str) -> String {
        let mut found = self.find_all(css);
        assert_eq!(found.len(), 1, "expected one element for {css}");
        found.remove(0)
    }

    fn find_within(&self, element: &str, css: &str) -> Vec<String> {
        self.run(css, self.element(element).find_all(Locator::Css(css)))
            .iter()
            .map(|e| e.element_id().to_string())
            .collect()
    }

    /// The rendered text, as a user sees it.
    fn text(&self, element: &str) -> String {
        self.run("text", self.element(element).text())
    }

    /// What a probe's row shows, read in one go (a refresh may replace its cells at any
    /// time, so element references into them would go stale).
    fn row(&self, name: &str) -> Value {
        self.script(
            r#"
            const row = [...document.querySelectorAll("tr.probe")]
                .find((r) => r.dataset.probe === arguments[0]);
            if (!row) return null;
            const text = (css) => {
                const el = row.querySelector(css);
                return el ? el.textContent.trim() : null;
            };
            return {
                status: text(".c-status .badge"),
                last: text(".c-last time"),
                duration: text(".c-duration"),
                message: text(".c-result .message"),
                content: row.textContent,
                images: row.querySelectorAll("img").length,
            };
            "#,
            json!([name]),
        )
    }

    fn text_content(&self, element: &str) -> String {
        self.run("textContent", self.element(element).prop("textContent"))
            .unwrap_or_default()
    }

    fn enabled(&self, element: &str) -> bool {
        self.run("enabled", self.element(element).is_enabled())
    }

    fn displayed(&self, element: &str) -> bool {
        self.run("displayed", self.element(element).is_displayed())
    }

    fn type_into(&self, element: &str, text: &str) {
        self.run("send keys", self.element(element).send_keys(text));
    }

    /// The probes listed, in page order (read again while a navigation makes the rows
    /// stale).
    fn listed(&self) -> Vec<String> {
        self.wait(Duration::from_secs(10), "the rows to settle", || {
            let rows = self
                .driver
                .run(
                    "rows",
                    self.client.find_all(Locator::Css("tr.probe[data-probe]")),
                )
                .ok()?;
            rows.iter()
                .map(|row| {
                    self.driver
                        .run("data-probe", row.attr("data-probe"))
                        .ok()
                        .flatten()
                })
                .collect()
        })
    }

    fn current_url(&self) -> String {
        self.run("current url", self.client.current_url())
            .to_string()
    }

    fn click(&self, element: &str) {
        self.run("click", self.element(element).click());
    }

    fn script(&self, script: &str, args: Value) -> Value {
        let Value::Array(args) = args else {
            panic!("script arguments are an array: {args}")
        };
        self.run(script, self.client.execute(script, args))
    }

    fn resize(&self, width: u32, height: u32) {
        self.run("resize", self.client.set_window_size(width, height));
    }

    /// The text of an open dialog, or `None` when WebDriver says there is none.
    fn open_dialog(&self) -> Option<String> {
        match self
            .driver
            .block("dialog text", self.client.get_alert_text())
        {
            Err(e) if e.is_no_such_alert() => None,
            Ok(text) => Some(text),
            Err(e) => Some(format!("no answer about dialogs: {e}")),
        }
    }

    /// Saves a PNG screenshot of the viewport as `target/test-artifacts/{name}`.
    fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.run("screenshot", self.client.screenshot());
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Waits until `check` returns `Some`, or panics with `what`.
    fn wait<T>(&self, timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check() {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = self.driver.run("close", self.client.clone().close());
    }
}

// ---------------------------------------------------------------------------------------
// The exporter under test.

/// Probe name, code behaviour, the status the page shows and the message it shows.
const PROBES: [(&str, &str, &str, &str); 5] = [
    ("refresh-customer", "ok", "up", "Client C0000001 rafraîchi"),
    ("body-code-400", "body400", "down", "Dossier 998 verrouillé"),
    ("status-400", "http400", "down", "Paramètre dos manquant"),
    ("xss", "xss", "down", XSS_MESSAGE),
    ("health", "plain0", "up", ""),
];

/// The fake Divalto server on its own runtime, the exporter probing it.
struct Setup {
    _runtime: tokio::runtime::Runtime,
    fake: FakeDivalto,
    _dir: tempfile::TempDir,
    exporter: Exporter,
}

impl Setup {
    fn start() -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let fake = runtime.block_on(FakeDivalto::start());
        let base = fake.base_url();
        // `manual`, `busy` and `xss-now` run only when asked: their cron fires once a year
        // (so a run now is never refused as too soon after a scheduled run).
        let (dir, path) = common::write_config(&format!(
            r#"
run_now_min_gap: 0s  # "Run now" right after a scheduled run (every 2 s) or another run
defaults:
  interval: 2s
  timeout: 1s
servers:
  fake:
    base_url: "{base}"
probes:
  - {{name: refresh-customer, server: fake, code: "{SECRET_CODE}-ok", params: {{dos: "998"}}}}
  - {{name: body-code-400, server: fake, code: "{SECRET_CODE}-body400"}}
  - {{name: status-400, server: fake, code: "{SECRET_CODE}-http400"}}
  - {{name: xss, server: fake, code: "{SECRET_CODE}-xss"}}
  - {{name: manual, server: fake, code: "{SECRET_CODE}-sleep2s", schedule: "0 0 1 1 *", timeout: 5s}}
  - {{name: busy, server: fake, code: "{SECRET_CODE}-busy-sleep2s", schedule: "0 0 1 1 *", timeout: 5s}}
  - {{name: xss-now, server: fake, code: "{SECRET_CODE}-now-xss", schedule: "0 0 1 1 *"}}
  - {{name: health, url: "{base}/api/v1/WebHook/health-plain0"}}
"#
        ));
        let exporter = Exporter::start(&[&format!("--config.file={}", path.display())], &[]);
        exporter.wait_for(
            Duration::from_secs(20),
            "every scheduled probe to run twice",
            |scrape| {
                PROBES.iter().all(|(name, ..)| {
                    let runs: f64 = ["success", "failure"]
                        .iter()
                        .filter_map(|result| {
                            scrape.value(
                                "webhook_probe_runs_total",
                                &[("probe", name), ("result", result)],
                            )
                        })
                        .sum();
                    runs >= 2.0
                })
            },
        );
        Self {
            _runtime: runtime,
            fake,
            _dir: dir,
            exporter,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.exporter.address)
    }
}

/// HTML text with its character references decoded (the ones an escaper writes).
fn unescape(html: &str) -> String {
    [
        ("&lt;", "<"),
        ("&#60;", "<"),
        ("&gt;", ">"),
        ("&#62;", ">"),
        ("&quot;", "\""),
        ("&#34;", "\""),
        ("&#39;", "'"),
        ("&amp;", "&"),
        ("&#38;", "&"),
    ]
    .iter()
    .fold(html.to_owned(), |text, (reference, c)| {
        text.replace(reference, c)
    })
}

fn row_selector(name: &str) -> String {
    format!("tr[data-probe=\"{name}\"]")
}

// ---------------------------------------------------------------------------------------

#[test]
fn the_page_is_complete_without_scripts_and_sends_a_strict_policy() {
    let setup = Setup::start();

    let page = common::http_request(setup.exporter.address, "GET", "/", &[]);

    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let policy = page.header("content-security-policy").unwrap_or_default();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        // The search form is a GET to the page itself.
        "form-action 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{directive} missing: {policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let html = &page.body;
    for (name, _, status, message) in PROBES {
        let row = html
            .split("<tr class=\"probe status-")
            .find(|r| r.contains(&format!("data-probe=\"{name}\"")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{html}"));
        assert!(
            row.contains(&format!(">{status}</span>")),
            "{name} is not shown {status}:\n{row}"
        );
        assert!(
            unescape(row).contains(message),
            "{name} does not show {message:?}:\n{row}"
        );
    }
    assert!(html.contains(">never run</span>"), "manual:\n{html}");
    assert!(!html.contains("<img"), "the XSS message is live markup");
    assert!(!html.contains(SECRET_CODE), "the webhook code leaks");
    assert!(html.contains("MONW…"), "URLs are not shown redacted");
    // Healthy probes under their server's line (few: expanded), URL probes last.
    assert!(
        html.contains(">fake</span>: <span class=\"up-count\">1 probe up</span>"),
        "{html}"
    );
    assert!(html.contains(">URL probes</span>: <span class=\"up-count\">1 probe up<"));
    assert!(html.contains("<details class=\"server\" open data-group=\"server:fake\">"));
    assert!(html.contains("<svg class=\"chart\" role=\"img\" aria-label=\"Last "));
    assert!(!html.contains("style="), "inline styles break the policy");
    assert!(
        !html.contains("<script>"),
        "inline scripts break the policy"
    );

    for (asset, content_type) in [
        ("/assets/status.js", "text/javascript; charset=utf-8"),
        ("/assets/status.css", "text/css; charset=utf-8"),
    ] {
        let answer = common::http_request(setup.exporter.address, "GET", asset, &[]);
        assert_eq!(answer.status, 200, "{asset}");
        assert_eq!(answer.header("content-type"), Some(content_type), "{asset}");
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
        assert!(
            answer.header("content-security-policy").is_some(),
            "{asset}"
        );
    }
    let script = common::http_request(setup.exporter.address, "GET", "/assets/status.js", &[]);
    for sink in [
        ".innerHTML",
        ".outerHTML",
        "insertAdjacentHTML",
        "document.write",
    ] {
        assert!(
            !script.body.contains(sink),
            "the script writes markup: {sink}"
        );
    }
    let missing = common::http_request(setup.exporter.address, "GET", "/assets/../Cargo.toml", &[]);
    assert_eq!(missing.status, 404);
}

#[test]
fn the_page_shows_every_probe_refreshes_itself_and_runs_a_probe_on_demand() {
    let setup = Setup::start();
    let driver = ChromeDriver::start();
    let browser = Browser::open(&driver, true);

    // The page loads, its script starts, and its first refresh lands.
    browser.go(&setup.url());
    browser.wait(
        Duration::from_secs(10),
        "the script to refresh once",
        || {
            let refreshed = browser.script(
                "return document.documentElement.dataset.refreshed || null",
                json!([]),
            );
            (!refreshed.is_null()).then_some(())
        },
    );

    // Every probe: its status as text and its last message.
    for (name, _, status, message) in PROBES {
        let row = browser.row(name);
        assert_eq!(row["status"], status, "{name}: {row}");
        assert!(
            row["message"].as_str().unwrap().contains(message),
            "{name}: {row}"
        );
    }
    assert_eq!(browser.row("manual")["status"], "never run");
    let summary = |id: &str| browser.text(&browser.find(&format!("#{id}")));
    assert_eq!(summary("count-up"), "2");
    assert_eq!(summary("count-down"), "3");
    assert_eq!(summary("count-never"), "3");

    // The XSS payload is text: no element made of it, no dialog.
    let xss = browser.row("xss");
    assert!(
        xss["content"].as_str().unwrap().contains(XSS_MESSAGE),
        "{xss}"
    );
    assert_eq!(xss["images"], 0, "{xss}");
    assert_eq!(
        browser.script("return window.__dialogs", json!([])),
        json!([])
    );
    assert_eq!(browser.open_dialog(), None);

    // It refreshes itself: the last run of a 2 s probe moves on without a page load.
    browser.script("window.__sameDocument = true", json!([]));
    let first = browser.row("refresh-customer")["last"].clone();
    browser.wait(Duration::from_secs(15), "the row to refresh", || {
        (browser.row("refresh-customer")["last"] != first).then_some(())
    });
    assert_eq!(
        browser.script("return window.__sameDocument === true", json!([])),
        json!(true)
    );

    // "Run now" on a probe that never ran: the button waits, then the row shows the result.
    // (The button and its output are never replaced by a refresh, so their references hold.)
    let manual = browser.find(&row_selector("manual"));
    let calls_before = setup.fake.calls("sleep2s");
    let button = browser.find_within(&manual, "button.run")[0].clone();
    assert!(browser.displayed(&button));
    browser.click(&button);
    assert!(
        !browser.enabled(&button),
        "the button stays enabled while running"
    );
    let output = browser.find_within(&manual, ".run-output")[0].clone();
    assert_eq!(browser.text(&output), "Running…");
    browser.wait(Duration::from_secs(15), "the run result", || {
        browser.text(&output).starts_with("Succeeded").then_some(())
    });
    assert!(
        browser.text(&output).contains("OK after 2 s"),
        "{}",
        browser.text(&output)
    );
    assert!(browser.enabled(&button));
    let row = browser.wait(Duration::from_secs(10), "the row to show the run", || {
        let row = browser.row("manual");
        (row["status"] == "up" && row["message"] == "OK after 2 s").then_some(row)
    });
    assert!(row["last"].as_str().unwrap().ends_with(" UTC"), "{row}");
    assert!(row["duration"].as_str().unwrap().starts_with("2."), "{row}");
    assert_eq!(setup.fake.calls("sleep2s"), calls_before + 1);

    // A run already in flight (started elsewhere) shows as "already running". (Another
    // probe: a second run of `manual` this soon would be refused by run_now_min_gap.)
    let busy = browser.find(&row_selector("busy"));
    let busy_button = browser.find_within(&busy, "button.run")[0].clone();
    let busy_output = browser.find_within(&busy, ".run-output")[0].clone();
    let address = setup.exporter.address;
    let elsewhere = std::thread::spawn(move || {
        common::http_request(address, "POST", "/api/v1/probes/busy/run", &[]).status
    });
    browser.wait(Duration::from_secs(5), "the other run to start", || {
        let (_, body) = setup.exporter.get("/api/v1/probes/busy");
        body.contains("\"running\":true").then_some(())
    });
    browser.click(&busy_button);
    browser.wait(Duration::from_secs(5), "the conflict", || {
        (browser.text(&busy_output) == "Already running").then_some(())
    });
    assert_eq!(elsewhere.join().unwrap(), 200);
    assert_eq!(setup.fake.calls("sleep2s"), calls_before + 2);

    // "Run now" on the XSS probe: its result in the row is still text.
    let xss_row = browser.find(&row_selector("xss-now"));
    let xss_button = browser.find_within(&xss_row, "button.run")[0].clone();
    let xss_output = browser.find_within(&xss_row, ".run-output")[0].clone();
    browser.click(&xss_button);
    browser.wait(Duration::from_secs(10), "the XSS run result", || {
        browser
            .text(&xss_output)
            .starts_with("Failed")
            .then_some(())
    });
    assert!(browser.text_content(&xss_output).contains(XSS_MESSAGE));
    assert_eq!(
        browser.script("return document.querySelectorAll('img').length", json!([])),
        json!(0)
    );
    assert_eq!(
        browser.script("return window.__dialogs", json!([])),
        json!([])
    );
    assert_eq!(browser.open_dialog(), None);
    assert_eq!(
        browser.script("return window.__violations", json!([])),
        json!([]),
        "the page breaks its own Content-Security-Policy"
    );

    let path = browser.screenshot("status-page.png");
    eprintln!("screenshot: {}", path.display());

    // Dark mode follows the system setting.
    let light = browser.script(
        "return getComputedStyle(document.body).backgroundColor",
        json!([]),
    );
    browser.cdp(
        "Emulation.setEmulatedMedia",
        json!({ "features": [{ "name": "prefers-color-scheme", "value": "dark" }] }),
    );
    let dark = browser.script(
        "return getComputedStyle(document.body).backgroundColor",
        json!([]),
    );
    assert_ne!(light, dark, "prefers-color-scheme: dark changes nothing");
    let path = browser.screenshot("status-page-dark.png");
    eprintln!("screenshot: {}", path.display());

    // A phone: nothing wider than the screen.
    browser.resize(390, 844);
    let overflow = browser.script(
        "return document.documentElement.scrollWidth - window.innerWidth",
        json!([]),
    );
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "wider than a phone by {overflow} px"
    );
    let path = browser.screenshot("status-page-phone.png");
    eprintln!("screenshot: {}", path.display());
}

#[test]
fn with_scripts_off_the_browser_shows_every_status_and_message() {
    let setup = Setup::start();
    let driver = ChromeDriver::start();
    let browser = Browser::open(&driver, false);

    browser.go(&setup.url());

    for (name, _, status, message) in PROBES {
        let row = browser.find(&row_selector(name));
        let text = browser.text(&row);
        assert!(text.contains(status), "{name}: {text}");
        assert!(text.contains(message), "{name}: {text}");
    }
    // Without the script there is no dead button.
    let button = browser.find_within(&browser.find(&row_selector("manual")), "button.run");
    assert!(!browser.displayed(&button[0]));
    assert_eq!(browser.open_dialog(), None);
}

#[test]
fn run_now_too_soon_after_the_last_run_shows_when_the_next_one_is_possible() {
    // Needs the scheduler's on-demand gap (run_now_min_gap, default 10 s): a second run
    // within it answers 429 with Retry-After.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(FakeDivalto::start());
    let (_dir, path) = common::write_config(&format!(
        "servers:\n  fake:\n    base_url: \"{}\"\nprobes:\n  - {{name: manual, server: fake, code: \"{SECRET_CODE}-sleep300ms\", schedule: \"0 0 1 1 *\", timeout: 5s}}\n",
        fake.base_url()
    ));
    let exporter = Exporter::start(&[&format!("--config.file={}", path.display())], &[]);
    let driver = ChromeDriver::start();
    let browser = Browser::open(&driver, true);
    browser.go(&format!("http://{}/", exporter.address));
    browser.wait(Duration::from_secs(10), "the script to start", || {
        let live = browser.script(
            "return document.documentElement.dataset.live || null",
            json!([]),
        );
        (live == "on").then_some(())
    });
    let row = browser.find(&row_selector("manual"));
    let button = browser.find_within(&row, "button.run")[0].clone();
    let output = browser.find_within(&row, ".run-output")[0].clone();

    // The page's own POST passes the cross-site check: the run happens.
    browser.click(&button);
    browser.wait(Duration::from_secs(10), "the run result", || {
        browser.text(&output).starts_with("Succeeded").then_some(())
    });
    assert_eq!(fake.calls("sleep300ms"), 1);

    // Again at once: the page says when it may run again, not an error.
    browser.click(&button);
    let text = browser.wait(Duration::from_secs(10), "the rate-limit notice", || {
        let text = browser.text(&output);
        (!text.starts_with("Running") && !text.starts_with("Succeeded")).then_some(text)
    });
    let seconds: u64 = text
        .strip_prefix("Next on-demand run possible in ")
        .and_then(|rest| rest.strip_suffix(" s"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a rate-limit notice: {text:?}"));
    assert!((1..=10).contains(&seconds), "{text}");
    assert!(browser.enabled(&button));
    assert_eq!(
        fake.calls("sleep300ms"),
        1,
        "the refused run called the ERP"
    );
}

/// Failing probes first (by name), then the never-run ones, then the healthy ones under
/// their server, URL probes last.
const PAGE_ORDER: [&str; 8] = [
    "body-code-400",
    "status-400",
    "xss",
    "busy",
    "manual",
    "xss-now",
    "refresh-customer",
    "health",
];

#[test]
fn failing_probes_come_first_and_the_search_form_filters_the_rows() {
    let setup = Setup::start();
    let driver = ChromeDriver::start();

    // With the script: the order holds after a refresh, and a search keeps its rows.
    let browser = Browser::open(&driver, true);
    browser.go(&setup.url());
    browser.wait(
        Duration::from_secs(10),
        "the script to refresh once",
        || {
            let refreshed = browser.script(
                "return document.documentElement.dataset.refreshed || null",
                json!([]),
            );
            (!refreshed.is_null()).then_some(())
        },
    );
    assert_eq!(browser.listed(), PAGE_ORDER);
    let search = browser.find("form.search input[name=q]");
    browser.type_into(&search, "status");
    browser.click(&browser.find("form.search button[type=submit]"));
    browser.wait(Duration::from_secs(10), "the search result", || {
        (browser.listed() == ["status-400"]).then_some(())
    });
    assert!(
        browser.current_url().contains("q=status"),
        "{}",
        browser.current_url()
    );
    let row = browser.row("status-400");
    assert_eq!(row["status"], "down", "{row}");
    assert!(
        row["message"]
            .as_str()
            .unwrap()
            .contains("Paramètre dos manquant"),
        "{row}"
    );
    // Its refreshes ask for the same rows: the page stays narrowed.
    browser.script(
        "delete document.documentElement.dataset.refreshed",
        json!([]),
    );
    browser.wait(Duration::from_secs(15), "a refresh of the search", || {
        let refreshed = browser.script(
            "return document.documentElement.dataset.refreshed || null",
            json!([]),
        );
        (!refreshed.is_null()).then_some(())
    });
    assert_eq!(browser.listed(), ["status-400"]);
    assert_eq!(
        browser.script("return window.__violations", json!([])),
        json!([]),
        "the form breaks the page's Content-Security-Policy"
    );
    drop(browser);

    // Without scripts: the same order, and the form (a GET) narrows by name and state.
    let browser = Browser::open(&driver, false);
    browser.go(&setup.url());
    assert_eq!(browser.listed(), PAGE_ORDER);
    let search = browser.find("form.search input[name=q]");
    browser.type_into(&search, "XSS");
    browser.click(&browser.find("form.search select[name=state] option[value=failing]"));
    browser.click(&browser.find("form.search button[type=submit]"));
    browser.wait(Duration::from_secs(10), "the search result", || {
        (browser.listed() == ["xss"]).then_some(())
    });
    let text = browser.text(&browser.find(&row_selector("xss")));
    assert!(
        text.contains("down") && text.contains(XSS_MESSAGE),
        "{text}"
    );
    assert!(
        browser
            .text(&browser.find("#matching"))
            .starts_with("1 probe matches")
    );
    browser.click(&browser.find("form.search a.clear"));
    browser.wait(Duration::from_secs(10), "every probe again", || {
        (browser.listed() == PAGE_ORDER).then_some(())
    });
}

// ---------------------------------------------------------------------------------------
// Thousands of probes (no browser): what the HTML and the script's JSON carry.

const HEALTHY_PER_SERVER: usize = 995;
const FAILING_PER_SERVER: usize = 5;

/// 2,000 probes on two servers, 5 failing on each; every one has run.
fn many_probes() -> (
    tokio::runtime::Runtime,
    FakeDivalto,
    tempfile::TempDir,
    Exporter,
) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(FakeDivalto::start());
    let base = fake.base_url();
    let mut config = format!(
        "defaults:\n  interval: 5s\n  timeout: 3s\nservers:\n  acme:\n    base_url: \"{base}\"\n  globex:\n    base_url: \"{base}\"\nprobes:\n"
    );
    for (server, failure) in [("acme", "body400"), ("globex", "http400")] {
        for i in 0..HEALTHY_PER_SERVER {
            config.push_str(&format!(
                "  - {{name: {server}-ok-{i:04}, server: {server}, code: \"{SECRET_CODE}-ok\"}}\n"
            ));
        }
        for i in 0..FAILING_PER_SERVER {
            config.push_str(&format!(
                "  - {{name: {server}-down-{i}, server: {server}, code: \"{SECRET_CODE}-{failure}\"}}\n"
            ));
        }
    }
    let (dir, path) = common::write_config(&config);
    let exporter = Exporter::start(&[&format!("--config.file={}", path.display())], &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = exporter.get("/api/v1/probes?state=pending&limit=0");
        let pending: Value = serde_json::from_str(&body).unwrap();
        if pending["total"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "not every probe ran: {pending}");
        std::thread::sleep(Duration::from_millis(200));
    }
    (runtime, fake, dir, exporter)
}

/// The probes listed in a page, in order.
fn listed_in(html: &str) -> Vec<String> {
    html.split("<tr class=\"probe status-")
        .skip(1)
        .filter_map(|row| {
            let start = row.find("data-probe=\"")? + "data-probe=\"".len();
            Some(row[start..start + row[start..].find('"')?].to_owned())
        })
        .collect()
}

fn failing_names() -> Vec<String> {
    ["acme", "globex"]
        .iter()
        .flat_map(|s| (0..FAILING_PER_SERVER).map(move |i| format!("{s}-down-{i}")))
        .collect()
}

#[test]
fn at_two_thousand_probes_the_page_lists_every_failure_and_counts_the_healthy_per_server() {
    let (_runtime, _fake, _dir, exporter) = many_probes();

    let (status, html) = exporter.get("/");

    assert_eq!(status, 200);
    let listed = listed_in(&html);
    // Every failing probe first, with its status and message; then 50 healthy rows of each
    // server, not 995.
    assert_eq!(listed[..10], failing_names()[..], "{:?}", &listed[..12]);
    assert_eq!(listed.len(), 10 + 2 * 50, "rows listed");
    for name in failing_names() {
        let row = html
            .split("<tr class=\"probe status-")
            .find(|r| r.contains(&format!("data-probe=\"{name}\"")))
            .unwrap();
        let message = if name.starts_with("acme") {
            "Dossier 998 verrouillé"
        } else {
            "Paramètre dos manquant"
        };
        assert!(row.starts_with("down\""), "{name}: {row}");
        assert!(unescape(row).contains(message), "{name}: {row}");
    }
    for server in ["acme", "globex"] {
        assert!(
            html.contains(&format!(
                "<details class=\"server\" data-group=\"server:{server}\">"
            )),
            "{server}: collapsed"
        );
        assert!(
            html.contains(&format!(
                "<span class=\"server-name\">{server}</span>: <span class=\"up-count\">995 probes up</span>"
            )),
            "{server}: {html}"
        );
        assert!(
            html.contains(&format!("and 945 more: <a href=\"/?server={server}\">")),
            "{server}"
        );
    }
    assert!(html.len() < 400_000, "{} bytes", html.len());
    assert!(!html.contains(SECRET_CODE));

    // A search by name: its rows only, healthy or not.
    let (_, html) = exporter.get("/?q=ACME-OK-0042&server=&state=");
    assert_eq!(listed_in(&html), ["acme-ok-0042"]);
    assert!(
        html.contains("value=\"ACME-OK-0042\""),
        "the form forgets the search"
    );
    let (_, html) = exporter.get("/?q=down");
    assert_eq!(listed_in(&html), failing_names());

    // One server: its failures, then pages of 100 healthy rows.
    let (_, html) = exporter.get("/?server=globex");
    let listed = listed_in(&html);
    assert_eq!(listed.len(), 5 + 100);
    assert!(
        listed.iter().all(|name| name.starts_with("globex-")),
        "another server's rows"
    );
    assert_eq!(listed[5], "globex-ok-0000");
    assert!(html.contains("Page 1 of 10 (100 rows per list"), "{html}");
    assert!(html.contains("<option value=\"globex\" selected>globex</option>"));
    assert!(!html.contains("rel=\"prev\""));
    assert!(
        html.contains("<a rel=\"next\" href=\"/?server=globex&#38;offset=100\">")
            || html.contains("<a rel=\"next\" href=\"/?server=globex&amp;offset=100\">"),
        "{html}"
    );
    // The last page: the rest, every failure still first.
    let (_, html) = exporter.get("/?server=globex&offset=900");
    let listed = listed_in(&html);
    assert_eq!(listed.len(), 5 + 95);
    assert_eq!(listed[5], "globex-ok-0900");
    assert_eq!(listed.last().unwrap(), "globex-ok-0994");
    assert!(html.contains("Page 10 of 10"), "{html}");
    assert!(!html.contains("rel=\"next\""));

    let (status, body) = exporter.get("/?state=sideways");
    assert_eq!(status, 400);
    assert!(body.contains("failing, ok, pending"), "{body}");
}

#[test]
fn the_pages_json_carries_only_the_rows_the_page_shows() {
    let (_runtime, _fake, _dir, exporter) = many_probes();
    let rows = |view: &Value| -> Vec<String> {
        let names = |list: &Value| -> Vec<String> {
            list.as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect()
        };
        let mut all = names(&view["failing"]);
        all.extend(names(&view["pending"]));
        for group in view["healthy"].as_array().unwrap() {
            all.extend(names(&group["probes"]));
        }
        all
    };

    let (status, body) = exporter.get("/status.json?q=down");
    assert_eq!(status, 200);
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rows(&view), failing_names());
    assert_eq!(
        view["summary"]["total"], 2000,
        "the tiles count every probe"
    );
    assert_eq!(view["summary"]["down"], 10);
    assert_eq!(view["filter"]["matching"], 10);
    assert!(
        view["failing"][0]["last"]["message"]
            .as_str()
            .unwrap()
            .contains("Dossier 998")
    );

    let (_, body) = exporter.get("/status.json");
    let view: Value = serde_json::from_str(&body).unwrap();
    let (_, html) = exporter.get("/");
    assert_eq!(
        rows(&view),
        listed_in(&html),
        "the JSON and the page differ"
    );
    assert_eq!(view["healthy"][0]["up"], 995);
    assert_eq!(view["healthy"][0]["more"], 945);
    assert!(body.len() < 200_000, "one poll is {} bytes", body.len());

    let (_, body) = exporter.get("/status.json?q=acme-ok-0042");
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rows(&view), ["acme-ok-0042"]);
}
