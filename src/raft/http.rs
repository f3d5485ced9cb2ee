//! The cluster's HTTP side: Raft's messages between members (`/cluster/raft/...`, outside the
//! request limits so that load never starves an election), and the layer in front of every
//! client route that sends a request where it can be served.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::{BodyExt, Full};
use serde::{de::DeserializeOwned, Serialize};

use super::{Member, FORWARDED_HEADER, TOKEN_HEADER};
use crate::edge::MemberCertificate;
use crate::http::ApiError;
use crate::storage::codec;

/// `/cluster/raft/...`: append, vote, snapshot (bincode), hello (JSON: who answers, and
/// whether it belongs to a cluster yet) and purged (JSON: how far its files are purged of
/// erased values); each only for a member that authenticates.
pub(crate) fn raft_routes(cluster: Arc<Member>) -> Router {
    Router::new()
        .route("/cluster/raft/append", post(append))
        .route("/cluster/raft/vote", post(vote))
        .route("/cluster/raft/snapshot", post(snapshot))
        .route("/cluster/raft/hello", get(hello_answer))
        .route("/cluster/raft/purged", get(purged_answer))
        .route_layer(axum::middleware::from_fn_with_state(
            cluster.clone(),
            members_only,
        ))
        .layer(DefaultBodyLimit::max(codec::MAX_MESSAGE as usize))
        .with_state(cluster)
}

/// Takes Raft's messages only with the cluster token (when one is set) and over a connection
/// that presented a certificate the peer CA signed (with `--peer-ca`).
async fn members_only(
    State(cluster): State<Arc<Member>>,
    request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok());
    if !cluster.token_ok(given) {
        let why = "this cluster's messages need the header x-cluster-token with the cluster token";
        return (StatusCode::UNAUTHORIZED, why).into_response();
    }
    let certified = request.extensions().get::<MemberCertificate>().is_some();
    if cluster.needs_member_certificate() && !certified {
        let why = "this cluster's messages come only from members that present a certificate the peer CA signed";
        return (StatusCode::FORBIDDEN, why).into_response();
    }
    next.run(request).await
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    codec::decode_message(body).map_err(|e| {
        Box::new((StatusCode::BAD_REQUEST, format!("not a Raft message: {e}")).into_response())
    })
}

fn encode<T: Serialize>(value: &T) -> Response {
    match codec::encode_message(value) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn append(State(cluster): State<Arc<Member>>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(request) => encode(&cluster.raft.append_entries(request).await),
        Err(response) => *response,
    }
}

async fn vote(State(cluster): State<Arc<Member>>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(request) => encode(&cluster.raft.vote(request).await),
        Err(response) => *response,
    }
}

async fn snapshot(State(cluster): State<Arc<Member>>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(request) => encode(&cluster.raft.install_snapshot(request).await),
        Err(response) => *response,
    }
}

async fn hello_answer(State(cluster): State<Arc<Member>>) -> Response {
    let initialized = cluster.raft.is_initialized().await.unwrap_or(true);
    axum::Json(serde_json::json!({ "nodeId": cluster.id, "initialized": initialized }))
        .into_response()
}

/// How far this member has purged its files (see `raft::purge`).
async fn purged_answer(State(cluster): State<Arc<Member>>) -> Response {
    let through = cluster
        .purged_through
        .load(std::sync::atomic::Ordering::Acquire);
    axum::Json(serde_json::json!({ "nodeId": cluster.id, "purgedThrough": through }))
        .into_response()
}

/// Asks the member at `addr` how far it has purged its files; None if it does not answer.
pub(super) async fn purged_through(cluster: &Member, addr: &str) -> Option<u64> {
    let answer = get_json(cluster, addr, "/cluster/raft/purged").await?;
    answer["purgedThrough"].as_u64()
}

/// `GET path` of the member at `addr` as JSON, within a second; None if it does not answer.
async fn get_json(cluster: &Member, addr: &str, path: &str) -> Option<serde_json::Value> {
    let scheme = cluster.scheme;
    let mut request = hyper::Request::get(format!("{scheme}://{addr}{path}"));
    if let Some(token) = &cluster.token {
        request = request.header(TOKEN_HEADER, token);
    }
    let request = request.body(Full::new(Bytes::new())).ok()?;
    let call = cluster.client.request(request);
    let response = tokio::time::timeout(std::time::Duration::from_secs(1), call)
        .await
        .ok()?
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let bytes = response.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&bytes).ok()
}

/// Asks the member at `addr` whether it belongs to a cluster; None if it does not answer.
pub(super) async fn hello(cluster: &Member, addr: &str) -> Option<bool> {
    let answer = get_json(cluster, addr, "/cluster/raft/hello").await?;
    answer["initialized"].as_bool()
}

/// Where a client request is served.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    /// By this member, from what it has: health, metrics, docs, the console's files, the
    /// member's own view of the cluster.
    Local,
    /// A read of contacts: by the leader, after it confirms it leads (or here with stale=true).
    Read,
    /// A change: by the leader, through the log.
    Write,
}

fn classify(method: &Method, path: &str) -> Class {
    let data = path == "/identify"
        || path == "/backup"
        || path == "/stats"
        || path == "/blocklist"
        || path.starts_with("/erasures")
        || path.starts_with("/contacts")
        || path.starts_with("/cluster/members");
    match (data, *method == Method::GET || *method == Method::HEAD) {
        (false, _) => Class::Local,
        (true, true) => Class::Read,
        (true, false) => Class::Write,
    }
}

