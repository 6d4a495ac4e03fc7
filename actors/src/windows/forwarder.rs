//! DeltaForwarder: for `ingest` processes, which keep no windows of their own, turns each committed
//! batch into its bucket delta and hands it to the shared store (Redis), so that `api` processes
//! can answer for the whole topic.

use std::sync::Arc;

use actix::prelude::*;

use super::aggregator::{DeltaSink, HORIZON_GRACE};
use super::buckets::{BucketDelta, KeywordSet};
use crate::ingest::Committed;
use crate::ports::SharedClock;

pub struct DeltaForwarder {
    keywords: Arc<KeywordSet>,
    horizon: i64,
    skew: i64,
    sink: Arc<dyn DeltaSink>,
    clock: SharedClock,
}

impl DeltaForwarder {
    pub fn new(
        keywords: Arc<KeywordSet>,
        horizon: i64,
        skew: i64,
        sink: Arc<dyn DeltaSink>,
        clock: SharedClock,
    ) -> Self {
        DeltaForwarder { keywords, horizon, skew, sink, clock }
    }
}

impl Actor for DeltaForwarder {
    type Context = Context<Self>;
}

impl Handler<Committed> for DeltaForwarder {
    type Result = ();

    fn handle(&mut self, Committed(batch): Committed, _ctx: &mut Self::Context) {
        let now = self.clock.now().timestamp();
        // The same span the aggregator buckets, so every process feeds Redis alike.
        let delta =
            BucketDelta::from_batch(&batch, &self.keywords, now - self.horizon - HORIZON_GRACE, now + self.skew);
        self.sink.offer(Arc::new(delta));
    }
}

crate::tracked!(DeltaForwarder => Committed);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Keyword, ParseRules};
    use crate::ingest::{BatchBuilder, RawMessage};
    use crate::ports::SystemClock;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Collect(Mutex<Vec<Arc<BucketDelta>>>);

    impl DeltaSink for Collect {
        fn offer(&self, delta: Arc<BucketDelta>) {
            self.0.lock().unwrap().push(delta);
        }
    }

    #[actix_rt::test]
    async fn every_committed_batch_becomes_one_delta_with_its_offsets_and_counts() {
        let sink = Arc::new(Collect::default());
        let keywords = Arc::new(KeywordSet::new([Keyword::parse("timeout").unwrap()]));
        let forwarder = DeltaForwarder::new(keywords, 3_600, 60, sink.clone(), Arc::new(SystemClock)).start();
        let mut builder = BatchBuilder::new("t".into(), 1, 7, ParseRules::default());
        let now = chrono::Utc::now();
        for (offset, body) in [
            (7, r#"{"level":"error","service":"a","message":"db timeout"}"#),
            (8, r#"{"level":"info","service":"a","message":"ok"}"#),
        ] {
            builder.push(
                RawMessage { offset, timestamp: Some(now), payload: Some(body.as_bytes().to_vec()), service: None },
                now,
            );
        }
        forwarder.send(Committed(Arc::new(builder.take(Arc::default())))).await.unwrap();
        let deltas = sink.0.lock().unwrap();
        assert_eq!(deltas.len(), 1);
        let d = &deltas[0];
        assert_eq!((d.partition, d.from, d.to), (1, 7, 9));
        let counts = &d.seconds[&now.timestamp()].by_service["a"];
        assert_eq!((counts.total, counts.errors, counts.keywords.clone()), (2, 1, vec![1]));
    }
}
