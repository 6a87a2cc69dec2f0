//! SimNet: clients reach a node's `EtcdCore` over madsim's network, each request and answer
//! prost-encoded as on the wire, so the nemesis can cut links between a client and a node
//! (madsim's `clog_link`) and a request or its answer is then lost.
//!
//! A request is `[method][reply tag, 8 bytes LE][prost body]`, sent with tag 0 to the node's
//! port; the answer comes back under the request's reply tag as `[0][prost body]`, or
//! `[1 | 2][message]` for an error after which the outcome is unknown (1: the node failed or
//! closed) or which changed nothing (2: a refusal). No answer within the client's timeout is
//! an unknown outcome, as a gRPC deadline is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use madsim::net::Endpoint;
use prost::Message;
use t4::api::EtcdCore;
use t4::auth::gate::Credentials;

/// The port a node serves clients on.
pub const CLIENT_PORT: u16 = 2379;
const REQUEST_TAG: u64 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Method {
    Range = 1,
    Put = 2,
    DeleteRange = 3,
    Txn = 4,
}

impl Method {
    fn from_byte(byte: u8) -> Option<Self> {
        [Method::Range, Method::Put, Method::DeleteRange, Method::Txn].into_iter().find(|method| *method as u8 == byte)
    }
}

/// Why a call has no answer to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// It may or may not have taken effect (no answer, or the node failed).
    Unknown(String),
    /// It was refused and changed nothing.
    Refused(String),
}

/// Serves `core` on this madsim node until the node dies.
pub async fn serve(core: Arc<EtcdCore>) -> std::io::Result<()> {
    let endpoint = Arc::new(Endpoint::bind(("0.0.0.0", CLIENT_PORT)).await?);
    loop {
        let (payload, from) = endpoint.recv_from_raw(REQUEST_TAG).await?;
        let Ok(request) = payload.downcast::<Vec<u8>>() else { continue };
        let (core, endpoint) = (core.clone(), endpoint.clone());
        tokio::spawn(async move {
            if request.len() < 9 {
                return;
            }
            let reply_tag = u64::from_le_bytes(request[1..9].try_into().expect("8 bytes"));
            let answer = handle(&core, request[0], &request[9..]).await;
            let _ = endpoint.send_to_raw(from, reply_tag, Box::new(answer)).await;
        });
    }
}

async fn handle(core: &EtcdCore, method: u8, body: &[u8]) -> Vec<u8> {
    let credentials = &Credentials::default();
    let outcome: t4::Result<Vec<u8>> = match Method::from_byte(method) {
        Some(Method::Range) => serve_one(body, |request| core.range(credentials, request)).await,
        Some(Method::Put) => serve_one(body, |request| core.put(credentials, request)).await,
        Some(Method::DeleteRange) => serve_one(body, |request| core.delete_range(credentials, request)).await,
        Some(Method::Txn) => serve_one(body, |request| core.txn(credentials, request)).await,
        None => Err(t4::Error::InvalidArgument(format!("unknown method {method}"))),
    };
    match outcome {
        Ok(body) => [vec![0], body].concat(),
        Err(error) => {
            let code = if crate::history::outcome_unknown_after(&error) { 1 } else { 2 };
            [vec![code], error.to_string().into_bytes()].concat()
        }
    }
}

/// Decodes a request, calls `call`, encodes its answer.
async fn serve_one<Request, Response, Call>(body: &[u8], call: impl FnOnce(Request) -> Call) -> t4::Result<Vec<u8>>
where
    Request: Message + Default,
    Response: Message,
    Call: std::future::Future<Output = t4::Result<Response>>,
{
    let request = Request::decode(body).map_err(|error| t4::Error::InvalidArgument(format!("decode: {error}")))?;
    call(request).await.map(|response| response.encode_to_vec())
}

/// A client's end: one endpoint, a reply tag per call.
pub struct Client {
    endpoint: Endpoint,
    next_tag: u64,
    timeout: Duration,
}

impl Client {
    pub async fn new(timeout: Duration) -> std::io::Result<Self> {
        Ok(Self { endpoint: Endpoint::bind("0.0.0.0:0").await?, next_tag: 1, timeout })
    }

    /// Sends `request` to the node at `server` and waits (bounded) for its answer.
    pub async fn call<Response: Message + Default>(
        &mut self,
        server: SocketAddr,
        method: Method,
        request: &impl Message,
    ) -> Result<Response, CallError> {
        let tag = self.next_tag;
        self.next_tag += 1;
        let mut bytes = vec![method as u8];
        bytes.extend_from_slice(&tag.to_le_bytes());
        request.encode(&mut bytes).expect("a Vec grows");
        if let Err(error) = self.endpoint.send_to_raw(server, REQUEST_TAG, Box::new(bytes)).await {
            // Not sent at all (the address is not bound: the node is down).
            return Err(CallError::Refused(format!("send: {error}")));
        }
        let answer = match madsim::time::timeout(self.timeout, self.endpoint.recv_from_raw(tag)).await {
            Ok(Ok((payload, _))) => payload.downcast::<Vec<u8>>().map_err(|_| CallError::Unknown("not bytes".into()))?,
            Ok(Err(error)) => return Err(CallError::Unknown(format!("receive: {error}"))),
            Err(_) => return Err(CallError::Unknown("no answer before the deadline".into())),
        };
        match answer.split_first() {
            Some((0, body)) => Response::decode(body).map_err(|error| CallError::Unknown(format!("decode: {error}"))),
            Some((1, message)) => Err(CallError::Unknown(String::from_utf8_lossy(message).into_owned())),
            Some((_, message)) => Err(CallError::Refused(String::from_utf8_lossy(message).into_owned())),
            None => Err(CallError::Unknown("empty answer".into())),
        }
    }
}
