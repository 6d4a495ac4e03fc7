//! Dashboards for `scripts/bench.sh dashboard`: opens N WebSockets on `/ws` from one process (awc),
//! reads every frame for the given seconds, then prints what each got.
//!
//!     cargo run --example dashboard_clients -- ws://127.0.0.1:8080/ws 100 30 [token]
//!
//! Prints `connected <n>` once every socket is open (the bench starts measuring then), and at the
//! end `clients=<n> frames=<total> min_frames=<min> closed_early=<n> bytes=<total>`.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};

#[derive(Default)]
struct Tally {
    connected: usize,
    frames: Vec<u64>,
    closed_early: usize,
    bytes: u64,
}

#[actix_rt::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: dashboard_clients <ws://host:port/ws> <clients> <seconds> [token]";
    let url = args.get(1).expect(usage).clone();
    let clients: usize = args.get(2).and_then(|n| n.parse().ok()).expect(usage);
    let seconds: u64 = args.get(3).and_then(|n| n.parse().ok()).expect(usage);
    let token = args.get(4).cloned();
    let tally = Rc::new(RefCell::new(Tally::default()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds) + Duration::from_secs(30);
    let mut sessions = Vec::new();
    for _ in 0..clients {
        let (url, token, tally) = (url.clone(), token.clone(), tally.clone());
        sessions.push(actix_rt::spawn(async move {
            let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
            // A snapshot holds 300 seconds: more than awc's default 64 KiB frame.
            let (_, mut socket) = match client.ws(&url).max_frame_size(16 << 20).connect().await {
                Ok(connected) => connected,
                Err(e) => {
                    eprintln!("dashboard_clients: connecting to {url}: {e}");
                    tally.borrow_mut().closed_early += 1;
                    return;
                }
            };
            if let Some(token) = token {
                let hello = serde_json::json!({ "token": token }).to_string();
                if socket.send(awc::ws::Message::Text(hello.into())).await.is_err() {
                    tally.borrow_mut().closed_early += 1;
                    return;
                }
            }
            tally.borrow_mut().connected += 1;
            let (mut frames, mut bytes) = (0u64, 0u64);
            let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
            let mut early = false;
            loop {
                match tokio::time::timeout_at(until.min(deadline), socket.next()).await {
                    Err(_) => break,
                    Ok(Some(Ok(awc::ws::Frame::Text(text)))) => {
                        frames += 1;
                        bytes += text.len() as u64;
                    }
                    Ok(Some(Ok(awc::ws::Frame::Ping(p)))) => {
                        let _ = socket.send(awc::ws::Message::Pong(p)).await;
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(_)) | None) => {
                        early = true;
                        break;
                    }
                }
            }
            let _ = socket.send(awc::ws::Message::Close(None)).await;
            let mut tally = tally.borrow_mut();
            tally.frames.push(frames);
            tally.bytes += bytes;
            tally.closed_early += usize::from(early);
        }));
    }
    // Announce once every socket is open (or gave up), so the measurement covers all of them.
    loop {
        let (connected, early) = {
            let t = tally.borrow();
            (t.connected, t.closed_early)
        };
        if connected + early >= clients || tokio::time::Instant::now() > deadline {
            println!("connected {connected}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for session in sessions {
        let _ = session.await;
    }
    let t = tally.borrow();
    println!(
        "clients={} frames={} min_frames={} closed_early={} bytes={}",
        t.connected,
        t.frames.iter().sum::<u64>(),
        t.frames.iter().min().copied().unwrap_or(0),
        t.closed_early,
        t.bytes
    );
}
