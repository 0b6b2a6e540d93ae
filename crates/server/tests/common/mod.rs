//! Test support: the real app on 127.0.0.1:0 with a fresh database per test, on SQLite,
//! PostgreSQL or MariaDB, and a manual clock.
#![allow(dead_code)]

use std::{net::SocketAddr, sync::Arc};

use chrono::Utc;
use reqwest::{Method, StatusCode};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use server::{clock::ManualClock, config::Settings, state::AppState};
use tokio::sync::oneshot;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MariaDb,
}

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-1";

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub clock: ManualClock,
    pub state: AppState,
    pub backend: Backend,
    _data_dir: tempfile::TempDir,
    database: Option<(Backend, String)>,
    shutdown: Option<oneshot::Sender<()>>,
}

fn postgres_admin_url() -> String {
    std::env::var("WORKBENCH_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn mariadb_admin_url() -> String {
    std::env::var("WORKBENCH_TEST_MARIADB_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

fn replace_db(url: &str, name: &str) -> String {
    let cut = url.rfind('/').expect("database URL has a path");
    format!("{}/{name}", &url[..cut])
}

/// Creates an empty database named `name` on the server and returns its URL.
async fn create_database(backend: Backend, name: &str) -> String {
    let admin_url = match backend {
        Backend::Sqlite => unreachable!(),
        Backend::Postgres => postgres_admin_url(),
        Backend::MariaDb => mariadb_admin_url(),
    };
    let admin = store::connect(&admin_url).await.unwrap_or_else(|e| panic!("connect {admin_url}: {e}"));
    admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create test database");
    admin.close().await.ok();
    replace_db(&admin_url, name)
}

fn drop_database(backend: Backend, name: String) {
    // Drop runs outside any runtime we may block; a private one does the work.
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let (url, sql) = match backend {
                Backend::Postgres => (postgres_admin_url(), format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")),
                Backend::MariaDb => (mariadb_admin_url(), format!("DROP DATABASE IF EXISTS {name}")),
                Backend::Sqlite => return,
            };
            if let Ok(admin) = store::connect(&url).await {
                let _ = admin.execute_unprepared(&sql).await;
                let _ = admin.close().await;
            }
        });
    })
    .join();
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut settings = Settings::default();
        settings.data_dir = data_dir.path().to_path_buf();
        settings.server.bind = "127.0.0.1:0".parse().unwrap();
        // No in-process training worker unless a test asks for one (`training.workers` in
        // `tweak`): tests that write training-task rows by hand would otherwise race a worker
        // that takes a pending task, or fails a running one as orphaned, mid-test.
        settings.training.workers = 0;
        let mut database = None;
        if backend != Backend::Sqlite {
            let name = format!("wbt_{}", uuid_simple());
            settings.database.url = create_database(backend, &name).await;
            database = Some((backend, name));
        }
        tweak(&mut settings);
        let clock = ManualClock::new(Utc::now());
        let state = server::build_state(settings, Arc::new(clock.clone())).await.expect("build app state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let serve_state = state.clone();
        tokio::spawn(async move {
            server::serve(listener, serve_state, async {
                let _ = rx.await;
            })
            .await
            .expect("server");
        });
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self {
            addr,
            base: format!("http://{addr}"),
            client,
            clock,
            state,
            backend,
            _data_dir: data_dir,
            database,
            shutdown: Some(tx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `body` as JSON (when given) with an optional bearer token.
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Response {
        let mut req = self.client.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        Response::from(req.send().await.expect("request"))
            .await
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// Creates a user directly in the database (no HTTP), for arranging tests.
    pub async fn seed_user(&self, email: &str, password: &str, admin: bool) -> i32 {
        let new = server::users::NewUser::parse(email, password, None, Some(if admin { "admin" } else { "user" }))
            .expect("valid seed user");
        server::users::create(&self.state.db, new, self.clock.now()).await.expect("seed user").id
    }

    /// Logs in and returns (access token, refresh cookie value).
    pub async fn login(&self, email: &str, password: &str) -> (String, String) {
        let res = self.post("/api/auth/login", None, json!({"email": email, "password": password})).await;
        assert_eq!(res.status, StatusCode::OK, "login failed: {}", res.body);
        let cookie = res.refresh_cookie().expect("refresh cookie set");
        (res.json["access_token"].as_str().unwrap().to_owned(), cookie)
    }

    pub async fn admin_token(&self) -> String {
        self.seed_user(ADMIN_EMAIL, ADMIN_PASSWORD, true).await;
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.0
    }

    /// A fresh non-admin user and their access token.
    pub async fn user_token(&self, email: &str) -> (i32, String) {
        let id = self.seed_user(email, "user-password-1", false).await;
        (id, self.login(email, "user-password-1").await.0)
    }

    /// POST to a cookie-authenticated auth route with the given refresh cookie.
    pub async fn with_cookie(&self, path: &str, cookie: &str) -> Response {
        let req = self
            .client
            .post(self.url(path))
            .header("cookie", format!("refresh_token={cookie}"));
        Response::from(req.send().await.expect("request")).await
    }
}

trait Now {
    fn now(&self) -> chrono::DateTime<Utc>;
}

impl Now for ManualClock {
    fn now(&self) -> chrono::DateTime<Utc> {
        server::clock::Clock::now(self)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some((backend, name)) = self.database.take() {
            drop_database(backend, name);
        }
    }
}

fn uuid_simple() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A response read to the end: status, headers, raw body and the body as JSON (Null if not).
pub struct Response {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
    pub json: Value,
}

impl Response {
    #[allow(clippy::wrong_self_convention)]
    fn from(res: reqwest::Response) -> impl std::future::Future<Output = Response> {
        async move {
            let status = res.status();
            let headers = res.headers().clone();
            let body = res.text().await.expect("body");
            let json = serde_json::from_str(&body).unwrap_or(Value::Null);
            Response { status, headers, body, json }
        }
    }

    pub fn set_cookie(&self) -> Option<String> {
        self.headers.get("set-cookie").map(|v| v.to_str().unwrap().to_owned())
    }

    pub fn refresh_cookie(&self) -> Option<String> {
        let header = self.set_cookie()?;
        let value = header.split(';').next()?.strip_prefix("refresh_token=")?;
        (!value.is_empty()).then(|| value.to_owned())
    }

    pub fn error_code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

/// Runs each named `async fn(TestApp)` once per database backend.
#[macro_export]
macro_rules! on_all_backends {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                use super::common::{Backend, TestApp};
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$test(TestApp::spawn(Backend::Sqlite).await).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$test(TestApp::spawn(Backend::Postgres).await).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn mariadb() {
                    super::$test(TestApp::spawn(Backend::MariaDb).await).await
                }
            }
        )*
    };
}
