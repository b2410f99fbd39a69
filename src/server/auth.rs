//! Basic authentication of every endpoint, exporter-toolkit style: bcrypt hashes, `401` with
//! `WWW-Authenticate`, unknown users checked against a dummy hash of the users' own cost so
//! timing does not tell which user names exist, successful checks cached so a scrape every
//! 15 s does not pay bcrypt each time, and a cap on the bcrypt checks running at once so a
//! flood of bad credentials cannot queue unbounded blocking work.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

/// bcrypt reads at most this many bytes of a password: a longer one would match its first
/// 72 bytes followed by anything, so it is refused.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// The users allowed in, and the dummy hash unknown users are checked against.
#[derive(Default)]
pub struct Users {
    hashes: HashMap<String, String>,
    /// A hash at the highest cost of `hashes`, so an unknown user costs what a known one
    /// does; empty when there are no users.
    dummy: String,
}

impl Users {
    /// The users with their bcrypt hashes (already checked to be bcrypt). Computes the
    /// dummy hash: blocking (one bcrypt run at the users' cost), so call it where files are
    /// read (start-up, the blocking pool of a reload), never on a request.
    pub fn new(hashes: HashMap<String, String>) -> Self {
        let cost = hashes
            .values()
            .filter_map(|hash| hash.parse::<bcrypt::HashParts>().ok())
            .map(|parts| parts.get_cost())
            .max();
        // Hashing with a cost read from a valid hash cannot fail; an empty dummy would only
        // make unknown users fail faster.
        let dummy = cost
            .map(|cost| bcrypt::hash("webhook-exporter: no such user", cost).unwrap_or_default())
            .unwrap_or_default();
        Self { hashes, dummy }
    }

    /// How many users are configured.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether no user is configured (no authentication).
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The bcrypt cost unknown users pay.
    pub fn dummy_cost(&self) -> Option<u32> {
        self.dummy
            .parse::<bcrypt::HashParts>()
            .ok()
            .map(|parts| parts.get_cost())
    }
}

/// Successful checks remembered at most; the cache is emptied when full.
const CACHE_LIMIT: usize = 1024;

/// The users, the cache and the cap on bcrypt checks; replaced users (after a reload) clear
/// the cache.
pub struct Auth {
    users: RwLock<Arc<Users>>,
    verified: Mutex<HashSet<[u8; 32]>>,
    /// One permit per bcrypt check allowed to run at once (a few CPUs' worth): the
    /// others wait here, as cheap futures, instead of as blocking-pool threads.
    checks: Arc<tokio::sync::Semaphore>,
}

impl Default for Auth {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self {
            users: RwLock::default(),
            verified: Mutex::default(),
            checks: Arc::new(tokio::sync::Semaphore::new(cpus.clamp(1, 4))),
        }
    }
}

impl Auth {
    /// Installs a new set of users (empty: no authentication).
    pub fn set_users(&self, users: Users) {
        *crate::sync::write(&self.users) = Arc::new(users);
        crate::sync::lock(&self.verified).clear();
    }

    fn users(&self) -> Arc<Users> {
        crate::sync::read(&self.users).clone()
    }

    /// Whether `user`/`password` are valid. bcrypt runs on the blocking pool.
    async fn check(&self, user: &str, password: &str) -> bool {
        let users = self.users();
        let known = users.hashes.get(user);
        let hash = known.unwrap_or(&users.dummy).clone();
        if password.len() > MAX_PASSWORD_BYTES {
            return false;
        }
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
        if known.is_some() && crate::sync::lock(&self.verified).contains(&key) {
            return true;
        }
        // The semaphore is never closed, so acquiring only waits.
        let Ok(permit) = self.checks.clone().acquire_owned().await else {
            return false;
        };
        let password = password.to_owned();
        // The permit goes with the job: a client hanging up does not free its slot while
        // bcrypt still runs.
        let valid = tokio::task::spawn_blocking(move || {
            let valid = bcrypt::verify(password, &hash).unwrap_or(false);
            drop(permit);
            valid
        })
        .await
        .unwrap_or(false);
        let valid = valid && known.is_some();
        if valid {
            let mut verified = crate::sync::lock(&self.verified);
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
            // RFC 9110: the scheme is case-insensitive.
            let (scheme, credentials) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(credentials)
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::Users;

    #[test]
    fn unknown_users_pay_the_highest_cost_of_the_configured_users() {
        let users = Users::new(HashMap::from([
            ("cheap".to_owned(), bcrypt::hash("a", 4).unwrap()),
            ("dear".to_owned(), bcrypt::hash("b", 6).unwrap()),
        ]));
        assert_eq!(users.dummy_cost(), Some(6));
        assert_eq!(Users::new(HashMap::new()).dummy_cost(), None);
    }
}
