//! The HTTP edge of Basalt: one listener serves bedrock-runtime and the
//! bedrock control plane. Routing happens on the raw (still percent-encoded)
//! path; path labels are decoded per segment by the extractor. Every request
//! but `/health` is SigV4-verified, and every response carries
//! `x-amzn-RequestId`.

pub mod api_keys;
pub mod async_invoke;
pub mod auth;
pub mod authorization;
pub mod batch;
pub mod control;
pub mod edge;
pub mod guarded;
pub mod guardrails;
pub mod idempotency;
pub mod images;
pub mod invocation_logging;
pub mod kb_embedder;
pub mod keys;
pub mod knowledge_bases;
pub mod listing;
pub mod loaded;
pub mod metrics;
pub mod model_import;
pub mod operations;
pub mod provisioned;
pub mod quotas;
pub mod record_invoker;
pub mod retrieval;
pub mod runtime;
pub mod stream;
pub mod tls;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use basalt_catalog::Catalog;
use basalt_proto::{BedrockError, ErrorCode};
use tracing::Instrument;

pub use keys::{Credentials, KeyStore, RootSource};
pub use loaded::{EngineSettings, LoadedModels};

pub struct AppState {
    pub catalog: Catalog,
    pub models: LoadedModels,
    pub keys: KeyStore,
    /// Present when the server has a data directory to keep guardrails in.
    pub guardrails: Option<guardrails::Guardrails>,
    pub metrics: metrics::Metrics,
    /// Bedrock API keys (bearer tokens); present when there is a data directory.
    pub api_keys: Option<api_keys::ApiKeys>,
    /// Batch inference jobs; present when there is a data directory.
    pub batch: Option<Arc<batch::BatchRunner>>,
    /// Knowledge bases and their ingestion; present when there is a data directory.
    pub knowledge: Option<Arc<basalt_knowledge::ingestion::Ingestor>>,
    /// Provisioned throughputs; present when there is a data directory.
    pub provisioned: Option<provisioned::ProvisionedThroughputs>,
    /// On-demand requests-per-minute and tokens-per-minute quotas.
    pub quotas: quotas::Quotas,
    /// The server's account (`--account-id`): the root key's, and that of every key
    /// made without an account of its own. Each request acts in its key's account.
    pub account_id: String,
    /// Longest a generation may run before ModelTimeoutException.
    pub model_timeout: Option<std::time::Duration>,
    /// Model invocation logging; present when there is a data directory.
    pub invocation_logging: Option<Arc<invocation_logging::InvocationLogging>>,
    /// Custom model import jobs; present when there is a data directory.
    pub model_imports: Option<Arc<model_import::ModelImports>>,
}

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/model/{model_id}/invoke", post(runtime::invoke_model))
        .route(
            "/model/{model_id}/invoke-with-response-stream",
            post(runtime::invoke_model_stream),
        )
        .route("/model/{model_id}/converse", post(runtime::converse))
        .route(
            "/model/{model_id}/converse-stream",
            post(runtime::converse_stream),
        )
        .route(
            "/model/{model_id}/count-tokens",
            post(runtime::count_tokens),
        )
        .route(
            "/guardrail/{guardrail_identifier}/version/{guardrail_version}/apply",
            post(guardrails::apply_guardrail),
        )
        .route("/foundation-models", get(control::list_foundation_models))
        .route(
            "/guardrails",
            get(guardrails::list_guardrails).post(guardrails::create_guardrail),
        )
        .route(
            "/guardrails/{guardrail_identifier}",
            get(guardrails::get_guardrail)
                .put(guardrails::update_guardrail)
                .delete(guardrails::delete_guardrail)
                .post(guardrails::create_guardrail_version),
        )
        .route(
            "/foundation-models/{model_identifier}",
            get(control::get_foundation_model),
        )
        .route(
            "/async-invoke",
            get(async_invoke::list_async_invokes).post(async_invoke::start_async_invoke),
        )
        .route(
            "/async-invoke/{invocation_arn}",
            get(async_invoke::get_async_invoke),
        )
        .route("/model-invocation-job", post(batch::create_job))
        .route(
            "/model-invocation-job/{job_identifier}",
            get(batch::get_job),
        )
        .route(
            "/model-invocation-job/{job_identifier}/stop",
            post(batch::stop_job),
        )
        .route("/model-invocation-jobs", get(batch::list_jobs))
        .route(
            "/model-import-jobs",
            post(model_import::create_job).get(model_import::list_jobs),
        )
        .route(
            "/model-import-jobs/{job_identifier}",
            get(model_import::get_job),
        )
        .route("/imported-models", get(model_import::list_models))
        .route(
            "/imported-models/{model_identifier}",
            get(model_import::get_model).delete(model_import::delete_model),
        )
        .merge(knowledge_routes())
        .route(
            "/provisioned-model-throughput",
            post(provisioned::create_provisioned_model_throughput),
        )
        .route(
            "/provisioned-model-throughput/{provisioned_model_id}",
            get(provisioned::get_provisioned_model_throughput)
                .patch(provisioned::update_provisioned_model_throughput)
                .delete(provisioned::delete_provisioned_model_throughput),
        )
        .route(
            "/provisioned-model-throughputs",
            get(provisioned::list_provisioned_model_throughputs),
        )
        .route(
            "/logging/modelinvocations",
            get(invocation_logging::get_configuration)
                .put(invocation_logging::put_configuration)
                .delete(invocation_logging::delete_configuration),
        )
        .fallback(unknown_operation)
        // Inside authentication: only signed runtime calls are logged, with their buffered body.
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            invocation_logging::capture::capture,
        ))
        // `layer`, not `route_layer`: unknown paths are answered only to signed requests, as AWS does.
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::authenticate,
        ))
        // Outside authentication, so refused requests are counted too.
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            metrics::record,
        ));
    Router::new()
        .route("/health", get(health))
        // Unsigned, like /health: scrapers do not sign. Bound to loopback by default.
        .route("/metrics", get(metrics::scrape))
        .merge(api)
        .with_state(state)
        .layer(middleware::from_fn(request_id))
}

