//! Istio's bookinfo sample, emulated: images `*/examples-bookinfo-<service>-<version>:<tag>` for
//! productpage, details, reviews and ratings.
//!
//! Each app serves HTTP on its container ports (9080 if none are declared), bound to
//! [`ContainerContext::app_bind_ip`], and every response carries [`HEADER_POD`]. The call graph is the
//! real one and crosses the lab's service network: productpage calls details (`/details/0`) and reviews
//! (`/reviews/0`); reviews v2 and v3 call ratings (`/ratings/0`); v1 does not. Services are found with the
//! context's resolver (host `details`, or `DETAILS_HOSTNAME` / `SERVICES_DOMAIN` as in the real app) and
//! reached over real TCP to their ClusterIP.
//!
//! Deliberate deviations, so that a prober sees every failure as a non-2xx status:
//! - productpage answers `503` when details or reviews fails (the real app degrades to a `200` page that
//!   says "unavailable");
//! - reviews v2/v3 answer `503` when ratings fails (the real app returns `200` with a rating error).
//!
//! Connections to other services are not reused between calls (as in the real apps), unless env
//! `LAB_KEEPALIVE=true`.
//!
//! Lifecycle: like the generic container (serve through the grace period; `LAB_DRAIN_MS` to exit earlier).

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use super::generic::{serve, with_pod_header};
use super::{
    ContainerContext, ContainerError, ContainerFuture, ContainerImage, HEADER_POD, ServiceResolver, image_name,
};

/// The port every bookinfo service listens on and is called on.
pub const BOOKINFO_PORT: u16 = 9080;
/// Env var: `true` keeps connections to other services open between calls.
pub const KEEPALIVE_ENV: &str = "LAB_KEEPALIVE";
/// Connecting to another service.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// A whole call to another service (the real productpage uses 3 s; reviews' ratings call is shorter).
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
const RATINGS_TIMEOUT: Duration = Duration::from_millis(2500);
/// Headers the real apps forward to the services they call (tracing and user identity).
const PROPAGATED: [&str; 12] = [
    "x-request-id",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-ot-span-context",
    "traceparent",
    "tracestate",
    "b3",
    "end-user",
    "user-agent",
];

/// One of the four bookinfo services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum App {
    /// The front end.
    ProductPage,
    /// Book details.
    Details,
    /// Reviews (v1 without ratings, v2 black stars, v3 red stars).
    Reviews,
    /// Star ratings.
    Ratings,
}

/// A parsed bookinfo image: app and version (`v1`, `v2`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookinfoImage {
    /// The service.
    pub app: App,
    /// The version as in the image name (`v2`, or `v2-mysql` for the ratings variants).
    pub version: String,
}

impl BookinfoImage {
    /// The major version number (`v2-mysql` -> 2).
    pub fn number(&self) -> u32 {
        let digits: String = self.version.chars().skip(1).take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap_or(1)
    }
}

/// Parses an image's last path component without tag: `examples-bookinfo-reviews-v2` -> reviews v2.
pub fn parse_image(component: &str) -> Option<BookinfoImage> {
    let rest = component.strip_prefix("examples-bookinfo-")?;
    let apps = [
        ("productpage", App::ProductPage),
        ("details", App::Details),
        ("reviews", App::Reviews),
        ("ratings", App::Ratings),
    ];
    apps.into_iter().find_map(|(name, app)| {
        let version = rest.strip_prefix(name)?.strip_prefix('-')?;
        let mut chars = version.chars();
        let ok = chars.next() == Some('v') && chars.next().is_some_and(|c| c.is_ascii_digit());
        ok.then(|| BookinfoImage { app, version: version.to_owned() })
    })
}

/// The bookinfo emulation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bookinfo;

