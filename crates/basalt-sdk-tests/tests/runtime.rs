//! The official AWS Rust SDK (`aws-sdk-bedrockruntime`) against a real Basalt server.
//!
//! Each test starts (or shares) a `basalt serve` child process on a free local port with a
//! temporary data directory and test root credentials, then talks to it exactly as a user's
//! program would: SigV4-signed requests, the SDK's own deserializers and event-stream decoder.
//!
//! The server binary is `$BASALT_BIN`, or `target/release/basalt` under the workspace root
//! (`cargo build --release` first). Models come from `$BASALT_MODELS_DIR` (the server's default,
//! `~/.cache/basalt/models`, when unset). A missing binary fails the tests; it never skips them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::converse::{ConverseError, ConverseOutput};
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ContentBlockDelta, ConversationRole, ConverseStreamOutput,
    InferenceConfiguration, Message, StopReason, SystemContentBlock,
};
use aws_sdk_bedrockruntime::Client;

const ACCESS_KEY_ID: &str = "AKIABASALTSDKTEST001";
const SECRET_ACCESS_KEY: &str = "basalt-sdk-tests/secret+access+key/0001";
const HAIKU: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const SONNET_PROFILE: &str = "us.anthropic.claude-3-5-sonnet-20241022-v2:0";
const SYSTEM_PROMPT: &str = "You are a concise assistant. Answer in one short sentence.";
const QUESTION: &str = "What is the capital of France?";
const HEALTH_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Server harness
// ---------------------------------------------------------------------------------------------

/// A running `basalt serve` child. Dropping it kills the process and removes its directory.
struct Server {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Server {
    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn start() -> Self {
        let bin = server_binary();
        let dir = unique_temp_dir();
        let log_path = dir.join("server.log");
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log_path.display()));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cloning {}: {e}", log_path.display()));
        let addr = free_local_addr();

        let mut command = Command::new(&bin);
        command
            .arg("serve")
            .arg("--bind")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("BASALT_ROOT_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("BASALT_ROOT_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
            // The tests name models of the built-in catalog; a user's catalog must not leak in.
            .env_remove("BASALT_CONFIG")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // BASALT_MODELS_DIR is inherited from the environment as is.
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut server = Self { child, addr, dir };
        server.wait_healthy(&log_path);
        server
    }

    /// Polls `GET /health` until it answers 200. Fails early if the process exits or the server
    /// reports a model that failed to load, and after [`HEALTH_TIMEOUT`] otherwise.
    fn wait_healthy(&mut self, log_path: &Path) {
        let deadline = Instant::now() + HEALTH_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("polling the server process") {
                panic!(
                    "basalt serve exited with {status} before becoming healthy; its log:\n{}",
                    read_log(log_path)
                );
            }
            let last = match health(self.addr) {
                Ok((200, _)) => return,
                Ok((status, body)) if body.contains("\"failed\"") => panic!(
                    "GET /health answered {status} {body}: a model failed to load \
                     (is BASALT_MODELS_DIR populated? `basalt models fetch`); server log:\n{}",
                    read_log(log_path)
                ),
                Ok((status, body)) => format!("{status} {body}"),
                Err(e) => format!("connection: {e}"),
            };
            assert!(
                Instant::now() < deadline,
                "basalt serve on {} not healthy after {HEALTH_TIMEOUT:?} (last: {last}); its log:\n{}",
                self.addr,
                read_log(log_path)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server shared by the tests that run concurrently. Every test holds an `Arc`; when the
/// last holder finishes the server is dropped (killed), so no process outlives the test binary.
/// Statics are never dropped, hence the `Weak`.
fn server() -> Arc<Server> {
    static SERVER: Mutex<Weak<Server>> = Mutex::new(Weak::new());
    let mut slot = SERVER.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(server) = slot.upgrade() {
        return server;
    }
    let server = Arc::new(Server::start());
    *slot = Arc::downgrade(&server);
    server
}

fn server_binary() -> PathBuf {
    let bin = std::env::var_os("BASALT_BIN").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/release/basalt")
                .components()
                .collect()
        },
        PathBuf::from,
    );
    assert!(
        bin.is_file(),
        "the Basalt server binary is missing at {}: run `cargo build --release` in the \
         workspace root, or set BASALT_BIN to a built `basalt` binary",
        bin.display()
    );
    bin
}

fn unique_temp_dir() -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "basalt-sdk-tests-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

fn free_local_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("finding a free local port")
}

