//! basalt-loadgen: a closed-loop HTTP/1.1 load generator for the gateway
//! overhead benchmark (bench/suite.sh, part 3).
//!
//! Each of `--connections` tasks holds one keep-alive connection and sends the
//! same POST again as soon as the previous answer's body has arrived. Requests
//! to Basalt are SigV4-signed one by one (as boto3 does, with the time of the
//! request) before the clock starts; requests to other gateways carry plain
//! headers (`--header 'authorization: Bearer ...'`). A warm-up period is run
//! first and not recorded. Latency is from handing the request to the
//! connection to the last byte of the answer's body. Prints one JSON object per
//! concurrency level on stdout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;

#[derive(Parser, Debug, Clone)]
#[command(about = "Closed-loop keep-alive HTTP/1.1 POST load generator; prints JSON")]
struct Args {
    /// Target, `http://HOST:PORT/PATH`; the path is sent (and signed) exactly as written.
    #[arg(long)]
    url: String,
    /// Request body.
    #[arg(long, conflicts_with = "body_file")]
    body: Option<String>,
    /// Request body from a file.
    #[arg(long)]
    body_file: Option<std::path::PathBuf>,
    /// Concurrent connections; a comma-separated list runs one level after the other.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    connections: Vec<usize>,
    /// Recorded seconds per level.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Unrecorded seconds before each level.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Stop a level after this many recorded requests (besides `--duration`).
    #[arg(long)]
    max_requests: Option<u64>,
    /// Extra header, `name: value`; repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Sign every request with SigV4 using this access key id (needs --secret-key).
    #[arg(long, requires = "secret_key")]
    access_key: Option<String>,
    #[arg(long)]
    secret_key: Option<String>,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    #[arg(long, default_value = "bedrock")]
    service: String,
    /// Client runtime threads (they share the machine with the server under test).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Free-form label copied into the output.
    #[arg(long, default_value = "")]
    label: String,
}

struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
    body: Bytes,
    headers: Vec<(String, String)>,
    sigv4: Option<(String, String, String, String)>,
}

#[derive(Default)]
struct ConnResult {
    latencies_ns: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported: {url}"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((host.to_owned(), path.to_owned()))
}

fn build_request(t: &Target) -> Result<Request<Full<Bytes>>, String> {
    let mut b = Request::post(t.path.as_str())
        .header("host", t.host.as_str())
        .header("content-type", "application/json")
        .header("accept", "application/json");
    for (k, v) in &t.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    if let Some((ak, sk, region, service)) = &t.sigv4 {
        let signed_input = vec![
            ("host".to_owned(), t.host.clone()),
            ("content-type".to_owned(), "application/json".to_owned()),
            ("accept".to_owned(), "application/json".to_owned()),
        ];
        let parts = basalt_sigv4::RequestParts {
            method: "POST",
            raw_path: &t.path,
            raw_query: "",
            headers: &signed_input,
            body: &t.body,
        };
        let now = time::OffsetDateTime::now_utc();
        for (k, v) in basalt_sigv4::sign(&parts, ak, sk, region, service, now) {
            b = b.header(k, v);
        }
    }
    b.body(Full::new(t.body.clone())).map_err(|e| e.to_string())
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One request on `sender`; `Ok(elapsed)` for a 2xx answer.
async fn one(sender: &mut Sender, t: &Target) -> Result<Duration, String> {
    let req = build_request(t)?;
    sender.ready().await.map_err(|e| e.to_string())?;
    let start = Instant::now();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let elapsed = start.elapsed();
    if status.is_success() {
        Ok(elapsed)
    } else {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        Err(format!("HTTP {status}: {text}"))
    }
}

async fn run_conn(
    t: std::sync::Arc<Target>,
    record_from: Instant,
    deadline: Instant,
    budget: std::sync::Arc<std::sync::atomic::AtomicI64>,
) -> ConnResult {
    let mut out = ConnResult::default();
    let mut sender: Option<Sender> = None;
    while Instant::now() < deadline {
        if budget.load(std::sync::atomic::Ordering::Relaxed) <= 0 {
            break;
        }
        let s = match sender.as_mut() {
            Some(s) => s,
            None => match connect(t.addr).await {
                Ok(s) => sender.insert(s),
                Err(e) => {
                    out.errors += 1;
                    out.first_error.get_or_insert(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let result = one(s, &t).await;
        let done = Instant::now();
        let recorded = done >= record_from && done <= deadline;
        match result {
            Ok(d) => {
                if recorded {
                    budget.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    out.latencies_ns.push(d.as_nanos() as u64);
                }
            }
            Err(e) => {
                if recorded {
                    out.errors += 1;
                    out.first_error.get_or_insert(e);
                }
                // The server may have closed the connection: start a new one.
                sender = None;
            }
        }
    }
    out
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1e6
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

async fn level(t: std::sync::Arc<Target>, args: &Args, conns: usize) -> serde_json::Value {
    let start = Instant::now();
    let record_from = start + Duration::from_secs_f64(args.warmup);
    let deadline = record_from + Duration::from_secs_f64(args.duration);
    let budget = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(
        args.max_requests.map(|m| m as i64).unwrap_or(i64::MAX),
    ));
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        tasks.push(tokio::spawn(run_conn(
            t.clone(),
            record_from,
            deadline,
            budget.clone(),
        )));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(r) => {
                all.extend(r.latencies_ns);
                errors += r.errors;
                if first_error.is_none() {
                    first_error = r.first_error;
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(format!("task: {e}"));
            }
        }
    }
    // A --max-requests run may end before the deadline.
    let end = Instant::now().min(deadline);
    let window = end.saturating_duration_since(record_from).as_secs_f64();
    all.sort_unstable();
    let n = all.len();
    let mean = if n == 0 {
        f64::NAN
    } else {
        all.iter().map(|&x| x as f64).sum::<f64>() / n as f64 / 1e6
    };
    json!({
        "label": args.label,
        "connections": conns,
        "client_threads": args.threads,
        "window_s": round3(window),
        "requests": n,
        "errors": errors,
        "first_error": first_error,
        "rps": if window > 0.0 { (n as f64 / window * 10.0).round() / 10.0 } else { f64::NAN },
        "mean_ms": round3(mean),
        "p50_ms": round3(pct(&all, 50.0)),
        "p90_ms": round3(pct(&all, 90.0)),
        "p99_ms": round3(pct(&all, 99.0)),
        "p999_ms": round3(pct(&all, 99.9)),
        "max_ms": round3(all.last().map(|&x| x as f64 / 1e6).unwrap_or(f64::NAN)),
    })
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let (host, path) = parse_url(&args.url)?;
    let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(&host)
        .map_err(|e| format!("{host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}: no address"))?;
    let body = match (&args.body, &args.body_file) {
        (Some(b), _) => Bytes::from(b.clone()),
        (None, Some(f)) => Bytes::from(std::fs::read(f).map_err(|e| format!("{f:?}: {e}"))?),
        (None, None) => Bytes::new(),
    };
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| format!("--header wants 'name: value', got {h:?}"))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let sigv4 = match (&args.access_key, &args.secret_key) {
        (Some(a), Some(s)) => Some((
            a.clone(),
            s.clone(),
            args.region.clone(),
            args.service.clone(),
        )),
        _ => None,
    };
    let target = std::sync::Arc::new(Target {
        addr,
        host,
        path,
        body,
        headers,
        sigv4,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        for &c in &args.connections {
            let out = level(target.clone(), &args, c.max(1)).await;
            println!("{out}");
        }
    });
    Ok(())
}
