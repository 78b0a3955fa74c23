//! Wiring only: configuration, logging, the store, the router, and a graceful shutdown.

/// mimalloc: per-connection allocations are many and small; glibc's malloc showed up at the
/// top of the fan-out profile and kept more memory per idle subscriber.
#[cfg(feature = "ssr")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(feature = "ssr")]
#[tokio::main]
async fn main() -> std::process::ExitCode {
    use std::time::Duration;

    use leptos::prelude::get_configuration;
    use order_tracking::server::edge::descriptors;
    use order_tracking::server::{config::Config, serve::serve, AppState, StartError};
    use tracing_subscriber::EnvFilter;

    // Flags first: `--log` (or RUST_LOG, which it mirrors) decides what is logged from here on.
    // A malformed or blank setting ends the process here, with a sentence naming it.
    let config = Config::load().unwrap_or_else(|err| err.exit());
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(&config.log_filter))
        .init();
    let mut leptos_options = match get_configuration(None) {
        Ok(conf) => conf.leptos_options,
        Err(err) => {
            tracing::error!(error = %err, "invalid LEPTOS_* configuration");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(addr) = config.site_addr {
        leptos_options.site_addr = addr;
    }
    if leptos_options.output_name.is_empty() {
        // Built without cargo-leptos (e.g. `cargo run`): the bundle keeps the crate's name.
        leptos_options.output_name = env!("CARGO_PKG_NAME").into();
    }
    if std::env::var_os("LEPTOS_HASH_FILES").is_none() {
        // Started without cargo-leptos (tests, scripts, a service): the bundle's names carry
        // hashes when cargo-leptos left their list beside this binary.
        leptos_options.hash_files = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join(leptos_options.hash_file.as_ref())))
            .is_some_and(|file| file.exists());
    }
    let addr = leptos_options.site_addr;
    // Connections are capped below the descriptor limit (MAX_CONNECTIONS), so that `accept`
    // never meets EMFILE; the soft limit is raised to the hard one first.
    if let Err(err) = descriptors::raise_to_hard() {
        tracing::warn!(error = %err, "cannot raise the descriptor limit");
    }

    let state = match AppState::open(leptos_options, config).await {
        Ok(state) => state,
        Err(StartError::Config(sentence)) => {
            tracing::error!("{sentence}");
            return std::process::ExitCode::FAILURE;
        }
        Err(err) => {
            tracing::error!(error = %err, "cannot start");
            return std::process::ExitCode::FAILURE;
        }
    };
    if state.tokens.demo_mode() {
        tracing::warn!("ADMIN_TOKEN is not set: running in demo mode, anyone may create orders and publish statuses");
    }
    tokio::spawn(reload_tokens_on_hangup(state.clone()));
    let listener = match listen(addr) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(%addr, error = %err, "cannot listen");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!("listening on http://{addr}");

    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: ending open streams");
        shutdown.cancel();
        // Whatever is still open after 5 s does not hold the process.
        tokio::time::sleep(Duration::from_millis(4500)).await;
        tracing::warn!("connections still open after 4.5 s; exiting anyway");
        std::process::exit(0);
    });
    serve(listener, state).await;
    std::process::ExitCode::SUCCESS
}

/// A listening socket with a deep accept queue: a storm of reconnecting EventSources must not
/// overflow it (tokio's default of 1024 made some wait for a SYN retry, a whole second).
#[cfg(feature = "ssr")]
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(8192)
}

/// `SIGHUP`: the token file is read again; open streams stay open.
#[cfg(feature = "ssr")]
async fn reload_tokens_on_hangup(state: order_tracking::server::AppState) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGHUP; tokens are read once");
            return;
        }
    };
    while hangup.recv().await.is_some() {
        match state.tokens.reload() {
            Ok(count) => tracing::info!(tokens = count, "SIGHUP: admin tokens read again"),
            Err(err) => tracing::error!("SIGHUP: {err}; the tokens accepted so far stay"),
        }
    }
}

#[cfg(feature = "ssr")]
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate.recv() => {},
    }
}

#[cfg(not(feature = "ssr"))]
pub fn main() {
    // The browser half starts in `lib.rs` (`hydrate`); there is no client-side main.
}
