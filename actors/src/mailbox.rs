//! Mailbox instrumentation, one mechanism for every actor.
//!
//! actix does not expose a mailbox's length, so it is kept here: a message travels in a
//! [`Tracked`] envelope whose [`Ticket`] counts it into its actor's [`ActorProbe`] when sent and out
//! when the actor takes it. Senders go through an [`Inbox`] (an `Addr` with its probe) or a
//! [`TrackedRecipient`]; an actor accepts the envelope for each of its messages with one line,
//! [`tracked!`](crate::tracked), which unwraps it and forwards to the actor's own `Handler`.
//! A queue that is not an actix mailbox (a stream) carries the same envelope ([`Tracked::queued`]).
//!
//! What a probe knows, per actor type and instance:
//! - mailbox depth: messages sent and not yet taken (whether queued or held by a sender waiting for
//!   room in a full mailbox);
//! - messages handled, and handling time (a histogram): for awaited sends, from the moment the actor
//!   takes the message until its answer reaches the sender (so asynchronous handlers are timed whole);
//!   for fire-and-forget sends, the handler's run;
//! - time senders spent blocked: for awaited sends, from the send until the actor took the message —
//!   counted live, so it grows while senders wait, not only once they are served;
//! - restarts and the last error, reported by the actor or its supervisor.
//!
//! Nothing here touches a lock on the message path: a few atomic operations per message.
//!
//! The timings (handling-time histogram, blocked senders) cost two to four clock reads and a
//! histogram update per message; a registry made [`ActorRegistry::with_timing`]`(false)`
//! (`MAILBOX_METRICS=off`) leaves them out of its probes
//! so one binary can be measured bare and instrumented. The depth and handled counts stay: a
//! relaxed atomic each, and the ingest's batching reads the depth.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::prelude::*;
use prometheus::{Histogram, HistogramOpts, HistogramVec};
use serde::Serialize;

/// Nanoseconds since a process-wide origin: a monotonic clock that fits an atomic.
fn now_ns() -> i64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as i64
}

/// Handling-time buckets: 10 µs to ~42 s, ×4 each.
fn handling_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.000_01, 4.0, 12).expect("valid buckets")
}

/// Probes by (actor type, instance).
type ProbeMap = BTreeMap<(&'static str, String), Arc<ActorProbe>>;

/// Every actor's probe, by actor type and instance. Cheap to clone; one per process.
#[derive(Clone)]
pub struct ActorRegistry {
    probes: Arc<Mutex<ProbeMap>>,
    handling: HistogramVec,
    timed: bool,
}

impl ActorRegistry {
    pub fn new() -> ActorRegistry {
        ActorRegistry::with_timing(true)
    }

    /// A registry whose probes time messages (`true`) or only count them (`MAILBOX_METRICS=off`).
    pub fn with_timing(timed: bool) -> ActorRegistry {
        let opts = HistogramOpts::new(
            "log_analyzer_actor_handling_seconds",
            "Time an actor spends on a message, from taking it to answering",
        )
        .buckets(handling_buckets());
        ActorRegistry {
            probes: Arc::default(),
            handling: HistogramVec::new(opts, &["actor"]).expect("valid histogram"),
            timed,
        }
    }

    /// The probe of `actor` `instance`, made on first use. An instance started again (a restarted
    /// partition, say) keeps its probe, so its counters never go back.
    pub fn probe(&self, actor: &'static str, instance: impl Into<String>) -> Arc<ActorProbe> {
        let instance = instance.into();
        let mut probes = self.probes.lock().expect("actor registry");
        probes
            .entry((actor, instance.clone()))
            .or_insert_with(|| {
                Arc::new(ActorProbe::new(actor, instance, self.handling.with_label_values(&[actor]), self.timed))
            })
            .clone()
    }

    /// Every probe, ordered by actor type and instance.
    pub fn probes(&self) -> Vec<Arc<ActorProbe>> {
        self.probes.lock().expect("actor registry").values().cloned().collect()
    }

    /// The handling-time histogram of every actor (to register with a Prometheus registry).
    pub fn handling_histogram(&self) -> HistogramVec {
        self.handling.clone()
    }
}

impl Default for ActorRegistry {
    fn default() -> Self {
        ActorRegistry::new()
    }
}

/// The live counters of one actor instance.
pub struct ActorProbe {
    actor: &'static str,
    instance: String,
    depth: AtomicI64,
    handled: AtomicU64,
    restarts: AtomicU64,
    /// Awaited sends whose message is not taken yet, and the sum of their send times (ns).
    blocked_now: AtomicI64,
    blocked_since_sum: AtomicI64,
    /// Blocked time of the sends already served (ns).
    blocked_done_ns: AtomicU64,
    running: AtomicBool,
    last_error: Mutex<Option<String>>,
    handling: Histogram,
    /// Whether messages are timed (clocks, histogram, blocked senders) or only counted.
    timed: bool,
}

/// A probe's state, as `/debug/actors` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbeSnapshot {
    pub actor: &'static str,
    pub instance: String,
    pub running: bool,
    pub mailbox_depth: i64,
    pub handled: u64,
    pub restarts: u64,
    pub send_blocked_seconds: f64,
    pub last_error: Option<String>,
}