impl ContainerImage for Bookinfo {
    fn name(&self) -> &'static str {
        "bookinfo"
    }

    fn matches(&self, _pod: &Pod, container: &Container) -> bool {
        parse_image(image_name(container)).is_some()
    }

    fn start(&self, ctx: ContainerContext) -> ContainerFuture {
        Box::pin(run(ctx))
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// What every handler of one container shares.
struct AppState {
    image: BookinfoImage,
    namespace: String,
    /// `namespace/name`.
    pod: String,
    pod_name: String,
    resolve: ServiceResolver,
    http: HttpClient,
    details_host: String,
    reviews_host: String,
    ratings_host: String,
    star_color: String,
    ratings_enabled: bool,
}

async fn run(ctx: ContainerContext) -> Result<(), ContainerError> {
    let image = parse_image(image_name(&ctx.container))
        .ok_or_else(|| ContainerError::Config(format!("{:?} is not a bookinfo image", ctx.container.image)))?;
    let domain = ctx.env("SERVICES_DOMAIN").filter(|d| !d.is_empty()).map(|d| format!(".{d}")).unwrap_or_default();
    let host = |env: &str, default: &str| format!("{}{domain}", ctx.env(env).unwrap_or_else(|| default.to_owned()));
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_nodelay(true);
    // One client per container, but by default without idle connections: the real apps open a
    // connection per call (python `requests.get`, a JAX-RS client per request), so the service network's
    // per-connection round-robin spreads calls over every reviews version. Kept-alive connections would pin
    // productpage to one backend. `LAB_KEEPALIVE=true` keeps them (30 s idle) for tests that want that.
    let keepalive = ctx.env(KEEPALIVE_ENV).is_some_and(|v| v == "true");
    let http = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(if keepalive { 32 } else { 0 })
        .build(connector);
    let default_color = if image.number() >= 3 { "red" } else { "black" };
    let ratings_enabled = match ctx.env("ENABLE_RATINGS") {
        Some(v) => v == "true",
        None => image.number() >= 2,
    };
    let state = Arc::new(AppState {
        namespace: ctx.namespace().to_owned(),
        pod: format!("{}/{}", ctx.namespace(), ctx.pod_name()),
        pod_name: ctx.pod_name().to_owned(),
        resolve: ctx.resolve.clone(),
        http,
        details_host: host("DETAILS_HOSTNAME", "details"),
        reviews_host: host("REVIEWS_HOSTNAME", "reviews"),
        ratings_host: host("RATINGS_HOSTNAME", "ratings"),
        star_color: ctx.env("STAR_COLOR").unwrap_or_else(|| default_color.to_owned()),
        ratings_enabled,
        image,
    });
    let router = match state.image.app {
        App::ProductPage => Router::new()
            .route("/", get(index))
            .route("/health", get(|| async { "Product page is healthy" }))
            .route("/productpage", get(productpage))
            .route("/static/{*path}", get(static_file))
            .route("/login", get(login).post(login))
            .route("/logout", get(logout))
            .route("/api/v1/products", get(products))
            .route("/api/v1/products/{id}", get(product_details))
            .route("/api/v1/products/{id}/reviews", get(product_reviews))
            .route("/api/v1/products/{id}/ratings", get(product_ratings)),
        App::Details => Router::new()
            .route("/health", get(|| async { axum::Json(json!({ "status": "Details is healthy" })) }))
            .route("/details/{id}", get(details)),
        App::Reviews => Router::new()
            .route("/health", get(|| async { axum::Json(json!({ "status": "Reviews is healthy" })) }))
            .route("/reviews/{id}", get(reviews)),
        App::Ratings => Router::new()
            .route("/health", get(|| async { axum::Json(json!({ "status": "Ratings is healthy" })) }))
            .route("/ratings/{id}", get(ratings)),
    };
    let router = router.fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") }).with_state(state);
    let ports = match ctx.ports() {
        ports if ports.is_empty() => vec![BOOKINFO_PORT],
        ports => ports,
    };
    serve(&ctx, &ports, with_pod_header(router, &ctx)).await
}

/// A successful answer of another service.
#[derive(Debug)]
struct Downstream {
    /// Its [`HEADER_POD`].
    pod: String,
    body: Value,
}

impl AppState {
    /// `GET http://<host>:9080<path>` through the service network.
    async fn call(
        &self,
        host: &str,
        path: &str,
        incoming: &HeaderMap,
        timeout: Duration,
    ) -> Result<Downstream, String> {
        let addr: SocketAddrV4 = (self.resolve)(&self.namespace, host, BOOKINFO_PORT)
            .ok_or_else(|| format!("cannot resolve {host}:{BOOKINFO_PORT}"))?;
        let mut request =
            hyper::Request::get(format!("http://{addr}{path}")).header(header::HOST, format!("{host}:{BOOKINFO_PORT}"));
        for name in PROPAGATED {
            if let Some(value) = incoming.get(name) {
                request = request.header(name, value);
            }
        }
        let request = request.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| format!("{host} ({addr}): {e}"))?;
            let status = response.status();
            let pod = response.headers().get(HEADER_POD).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{host}: reading the answer: {e}"))?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("{host} answered {status} ({pod})"));
            }
            let body = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            Ok(Downstream { pod, body })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("{host} did not answer within {timeout:?}"))?
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// The numeric product id, or the 400 answer to give (boxed: a `Response` is large for an `Err`).
fn product_id(id: &str) -> Result<u64, Box<Response>> {
    id.parse().map_err(|_| {
        Box::new(json_response(StatusCode::BAD_REQUEST, json!({ "error": "please provide numeric product id" })))
    })
}

