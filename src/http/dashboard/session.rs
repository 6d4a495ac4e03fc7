//! One dashboard's WebSocket: the token first when auth is on, then the feed's snapshot and frames,
//! as they are. A session that cannot take a frame in time, or falls behind the feed, is closed.

use std::sync::Arc;
use std::time::Duration;

use actix_ws::{CloseCode, CloseReason, Message};
use async_trait::async_trait;
use futures::future::{BoxFuture, FutureExt};
use tokio::sync::broadcast::error::RecvError;

use super::feed::{DashboardFeed, Frame, Subscription};

/// How long a page has to send `{"token": …}` when auth is on.
pub const TOKEN_WAIT: Duration = Duration::from_secs(5);
/// How long one frame may take to be taken by the socket before the session is cut.
pub const SEND_WITHIN: Duration = Duration::from_secs(3);
/// The largest message a page sends (its token).
const MAX_INCOMING: usize = 16 * 1024;

/// Checks a token the page sent (the REST routes' `Auth`): when it expires (epoch seconds), or why
/// it is refused.
pub type TokenCheck = Arc<dyn Fn(&str) -> Result<Option<i64>, String> + Send + Sync>;

/// Why a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// The page closed the socket, or it broke.
    ClientLeft,
    /// The page did not take its frames in time, or fell more than the feed keeps behind.
    SlowClient,
    /// The feed stopped (the process is shutting down).
    FeedEnded,
    /// The token the session opened with has expired.
    TokenExpired,
}

/// Where a session's frames go: the socket, or a stand-in in tests.
#[async_trait(?Send)]
pub trait FrameSink {
    /// Sends one frame; an error means the socket is gone.
    async fn send(&mut self, frame: Frame) -> Result<(), ()>;
}

#[async_trait(?Send)]
impl FrameSink for actix_ws::Session {
    async fn send(&mut self, frame: Frame) -> Result<(), ()> {
        // A clone of the one frame every session sends: no copy per socket before the codec frames it.
        self.text(frame).await.map_err(drop)
    }
}

/// Sends the snapshot, then each frame of the feed, until `stop` resolves (the client left, its
/// token expired), the client falls behind or cannot take a frame within `send_within`.
pub async fn forward(
    subscription: Subscription,
    sink: &mut impl FrameSink,
    send_within: Duration,
    stop: BoxFuture<'static, Ending>,
) -> Ending {
    let Subscription { snapshot, mut frames } = subscription;
    let mut stop = stop.fuse();
    if let Some(snapshot) = snapshot {
        if let Some(ending) = send_in_time(sink, snapshot, send_within).await {
            return ending;
        }
    }
    loop {
        let frame = futures::select_biased! {
            ending = stop => return ending,
            frame = frames.recv().fuse() => frame,
        };
        match frame {
            Ok(frame) => {
                if let Some(ending) = send_in_time(sink, frame, send_within).await {
                    return ending;
                }
            }
            Err(RecvError::Lagged(_)) => return Ending::SlowClient,
            Err(RecvError::Closed) => return Ending::FeedEnded,
        }
    }
}

async fn send_in_time(sink: &mut impl FrameSink, frame: Frame, within: Duration) -> Option<Ending> {
    match actix_rt::time::timeout(within, sink.send(frame)).await {
        Ok(Ok(())) => None,
        Ok(Err(())) => Some(Ending::ClientLeft),
        Err(_) => Some(Ending::SlowClient),
    }
}

/// When the token of a first message expires, or why the message does not open the feed.
pub fn accept_token(first: Option<Message>, check: &TokenCheck) -> Result<Option<i64>, String> {
    let text = match first {
        Some(Message::Text(text)) => text,
        Some(_) => return Err("the first message must be the text {\"token\": \"<JWT>\"}".into()),
        None => return Err("no token: send {\"token\": \"<JWT>\"} as the first message".into()),
    };
    let token = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("token").and_then(|t| t.as_str()).map(str::to_owned));
    match token {
        Some(token) => check(&token),
        None => Err("the first message must be {\"token\": \"<JWT>\"}".into()),
    }
}

fn policy(why: String) -> CloseReason {
    // A close frame's reason has to fit in a control frame (125 bytes with the code).
    let mut description = why;
    if description.len() > 120 {
        let mut cut = 120;
        while !description.is_char_boundary(cut) {
            cut -= 1;
        }
        description.truncate(cut);
    }
    CloseReason { code: CloseCode::Policy, description: Some(description) }
}