impl ActorProbe {
    fn new(actor: &'static str, instance: String, handling: Histogram, timed: bool) -> ActorProbe {
        ActorProbe {
            actor,
            instance,
            depth: AtomicI64::new(0),
            handled: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            blocked_now: AtomicI64::new(0),
            blocked_since_sum: AtomicI64::new(0),
            blocked_done_ns: AtomicU64::new(0),
            running: AtomicBool::new(false),
            last_error: Mutex::new(None),
            handling,
            timed,
        }
    }

    /// A probe outside any registry (tests, tools).
    pub fn detached(actor: &'static str, instance: impl Into<String>) -> Arc<ActorProbe> {
        let opts = HistogramOpts::new("detached_handling_seconds", "unregistered").buckets(handling_buckets());
        Arc::new(ActorProbe::new(actor, instance.into(), Histogram::with_opts(opts).expect("valid histogram"), true))
    }

    /// A detached probe that counts messages without timing them.
    pub fn detached_untimed(actor: &'static str, instance: impl Into<String>) -> Arc<ActorProbe> {
        let opts = HistogramOpts::new("detached_handling_seconds", "unregistered").buckets(handling_buckets());
        Arc::new(ActorProbe::new(actor, instance.into(), Histogram::with_opts(opts).expect("valid histogram"), false))
    }

    pub fn actor(&self) -> &'static str {
        self.actor
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Counts one handled message that took `elapsed`.
    pub fn handled_in(&self, elapsed: Duration) {
        self.handled.fetch_add(1, Ordering::Relaxed);
        self.handling.observe(elapsed.as_secs_f64());
    }

    /// Runs `work` as one handled message (for work an actor gives itself, such as a timer tick).
    pub fn time<R>(&self, work: impl FnOnce() -> R) -> R {
        let started = Instant::now();
        let result = work();
        self.handled_in(started.elapsed());
        result
    }

    /// The actor (re)started: call from `Actor::started`.
    pub fn started(&self) {
        self.running.store(true, Ordering::Relaxed);
    }

    /// The actor stopped: call from `Actor::stopped`.
    pub fn stopped(&self) {
        self.running.store(false, Ordering::Relaxed);
    }

