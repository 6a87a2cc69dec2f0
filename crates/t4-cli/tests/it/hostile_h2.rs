//! Garbage, truncated and abusive HTTP/2 on the real `t4` and `s4` binaries: each bad
//! connection is closed (or ignored) and other clients keep being served (issue 15,
//! docs/robustness.md "Hostile input").

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::server::T4Process;
use t4_testkit::s4::LimitedS4;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A header block: the static-table `:method` (index 3 POST, 2 GET) and `:scheme http`,
/// then literal `:path`, `:authority` and extra headers, none Huffman-coded.
fn header_block(post: bool, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut block = vec![if post { 0x83 } else { 0x82 }, 0x86];
    let literal = |block: &mut Vec<u8>, index: u8, value: &str| {
        block.push(index); // literal without indexing, name from the static table
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    };
    literal(&mut block, 0x04, path);
    literal(&mut block, 0x01, "localhost");
    for (name, value) in extra {
        block.push(0x00); // literal without indexing, new name
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// The whole frames at the start of a server's bytes: (kind, flags, payload).
fn frames(seen: &[u8]) -> Vec<(u8, u8, &[u8])> {
    let mut frames = Vec::new();
    let mut at = 0;
    while seen.len() >= at + 9 {
        let len = u32::from_be_bytes([0, seen[at], seen[at + 1], seen[at + 2]]) as usize;
        let Some(payload) = seen.get(at + 9..at + 9 + len) else { break };
        frames.push((seen[at + 3], seen[at + 4], payload));
        at += 9 + len;
    }
    frames
}

/// Pseudo-random bytes, the same every run.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// One bad client and what the server must do with its connection.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    /// The server must close the connection (with or without a GOAWAY first); otherwise it
    /// may keep it, but must keep serving others.
    closes: bool,
}

/// The cases, with `request` a valid header block for the server under test.
fn cases(request: &[u8]) -> Vec<Case> {
    let opened = |rest: Vec<u8>| [PREFACE, &frame(SETTINGS, 0, 0, &[]), &rest].concat();
    let mut rapid_reset = Vec::new();
    for stream in (1..10_000u32).step_by(2) {
        rapid_reset.extend(frame(HEADERS, END_HEADERS, stream, request));
        rapid_reset.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes())); // CANCEL
    }
    let mut continuation_flood = frame(HEADERS, 0, 1, request);
    // One header repeated without end: the header list grows past any bound.
    let repeated = [&[0x00, 5][..], b"x-big", &[120], &[b'v'; 120]].concat().repeat(8);
    for _ in 0..4_000 {
        continuation_flood.extend(frame(CONTINUATION, 0, 1, &repeated));
    }
    let mut pings = Vec::new();
    for i in 0..10_000u64 {
        pings.extend(frame(PING, 0, 0, &i.to_be_bytes()));
    }
    vec![
        Case { name: "half a preface, then nothing", bytes: PREFACE[..12].to_vec(), closes: true },
        Case { name: "random bytes after the preface", bytes: [PREFACE, &noise(64 * 1024)].concat(), closes: true },
        Case { name: "a frame claiming 16 MiB, then nothing", bytes: opened(vec![0xff, 0xff, 0xff, DATA, 0, 0, 0, 0, 1]), closes: true },
        Case { name: "SETTINGS of a length not a multiple of 6", bytes: opened(frame(SETTINGS, 0, 0, &[0, 1, 0, 0, 0])), closes: true },
        Case { name: "DATA on stream 0", bytes: opened(frame(DATA, END_STREAM, 0, b"data")), closes: true },
        Case { name: "HEADERS of undecodable HPACK", bytes: opened(frame(HEADERS, END_HEADERS, 1, &noise(300))), closes: true },
        Case { name: "WINDOW_UPDATE of 0 on the connection", bytes: opened(frame(WINDOW_UPDATE, 0, 0, &0u32.to_be_bytes())), closes: true },
        Case { name: "a CONTINUATION flood (header list without end)", bytes: opened(continuation_flood), closes: true },
        Case { name: "5,000 streams opened and reset at once (rapid reset)", bytes: opened(rapid_reset), closes: false },
        Case { name: "10,000 PINGs", bytes: opened(pings), closes: false },
    ]
}

