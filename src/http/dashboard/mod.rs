//! The live dashboard: the page at `/` (its assets compiled in, so it works offline) and its
//! WebSocket `/ws`, on the public listener; the operator's copy on the admin listener adds the
//! actors' mailboxes and the partitions' lag.

pub mod feed;
pub mod session;

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

pub use feed::{DashboardFeed, FeedSources};

const PAGE: &str = include_str!("../../../assets/dashboard/index.html");
const SCRIPT: &str = include_str!("../../../assets/dashboard/dashboard.js");
const STYLE: &str = include_str!("../../../assets/dashboard/dashboard.css");
const ICON: &str = include_str!("../../../assets/dashboard/favicon.svg");

/// Who the page is for: everyone (public listener) or operators (admin listener).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Audience {
    Public,
    Operator,
}

/// What the page's script needs to know before its first call.
#[derive(Debug)]
pub struct PageSettings {
    pub audience: Audience,
    /// Whether calls need a JWT (the page then asks for one).
    pub token_required: bool,
    /// Whether `GET /logs` and `GET /logs/tail` are served here: without them the search box and the
    /// tail say so instead of asking.
    pub search: bool,
    pub tail: bool,
}

/// The page, with its settings on `<body>`.
pub fn page_html(settings: &PageSettings) -> String {
    let on = |b: bool| if b { "on" } else { "off" };
    PAGE.replace("{{AUDIENCE}}", if settings.audience == Audience::Operator { "operator" } else { "public" })
        .replace("{{AUTH}}", if settings.token_required { "jwt" } else { "open" })
        .replace("{{SEARCH}}", on(settings.search))
        .replace("{{TAIL}}", on(settings.tail))
}

/// The page's own files only; nothing from elsewhere (no CDN), and the WebSocket back to this host.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
     style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// Answers the page with the headers it needs.
pub fn page_response(settings: &PageSettings) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(page_html(settings))
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        // Compiled into the binary: a new build is a new page, so the browser asks again each load.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

async fn icon() -> HttpResponse {
    asset("image/svg+xml", ICON)
}

/// The assets, on either listener.
pub fn assets(cfg: &mut web::ServiceConfig) {
    cfg.route("/assets/dashboard.js", web::get().to(script))
        .route("/assets/dashboard.css", web::get().to(style))
        .route("/assets/favicon.svg", web::get().to(icon))
        .route("/favicon.ico", web::get().to(icon));
}

/// `GET /` of the public listener.
pub async fn public_page(req: HttpRequest, state: web::Data<super::AppState>) -> HttpResponse {
    let routes = req.resource_map();
    page_response(&PageSettings {
        audience: Audience::Public,
        token_required: !state.auth.is_open(),
        search: routes.has_resource("/logs"),
        tail: routes.has_resource("/logs/tail"),
    })
}

/// `GET /ws` of the public listener: the token is checked by the same `Auth` as every route.
pub async fn public_socket(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<super::AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let check: Option<session::TokenCheck> = (!state.auth.is_open()).then(|| {
        let state = state.clone();
        Arc::new(move |token: &str| state.auth.token_expiry(token).map_err(|e| e.to_string())) as session::TokenCheck
    });
    let log = super::request_log(&req, &state.log);
    session::open(&req, body, state.dashboard.clone(), check, log)
}

/// `GET /ws` of the admin listener: as private as `/debug/actors`, so no token.
pub async fn operator_socket(
    req: HttpRequest,
    body: web::Payload,
    feed: web::Data<Arc<DashboardFeed>>,
) -> Result<HttpResponse, actix_web::Error> {
    let log = slog::Logger::root(slog::Discard, slog::o!());
    session::open(&req, body, feed.get_ref().clone(), None, log)
}

/// The dashboard's routes on the admin listener.
pub fn operator_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(operator_page)).route("/ws", web::get().to(operator_socket)).configure(assets);
}

/// `GET /` of the admin listener.
pub async fn operator_page() -> HttpResponse {
    page_response(&PageSettings { audience: Audience::Operator, token_required: false, search: false, tail: false })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Polls `done` (up to 5 s) for what another task does.
    pub async fn wait_for(mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "not done in 5 s");
            actix_rt::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn the_page_carries_its_settings_and_loads_nothing_from_elsewhere() {
        let html =
            page_html(&PageSettings { audience: Audience::Operator, token_required: true, search: true, tail: false });
        assert!(html.contains(r#"data-audience="operator""#), "{html}");
        assert!(html.contains(r#"data-auth="jwt""#));
        assert!(html.contains(r#"data-search="on""#) && html.contains(r#"data-tail="off""#));
        assert!(!html.contains("{{"), "every placeholder filled");
        for text in [PAGE, SCRIPT, STYLE] {
            // The SVG namespace is a name, not an address the page loads.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            for far in ["http://", "https://", "//cdn", "EventSource("] {
                assert!(!text.contains(far), "{far} in an asset");
            }
        }
    }
}
