//! Who may call what (docs/API.md, "Exposure"): tokens with roles, the one table of what each
//! route needs, and the layer that checks it and hands the caller to the handler.
//!
//! Roles are ordered, each allowed what the ones below it are: `client` (`/identify`), `read`
//! (lookups), `operate` (changes to contacts and the blocklist), `admin` (everything). Without
//! any token configured, every route that needs a role answers loopback clients only (as
//! admin), so a server started on a public address never exposes rows by accident.
//!
//! A token is never kept or compared as given: the server keeps the SHA-256 of each secret,
//! hashes the token a request brings and compares the digests without an early exit.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use axum::Extension;
use serde::Serialize;

use super::identify::json_ok;
use super::ApiError;

/// What a token may do; each role may do what the ones before it may.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Client,
    Read,
    Operate,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Client, Role::Read, Role::Operate, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Read => "read",
            Role::Operate => "operate",
            Role::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The caller a request was let through for, in its extensions: a token's name and role, or
/// `loopback` (as admin) when no token is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: Arc<str>,
    pub role: Role,
    /// Whether a token named it (a loopback client of a server without tokens is no token).
    pub token: bool,
}

impl Caller {
    /// Who made a change, as the change feed names it (`by`): the token's name, if any.
    pub fn by(caller: Option<&Caller>) -> Option<String> {
        caller.filter(|c| c.token).map(|c| c.name.to_string())
    }
}

/// What a route asks of its caller.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    /// Anyone: the route holds no data.
    Public,
    /// `/identify`: anyone, or with `--identify-needs-token` a token of any role.
    Identify,
    /// A caller of this role or above.
    Role(Role),
}

use Access::{Identify, Public};
const CLIENT: Access = Access::Role(Role::Client);
const READ: Access = Access::Role(Role::Read);
const OPERATE: Access = Access::Role(Role::Operate);
const ADMIN: Access = Access::Role(Role::Admin);

/// Every route and what it needs, by method and route template: the one place a route's role
/// is decided (docs/API.md's role table says the same). A route missing here needs admin.
/// Rows for routes not served yet (the change feed, erasures, corrections) are in place so that
/// they are protected the day they are routed.
pub const ROUTES: &[(Method, &str, Access)] = &[
    (Method::POST, "/identify", Identify),
    (Method::GET, "/", Public),
    (Method::GET, "/console", Public),
    (Method::GET, "/console/{file}", Public),
    (Method::GET, "/docs", Public),
    (Method::GET, "/openapi.json", Public),
    (Method::GET, "/health", Public),
    (Method::GET, "/healthz", Public),
    (Method::GET, "/readyz", Public),
    (Method::GET, "/metrics", Public),
    (Method::GET, "/whoami", CLIENT),
    (Method::GET, "/contacts", READ),
    (Method::GET, "/contacts/{id}", READ),
    (Method::GET, "/contacts/{id}/identity", READ),
    (Method::GET, "/contacts/{id}/graph", READ),
    (Method::GET, "/contacts/{a}/why/{b}", READ),
    (Method::GET, "/stats", READ),
    (Method::GET, "/blocklist", READ),
    (Method::GET, "/cluster", READ),
    (Method::GET, "/changes", READ),
    (Method::GET, "/erasures", READ),
    (Method::GET, "/erasures/{id}", READ),
    (Method::DELETE, "/contacts/{id}", OPERATE),
    (Method::PATCH, "/contacts/{id}", OPERATE),
    (Method::POST, "/contacts/import", OPERATE),
    (Method::POST, "/blocklist", OPERATE),
    (Method::DELETE, "/blocklist", OPERATE),
    (Method::POST, "/erasures", OPERATE),
    (Method::GET, "/contacts/export", ADMIN),
    (Method::GET, "/backup", ADMIN),
    (Method::POST, "/cluster/members", ADMIN),
    (Method::DELETE, "/cluster/members/{id}", ADMIN),
];

/// What `method` on the route `template` needs (HEAD as GET).
pub fn access(method: &Method, template: &str) -> Access {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    ROUTES
        .iter()
        .find(|(m, t, _)| m == method && *t == template)
        .map_or(ADMIN, |(_, _, access)| *access)
}

/// One configured token: its name, role and the SHA-256 of its secret.
struct Token {
    name: Arc<str>,
    role: Role,
    digest: [u8; 32],
}

/// The server's tokens and rules.
#[derive(Default)]
pub struct Auth {
    tokens: Vec<Token>,
    identify_needs_token: bool,
}

impl std::fmt::Debug for Auth {
    // Names and roles only: not even the digests of secrets are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tokens: Vec<_> = self.tokens.iter().map(|t| (&*t.name, t.role)).collect();
        f.debug_struct("Auth")
            .field("tokens", &tokens)
            .field("identify_needs_token", &self.identify_needs_token)
            .finish()
    }
}

