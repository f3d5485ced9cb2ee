//! The server starts, answers, and keeps what it answered across a graceful restart.

use crate::common;

use common::spawn_app;

#[test]
fn a_created_contact_is_still_there_after_a_restart() {
    let app = spawn_app();
    let first = app.identify(r#"{"email":"doc@hillvalley.edu","phoneNumber":"555"}"#);
    assert_eq!(first.status, 200, "{}", first.text);
    let app = app.restart(|_| {});
    let again = app.identify(r#"{"phoneNumber":"555"}"#);
    assert_eq!(again.json(), first.json());
}