/// bedrock-agent's knowledge-base control plane and bedrock-agent-runtime's retrieval.
/// The trailing slashes and POST-for-list routes are botocore's.
fn knowledge_routes() -> Router<Arc<AppState>> {
    use axum::routing::put;
    use knowledge_bases as kb;
    const KB: &str = "/knowledgebases/{knowledge_base_id}";
    const DS: &str = "/knowledgebases/{knowledge_base_id}/datasources/{data_source_id}";
    Router::new()
        .route(
            "/knowledgebases/",
            put(kb::create_knowledge_base).post(kb::list_knowledge_bases),
        )
        .route(
            KB,
            get(kb::get_knowledge_base)
                .put(kb::update_knowledge_base)
                .delete(kb::delete_knowledge_base),
        )
        .route(
            &format!("{KB}/datasources/"),
            put(kb::create_data_source).post(kb::list_data_sources),
        )
        .route(
            DS,
            get(kb::get_data_source)
                .put(kb::update_data_source)
                .delete(kb::delete_data_source),
        )
        .route(
            &format!("{DS}/ingestionjobs/"),
            put(kb::start_ingestion_job).post(kb::list_ingestion_jobs),
        )
        .route(
            &format!("{DS}/ingestionjobs/{{ingestion_job_id}}"),
            get(kb::get_ingestion_job),
        )
        .route(
            &format!("{DS}/ingestionjobs/{{ingestion_job_id}}/stop"),
            post(kb::stop_ingestion_job),
        )
        .route(
            &format!("{DS}/documents"),
            put(kb::ingest_documents).post(kb::list_documents),
        )
        .route(
            &format!("{DS}/documents/getDocuments"),
            post(kb::get_documents),
        )
        .route(
            &format!("{DS}/documents/deleteDocuments"),
            post(kb::delete_documents),
        )
        .route(&format!("{KB}/retrieve"), post(retrieval::retrieve))
        .route(
            "/retrieveAndGenerate",
            post(retrieval::retrieve_and_generate),
        )
        .route(
            "/retrieveAndGenerateStream",
            post(retrieval::retrieve_and_generate_stream),
        )
}

async fn unknown_operation(request: Request) -> Response {
    edge::error_response(&BedrockError::new(
        ErrorCode::UnknownOperation,
        format!(
            "{} {} is not an operation this server supports.",
            request.method(),
            request.uri().path()
        ),
    ))
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let failures = state.models.failures();
    if !failures.is_empty() {
        let detail: Vec<String> = failures.iter().map(|(m, e)| format!("{m}: {e}")).collect();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{{\"status\":\"failed\",\"detail\":{:?}}}",
                detail.join("; ")
            ),
        )
            .into_response();
    }
    if state.models.all_ready(state.catalog.local_models().keys()) {
        (StatusCode::OK, "{\"status\":\"ok\"}").into_response()
    } else {
        // Loading, or (in tests) a catalog model this server was never asked to run.
        (StatusCode::SERVICE_UNAVAILABLE, "{\"status\":\"loading\"}").into_response()
    }
}

async fn request_id(mut request: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    request
        .extensions_mut()
        .insert(invocation_logging::RequestId(id.clone()));
    let span = tracing::info_span!("request", id = %id, method = %request.method(), path = %request.uri().path());
    let mut resp = next.run(request).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(edge::REQUEST_ID, v);
    }
    resp
}

/// Serves plain HTTP on `addr`, and HTTPS on `tls` when given, until ctrl-c or SIGTERM.
pub async fn serve(
    addr: SocketAddr,
    tls: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
    state: Arc<AppState>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "listening (HTTP)");
    let (stop, _) = tokio::sync::watch::channel(());
    let plain = {
        let mut stopped = stop.subscribe();
        axum::serve(listener, router(Arc::clone(&state))).with_graceful_shutdown(async move {
            let _ = stopped.changed().await;
        })
    };
    let secure = match tls {
        Some((tls_addr, config)) => {
            let listener = tls::TlsListener::bind(tls_addr, config).await?;
            tracing::info!(addr = %tls_addr, "listening (HTTPS)");
            let mut stopped = stop.subscribe();
            Some(
                axum::serve(listener, router(state)).with_graceful_shutdown(async move {
                    let _ = stopped.changed().await;
                }),
            )
        }
        None => None,
    };
    let mut servers = std::pin::pin!(async move {
        match secure {
            Some(secure) => {
                let (a, b) = tokio::join!(plain.into_future(), secure.into_future());
                a.and(b)
            }
            None => plain.await,
        }
    });
    tokio::select! {
        // A listener failed before any signal.
        result = &mut servers => return result,
        () = shutdown_signal() => {
            let _ = stop.send(());
        }
    }
    servers.await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
