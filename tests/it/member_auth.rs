//! Members must authenticate (docs/API.md, "Exposure"): a member reachable beyond loopback
//! refuses to start without `--cluster-token` or `--peer-ca`, and a Raft message without the
//! token is refused however well-formed it is.

use std::time::Duration;

use identity_engine::raft::TypeConfig;
use identity_engine::storage::codec::encode_message;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::Vote;

use crate::cluster_support::{Cluster, Options};
use crate::common::request;

#[test]
fn a_member_on_a_public_address_without_member_authentication_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_identity-engine"))
        .args([
            "--addr",
            "0.0.0.0:0",
            "--node-id",
            "1",
            "--peers",
            "1=127.0.0.1:4000",
        ])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("runs");
    assert!(!output.status.success(), "it refused");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("--cluster-token") && said.contains("--peer-ca"),
        "names the options: {said}"
    );
    assert!(said.contains("0.0.0.0:0"), "names the address: {said}");
    assert!(!data.exists(), "refused before it made or opened anything");
}

#[test]
fn forged_raft_messages_without_the_cluster_token_are_refused_and_change_nothing() {
    let cluster = Cluster::start(
        1,
        Options {
            token: Some("t0ken".into()),
            ..Options::default()
        },
    );
    cluster.wait_for_leader(&[1], Duration::from_secs(20));
    let node = cluster.node(1);
    let term = || node.status().unwrap()["term"].as_u64().unwrap();
    let before = term();
    // A candidate, and a leader, from far in the future: obeyed, they would depose the leader.
    let vote = VoteRequest::<u64>::new(Vote::new(before + 100, 2), None);
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(before + 100, 2),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    };
    let vote = encode_message(&vote).unwrap();
    let append = encode_message(&append).unwrap();
    for (path, body) in [
        ("/cluster/raft/vote", &vote),
        ("/cluster/raft/append", &append),
    ] {
        for headers in [&[][..], &[("x-cluster-token", "guess")][..]] {
            let answer = request(node.addr, "POST", path, body, headers);
            assert_eq!(answer.status, 401, "{path} {headers:?}: {}", answer.text);
            assert!(answer.text.contains("x-cluster-token"), "{}", answer.text);
        }
    }
    let status = node.status().unwrap();
    assert_eq!(status["term"].as_u64(), Some(before), "{status}");
    assert_eq!(status["role"], "leader", "{status}");

    // The same messages with the token are taken: what refused them was the token alone.
    let token = [("x-cluster-token", "t0ken")];
    let taken = request(node.addr, "POST", "/cluster/raft/vote", &vote, &token);
    assert_eq!(taken.status, 200, "{}", taken.text);
    let taken = request(node.addr, "POST", "/cluster/raft/append", &append, &token);
    assert_eq!(taken.status, 200, "{}", taken.text);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while term() < before + 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "the forged leader's term was never taken"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
