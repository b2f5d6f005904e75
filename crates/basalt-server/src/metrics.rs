//! `GET /metrics` in the Prometheus text format: requests and errors by operation,
//! tokens, time to first token and latency per model, and each text model's queue,
//! batch and KV-cache load (read from the engine at scrape time).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::edge::ERROR_TYPE;
use crate::loaded::Loaded;
use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    operation: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabels {
    destination: String,
}

/// Model invocation log records delivered and lost, by destination (`s3`, `cloudwatch`,
/// or `queue` for records dropped before any destination). Clones share the counts.
#[derive(Clone, Default)]
pub struct InvocationLogCounters {
    delivered: Family<DestinationLabels, Counter>,
    failed: Family<DestinationLabels, Counter>,
}

impl InvocationLogCounters {
    pub fn delivered(&self, destination: &str, records: u64) {
        self.delivered
            .get_or_create(&DestinationLabels {
                destination: destination.to_string(),
            })
            .inc_by(records);
    }

    pub fn failed(&self, destination: &str, records: u64) {
        self.failed
            .get_or_create(&DestinationLabels {
                destination: destination.to_string(),
            })
            .inc_by(records);
    }
}

type Seconds = Family<ModelLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<OperationLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    request_seconds: Family<OperationLabels, Histogram, fn() -> Histogram>,
    input_tokens: Family<ModelLabels, Counter>,
    output_tokens: Family<ModelLabels, Counter>,
    first_token_seconds: Seconds,
    generation_seconds: Seconds,
    queued: Family<ModelLabels, Gauge>,
    running: Family<ModelLabels, Gauge>,
    slots: Family<ModelLabels, Gauge>,
    kv_used: Family<ModelLabels, Gauge>,
    kv_total: Family<ModelLabels, Gauge>,
    kept_prefix: Family<ModelLabels, Gauge>,
    loaded: Family<ModelLabels, Gauge>,
    invocation_log: InvocationLogCounters,
}

/// 5 ms to about 80 s: CountTokens answers in milliseconds, long generations take a minute.
fn latency_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 15,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("basalt");
        let requests = Family::<OperationLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let request_seconds: Family<OperationLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_buckets);
        let input_tokens = Family::<ModelLabels, Counter>::default();
        let output_tokens = Family::<ModelLabels, Counter>::default();
        let first_token_seconds: Seconds = Family::new_with_constructor(latency_buckets);
        let generation_seconds: Seconds = Family::new_with_constructor(latency_buckets);
        let gauges: [Family<ModelLabels, Gauge>; 6] = Default::default();
        let [queued, running, slots, kv_used, kv_total, kept_prefix] = gauges;
        registry.register("requests", "Requests by operation", requests.clone());
        registry.register(
            "errors",
            "Failed requests by operation and Bedrock error code",
            errors.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to the response head (for streams, to the stream's start)",
            request_seconds.clone(),
        );
        registry.register(
            "input_tokens",
            "Prompt tokens by model",
            input_tokens.clone(),
        );
        registry.register(
            "output_tokens",
            "Generated tokens by model",
            output_tokens.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "From admission to the first output token, by model",
            first_token_seconds.clone(),
        );
        registry.register(
            "generation_duration_seconds",
            "Whole generations, by model",
            generation_seconds.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests waiting for a batch slot",
            queued.clone(),
        );
        registry.register(
            "batch_running",
            "Sequences in the decode batch",
            running.clone(),
        );
        registry.register(
            "batch_slots",
            "Sequences the decode batch can hold",
            slots.clone(),
        );
        registry.register(
            "kv_cache_cells_used",
            "KV-cache cells held by running sequences and kept prefixes",
            kv_used.clone(),
        );
        registry.register("kv_cache_cells", "KV-cache cells in all", kv_total.clone());
        registry.register(
            "kv_cache_kept_prefix_cells",
            "KV-cache cells held by kept prompt prefixes",
            kept_prefix.clone(),
        );
        let loaded = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "model_loaded",
            "1 while a local model is resident, 0 while it is unloaded or loading",
            loaded.clone(),
        );
        let invocation_log = InvocationLogCounters::default();
        registry.register(
            "invocation_log_records",
            "Model invocation log records delivered, by destination",
            invocation_log.delivered.clone(),
        );
        registry.register(
            "invocation_log_failures",
            "Model invocation log records that could not be delivered, by destination",
            invocation_log.failed.clone(),
        );
        Self {
            registry,
            requests,
            errors,
            request_seconds,
            input_tokens,
            output_tokens,
            first_token_seconds,
            generation_seconds,
            queued,
            running,
            slots,
            kv_used,
            kv_total,
            kept_prefix,
            loaded,
            invocation_log,
        }
    }

    /// The counters model invocation logging reports to.
    pub fn invocation_log(&self) -> InvocationLogCounters {
        self.invocation_log.clone()
    }

    /// Counts one finished generation (or embedding call, with no output tokens).
    pub fn generation(
        &self,
        model: &str,
        input_tokens: u32,
        output_tokens: u32,
        first_token_ms: Option<u64>,
        total_ms: u64,
    ) {
        let labels = ModelLabels {
            model: model.to_string(),
        };
        self.input_tokens
            .get_or_create(&labels)
            .inc_by(input_tokens.into());
        self.output_tokens
            .get_or_create(&labels)
            .inc_by(output_tokens.into());
        if let Some(ms) = first_token_ms {
            self.first_token_seconds
                .get_or_create(&labels)
                .observe(ms as f64 / 1000.0);
        }
        self.generation_seconds
            .get_or_create(&labels)
            .observe(total_ms as f64 / 1000.0);
    }

    fn refresh_load(&self, state: &AppState) {
        for name in state.catalog.local_models().keys() {
            // Peek: a scrape must neither load a model nor keep one from going idle.
            let resident = state.models.peek(name);
            self.loaded
                .get_or_create(&ModelLabels {
                    model: name.clone(),
                })
                .set(i64::from(resident.is_some()));
            let Some(Loaded::Text(model)) = resident else {
                continue;
            };
            let load = model.load_now();
            let labels = ModelLabels {
                model: name.clone(),
            };
            let set = |family: &Family<ModelLabels, Gauge>, v: usize| {
                family.get_or_create(&labels).set(v as i64);
            };
            set(&self.queued, load.queued);
            set(&self.running, load.running);
            set(&self.slots, load.slots);
            set(&self.kv_used, load.kv_cells_used);
            set(&self.kv_total, load.kv_cells_total);
            set(&self.kept_prefix, load.kept_prefix_tokens);
        }
    }
}

