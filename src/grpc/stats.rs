//! `loganalyzer.v1.Stats`: each method is its REST route. The request's fields become the route's
//! query string, the route's own handler answers (the same parsing, use case, source choice and
//! messages), and its JSON fills the reply, whose fields share the REST answer's names.

use actix_web::web;
use serde::de::DeserializeOwned;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::pb::stats_server::{Stats, StatsServer};
use super::pb::{
    ErrorsReply, ErrorsRequest, KeywordsReply, KeywordsRequest, SummaryReply, SummaryRequest, TopKeywordsReply,
    TopKeywordsRequest,
};
use super::{http_request, status, Actix};
use crate::http::{routes, summary, AppState};

pub(super) struct StatsApi {
    state: web::Data<AppState>,
    actix: Actix,
}

pub(super) fn service(state: web::Data<AppState>, actix: Actix) -> StatsServer<StatsApi> {
    StatsServer::new(StatsApi { state, actix })
}

/// The REST routes behind the methods.
#[derive(Clone, Copy)]
enum Route {
    Errors,
    Keywords,
    TopKeywords,
    Summary,
}

impl Route {
    fn path(self) -> &'static str {
        match self {
            Route::Errors => "/stats/errors",
            Route::Keywords => "/stats/keywords",
            Route::TopKeywords => "/stats/keywords/top",
            Route::Summary => "/stats/summary",
        }
    }
}

/// `name=value&…` of the fields that are set (empty or zero is "not given", as an absent parameter).
fn query(fields: &[(&str, String)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in fields.iter().filter(|(_, value)| !value.is_empty()) {
        query.append_pair(name, value);
    }
    query.finish()
}

fn number(n: u32) -> String {
    if n == 0 {
        String::new()
    } else {
        n.to_string()
    }
}

impl StatsApi {
    async fn answer<T: DeserializeOwned>(
        &self,
        route: Route,
        query: String,
        metadata: &MetadataMap,
    ) -> Result<Response<T>, Status> {
        let state = self.state.clone();
        let metadata = metadata.clone();
        let body = self
            .actix
            .run(move || async move {
                let req = http_request(&format!("{}?{query}", route.path()), &metadata);
                let response = match route {
                    Route::Errors => routes::errors(req, state).await,
                    Route::Keywords => routes::keywords(req, state).await,
                    Route::TopKeywords => routes::top_keywords(req, state).await,
                    Route::Summary => summary::summary(req, state).await,
                }
                .map_err(status)?;
                actix_web::body::to_bytes(response.into_body())
                    .await
                    .map_err(|e| Status::internal(format!("reading the answer: {e}")))
            })
            .await??;
        serde_json::from_slice(&body)
            .map(Response::new)
            .map_err(|e| Status::internal(format!("the answer does not fit the reply message: {e}")))
    }
}

#[tonic::async_trait]
impl Stats for StatsApi {
    async fn errors(&self, request: Request<ErrorsRequest>) -> Result<Response<ErrorsReply>, Status> {
        let r = request.get_ref();
        let q = query(&[
            ("window", r.window.clone()),
            ("service", r.service.clone()),
            ("at", r.at.clone()),
            ("source", r.source.clone()),
            ("limit", number(r.limit)),
        ]);
        self.answer(Route::Errors, q, request.metadata()).await
    }

    async fn keywords(&self, request: Request<KeywordsRequest>) -> Result<Response<KeywordsReply>, Status> {
        let r = request.get_ref();
        let q = query(&[
            ("q", r.q.clone()),
            ("window", r.window.clone()),
            ("service", r.service.clone()),
            ("at", r.at.clone()),
            ("source", r.source.clone()),
        ]);
        self.answer(Route::Keywords, q, request.metadata()).await
    }

    async fn top_keywords(&self, request: Request<TopKeywordsRequest>) -> Result<Response<TopKeywordsReply>, Status> {
        let r = request.get_ref();
        let q = query(&[
            ("window", r.window.clone()),
            ("limit", number(r.limit)),
            ("at", r.at.clone()),
            ("source", r.source.clone()),
        ]);
        self.answer(Route::TopKeywords, q, request.metadata()).await
    }

    async fn summary(&self, request: Request<SummaryRequest>) -> Result<Response<SummaryReply>, Status> {
        let r = request.get_ref();
        let q = query(&[("date", r.date.clone()), ("user_id", r.user_id.clone()), ("limit", number(r.limit))]);
        self.answer(Route::Summary, q, request.metadata()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_given_fields_become_parameters_and_values_are_escaped() {
        let q =
            query(&[("window", "5m".into()), ("service", String::new()), ("at", "2026-01-01T00:00:00+01:00".into())]);
        assert_eq!(q, "window=5m&at=2026-01-01T00%3A00%3A00%2B01%3A00");
        assert_eq!(number(0), "");
    }
}