async fn index() -> Html<&'static str> {
    Html(
        "<!DOCTYPE html><html><head><title>Simple Bookstore App</title></head><body>\
         <h3>Hello! This is a simple bookstore application consisting of three services as shown below</h3>\
         <p><a href=\"/productpage?u=normal\">Normal user</a> <a href=\"/productpage?u=test\">Test user</a></p>\
         </body></html>\n",
    )
}

async fn static_file(Path(path): Path<String>) -> Response {
    let kind = if path.ends_with(".css") {
        "text/css"
    } else if path.ends_with(".js") {
        "application/javascript"
    } else {
        "text/plain"
    };
    ([(header::CONTENT_TYPE, kind)], format!("/* bookinfo static {path} */\n")).into_response()
}

async fn login() -> Response {
    ([(header::LOCATION, "/productpage"), (header::SET_COOKIE, "user=lab; Path=/")], StatusCode::FOUND).into_response()
}

async fn logout() -> Response {
    ([(header::LOCATION, "/productpage"), (header::SET_COOKIE, "user=; Path=/; Max-Age=0")], StatusCode::FOUND)
        .into_response()
}

async fn products() -> axum::Json<Value> {
    axum::Json(json!([{
        "id": 0,
        "title": "The Comedy of Errors",
        "descriptionHtml": "<a href=\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\">Wikipedia Summary</a>: The Comedy of Errors is one of <b>William Shakespeare's</b> early plays."
    }]))
}

