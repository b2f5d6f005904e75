//! The HTTP edge without models: routing on the raw path, SigV4, and the exact
//! error shapes, driven through the real router in-process. Behaviour that needs
//! a model is covered by the integration suites against a running server.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use basalt_catalog::Catalog;
use basalt_server::{AppState, Credentials, KeyStore, LoadedModels};
use tower::ServiceExt;

const AKID: &str = "AKIDEDGETEST00000000";
const SECRET: &str = "edgeedgeedgeedgeedgeedgeedgeedgeedgeedge";

fn state() -> Arc<AppState> {
    let dir = std::env::temp_dir().join(format!(
        "basalt-edge-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let root = Credentials {
        access_key_id: AKID.into(),
        secret_access_key: SECRET.into(),
        created_at: String::new(),
    };
    let (keys, _) = KeyStore::open(&dir, Some(root)).expect("keys");
    Arc::new(AppState {
        catalog: Catalog::builtin(),
        // No model is loaded: requests that get past validation report it.
        models: LoadedModels::default(),
        keys,
        guardrails: Some(basalt_server::guardrails::Guardrails::new(
            Arc::new(basalt_store::Store::in_memory().expect("in-memory store")),
            "000000000000".into(),
        )),
        metrics: basalt_server::metrics::Metrics::new(),
        api_keys: None,
        batch: None,
        knowledge: None,
        provisioned: None,
        quotas: basalt_server::quotas::Quotas::new(Default::default()),
        account_id: "000000000000".into(),
        model_timeout: None,
        invocation_logging: None,
        model_imports: None,
    })
}

fn signed(method: &str, raw_path: &str, body: &str, secret: &str) -> Request<Body> {
    let headers = vec![
        ("host".to_string(), "127.0.0.1:8080".to_string()),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    let (path, query) = raw_path.split_once('?').unwrap_or((raw_path, ""));
    let parts = basalt_sigv4::RequestParts {
        method,
        raw_path: path,
        raw_query: query,
        headers: &headers,
        body: body.as_bytes(),
    };
    let auth = basalt_sigv4::sign(
        &parts,
        AKID,
        secret,
        "us-east-1",
        "bedrock",
        time::OffsetDateTime::now_utc(),
    );
    let mut req = Request::builder().method(method).uri(raw_path);
    for (k, v) in headers.iter().chain(auth.iter()) {
        req = req.header(k.as_str(), v.as_str());
    }
    req.body(Body::from(body.to_string())).expect("request")
}

async fn call(req: Request<Body>) -> (StatusCode, Option<String>, String, bool) {
    let resp = basalt_server::router(state())
        .oneshot(req)
        .await
        .expect("response");
    let status = resp.status();
    let error_type = resp
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let has_request_id = resp.headers().contains_key("x-amzn-requestid");
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    (
        status,
        error_type,
        String::from_utf8_lossy(&body).into_owned(),
        has_request_id,
    )
}

#[tokio::test]
async fn unsigned_requests_are_refused_with_a_request_id() {
    let req = Request::builder()
        .method("POST")
        .uri("/model/amazon.titan-text-express-v1/invoke")
        .body(Body::from("{}"))
        .expect("request");
    let (status, error_type, body, has_id) = call(req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        error_type.as_deref(),
        Some("MissingAuthenticationTokenException")
    );
    assert!(body.contains("\"message\""));
    assert!(has_id);
}

#[tokio::test]
async fn a_wrong_secret_is_an_invalid_signature() {
    let (status, error_type, _, _) = call(signed(
        "POST",
        "/model/amazon.titan-text-express-v1/invoke",
        "{}",
        "wrong",
    ))
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_type.as_deref(), Some("InvalidSignatureException"));
}

#[tokio::test]
async fn unknown_models_get_bedrocks_validation_error() {
    let (status, error_type, body, _) =
        call(signed("POST", "/model/nope.model/invoke", "{}", SECRET)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_type.as_deref(), Some("ValidationException"));
    assert_eq!(
        body,
        r#"{"message":"The provided model identifier is invalid."}"#
    );
}

#[tokio::test]
async fn percent_encoded_arns_route_as_one_segment_and_resolve() {
    // boto3 encodes ':' and '/' in the label; the route must still match, and the
    // decoded ARN must resolve (the model is not loaded, so that is what is reported).
    let path = "/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A%3Afoundation-model%2Fanthropic.claude-3-haiku-20240307-v1%3A0/converse";
    let body = r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;
    let (status, error_type, body, _) = call(signed("POST", path, body, SECRET)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_type.as_deref(), Some("ServiceUnavailableException"));
    assert!(body.contains("smollm2"), "{body}");
}

#[tokio::test]
async fn malformed_json_names_the_problem_before_any_model_is_needed() {
    let (status, error_type, body, _) = call(signed(
        "POST",
        "/model/amazon.titan-text-express-v1/converse",
        "{\"messages\": 5}",
        SECRET,
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_type.as_deref(), Some("ValidationException"));
    assert!(body.contains("messages"), "{body}");
}

#[tokio::test]
async fn control_plane_lists_the_catalog_with_the_signed_region() {
    let (status, _, body, _) = call(signed("GET", "/foundation-models", "", SECRET)).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let first = &v["modelSummaries"][0];
    assert!(first["modelArn"]
        .as_str()
        .expect("arn")
        .starts_with("arn:aws:bedrock:us-east-1::foundation-model/"));
}

#[tokio::test]
async fn unknown_operations_are_answered_to_signed_requests() {
    let (status, error_type, _, _) = call(signed("GET", "/no/such/thing", "", SECRET)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_type.as_deref(), Some("UnknownOperationException"));
}

#[tokio::test]
async fn health_needs_no_signature_and_reports_loading() {
    let req = Request::builder()
        .uri("/health")
        .body(Body::empty())
        .expect("request");
    let (status, _, body, _) = call(req).await;
    // No model loads in this test, so the server is not ready.
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
}

#[tokio::test]
async fn undecodable_path_labels_get_a_validation_error() {
    let (status, error_type, body, _) =
        call(signed("POST", "/model/%FF%FE/invoke", "{}", SECRET)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_type.as_deref(), Some("ValidationException"), "{body}");
}

#[tokio::test]
async fn bad_query_values_get_a_validation_error() {
    let req = signed(
        "GET",
        "/foundation-models?byOutputModality=SOUND",
        "",
        SECRET,
    );
    let (status, error_type, body, _) = call(req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_type.as_deref(), Some("ValidationException"), "{body}");
}
