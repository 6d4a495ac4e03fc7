//! The in-memory windows as a source of answers: the WindowAggregatorActor behind its mailbox.

use async_trait::async_trait;

use super::aggregator::{QueryErrors, QueryKeyword, QueryTopKeywords, Unanswerable, WindowAggregatorActor};
use crate::mailbox::Inbox;
use crate::ports::{CannotAnswer, WindowAnswer, WindowQuery, WindowQuestion};

impl From<Unanswerable> for CannotAnswer {
    fn from(why: Unanswerable) -> CannotAnswer {
        CannotAnswer::Missing(why.to_string())
    }
}

#[async_trait]
impl WindowQuery for Inbox<WindowAggregatorActor> {
    async fn answer(&self, question: &WindowQuestion) -> Result<WindowAnswer, CannotAnswer> {
        let stopped = |e: actix::MailboxError| CannotAnswer::Unavailable(e.to_string());
        Ok(match question.clone() {
            WindowQuestion::Errors { range, service, limit } => {
                WindowAnswer::Errors(self.send(QueryErrors { range, service, limit }).await.map_err(stopped)??)
            }
            WindowQuestion::Keyword { range, keyword, service } => {
                WindowAnswer::Keyword(self.send(QueryKeyword { range, keyword, service }).await.map_err(stopped)??)
            }
            WindowQuestion::TopKeywords { range, limit } => {
                WindowAnswer::TopKeywords(self.send(QueryTopKeywords { range, limit }).await.map_err(stopped)??)
            }
        })
    }
}
