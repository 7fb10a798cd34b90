//! The sample shop API: endpoints with distinct latency profiles, a
//! payment provider behind a circuit breaker, fault injection, and
//! OpenTelemetry metrics following the HTTP semantic conventions.

pub mod breaker;
pub mod faults;
pub mod telemetry;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use opentelemetry::KeyValue;
use rand::Rng;
use serde::Deserialize;
use serde_json::json;

use crate::breaker::{CircuitBreaker, Permit};
use crate::faults::{FaultState, FaultUpdate};
use crate::telemetry::ShopMetrics;

pub struct AppState {
    pub faults: FaultState,
    pub breaker: Arc<CircuitBreaker>,
    pub metrics: ShopMetrics,
    next_order: AtomicU64,
}

impl AppState {
    pub fn new(faults: faults::Faults, metrics: ShopMetrics, breaker: Arc<CircuitBreaker>) -> Arc<Self> {
        Arc::new(AppState { faults: FaultState::new(faults), breaker, metrics, next_order: AtomicU64::new(1) })
    }
}

type Shared = Arc<AppState>;

/// The router with all endpoints and the metrics middleware.
pub fn app(state: Shared) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/api/products", get(products))
        .route("/api/orders", post(create_order))
        .route("/api/reports", get(reports))
        .route("/api/search", get(search))
        .route("/api/payments", post(payment))
        .route("/admin/faults", get(get_faults).post(set_faults))
        // The layer added last is the outermost: injected errors must pass
        // through the metrics layer to be measured like real ones.
        .layer(middleware::from_fn_with_state(state.clone(), inject_errors))
        .layer(middleware::from_fn_with_state(state.clone(), http_metrics))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// Records `http.server.*` metrics for every request.
async fn http_metrics(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_string();
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let req_size = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let active_attrs = [KeyValue::new("http.request.method", method.clone()), KeyValue::new("url.scheme", "http")];
    st.metrics.active_requests.add(1, &active_attrs);
    let start = Instant::now();
    let resp = next.run(req).await;
    let elapsed = start.elapsed().as_secs_f64();
    st.metrics.active_requests.add(-1, &active_attrs);
    let status = resp.status().as_u16();
    let mut attrs = vec![
        KeyValue::new("http.request.method", method),
        KeyValue::new("url.scheme", "http"),
        KeyValue::new("http.response.status_code", status as i64),
        KeyValue::new("network.protocol.version", "1.1"),
    ];
    if let Some(r) = route {
        attrs.push(KeyValue::new("http.route", r));
    }
    if status >= 500 {
        attrs.push(KeyValue::new("error.type", status.to_string()));
    }
    let resp_size = axum::body::HttpBody::size_hint(resp.body()).exact().unwrap_or(0);
    st.metrics.request_duration.record(elapsed, &attrs);
    st.metrics.request_body_size.record(req_size, &attrs);
    st.metrics.response_body_size.record(resp_size, &attrs);
    resp
}

/// Fails /api requests at the configured error rate (applied inside the
/// metrics layer so injected errors are measured like real ones).
async fn inject_errors(State(st): State<Shared>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/api/") {
        let f = st.faults.current();
        if f.error_rate > 0.0 && rand::rng().random_bool(f.error_rate.clamp(0.0, 1.0)) {
            simulate(&st, 2, 10).await;
            return error(StatusCode::INTERNAL_SERVER_ERROR, "injected fault (error_rate)");
        }
    }
    next.run(req).await
}

/// Simulated work of `min..max` ms, scaled by the latency multiplier.
async fn simulate(st: &AppState, min_ms: u64, max_ms: u64) {
    let base = rand::rng().random_range(min_ms..=max_ms) as f64;
    let ms = base * st.faults.current().latency_multiplier;
    tokio::time::sleep(Duration::from_micros((ms * 1000.0) as u64)).await;
}

async fn health() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