/// A minimal HTTP/1.1 `GET /health`: (status, body).
fn health(addr: SocketAddr) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(
        format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(unreadable: {e})"))
}

// ---------------------------------------------------------------------------------------------
// SDK helpers
// ---------------------------------------------------------------------------------------------

/// An SDK client as a user would configure it for Basalt: static keys, a region, the endpoint.
/// Basalt has no TLS, so the HTTP client is the SDK's hyper client without TLS.
fn client(server: &Server, secret_access_key: &str) -> Client {
    let config = aws_sdk_bedrockruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            ACCESS_KEY_ID,
            secret_access_key,
            None,
            None,
            "basalt-sdk-tests",
        ))
        .endpoint_url(server.endpoint())
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    Client::from_conf(config)
}

fn question() -> Message {
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(QUESTION.to_owned()))
        .build()
        .expect("a complete message")
}

fn inference(max_tokens: i32) -> InferenceConfiguration {
    InferenceConfiguration::builder()
        .max_tokens(max_tokens)
        .temperature(0.0)
        .build()
}

async fn converse(client: &Client, model_id: &str, max_tokens: i32) -> ConverseOutput {
    client
        .converse()
        .model_id(model_id)
        .system(SystemContentBlock::Text(SYSTEM_PROMPT.to_owned()))
        .messages(question())
        .inference_config(inference(max_tokens))
        .send()
        .await
        .unwrap_or_else(|e| panic!("Converse {model_id}: {}", describe(&e)))
}

/// The whole error chain and, for service errors, the raw response: what the server sent.
fn describe<E, R>(err: &SdkError<E, R>) -> String
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let chain = aws_sdk_bedrockruntime::error::DisplayErrorContext(err);
    match err.raw_response() {
        Some(raw) => format!("{chain}; raw response: {raw:?}"),
        None => chain.to_string(),
    }
}