    /// A supervisor (or the owner of a partition) restarted this instance.
    pub fn restarted(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Remembers the latest error of this instance (shown by `/debug/actors`).
    pub fn error(&self, error: impl Display) {
        *self.last_error.lock().expect("probe error") = Some(error.to_string());
    }

    pub fn mailbox_depth(&self) -> i64 {
        self.depth.load(Ordering::Relaxed)
    }

    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Total time senders have spent waiting for this actor to take their message, including the
    /// waits still going on.
    pub fn send_blocked(&self) -> Duration {
        // Read the sum before the count: a waiter leaving in between then makes the figure err low.
        let since_sum = self.blocked_since_sum.load(Ordering::Acquire);
        let waiting = self.blocked_now.load(Ordering::Acquire);
        let done = self.blocked_done_ns.load(Ordering::Acquire) as i64;
        let ongoing = (waiting * now_ns() - since_sum).max(0);
        Duration::from_nanos((done + ongoing).max(0) as u64)
    }

    pub fn snapshot(&self) -> ProbeSnapshot {
        ProbeSnapshot {
            actor: self.actor,
            instance: self.instance.clone(),
            running: self.running.load(Ordering::Relaxed),
            mailbox_depth: self.mailbox_depth(),
            handled: self.handled(),
            restarts: self.restarts(),
            send_blocked_seconds: self.send_blocked().as_secs_f64(),
            last_error: self.last_error.lock().expect("probe error").clone(),
        }
    }
}

/// A message's place in its actor's count, from the send until the actor takes it.
pub struct Ticket {
    probe: Arc<ActorProbe>,
    sent_ns: i64,
    /// Set for awaited sends: when the actor took the message (ns), for the sender to time the answer.
    taken_at: Option<Arc<AtomicI64>>,
    open: bool,
    /// Whether this message is timed (its probe's setting).
    timed: bool,
}

impl Ticket {
    fn new(probe: Arc<ActorProbe>, awaited: bool) -> Ticket {
        probe.depth.fetch_add(1, Ordering::Relaxed);
        if !probe.timed {
            return Ticket { probe, sent_ns: 0, taken_at: None, open: true, timed: false };
        }
        let sent_ns = now_ns();
        if awaited {
            probe.blocked_since_sum.fetch_add(sent_ns, Ordering::AcqRel);
            probe.blocked_now.fetch_add(1, Ordering::AcqRel);
        }
        let taken_at = awaited.then(|| Arc::new(AtomicI64::new(-1)));
        Ticket { probe, sent_ns, taken_at, open: true, timed: true }
    }

