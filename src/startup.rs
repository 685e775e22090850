//! Builds the running application from a [`Config`]: store, templates,
//! mailer, dispatcher, the public and the admin listener; and stops it in
//! the order that loses nothing.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;

use crate::config::Config;
use crate::dispatch;
use crate::engine::{Ages, Engine};
use crate::http::feedback::{self, FeedbackState};
use crate::http::state::AppState;
use crate::http::webhook::SenderPolicy;
use crate::http::{admin, conventions, host_guard, unsubscribe, webhook};
use crate::live::{self, build_live, template_names, SharedLive};
use crate::mailer::Mailer;
use crate::metrics::Metrics;
use crate::unsubscribe::Signer;

/// A built application, listening but not yet serving.
pub struct Application {
    public_addr: SocketAddr,
    admin_addr: SocketAddr,
    state: web::Data<AppState>,
    public: actix_web::dev::Server,
    admin: actix_web::dev::Server,
    dispatcher: tokio::task::JoinHandle<()>,
    config_path: Option<std::path::PathBuf>,
}

impl Application {
    /// Opens the store, loads templates, binds both listeners (port 0 picks
    /// a free port, which tests use) and starts the dispatcher.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        Self::build_with_path(config, None).await
    }

    /// As [`Application::build`], remembering the config file for SIGHUP reloads.
    pub async fn build_with_path(
        config: Config,
        config_path: Option<std::path::PathBuf>,
    ) -> anyhow::Result<Application> {
        for w in config.warnings() {
            tracing::warn!("{w}");
        }
        let mut live =
            build_live(&config).map_err(|p| anyhow::anyhow!("templates:\n{}", p.join("\n")))?;
        for w in live::template_warnings(&config, &live.templates) {
            tracing::warn!("{w}");
        }
        let store: Arc<Engine> = Arc::new(Engine::open(&config).context("opening the store")?);
        let mailer = Mailer::new(crate::mailer::settings_from(&config))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let metrics = Arc::new(Metrics::new());
        metrics.reload(true);
        metrics.zero(&template_names(&config));
        metrics.last_webhook_at(store.last_webhook().context("reading the store")?);
        metrics.records_set_aside(store.set_aside_count());
        let public_listener = TcpListener::bind(&config.server.listen)
            .with_context(|| format!("server.listen: cannot listen on {}", config.server.listen))?;
        let admin_listener = TcpListener::bind(&config.admin.listen)
            .with_context(|| format!("admin.listen: cannot listen on {}", config.admin.listen))?;
        let public_addr = public_listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;
        let mut config = config;
        if config.server.public_url.is_empty() {
            // Links must name the address actually bound (port 0 picks one).
            config.server.public_url = format!("http://{public_addr}");
        }
        live.config = Arc::new(config.clone());
        let live: SharedLive = Arc::new(RwLock::new(Arc::new(live)));
        let config = Arc::new(config);

        let unsubscribe_signer = Signer::new(
            store
                .secret("unsubscribe")
                .context("reading the unsubscribe key")?,
        );
        let provider = crate::provider::ProviderSettings::from_config(&config)
            .map(crate::provider::Provider::new)
            .transpose()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let (dispatch, dispatcher) = dispatch::spawn(dispatch::Deps {
            store: store.clone(),
            mailer,
            live: live.clone(),
            config: config.clone(),
            metrics: metrics.clone(),
            provider,
        })
        .context("starting the dispatcher")?;

        let state = web::Data::new(AppState {
            config: config.clone(),
            store,
            sender: SenderPolicy {
                allowed: config.allowed_nets(),
                trusted_proxies: config.trusted_proxy_nets(),
                token: config.security.webhook_token.expose().to_string(),
            },
            max_body_bytes: config.server.max_body_bytes,
            live,
            dispatch,
            metrics,
            unsubscribe: unsubscribe_signer,
            config_path: config_path.clone(),
        });

        let feedback =
            web::Data::new(FeedbackState::new().context("building the client of /feedback/ses")?);
        let webhook_path = config.server.webhook_path.clone();
        let s = state.clone();
        // One for all workers: a key's rate is counted once per instance.
        let api_limiter = web::Data::new(crate::http::api::KeyLimiter::new(
            config.api.per_minute,
            config.api.burst,
        ));
        let public = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(conventions::conventions))
                .app_data(s.clone())
                .app_data(feedback.clone())
                .app_data(api_limiter.clone())
                .configure(crate::http::api::routes)
                .route(&webhook_path, web::post().to(webhook::receive))
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
                .configure(unsubscribe::routes)
                .configure(feedback::routes)
                .default_service(web::to(not_found))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(10)
        .listen(public_listener)?
        .run();

        let s = state.clone();
        // One for all workers: the console's template folder, as last read.
        let templates_on_disk = web::Data::new(crate::http::console::DiskCache::default());
        let admin = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(conventions::conventions))
                // Runs first (the last wrap is outermost): a Host that is not
                // this listener gets 421 on every path, token or not.
                .wrap(from_fn(host_guard::refuse_other_hosts))
                .app_data(s.clone())
                .app_data(templates_on_disk.clone())
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
                .configure(admin::routes)
                .default_service(web::to(not_found))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(10)
        .listen(admin_listener)?
        .run();

        Ok(Application {
            public_addr,
            admin_addr,
            state,
            public,
            admin,
            dispatcher,
            config_path,
        })
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The engine the application decides and records with (tests read the
    /// store through it while the application runs).
    pub fn engine(&self) -> Arc<Engine> {
        self.state.store.clone()
    }

    /// The dispatcher's handle (pause, resume, what it is doing).
    pub fn dispatch(&self) -> dispatch::DispatchHandle {
        self.state.dispatch.clone()
    }

    /// Serves until `shutdown` resolves, then: stop accepting requests (in
    /// flight ones finish, so every 200 already promised is durable), stop
    /// the dispatcher (sends in flight finish or return to the queue), flush.
    /// `reload` yields each time the configuration should be re-read.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
        mut reload: tokio::sync::mpsc::UnboundedReceiver<()>,
    ) -> anyhow::Result<()> {
        let public_handle: ServerHandle = self.public.handle();
        let admin_handle: ServerHandle = self.admin.handle();
        let public = tokio::spawn(self.public);
        let admin = tokio::spawn(self.admin);
        let state = self.state.clone();
        let config_path = self.config_path.clone();
        let reloader = tokio::spawn(async move {
            while reload.recv().await.is_some() {
                // The outcome is logged by `reload` itself.
                let _ = live::reload(
                    &state.config,
                    &state.live,
                    config_path.as_deref(),
                    &state.metrics,
                );
            }
        });
        let retention = tokio::spawn(retention_loop(self.state.clone()));
        tracing::info!(public = %self.public_addr, admin = %self.admin_addr, "esim-notify serving");
        let mut sync_failed = self.state.store.sync_failed();
        let sync_failed = async move {
            let seen = sync_failed
                .wait_for(Option::is_some)
                .await
                .map(|why| why.clone());
            match seen {
                Ok(why) => why,
                // The store is gone only once the application is: nothing to watch.
                Err(_) => std::future::pending().await,
            }
        };
        let failed = tokio::select! {
            _ = shutdown => None,
            why = sync_failed => why,
        };
        tracing::info!("shutting down: no new requests");
        public_handle.stop(true).await;
        admin_handle.stop(true).await;
        let _ = public.await;
        let _ = admin.await;
        reloader.abort();
        retention.abort();
        self.state.dispatch.shutdown();
        if let Some(why) = failed {
            // As PostgreSQL does after a failed fsync: no flush (it could
            // "succeed" over writes the kernel dropped), and the store is
            // leaked so that sled's own flush-on-drop never runs either. The
            // requests that waited were answered 503; the next start
            // recovers from the log what really is on disk.
            std::mem::forget(self.state.store.clone());
            anyhow::bail!(
                "a sync of the store failed ({why}): stopped without writing anything more; \
                 the next start recovers from the store's log"
            );
        }
        if tokio::time::timeout(
            self.state.config.email.send_timeout.0 + Duration::from_secs(5),
            self.dispatcher,
        )
        .await
        .is_err()
        {
            tracing::warn!("dispatcher did not stop in time; unfinished sends stay queued");
        }
        self.state.store.flush().context("flushing the store")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Removes what has aged out (SPEC §9), often enough that the store stays
/// bounded: a few times per the shortest retention period, within [1 s, 10 min].
async fn retention_loop(state: web::Data<AppState>) {
    let c = &state.config;
    let shortest = c
        .store
        .delivery_dedup
        .0
        .min(c.store.history.0)
        .min(c.customers.park_for.0);
    let every = (shortest / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    loop {
        tokio::time::sleep(every).await;
        let store = state.store.clone();
        let ages = Ages {
            delivery_dedup: c.store.delivery_dedup.0,
            history: c.store.history.0,
            park_for: c.customers.park_for.0,
        };
        let result =
            tokio::task::spawn_blocking(move || store.retain(chrono::Utc::now(), &ages)).await;
        match result {
            Ok(Ok(r)) if r != Default::default() => tracing::info!(
                dedup_removed = r.dedup_removed,
                events_removed = r.events_removed,
                esims_removed = r.esims_removed,
                dead_removed = r.dead_removed,
                parked_expired = r.parked_expired,
                stats_removed = r.stats_removed,
                "retention"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "retention failed"),
            Err(e) => tracing::error!(error = %e, "retention task failed"),
        }
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(app: web::Data<AppState>) -> HttpResponse {
    // A database known to be down answers at once, not after a connect
    // timeout; otherwise reading the pause flag proves the store answers.
    let store_ok = !app.store.unreachable() && app.store.paused().is_ok();
    let sender_ok = app.dispatch.is_running();
    let body = serde_json::json!({"store": store_ok, "sender": sender_ok, "paused": app.dispatch.is_paused()});
    if store_ok && sender_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({"error": "not found"}))
}
