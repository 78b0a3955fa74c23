//! `POST /orders/{id}/simulate`: the seed's demo producer. Creates the order if needed, then
//! publishes each remaining status `interval_ms` apart, in a task of the server's own that
//! outlives the request. It publishes, so it needs the admin token when one is set.
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::OrderStatus;
use crate::server::auth::Admin;
use crate::server::error::{AppError, ErrorBody};
use crate::server::event_log::EventLog;
use crate::server::extract::{Expected, OrderId, Params};
use crate::server::store::StoreError;
use crate::server::AppState;

/// The seed's pause between two statuses.
pub const DEFAULT_INTERVAL_MS: u64 = 2000;
pub const MAX_INTERVAL_MS: u64 = 60_000;

/// The most simulations running at once.
pub const MAX_SIMULATIONS: usize = 1_000;

/// The orders being simulated now; at most one simulation per order.
#[derive(Clone, Default)]
pub struct Simulations {
    running: Arc<Mutex<HashSet<Uuid>>>,
}

/// Holds an order's simulation slot; frees it when dropped.
struct Claim {
    simulations: Simulations,
    order_id: Uuid,
}

impl Simulations {
    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The order's slot, unless it is taken (`SimulationRunning`) or [`MAX_SIMULATIONS`]
    /// run already (`TooManySimulations`): the table is bounded, whatever ids a client sends.
    fn claim(&self, order_id: Uuid) -> Result<Claim, AppError> {
        let mut running = self.running();
        if running.contains(&order_id) {
            return Err(AppError::SimulationRunning);
        }
        if running.len() >= MAX_SIMULATIONS {
            return Err(AppError::TooManySimulations);
        }
        running.insert(order_id);
        Ok(Claim {
            simulations: self.clone(),
            order_id,
        })
    }

    /// Starts simulating the order: creates it if needed (stored before this returns), then
    /// publishes its remaining statuses in a background task. Errors: `SimulationRunning`,
    /// `OrderDelivered`, or a store failure.
    pub async fn start(
        &self,
        log: &EventLog,
        order_id: Uuid,
        interval: Duration,
    ) -> Result<tokio::task::JoinHandle<()>, AppError> {
        let claim = self.claim(order_id)?;
        let status = log.ensure_created(order_id).await?;
        if status.is_final() {
            return Err(AppError::OrderDelivered);
        }
        let log = log.clone();
        Ok(tokio::spawn(async move {
            let _claim = claim;
            run(&log, order_id, status, interval).await;
        }))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.simulations.running().remove(&self.order_id);
    }
}

/// How long the simulator waits before it publishes again after the store was unreachable,
/// and for how long in all before it gives up.
const OUTAGE_PAUSE: Duration = Duration::from_millis(500);
const OUTAGE_LIMIT: Duration = Duration::from_secs(60);

/// Publishes the statuses after `current` until `Delivered`. When another publisher moves
/// the order on meanwhile, it carries on from wherever the order is. While the store is
/// unreachable it publishes the same status again (for up to a minute): a publish whose
/// commit happened but whose answer was lost answers the stored event (spec §14), so a
/// retry never stores a status twice.
async fn run(log: &EventLog, order_id: Uuid, mut current: OrderStatus, interval: Duration) {
    let mut outage_since: Option<tokio::time::Instant> = None;
    while let Some(next) = current.next() {
        if outage_since.is_none() {
            tokio::time::sleep(interval).await;
        }
        match log.publish(order_id, next).await {
            Ok(_) => {
                current = next;
                outage_since = None;
            }
            Err(StoreError::Unavailable(_))
                if outage_since
                    .get_or_insert_with(tokio::time::Instant::now)
                    .elapsed()
                    < OUTAGE_LIMIT =>
            {
                tokio::time::sleep(OUTAGE_PAUSE).await;
            }
            Err(StoreError::Conflict(_)) => match log.order(order_id).await {
                Ok(Some(order)) => current = order.status,
                Ok(None) => return,
                Err(err) => {
                    tracing::error!(%order_id, error = %err, "simulation stopped");
                    return;
                }
            },
            Err(err) => {
                tracing::error!(%order_id, error = %err, "simulation stopped");
                return;
            }
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SimulateQuery {
    /// Milliseconds between two statuses, from 0 to 60000 (2000 when left out).
    #[param(maximum = 60000)]
    interval_ms: Option<u64>,
    /// Answer only once the order is delivered (`200`), instead of at once (`202`).
    wait: Option<bool>,
}

impl Expected for SimulateQuery {
    const EXPECTED: &'static str =
        "query parameters: interval_ms, a whole number from 0 to 60000; wait, true or false";
}

/// A simulation under way.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Started {
    order_id: Uuid,
    stream: String,
}

/// The simulator's route: with `wait=true` it runs as long as its simulation, so it is under
/// no timeout.
pub fn routes() -> Router<AppState> {
    Router::new().route("/orders/{id}/simulate", post(simulate))
}

/// `POST /orders/{id}/simulate`: the seed's demo producer.
#[utoipa::path(
    post, path = "/orders/{id}/simulate", tag = "simulator",
    params(("id" = uuid::Uuid, Path, description = "The order's id, a UUID; created when it does not exist."), SimulateQuery),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Started: the order's remaining statuses follow, `interval_ms` apart.", body = Started),
        (status = 200, description = "With `wait=true`: the simulation has run to `Delivered`.", body = String, content_type = "text/plain"),
        (status = 400, description = "The id is not a UUID, or a query parameter is malformed.", body = ErrorBody),
        (status = 401, description = "A token is configured and this request lacks it.", body = ErrorBody),
        (status = 409, description = "A simulation of this order is running (`simulation_running`), or it is delivered (`order_delivered`).", body = ErrorBody),
        (status = 503, description = "1000 simulations are running (`too_many_simulations`, with `Retry-After`), or the store is unavailable.", body = ErrorBody),
    )
)]
pub async fn simulate(
    _: Admin,
    State(state): State<AppState>,
    OrderId(order_id): OrderId,
    Params(query): Params<SimulateQuery>,
) -> Result<Response, AppError> {
    let interval_ms = query.interval_ms.unwrap_or(DEFAULT_INTERVAL_MS);
    if interval_ms > MAX_INTERVAL_MS {
        return Err(AppError::BadRequest(SimulateQuery::EXPECTED.to_owned()));
    }
    let task = state
        .simulations
        .start(
            &state.event_log,
            order_id,
            Duration::from_millis(interval_ms),
        )
        .await?;
    if query.wait.unwrap_or(false) {
        task.await.map_err(AppError::internal)?;
        return Ok((StatusCode::OK, "Order simulation completed.").into_response());
    }
    let started = Started {
        order_id,
        stream: format!("/orders/{order_id}/stream"),
    };
    Ok((StatusCode::ACCEPTED, Json(started)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_of_simulations_is_bounded_and_one_per_order() {
        let simulations = Simulations::default();
        let first = Uuid::new_v4();
        let mut claims = vec![simulations.claim(first).unwrap()];
        assert!(matches!(
            simulations.claim(first),
            Err(AppError::SimulationRunning)
        ));
        while claims.len() < MAX_SIMULATIONS {
            claims.push(simulations.claim(Uuid::new_v4()).unwrap());
        }
        assert!(matches!(
            simulations.claim(Uuid::new_v4()),
            Err(AppError::TooManySimulations)
        ));
        // A simulation that ends frees its slot.
        claims.pop();
        assert!(simulations.claim(Uuid::new_v4()).is_ok());
    }
}
