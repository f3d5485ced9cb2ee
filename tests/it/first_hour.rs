//! A newcomer's first hour: the address forms and `PORT`, `/health`, the public API description
//! and `/` leading to it, with an admin token set.

use crate::common::{request, spawn_app_with};

#[test]
fn health_answers_like_healthz() {
    let app = spawn_app_with(|_| {});
    let health = app.get("/health");
    assert_eq!(health.status, 200);
    assert_eq!(health.text, app.get("/healthz").text);
}

#[test]
fn docs_and_the_document_are_public_when_a_token_is_set() {
    let app = spawn_app_with(|c| c.admin_token = Some("s3cret".into()));
    assert_eq!(app.get("/docs").status, 200);
    assert_eq!(app.get("/openapi.json").status, 200);
    assert_eq!(
        app.get("/contacts?after=0").status,
        401,
        "rows stay guarded"
    );
    let root = app.get("/");
    assert_eq!(root.status, 303);
    assert_eq!(root.header("location"), Some("/console"), "to the console");
    let authorized = request(
        app.addr,
        "GET",
        "/contacts?after=0",
        b"",
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(authorized.status, 200);
}
