//! The Watch service: one bidirectional stream carrying many watches.
//!
//! Each watch gets a pump task that pulls revisions from its [`WatchStream`] and sends
//! responses into the stream's outbound queue, bounded in responses and in bytes; a slow
//! client slows only its own
//! pumps (the node's writers never wait for watchers). A progress notification for revision
//! R is sent only once every watch it covers has handed out all its events up to R, so a
//! client never hears "nothing below R is missing" while something is.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use t4_proto::etcdserverpb::watch_create_request::FilterType;
use t4_proto::etcdserverpb::watch_request::RequestUnion;
use t4_proto::etcdserverpb::watch_server::Watch;
use t4_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use t4_proto::mvccpb::Event;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use t4::api::EtcdCore;
use t4::auth::gate::{Caller, Credentials};
use t4::auth::permissions::Access;
use t4::error::Error;
use t4::watch::{WatchOptions, WatchStream};

use super::Service;

/// Responses queued for one client stream before pumps wait for it...
const WATCH_RESPONSES_QUEUED_MAX: usize = 256;
/// ...and bytes of them (one response larger than this still goes, alone): what a client
/// that does not read can hold of the server's memory, beside HTTP/2's window in flight.
const WATCH_BYTES_QUEUED_MAX: usize = 4 << 20;
/// Events merged into one response (more revisions wait for the next one).
const WATCH_EVENTS_PER_RESPONSE_MAX: usize = 1000;
/// Bytes of events merged into one response: a revision joins a response only if the
/// response stays under it (one revision larger than this still goes whole, or in fragments
/// when the watch asked). Below the 4 MiB gRPC clients accept by default (Rust's
/// etcd-client, grpc-java), with room for the response's own framing.
const WATCH_BYTES_PER_RESPONSE_MAX: usize = (4 << 20) - (64 << 10);
/// Watches on one stream.
const WATCHES_PER_STREAM_MAX: usize = 10_000;
/// How long a RequestProgress waits for lagging watches before giving up on that request.
const PROGRESS_WAIT_MAX: Duration = Duration::from_secs(5);
const PROGRESS_POLL: Duration = Duration::from_millis(2);

/// The response id of a progress notification that answers RequestProgress (etcd's).
const PROGRESS_WATCH_ID: i64 = -1;

/// Watch settings of the server.
#[derive(Debug, Clone, Copy)]
pub struct WatchConfig {
    /// Interval of progress notifications for watches that asked for them (etcd: 10 min).
    pub progress_notify_interval: Duration,
    /// Above this a response is split when the watch asked for fragments.
    pub fragment_bytes_max: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self { progress_notify_interval: Duration::from_secs(600), fragment_bytes_max: 1536 * 1024 }
    }
}

/// A response in the outbound queue, holding its bytes' room until the stream takes it.
type Queued = (Result<WatchResponse, Status>, tokio::sync::OwnedSemaphorePermit);

/// The sending side of a stream's outbound queue.
#[derive(Clone)]
struct Outbound {
    responses: mpsc::Sender<Queued>,
    /// Room for [`WATCH_BYTES_QUEUED_MAX`], in KiB.
    room: Arc<tokio::sync::Semaphore>,
}

/// The stream's client went away.
struct Gone;

impl Outbound {
    fn new() -> (Self, impl futures::Stream<Item = Result<WatchResponse, Status>>) {
        let (responses, queued) = mpsc::channel(WATCH_RESPONSES_QUEUED_MAX);
        let room = Arc::new(tokio::sync::Semaphore::new(WATCH_BYTES_QUEUED_MAX >> 10));
        // The room is given back as the stream hands each response to HTTP/2.
        let stream = ReceiverStream::new(queued).map(|(response, _room)| response);
        (Self { responses, room }, stream)
    }

    /// Waits for room in the queue, then queues `response`.
    async fn send(&self, response: Result<WatchResponse, Status>) -> Result<(), Gone> {
        let kib = response.as_ref().map_or(1, |response| response.encoded_len().div_ceil(1024)).clamp(1, WATCH_BYTES_QUEUED_MAX >> 10);
        let room = self.room.clone().acquire_many_owned(kib as u32).await.map_err(|_| Gone)?;
        self.responses.send((response, room)).await.map_err(|_| Gone)
    }
}