impl Auth {
    /// `--admin-token` (an admin token named `admin`), the tokens of `--tokens`, and
    /// `--identify-needs-token`; an error names the line or option at fault.
    pub fn new(
        admin_token: Option<&str>,
        tokens: Option<&Path>,
        identify_needs_token: bool,
    ) -> Result<Auth, String> {
        let mut all = Vec::new();
        if let Some(path) = tokens {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--tokens {}: {e}", path.display()))?;
            all = parse_tokens(&text).map_err(|e| format!("--tokens {}: {e}", path.display()))?;
        }
        if let Some(secret) = admin_token.filter(|t| !t.is_empty()) {
            if all.iter().any(|t| &*t.name == "admin") {
                return Err(
                    "--admin-token is the token named admin, and --tokens names one admin too"
                        .into(),
                );
            }
            let digest = sha256(secret.as_bytes());
            if all.iter().any(|t| t.digest == digest) {
                return Err("--admin-token is also a secret in --tokens".into());
            }
            all.push(Token {
                name: "admin".into(),
                role: Role::Admin,
                digest,
            });
        }
        if identify_needs_token && all.is_empty() {
            return Err(
                "--identify-needs-token needs tokens: give --tokens or --admin-token".into(),
            );
        }
        Ok(Auth {
            tokens: all,
            identify_needs_token,
        })
    }

    /// Whether any token is configured (otherwise: loopback only).
    pub fn has_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The names and roles of the tokens, for the start-up log line.
    pub fn summary(&self) -> Vec<(Arc<str>, Role)> {
        self.tokens
            .iter()
            .map(|t| (t.name.clone(), t.role))
            .collect()
    }

    /// The role `access` needs here, or None for anyone.
    fn needed(&self, access: Access) -> Option<Role> {
        match access {
            Public => None,
            Identify => self.identify_needs_token.then_some(Role::Client),
            Access::Role(role) => Some(role),
        }
    }

    /// Who is calling: the token the request brings, or, without tokens, a loopback client.
    fn caller(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Result<Caller, ApiError> {
        if self.tokens.is_empty() {
            return match peer {
                Some(peer) if peer.ip().is_loopback() => Ok(Caller {
                    name: "loopback".into(),
                    role: Role::Admin,
                    token: false,
                }),
                _ => Err(ApiError::Forbidden),
            };
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        let digest = sha256(given.as_bytes());
        // Every token is compared, so the time taken does not tell which one matched.
        let mut found = None;
        for token in &self.tokens {
            if digests_equal(&token.digest, &digest) {
                found = Some(token);
            }
        }
        let token = found.ok_or(ApiError::Unauthorized)?;
        Ok(Caller {
            name: token.name.clone(),
            role: token.role,
            token: true,
        })
    }
}

/// Parses a tokens file: `NAME ROLE SECRET` a line, blank lines and `#` comments skipped.
fn parse_tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens: Vec<Token> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let token = parse_line(line).map_err(|why| format!("line {number}: {why}"))?;
        if tokens.iter().any(|t| t.name == token.name) {
            return Err(format!(
                "line {number}: the name {} is given twice",
                token.name
            ));
        }
        if tokens.iter().any(|t| t.digest == token.digest) {
            return Err(format!("line {number}: the same secret as an earlier line"));
        }
        tokens.push(token);
    }
    Ok(tokens)
}

fn parse_line(line: &str) -> Result<Token, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [name, role, secret] = fields[..] else {
        return Err(format!(
            "not NAME ROLE SECRET ({} fields; the secret is never shown)",
            fields.len()
        ));
    };
    let name_ok = name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if !name_ok {
        return Err(format!(
            "the name {name:?} is not 1 to 64 letters, digits and . _ @ -"
        ));
    }
    let role = Role::parse(role)
        .ok_or_else(|| format!("the role {role:?} is not one of client, read, operate, admin"))?;
    let digest = match secret.strip_prefix("sha256:") {
        Some(hex) => parse_digest(hex).ok_or("sha256: must be followed by 64 hex digits")?,
        None => sha256(secret.as_bytes()),
    };
    Ok(Token {
        name: name.into(),
        role,
        digest,
    })
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(digest)
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest
        .as_ref()
        .try_into()
        .expect("a SHA-256 digest is 32 bytes")
}

