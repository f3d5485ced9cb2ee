//! Raft's messages between members, over their HTTP ports: `POST /cluster/raft/{append, vote,
//! snapshot}` with a bincode body, answered with openraft's result in bincode. The same
//! client forwards a follower's requests to the leader. With TLS the members call each other
//! over HTTPS (and, with `--peer-ca`, present their certificates: docs/API.md, "Exposure").

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{de::DeserializeOwned, Serialize};

use super::{Node, NodeId, TypeConfig, TOKEN_HEADER};
use crate::storage::codec;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How a member reaches its peers.
#[derive(Clone)]
pub struct Transport {
    /// HTTPS with this client side (None: plain HTTP).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Whether peers must present a certificate the peer CA signed (`--peer-ca`).
    pub member_certificates: bool,
}

impl Transport {
    pub fn plain() -> Transport {
        Transport {
            tls: None,
            member_certificates: false,
        }
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// One client, with its connection pool, for every call to the peers.
    pub fn client(&self) -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.enforce_http(false);
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let connector = match &self.tls {
            Some(config) => builder
                .with_tls_config(config.as_ref().clone())
                .https_only()
                .enable_http1()
                .wrap_connector(connector),
            // Plain HTTP only: the TLS side is never used, so it trusts nothing.
            None => builder
                .with_tls_config(
                    rustls::ClientConfig::builder_with_provider(Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
                )
                .https_or_http()
                .enable_http1()
                .wrap_connector(connector),
        };
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector)
    }
}

/// Makes a client per peer, sharing one connection pool.
#[derive(Clone)]
pub(crate) struct Factory {
    pub client: HttpClient,
    pub scheme: &'static str,
    pub token: Option<String>,
}

impl RaftNetworkFactory<TypeConfig> for Factory {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Peer {
        Peer {
            client: self.client.clone(),
            scheme: self.scheme,
            token: self.token.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

pub struct Peer {
    client: HttpClient,
    scheme: &'static str,
    token: Option<String>,
    target: NodeId,
    addr: String,
}

/// Why a call failed before an answer came.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Failed(String),
}

impl Peer {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        request: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body =
            codec::encode_message(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let answer = tokio::time::timeout(ttl, self.post(path, body))
            .await
            .map_err(|_| {
                CallError::Unreachable(format!(
                    "no answer from node {} within {ttl:?}",
                    self.target
                ))
            })
            .and_then(|r| r);
        let bytes = match answer {
            Ok(bytes) => bytes,
            Err(e @ CallError::Unreachable(_)) => {
                return Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e @ CallError::Failed(_)) => return Err(RPCError::Network(NetworkError::new(&e))),
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            codec::decode_message(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> Result<Bytes, CallError> {
        let uri = format!("{}://{}/cluster/raft/{path}", self.scheme, self.addr);
        let mut request = hyper::Request::post(uri)
            .header(hyper::header::CONTENT_TYPE, "application/octet-stream");
        if let Some(token) = &self.token {
            request = request.header(TOKEN_HEADER, token);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Failed(e.to_string()))?;
        let response = self.client.request(request).await.map_err(|e| {
            CallError::Unreachable(format!("node {} at {}: {e}", self.target, self.addr))
        })?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| CallError::Unreachable(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
            return Err(CallError::Failed(format!(
                "node {} answered {status}: {text}",
                self.target
            )));
        }
        Ok(bytes)
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call("append", &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("snapshot", &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call("vote", &rpc, option.hard_ttl()).await
    }
}