async fn proxied(state: &AppState, host: &str, path: String, headers: &HeaderMap) -> Response {
    match state.call(host, &path, headers, CALL_TIMEOUT).await {
        Ok(d) => json_response(StatusCode::OK, d.body),
        Err(err) => json_response(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": err })),
    }
}

async fn product_details(State(s): State<Arc<AppState>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    match product_id(&id) {
        Ok(id) => proxied(&s, &s.details_host, format!("/details/{id}"), &headers).await,
        Err(r) => *r,
    }
}

async fn product_reviews(State(s): State<Arc<AppState>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    match product_id(&id) {
        Ok(id) => proxied(&s, &s.reviews_host, format!("/reviews/{id}"), &headers).await,
        Err(r) => *r,
    }
}

async fn product_ratings(State(s): State<Arc<AppState>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    match product_id(&id) {
        Ok(id) => proxied(&s, &s.ratings_host, format!("/ratings/{id}"), &headers).await,
        Err(r) => *r,
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The page: details and reviews side by side; 503 if either is missing (see the module docs).
async fn productpage(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let (details, reviews) = tokio::join!(
        s.call(&s.details_host, "/details/0", &headers, CALL_TIMEOUT),
        s.call(&s.reviews_host, "/reviews/0", &headers, CALL_TIMEOUT),
    );
    let section = |id: &str, result: &Result<Downstream, String>| match result {
        Ok(d) => format!("<div id=\"{id}\" data-pod=\"{}\">{}</div>", escape(&d.pod), escape(&d.body.to_string())),
        Err(err) => format!(
            "<div id=\"{id}\" class=\"error\">Sorry, product {id} are currently unavailable: {}</div>",
            escape(err)
        ),
    };
    let page = format!(
        "<!DOCTYPE html><html><head><title>Simple Bookstore App</title></head><body>\
         <h3>The Comedy of Errors</h3>{}{}<p id=\"served-by\">{}</p></body></html>\n",
        section("details", &details),
        section("reviews", &reviews),
        escape(&s.pod),
    );
    let status = if details.is_ok() && reviews.is_ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    if let (Err(err), _) | (_, Err(err)) = (&details, &reviews) {
        tracing::debug!(pod = s.pod, err, "productpage: a backend call failed");
    }
    (status, Html(page)).into_response()
}

async fn details(Path(id): Path<String>) -> Response {
    match product_id(&id) {
        Ok(id) => json_response(
            StatusCode::OK,
            json!({
                "id": id, "author": "William Shakespeare", "year": 1595, "type": "paperback", "pages": 200,
                "publisher": "PublisherA", "language": "English", "ISBN-10": "1234567890", "ISBN-13": "123-1234567890"
            }),
        ),
        Err(r) => *r,
    }
}

const REVIEWS: [(&str, &str); 2] = [
    ("Reviewer1", "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"),
    (
        "Reviewer2",
        "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.",
    ),
];

/// The reviews JSON; `stars` is `None` for v1 (no ratings).
fn reviews_body(id: u64, pod_name: &str, version: &str, stars: Option<(&BTreeMap<String, i64>, &str)>) -> Value {
    let reviews: Vec<Value> = REVIEWS
        .iter()
        .map(|(reviewer, text)| {
            let mut review = json!({ "reviewer": reviewer, "text": text });
            if let Some((ratings, color)) = stars {
                let count = ratings.get(*reviewer).copied().unwrap_or(0);
                review["rating"] = json!({ "stars": count, "color": color });
            }
            review
        })
        .collect();
    json!({ "id": id.to_string(), "podname": pod_name, "clustername": "null", "version": version, "reviews": reviews })
}

async fn reviews(State(s): State<Arc<AppState>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let id = match product_id(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    if !s.ratings_enabled {
        return json_response(StatusCode::OK, reviews_body(id, &s.pod_name, &s.image.version, None));
    }
    match s.call(&s.ratings_host, &format!("/ratings/{id}"), &headers, RATINGS_TIMEOUT).await {
        Ok(d) => {
            let ratings: BTreeMap<String, i64> =
                d.body.get("ratings").and_then(|r| serde_json::from_value(r.clone()).ok()).unwrap_or_default();
            json_response(
                StatusCode::OK,
                reviews_body(id, &s.pod_name, &s.image.version, Some((&ratings, &s.star_color))),
            )
        }
        Err(err) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": "Ratings service is currently unavailable", "detail": err, "version": s.image.version }),
        ),
    }
}

async fn ratings(Path(id): Path<String>) -> Response {
    match product_id(&id) {
        Ok(id) => json_response(StatusCode::OK, json!({ "id": id, "ratings": { "Reviewer1": 5, "Reviewer2": 4 } })),
        Err(r) => *r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bookinfo_images() {
        let p = |s| parse_image(s);
        assert_eq!(
            p("examples-bookinfo-productpage-v1"),
            Some(BookinfoImage { app: App::ProductPage, version: "v1".into() })
        );
        assert_eq!(p("examples-bookinfo-reviews-v3").map(|i| (i.app, i.number())), Some((App::Reviews, 3)));
        assert_eq!(p("examples-bookinfo-ratings-v2-mysql").map(|i| (i.app, i.number())), Some((App::Ratings, 2)));
        assert_eq!(p("examples-bookinfo-details-v1").map(|i| i.app), Some(App::Details));
        assert_eq!(p("examples-bookinfo-productpage-v-flooding"), None);
        assert_eq!(p("examples-bookinfo-mongodb"), None);
        assert_eq!(p("examples-bookinfo-reviewsv1"), None);
        assert_eq!(p("proxyv2"), None);
    }

    #[test]
    fn matches_images_by_their_last_component() {
        let container = |image: &str| -> Container {
            serde_json::from_value(json!({ "name": "c", "image": image })).expect("container")
        };
        let pod = Pod::default();
        assert!(Bookinfo.matches(&pod, &container("docker.io/istio/examples-bookinfo-details-v1:1.16.2")));
        assert!(Bookinfo.matches(&pod, &container("istio/examples-bookinfo-reviews-v2:1.20.2")));
        assert!(!Bookinfo.matches(&pod, &container("docker.io/istio/proxyv2:1.9.7")));
    }

    #[test]
    fn reviews_carry_stars_only_from_v2() {
        let ratings = BTreeMap::from([("Reviewer1".to_owned(), 5), ("Reviewer2".to_owned(), 4)]);
        let v1 = reviews_body(0, "reviews-v1-abc", "v1", None);
        assert!(v1["reviews"][0].get("rating").is_none());
        assert_eq!(v1["version"], "v1");
        let v3 = reviews_body(0, "reviews-v3-abc", "v3", Some((&ratings, "red")));
        assert_eq!(v3["reviews"][0]["rating"], json!({ "stars": 5, "color": "red" }));
        assert_eq!(v3["reviews"][1]["rating"]["stars"], 4);
        assert_eq!(v3["podname"], "reviews-v3-abc");
    }
}