#[tonic::async_trait]
impl Watch for Service {
    type WatchStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<WatchResponse, Status>> + Send>>;

    async fn watch(&self, request: Request<Streaming<WatchRequest>>) -> Result<Response<Self::WatchStream>, Status> {
        let (outbound, responses) = Outbound::new();
        let credentials = super::credentials(&request);
        let session = Session {
            core: self.core.clone(),
            config: self.watch,
            outbound,
            watches: BTreeMap::new(),
            next_id: 0,
            credentials,
            progress_wanted: Arc::default(),
        };
        tokio::spawn(session.run(request.into_inner()));
        Ok(Response::new(Box::pin(responses)))
    }
}

struct WatchEntry {
    pump: JoinHandle<()>,
    delivered: Arc<AtomicI64>,
}

struct Session {
    core: EtcdCore,
    config: WatchConfig,
    outbound: Outbound,
    watches: BTreeMap<i64, WatchEntry>,
    next_id: i64,
    /// The stream's sender: each watch is checked when created, against the auth state of
    /// that moment (read access to its whole range).
    credentials: Credentials,
    /// The newest revision a RequestProgress asked about that is not answered yet; one task
    /// per stream answers them (requests arriving while it waits share its answer).
    progress_wanted: Arc<std::sync::Mutex<Option<i64>>>,
}