fn output_text(output: &ConverseOutput) -> String {
    let message = output
        .output()
        .expect("Converse output")
        .as_message()
        .expect("the output is a message");
    assert_eq!(message.role(), &ConversationRole::Assistant);
    match message.content().first() {
        Some(ContentBlock::Text(text)) => text.clone(),
        other => panic!("the first content block is not text: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn converse_returns_text_usage_and_stop_reason() {
    let server = server();
    let client = client(&server, SECRET_ACCESS_KEY);

    let output = converse(&client, HAIKU, 48).await;

    let text = output_text(&output);
    assert!(!text.trim().is_empty(), "empty answer text: {text:?}");
    let usage = output.usage().expect("usage");
    assert!(usage.input_tokens() > 0, "{usage:?}");
    assert!(usage.output_tokens() > 0, "{usage:?}");
    assert!(usage.output_tokens() <= 48, "{usage:?}");
    assert_eq!(
        usage.total_tokens(),
        usage.input_tokens() + usage.output_tokens(),
        "{usage:?}"
    );
    assert!(
        matches!(
            output.stop_reason(),
            StopReason::EndTurn | StopReason::MaxTokens
        ),
        "stop reason {:?}",
        output.stop_reason()
    );
    let metrics = output.metrics().expect("metrics");
    assert!(metrics.latency_ms() >= 0, "{metrics:?}");
}

#[tokio::test]
async fn converse_respects_max_tokens() {
    let server = server();
    let client = client(&server, SECRET_ACCESS_KEY);

    let output = converse(&client, HAIKU, 3).await;

    let usage = output.usage().expect("usage");
    assert!(usage.output_tokens() > 0, "{usage:?}");
    assert!(usage.output_tokens() <= 3, "{usage:?}");
    assert_eq!(output.stop_reason(), &StopReason::MaxTokens);
}

#[tokio::test]
async fn converse_stream_emits_the_conventional_event_order() {
    let server = server();
    let client = client(&server, SECRET_ACCESS_KEY);

    let mut response = client
        .converse_stream()
        .model_id(SONNET_PROFILE)
        .system(SystemContentBlock::Text(SYSTEM_PROMPT.to_owned()))
        .messages(question())
        .inference_config(inference(48))
        .send()
        .await
        .unwrap_or_else(|e| panic!("ConverseStream {SONNET_PROFILE}: {}", describe(&e)));

    // Event kinds in arrival order, runs of deltas collapsed into one entry.
    let mut kinds: Vec<&str> = Vec::new();
    let mut deltas = 0;
    let mut text = String::new();
    let mut stop_reason = None;
    let mut usage = None;
    let mut metrics = None;
    loop {
        let event = response
            .stream
            .recv()
            .await
            .unwrap_or_else(|e| panic!("ConverseStream event: {}", describe(&e)));
        let Some(event) = event else { break };
        let kind = match event {
            ConverseStreamOutput::MessageStart(start) => {
                assert_eq!(start.role(), &ConversationRole::Assistant);
                "MessageStart"
            }
            ConverseStreamOutput::ContentBlockStart(_) => "ContentBlockStart",
            ConverseStreamOutput::ContentBlockDelta(delta) => {
                assert_eq!(delta.content_block_index(), 0);
                match delta.delta() {
                    Some(ContentBlockDelta::Text(t)) => text.push_str(t),
                    other => panic!("a content block delta without text: {other:?}"),
                }
                deltas += 1;
                "ContentBlockDelta"
            }
            ConverseStreamOutput::ContentBlockStop(stop) => {
                assert_eq!(stop.content_block_index(), 0);
                "ContentBlockStop"
            }
            ConverseStreamOutput::MessageStop(stop) => {
                stop_reason = Some(stop.stop_reason().clone());
                "MessageStop"
            }
            ConverseStreamOutput::Metadata(metadata) => {
                usage = metadata.usage().cloned();
                metrics = metadata.metrics().cloned();
                "Metadata"
            }
            other => panic!("an event the SDK does not know: {other:?}"),
        };
        if kinds.last() != Some(&kind) || kind != "ContentBlockDelta" {
            kinds.push(kind);
        }
    }

    assert_eq!(
        kinds,
        [
            "MessageStart",
            "ContentBlockDelta",
            "ContentBlockStop",
            "MessageStop",
            "Metadata"
        ],
        "event order"
    );
    assert!(deltas >= 1);
    assert!(!text.trim().is_empty(), "empty streamed text: {text:?}");
    let stop_reason = stop_reason.expect("MessageStop carries a stop reason");
    assert!(
        matches!(stop_reason, StopReason::EndTurn | StopReason::MaxTokens),
        "stop reason {stop_reason:?}"
    );
    let usage = usage.expect("Metadata carries usage");
    assert!(usage.input_tokens() > 0, "{usage:?}");
    assert!(usage.output_tokens() > 0, "{usage:?}");
    assert_eq!(
        usage.total_tokens(),
        usage.input_tokens() + usage.output_tokens(),
        "{usage:?}"
    );
    let metrics = metrics.expect("Metadata carries metrics");
    assert!(metrics.latency_ms() >= 0, "{metrics:?}");

    // At temperature 0 streaming is only a different delivery of the same answer. The
    // second request reuses the first one's prompt KV state, and a suffix-only prefill
    // rounds differently from a whole-prompt one, so only the opening must agree.
    let whole = converse(&client, SONNET_PROFILE, 48).await;
    let head = |s: &str| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    assert_eq!(
        head(&text),
        head(&output_text(&whole)),
        "streamed vs. non-streamed text"
    );
    assert_eq!(
        usage.input_tokens(),
        whole.usage().map_or(0, |u| u.input_tokens()),
        "streamed vs. non-streamed usage"
    );
}

#[tokio::test]
async fn unknown_model_is_a_validation_error() {
    let server = server();
    let client = client(&server, SECRET_ACCESS_KEY);

    let err = client
        .converse()
        .model_id("nope.model-v1")
        .messages(question())
        .send()
        .await
        .expect_err("an unknown model must be refused");

    match err.as_service_error() {
        Some(ConverseError::ValidationException(e)) => {
            assert_eq!(
                e.message(),
                Some("The provided model identifier is invalid.")
            );
        }
        _ => panic!("expected ValidationException, got {}", describe(&err)),
    }
    assert_eq!(
        err.raw_response().map(|r| r.status().as_u16()),
        Some(400),
        "{}",
        describe(&err)
    );
}

#[tokio::test]
async fn wrong_secret_is_refused() {
    let server = server();
    let client = client(&server, "not-the-secret-access-key");

    let err = client
        .converse()
        .model_id(HAIKU)
        .messages(question())
        .send()
        .await
        .expect_err("a request signed with the wrong secret must be refused");

    assert!(
        matches!(err, SdkError::ServiceError(_)),
        "expected a service error, got {}",
        describe(&err)
    );
    assert_eq!(
        err.code(),
        Some("InvalidSignatureException"),
        "{}",
        describe(&err)
    );
    assert_eq!(
        err.raw_response().map(|r| r.status().as_u16()),
        Some(403),
        "{}",
        describe(&err)
    );
}
