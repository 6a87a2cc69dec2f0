//! The peer network's simulator twin: calls reach the handler and come back; a refusal
//! comes back as one; a clogged link or a dead node is a timeout or unreachable, never an
//! answer; a healed link works again.
#![cfg(madsim)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use madsim::runtime::{Handle, Runtime};
use t4::env::{peer_methods, PeerError, PeerHandler, PeerNet};
use t4_sim::peer::{peer_url, serve_peers, SimPeers};

/// Answers Append with the request reversed; refuses Forward.
struct Echo;

#[async_trait::async_trait]
impl PeerHandler for Echo {
    async fn handle(&self, method: &str, request: Bytes) -> Result<Bytes, String> {
        match method {
            peer_methods::APPEND => Ok(request.iter().rev().copied().collect::<Vec<u8>>().into()),
            other => Err(format!("{other}: not here")),
        }
    }
}

#[test]
fn calls_cross_the_simulated_network_and_faults_are_never_answers() {
    let runtime = Runtime::with_seed_and_config(7, madsim::Config::default());
    runtime.block_on(async {
        let handle = Handle::current();
        let server_ip: IpAddr = [10, 0, 9, 1].into();
        let server = handle
            .create_node()
            .name("server")
            .ip(server_ip)
            .init(|| async {
                serve_peers(Arc::new(Echo)).await.unwrap();
            })
            .build();
        let client = handle.create_node().name("client").ip([10, 0, 9, 2].into()).build();
        let url = peer_url(server_ip);
        let (server_id, client_id) = (server.id(), client.id());
        client
            .spawn(async move {
                madsim::time::sleep(Duration::from_millis(10)).await;
                let peers = SimPeers::new(Duration::from_millis(500)).await.unwrap();
                let answer = peers.call(&url, peer_methods::APPEND, Bytes::from_static(b"abc")).await.unwrap();
                assert_eq!(&answer[..], b"cba");
                match peers.call(&url, peer_methods::FORWARD, Bytes::new()).await {
                    Err(PeerError::Refused(why)) => assert_eq!(why, "Forward: not here"),
                    other => panic!("a refusal must come back as one: {other:?}"),
                }
                let net = madsim::net::NetSim::current();
                net.clog_link(client_id, server_id);
                assert_eq!(peers.call(&url, peer_methods::APPEND, Bytes::from_static(b"x")).await, Err(PeerError::Timeout));
                net.unclog_link(client_id, server_id);
                assert_eq!(&peers.call(&url, peer_methods::APPEND, Bytes::from_static(b"xy")).await.unwrap()[..], b"yx");
                Handle::current().kill(server_id);
                let dead = peers.call(&url, peer_methods::APPEND, Bytes::from_static(b"x")).await;
                assert!(matches!(dead, Err(PeerError::Timeout | PeerError::Unreachable(_))), "{dead:?}");
            })
            .await
            .unwrap();
    });
}