impl Session {
    async fn run(mut self, mut incoming: Streaming<WatchRequest>) {
        while let Some(request) = incoming.next().await {
            let Ok(request) = request else { break };
            self.watches.retain(|_, entry| !entry.pump.is_finished());
            let sent = match request.request_union {
                Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
                Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id).await,
                Some(RequestUnion::ProgressRequest(_)) => {
                    self.request_progress();
                    true
                }
                None => true,
            };
            if !sent {
                break;
            }
        }
        for entry in self.watches.values() {
            entry.pump.abort();
        }
    }

    fn response(&self, watch_id: i64) -> WatchResponse {
        WatchResponse { header: self.core.header(self.core.node().current_revision()), watch_id, ..Default::default() }
    }

    async fn send(&self, response: WatchResponse) -> bool {
        self.outbound.send(Ok(response)).await.is_ok()
    }

    async fn create(&mut self, create: WatchCreateRequest) -> bool {
        let watch_id = if create.watch_id != 0 { create.watch_id } else { self.allocate_id() };
        let refusal = if self.watches.contains_key(&watch_id) {
            Some("mvcc: duplicate watch ID provided on the WatchStream".to_string())
        } else if self.watches.len() >= WATCHES_PER_STREAM_MAX {
            Some(format!("t4: at most {WATCHES_PER_STREAM_MAX} watches per stream"))
        } else {
            None
        };
        let options = WatchOptions {
            key: if create.key.is_empty() { vec![0] } else { create.key.clone() },
            range_end: create.range_end.clone(),
            start_revision: create.start_revision,
            prev_kv: create.prev_kv,
            filter_puts: create.filters.contains(&(FilterType::Noput as i32)),
            filter_deletes: create.filters.contains(&(FilterType::Nodelete as i32)),
        };
        let permitted = self
            .core
            .caller(&self.credentials)
            .and_then(|caller| caller.require(Access::Read, &options.key, &options.range_end).map(|()| caller))
            .map_err(|error| refusal_reason(&error));
        let watching = match refusal {
            Some(reason) => Err(reason),
            None => permitted
                .and_then(|caller| self.core.node().watch(options).map(|stream| (caller, stream)).map_err(|error| error.to_string())),
        };
        let (caller, stream) = match watching {
            Ok(watching) => watching,
            Err(reason) => {
                let response = WatchResponse { created: true, canceled: true, cancel_reason: reason, ..self.response(-1) };
                return self.send(response).await;
            }
        };
        // The created response goes out before any event of this watch can.
        if !self.send(WatchResponse { created: true, ..self.response(watch_id) }).await {
            return false;
        }
        let delivered = stream.delivered();
        let pump = Pump { core: self.core.clone(), config: self.config, outbound: self.outbound.clone(), watch_id, create, caller };
        let pump = tokio::spawn(pump.run(stream));
        self.watches.insert(watch_id, WatchEntry { pump, delivered });
        true
    }

    fn allocate_id(&mut self) -> i64 {
        while self.watches.contains_key(&self.next_id) {
            self.next_id += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    async fn cancel(&mut self, watch_id: i64) -> bool {
        let Some(entry) = self.watches.remove(&watch_id) else { return true };
        entry.pump.abort();
        let _ = entry.pump.await;
        self.send(WatchResponse { canceled: true, ..self.response(watch_id) }).await
    }

    /// Answers RequestProgress once every watch on the stream has caught up to the
    /// revision current now. At most one task per stream waits: a request arriving while it
    /// does raises the revision it waits for, and one answer serves both.
    fn request_progress(&self) {
        let revision = self.core.node().current_revision();
        {
            let mut wanted = self.progress_wanted.lock().expect("progress lock");
            let waiting = wanted.is_some();
            *wanted = Some(wanted.map_or(revision, |wanted| wanted.max(revision)));
            if waiting {
                return;
            }
        }
        let cursors: Vec<Arc<AtomicI64>> = self.watches.values().map(|entry| entry.delivered.clone()).collect();
        let (core, outbound, wanted) = (self.core.clone(), self.outbound.clone(), self.progress_wanted.clone());
        tokio::spawn(async move {
            let mut answered = i64::MIN;
            loop {
                let revision = {
                    let mut wanted = wanted.lock().expect("progress lock");
                    match *wanted {
                        Some(revision) if revision > answered => revision,
                        _ => {
                            *wanted = None;
                            return;
                        }
                    }
                };
                let mut waited = Duration::ZERO;
                while cursors.iter().any(|cursor| cursor.load(Ordering::SeqCst) <= revision) && waited < PROGRESS_WAIT_MAX {
                    tokio::time::sleep(PROGRESS_POLL).await;
                    waited += PROGRESS_POLL;
                }
                if waited < PROGRESS_WAIT_MAX {
                    let response = WatchResponse { header: core.header(revision), watch_id: PROGRESS_WATCH_ID, ..Default::default() };
                    let _ = outbound.send(Ok(response)).await;
                }
                answered = revision;
            }
        });
    }
}

/// Why a watch is refused or cancelled for its permissions: etcd puts the whole gRPC error
/// text in the reason, and etcdctl prints it.
fn refusal_reason(error: &Error) -> String {
    let (code, message) = super::errors::code_and_message(error);
    format!("rpc error: code = {} desc = {message}", go_code_name(code))
}

/// How often a watch checks that its sender may still read its range, when auth changed.
const PERMISSION_RECHECK: Duration = Duration::from_secs(1);

/// A gRPC code as grpc-go spells it in error texts.
fn go_code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::PermissionDenied => "PermissionDenied",
        tonic::Code::InvalidArgument => "InvalidArgument",
        tonic::Code::Unauthenticated => "Unauthenticated",
        tonic::Code::FailedPrecondition => "FailedPrecondition",
        tonic::Code::ResourceExhausted => "ResourceExhausted",
        tonic::Code::Unavailable => "Unavailable",
        _ => "Unknown",
    }
}

/// Moves one watch's events to the client.
struct Pump {
    core: EtcdCore,
    config: WatchConfig,
    outbound: Outbound,
    watch_id: i64,
    create: WatchCreateRequest,
    /// Who opened the watch, under the auth state its permission was last checked against.
    caller: Caller,
}

