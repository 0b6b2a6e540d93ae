//! `fake-provider [--listen ADDR] [--models a,b,…]`: the fake on a fixed address, for benchmarks,
//! browser tests and manual tests; `--models` replaces the listed models.
//! Pick behaviour by model name, e.g. `bench-10000` or `think` (see `Scenario::from_model`).

use std::net::SocketAddr;

use fake_provider::{FakeModel, FakeProvider};

#[tokio::main]
async fn main() {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 8999).into();
    let mut models: Option<Vec<FakeModel>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => match args.next().and_then(|a| a.parse().ok()) {
                Some(addr) => listen = addr,
                None => exit_usage(),
            },
            "--models" => match args.next() {
                Some(list) => {
                    models = Some(list.split(',').filter(|m| !m.is_empty()).map(|m| FakeModel::new(m, 1_000_000, false)).collect())
                }
                None => exit_usage(),
            },
            _ => exit_usage(),
        }
    }
    let fake = match FakeProvider::start_on(listen).await {
        Ok(fake) => fake,
        Err(error) => {
            eprintln!("fake-provider: {error}");
            std::process::exit(1);
        }
    };
    if let Some(models) = models {
        fake.set_models(models);
    }
    fake.set_recording(false);
    println!(
        "fake provider listening on {} (OpenAI base {})",
        fake.base_url(),
        fake.openai_base_url()
    );
    let _ = tokio::signal::ctrl_c().await;
}

fn exit_usage() -> ! {
    eprintln!("usage: fake-provider [--listen 127.0.0.1:8999] [--models think,cut,…]");
    std::process::exit(2);
}
