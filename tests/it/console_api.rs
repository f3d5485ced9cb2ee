//! The console's API over HTTP: a cluster's graph, the chain of evidence between two contacts,
//! the overview's figures, the online import, and the console's own files.

use crate::common::{request, spawn_app, TestApp};

const HILLVALLEY: &str = include_str!("../../examples/data/hillvalley.csv");

fn import(app: &TestApp, query: &str, body: &str) -> crate::common::Response {
    app.post(&format!("/contacts/import{query}"), body)
}

/// The worked examples' four contacts, then George's request that joins 11 and 27.
fn hill_valley() -> TestApp {
    let app = spawn_app();
    let report = import(&app, "", HILLVALLEY);
    assert_eq!(report.status, 200, "{}", report.text);
    assert_eq!(report.json()["imported"], 4);
    let joined = app.identify(r#"{"email":"george@hillvalley.edu","phoneNumber":"717171"}"#);
    assert_eq!(
        joined.json()["contact"]["secondaryContactIds"],
        serde_json::json!([27])
    );
    app
}

#[test]
fn a_graph_shows_members_values_and_the_join_that_merged_them() {
    let app = hill_valley();
    let graph = app.get("/contacts/27/graph").json();
    assert_eq!(graph["primary"], 11);
    let nodes = graph["nodes"].as_array().unwrap();
    let ids: Vec<&str> = nodes.iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "contact:11",
            "contact:27",
            "email:george@hillvalley.edu",
            "email:biffsucks@hillvalley.edu",
            "phoneNumber:919191",
            "phoneNumber:717171"
        ]
    );
    assert_eq!(nodes[0]["primary"], true);
    assert_eq!(nodes[1]["row"]["linkedId"], 11);
    assert_eq!(nodes[2]["blocked"], false);
    let edges = graph["edges"].as_array().unwrap();
    let joins: Vec<_> = edges.iter().filter(|e| e["type"] == "join").collect();
    assert_eq!(joins.len(), 1);
    assert_eq!(joins[0]["source"], "email:george@hillvalley.edu");
    assert_eq!(joins[0]["target"], "phoneNumber:717171");
    let made_at = joins[0]["madeAt"]
        .as_str()
        .expect("a join made now has its time");
    assert!(made_at.ends_with('Z') && made_at.len() == 24, "{made_at}");
    assert_eq!(edges.iter().filter(|e| e["type"] == "holds").count(), 4);
}

#[test]
fn an_imported_link_is_an_edge_and_evidence() {
    let app = hill_valley();
    // 23 shares a phone with 1 and carries linkedId 1: both a value and a link tie them.
    let graph = app.get("/contacts/1/graph").json();
    let links: Vec<_> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "link")
        .collect();
    assert_eq!(links.len(), 1);
    let why = app.get("/contacts/1/why/23").json();
    assert_eq!(why["linked"], true);
    assert_eq!(why["hops"].as_array().unwrap().len(), 1);
}

#[test]
fn why_names_each_hop_of_the_shortest_chain() {
    let app = hill_valley();
    let why = app.get("/contacts/11/why/27").json();
    assert_eq!(why["linked"], true);
    let hops = why["hops"].as_array().unwrap();
    assert_eq!(hops.len(), 1);
    assert_eq!(hops[0]["from"], 11);
    assert_eq!(hops[0]["to"], 27);
    assert_eq!(hops[0]["evidence"], "join");
    assert_eq!(hops[0]["email"], "george@hillvalley.edu");
    assert_eq!(hops[0]["phoneNumber"], "717171");

    let apart = app.get("/contacts/1/why/27").json();
    assert_eq!(
        apart,
        serde_json::json!({"linked": false, "from": 1, "to": 27})
    );
    assert_eq!(
        app.get("/contacts/1/why/1").json()["hops"],
        serde_json::json!([])
    );
}

#[test]
fn graph_and_why_refuse_unknown_deleted_and_malformed_ids() {
    let app = hill_valley();
    assert_eq!(app.delete("/contacts/23").status, 200);
    for path in [
        "/contacts/99/graph",
        "/contacts/23/graph",
        "/contacts/abc/graph",
        "/contacts/1/why/99",
        "/contacts/23/why/1",
        "/contacts/1/why/x",
    ] {
        let answer = app.get(path);
        assert_eq!(answer.status, 404, "{path}: {}", answer.text);
        assert_eq!(answer.error_code(), "not_found");
    }
}