impl Pump {
    async fn run(mut self, mut stream: WatchStream) {
        let mut progress = tokio::time::interval(self.config.progress_notify_interval);
        progress.tick().await;
        let mut recheck = tokio::time::interval(PERMISSION_RECHECK);
        recheck.tick().await;
        loop {
            tokio::select! {
                item = stream.next() => {
                    if !self.still_permitted().await {
                        return;
                    }
                    let keep_going = match item {
                        Some(Ok(first)) => {
                            let mut events = first.events;
                            let mut bytes: usize = events.iter().map(Message::encoded_len).sum();
                            while let Some(more) = stream.try_next() {
                                let more_bytes: usize = more.events.iter().map(Message::encoded_len).sum();
                                if events.len() + more.events.len() > WATCH_EVENTS_PER_RESPONSE_MAX || bytes + more_bytes > WATCH_BYTES_PER_RESPONSE_MAX {
                                    stream.put_back(more);
                                    break;
                                }
                                bytes += more_bytes;
                                events.extend(more.events);
                            }
                            self.send_events(events).await
                        }
                        Some(Err(error)) => {
                            self.send_cancel(error).await;
                            false
                        }
                        None => false,
                    };
                    if !keep_going {
                        return;
                    }
                }
                _ = recheck.tick() => {
                    if !self.still_permitted().await {
                        return;
                    }
                }
                _ = progress.tick(), if self.create.progress_notify => {
                    if !self.still_permitted().await {
                        return;
                    }
                    let revision = self.core.node().current_revision();
                    if stream.next_revision() > revision && !self.send(self.response(revision, Vec::new(), false)).await {
                        return;
                    }
                }
            }
        }
    }

    fn response(&self, revision: i64, events: Vec<Event>, fragment: bool) -> WatchResponse {
        WatchResponse { header: self.core.header(revision), watch_id: self.watch_id, events, fragment, ..Default::default() }
    }

    /// Whether the watch's sender may still read its range under the auth state of now (a
    /// role or permission change, a password change or user deletion, `auth enable`). If
    /// not, the watch is cancelled with the error a new watch would get, before any further
    /// event goes out.
    async fn still_permitted(&mut self) -> bool {
        let state = self.core.node().auth_state();
        if state.revision == self.caller.state().revision && state.enabled == self.caller.state().enabled {
            return true;
        }
        let key = if self.create.key.is_empty() { vec![0] } else { self.create.key.clone() };
        let checked =
            self.caller.under(state).and_then(|caller| caller.require(Access::Read, &key, &self.create.range_end).map(|()| caller));
        match checked {
            Ok(caller) => {
                self.caller = caller;
                true
            }
            Err(error) => {
                let response = WatchResponse {
                    canceled: true,
                    cancel_reason: refusal_reason(&error),
                    ..self.response(self.core.node().current_revision(), Vec::new(), false)
                };
                let _ = self.send(response).await;
                false
            }
        }
    }

    async fn send(&self, response: WatchResponse) -> bool {
        self.outbound.send(Ok(response)).await.is_ok()
    }

    async fn send_events(&self, events: Vec<Event>) -> bool {
        let revision = self.core.node().current_revision();
        let whole = self.response(revision, events, false);
        if !self.create.fragment || whole.encoded_len() <= self.config.fragment_bytes_max {
            return self.send(whole).await;
        }
        let fragments = split(whole.events, self.config.fragment_bytes_max);
        let count = fragments.len();
        for (index, events) in fragments.into_iter().enumerate() {
            if !self.send(self.response(revision, events, index + 1 < count)).await {
                return false;
            }
        }
        true
    }

    async fn send_cancel(&self, error: Error) {
        let compact_revision = match &error {
            Error::Compacted { compact_revision } => *compact_revision,
            _ => 0,
        };
        let response = WatchResponse {
            canceled: true,
            compact_revision,
            cancel_reason: error.to_string(),
            ..self.response(self.core.node().current_revision(), Vec::new(), false)
        };
        let _ = self.send(response).await;
    }
}

/// Cuts events into runs whose encoded size stays under `bytes_max` (an event larger than
/// that goes alone).
fn split(events: Vec<Event>, bytes_max: usize) -> Vec<Vec<Event>> {
    let mut fragments = vec![Vec::new()];
    let mut size = 0;
    for event in events {
        let event_size = event.encoded_len() + 8;
        let current = fragments.last_mut().expect("non-empty");
        if !current.is_empty() && size + event_size > bytes_max {
            fragments.push(Vec::new());
            size = 0;
        }
        size += event_size;
        fragments.last_mut().expect("non-empty").push(event);
    }
    fragments
}
