//! The role matrix: every route of the OpenAPI document, called by every role (and by no one),
//! answered as docs/API.md's role table says; the table is also the server's own.

use std::collections::BTreeMap;
use std::path::Path;

use identity_engine::http::auth::{Access, Role, ROUTES};

use crate::common::{request, spawn_app, spawn_app_with, Response, TestApp};

/// What docs/API.md says a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Needs {
    Public,
    /// Public, or `client` with `--identify-needs-token`.
    Identify,
    Role(Role),
}

/// The role table of docs/API.md ("Exposure"): `METHOD /path` to what it needs, and whether
/// the row is for a route not served yet.
fn documented() -> BTreeMap<(String, String), (Needs, bool)> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/API.md"))
        .expect("docs/API.md");
    let table = doc
        .split_once("| route | role |\n|---|---|\n")
        .expect("docs/API.md has the role table")
        .1;
    let mut rows = BTreeMap::new();
    for line in table.lines().take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let (method, path) = cells[0]
            .trim_matches('`')
            .split_once(' ')
            .expect("METHOD /path");
        let cell = cells[1];
        let needs = if cell.starts_with("public") {
            if cell.contains("--identify-needs-token") {
                Needs::Identify
            } else {
                Needs::Public
            }
        } else {
            let role = cell.split('`').nth(1).expect("a role in backquotes");
            let role = Role::ALL.into_iter().find(|r| r.as_str() == role);
            Needs::Role(role.unwrap_or_else(|| panic!("unknown role in {line}")))
        };
        let later = cell.contains("(when served)");
        let key = (method.to_owned(), path.to_owned());
        assert!(rows.insert(key, (needs, later)).is_none(), "{line} twice");
    }
    rows
}

/// Every route of the server's OpenAPI document, as `(METHOD, /path)`.
fn served(app: &TestApp) -> Vec<(String, String)> {
    let doc = app.get("/openapi.json").json();
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.push((method.to_uppercase(), path.clone()));
        }
    }
    routes
}

#[test]
fn the_documented_role_table_is_the_servers_table() {
    let documented = documented();
    for (method, template, access) in ROUTES {
        let needs = match access {
            Access::Public => Needs::Public,
            Access::Identify => Needs::Identify,
            Access::Role(role) => Needs::Role(*role),
        };
        let key = (method.to_string(), template.to_string());
        assert_eq!(
            documented.get(&key).map(|d| d.0),
            Some(needs),
            "{method} {template}"
        );
    }
    assert_eq!(
        documented.len(),
        ROUTES.len(),
        "a documented row the server lacks"
    );
}

const TOKENS: &str = "\
# one token of each role
kiosk client c1ient
support read r3ad
ops operate 0perate
root admin adm1n
";

fn token(role: Role) -> &'static str {
    match role {
        Role::Client => "c1ient",
        Role::Read => "r3ad",
        Role::Operate => "0perate",
        Role::Admin => "adm1n",
    }
}

/// `METHOD path` with concrete values and a body that makes sense for the route.
fn call(app: &TestApp, method: &str, template: &str, auth: Option<Role>) -> Response {
    let path = template
        .replace("{id}", "1")
        .replace("{a}", "1")
        .replace("{b}", "2")
        .replace("{file}", "app.js");
    let body: &[u8] = match (method, template) {
        ("POST", "/identify") => br#"{"email":"matrix@x.io"}"#,
        ("POST", "/blocklist") => br#"{"phoneNumber":"000"}"#,
        ("POST", "/cluster/members") => br#"{"id":9,"addr":"127.0.0.1:1"}"#,
        _ => b"",
    };
    let path = if (method, template) == ("DELETE", "/blocklist") {
        "/blocklist?phoneNumber=000".to_owned()
    } else {
        path
    };
    let bearer = auth.map(|r| format!("Bearer {}", token(r)));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("Authorization", b.as_str()))
        .collect();
    request(app.addr, method, &path, body, &headers)
}

/// Calls every served route as no one and as each role, checking each answer against the table.
fn check_matrix(app: &TestApp, identify_needs_token: bool) {
    let documented = documented();
    let routes = served(app);
    for key in documented.keys() {
        let (_, later) = documented[key];
        assert_eq!(
            routes.contains(key),
            !later,
            "{key:?}: served exactly when the table does not say \"when served\""
        );
    }
    for (method, template) in &routes {
        let (needs, _) = documented
            .get(&(method.clone(), template.clone()))
            .unwrap_or_else(|| {
                panic!("docs/API.md's role table has no row for {method} {template}")
            });
        let needed = match needs {
            Needs::Public => None,
            Needs::Identify => identify_needs_token.then_some(Role::Client),
            Needs::Role(role) => Some(*role),
        };
        let callers = std::iter::once(None).chain(Role::ALL.into_iter().map(Some));
        for caller in callers {
            let answer = call(app, method, template, caller);
            let who = format!("{method} {template} as {caller:?}");
            match (needed, caller) {
                (None, _) => refused_not(&answer, &who),
                (Some(_), None) => {
                    assert_eq!(answer.status, 401, "{who}: {}", answer.text);
                    assert_eq!(answer.error_code(), "unauthorized", "{who}");
                    assert_eq!(answer.header("www-authenticate"), Some("Bearer"), "{who}");
                }
                (Some(needed), Some(role)) if role < needed => {
                    assert_eq!(answer.status, 403, "{who}: {}", answer.text);
                    assert_eq!(answer.error_code(), "forbidden", "{who}");
                    let message = answer.json()["error"]["message"].to_string();
                    assert!(
                        message.contains(&format!("role {needed}")),
                        "{who}: {message}"
                    );
                }
                (Some(_), Some(_)) => refused_not(&answer, &who),
            }
        }
    }
}

fn refused_not(answer: &Response, who: &str) {
    assert!(
        answer.status != 401 && answer.status != 403,
        "{who} was refused: {} {}",
        answer.status,
        answer.text
    );
    assert!(
        answer.status < 500,
        "{who}: {} {}",
        answer.status,
        answer.text
    );
}

fn with_tokens(identify_needs_token: bool) -> (tempfile::TempDir, TestApp) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("tokens");
    std::fs::write(&file, TOKENS).unwrap();
    let app = spawn_app_with(|c| {
        c.tokens = Some(file);
        c.identify_needs_token = identify_needs_token;
    });
    assert_eq!(
        app.identify(r#"{"email":"a@x.io","phoneNumber":"1"}"#)
            .status,
        if identify_needs_token { 401 } else { 200 }
    );
    (tmp, app)
}

#[test]
fn every_route_answers_every_role_as_the_table_says() {
    let (_tmp, app) = with_tokens(false);
    check_matrix(&app, false);
}

#[test]
fn with_identify_needs_token_identify_wants_a_token_of_any_role() {
    let (_tmp, app) = with_tokens(true);
    check_matrix(&app, true);
}

#[test]
fn without_tokens_a_loopback_client_may_call_every_route() {
    let app = spawn_app();
    for (method, template) in served(&app) {
        let answer = call(&app, &method, &template, None);
        refused_not(&answer, &format!("{method} {template} from loopback"));
    }
    let me = app.get("/whoami").json();
    assert_eq!(me, serde_json::json!({"name": "loopback", "role": "admin"}));
}

#[test]
fn whoami_names_the_token_and_its_role() {
    let (_tmp, app) = with_tokens(false);
    let answer = call(&app, "GET", "/whoami", Some(Role::Operate));
    assert_eq!(
        answer.json(),
        serde_json::json!({"name": "ops", "role": "operate"})
    );
}
