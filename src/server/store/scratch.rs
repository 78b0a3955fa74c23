//! Throw-away Postgres databases for tests, benchmarks and demos: a fresh database on the
//! server the standard `PG*` variables name (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`,
//! `PGDATABASE`, as `pg_virtualenv` sets them). Not used by the server itself.

/// Creates a database with a new name and returns its `postgres://` URL.
pub async fn postgres_database() -> Result<String, String> {
    let var = |name: &str| {
        std::env::var(name).map_err(|_| {
            format!(
                "{name} is not set: this needs a Postgres server; run it with `make test` (or \
                 inside `pg_virtualenv -t`)"
            )
        })
    };
    let server = format!(
        "postgres://{}:{}@{}:{}",
        var("PGUSER")?,
        var("PGPASSWORD")?,
        var("PGHOST")?,
        var("PGPORT")?
    );
    let admin = sqlx::PgPool::connect(&format!("{server}/{}", var("PGDATABASE")?))
        .await
        .map_err(|err| format!("cannot reach the Postgres server: {err}"))?;
    let name = format!("t{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .map_err(|err| format!("cannot create a database: {err}"))?;
    admin.close().await;
    Ok(format!("{server}/{name}"))
}
