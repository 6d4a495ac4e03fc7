//! Identical questions to the store, asked while one is already being answered, share one query.
//!
//! Without this, a popular window the faster sources cannot answer (say an hour of 100k services,
//! beyond `MAX_LIVE_SERVICES`) sends every request to the store at once: at 1,000 requests/s and
//! ~1 s a query, they queue on the pool and all time out (measured by `bench.sh cardinality`).
//!
//! Exactness is kept: a question never joins a query that began before it was asked (that query
//! may miss events stored meanwhile). It joins the one queued to start when the running query ends,
//! or queues it. So at most one query per distinct question runs, and one waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::future::{BoxFuture, FutureExt, Shared};

use crate::ports::{CannotAnswer, WindowAnswer, WindowQuery, WindowQuestion};

type Answer = Result<WindowAnswer, CannotAnswer>;
type Pending = Shared<BoxFuture<'static, Answer>>;

struct Flight {
    /// The query under way: (its number, its answer to come).
    running: (u64, Pending),
    /// The query that starts when `running` ends; questions asked now join it.
    next: Option<(u64, Pending)>,
}

#[derive(Default)]
struct Flights {
    by_question: HashMap<WindowQuestion, Flight>,
    numbered: u64,
}

/// A [`WindowQuery`] whose identical concurrent questions share one query of `inner`.
pub struct Coalesced {
    inner: Arc<dyn WindowQuery>,
    flights: Arc<Mutex<Flights>>,
}

impl Coalesced {
    pub fn new(inner: Arc<dyn WindowQuery>) -> Coalesced {
        Coalesced { inner, flights: Arc::default() }
    }

    /// The query numbered `number`, started once `after` (the query running now) has ended.
    fn query(&self, question: &WindowQuestion, number: u64, after: Option<Pending>) -> Pending {
        let inner = self.inner.clone();
        let flights = self.flights.clone();
        let question = question.clone();
        async move {
            if let Some(running) = after {
                let _ = running.await;
            }
            let answer = inner.answer(&question).await;
            // Hand over before anyone sees this answer: the queued query becomes the running one,
            // so whoever asks from now on waits for a query that starts after they asked.
            let mut flights = flights.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(flight) = flights.by_question.get_mut(&question) {
                if flight.running.0 == number {
                    match flight.next.take() {
                        Some(next) => flight.running = next,
                        None => {
                            flights.by_question.remove(&question);
                        }
                    }
                }
            }
            answer
        }
        .boxed()
        .shared()
    }
}

#[async_trait]
impl WindowQuery for Coalesced {
    async fn answer(&self, question: &WindowQuestion) -> Answer {
        let pending = {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            flights.numbered += 1;
            let number = flights.numbered;
            match flights.by_question.get_mut(question) {
                None => {
                    let running = self.query(question, number, None);
                    let flight = Flight { running: (number, running.clone()), next: None };
                    flights.by_question.insert(question.clone(), flight);
                    running
                }
                Some(flight) => match &flight.next {
                    Some((_, next)) => next.clone(),
                    None => {
                        let next = self.query(question, number, Some(flight.running.1.clone()));
                        flight.next = Some((number, next.clone()));
                        next
                    }
                },
            }
        };
        pending.await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::sync::Semaphore;

    use super::*;
    use crate::domain::window_stats::WindowRange;

    /// Answers each question with the number of the query that answered it, each query held until
    /// the test lets one through.
    struct Gated {
        queries: AtomicU64,
        gate: Semaphore,
    }

    #[async_trait]
    impl WindowQuery for Gated {
        async fn answer(&self, _question: &WindowQuestion) -> Answer {
            let number = self.queries.fetch_add(1, Ordering::SeqCst) + 1;
            self.gate.acquire().await.expect("open").forget();
            Ok(WindowAnswer::Keyword(number))
        }
    }

    fn question(keyword: &str) -> WindowQuestion {
        WindowQuestion::Keyword {
            range: WindowRange { from: 0, to: 10 },
            keyword: crate::domain::Keyword::parse(keyword).expect("a keyword"),
            service: None,
        }
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[actix_rt::test]
    async fn questions_asked_during_a_query_share_the_next_one_and_never_an_earlier_one() {
        let store = Arc::new(Gated { queries: AtomicU64::new(0), gate: Semaphore::new(0) });
        let coalesced = Arc::new(Coalesced::new(store.clone()));
        let ask = |c: Arc<Coalesced>| async move { c.answer(&question("timeout")).await };
        let first = tokio::task::spawn_local(ask(coalesced.clone()));
        settle().await;
        assert_eq!(store.queries.load(Ordering::SeqCst), 1, "the first question queries");
        // Asked while query 1 runs: they may not take its answer (it began before them).
        let later: Vec<_> = (0..50).map(|_| tokio::task::spawn_local(ask(coalesced.clone()))).collect();
        settle().await;
        assert_eq!(store.queries.load(Ordering::SeqCst), 1, "the later ones wait for query 1 to end");
        store.gate.add_permits(1);
        assert_eq!(first.await.expect("joined"), Ok(WindowAnswer::Keyword(1)));
        settle().await;
        assert_eq!(store.queries.load(Ordering::SeqCst), 2, "then one query for all fifty");
        store.gate.add_permits(1);
        for asked in later {
            assert_eq!(asked.await.expect("joined"), Ok(WindowAnswer::Keyword(2)));
        }
        // Nothing in flight: the next question queries again, and so does a different one.
        store.gate.add_permits(2);
        assert_eq!(coalesced.answer(&question("timeout")).await, Ok(WindowAnswer::Keyword(3)));
        assert_eq!(coalesced.answer(&question("error")).await, Ok(WindowAnswer::Keyword(4)));
        assert!(coalesced.flights.lock().unwrap().by_question.is_empty(), "finished flights are forgotten");
    }

    #[actix_rt::test]
    async fn different_questions_do_not_wait_for_each_other() {
        let store = Arc::new(Gated { queries: AtomicU64::new(0), gate: Semaphore::new(0) });
        let coalesced = Arc::new(Coalesced::new(store.clone()));
        let a = tokio::task::spawn_local({
            let c = coalesced.clone();
            async move { c.answer(&question("timeout")).await }
        });
        let b = tokio::task::spawn_local({
            let c = coalesced.clone();
            async move { c.answer(&question("error")).await }
        });
        settle().await;
        assert_eq!(store.queries.load(Ordering::SeqCst), 2);
        store.gate.add_permits(2);
        let mut got = vec![a.await.expect("joined"), b.await.expect("joined")];
        got.sort_by_key(|a| format!("{a:?}"));
        assert_eq!(got, vec![Ok(WindowAnswer::Keyword(1)), Ok(WindowAnswer::Keyword(2))]);
    }
}
