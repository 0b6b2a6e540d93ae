//! Settings: built-in defaults, then `workbench.toml`, then `WORKBENCH__SECTION__KEY` variables.
use std::{
    fs,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use rand::RngCore;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where the SQLite file, generated secrets, uploads and models live.
    pub data_dir: PathBuf,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub cors: CorsSettings,
    pub providers: ProviderSettings,
    pub engine: EngineSettings,
    pub training: crate::training::TrainingSettings,
    pub datasets: DatasetSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    /// Largest JSON body accepted, in bytes.
    pub body_limit: usize,
    /// Take the client address from `X-Forwarded-For` (only behind a trusted reverse proxy).
    pub trust_proxy: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct DatabaseSettings {
    /// Empty means the SQLite file `workbench.db` in the data directory.
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthSettings {
    pub access_token_ttl_secs: i64,
    pub refresh_token_ttl_secs: i64,
    /// Initial value of the run-time setting; admins change it in the settings page.
    pub registration_open: bool,
    /// Mark the refresh cookie `Secure` even without `X-Forwarded-Proto: https`.
    pub secure_cookie: bool,
    pub login_attempts_per_ip: u32,
    pub login_failures_per_email: u32,
    pub login_window_secs: i64,
    /// Created on start when no admin exists yet.
    pub bootstrap_admin_email: Option<String>,
    #[serde(skip_serializing)]
    pub bootstrap_admin_password: Option<SecretString>,
    /// Overrides the generated signing secret (data_dir/jwt.secret).
    #[serde(skip_serializing)]
    pub jwt_secret: Option<SecretString>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct CorsSettings {
    /// Origins allowed to call the API with credentials; empty allows none (same origin only).
    pub origins: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ProviderSettings {
    /// Initial value of the run-time setting allowing loopback/private provider URLs.
    pub allow_private_urls: bool,
    /// Overrides the generated key file (data_dir/encryption.key): 64 hex characters.
    #[serde(skip_serializing)]
    pub encryption_key: Option<SecretString>,
}

/// The built-in engine serving local models to chat and comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineSettings {
    /// Models (base or base + adapter) kept loaded in memory; the least recently used goes first.
    pub loaded_models: usize,
    /// Generations running at once; the rest wait their turn. Generation is CPU-bound, so more
    /// than the core count only slows every stream down.
    pub concurrent_generations: usize,
    /// Answer length when the model config sets none.
    pub default_max_tokens: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self { loaded_models: 2, concurrent_generations: 1, default_max_tokens: 512 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DatasetSettings {
    /// Largest dataset file accepted by an upload, in bytes (answered with 413 beyond it).
    pub max_upload_bytes: u64,
}

impl Default for DatasetSettings {
    fn default() -> Self {
        Self { max_upload_bytes: 100 * 1024 * 1024 }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            server: ServerSettings::default(),
            database: DatabaseSettings::default(),
            auth: AuthSettings::default(),
            cors: CorsSettings::default(),
            providers: ProviderSettings::default(),
            engine: EngineSettings::default(),
            training: crate::training::TrainingSettings::default(),
            datasets: DatasetSettings::default(),
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self { bind: SocketAddr::from(([127, 0, 0, 1], 8080)), body_limit: 1024 * 1024, trust_proxy: false }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 7 * 24 * 3600,
            registration_open: false,
            secure_cookie: false,
            login_attempts_per_ip: 30,
            login_failures_per_email: 5,
            login_window_secs: 15 * 60,
            bootstrap_admin_email: None,
            bootstrap_admin_password: None,
            jwt_secret: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    #[error("data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Secret(String),
}

impl Settings {
    /// Reads defaults, then the config file (if given or `./workbench.toml` exists), then the
    /// environment. `data_dir`, when given on the command line, wins over all of them.
    pub fn load(config_file: Option<&Path>, data_dir: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match config_file {
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None => figment = figment.merge(Toml::file("workbench.toml")),
        }
        figment = figment.merge(Env::prefixed("WORKBENCH__").split("__"));
        let mut settings: Settings = figment.extract().map_err(Box::new)?;
        if let Some(dir) = data_dir {
            settings.data_dir = dir.to_path_buf();
        }
        Ok(settings)
    }

    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}?mode=rwc", self.data_dir.join("workbench.db").display())
        } else {
            self.database.url.clone()
        }
    }

    pub fn ensure_data_dir(&self) -> Result<(), ConfigError> {
        fs::create_dir_all(&self.data_dir)
            .map_err(|source| ConfigError::DataDir { path: self.data_dir.clone(), source })
    }
}

/// Secrets the server needs, from config or generated once into the data directory.
pub struct Secrets {
    pub jwt_secret: Vec<u8>,
    pub encryption_key: [u8; 32],
}

impl Secrets {
    pub fn load_or_generate(settings: &Settings) -> Result<Self, ConfigError> {
        use secrecy::ExposeSecret;
        settings.ensure_data_dir()?;
        let jwt_secret = match &settings.auth.jwt_secret {
            Some(secret) => secret.expose_secret().as_bytes().to_vec(),
            None => hex::decode(read_or_create_key(&settings.data_dir.join("jwt.secret"))?)
                .map_err(|_| ConfigError::Secret("jwt.secret is not hex".into()))?,
        };
        let key_hex = match &settings.providers.encryption_key {
            Some(key) => key.expose_secret().trim().to_owned(),
            None => read_or_create_key(&settings.data_dir.join("encryption.key"))?,
        };
        let encryption_key = parse_key(&key_hex)?;
        Ok(Self { jwt_secret, encryption_key })
    }
}

/// Parses a 32-byte key written as 64 hex characters.
pub fn parse_key(hex_key: &str) -> Result<[u8; 32], ConfigError> {
    hex::decode(hex_key.trim())
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| ConfigError::Secret("the encryption key must be 64 hex characters".into()))
}

/// Returns the hex key stored at `path`, creating it (mode 0600) with 32 random bytes if absent.
fn read_or_create_key(path: &Path) -> Result<String, ConfigError> {
    let io_err = |source| ConfigError::DataDir { path: path.to_path_buf(), source };
    match fs::read_to_string(path) {
        Ok(text) => return Ok(text.trim().to_owned()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(e)),
        Err(_) => {}
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let text = hex::encode(bytes);
    write_private(path, text.as_bytes()).map_err(io_err)?;
    Ok(text)
}

/// Writes a file readable by the owner only; `create_new` so two processes never both win.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}