async fn products(State(st): State<Shared>) -> Response {
    let hit = rand::rng().random_bool(0.8);
    let cache = if hit { &st.metrics.cache_hits } else { &st.metrics.cache_misses };
    cache.add(1, &[KeyValue::new("cache.name", "products")]);
    simulate(&st, if hit { 1 } else { 5 }, if hit { 3 } else { 15 }).await;
    Json(json!({"products": [
        {"id": 1, "name": "keyboard", "price": 49.0},
        {"id": 2, "name": "mouse", "price": 19.5},
        {"id": 3, "name": "monitor", "price": 199.0},
    ]}))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderRequest {
    product_id: i64,
    quantity: i64,
}

async fn create_order(State(st): State<Shared>, body: Result<Json<OrderRequest>, JsonRejection>) -> Response {
    let order = match body {
        Ok(Json(o)) => o,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid order: {}; expected JSON {{\"product_id\": int, \"quantity\": int}}", e.body_text()),
            );
        }
    };
    if order.product_id <= 0 {
        return error(StatusCode::BAD_REQUEST, "invalid order: product_id must be a positive integer");
    }
    if !(1..=1000).contains(&order.quantity) {
        return error(StatusCode::BAD_REQUEST, "invalid order: quantity must be between 1 and 1000");
    }
    simulate(&st, 20, 50).await;
    let id = st.next_order.fetch_add(1, Ordering::Relaxed);
    st.metrics.orders_created.add(1, &[]);
    (StatusCode::CREATED, Json(json!({"order_id": id, "product_id": order.product_id, "quantity": order.quantity})))
        .into_response()
}

async fn reports(State(st): State<Shared>) -> Response {
    simulate(&st, 200, 500).await;
    Json(json!({"report": "daily-sales", "rows": 42})).into_response()
}

#[derive(Deserialize)]
struct SearchQuery {
    q: Option<String>,
}

async fn search(State(st): State<Shared>, Query(q): Query<SearchQuery>) -> Response {
    // Variable: most searches are quick, some scan a lot.
    let heavy = rand::rng().random_bool(0.2);
    if heavy {
        simulate(&st, 100, 300).await;
    } else {
        simulate(&st, 5, 40).await;
    }
    Json(json!({"query": q.q.unwrap_or_default(), "results": if heavy { 120 } else { 3 }})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentRequest {
    order_id: i64,
    amount: f64,
}

async fn payment(State(st): State<Shared>, body: Result<Json<PaymentRequest>, JsonRejection>) -> Response {
    let p = match body {
        Ok(Json(p)) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid payment: {}; expected JSON {{\"order_id\": int, \"amount\": number}}", e.body_text()),
            );
        }
    };
    if p.order_id <= 0 {
        return error(StatusCode::BAD_REQUEST, "invalid payment: order_id must be a positive integer");
    }
    if !p.amount.is_finite() || p.amount <= 0.0 {
        return error(StatusCode::BAD_REQUEST, "invalid payment: amount must be a positive number");
    }
    let outcome = |o: &str| [KeyValue::new("outcome", o.to_string())];
    if st.breaker.acquire() == Permit::Rejected {
        st.metrics.payments.add(1, &outcome("circuit_open"));
        return error(StatusCode::SERVICE_UNAVAILABLE, "payment provider unavailable (circuit breaker open)");
    }
    simulate(&st, 30, 80).await;
    let fail_rate = st.faults.current().payment_failure_rate;
    let failed = fail_rate > 0.0 && rand::rng().random_bool(fail_rate.clamp(0.0, 1.0));
    st.breaker.record(!failed);
    if failed {
        st.metrics.payments.add(1, &outcome("failed"));
        return error(StatusCode::BAD_GATEWAY, "payment provider error");
    }
    st.metrics.payments.add(1, &outcome("success"));
    Json(json!({"order_id": p.order_id, "amount": p.amount, "status": "paid"})).into_response()
}

async fn get_faults(State(st): State<Shared>) -> Response {
    Json(st.faults.current()).into_response()
}

async fn set_faults(State(st): State<Shared>, body: Result<Json<FaultUpdate>, JsonRejection>) -> Response {
    let u = match body {
        Ok(Json(u)) => u,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid fault update: {}", e.body_text())),
    };
    match st.faults.update(&u) {
        Ok(f) => {
            tracing::info!(?f, duration_seconds = ?u.duration_seconds, "faults changed");
            Json(f).into_response()
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}