/// The operation a matched route serves (the route itself for one without a name).
fn operation(method: &str, route: &str) -> String {
    crate::operations::name(method, route).map_or_else(|| route.to_string(), str::to_string)
}

/// Counts every request that reached a route: its operation, outcome and duration.
pub async fn record(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let operation = match route {
        Some(route) => operation(&method, &route),
        None => "unknown".to_string(),
    };
    let labels = OperationLabels { operation };
    state.metrics.requests.get_or_create(&labels).inc();
    state
        .metrics
        .request_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    if let Some(code) = response
        .headers()
        .get(ERROR_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        state
            .metrics
            .errors
            .get_or_create(&ErrorLabels {
                operation: labels.operation,
                code: code.to_string(),
            })
            .inc();
    }
    response
}

pub async fn scrape(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.refresh_load(&state);
    let mut body = String::new();
    if encode(&mut body, &state.metrics.registry).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed").into_response();
    }
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_their_operations() {
        assert_eq!(operation("POST", "/model/{model_id}/converse"), "Converse");
        assert_eq!(
            operation("PUT", "/guardrails/{guardrail_identifier}"),
            "UpdateGuardrail"
        );
        assert_eq!(operation("GET", "/elsewhere"), "/elsewhere");
    }

    #[test]
    fn counts_appear_in_the_text_format() {
        let m = Metrics::new();
        m.generation("anthropic.claude-3-haiku", 12, 5, Some(40), 400);
        let mut body = String::new();
        encode(&mut body, &m.registry).expect("encodes");
        assert!(
            body.contains("basalt_input_tokens_total{model=\"anthropic.claude-3-haiku\"} 12"),
            "{body}"
        );
        assert!(
            body.contains("basalt_output_tokens_total{model=\"anthropic.claude-3-haiku\"} 5"),
            "{body}"
        );
        assert!(
            body.contains(
                "basalt_time_to_first_token_seconds_count{model=\"anthropic.claude-3-haiku\"} 1"
            ),
            "{body}"
        );
    }
}
