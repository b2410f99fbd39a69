//! `webhook-exporter demo`: an embedded simulated Divalto server and a built-in config that
//! probes it, so the exporter can be seen working with nothing else installed.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, ConfigErrors};

/// Path of the simulated REST base, as on an on-premise Divalto server.
const BASE_PATH: &str = "/DhsDivaltoServiceDivaApiRest";

/// The built-in config; `{base}` is replaced by the simulated server's base URL.
const DEMO_CONFIG: &str = r#"# Built-in config of `webhook-exporter demo`.
max_concurrent_probes: 16
defaults:
  interval: 5s
  timeout: 3s
  params: {dos: "998"}
servers:
  simulated-divalto:
    base_url: "{base}"
    max_concurrent: 4
    # Fills the dashboard's SLO row: the flaky and the failing webhooks burn their budget.
    objective: 99%
probes:
  - name: refresh-customer
    server: simulated-divalto
    code: DEMOREFRESHCUSTOMERACADEMY0001
    params: {refreshCustomer: C0000001}
    labels: {dossier: "998"}
  - name: sync-orders-slow
    server: simulated-divalto
    code: DEMOSYNCORDERSSLOWACADEMY00002
    labels: {dossier: "998"}
  - name: export-invoices-bad-dossier
    server: simulated-divalto
    code: DEMOEXPORTINVOICESACADEMY00003
    params: {dos: "999"}
    labels: {dossier: "999"}
  - name: update-stock-flaky
    server: simulated-divalto
    code: DEMOUPDATESTOCKFLAKYACADEMY004
    labels: {dossier: "998"}
  - name: ping-plain-text
    server: simulated-divalto
    code: DEMOPINGPLAINTEXTACADEMY000005
    interval: 10s
  - name: erp-front
    url: "{front}"
    expect: {status: ["2xx"], divalto: off}
"#;

/// The simulated server's counters, for the flaky webhook.
#[derive(Default)]
struct Simulation {
    calls: AtomicU64,
}

/// Starts the simulated Divalto server on `listener`; it stops when `cancel` fires.
pub fn spawn_server(
    listener: TcpListener,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let app = Router::new()
        .route(
            &format!("{BASE_PATH}/api/v1/WebHook/{{code}}"),
            get(webhook).post(webhook),
        )
        .route("/health", get(|| async { "OK" }))
        .with_state(Arc::new(Simulation::default()));
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "simulated Divalto server stopped");
        }
    })
}

/// The built-in config for a simulated server listening on `address`.
///
/// # Errors
/// Only if the embedded config were invalid (a test keeps it valid).
pub fn config(address: SocketAddr) -> Result<Config, ConfigErrors> {
    let text = DEMO_CONFIG
        .replace("{base}", &format!("http://{address}{BASE_PATH}"))
        .replace("{front}", &format!("http://{address}/health"));
    config::parse(Path::new("<built-in demo config>"), &text)
}

async fn webhook(
    State(simulation): State<Arc<Simulation>>,
    UrlPath(code): UrlPath<String>,
) -> Response {
    let call = simulation.calls.fetch_add(1, Ordering::Relaxed);
    match code.as_str() {
        "DEMOREFRESHCUSTOMERACADEMY0001" => {
            Json(json!({"code": "0", "message": "Client C0000001 rafraîchi"})).into_response()
        }
        "DEMOSYNCORDERSSLOWACADEMY00002" => {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            Json(json!({"code": "0", "message": "Commandes synchronisées"})).into_response()
        }
        "DEMOEXPORTINVOICESACADEMY00003" => (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": "400", "message": "Dossier 999 inconnu"})),
        )
            .into_response(),
        "DEMOUPDATESTOCKFLAKYACADEMY004" if call % 3 == 0 => Json(
            json!({"Code": "400", "Message": "Article A-1042 verrouillé par un autre utilisateur"}),
        )
        .into_response(),
        "DEMOUPDATESTOCKFLAKYACADEMY004" => {
            Json(json!({"Code": "0", "Message": "Stock mis à jour"})).into_response()
        }
        "DEMOPINGPLAINTEXTACADEMY000005" => "0".into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            Json(json!({"code": "404", "message": "Webhook inconnu"})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_built_in_config_is_valid() {
        let config = super::config("127.0.0.1:1".parse().unwrap()).unwrap();
        assert_eq!(config.probes.len(), 6);
    }
}