/// Compares two digests without an early exit.
pub(crate) fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The layer in front of every route: looks up what the route needs, lets the request through
/// with its [`Caller`] in the extensions, or answers 401 `unauthorized` (no token, or one the
/// server does not know) or 403 `forbidden` (too small a role; or not loopback without tokens).
pub async fn authorize(
    State(auth): State<Arc<Auth>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let template = request.extensions().get::<MatchedPath>();
    let access = template.map_or(ADMIN, |t| access(request.method(), t.as_str()));
    let Some(needed) = auth.needed(access) else {
        return Ok(next.run(request).await);
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let caller = auth.caller(request.headers(), peer)?;
    if caller.role < needed {
        return Err(ApiError::RoleNeeded {
            needed,
            name: caller.name,
            role: caller.role,
        });
    }
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WhoAmI {
    /// The token's name (`loopback` when the server has no tokens and answers loopback
    /// clients as admin).
    name: String,
    role: Role,
}

/// The caller's token name and role: what the console asks to know what to show.
#[utoipa::path(get, path = "/whoami", tag = "operations",
    responses((status = 200, description = "The token's name and role", body = WhoAmI),
        (status = 401, description = "unauthorized: no token, or one the server does not know", body = super::openapi::ErrorBody),
        (status = 403, description = "forbidden: not loopback and no token configured", body = super::openapi::ErrorBody)))]
pub async fn whoami(Extension(caller): Extension<Caller>) -> Response {
    json_ok(&WhoAmI {
        name: caller.name.to_string(),
        role: caller.role,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(file: &str) -> Auth {
        Auth {
            tokens: parse_tokens(file).expect("parses"),
            identify_needs_token: false,
        }
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn a_tokens_file_gives_names_and_roles_to_plain_and_hashed_secrets() {
        let hashed = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"; // "secret"
        let file = format!("# support\n\nalice read s3cret\n  bob operate sha256:{hashed}  \n");
        let auth = auth(&file);
        let alice = auth.caller(&bearer("s3cret"), None).unwrap();
        assert_eq!((&*alice.name, alice.role), ("alice", Role::Read));
        let bob = auth.caller(&bearer("secret"), None).unwrap();
        assert_eq!((&*bob.name, bob.role), ("bob", Role::Operate));
        assert!(matches!(
            auth.caller(&bearer("s3cret2"), None),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            auth.caller(&HeaderMap::new(), None),
            Err(ApiError::Unauthorized)
        ));
    }

    #[test]
    fn a_malformed_line_is_refused_by_its_number_without_showing_the_secret() {
        for (file, says) in [
            ("a read x\nb reader y\n", "line 2: the role \"reader\""),
            ("a read\n", "line 1: not NAME ROLE SECRET (2 fields"),
            ("\n\na read x y\n", "line 3: not NAME ROLE SECRET (4 fields"),
            (
                "a read sha256:abc\n",
                "line 1: sha256: must be followed by 64 hex digits",
            ),
            ("a read x\na admin y\n", "line 2: the name a is given twice"),
            ("a read x\nb admin x\n", "line 2: the same secret"),
            ("a/b read x\n", "line 1: the name \"a/b\""),
        ] {
            let error = parse_tokens(file).err().expect(file);
            assert!(error.starts_with(says), "{file:?}: {error}");
            assert!(!error.contains(" x") && !error.contains(" y"), "{error}");
        }
    }

    #[test]
    fn the_admin_token_is_an_admin_named_admin() {
        let auth = Auth::new(Some("sesame"), None, false).unwrap();
        let admin = auth.caller(&bearer("sesame"), None).unwrap();
        assert_eq!((&*admin.name, admin.role), ("admin", Role::Admin));
        assert!(
            Auth::new(None, None, true).is_err(),
            "identify needs a token to exist"
        );
    }

    #[test]
    fn without_tokens_loopback_clients_are_admin_and_others_forbidden() {
        let auth = Auth::default();
        let local = auth.caller(&HeaderMap::new(), Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(local.unwrap().role, Role::Admin);
        let outside = auth.caller(&HeaderMap::new(), Some("203.0.113.7:9".parse().unwrap()));
        assert!(matches!(outside, Err(ApiError::Forbidden)));
        assert!(matches!(
            auth.caller(&HeaderMap::new(), None),
            Err(ApiError::Forbidden)
        ));
    }

    #[test]
    fn every_routed_path_has_a_row_and_unknown_ones_need_admin() {
        let dir = tempfile::tempdir().unwrap();
        let options = crate::storage::StorageOptions::new(dir.path());
        let store = crate::store::Store::replicated(
            crate::engine::Engine::new(),
            crate::engine::Limits::default(),
            1,
            &options,
        )
        .unwrap();
        let (_, api) = super::super::router_and_openapi(super::super::AppState::new(store));
        for (path, item) in &api.paths.paths {
            let methods = [
                (Method::GET, item.get.is_some()),
                (Method::POST, item.post.is_some()),
                (Method::DELETE, item.delete.is_some()),
                (Method::PATCH, item.patch.is_some()),
                (Method::PUT, item.put.is_some()),
            ];
            for (method, routed) in methods {
                if routed {
                    assert!(
                        ROUTES.iter().any(|(m, t, _)| *m == method && t == path),
                        "{method} {path} has no row in ROUTES"
                    );
                }
            }
        }
        assert_eq!(access(&Method::GET, "/not/routed"), ADMIN);
        assert_eq!(access(&Method::HEAD, "/stats"), READ);
    }
}