    /// The message left the mailbox (taken, or dropped with it).
    fn close(&mut self) {
        if !self.timed {
            if std::mem::take(&mut self.open) {
                self.probe.depth.fetch_sub(1, Ordering::Relaxed);
            }
            return;
        }
        let now = now_ns();
        if std::mem::take(&mut self.open) {
            self.probe.depth.fetch_sub(1, Ordering::Relaxed);
            if let Some(taken_at) = &self.taken_at {
                taken_at.store(now, Ordering::Release);
                self.probe.blocked_done_ns.fetch_add((now - self.sent_ns).max(0) as u64, Ordering::AcqRel);
                self.probe.blocked_now.fetch_sub(1, Ordering::AcqRel);
                self.probe.blocked_since_sum.fetch_sub(self.sent_ns, Ordering::AcqRel);
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.close();
    }
}

/// A message in its envelope. Made by [`Inbox`] and [`TrackedRecipient`]; opened by [`tracked!`](crate::tracked).
pub struct Tracked<M> {
    msg: M,
    ticket: Ticket,
}

impl<M: Message> Message for Tracked<M> {
    type Result = M::Result;
}

impl<M> Tracked<M> {
    fn new(msg: M, probe: &Arc<ActorProbe>, awaited: bool) -> Tracked<M> {
        Tracked { msg, ticket: Ticket::new(probe.clone(), awaited) }
    }

    /// A message for a queue that is not an actix mailbox (a stream feeding a `StreamHandler`):
    /// counted in now, out when the actor opens it or when it is dropped unread.
    pub fn queued(msg: M, probe: &Arc<ActorProbe>) -> Tracked<M> {
        Tracked::new(msg, probe, false)
    }

    /// Takes the message out: it leaves the mailbox count now. The returned timer counts it handled.
    pub fn open(mut self) -> (M, HandlingTimer) {
        self.ticket.close();
        let awaited = self.ticket.taken_at.is_some();
        let probe = self.ticket.probe.clone();
        let started = self.ticket.timed.then(Instant::now);
        (self.msg, HandlingTimer { probe, started, awaited })
    }

    fn into_inner(self) -> M {
        self.msg
    }
}

/// Counts a message handled when the handler returns; an awaited one is timed by its sender.
pub struct HandlingTimer {
    probe: Arc<ActorProbe>,
    /// `None` when timings are off.
    started: Option<Instant>,
    awaited: bool,
}

impl HandlingTimer {
    pub fn finish(self) {
        match self.started {
            Some(started) if !self.awaited => self.probe.handled_in(started.elapsed()),
            // An awaited one: its sender observes the time once the answer arrives (asynchronous
            // handlers included).
            _ => {
                self.probe.handled.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Implements `Handler<Tracked<M>>` for an actor that handles `M`: the envelope is opened (the
/// message leaves the mailbox count), the actor's own handler runs, and the message is counted.
///
/// ```ignore
/// actors::tracked!(WriterActor => WriteBatch, Drain);
/// ```
#[macro_export]
macro_rules! tracked {
    ($actor:ty => $($msg:ty),+ $(,)?) => {$(
        impl ::actix::Handler<$crate::mailbox::Tracked<$msg>> for $actor {
            type Result = <$actor as ::actix::Handler<$msg>>::Result;

            fn handle(&mut self, tracked: $crate::mailbox::Tracked<$msg>, ctx: &mut Self::Context) -> Self::Result {
                let (msg, timer) = tracked.open();
                let result = <$actor as ::actix::Handler<$msg>>::handle(self, msg, ctx);
                timer.finish();
                result
            }
        }
    )+};
}

/// Observes the handling time of an awaited send once its answer is in.
fn answered(probe: &ActorProbe, taken_at: &AtomicI64) {
    let taken = taken_at.load(Ordering::Acquire);
    if taken >= 0 {
        probe.handling.observe(Duration::from_nanos((now_ns() - taken).max(0) as u64).as_secs_f64());
    }
}

/// An actor's address with its probe: every message sent through it is counted.
pub struct Inbox<A: Actor> {
    addr: Addr<A>,
    probe: Arc<ActorProbe>,
}

impl<A: Actor> Clone for Inbox<A> {
    fn clone(&self) -> Self {
        Inbox { addr: self.addr.clone(), probe: self.probe.clone() }
    }
}

impl<A: Actor> Inbox<A> {
    /// The inbox of a started actor (which counts as running until it reports `stopped`).
    pub fn new(addr: Addr<A>, probe: Arc<ActorProbe>) -> Inbox<A> {
        probe.started();
        Inbox { addr, probe }
    }

    pub fn addr(&self) -> &Addr<A> {
        &self.addr
    }

    pub fn probe(&self) -> &Arc<ActorProbe> {
        &self.probe
    }

    /// Sends and waits for the answer (waiting for room if the mailbox is full).
    pub async fn send<M>(&self, msg: M) -> Result<M::Result, MailboxError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Tracked<M>>,
        A::Context: ToEnvelope<A, Tracked<M>>,
    {
        let tracked = Tracked::new(msg, &self.probe, true);
        let taken_at = tracked.ticket.taken_at.clone();
        let answer = self.addr.send(tracked).await;
        if let Some(taken_at) = taken_at {
            answered(&self.probe, &taken_at);
        }
        answer
    }

    /// Sends without waiting, even past the mailbox capacity.
    pub fn do_send<M>(&self, msg: M)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Tracked<M>>,
        A::Context: ToEnvelope<A, Tracked<M>>,
    {
        self.addr.do_send(Tracked::new(msg, &self.probe, false));
    }

    /// Sends if the mailbox has room; else gives the message back.
    pub fn try_send<M>(&self, msg: M) -> Result<(), SendError<M>>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Tracked<M>>,
        A::Context: ToEnvelope<A, Tracked<M>>,
    {
        self.addr.try_send(Tracked::new(msg, &self.probe, false)).map_err(|e| match e {
            SendError::Full(t) => SendError::Full(t.into_inner()),
            SendError::Closed(t) => SendError::Closed(t.into_inner()),
        })
    }

    /// A counted recipient of one message type.
    pub fn recipient<M>(&self) -> TrackedRecipient<M>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Tracked<M>>,
        A::Context: ToEnvelope<A, Tracked<M>>,
    {
        TrackedRecipient { recipient: self.addr.clone().recipient(), probe: self.probe.clone() }
    }
}

/// A recipient with its actor's probe.
pub struct TrackedRecipient<M>
where
    M: Message + Send,
    M::Result: Send,
{
    recipient: Recipient<Tracked<M>>,
    probe: Arc<ActorProbe>,
}

impl<M> Clone for TrackedRecipient<M>
where
    M: Message + Send,
    M::Result: Send,
{
    fn clone(&self) -> Self {
        TrackedRecipient { recipient: self.recipient.clone(), probe: self.probe.clone() }
    }
}

impl<M> TrackedRecipient<M>
where
    M: Message + Send + 'static,
    M::Result: Send,
{
    pub async fn send(&self, msg: M) -> Result<M::Result, MailboxError> {
        let tracked = Tracked::new(msg, &self.probe, true);
        let taken_at = tracked.ticket.taken_at.clone();
        let answer = self.recipient.send(tracked).await;
        if let Some(taken_at) = taken_at {
            answered(&self.probe, &taken_at);
        }
        answer
    }

    pub fn do_send(&self, msg: M) {
        self.recipient.do_send(Tracked::new(msg, &self.probe, false));
    }

    pub fn try_send(&self, msg: M) -> Result<(), SendError<M>> {
        self.recipient.try_send(Tracked::new(msg, &self.probe, false)).map_err(|e| match e {
            SendError::Full(t) => SendError::Full(t.into_inner()),
            SendError::Closed(t) => SendError::Closed(t.into_inner()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{eventually, paused};

    /// Holds each `Hold` until its gate opens; answers `Ping` at once.
    struct Slow;

    impl Actor for Slow {
        type Context = Context<Self>;
    }

    #[derive(Message)]
    #[rtype(result = "u32")]
    struct Hold(tokio::sync::oneshot::Receiver<()>);

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Ping;

    impl Handler<Hold> for Slow {
        type Result = AtomicResponse<Self, u32>;

        fn handle(&mut self, Hold(gate): Hold, _ctx: &mut Self::Context) -> Self::Result {
            AtomicResponse::new(Box::pin(
                async move {
                    let _ = gate.await;
                    7
                }
                .into_actor(self),
            ))
        }
    }

    impl Handler<Ping> for Slow {
        type Result = ();

        fn handle(&mut self, _: Ping, _ctx: &mut Self::Context) {}
    }

    crate::tracked!(Slow => Hold, Ping);

    #[actix_rt::test]
    async fn depth_and_blocked_time_follow_a_held_actor() {
        paused();
        let registry = ActorRegistry::new();
        let inbox = Inbox::new(Slow.start(), registry.probe("slow", "0"));
        let probe = inbox.probe().clone();

        let (open_first, first_gate) = tokio::sync::oneshot::channel();
        let first = actix_rt::spawn({
            let inbox = inbox.clone();
            async move { inbox.send(Hold(first_gate)).await }
        });
        eventually("the first message is taken", || probe.handled() == 1).await;
        assert_eq!(probe.mailbox_depth(), 0);

        // The actor is busy with the first (atomically): the next three wait in its mailbox.
        let (open_second, second_gate) = tokio::sync::oneshot::channel();
        let second = actix_rt::spawn({
            let inbox = inbox.clone();
            async move { inbox.send(Hold(second_gate)).await }
        });
        inbox.do_send(Ping);
        inbox.do_send(Ping);
        eventually("three messages are queued", || probe.mailbox_depth() == 3).await;
        let blocked_then = probe.send_blocked();
        eventually("blocked time grows while the sender waits", || probe.send_blocked() > blocked_then).await;

        open_first.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 7);
        open_second.send(()).unwrap();
        assert_eq!(second.await.unwrap().unwrap(), 7);
        eventually("every message is handled", || probe.handled() == 4).await;
        assert_eq!(probe.mailbox_depth(), 0);

        // Served: no send is counted as waiting, so the blocked time stops growing. (The probe reads
        // the process's monotonic clock, not tokio's: let that clock move, by any amount, and look again.)
        assert_eq!(probe.blocked_now.load(Ordering::Acquire), 0);
        let settled = probe.send_blocked();
        let looked_at = now_ns();
        eventually("the monotonic clock moves on", || now_ns() > looked_at).await;
        assert_eq!(probe.send_blocked(), settled);
        assert!(settled > Duration::ZERO);

        // Both awaited sends and both pings were timed.
        let timed = registry.handling_histogram().with_label_values(&["slow"]).get_sample_count();
        assert_eq!(timed, 4);
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Quit;

    impl Handler<Quit> for Slow {
        type Result = ();

        fn handle(&mut self, _: Quit, ctx: &mut Self::Context) {
            ctx.stop();
        }
    }

    crate::tracked!(Slow => Quit);

    #[actix_rt::test]
    async fn messages_an_actor_never_takes_leave_the_count() {
        paused();
        let probe = ActorProbe::detached("slow", "x");
        let inbox = Inbox::new(Slow.start(), probe.clone());
        inbox.send(Quit).await.unwrap();
        eventually("the actor is gone", || !inbox.addr().connected()).await;
        inbox.do_send(Ping);
        assert!(matches!(inbox.try_send(Ping), Err(SendError::Closed(Ping))));
        assert!(inbox.send(Ping).await.is_err());
        assert_eq!(probe.mailbox_depth(), 0);
        assert_eq!(probe.handled(), 1);
    }

    #[actix_rt::test]
    async fn an_untimed_registry_counts_depth_and_messages_without_timing_them() {
        paused();
        let registry = ActorRegistry::with_timing(false);
        let inbox = Inbox::new(Slow.start(), registry.probe("slow", "0"));
        let probe = inbox.probe().clone();
        let (open, gate) = tokio::sync::oneshot::channel();
        let held = actix_rt::spawn({
            let inbox = inbox.clone();
            async move { inbox.send(Hold(gate)).await }
        });
        eventually("the first message is taken", || probe.handled() == 1).await;
        inbox.do_send(Ping);
        eventually("the ping waits in the mailbox", || probe.mailbox_depth() == 1).await;
        open.send(()).unwrap();
        assert_eq!(held.await.unwrap().unwrap(), 7);
        eventually("both are handled", || probe.handled() == 2).await;
        assert_eq!(probe.mailbox_depth(), 0);
        assert_eq!(probe.send_blocked(), Duration::ZERO);
        assert_eq!(registry.handling_histogram().with_label_values(&["slow"]).get_sample_count(), 0);
        let queued = Tracked::queued(Ping, &ActorProbe::detached_untimed("stream", "0"));
        let (_, timer) = queued.open();
        timer.finish();
    }

    #[test]
    fn the_registry_keeps_one_probe_per_instance() {
        let registry = ActorRegistry::new();
        let a = registry.probe("writer", "0");
        a.restarted();
        a.error("connection refused");
        let again = registry.probe("writer", "0");
        assert!(Arc::ptr_eq(&a, &again));
        registry.probe("consumer", "3");
        let snapshots: Vec<_> = registry.probes().iter().map(|p| p.snapshot()).collect();
        assert_eq!(snapshots.len(), 2);
        assert_eq!(snapshots[1].actor, "writer");
        assert_eq!(snapshots[1].restarts, 1);
        assert_eq!(snapshots[1].last_error.as_deref(), Some("connection refused"));
    }
}