/// Takes `stale` out of the query (the handlers know no such parameter): whether it asked for
/// a stale read, and the URI without it (None if it was not there).
fn take_stale(uri: &Uri) -> (bool, Option<Uri>) {
    let Some(query) = uri.query() else {
        return (false, None);
    };
    let mut stale = false;
    let mut found = false;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let is = pair.starts_with("stale=") || *pair == "stale";
            if is {
                found = true;
                stale |= *pair == "stale=true" || *pair == "stale";
            }
            !is
        })
        .collect();
    if !found {
        return (false, None);
    }
    let path = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    (stale, path.parse().ok())
}

/// The layer in front of the client routes: serves a request here when this member can, or
/// forwards it to the leader and returns the leader's answer.
pub async fn route(
    State(cluster): State<Arc<Member>>,
    mut request: Request,
    next: Next,
) -> Response {
    let class = classify(request.method(), request.uri().path());
    if class == Class::Local {
        return next.run(request).await;
    }
    let (stale, without) = take_stale(request.uri());
    if let Some(uri) = without {
        *request.uri_mut() = uri;
    }
    if class == Class::Read && stale {
        return next.run(request).await;
    }
    match cluster.leader() {
        Some(leader) if leader == cluster.id => {
            if let Some(ms) = cluster.quorum_lost() {
                let why = format!("this member leads, but no majority has answered it for {ms} ms");
                return ApiError::NoLeader(why).into_response();
            }
            if class == Class::Read {
                if let Err(why) = cluster.linearize().await {
                    return ApiError::NoLeader(why).into_response();
                }
            }
            next.run(request).await
        }
        Some(leader) if !request.headers().contains_key(FORWARDED_HEADER) => {
            match cluster.addr_of(leader) {
                Some(addr) => forward(&cluster, leader, &addr, request).await,
                None => ApiError::NoLeader(format!("the address of leader {leader} is unknown"))
                    .into_response(),
            }
        }
        Some(_) => {
            ApiError::NoLeader("forwarded to a member that no longer leads".into()).into_response()
        }
        None => ApiError::NoLeader("an election is under way".into()).into_response(),
    }
}

/// Sends `request` to the leader and streams its answer back.
async fn forward(cluster: &Member, leader: u64, addr: &str, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, codec::MAX_MESSAGE as usize).await {
        Ok(bytes) => bytes,
        Err(_) => return ApiError::UnreadableBody.into_response(),
    };
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut builder = hyper::Request::builder()
        .method(parts.method)
        .uri(format!("{}://{addr}{target}", cluster.scheme));
    for (name, value) in &parts.headers {
        if name != header::HOST && name != header::CONNECTION && name != header::CONTENT_LENGTH {
            builder = builder.header(name, value);
        }
    }
    builder = builder.header(FORWARDED_HEADER, HeaderValue::from(cluster.id));
    let Ok(outgoing) = builder.body(Full::new(bytes)) else {
        return ApiError::Internal.into_response();
    };
    let call = cluster.client.request(outgoing);
    match tokio::time::timeout(cluster.forward_timeout, call).await {
        Ok(Ok(response)) => {
            let (parts, body) = response.into_parts();
            Response::from_parts(parts, Body::new(body))
        }
        Ok(Err(e)) => ApiError::NoLeader(format!(
            "the leader (node {leader} at {addr}) did not answer: {e}"
        ))
        .into_response(),
        Err(_) => ApiError::Timeout.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_sorted_by_where_they_are_served() {
        assert_eq!(classify(&Method::POST, "/identify"), Class::Write);
        assert_eq!(classify(&Method::GET, "/contacts/7"), Class::Read);
        assert_eq!(classify(&Method::DELETE, "/contacts/7"), Class::Write);
        assert_eq!(classify(&Method::GET, "/stats"), Class::Read);
        assert_eq!(classify(&Method::POST, "/erasures"), Class::Write);
        assert_eq!(classify(&Method::GET, "/erasures/3"), Class::Read);
        assert_eq!(classify(&Method::POST, "/cluster/members"), Class::Write);
        assert_eq!(classify(&Method::GET, "/cluster"), Class::Local);
        assert_eq!(classify(&Method::GET, "/readyz"), Class::Local);
        assert_eq!(classify(&Method::GET, "/console"), Class::Local);
    }

    #[test]
    fn stale_is_taken_out_of_the_query() {
        let uri: Uri = "/contacts/export?format=ndjson&stale=true".parse().unwrap();
        let (stale, rest) = take_stale(&uri);
        assert!(stale);
        assert_eq!(rest.unwrap(), "/contacts/export?format=ndjson");
        let (stale, rest) = take_stale(&"/stats?stale=true".parse().unwrap());
        assert!(stale);
        assert_eq!(rest.unwrap(), "/stats");
        let (stale, rest) = take_stale(&"/stats?stale=false".parse().unwrap());
        assert!(!stale);
        assert_eq!(rest.unwrap(), "/stats");
        assert_eq!(take_stale(&"/stats?x=1".parse().unwrap()), (false, None));
    }
}
