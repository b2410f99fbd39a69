//! No secret toward a target — a password (inline, from a variable or a file), a bearer
//! token, a header value, a request body, a password in a URL — on any output surface of the
//! real binary: `/metrics` (both formats), the API (list, one probe, a run's answer, one run),
//! the status page and
//! its JSON, the logs at debug level, a refused reload's error, `check-config` and the
//! `probe` trace. The fake Divalto server checks that each secret was really sent, so an
//! empty surface or a probe that never ran cannot make the test pass.

mod common;

use std::time::Duration;

use common::{Exporter, FakeDivalto};

const INLINE_PASSWORD: &str = "Inline-Pa55word-from-env-0001";
const FILE_PASSWORD: &str = "File-Pa55word-from-disk-0002";
const ROTATED_PASSWORD: &str = "Rotated-Pa55word-disk-0003";
const TOKEN: &str = "Bearer-T0ken-never-shown-0004";
const HEADER_VALUE: &str = "Header-Api-Key-never-0005";
const BODY_SECRET: &str = "Body-Secret-evenement-0006";
const JSON_SECRET: &str = "Json-Secret-payload-0007";
const URL_PASSWORD: &str = "Url-Pa55word-userinfo-0008";

/// Every form in which a secret could leak: as written, and as the `Authorization` header
/// carries it (base64 of `user:password`). The first and last 4 characters are left out, as
/// redaction may show them.
fn leak_forms() -> Vec<(&'static str, String)> {
    let mut forms = Vec::new();
    for (what, secret) in [
        ("inline password", INLINE_PASSWORD),
        ("file password", FILE_PASSWORD),
        ("rotated password", ROTATED_PASSWORD),
        ("bearer token", TOKEN),
        ("header value", HEADER_VALUE),
        ("body", BODY_SECRET),
        ("json body", JSON_SECRET),
        ("url password", URL_PASSWORD),
    ] {
        forms.push((what, secret[4..secret.len() - 4].to_owned()));
    }
    for (what, user, password) in [
        ("inline basic auth", "erp", INLINE_PASSWORD),
        ("file basic auth", "erp", FILE_PASSWORD),
        ("rotated basic auth", "erp", ROTATED_PASSWORD),
        ("url basic auth", "erp", URL_PASSWORD),
    ] {
        let encoded = base64(&format!("{user}:{password}"));
        forms.push((what, encoded[4..encoded.len() - 4].to_owned()));
    }
    forms
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn config_text(fake: &FakeDivalto) -> String {
    let address = fake.address;
    format!(
        r#"
defaults:
  interval: 1s
  timeout: 800ms
  # Strict enough that check-config warns about every probe: the warnings are a surface too.
  objective: 99.999%
servers:
  fake:
    base_url: '{base}'
    headers: {{X-Api-Key: '{HEADER_VALUE}'}}
probes:
  - name: inline-password
    server: fake
    code: SECRETLESS-inline-ok
    method: POST
    body: 'code={BODY_SECRET}'
    basic_auth: {{username: erp, password: '${{ERP_PASSWORD}}'}}
  - name: file-password
    server: fake
    code: SECRETLESS-file-http400
    method: POST
    json: {{evenement: {{codeevt: 1102, token: '{JSON_SECRET}'}}}}
    basic_auth: {{username: erp, password_file: password.txt}}
  - name: bearer
    server: fake
    code: SECRETLESS-bearer-body400
    authorization: {{credentials: '{TOKEN}'}}
  - name: url-password
    url: 'http://erp:{URL_PASSWORD}@{address}/erp/api/v1/WebHook/SECRETLESS-url-ok'
"#,
        base = fake.base_url(),
    )
}

/// The value of the `name` header the fake received last for a code ending in `suffix`.
fn wait_for_header(fake: &FakeDivalto, suffix: &str, expected: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if fake.calls(suffix) > 0
            && fake
                .last_headers_for(suffix)
                .and_then(|headers| {
                    headers
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned())
                })
                .as_deref()
                == Some(expected)
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fake never received `Authorization: {expected}` for a code ending in {suffix}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn no_credential_header_value_or_body_reaches_any_output_surface() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(FakeDivalto::start());
    let (dir, path) = common::write_config(&config_text(&fake));
    std::fs::write(
        dir.path().join("password.txt"),
        format!("{FILE_PASSWORD}\n"),
    )
    .unwrap();
    let config_flag = format!("--config.file={}", path.display());
    let envs = [("ERP_PASSWORD", INLINE_PASSWORD)];
    let exporter = Exporter::start(&[&config_flag, "--log.level=debug"], &envs);

    // Every secret really travels: the test would prove nothing if a probe never ran.
    let basic = |password: &str| format!("Basic {}", base64(&format!("erp:{password}")));
    wait_for_header(&fake, "inline-ok", &basic(INLINE_PASSWORD));
    wait_for_header(&fake, "file-http400", &basic(FILE_PASSWORD));
    wait_for_header(&fake, "bearer-body400", &format!("Bearer {TOKEN}"));
    wait_for_header(&fake, "url-ok", &basic(URL_PASSWORD));

    // A rotated password file is read again on reload, and sent from then on.
    std::fs::write(
        dir.path().join("password.txt"),
        format!("{ROTATED_PASSWORD}\n"),
    )
    .unwrap();
    let reloaded = common::http_request(exporter.address, "POST", "/-/reload", &[]);
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);
    wait_for_header(&fake, "file-http400", &basic(ROTATED_PASSWORD));

    // A refused reload's error, about the very block holding a password.
    let broken = config_text(&fake).replace(
        "password: '${ERP_PASSWORD}'}",
        "password: '${ERP_PASSWORD}', password_file: password.txt}",
    );
    std::fs::write(&path, &broken).unwrap();
    let refused = common::http_request(exporter.address, "POST", "/-/reload", &[]);
    assert_ne!(
        refused.status, 200,
        "a config with two password sources was accepted"
    );
    std::fs::write(&path, config_text(&fake)).unwrap();

    let run = common::http_request(
        exporter.address,
        "POST",
        "/api/v1/probes/file-password/run",
        &[],
    );
    let probe: serde_json::Value =
        serde_json::from_str(&exporter.get("/api/v1/probes/file-password").1).unwrap();
    let run_id = probe["last_result"]["run_id"].as_str().unwrap().to_owned();
    let run_path = format!("/api/v1/runs/{run_id}");
    let openmetrics = common::http_request(
        exporter.address,
        "GET",
        "/metrics",
        &[("Accept", "application/openmetrics-text")],
    );
    assert!(openmetrics.body.ends_with("# EOF\n"));
    let mut surfaces = vec![
        ("metrics", exporter.get("/metrics").1),
        ("metrics in OpenMetrics", openmetrics.body),
        ("one run", exporter.get(&run_path).1),
        ("probe list", exporter.get("/api/v1/probes?history=10").1),
        ("status page", exporter.get("/").1),
        ("status page JSON", exporter.get("/status.json").1),
        ("run answer", run.body),
        ("refused reload", refused.body),
    ];
    for name in ["inline-password", "file-password", "bearer", "url-password"] {
        surfaces.push((
            "one probe",
            exporter.get(&format!("/api/v1/probes/{name}")).1,
        ));
        let (code, out, err) = common::run_binary(&["probe", name, &config_flag], &envs, None);
        assert!(code == 0 || code == 1, "probe {name} exited {code}: {err}");
        surfaces.push(("probe trace", format!("{out}{err}")));
    }
    let (code, out, err) = common::run_binary(&["check-config", &config_flag], &envs, None);
    assert_eq!(code, 0, "check-config refused the config: {out}{err}");
    surfaces.push(("check-config", format!("{out}{err}")));
    let (_, out, err) = common::run_binary(
        &[
            "check-config",
            &format!("--config.file={}", {
                let broken_path = dir.path().join("broken.yaml");
                std::fs::write(&broken_path, &broken).unwrap();
                broken_path.display().to_string()
            }),
        ],
        &envs,
        None,
    );
    surfaces.push(("check-config error", format!("{out}{err}")));
    surfaces.push(("logs", exporter.logs()));

    for (surface, text) in &surfaces {
        assert!(!text.is_empty(), "{surface} is empty");
        for (what, form) in leak_forms() {
            assert!(!text.contains(&form), "{surface} leaks the {what}:\n{text}");
        }
    }
    assert!(
        surfaces
            .iter()
            .any(|(surface, text)| *surface == "refused reload" && text.contains("password")),
        "the refused reload does not say what is wrong"
    );
    assert!(
        surfaces
            .iter()
            .any(|(surface, text)| *surface == "check-config"
                && text.contains("probes[3] \"url-password\": objective 99.999%")),
        "check-config does not warn about the objectives"
    );
}
