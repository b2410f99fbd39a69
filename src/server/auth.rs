//! Basic authentication of every endpoint, exporter-toolkit style: bcrypt hashes, `401` with
//! `WWW-Authenticate`, unknown users checked against a dummy hash so timing does not tell
//! which user names exist, and successful checks cached so a scrape every 15 s does not pay
//! bcrypt each time.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

/// A bcrypt hash (cost 10) verified for unknown users, so they take as long as known ones.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    // Hashing with a valid cost cannot fail; an empty string would only make unknown users
    // fail faster.
    HASH.get_or_init(|| bcrypt::hash("webhook-exporter: no such user", 10).unwrap_or_default())
}

/// Successful checks remembered at most; the cache is emptied when full.
const CACHE_LIMIT: usize = 1024;

/// The users and the cache; replaced users (after a reload) clear the cache.
#[derive(Default)]
pub struct Auth {
    users: RwLock<Arc<HashMap<String, String>>>,
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl Auth {
    /// Installs a new set of users (empty: no authentication).
    pub fn set_users(&self, users: HashMap<String, String>) {
        *self
            .users
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(users);
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    fn users(&self) -> Arc<HashMap<String, String>> {
        self.users
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether `user`/`password` are valid. bcrypt runs on the blocking pool.
    async fn check(&self, user: &str, password: &str) -> bool {
        let users = self.users();
        let known = users.get(user);
        let hash = known.map_or_else(|| dummy_hash().to_owned(), Clone::clone);
        // Keyed on user, password and hash, so a changed hash invalidates the entry.
        let key: [u8; 32] = {
            let mut context = ring::digest::Context::new(&ring::digest::SHA256);
            for part in [user, "\0", password, "\0", &hash] {
                context.update(part.as_bytes());
            }
            let mut key = [0; 32];
            key.copy_from_slice(context.finish().as_ref());
            key
        };
        if known.is_some()
            && self
                .verified
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(&key)
        {
            return true;
        }
        let password = password.to_owned();
        let valid =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        let valid = valid && known.is_some();
        if valid {
            let mut verified = self
                .verified
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if verified.len() >= CACHE_LIMIT {
                verified.clear();
            }
            verified.insert(key);
        }
        valid
    }
}

/// The middleware: passes requests through when no users are configured, else requires
/// valid basic credentials.
pub async fn require_basic_auth(
    State(auth): State<Arc<Auth>>,
    request: Request,
    next: Next,
) -> Response {
    if auth.users().is_empty() {
        return next.run(request).await;
    }
    let credentials = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
        })
        .and_then(|decoded| String::from_utf8(decoded).ok());
    if let Some((user, password)) = credentials.as_deref().and_then(|c| c.split_once(':'))
        && auth.check(user, password).await
    {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"webhook-exporter\", charset=\"UTF-8\"",
        )],
        "Unauthorized\n",
    )
        .into_response()
}