/// Upgrades the request and runs the session in the background.
pub fn open(
    req: &actix_web::HttpRequest,
    body: actix_web::web::Payload,
    feed: Arc<DashboardFeed>,
    check: Option<TokenCheck>,
    log: slog::Logger,
) -> Result<actix_web::HttpResponse, actix_web::Error> {
    let (response, mut session, stream) = actix_ws::handle(req, body)?;
    let mut stream = stream.max_frame_size(MAX_INCOMING);
    actix_rt::spawn(async move {
        let mut expires = None;
        if let Some(check) = check {
            let first = match actix_rt::time::timeout(TOKEN_WAIT, stream.recv()).await {
                Ok(Some(Ok(message))) => Some(message),
                _ => None,
            };
            match accept_token(first, &check) {
                Ok(exp) => expires = exp,
                Err(why) => {
                    slog::info!(log, "dashboard socket refused"; "why" => &why);
                    let _ = session.close(Some(policy(why))).await;
                    return;
                }
            }
        }
        // The page's messages after the token: pings are answered, a close or a break ends the session.
        let (gone, left) = futures::channel::oneshot::channel::<()>();
        let mut replies = session.clone();
        actix_rt::spawn(async move {
            while let Some(Ok(message)) = stream.recv().await {
                let answered = match message {
                    Message::Ping(bytes) => replies.pong(&bytes).await.is_ok(),
                    Message::Close(_) => false,
                    _ => true,
                };
                if !answered {
                    break;
                }
            }
            drop(gone);
        });
        let expiry = async move {
            match expires {
                Some(exp) => {
                    let left = (exp - chrono::Utc::now().timestamp()).max(0) as u64;
                    actix_rt::time::sleep(Duration::from_secs(left)).await;
                }
                None => futures::future::pending().await,
            }
        };
        let stop = futures::future::select(left.map(|_| Ending::ClientLeft).boxed(), expiry.boxed())
            .map(|either| match either {
                futures::future::Either::Left((ending, _)) => ending,
                futures::future::Either::Right(_) => Ending::TokenExpired,
            })
            .boxed();
        let ending = forward(feed.subscribe(), &mut session, SEND_WITHIN, stop).await;
        slog::debug!(log, "dashboard socket ended"; "why" => ?ending);
        let reason = match ending {
            Ending::SlowClient => Some(CloseReason {
                code: CloseCode::Again,
                description: Some("slow_client: frames were not taken in time".into()),
            }),
            Ending::FeedEnded => Some(CloseReason { code: CloseCode::Away, description: None }),
            Ending::TokenExpired => Some(policy("token refused: it has expired (exp)".into())),
            Ending::ClientLeft => None,
        };
        let _ = session.close(reason).await;
    });
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Takes frames until `stuck_after`, then never again.
    struct Socket {
        got: Arc<Mutex<Vec<Frame>>>,
        stuck_after: usize,
    }

    #[async_trait(?Send)]
    impl FrameSink for Socket {
        async fn send(&mut self, frame: Frame) -> Result<(), ()> {
            if self.got.lock().unwrap().len() >= self.stuck_after {
                futures::future::pending::<()>().await;
            }
            self.got.lock().unwrap().push(frame);
            Ok(())
        }
    }

    fn never() -> BoxFuture<'static, Ending> {
        futures::future::pending().boxed()
    }

    fn socket(stuck_after: usize) -> (Socket, Arc<Mutex<Vec<Frame>>>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        (Socket { got: got.clone(), stuck_after }, got)
    }

    async fn feed_with_history() -> (Arc<DashboardFeed>, super::super::feed::FeedSources) {
        use actors::ports::{CannotAnswer, WindowAnswer, WindowQuery, WindowQuestion};
        struct Empty;
        #[async_trait]
        impl WindowQuery for Empty {
            async fn answer(&self, q: &WindowQuestion) -> Result<WindowAnswer, CannotAnswer> {
                Ok(match q {
                    WindowQuestion::Errors { .. } => WindowAnswer::Errors(Default::default()),
                    WindowQuestion::TopKeywords { .. } => WindowAnswer::TopKeywords(vec![]),
                    WindowQuestion::Keyword { .. } => WindowAnswer::Keyword(0),
                })
            }
        }
        let reader = actors::windows::WindowReader::new(Arc::new(Empty), Arc::new(actors::ports::SystemClock));
        let sources = super::super::feed::FeedSources {
            reader,
            freshness: Arc::new(|| Box::pin(async { serde_json::Value::Null })),
        };
        let feed = Arc::new(DashboardFeed::new());
        feed.tick(&sources, 100).await;
        (feed, sources)
    }

    #[actix_rt::test]
    async fn a_session_starts_with_the_snapshot_then_forwards_frames_until_the_client_leaves() {
        let (feed, sources) = feed_with_history().await;
        let (mut sink, got) = socket(usize::MAX);
        let (gone, left) = futures::channel::oneshot::channel::<()>();
        let session = actix_rt::spawn({
            let feed = feed.clone();
            let stop = left.map(|_| Ending::ClientLeft).boxed();
            async move { forward(feed.subscribe(), &mut sink, SEND_WITHIN, stop).await }
        });
        actix_rt::task::yield_now().await;
        feed.tick(&sources, 101).await;
        feed.tick(&sources, 102).await;
        crate::http::dashboard::tests::wait_for(|| got.lock().unwrap().len() == 3).await;
        drop(gone);
        assert_eq!(session.await.unwrap(), Ending::ClientLeft);
        let got = got.lock().unwrap();
        assert!(got[0].contains("\"type\":\"snapshot\""), "{}", got[0]);
        assert!(got[1].contains("\"at\":101") && got[2].contains("\"at\":102"));
    }

    #[actix_rt::test]
    async fn a_session_whose_socket_does_not_take_a_frame_in_time_is_cut() {
        let (feed, sources) = feed_with_history().await;
        let (mut sink, got) = socket(1);
        let session = actix_rt::spawn({
            let feed = feed.clone();
            async move { forward(feed.subscribe(), &mut sink, Duration::from_millis(200), never()).await }
        });
        actix_rt::task::yield_now().await;
        feed.tick(&sources, 101).await;
        let ending = actix_rt::time::timeout(Duration::from_secs(5), session).await.expect("cut in time").unwrap();
        assert_eq!(ending, Ending::SlowClient);
        assert_eq!(got.lock().unwrap().len(), 1, "only the snapshot got through");
        assert_eq!(feed.sessions(), 0, "the cut session holds no place in the feed");
    }

    #[actix_rt::test]
    async fn a_session_that_falls_behind_the_feed_is_cut() {
        let (feed, sources) = feed_with_history().await;
        let subscription = feed.subscribe();
        // The session is not scheduled while the feed runs ahead of it.
        for now in 101..(102 + super::super::feed::FRAMES_BEHIND as i64) {
            feed.tick(&sources, now).await;
        }
        let (mut sink, _) = socket(usize::MAX);
        assert_eq!(forward(subscription, &mut sink, SEND_WITHIN, never()).await, Ending::SlowClient);
    }

    #[actix_rt::test]
    async fn a_session_ends_when_told_to_stop_whatever_the_feed_does() {
        let (feed, _) = feed_with_history().await;
        let (mut sink, got) = socket(usize::MAX);
        let stop = futures::future::ready(Ending::TokenExpired).boxed();
        // Stopping wins over the frames still to send: an expired token gets nothing more.
        assert_eq!(forward(feed.subscribe(), &mut sink, SEND_WITHIN, stop).await, Ending::TokenExpired);
        assert_eq!(got.lock().unwrap().len(), 1, "the snapshot only");
    }

    #[test]
    fn only_a_first_message_with_a_good_token_opens_the_feed() {
        let check: TokenCheck =
            Arc::new(|t| if t == "good" { Ok(Some(42)) } else { Err("token refused: InvalidSignature".into()) });
        assert_eq!(accept_token(Some(Message::Text(r#"{"token":"good"}"#.into())), &check), Ok(Some(42)));
        let bad = accept_token(Some(Message::Text(r#"{"token":"bad"}"#.into())), &check).unwrap_err();
        assert!(bad.contains("refused"), "{bad}");
        assert!(accept_token(None, &check).unwrap_err().contains("no token"));
        assert!(accept_token(Some(Message::Text("good".into())), &check).is_err());
        assert!(accept_token(Some(Message::Binary("{\"token\":\"good\"}".into())), &check).is_err());
        let long = policy("x".repeat(500));
        assert!(long.description.unwrap().len() <= 120);
        assert_eq!(long.code, CloseCode::Policy);
    }
}