#[test]
fn stats_count_contacts_clusters_and_list_the_largest() {
    let app = hill_valley();
    assert_eq!(app.delete("/contacts/23").status, 200);
    let stats = app.get("/stats").json();
    assert_eq!(
        stats["contacts"],
        serde_json::json!({"live": 3, "deleted": 1, "erased": 0})
    );
    assert_eq!(stats["clusters"], 2);
    assert_eq!(
        stats["largestClusters"],
        serde_json::json!([{"primary": 11, "size": 2}])
    );
    assert_eq!(
        stats["blockedValues"],
        serde_json::json!({"admin": 0, "generic": 0})
    );
    assert_eq!(stats["storage"]["healthy"], true);
    assert!(
        stats["storage"]["figures"]["logBytesSinceStart"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
fn an_import_of_ndjson_is_answered_by_later_requests() {
    let app = spawn_app();
    let ndjson = concat!(
        r#"{"id":5,"phoneNumber":"555","email":"a@x.io","linkedId":null,"linkPrecedence":"primary","createdAt":"2023-01-01T00:00:00.000Z","updatedAt":"2023-01-01T00:00:00.000Z","deletedAt":null}"#,
        "\n",
        r#"{"id":7,"phoneNumber":"555","email":"b@x.io","linkedId":null,"linkPrecedence":"primary","createdAt":"2023-01-02T00:00:00.000Z","updatedAt":"2023-01-02T00:00:00.000Z","deletedAt":null}"#,
        "\n"
    );
    let report = import(&app, "", ndjson).json();
    assert_eq!(report["imported"], 2);
    assert_eq!(report["corrected"], 1, "7 becomes a secondary of 5");
    let answer = app
        .identify(r#"{"email":"new@x.io","phoneNumber":"555"}"#)
        .json();
    assert_eq!(answer["contact"]["primaryContactId"], 5);
    assert_eq!(
        answer["contact"]["secondaryContactIds"],
        serde_json::json!([7, 8])
    );
}

#[test]
fn an_import_with_a_bad_row_imports_nothing_and_names_the_line() {
    let app = spawn_app();
    let bad = HILLVALLEY.replace("george@hillvalley.edu", "not an email");
    let answer = import(&app, "", &bad);
    assert_eq!(answer.status, 400, "{}", answer.text);
    assert_eq!(answer.error_code(), "invalid_rows");
    let rows = answer.json()["error"]["rows"].clone();
    assert_eq!(rows[0]["line"], 3);
    assert_eq!(app.get("/stats").json()["contacts"]["live"], 0);

    let skipped = import(&app, "?skipInvalid=true", &bad).json();
    assert_eq!(skipped["imported"], 3);
    assert_eq!(skipped["skipped"][0]["line"], 3);
}

#[test]
fn an_import_refuses_taken_ids_wrong_columns_and_bad_options() {
    let app = hill_valley();
    let again = import(&app, "", HILLVALLEY);
    assert_eq!(again.status, 400);
    assert!(again.text.contains("already exists"), "{}", again.text);
    let columns = import(&app, "", "id,email\n1,a@x.io\n");
    assert_eq!(columns.status, 400);
    assert!(columns.text.contains("wrong columns"), "{}", columns.text);
    for query in ["?format=xml", "?skipInvalid=maybe", "?other=1"] {
        let answer = import(&app, query, HILLVALLEY);
        assert_eq!(answer.status, 400, "{query}");
        assert_eq!(answer.error_code(), "invalid_query");
    }
    assert_eq!(app.get("/stats").json()["contacts"]["live"], 4);
}

#[test]
fn an_import_body_may_be_far_larger_than_a_request_body() {
    let app = spawn_app();
    let mut csv = String::from(HILLVALLEY.lines().next().unwrap());
    csv.push('\n');
    for id in 1..=2000 {
        csv.push_str(&format!(
            "{id},{id},c{id}@x.io,,primary,2023-04-01T00:00:00.000Z,2023-04-01T00:00:00.000Z,\n"
        ));
    }
    assert!(csv.len() > 64 * 1024);
    let report = import(&app, "?format=csv", &csv);
    assert_eq!(report.status, 200, "{}", report.text);
    assert_eq!(report.json()["imported"], 2000);
    let too_big = app.identify(&format!(r#"{{"email":"{}@x.io"}}"#, "a".repeat(20_000)));
    assert_eq!(too_big.status, 413, "requests keep their own limit");
}

#[test]
fn an_import_survives_a_restart() {
    let app = hill_valley();
    let app = app.restart(|_| {});
    let answer = app.get("/contacts/27/identity").json();
    assert_eq!(answer["contact"]["primaryContactId"], 11);
    assert_eq!(app.get("/contacts/23").json()["linkedId"], 1);
}

#[test]
fn the_console_is_served_from_the_binary_and_the_root_leads_to_it() {
    let app = spawn_app();
    let root = app.get("/");
    assert_eq!(root.status, 303);
    assert_eq!(root.header("location"), Some("/console"));
    let page = app.get("/console");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text.contains("/console/app.js"));
    for file in [
        "app.js",
        "changes.js",
        "graph.js",
        "style.css",
        "cytoscape.min.js",
    ] {
        let asset = app.get(&format!("/console/{file}"));
        assert_eq!(asset.status, 200, "{file}");
        assert!(!asset.text.is_empty(), "{file}");
    }
    assert_eq!(app.get("/console/secret.txt").status, 404);
}

#[test]
fn the_new_endpoints_are_admin_endpoints_in_the_openapi_document() {
    let app = crate::common::spawn_app_with(|c| c.admin_token = Some("sesame".into()));
    for path in ["/stats", "/contacts/1/graph", "/contacts/1/why/2"] {
        assert_eq!(app.get(path).status, 401, "{path}");
    }
    assert_eq!(import(&app, "", HILLVALLEY).status, 401);
    assert_eq!(
        app.get("/console").status,
        200,
        "the page itself holds no data"
    );
    let auth = [("Authorization", "Bearer sesame")];
    let doc = request(app.addr, "GET", "/openapi.json", b"", &auth).json();
    for path in [
        "/contacts/{id}/graph",
        "/contacts/{a}/why/{b}",
        "/stats",
        "/contacts/import",
        "/console",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
}