/// Sends the case on its own connection; true if the server closed it within 15 s.
async fn closed_by_server(addr: &str, case: &Case) -> bool {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may close while we write: that is one of the right answers.
    let _ = tokio::time::timeout(Duration::from_secs(15), stream.write_all(&case.bytes)).await;
    let mut seen = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    let goaway = frames(&seen).iter().any(|(kind, _, _)| *kind == GOAWAY);
    eprintln!("{}: closed {}, GOAWAY {goaway}, {} bytes answered", case.name, read.is_ok(), seen.len());
    read.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_abusive_http2_leave_t4_serving() {
    let mut t4 = T4Process::start(&[]).await;
    let mut client = etcd_client::Client::connect([t4.endpoint.clone()], None).await.unwrap();
    let request = header_block(true, "/etcdserverpb.KV/Range", &[("content-type", "application/grpc"), ("te", "trailers")]);
    for (i, case) in cases(&request).iter().enumerate() {
        tracing::info!("--- {}", case.name);
        let closed = closed_by_server(&t4.endpoint, case).await;
        assert!(closed || !case.closes, "t4 kept the connection of: {}", case.name);
        assert!(t4.alive(), "t4 exited after: {}", case.name);
        let key = format!("/after/{i}");
        let put = tokio::time::timeout(Duration::from_secs(10), client.put(key.as_str(), case.name, None)).await;
        assert!(matches!(put, Ok(Ok(_))), "t4 stopped serving others after: {} ({put:?})", case.name);
        let read = client.get(key.as_str(), None).await.unwrap();
        assert_eq!(read.kvs()[0].value(), case.name.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_abusive_http2_leave_s4_serving() {
    let mut s4 = LimitedS4::start(1024, "").await;
    let endpoint = s4.addr.to_string();
    let request = header_block(false, "/health", &[]);
    for case in cases(&request) {
        tracing::info!("--- {}", case.name);
        let closed = closed_by_server(&endpoint, &case).await;
        assert!(closed || !case.closes, "s4 kept the connection of: {}", case.name);
        assert!(s4.alive(), "s4 exited after: {}", case.name);
        assert!(s4.answers_within(Duration::from_secs(10)).await, "s4 stopped serving others after: {}", case.name);
    }
}

/// What a server did with a client that pings every `every`: the GOAWAY's error code and
/// debug text, and how many pings it had acknowledged by then (None: no GOAWAY in `within`).
async fn ping_every(addr: &str, every: Duration, within: Duration) -> Option<(u32, String, usize)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(&[PREFACE, &frame(SETTINGS, 0, 0, &[])].concat()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let pinger = tokio::spawn(async move {
        for i in 0u64.. {
            if writer.write_all(&frame(PING, 0, 0, &i.to_be_bytes())).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    let mut seen = Vec::new();
    let mut buffer = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + within;
    let outcome = loop {
        let frames = frames(&seen);
        let acks = frames.iter().filter(|(kind, flags, _)| *kind == PING && flags & 1 == 1).count();
        let goaway = frames.iter().find(|(kind, _, _)| *kind == GOAWAY).map(|(_, _, payload)| {
            (u32::from_be_bytes(payload[4..8].try_into().unwrap()), String::from_utf8_lossy(&payload[8..]).to_string())
        });
        if let Some((code, debug)) = goaway {
            break Some((code, debug, acks));
        }
        match tokio::time::timeout_at(deadline, reader.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buffer[..n]),
            _ => break None,
        }
    };
    pinger.abort();
    outcome
}

/// `--grpc-keepalive-min-time`: a client pinging ten times a second is sent GOAWAY
/// ENHANCE_YOUR_CALM "too_many_pings" after the same number of pings by t4 as by a real
/// etcd 3.4; under a lower minimum the same client is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_ping_too_often_are_sent_away_as_by_etcd() {
    const ENHANCE_YOUR_CALM: u32 = 0xb;
    let etcd = crate::etcd_process::EtcdProcess::start().await;
    let etcd_answer = ping_every(&etcd.endpoint, Duration::from_millis(100), Duration::from_secs(10)).await;
    let t4 = T4Process::start(&[]).await;
    let t4_answer = ping_every(&t4.endpoint, Duration::from_millis(100), Duration::from_secs(10)).await;
    eprintln!("pings every 100 ms under the default 5 s minimum: etcd {etcd_answer:?}, t4 {t4_answer:?}");
    let (code, debug, _) = etcd_answer.clone().expect("etcd sends such a client away");
    assert_eq!((code, debug.as_str()), (ENHANCE_YOUR_CALM, "too_many_pings"));
    assert_eq!(t4_answer, etcd_answer, "t4 answers the ping flood as etcd does");

    let relaxed = T4Process::start(&["--grpc-keepalive-min-time", "50ms"]).await;
    let left_alone = ping_every(&relaxed.endpoint, Duration::from_millis(100), Duration::from_secs(3)).await;
    assert_eq!(left_alone, None, "pings slower than the minimum are no strikes");
}
